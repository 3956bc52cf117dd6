//! The audit chain: every status change of an appointment, append-only, each record carrying
//! the SHA-256 of the one before (docs/ARCHITECTURE.md, "Events and audit").
//!
//! Records live in the event store's audit frames (key: the first record's sequence, big
//! endian; value: the records' JSON, one a line, [`super::frames`]), found for one appointment
//! through the index frames and their in-memory blocks ([`super::audit_index`]). Neither is
//! touched by the shards' snapshots or the log's truncation, nor by the events' retention:
//! the chain is never cut. `hash` is the hex SHA-256 of `prev_hash` (hex) followed by the
//! record's canonical bytes
//! ([`canonical_bytes`]); the first record's `prev_hash` is [`GENESIS_HASH`].

use holdfast_engine::feed::{AuditRecord, AuditVerdict};
use sha2::{Digest, Sha256};

use super::frames;
use crate::hex::hex;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the hash covers besides `prev_hash`: every field but the hashes, in a fixed order,
/// separated by a byte no field contains.
pub fn canonical_bytes(seq: u64, at: &str, appointment_id: &str, status: &str) -> Vec<u8> {
    format!("{seq}\n{at}\n{appointment_id}\n{status}").into_bytes()
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

/// Walks the audit frames in order, one frame in memory at a time, and reports the first
/// record whose bytes, sequence or links do not hold.
pub fn verify(tree: &sled::Tree) -> AuditVerdict {
    let mut chain = Chain {
        prev_hash: GENESIS_HASH.to_string(),
        expected: 1,
    };
    for entry in tree.range(frames::audit_range()) {
        let (key, value) = match entry {
            Ok(entry) => entry,
            Err(e) => return chain.broken(format!("the audit frames could not be read: {e}")),
        };
        if frames::first_of(&key) != Some(chain.expected) {
            return chain.broken(format!(
                "record {} is missing (the next frame starts at {:?})",
                chain.expected,
                frames::first_of(&key)
            ));
        }
        for record in frames::decode_audit(&value) {
            if let Err(verdict) = chain.check(record) {
                return verdict;
            }
        }
    }
    AuditVerdict::Ok {
        records: chain.expected - 1,
        head: chain.prev_hash,
    }
}

/// Where a walk of the chain stands: the hash the next record must link to, and its number.
struct Chain {
    prev_hash: String,
    expected: u64,
}

impl Chain {
    fn broken(&self, reason: String) -> AuditVerdict {
        AuditVerdict::Broken {
            first_bad_seq: self.expected,
            reason,
        }
    }

    /// Checks the next record (as it parsed) and moves past it.
    fn check(&mut self, record: Result<AuditRecord, String>) -> Result<(), AuditVerdict> {
        let expected = self.expected;
        let record =
            record.map_err(|e| self.broken(format!("record {expected} does not parse: {e}")))?;
        if record.seq != expected {
            let says = record.seq;
            return Err(self.broken(format!("record {expected} says it is record {says}")));
        }
        if record.prev_hash != self.prev_hash {
            return Err(self.broken(format!(
                "record {expected}'s prev_hash is not the hash of record {}",
                expected - 1
            )));
        }
        let hash = chain_hash(
            &record.prev_hash,
            record.seq,
            &record.at,
            &record.appointment_id,
            &record.status,
        );
        if hash != record.hash {
            return Err(self.broken(format!(
                "record {expected}'s contents do not match its hash"
            )));
        }
        self.prev_hash = record.hash;
        self.expected += 1;
        Ok(())
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
        .open_tree(frames::TREE)
        .map_err(|e| format!("cannot open the event store's tree: {e}"))?;
    let verdict = verify(&tree);
    let ok = matches!(verdict, AuditVerdict::Ok { .. });
    Ok((verdict_json(&verdict).to_string(), ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(n: u64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let record = seal(
                    seq,
                    "2026-01-01T00:00:00.000Z".into(),
                    format!("a{seq}"),
                    "PENDING".into(),
                    &prev,
                );
                prev = record.hash.clone();
                record
            })
            .collect()
    }

    #[test]
    fn a_flipped_byte_breaks_the_chain_at_its_record() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree(frames::TREE).unwrap();
        let records = chain_of(5);
        tree.insert(frames::audit_key(1), frames::encode_audit(&records[..2]))
            .unwrap();
        tree.insert(frames::audit_key(3), frames::encode_audit(&records[2..]))
            .unwrap();
        assert_eq!(
            verify(&tree),
            AuditVerdict::Ok {
                records: 5,
                head: records[4].hash.clone()
            }
        );
        let mut bytes = tree.get(frames::audit_key(3)).unwrap().unwrap().to_vec();
        let at = bytes.iter().position(|&b| b == b'P').unwrap(); // record 3's status
        bytes[at] ^= 0x01;
        tree.insert(frames::audit_key(3), bytes).unwrap();
        match verify(&tree) {
            AuditVerdict::Broken { first_bad_seq, .. } => assert_eq!(first_bad_seq, 3),
            other => panic!("a flipped byte went unnoticed: {other:?}"),
        }
    }

    #[test]
    fn a_missing_frame_breaks_the_chain_where_it_was() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree(frames::TREE).unwrap();
        let records = chain_of(5);
        tree.insert(frames::audit_key(1), frames::encode_audit(&records[..2]))
            .unwrap();
        tree.insert(frames::audit_key(5), frames::encode_audit(&records[4..]))
            .unwrap();
        match verify(&tree) {
            AuditVerdict::Broken { first_bad_seq, .. } => assert_eq!(first_bad_seq, 3),
            other => panic!("a missing frame went unnoticed: {other:?}"),
        }
    }
}
