//! The event store's layout on disk: one sled tree, [`TREE`], written with one atomic
//! `apply_batch` per recorder batch, never a transaction across trees.
//!
//! Keys start with a kind byte:
//! - `e` + first sequence (big endian) -> an **event frame**: up to [`FRAME_EVENTS_MAX`]
//!   events with consecutive sequences from the key's: `[u32 count]` then, per event,
//!   `[u8 type length][type][u32 data length][data JSON]`;
//! - `a` + first audit sequence -> an **audit frame**: up to [`FRAME_AUDIT_MAX`] records with
//!   consecutive sequences, each the record's JSON, separated by `\n` (JSON never holds a raw
//!   newline);
//! - `x` + first audit sequence of a batch -> an **index frame**: per audit record of the
//!   batch, in order, the 64-bit hash of its appointment id ([`super::audit_index`]), 8
//!   bytes each: one insert per batch, not one per status change (the layout before kept
//!   `i` + appointment id + `0` + audit sequence per record, and is refused);
//! - `c` -> the cursors: per shard with a stored change, `[u32 shard][u64 wal_seq]`, the whole
//!   table rewritten in every batch (at most `SHARDS_MAX` entries, 12 bytes each).
//!
//! A batch's frames, index frame and cursors land together or not at all: a crash can
//! never leave events stored without the cursor that says so, or the reverse. Integers are
//! big endian throughout, so frames sort by sequence.

use holdfast_engine::feed::{AuditRecord, StoredEvent};

/// The sled tree holding everything the store keeps.
pub const TREE: &str = "frames";
/// Events in one frame at most: about 8 KiB at 250 bytes an event. sled 0.34 splits a leaf
/// past 16 items and writes a node larger than a quarter segment (128 KiB) as a blob file of
/// its own, copying the whole node on every rewrite: 16 frames of 8 KiB stay under that, where
/// frames of 64 KiB made every leaf a blob (a fresh megabyte copied, and its pages zeroed by
/// the kernel, at each write). Still a handful of inserts for a busy group commit's events.
pub const FRAME_EVENTS_MAX: usize = 32;
/// Audit records in one frame at most (about 300 bytes each: under 10 KiB a frame, for the
/// same reason as [`FRAME_EVENTS_MAX`]).
pub const FRAME_AUDIT_MAX: usize = 32;

const EVENTS: u8 = b'e';
const AUDIT: u8 = b'a';
const INDEX: u8 = b'x';
/// The key of the cursor table.
pub const CURSORS_KEY: &[u8] = b"c";

fn key(kind: u8, seq: u64) -> [u8; 9] {
    let mut key = [kind; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The key of the event frame whose first event is `first`.
pub fn event_key(first: u64) -> [u8; 9] {
    key(EVENTS, first)
}

/// The key of the audit frame whose first record is `first`.
pub fn audit_key(first: u64) -> [u8; 9] {
    key(AUDIT, first)
}

/// The first sequence a frame key names (`None` for a key of another shape).
pub fn first_of(key: &[u8]) -> Option<u64> {
    let seq: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    (key.len() == 9).then(|| u64::from_be_bytes(seq))
}

/// The key of the index frame of the batch whose first audit record is `first`.
pub fn index_key(first: u64) -> [u8; 9] {
    key(INDEX, first)
}

/// The prefix of the index entries of the layout before index frames (`i` + appointment id +
/// `0` + audit sequence, one per record): a store holding one is refused.
pub const OLD_INDEX_PREFIX: &[u8] = b"i";

/// An index frame: the appointment hash of each of the batch's records, in sequence order.
pub fn encode_index(hashes: impl ExactSizeIterator<Item = u64>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(hashes.len() * 8);
    for hash in hashes {
        bytes.extend_from_slice(&hash.to_be_bytes());
    }
    bytes
}

/// The appointment hashes of an index frame, in sequence order (a cut-short last one is
/// ignored).
pub fn decode_index(frame: &[u8]) -> impl Iterator<Item = u64> + '_ {
    frame
        .chunks_exact(8)
        .map(|hash| u64::from_be_bytes(hash.try_into().expect("8 bytes")))
}

/// Every index frame's key.
pub fn index_range() -> std::ops::RangeInclusive<[u8; 9]> {
    index_key(0)..=index_key(u64::MAX)
}

/// The range of keys of one kind: every event frame or every audit frame.
pub fn events_range() -> std::ops::RangeInclusive<[u8; 9]> {
    event_key(0)..=event_key(u64::MAX)
}

/// Every audit frame's key.
pub fn audit_range() -> std::ops::RangeInclusive<[u8; 9]> {
    audit_key(0)..=audit_key(u64::MAX)
}

/// One event about to be framed: its type and its JSON.
pub struct FramedEvent<'a> {
    pub event_type: &'a str,
    pub data: &'a str,
}

/// An event frame of `events` (at most [`FRAME_EVENTS_MAX`]).
pub fn encode_events<'a>(events: impl ExactSizeIterator<Item = FramedEvent<'a>>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + events.len() * 256);
    bytes.extend_from_slice(&(events.len() as u32).to_be_bytes());
    for event in events {
        let event_type = &event.event_type.as_bytes()[..event.event_type.len().min(255)];
        bytes.push(event_type.len() as u8);
        bytes.extend_from_slice(event_type);
        bytes.extend_from_slice(&(event.data.len() as u32).to_be_bytes());
        bytes.extend_from_slice(event.data.as_bytes());
    }
    bytes
}

