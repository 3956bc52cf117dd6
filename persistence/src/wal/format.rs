//! The bytes the log stores: frames (many records of many shards under one key, in the order
//! they were written) and per-shard snapshots, each with a version byte and a CRC32 so
//! recovery can tell a good value from a torn or corrupt one.
//!
//! Tree `frames`:    key `[frame number u64 BE]` (global, increasing),
//!                   value `[FRAME_FORMAT_VERSION][crc32(key ++ body) u32 LE][body]`,
//!                   body = one or more `[shard u32 LE][seq u64 LE][len u32 LE][payload]`.
//! Tree `snapshots`: key `[shard u32 BE]`,
//!                   value `[SNAPSHOT_POINTER_VERSION][crc32(key ++ body) u32 LE][body]`,
//!                   body = `[seq u64 BE][file id u64 BE][file length u64 BE]`: a pointer to
//!                   the shard's snapshot file (`snapshot_files.rs`), whose bytes are
//!                   `[SNAPSHOT_FORMAT_VERSION][crc32(key ++ seq BE ++ payload) u32 LE]
//!                   [seq u64 BE][payload]`. Logs written before snapshot files hold that
//!                   snapshot value itself in the tree; recovery still reads it.
//!
//! The checksum covers the key, so a value copied under the wrong key is caught too. These are
//! plain bytes on purpose: no serde, no bincode (their attribute pitfalls are the engine's).
//! A frame is built in place: header first, records appended, the checksum filled in last, so
//! a group commit's records are copied once, into the value sled stores.

/// Version byte in front of every stored frame. Recovery refuses (cuts) a frame with any
/// other byte rather than misreading it.
pub const FRAME_FORMAT_VERSION: u8 = 1;
/// Version byte in front of every stored snapshot; any other byte makes the snapshot corrupt.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;
/// Version byte of a snapshot pointer in the `snapshots` tree (the payload is in a file).
pub const SNAPSHOT_POINTER_VERSION: u8 = 2;

/// Length of a frame key: the frame number (8).
pub(crate) const FRAME_KEY_LEN: usize = 8;
/// Version byte + CRC32.
pub(crate) const HEADER_LEN: usize = 5;
/// In a frame's body, in front of each payload: shard (4) + seq (8) + payload length (4).
pub(crate) const RECORD_HEADER_LEN: usize = 16;
/// Header + snapshot seq.
pub(crate) const SNAPSHOT_HEADER_LEN: usize = HEADER_LEN + 8;
/// Header + seq + file id + file length.
const SNAPSHOT_POINTER_LEN: usize = HEADER_LEN + 24;

pub(crate) fn frame_key(number: u64) -> [u8; FRAME_KEY_LEN] {
    number.to_be_bytes()
}

/// The frame number of a frame key, or None when it is not 8 bytes long.
pub(crate) fn parse_frame_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

pub(crate) fn snapshot_key(shard: u32) -> [u8; 4] {
    shard.to_be_bytes()
}

pub(crate) fn crc32(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// The extension of a snapshot file.
const EXTENSION: &str = "snap";
/// The suffix of a snapshot file being written.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Which file holds a shard's snapshot (`snapshot_files.rs`): the shard, the seq it was taken
/// at, and its unique id; its name is `<shard:08x>-<seq:016x>-<id:016x>.snap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SnapshotFile {
    pub(crate) shard: u32,
    pub(crate) seq: u64,
    pub(crate) id: u64,
}

impl SnapshotFile {
    pub(crate) fn name(&self) -> String {
        format!(
            "{:08x}-{:016x}-{:016x}.{EXTENSION}",
            self.shard, self.seq, self.id
        )
    }

