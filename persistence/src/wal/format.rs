//! The bytes the log stores: keys that sort by shard then sequence number, and values that
//! carry a version byte and a CRC32 so recovery can tell a good record from a torn one.
//!
//! Tree `log`:       key `[shard u32 BE][seq u64 BE]`,
//!                   value `[RECORD_FORMAT_VERSION][crc32(key ++ payload) u32 LE][payload]`.
//! Tree `snapshots`: key `[shard u32 BE]`,
//!                   value `[RECORD_FORMAT_VERSION][crc32(key ++ seq BE ++ payload) u32 LE]
//!                   [seq u64 BE][payload]`.
//!
//! The checksum covers the key, so a value copied under the wrong key is caught too. These are
//! plain bytes on purpose: no serde, no bincode (their attribute pitfalls are the engine's).

/// Version byte in front of every stored log record and snapshot. Recovery refuses (drops)
/// a record with any other byte rather than misreading it.
pub const RECORD_FORMAT_VERSION: u8 = 1;

/// Length of a log key: shard (4) + seq (8).
pub(crate) const LOG_KEY_LEN: usize = 12;
/// Version byte + CRC32.
pub(crate) const HEADER_LEN: usize = 5;
/// Header + snapshot seq.
const SNAPSHOT_HEADER_LEN: usize = HEADER_LEN + 8;

pub(crate) fn log_key(shard: u32, seq: u64) -> [u8; LOG_KEY_LEN] {
    let mut key = [0u8; LOG_KEY_LEN];
    key[..4].copy_from_slice(&shard.to_be_bytes());
    key[4..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The (shard, seq) of a log key, or None when it is not 12 bytes long.
pub(crate) fn parse_log_key(key: &[u8]) -> Option<(u32, u64)> {
    if key.len() != LOG_KEY_LEN {
        return None;
    }
    let shard = u32::from_be_bytes(key[..4].try_into().expect("4 bytes"));
    let seq = u64::from_be_bytes(key[4..].try_into().expect("8 bytes"));
    Some((shard, seq))
}

pub(crate) fn snapshot_key(shard: u32) -> [u8; 4] {
    shard.to_be_bytes()
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

pub(crate) fn encode_record(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER_LEN + payload.len());
    value.push(RECORD_FORMAT_VERSION);
    value.extend_from_slice(&crc(&[key, payload]).to_le_bytes());
    value.extend_from_slice(payload);
    value
}

/// Checks the version byte and header length; returns (stored crc, rest).
fn split_header(value: &[u8], header_len: usize) -> Result<(u32, &[u8]), String> {
    if value.len() < header_len {
        return Err(format!(
            "truncated: {} bytes, shorter than the {header_len}-byte header",
            value.len()
        ));
    }
    if value[0] != RECORD_FORMAT_VERSION {
        return Err(format!(
            "unknown format version {} (this build reads {RECORD_FORMAT_VERSION})",
            value[0]
        ));
    }
    let stored = u32::from_le_bytes(value[1..HEADER_LEN].try_into().expect("4 bytes"));
    Ok((stored, &value[HEADER_LEN..]))
}

/// The payload of a stored log record, or why it cannot be trusted.
pub(crate) fn decode_record<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], String> {
    let (stored, payload) = split_header(value, HEADER_LEN)?;
    let computed = crc(&[key, payload]);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x} over {} payload bytes)",
            payload.len()
        ));
    }
    Ok(payload)
}

pub(crate) fn encode_snapshot(key: &[u8], seq: u64, payload: &[u8]) -> Vec<u8> {
    let seq_bytes = seq.to_be_bytes();
    let mut value = Vec::with_capacity(SNAPSHOT_HEADER_LEN + payload.len());
    value.push(RECORD_FORMAT_VERSION);
    value.extend_from_slice(&crc(&[key, &seq_bytes, payload]).to_le_bytes());
    value.extend_from_slice(&seq_bytes);
    value.extend_from_slice(payload);
    value
}

/// (seq, payload) of a stored snapshot, or why it cannot be trusted.
pub(crate) fn decode_snapshot<'a>(key: &[u8], value: &'a [u8]) -> Result<(u64, &'a [u8]), String> {
    let (stored, rest) = split_header(value, SNAPSHOT_HEADER_LEN)?;
    let (seq_bytes, payload) = rest.split_at(8);
    let computed = crc(&[key, seq_bytes, payload]);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    let seq = u64::from_be_bytes(seq_bytes.try_into().expect("8 bytes"));
    Ok((seq, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_shard_then_seq() {
        let mut keys = [
            log_key(2, 1),
            log_key(1, 256),
            log_key(1, 2),
            log_key(0, u64::MAX),
            log_key(1, 1),
        ];
        keys.sort();
        let parsed: Vec<_> = keys.iter().map(|k| parse_log_key(k).unwrap()).collect();
        assert_eq!(
            parsed,
            vec![(0, u64::MAX), (1, 1), (1, 2), (1, 256), (2, 1)]
        );
        assert_eq!(parse_log_key(&[0; 11]), None);
    }

    #[test]
    fn record_round_trip_and_damage_is_caught() {
        let key = log_key(3, 9);
        let value = encode_record(&key, b"hello");
        assert_eq!(value[0], RECORD_FORMAT_VERSION);
        assert_eq!(value.len(), HEADER_LEN + 5);
        assert_eq!(decode_record(&key, &value).unwrap(), b"hello");
        // Empty payloads are legal.
        assert_eq!(decode_record(&key, &encode_record(&key, b"")).unwrap(), b"");

        let err = decode_record(&key, &value[..value.len() - 1]).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
        let err = decode_record(&key, &value[..3]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let mut flipped = value.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode_record(&key, &flipped)
            .unwrap_err()
            .contains("checksum"));
        let mut version = value.clone();
        version[0] = 7;
        assert!(decode_record(&key, &version)
            .unwrap_err()
            .contains("version 7"));
        // The checksum covers the key: the same value under another key is refused.
        assert!(decode_record(&log_key(3, 10), &value)
            .unwrap_err()
            .contains("checksum"));
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
    }
}
