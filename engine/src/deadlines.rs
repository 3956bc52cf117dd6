//! The deadline queue of one shard: every timed thing the shard must act on by itself, in
//! deadline order.
//!
//! One ordered set per shard instead of a tokio timer per deadline: a million holds cost a few
//! tens of bytes each here, and the shard's timer wakes once for the earliest. Each entry is a
//! typed [`Deadline`], so a new kind of timed transition (a no-show sweep, the expiry of a
//! citizen's claim) is one more variant, not a new mechanism.
//!
//! The queue is an exact index: `apply` inserts an entry when a deadline starts and removes it
//! when the thing it times ends, whichever way (a hold confirmed, released or expired; a
//! CONFIRMED appointment cancelled, moved, clinic-cancelled, administered or marked NO_SHOW). So the
//! decision of the expiry command only reads [`DeadlineQueue::due`], and there are no stale
//! entries to skip or compact. Deadlines are absolute wall-clock instants written in the log,
//! so recovery finds the ones that passed while the node was down.

use std::collections::BTreeSet;

use crate::clock::UnixMs;

/// What falls due. Ordered after the instant, so equal instants pop in a fixed order and
/// replay reproduces it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Deadline {
    /// A PENDING hold (appointment `seq`) expires: its seat and dose return.
    Hold { seq: u64 },
    /// A CONFIRMED appointment (`seq`) whose slot ended more than the no-show grace ago
    /// becomes NO_SHOW: its dose returns, its seat stays counted (`no_show`). Timed at the
    /// appointment's `no_show_at_ms` while it is CONFIRMED (see `Appointment::no_show_at_ms`
    /// for where the instant comes from and when it moves).
    NoShow { seq: u64 },
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeadlineQueue {
    entries: BTreeSet<(UnixMs, Deadline)>,
}

impl DeadlineQueue {
    /// Starts timing `deadline` at `at_ms`.
    pub fn insert(&mut self, at_ms: UnixMs, deadline: Deadline) {
        let fresh = self.entries.insert((at_ms, deadline));
        debug_assert!(fresh, "{deadline:?} at {at_ms} was already timed");
    }

    /// Stops timing `deadline` (it fell due or ended another way). True when it was timed.
    pub fn remove(&mut self, at_ms: UnixMs, deadline: Deadline) -> bool {
        self.entries.remove(&(at_ms, deadline))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest deadline, which the shard's timer sleeps until.
    pub fn earliest(&self) -> Option<UnixMs> {
        self.entries.first().map(|(at_ms, _)| *at_ms)
    }

    /// Up to `max` deadlines at or before `now_ms`, earliest first.
    pub fn due(&self, now_ms: UnixMs, max: usize) -> impl Iterator<Item = (UnixMs, Deadline)> + '_ {
        self.entries
            .iter()
            .take_while(move |(at_ms, _)| *at_ms <= now_ms)
            .take(max)
            .copied()
    }

    /// Every entry, earliest first (for invariant checks).
    pub fn iter(&self) -> impl Iterator<Item = (UnixMs, Deadline)> + '_ {
        self.entries.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(seq: u64) -> Deadline {
        Deadline::Hold { seq }
    }

    #[test]
    fn due_in_deadline_order_and_removed_exactly() {
        let mut q = DeadlineQueue::default();
        q.insert(30, hold(3));
        q.insert(10, hold(1));
        q.insert(20, hold(2));
        q.insert(40, hold(4));
        // Hold 2 ended another way (confirmed): it is no longer due.
        assert!(q.remove(20, hold(2)));
        assert!(!q.remove(20, hold(2)));
        let due: Vec<_> = q.due(35, 10).collect();
        assert_eq!(due, vec![(10, hold(1)), (30, hold(3))]);
        // Reading is not popping: the decision reads, apply removes.
        assert_eq!(q.len(), 3);
        for (at_ms, d) in due {
            q.remove(at_ms, d);
        }
        assert_eq!(q.earliest(), Some(40));
        assert_eq!(q.due(100, 10).collect::<Vec<_>>(), vec![(40, hold(4))]);
    }

    #[test]
    fn due_respects_max_and_equal_instants_have_a_fixed_order() {
        let mut q = DeadlineQueue::default();
        for seq in (0..10u64).rev() {
            q.insert(5, hold(seq));
        }
        let due: Vec<_> = q.due(100, 4).collect();
        assert_eq!(due, (0..4).map(|s| (5, hold(s))).collect::<Vec<_>>());
        assert_eq!(q.len(), 10);
    }
}