    /// The file a name stands for, or None for any other name (temporary files included).
    pub(crate) fn parse(name: &str) -> Option<SnapshotFile> {
        let stem = name.strip_suffix(EXTENSION)?.strip_suffix('.')?;
        let mut parts = stem.split('-');
        let shard = parts.next().filter(|p| p.len() == 8)?;
        let seq = parts.next().filter(|p| p.len() == 16)?;
        let id = parts.next().filter(|p| p.len() == 16)?;
        if parts.next().is_some() {
            return None;
        }
        Some(SnapshotFile {
            shard: u32::from_str_radix(shard, 16).ok()?,
            seq: u64::from_str_radix(seq, 16).ok()?,
            id: u64::from_str_radix(id, 16).ok()?,
        })
    }
}

/// One record as a frame holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameRecord<'a> {
    pub(crate) shard: u32,
    pub(crate) seq: u64,
    pub(crate) payload: &'a [u8],
}

/// A frame's stored value under construction: `push` records, then `finish` with its key.
pub(crate) struct FrameValue {
    value: Vec<u8>,
}

impl FrameValue {
    pub(crate) fn with_capacity(bytes: usize) -> FrameValue {
        let mut value = Vec::with_capacity(bytes.max(HEADER_LEN));
        value.push(FRAME_FORMAT_VERSION);
        value.extend_from_slice(&[0; 4]);
        FrameValue { value }
    }

    /// Bytes of the value so far (header included).
    pub(crate) fn len(&self) -> usize {
        self.value.len()
    }

    pub(crate) fn push(&mut self, shard: u32, seq: u64, payload: &[u8]) {
        let len = u32::try_from(payload.len()).expect("a record payload under 4 GiB");
        self.value.extend_from_slice(&shard.to_le_bytes());
        self.value.extend_from_slice(&seq.to_le_bytes());
        self.value.extend_from_slice(&len.to_le_bytes());
        self.value.extend_from_slice(payload);
    }

    /// The stored value, its checksum over `key` and the body filled in.
    pub(crate) fn finish(mut self, key: &[u8]) -> Vec<u8> {
        let sum = crc32(&[key, &self.value[HEADER_LEN..]]);
        self.value[1..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
        self.value
    }
}

/// Checks the version byte and header length; returns (stored crc, rest).
fn split_header(value: &[u8], header_len: usize, version: u8) -> Result<(u32, &[u8]), String> {
    if value.len() < header_len {
        return Err(format!(
            "truncated: {} bytes, shorter than the {header_len}-byte header",
            value.len()
        ));
    }
    if value[0] != version {
        return Err(format!(
            "unknown format version {} (this build reads {version})",
            value[0]
        ));
    }
    let stored = u32::from_le_bytes(value[1..HEADER_LEN].try_into().expect("4 bytes"));
    Ok((stored, &value[HEADER_LEN..]))
}

/// The records of a stored frame, in the order they were written, or why the frame cannot be
/// trusted (wrong key length, truncated, unknown version, checksum mismatch, a body that does
/// not parse, no records at all: the writer never stores an empty frame).
pub(crate) fn decode_frame<'a>(
    key: &[u8],
    value: &'a [u8],
) -> Result<Vec<FrameRecord<'a>>, String> {
    if key.len() != FRAME_KEY_LEN {
        return Err(format!(
            "a frame key of {} bytes (expected {FRAME_KEY_LEN})",
            key.len()
        ));
    }
    let (stored, mut body) = split_header(value, HEADER_LEN, FRAME_FORMAT_VERSION)?;
    let computed = crc32(&[key, body]);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x} over {} body bytes)",
            body.len()
        ));
    }
    let mut records = Vec::new();
    while !body.is_empty() {
        if body.len() < RECORD_HEADER_LEN {
            return Err(format!(
                "a record header cut short after {} records",
                records.len()
            ));
        }
        let (head, rest) = body.split_at(RECORD_HEADER_LEN);
        let shard = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(head[12..].try_into().expect("4 bytes")) as usize;
        if rest.len() < len {
            return Err(format!(
                "record {} (shard {shard} seq {seq}) says {len} payload bytes, {} are left",
                records.len(),
                rest.len()
            ));
        }
        let (payload, rest) = rest.split_at(len);
        records.push(FrameRecord {
            shard,
            seq,
            payload,
        });
        body = rest;
    }
    if records.is_empty() {
        return Err("a frame with no records".to_string());
    }
    Ok(records)
}