/// How many events a frame holds (0 for bytes too short to say).
pub fn event_count(frame: &[u8]) -> u64 {
    frame
        .get(..4)
        .and_then(|count| count.try_into().ok())
        .map_or(0, |count| u32::from_be_bytes(count) as u64)
}

fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if bytes.len() < len {
        return None;
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Some(head)
}

/// The events of the frame keyed `first` whose sequence is at least `from`, at most `max`
/// of them, appended to `out`. `Err` names the first event that does not decode.
pub fn decode_events(
    first: u64,
    frame: &[u8],
    from: u64,
    max: usize,
    out: &mut Vec<StoredEvent>,
) -> Result<(), String> {
    let count = event_count(frame);
    let mut rest = frame.get(4..).unwrap_or_default();
    for seq in first..first + count {
        if out.len() >= max {
            break;
        }
        let broken = || format!("event {seq} of the frame at {first} is cut short");
        let type_len = *take(&mut rest, 1).ok_or_else(broken)?.first().unwrap_or(&0);
        let event_type = take(&mut rest, type_len as usize).ok_or_else(broken)?;
        let data_len = take(&mut rest, 4).ok_or_else(broken)?;
        let data_len = u32::from_be_bytes(data_len.try_into().map_err(|_| broken())?);
        let data = take(&mut rest, data_len as usize).ok_or_else(broken)?;
        if seq >= from {
            out.push(StoredEvent {
                seq,
                event_type: String::from_utf8_lossy(event_type).into_owned(),
                data: String::from_utf8_lossy(data).into_owned(),
            });
        }
    }
    Ok(())
}

/// An audit frame of `records` (at most [`FRAME_AUDIT_MAX`], consecutive sequences).
pub fn encode_audit(records: &[AuditRecord]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(records.len() * 320);
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            bytes.push(b'\n');
        }
        serde_json::to_writer(&mut bytes, record).expect("audit records encode");
    }
    bytes
}

/// The records of an audit frame, each as it parses (or why it does not), in order.
pub fn decode_audit(frame: &[u8]) -> impl Iterator<Item = Result<AuditRecord, String>> + '_ {
    frame
        .split(|&b| b == b'\n')
        .map(|line| serde_json::from_slice(line).map_err(|e| e.to_string()))
}

/// The cursor table's value.
pub fn encode_cursors(cursors: &[(u32, u64)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(cursors.len() * 12);
    for (shard, wal_seq) in cursors {
        bytes.extend_from_slice(&shard.to_be_bytes());
        bytes.extend_from_slice(&wal_seq.to_be_bytes());
    }
    bytes
}

/// The cursor table, from its value (a cut-short last entry is ignored).
pub fn decode_cursors(bytes: &[u8]) -> Vec<(u32, u64)> {
    bytes
        .chunks_exact(12)
        .map(|entry| {
            let shard = u32::from_be_bytes(entry[..4].try_into().expect("4 bytes"));
            let wal_seq = u64::from_be_bytes(entry[4..].try_into().expect("8 bytes"));
            (shard, wal_seq)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_frame_decodes_to_its_events_from_any_sequence_and_cut_short_is_an_error() {
        let events = [("A", "{\"x\":1}"), ("Bee", "{}"), ("C", "{\"y\":[1,2]}")];
        let frame = encode_events(events.iter().map(|(t, d)| FramedEvent {
            event_type: t,
            data: d,
        }));
        assert_eq!(event_count(&frame), 3);
        let mut out = Vec::new();
        decode_events(10, &frame, 11, 10, &mut out).unwrap();
        let got: Vec<(u64, &str, &str)> = out
            .iter()
            .map(|e| (e.seq, e.event_type.as_str(), e.data.as_str()))
            .collect();
        assert_eq!(got, [(11, "Bee", "{}"), (12, "C", "{\"y\":[1,2]}")]);
        let mut one = Vec::new();
        decode_events(10, &frame, 0, 1, &mut one).unwrap();
        assert_eq!(one.len(), 1);
        let mut cut = Vec::new();
        let error = decode_events(10, &frame[..frame.len() - 2], 0, 10, &mut cut).unwrap_err();
        assert!(error.contains("event 12"), "{error}");
    }

    #[test]
    fn keys_sort_by_sequence_and_the_cursor_table_round_trips() {
        assert!(event_key(255) < event_key(256));
        assert!(
            audit_key(u64::MAX) < event_key(0),
            "the kinds never interleave"
        );
        assert_eq!(first_of(&audit_key(77)), Some(77));
        assert_eq!(first_of(&index_key(9)), Some(9));
        let hashes = [1, u64::MAX, 7];
        assert_eq!(
            decode_index(&encode_index(hashes.into_iter())).collect::<Vec<_>>(),
            hashes
        );
        assert!(!index_key(9).starts_with(OLD_INDEX_PREFIX));
        let table = [(0, 5), (63, u64::MAX)];
        assert_eq!(decode_cursors(&encode_cursors(&table)), table);
    }
}
