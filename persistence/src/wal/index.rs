//! Which frames the log must keep: per shard, the frames it has records in that no durable
//! snapshot of it covers yet. The log's first live frame is the oldest such frame over all
//! shards; every frame below it is deleted (after the snapshot that released it is durable).
//!
//! Memory: one `(frame, max seq)` pair (16 bytes) per shard per live frame it has records in,
//! so at most live frames x shards per frame; a frame holds at most `FRAME_BYTES_MAX` bytes
//! of records, so a shard's entries are at most one per ~`FRAME_BYTES_MAX` of its own
//! unsnapshotted tail plus one per group commit it wrote in.

use std::collections::{BTreeMap, VecDeque};

/// Where the log stands, for operators and for the engine: a shard that holds the oldest
/// live frame (`oldest_holder`) keeps every later frame on disk until it snapshots, however
/// busy the other shards are. Ask it for a snapshot when `next_frame - first_live_frame`
/// grows too long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSpan {
    /// The oldest frame some shard still needs (`next_frame` when none does). Frames below
    /// it are deleted once the flush that released them is done.
    pub first_live_frame: u64,
    /// The number the next frame written will get.
    pub next_frame: u64,
    /// Frames stored right now (deleted ones not counted; frames below `first_live_frame`
    /// count until their deletion).
    pub live_frames: u64,
    /// The shard whose oldest unsnapshotted frame is `first_live_frame`, if any.
    pub oldest_holder: Option<u32>,
}

#[derive(Debug, Default)]
pub(crate) struct LiveIndex {
    /// Shard -> its live frames, oldest first: (frame number, its highest seq in that frame).
    shards: BTreeMap<u32, VecDeque<(u64, u64)>>,
    next_frame: u64,
    live_frames: u64,
    /// Every frame below this has been deleted (or was never written).
    deleted_below: u64,
}

impl LiveIndex {
    /// After recovery noted the frames shards need: where the log stands.
    pub(crate) fn seed(&mut self, next_frame: u64, live_frames: u64) {
        self.next_frame = next_frame;
        self.live_frames = live_frames;
    }

    pub(crate) fn next_frame(&self) -> u64 {
        self.next_frame
    }

    /// Frames `next_frame..next_frame + count` were written.
    pub(crate) fn written(&mut self, count: u64) {
        self.next_frame += count;
        self.live_frames += count;
    }

    /// `shard` has records up to `seq` in `frame` (frames noted in increasing order).
    pub(crate) fn note(&mut self, shard: u32, frame: u64, seq: u64) {
        let frames = self.shards.entry(shard).or_default();
        match frames.back_mut() {
            Some((last, max)) if *last == frame => *max = (*max).max(seq),
            _ => frames.push_back((frame, seq)),
        }
    }

    /// A snapshot of `shard` at `seq` is durable: it no longer needs frames whose records of
    /// it are all at or below `seq`.
    pub(crate) fn release(&mut self, shard: u32, seq: u64) {
        if let Some(frames) = self.shards.get_mut(&shard) {
            while frames.front().is_some_and(|(_, max)| *max <= seq) {
                frames.pop_front();
            }
            if frames.is_empty() {
                self.shards.remove(&shard);
            }
        }
    }

    pub(crate) fn span(&self) -> LogSpan {
        let oldest = self
            .shards
            .iter()
            .filter_map(|(shard, frames)| frames.front().map(|(frame, _)| (*frame, *shard)))
            .min();
        LogSpan {
            first_live_frame: oldest.map_or(self.next_frame, |(frame, _)| frame),
            next_frame: self.next_frame,
            live_frames: self.live_frames,
            oldest_holder: oldest.map(|(_, shard)| shard),
        }
    }

    /// The frames to delete now, `deleted_below..first_live_frame`, if that range is not
    /// empty; the caller deletes the stored ones and reports them with `deleted`.
    pub(crate) fn deletable(&self) -> Option<std::ops::Range<u64>> {
        let first_live = self.span().first_live_frame;
        (first_live > self.deleted_below).then_some(self.deleted_below..first_live)
    }

    /// Every frame below `below` is gone; `count` of them were stored until now.
    pub(crate) fn deleted(&mut self, below: u64, count: u64) {
        self.deleted_below = self.deleted_below.max(below);
        self.live_frames = self.live_frames.saturating_sub(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_needed_frame_over_all_shards_is_the_first_live_one() {
        let mut index = LiveIndex::default();
        index.seed(1, 0);
        index.deleted(1, 0);
        // Frame 1: shards 0 and 1; frame 2: shard 0; frame 3: shards 0 and 2.
        index.note(0, 1, 5);
        index.note(1, 1, 1);
        index.note(0, 1, 6);
        index.note(0, 2, 9);
        index.note(0, 3, 12);
        index.note(2, 3, 4);
        index.written(3);
        assert_eq!(index.span().first_live_frame, 1);
        assert_eq!(index.deletable(), None);
        // Shard 0 snapshots at 9: frames 1 and 2 are no longer its; shard 1 still holds 1.
        index.release(0, 9);
        let span = index.span();
        assert_eq!((span.first_live_frame, span.oldest_holder), (1, Some(1)));
        index.release(1, 1);
        assert_eq!(index.deletable(), Some(1..3));
        index.deleted(3, 2);
        let span = index.span();
        assert_eq!(
            span,
            LogSpan {
                first_live_frame: 3,
                next_frame: 4,
                live_frames: 1,
                oldest_holder: Some(0)
            }
        );
        assert_eq!(index.deletable(), None);
        // A snapshot below a frame's highest seq keeps the frame.
        index.release(0, 11);
        assert_eq!(index.span().first_live_frame, 3);
        index.release(0, 12);
        index.release(2, 4);
        assert_eq!(index.span().oldest_holder, None);
        assert_eq!(index.deletable(), Some(3..4));
    }
}