/// The header in front of a snapshot's payload (in a snapshot file, and in the tree of logs
/// before snapshot files): version, checksum over the shard key, seq and payload, seq.
pub(crate) fn snapshot_header(key: &[u8], seq: u64, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_LEN] {
    let seq = seq.to_be_bytes();
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    header[0] = SNAPSHOT_FORMAT_VERSION;
    header[1..HEADER_LEN].copy_from_slice(&crc32(&[key, &seq, payload]).to_le_bytes());
    header[HEADER_LEN..].copy_from_slice(&seq);
    header
}

/// The seq a snapshot's header names, once its version and its checksum over `key` and
/// `payload` hold, or why they do not.
pub(crate) fn check_snapshot(
    key: &[u8],
    header: &[u8; SNAPSHOT_HEADER_LEN],
    payload: &[u8],
) -> Result<u64, String> {
    let (stored, seq) = split_header(header, SNAPSHOT_HEADER_LEN, SNAPSHOT_FORMAT_VERSION)?;
    let computed = crc32(&[key, seq, payload]);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    Ok(u64::from_be_bytes(seq.try_into().expect("8 bytes")))
}

/// A snapshot value as logs before snapshot files stored it in the tree (tests write such
/// logs; the writer no longer does).
#[cfg(test)]
pub(crate) fn encode_snapshot(key: &[u8], seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut value = snapshot_header(key, seq, payload).to_vec();
    value.extend_from_slice(payload);
    value
}

/// What the `snapshots` tree holds for a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredSnapshot<'a> {
    /// The snapshot itself (a log written before snapshot files).
    Inline { seq: u64, payload: &'a [u8] },
    /// Where the snapshot is, and the file's length.
    File { file: SnapshotFile, len: u64 },
}

impl StoredSnapshot<'_> {
    pub(crate) fn seq(&self) -> u64 {
        match self {
            StoredSnapshot::Inline { seq, .. } => *seq,
            StoredSnapshot::File { file, .. } => file.seq,
        }
    }
}

pub(crate) fn encode_snapshot_pointer(file: &SnapshotFile, len: u64) -> Vec<u8> {
    let key = snapshot_key(file.shard);
    let mut body = [0u8; SNAPSHOT_POINTER_LEN - HEADER_LEN];
    body[..8].copy_from_slice(&file.seq.to_be_bytes());
    body[8..16].copy_from_slice(&file.id.to_be_bytes());
    body[16..].copy_from_slice(&len.to_be_bytes());
    let mut value = Vec::with_capacity(SNAPSHOT_POINTER_LEN);
    value.push(SNAPSHOT_POINTER_VERSION);
    value.extend_from_slice(&crc32(&[&key, &body]).to_le_bytes());
    value.extend_from_slice(&body);
    value
}

/// A `snapshots` tree entry (a pointer, or a snapshot of an older log), or why it cannot be
/// trusted. The key must be a shard's 4-byte key.
pub(crate) fn decode_stored_snapshot<'a>(
    key: &[u8],
    value: &'a [u8],
) -> Result<StoredSnapshot<'a>, String> {
    let shard = u32::from_be_bytes(
        key.try_into()
            .map_err(|_| format!("a snapshot key of {} bytes (expected 4)", key.len()))?,
    );
    match value.first() {
        Some(&SNAPSHOT_FORMAT_VERSION) => {
            let (seq, payload) = decode_snapshot(key, value)?;
            Ok(StoredSnapshot::Inline { seq, payload })
        }
        Some(&SNAPSHOT_POINTER_VERSION) => {
            if value.len() != SNAPSHOT_POINTER_LEN {
                return Err(format!(
                    "a snapshot pointer of {} bytes (expected {SNAPSHOT_POINTER_LEN})",
                    value.len()
                ));
            }
            let (stored, body) =
                split_header(value, SNAPSHOT_POINTER_LEN, SNAPSHOT_POINTER_VERSION)?;
            let computed = crc32(&[key, body]);
            if stored != computed {
                return Err(format!(
                    "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
                ));
            }
            let word =
                |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
            Ok(StoredSnapshot::File {
                file: SnapshotFile {
                    shard,
                    seq: word(0),
                    id: word(8),
                },
                len: word(16),
            })
        }
        Some(other) => Err(format!(
            "unknown format version {other} (this build reads {SNAPSHOT_FORMAT_VERSION} and \
             {SNAPSHOT_POINTER_VERSION})"
        )),
        None => Err("truncated: an empty snapshot value".to_string()),
    }
}

