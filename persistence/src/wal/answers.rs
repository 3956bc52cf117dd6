//! Stored idempotent answers, kept on disk rather than in memory: sled tree `answers`.
//!
//! A shard keeps every answer it sent under an Idempotency-Key for a day (docs/API.md), tens of
//! thousands per shard at launch, each a whole JSON body of about 500 bytes. Kept in memory
//! they were the largest part of a node's resident memory and of its snapshots
//! (docs/PERFORMANCE.md). They are cold: read again only when a client retries. So the shard
//! keeps a small index in memory (the key's digest, the request's fingerprint, when it was
//! stored) and hands the answer to the log, which writes it here in the same group commit as
//! the log record that names it: one flush makes both durable.
//!
//! Key: `[shard: u32 BE][stored_at_ms: u64 BE][key digest: 16 bytes]` (28 bytes), so a shard's
//! answers sort by age, and forgetting the ones past the retention is one range of keys
//! ([`forget_before`]). That range also takes any answer whose log record a crash cut off
//! (sled may keep a write of the answers tree that the frame naming it did not reach), so
//! nothing is kept longer than the retention. The value is the engine's bytes; this module
//! does not read them.

use super::{remove_in_batches, SLED_BATCH_FRAMES_MAX};

pub(crate) const ANSWERS_TREE: &str = "answers";
/// Bytes of a key's digest (the engine's, of the caller and the key).
pub const ANSWER_ID_BYTES: usize = 16;
const ANSWER_KEY_LEN: usize = 4 + 8 + ANSWER_ID_BYTES;
/// Answers removed per sled batch when the old ones are forgotten: their keys are small and
/// a batch of removals costs sled no more than one insert of its size.
const FORGET_BATCH_MAX: usize = 8 * SLED_BATCH_FRAMES_MAX;

/// Where one answer is: its shard, when it was stored and its key's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnswerAt {
    pub shard: u32,
    pub stored_at_ms: u64,
    pub id: [u8; ANSWER_ID_BYTES],
}

/// An answer to store with a group commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub at: AnswerAt,
    pub value: Vec<u8>,
}

pub(crate) fn answer_key(at: &AnswerAt) -> [u8; ANSWER_KEY_LEN] {
    let mut key = [0u8; ANSWER_KEY_LEN];
    key[..4].copy_from_slice(&at.shard.to_be_bytes());
    key[4..12].copy_from_slice(&at.stored_at_ms.to_be_bytes());
    key[12..].copy_from_slice(&at.id);
    key
}

/// Removes `shard`'s answers stored before `before_ms`, in sled batches of at most
/// [`FORGET_BATCH_MAX`]; returns how many there were.
pub(crate) fn forget_before(tree: &sled::Tree, shard: u32, before_ms: u64) -> sled::Result<u64> {
    let from = AnswerAt {
        shard,
        stored_at_ms: 0,
        id: [0; ANSWER_ID_BYTES],
    };
    let to = AnswerAt {
        shard,
        stored_at_ms: before_ms,
        id: [0; ANSWER_ID_BYTES],
    };
    let keys = tree.range(answer_key(&from)..answer_key(&to)).keys();
    remove_in_batches(tree, keys, FORGET_BATCH_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(shard: u32, stored_at_ms: u64, id: u8) -> AnswerAt {
        AnswerAt {
            shard,
            stored_at_ms,
            id: [id; ANSWER_ID_BYTES],
        }
    }

    #[test]
    fn keys_sort_by_shard_then_age() {
        let mut keys = [
            answer_key(&at(2, 1, 0)),
            answer_key(&at(1, 300, 0)),
            answer_key(&at(1, 2, 9)),
            answer_key(&at(1, 2, 1)),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                answer_key(&at(1, 2, 1)),
                answer_key(&at(1, 2, 9)),
                answer_key(&at(1, 300, 0)),
                answer_key(&at(2, 1, 0)),
            ]
        );
    }

    #[test]
    fn forgetting_takes_one_shards_older_answers_only() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree(ANSWERS_TREE).unwrap();
        // More than one removal batch of shard 1's old answers.
        let old = FORGET_BATCH_MAX as u64 + 5;
        for i in 0..old {
            tree.insert(answer_key(&at(1, 100 + i, (i % 251) as u8)), &b"x"[..])
                .unwrap();
        }
        let kept = [at(1, 100 + old, 0), at(0, 1, 0), at(2, 1, 0)];
        for a in &kept {
            tree.insert(answer_key(a), &b"y"[..]).unwrap();
        }
        assert_eq!(forget_before(&tree, 1, 100 + old).unwrap(), old);
        assert_eq!(tree.len(), kept.len());
        for a in &kept {
            assert!(tree.contains_key(answer_key(a)).unwrap(), "{a:?}");
        }
        assert_eq!(forget_before(&tree, 1, 100 + old).unwrap(), 0);
    }
}
