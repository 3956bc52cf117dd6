//! The most recent durable events in memory: what the SSE followers and the webhooks read
//! while they keep up, so a follower costs no sled read and no decoding (docs/ARCHITECTURE.md,
//! "Events and audit").
//!
//! The recorder pushes a batch's events after its `fdatasync` and before the feed's head
//! moves, so the ring never holds an event a crash takes back that a reader could see (a
//! reader never reads past the head). Each event is one [`Arc`], shared by every reader. The
//! ring keeps the newest events within [`RING_EVENTS_MAX`] and [`RING_BYTES_MAX`]; a resume
//! from before its oldest event is read from the store ([`super::store`]), which serves the
//! same sequences: the seam between the two is neither a gap nor a duplicate.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use holdfast_engine::feed::StoredEvent;

/// Events kept in memory at most: about 3 s of a launch morning's peak (two events per
/// status change at 15-25 K changes/s), enough for every follower that keeps up.
pub const RING_EVENTS_MAX: usize = 65_536;
/// Bytes of event type and data kept in memory at most (about 16 MiB at 250 bytes an event):
/// a feed of unusually large events keeps fewer rather than more memory.
pub const RING_BYTES_MAX: usize = 32 << 20;

#[derive(Default)]
struct Kept {
    events: VecDeque<Arc<StoredEvent>>,
    bytes: usize,
}

/// The ring: consecutive sequences, oldest first.
pub struct Ring {
    kept: RwLock<Kept>,
    events_max: usize,
}

impl Default for Ring {
    fn default() -> Self {
        Ring::new(RING_EVENTS_MAX)
    }
}

fn size_of(event: &StoredEvent) -> usize {
    event.event_type.len() + event.data.len()
}

impl Ring {
    /// A ring of at most `events_max` events (and [`RING_BYTES_MAX`]); tests set it low.
    pub fn new(events_max: usize) -> Self {
        Ring {
            kept: RwLock::default(),
            events_max: events_max.max(1),
        }
    }

    /// Appends durable events (the next sequences after the ring's newest, or any sequences
    /// when the ring is empty) and drops the oldest past the bounds.
    pub fn push(&self, events: impl IntoIterator<Item = Arc<StoredEvent>>) {
        let mut kept = self.kept.write().unwrap_or_else(|p| p.into_inner());
        for event in events {
            if let Some(last) = kept.events.back() {
                if last.seq + 1 != event.seq {
                    // Never a gap inside the ring: start again from this event.
                    kept.events.clear();
                    kept.bytes = 0;
                }
            }
            kept.bytes += size_of(&event);
            kept.events.push_back(event);
        }
        while kept.events.len() > self.events_max || kept.bytes > RING_BYTES_MAX {
            let Some(old) = kept.events.pop_front() else {
                break;
            };
            kept.bytes -= size_of(&old);
        }
    }

    /// The events after `after`, up to `head` and at most `max` of them, when the ring holds
    /// `after + 1` (or `after` is its newest); `None` when the ring starts later (or is empty),
    /// so the caller reads the store.
    pub fn read_after(&self, after: u64, head: u64, max: usize) -> Option<Vec<Arc<StoredEvent>>> {
        let kept = self.kept.read().unwrap_or_else(|p| p.into_inner());
        let first = kept.events.front()?.seq;
        if after + 1 < first {
            return None;
        }
        let skip = usize::try_from(after + 1 - first).unwrap_or(usize::MAX);
        Some(
            kept.events
                .iter()
                .skip(skip)
                .take_while(|event| event.seq <= head)
                .take(max)
                .cloned()
                .collect(),
        )
    }

    /// The oldest sequence in the ring (`None` when empty).
    pub fn oldest(&self) -> Option<u64> {
        let kept = self.kept.read().unwrap_or_else(|p| p.into_inner());
        kept.events.front().map(|event| event.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Arc<StoredEvent> {
        Arc::new(StoredEvent {
            seq,
            event_type: "T".into(),
            data: "{}".into(),
        })
    }

    fn seqs(events: Option<Vec<Arc<StoredEvent>>>) -> Option<Vec<u64>> {
        events.map(|events| events.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn reads_inside_the_ring_stop_at_the_head_and_older_resumes_go_to_the_store() {
        let ring = Ring::default();
        assert_eq!(seqs(ring.read_after(0, 0, 10)), None, "empty: the store");
        ring.push((5..=9).map(event));
        assert_eq!(seqs(ring.read_after(3, 9, 10)), None, "4 is older");
        assert_eq!(seqs(ring.read_after(4, 9, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(seqs(ring.read_after(6, 8, 10)), Some(vec![7, 8]), "head 8");
        assert_eq!(seqs(ring.read_after(6, 9, 1)), Some(vec![7]));
        assert_eq!(seqs(ring.read_after(9, 9, 10)), Some(vec![]));
        // A gap (never made by the recorder) restarts the ring rather than hiding it.
        ring.push([event(20)]);
        assert_eq!(ring.oldest(), Some(20));
    }

    #[test]
    fn the_oldest_events_go_past_the_bound() {
        let ring = Ring::default();
        ring.push((1..=RING_EVENTS_MAX as u64 + 10).map(event));
        assert_eq!(ring.oldest(), Some(11));
        assert_eq!(seqs(ring.read_after(9, u64::MAX, 1)), None);
        assert_eq!(seqs(ring.read_after(10, u64::MAX, 1)), Some(vec![11]));
    }
}
