//! Finding one appointment's audit records (`GET /v1/admin/audit?appointment_id=`) at the
//! cost of one sled insert per recorder batch, not one per status change.
//!
//! On disk, each batch with audit records adds one index frame ([`super::frames`]): the
//! 64-bit hash ([`id_hash`]) of each record's appointment id, in sequence order. In memory,
//! loaded at open and extended after each durable batch, the chain is cut into blocks of
//! about [`AUDIT_INDEX_BLOCK_RECORDS`] records (whole batches), each with the sorted,
//! deduplicated 32-bit fingerprints of its appointments. A lookup reads the index frames of
//! only the blocks whose fingerprints hold the appointment's (one in 2^32 / 4,096, about a
//! million, for a block that does not hold it), then the audit frames of the matching
//! sequences, and keeps the records whose appointment id is the one asked (a hash collision
//! costs a read, never a wrong record).
//!
//! Memory: at most 4 bytes a record plus about 48 bytes a block, so about 40 MiB at 10 million
//! audit records (less as an appointment's changes share a block); loading it reads 8 bytes a
//! record.

use std::sync::RwLock;

/// Records of one in-memory block, at least (a block ends with the batch that reaches it).
pub const AUDIT_INDEX_BLOCK_RECORDS: usize = 4_096;

/// The stable 64-bit hash of an appointment id kept in the index frames: FNV-1a, written out
/// here because it must never change between versions (a hasher crate's may, and std's
/// `DefaultHasher` says so).
pub fn id_hash(appointment_id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    appointment_id.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

fn fingerprint(hash: u64) -> u32 {
    (hash >> 32) as u32 ^ hash as u32
}

struct Block {
    /// The first audit sequence of the block (the first of a batch).
    first: u64,
    /// One past its last audit sequence.
    end: u64,
    /// Sorted, without duplicates, once the block is closed (a later block follows it); in
    /// the last block, in the order they came. Sorting the open block once per batch sorted
    /// 4,096 fingerprints for every few records added: 0.6 s of a restart at 10 M citizens,
    /// loading the index batch by batch.
    fingerprints: Vec<u32>,
}

/// The in-memory blocks, in sequence order.
#[derive(Default)]
pub struct AuditIndex {
    blocks: RwLock<Vec<Block>>,
}

impl AuditIndex {
    /// Adds a durable batch's records: `hashes` of records `first`, `first + 1`, ...
    pub fn add(&self, first: u64, hashes: impl ExactSizeIterator<Item = u64>) {
        let count = hashes.len() as u64;
        if count == 0 {
            return;
        }
        let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
        let open = blocks.last().is_some_and(|block| {
            block.end == first && block.fingerprints.len() < AUDIT_INDEX_BLOCK_RECORDS
        });
        if !open {
            if let Some(closed) = blocks.last_mut() {
                closed.fingerprints.sort_unstable();
                closed.fingerprints.dedup();
                closed.fingerprints.shrink_to_fit();
            }
            blocks.push(Block {
                first,
                end: first,
                fingerprints: Vec::new(),
            });
        }
        let block = blocks.last_mut().expect("a block");
        block.fingerprints.extend(hashes.map(fingerprint));
        block.end = first + count;
    }

    /// The sequence ranges (`first..end`, whole batches) that may hold records of the
    /// appointment hashed `hash`, in order.
    pub fn candidates(&self, hash: u64) -> Vec<std::ops::Range<u64>> {
        let wanted = fingerprint(hash);
        let blocks = self.blocks.read().unwrap_or_else(|p| p.into_inner());
        let open = blocks.len().saturating_sub(1);
        blocks
            .iter()
            .enumerate()
            .filter(|(at, block)| {
                if *at == open {
                    block.fingerprints.contains(&wanted)
                } else {
                    block.fingerprints.binary_search(&wanted).is_ok()
                }
            })
            .map(|(_, block)| block.first..block.end)
            .collect()
    }

    /// Bytes the blocks hold (their fingerprints and bookkeeping).
    pub fn memory_bytes(&self) -> usize {
        let blocks = self.blocks.read().unwrap_or_else(|p| p.into_inner());
        blocks
            .iter()
            .map(|block| std::mem::size_of::<Block>() + block.fingerprints.capacity() * 4)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv_1a_and_never_changes() {
        // The reference vectors of FNV-1a 64.
        assert_eq!(id_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(id_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(id_hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn only_blocks_holding_the_appointment_are_candidates_and_blocks_close_when_full() {
        let n = AUDIT_INDEX_BLOCK_RECORDS as u64;
        // Block 1: records 1..=n (A at 1), then a batch opens block 2 (B at n+1, A at n+2).
        let mut first_batch: Vec<u64> = (1..=n).map(|seq| id_hash(&format!("x{seq}"))).collect();
        first_batch[0] = id_hash("A");
        let index = AuditIndex::default();
        index.add(1, first_batch.into_iter());
        index.add(n + 1, [id_hash("B"), id_hash("A")].into_iter());
        assert_eq!(index.candidates(id_hash("A")), [1..n + 1, n + 1..n + 3]);
        // The open block takes batches in any order; the closed one was sorted as it closed.
        index.add(
            n + 3,
            [id_hash("C"), id_hash("x5"), id_hash("C")].into_iter(),
        );
        assert_eq!(index.candidates(id_hash("C")), vec![(n + 1)..(n + 6)]);
        assert_eq!(index.candidates(id_hash("x5")), [1..n + 1, n + 1..n + 6]);
        assert_eq!(index.candidates(id_hash("B")), vec![(n + 1)..(n + 6)]);
        assert!(index.candidates(id_hash("nobody")).is_empty());
        assert!(index.memory_bytes() >= (n as usize + 2) * 4);
    }
}