/// (seq, payload) of a snapshot stored in the tree, or why it cannot be trusted.
fn decode_snapshot<'a>(key: &[u8], value: &'a [u8]) -> Result<(u64, &'a [u8]), String> {
    // The version first, so a value of another version says so whatever its length.
    split_header(value, SNAPSHOT_HEADER_LEN, SNAPSHOT_FORMAT_VERSION)?;
    let (header, payload) = value.split_at(SNAPSHOT_HEADER_LEN);
    let seq = check_snapshot(
        key,
        header.try_into().expect("the header's length"),
        payload,
    )?;
    Ok((seq, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(number: u64, records: &[(u32, u64, &[u8])]) -> Vec<u8> {
        let mut value = FrameValue::with_capacity(64);
        for (shard, seq, payload) in records {
            value.push(*shard, *seq, payload);
        }
        value.finish(&frame_key(number))
    }

    #[test]
    fn frame_keys_sort_by_frame_number() {
        let mut keys = [
            frame_key(256),
            frame_key(2),
            frame_key(u64::MAX),
            frame_key(1),
        ];
        keys.sort();
        let parsed: Vec<_> = keys.iter().map(|k| parse_frame_key(k).unwrap()).collect();
        assert_eq!(parsed, vec![1, 2, 256, u64::MAX]);
        assert_eq!(parse_frame_key(&[0; 7]), None);
        assert_eq!(parse_frame_key(&[0; 9]), None);
    }

    #[test]
    fn frame_round_trip() {
        let records: [(u32, u64, &[u8]); 4] = [
            (3, 9, b"hello"),
            (0, 1, b""),
            (u32::MAX, u64::MAX, b"last shard"),
            (3, 10, b"again"),
        ];
        let value = frame(7, &records);
        assert_eq!(value[0], FRAME_FORMAT_VERSION);
        let payloads: usize = records.iter().map(|r| r.2.len()).sum();
        assert_eq!(value.len(), HEADER_LEN + 4 * RECORD_HEADER_LEN + payloads);
        let decoded = decode_frame(&frame_key(7), &value).unwrap();
        let back: Vec<(u32, u64, &[u8])> = decoded
            .iter()
            .map(|r| (r.shard, r.seq, r.payload))
            .collect();
        assert_eq!(back, records.to_vec());
    }

    #[test]
    fn frame_damage_is_caught() {
        let key = frame_key(7);
        let value = frame(7, &[(1, 1, b"one"), (2, 5, b"two")]);
        // Truncated anywhere in the body: the checksum no longer matches.
        for cut in [value.len() - 1, HEADER_LEN + 3, HEADER_LEN] {
            let err = decode_frame(&key, &value[..cut]).unwrap_err();
            assert!(err.contains("checksum"), "cut at {cut}: {err}");
        }
        let err = decode_frame(&key, &value[..3]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        // A flipped byte in the body, and one in the stored checksum.
        for at in [value.len() - 1, HEADER_LEN + 2, 1] {
            let mut flipped = value.clone();
            flipped[at] ^= 1;
            let err = decode_frame(&key, &flipped).unwrap_err();
            assert!(err.contains("checksum"), "byte {at}: {err}");
        }
        let mut version = value.clone();
        version[0] = 7;
        let err = decode_frame(&key, &version).unwrap_err();
        assert!(err.contains("version 7"), "{err}");
        // The checksum covers the key: the same value under another frame number is refused.
        let err = decode_frame(&frame_key(8), &value).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
        let err = decode_frame(&key[..7], &value).unwrap_err();
        assert!(err.contains("frame key of 7 bytes"), "{err}");
    }

    #[test]
    fn a_body_that_does_not_parse_is_refused_even_with_a_good_checksum() {
        let key = frame_key(1);
        let seal = |body: &[u8]| {
            let mut value = vec![FRAME_FORMAT_VERSION];
            value.extend_from_slice(&crc32(&[&key, body]).to_le_bytes());
            value.extend_from_slice(body);
            value
        };
        let err = decode_frame(&key, &seal(b"")).unwrap_err();
        assert!(err.contains("no records"), "{err}");
        let err = decode_frame(&key, &seal(&[1; 10])).unwrap_err();
        assert!(err.contains("header cut short"), "{err}");
        let mut long = vec![0u8; RECORD_HEADER_LEN];
        long[12..].copy_from_slice(&100u32.to_le_bytes());
        long.extend_from_slice(b"short");
        let err = decode_frame(&key, &seal(&long)).unwrap_err();
        assert!(err.contains("100 payload bytes, 5 are left"), "{err}");
    }

    #[test]
    fn snapshot_round_trip_and_damage_is_caught() {
        let key = snapshot_key(5);
        let value = encode_snapshot(&key, 60, b"state");
        assert_eq!(decode_snapshot(&key, &value).unwrap(), (60, &b"state"[..]));
        assert!(decode_snapshot(&snapshot_key(6), &value).is_err());
        let mut seq = value.clone();
        seq[HEADER_LEN + 7] ^= 1;
        assert!(decode_snapshot(&key, &seq)
            .unwrap_err()
            .contains("checksum"));
        assert!(decode_snapshot(&key, &value[..10])
            .unwrap_err()
            .contains("truncated"));
        let mut version = value.clone();
        version[0] = 9;
        assert!(decode_snapshot(&key, &version)
            .unwrap_err()
            .contains("version 9"));
    }

    #[test]
    fn a_snapshot_pointer_round_trips_and_older_inline_snapshots_still_decode() {
        let file = SnapshotFile {
            shard: 5,
            seq: 60,
            id: 9,
        };
        let key = snapshot_key(5);
        let pointer = encode_snapshot_pointer(&file, 1234);
        assert_eq!(pointer[0], SNAPSHOT_POINTER_VERSION);
        assert_eq!(
            decode_stored_snapshot(&key, &pointer).unwrap(),
            StoredSnapshot::File { file, len: 1234 }
        );
        // Under another shard's key, damaged, cut short: refused.
        assert!(decode_stored_snapshot(&snapshot_key(6), &pointer)
            .unwrap_err()
            .contains("checksum"));
        let mut flipped = pointer.clone();
        flipped[HEADER_LEN + 3] ^= 1;
        assert!(decode_stored_snapshot(&key, &flipped)
            .unwrap_err()
            .contains("checksum"));
        assert!(decode_stored_snapshot(&key, &pointer[..10])
            .unwrap_err()
            .contains("pointer of 10 bytes"));
        assert!(decode_stored_snapshot(&key, &[])
            .unwrap_err()
            .contains("empty"));
        assert!(decode_stored_snapshot(&key, &[9, 0, 0])
            .unwrap_err()
            .contains("version 9"));
        // A log written before snapshot files: the snapshot itself, still read.
        let inline = encode_snapshot(&key, 60, b"state");
        assert_eq!(
            decode_stored_snapshot(&key, &inline).unwrap(),
            StoredSnapshot::Inline {
                seq: 60,
                payload: b"state"
            }
        );
    }
}
