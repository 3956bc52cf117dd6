//! Cutting a group commit into frames, and frames into sled batches.
//!
//! Records are packed in submission order into frames of at most `FRAME_BYTES_MAX` bytes (a
//! record larger than that gets a frame of its own), numbered from the log's next frame. A
//! frame never spans two sled batches, and a sled batch holds whole ops only: at most
//! `SLED_BATCH_FRAMES_MAX` frames unless one op needs more, in which case it goes alone. An
//! op is so always atomic on disk (a sled batch is), and a crash between two sled batches of
//! one group commit leaves a prefix of whole ops, none of them acknowledged.

use super::format::{frame_key, FrameValue, RECORD_HEADER_LEN};
use super::{Record, FRAME_BYTES_MAX, SLED_BATCH_FRAMES_MAX};

/// What one group commit's records became.
#[derive(Default)]
pub(crate) struct Framed {
    /// To apply in this order.
    pub(crate) batches: Vec<sled::Batch>,
    /// Per frame written, in order: (frame number, (shard, highest seq in it) per shard).
    pub(crate) frames: Vec<(u64, Vec<(u32, u64)>)>,
    pub(crate) records: u64,
    /// Keys + values handed to sled.
    pub(crate) bytes: u64,
}

struct OpenFrame {
    number: u64,
    value: FrameValue,
    shards: Vec<(u32, u64)>,
}

pub(crate) struct Framer {
    next_frame: u64,
    done: Framed,
    batch: sled::Batch,
    frames_in_batch: usize,
    open: Option<OpenFrame>,
}

impl Framer {
    pub(crate) fn new(next_frame: u64) -> Framer {
        Framer {
            next_frame,
            done: Framed::default(),
            batch: sled::Batch::default(),
            frames_in_batch: 0,
            open: None,
        }
    }

    /// Starts an op: once the sled batch is full, a new one begins (and so a new frame).
    pub(crate) fn begin_op(&mut self) {
        let in_batch = self.frames_in_batch + usize::from(self.open.is_some());
        if in_batch >= SLED_BATCH_FRAMES_MAX {
            self.close_frame();
            let full = std::mem::take(&mut self.batch);
            self.done.batches.push(full);
            self.frames_in_batch = 0;
        }
    }

    pub(crate) fn push(&mut self, record: &Record) {
        let size = RECORD_HEADER_LEN + record.payload.len();
        if self
            .open
            .as_ref()
            .is_some_and(|open| open.value.len() + size > FRAME_BYTES_MAX)
        {
            self.close_frame();
        }
        let open = self.open.get_or_insert_with(|| {
            let number = self.next_frame;
            self.next_frame += 1;
            OpenFrame {
                number,
                value: FrameValue::with_capacity(FRAME_BYTES_MAX.max(size + RECORD_HEADER_LEN)),
                shards: Vec::new(),
            }
        });
        open.value.push(record.shard, record.seq, &record.payload);
        // Records of one shard tend to come together: look at the last entry first.
        match open
            .shards
            .iter_mut()
            .rev()
            .find(|(s, _)| *s == record.shard)
        {
            Some((_, max)) => *max = (*max).max(record.seq),
            None => open.shards.push((record.shard, record.seq)),
        }
        self.done.records += 1;
    }

    fn close_frame(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let key = frame_key(open.number);
        let value = open.value.finish(&key);
        self.done.bytes += (key.len() + value.len()) as u64;
        self.batch.insert(&key[..], value);
        self.frames_in_batch += 1;
        self.done.frames.push((open.number, open.shards));
    }

    pub(crate) fn finish(mut self) -> Framed {
        self.close_frame();
        if self.frames_in_batch > 0 {
            self.done.batches.push(self.batch);
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(shard: u32, seq: u64, len: usize) -> Record {
        Record {
            shard,
            seq,
            payload: vec![shard as u8; len],
        }
    }

    #[test]
    fn records_fill_frames_up_to_the_cap_and_a_big_one_goes_alone() {
        let mut framer = Framer::new(10);
        framer.begin_op();
        let per_frame = (FRAME_BYTES_MAX - 5) / (RECORD_HEADER_LEN + 100);
        for seq in 1..=per_frame as u64 + 1 {
            framer.push(&record(1, seq, 100));
        }
        framer.begin_op();
        framer.push(&record(2, 1, FRAME_BYTES_MAX * 3));
        framer.push(&record(2, 2, 10));
        let framed = framer.finish();
        let frames: Vec<_> = framed.frames.iter().map(|(n, s)| (*n, s.clone())).collect();
        assert_eq!(
            frames,
            vec![
                (10, vec![(1, per_frame as u64)]),
                (11, vec![(1, per_frame as u64 + 1)]),
                (12, vec![(2, 1)]),
                (13, vec![(2, 2)]),
            ]
        );
        assert_eq!(framed.batches.len(), 1);
        assert_eq!(framed.records, per_frame as u64 + 3);
    }

    #[test]
    fn a_sled_batch_holds_whole_ops_and_a_bounded_number_of_frames() {
        let mut framer = Framer::new(0);
        // Ops of one frame each (a record of most of a frame), more than a batch holds.
        let ops = SLED_BATCH_FRAMES_MAX + 3;
        for seq in 1..=ops as u64 {
            framer.begin_op();
            framer.push(&record(7, seq, FRAME_BYTES_MAX - 100));
        }
        let framed = framer.finish();
        assert_eq!(framed.frames.len(), ops);
        assert_eq!(framed.batches.len(), 2);
        // Small ops share frames.
        let mut framer = Framer::new(0);
        for shard in 0..40 {
            framer.begin_op();
            framer.push(&record(shard, 1, 100));
        }
        let framed = framer.finish();
        assert_eq!(framed.frames.len(), 1);
        assert_eq!(framed.frames[0].1.len(), 40);
        assert_eq!(Framer::new(0).finish().batches.len(), 0);
    }
}
