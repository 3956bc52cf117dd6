//! The deadline queue of one shard: every PENDING hold's expiry in one binary heap.
//!
//! One heap per shard instead of a tokio timer per hold: a million holds cost 16 bytes each
//! here, and the shard wakes once for the earliest deadline. The heap is an index over the
//! shard's appointments, not a record: entries are removed lazily (a confirmed or released
//! hold leaves its entry behind until it reaches the top or the heap is compacted), so the
//! owner tells the queue which entries are still live.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::clock::UnixMs;

/// Compaction threshold: the heap is rebuilt from live entries once stale ones outnumber
/// live ones by this factor, so its size stays within a constant factor of the live holds
/// (plus `COMPACT_SLACK`, which keeps small heaps from rebuilding constantly).
const COMPACT_STALE_FACTOR: usize = 2;
const COMPACT_SLACK: usize = 1024;

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeadlineQueue {
    heap: BinaryHeap<Reverse<(UnixMs, u64)>>,
}

impl DeadlineQueue {
    pub fn push(&mut self, deadline_ms: UnixMs, seq: u64) {
        self.heap.push(Reverse((deadline_ms, seq)));
    }

    /// Entries in the heap, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest deadline at the top. Callers keep the top live (see `drop_stale_top`).
    pub fn earliest(&self) -> Option<UnixMs> {
        self.heap.peek().map(|Reverse((deadline, _))| *deadline)
    }

    /// Pops entries at the top that are no longer live.
    pub fn drop_stale_top(&mut self, is_live: impl Fn(u64, UnixMs) -> bool) {
        while let Some(Reverse((deadline, seq))) = self.heap.peek().copied() {
            if is_live(seq, deadline) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Pops up to `max` live entries whose deadline is at or before `now_ms`, in deadline
    /// order; stale entries met on the way are dropped.
    pub fn pop_due(
        &mut self,
        now_ms: UnixMs,
        max: usize,
        is_live: impl Fn(u64, UnixMs) -> bool,
    ) -> Vec<u64> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.heap.peek().copied() {
                Some(Reverse((deadline, seq))) if deadline <= now_ms => {
                    self.heap.pop();
                    if is_live(seq, deadline) {
                        due.push(seq);
                    }
                }
                _ => break,
            }
        }
        due
    }

    /// Rebuilds the heap from live entries when stale ones dominate.
    pub fn maybe_compact(&mut self, live_count: usize, is_live: impl Fn(u64, UnixMs) -> bool) {
        if self.heap.len() <= live_count * COMPACT_STALE_FACTOR + COMPACT_SLACK {
            return;
        }
        let entries = std::mem::take(&mut self.heap).into_vec();
        self.heap = entries
            .into_iter()
            .filter(|Reverse((deadline, seq))| is_live(*seq, *deadline))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_due_in_order_and_skips_stale() {
        let mut q = DeadlineQueue::default();
        q.push(30, 3);
        q.push(10, 1);
        q.push(20, 2);
        q.push(40, 4);
        let live = |seq: u64, _| seq != 2;
        assert_eq!(q.pop_due(35, 10, live), vec![1, 3]);
        assert_eq!(q.earliest(), Some(40));
        assert_eq!(q.pop_due(100, 10, live), vec![4]);
        assert!(q.is_empty());
    }

    #[test]
    fn pop_due_respects_max() {
        let mut q = DeadlineQueue::default();
        for i in 0..10 {
            q.push(i, i as u64);
        }
        assert_eq!(q.pop_due(100, 4, |_, _| true).len(), 4);
        assert_eq!(q.len(), 6);
    }

    #[test]
    fn compaction_bounds_stale_entries() {
        let mut q = DeadlineQueue::default();
        for i in 0..5000u64 {
            q.push(i as i64, i);
        }
        // Only the last 10 are live.
        q.maybe_compact(10, |seq, _| seq >= 4990);
        assert_eq!(q.len(), 10);
        q.drop_stale_top(|seq, _| seq >= 4995);
        assert_eq!(q.earliest(), Some(4995));
    }
}
