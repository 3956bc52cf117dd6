//! The audit chain: every status change of an appointment, append-only, each record carrying
//! the SHA-256 of the one before (docs/ARCHITECTURE.md, "Events and audit").
//!
//! Records live in the `audit` tree of the event store (key: the record's sequence, big
//! endian; value: the record's JSON), one appointment's sequences in the `audit_by_appointment`
//! tree (key: appointment id, a zero byte, the sequence). Neither tree is touched by the
//! shards' snapshots or the log's truncation: the chain is never cut. `hash` is the hex
//! SHA-256 of `prev_hash` (hex) followed by the record's canonical bytes
//! ([`canonical_bytes`]); the first record's `prev_hash` is [`GENESIS_HASH`].

use holdfast_engine::feed::{AuditRecord, AuditVerdict};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the hash covers besides `prev_hash`: every field but the hashes, in a fixed order,
/// separated by a byte no field contains.
pub fn canonical_bytes(seq: u64, at: &str, appointment_id: &str, status: &str) -> Vec<u8> {
    format!("{seq}\n{at}\n{appointment_id}\n{status}").into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of a record with these fields after `prev_hash`.
pub fn chain_hash(
    prev_hash: &str,
    seq: u64,
    at: &str,
    appointment_id: &str,
    status: &str,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical_bytes(seq, at, appointment_id, status));
    hex(&hasher.finalize())
}

/// A new record chained after `prev_hash`.
pub fn seal(
    seq: u64,
    at: String,
    appointment_id: String,
    status: String,
    prev_hash: &str,
) -> AuditRecord {
    let hash = chain_hash(prev_hash, seq, &at, &appointment_id, &status);
    AuditRecord {
        seq,
        at,
        appointment_id,
        status,
        hash,
        prev_hash: prev_hash.to_string(),
    }
}

pub fn record_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn index_key(appointment_id: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(appointment_id.len() + 9);
    key.extend_from_slice(appointment_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Walks the `audit` tree in order, one record in memory at a time, and reports the first
/// record whose bytes, sequence or links do not hold.
pub fn verify(audit: &sled::Tree) -> AuditVerdict {
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut expected = 1u64;
    for entry in audit.iter() {
        let broken = |reason: String| AuditVerdict::Broken {
            first_bad_seq: expected,
            reason,
        };
        let (key, value) = match entry {
            Ok(entry) => entry,
            Err(e) => return broken(format!("the audit tree could not be read: {e}")),
        };
        let key_seq = <[u8; 8]>::try_from(key.as_ref())
            .ok()
            .map(u64::from_be_bytes);
        if key_seq != Some(expected) {
            return broken(format!("record {expected} is missing (found key {key:?})"));
        }
        let record: AuditRecord = match serde_json::from_slice(&value) {
            Ok(record) => record,
            Err(e) => return broken(format!("record {expected} does not parse: {e}")),
        };
        if record.seq != expected {
            return broken(format!(
                "record {expected} says it is record {}",
                record.seq
            ));
        }
        if record.prev_hash != prev_hash {
            return broken(format!(
                "record {expected}'s prev_hash is not the hash of record {}",
                expected - 1
            ));
        }
        let hash = chain_hash(
            &record.prev_hash,
            record.seq,
            &record.at,
            &record.appointment_id,
            &record.status,
        );
        if hash != record.hash {
            return broken(format!(
                "record {expected}'s contents do not match its hash"
            ));
        }
        prev_hash = record.hash;
        expected += 1;
    }
    AuditVerdict::Ok {
        records: expected - 1,
        head: prev_hash,
    }
}

/// The verdict as the contract's JSON (`GET /v1/admin/audit/verify`, `holdfast audit verify`).
pub fn verdict_json(verdict: &AuditVerdict) -> serde_json::Value {
    match verdict {
        AuditVerdict::Ok { records, head } => {
            serde_json::json!({ "ok": true, "records": records, "head": head })
        }
        AuditVerdict::Broken {
            first_bad_seq,
            reason,
        } => serde_json::json!({ "ok": false, "first_bad_seq": first_bad_seq, "reason": reason }),
    }
}

/// `holdfast audit verify --data-dir D`: the verdict's JSON and whether the chain holds.
/// `Err` when the store cannot be opened (missing directory, or a server holds it).
pub fn verify_offline(data_dir: &std::path::Path) -> Result<(String, bool), String> {
    let store = data_dir.join(super::EVENTS_SUBDIR);
    if !store.exists() {
        return Err(format!(
            "{} has no event store (is it a holdfast data directory?)",
            data_dir.display()
        ));
    }
    let db = super::open_db(Some(data_dir))?;
    let tree = db
        .open_tree("audit")
        .map_err(|e| format!("cannot open the audit tree: {e}"))?;
    let verdict = verify(&tree);
    let ok = matches!(verdict, AuditVerdict::Ok { .. });
    Ok((verdict_json(&verdict).to_string(), ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_byte_breaks_the_chain_at_its_record() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("audit").unwrap();
        let mut prev = GENESIS_HASH.to_string();
        for seq in 1..=5 {
            let record = seal(
                seq,
                "2026-01-01T00:00:00.000Z".into(),
                format!("a{seq}"),
                "PENDING".into(),
                &prev,
            );
            prev = record.hash.clone();
            tree.insert(record_key(seq), serde_json::to_vec(&record).unwrap())
                .unwrap();
        }
        assert_eq!(
            verify(&tree),
            AuditVerdict::Ok {
                records: 5,
                head: prev
            }
        );
        let mut bytes = tree.get(record_key(3)).unwrap().unwrap().to_vec();
        let at = bytes.iter().position(|&b| b == b'P').unwrap();
        bytes[at] ^= 0x01;
        tree.insert(record_key(3), bytes).unwrap();
        match verify(&tree) {
            AuditVerdict::Broken { first_bad_seq, .. } => assert_eq!(first_bad_seq, 3),
            other => panic!("a flipped byte went unnoticed: {other:?}"),
        }
    }
}
