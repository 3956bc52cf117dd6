//! The writer thread: drains the queue into batches, one durable flush per batch (group
//! commit), then the batch's acks in submission order.
//!
//! A batch's records become frames (`frames.rs`): one sled insert per frame, not per record,
//! which is what sled charges for (each insert clones and later frees the leaf it lands in).
//!
//! The idempotent answers that come with an append go to the `answers` tree (`answers.rs`) in
//! one sled batch, applied before the batch's frames, so the record naming an answer never
//! reaches sled before the answer; the same flush makes both durable.
//!
//! A snapshot's payload goes to a file of its own (`snapshot_files.rs`), written and synced
//! before its pointer reaches sled; the shard's previous file is deleted after the flush
//! that made the new pointer durable.
//!
//! Why separate `sled::Batch`es (frames, then snapshot pointers) and no transaction: a batch is
//! atomic within its tree, and nothing needs the snapshot and the truncation of the log to be
//! atomic together. The snapshot is applied after the batch's frames (so it never covers
//! records not yet written), and the frames it releases are deleted only after a durable
//! flush has put the snapshot on disk (`index.rs` says which). A crash in between leaves
//! frames whose records are at or below their shards' snapshots, which recovery skips and
//! deletes; it can never leave a truncated log without its snapshot. A sled transaction
//! would copy every write into its own buffers, for no gain here.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::acker::{self, AckBatch};
use super::answers::{answer_key, forget_before, Answer};

use super::format::SnapshotFile;
use super::format::{encode_snapshot_pointer, frame_key, snapshot_key};
use super::frames::{Framed, Framer};
use super::index::LiveIndex;
use super::snapshot_files::SnapshotFiles;
use super::{
    lock, remove_in_batches, Ack, Durability, Record, Shared, WalError, SLED_BATCH_FRAMES_MAX,
};

/// Records per group commit (a histogram; `/metrics`, docs/API.md "Operators").
pub const WAL_BATCH_RECORDS: &str = "holdfast_wal_batch_records";
/// Seconds per durable flush (a histogram).
pub const WAL_FSYNC_SECONDS: &str = "holdfast_wal_fsync_seconds";

pub(crate) enum Op {
    Append {
        records: Vec<Record>,
        /// Answers to store with the records (`answers.rs`).
        answers: Vec<Answer>,
        ack: Ack,
    },
    /// Removes a shard's answers stored before `before_ms`; nothing to acknowledge.
    ForgetAnswers { shard: u32, before_ms: u64 },
    Snapshot {
        shard: u32,
        seq: u64,
        payload: Vec<u8>,
        ack: Ack,
    },
}

impl Op {
    /// Its share of `batch_records_max`: its records, and at least 1 so barriers and
    /// snapshots count too.
    fn weight(&self) -> usize {
        match self {
            Op::Append {
                records, answers, ..
            } => (records.len() + answers.len()).max(1),
            Op::Snapshot { .. } | Op::ForgetAnswers { .. } => 1,
        }
    }
}

pub(crate) struct Writer {
    pub(crate) rx: Receiver<Op>,
    /// To the ack thread; dropped when the writer returns, which ends that thread.
    pub(crate) acks: Sender<AckBatch>,
    pub(crate) db: sled::Db,
    pub(crate) frames: sled::Tree,
    pub(crate) snapshots: sled::Tree,
    pub(crate) answers: sled::Tree,
    pub(crate) files: SnapshotFiles,
    pub(crate) shared: Arc<Shared>,
    pub(crate) durability: Durability,
    pub(crate) batch_records_max: usize,
    pub(crate) async_interval: Duration,
    pub(crate) gate: super::WriterGate,
}

/// The writer's own bookkeeping between batches.
pub(crate) struct State {
    /// Which frames each shard still needs, and the next frame number.
    pub(crate) index: LiveIndex,
    /// Snapshots written to sled but not yet flushed: shard -> highest seq. The frames they
    /// release are deleted after the next durable flush.
    unflushed_snapshots: BTreeMap<u32, u64>,
    /// Shard -> the snapshot file its durable pointer names.
    snapshot_files: BTreeMap<u32, SnapshotFile>,
    /// Snapshot files whose pointers were written since the last durable flush, in order.
    unflushed_files: Vec<SnapshotFile>,
    /// Something was written to sled since the last durable flush.
    dirty: bool,
    last_flush: Instant,
}

impl State {
    pub(crate) fn new(index: LiveIndex, snapshot_files: BTreeMap<u32, SnapshotFile>) -> State {
        State {
            index,
            unflushed_snapshots: BTreeMap::new(),
            snapshot_files,
            unflushed_files: Vec::new(),
            dirty: false,
            last_flush: Instant::now(),
        }
    }
}

/// Deletes the stored frames in `range` in sled batches of at most `SLED_BATCH_FRAMES_MAX`;
/// returns how many there were.
pub(crate) fn delete_frames(frames: &sled::Tree, range: Range<u64>) -> sled::Result<u64> {
    let keys = frames
        .range(frame_key(range.start)..frame_key(range.end))
        .keys();
    remove_in_batches(frames, keys, SLED_BATCH_FRAMES_MAX)
}

/// A batch turned into frames, the snapshots to store, and the acks in order.
struct Prepared {
    framed: Framed,
    /// The answers to store, as one sled batch, and how many and how large.
    answers: sled::Batch,
    answer_count: usize,
    answer_bytes: u64,
    /// (shard, before_ms) of the old answers to forget, in order.
    forgets: Vec<(u32, u64)>,
    /// (shard, seq, payload), in order.
    snapshots: Vec<(u32, u64, Vec<u8>)>,
    acks: Vec<Ack>,
}

/// A batch's snapshots once their files are written: the pointers for sled.
struct StoredFiles {
    pointers: sled::Batch,
    files: Vec<SnapshotFile>,
    bytes: u64,
}

fn prepare(batch: Vec<Op>, next_frame: u64) -> Prepared {
    let mut acks = Vec::with_capacity(batch.len());
    let mut framer = Framer::new(next_frame);
    let mut snapshots = Vec::new();
    let mut answer_batch = sled::Batch::default();
    let (mut answer_count, mut answer_bytes) = (0, 0);
    let mut forgets = Vec::new();
    for op in batch {
        match op {
            Op::Append {
                records,
                answers,
                ack,
            } => {
                framer.begin_op();
                for record in &records {
                    framer.push(record);
                }
                for answer in answers {
                    let key = answer_key(&answer.at);
                    answer_count += 1;
                    answer_bytes += (key.len() + answer.value.len()) as u64;
                    answer_batch.insert(&key[..], answer.value);
                }
                acks.push(ack);
            }
            Op::ForgetAnswers { shard, before_ms } => forgets.push((shard, before_ms)),
            Op::Snapshot {
                shard,
                seq,
                payload,
                ack,
            } => {
                snapshots.push((shard, seq, payload));
                acks.push(ack);
            }
        }
    }
    Prepared {
        framed: framer.finish(),
        answers: answer_batch,
        answer_count,
        answer_bytes,
        forgets,
        snapshots,
        acks,
    }
}

impl Writer {
    pub(crate) fn run(self, mut state: State) -> Result<(), WalError> {
        while let Some(first) = self.next_first(&mut state) {
            let mut weight = first.weight();
            let mut batch = vec![first];
            while weight < self.batch_records_max {
                match self.rx.try_recv() {
                    Ok(op) => {
                        weight += op.weight();
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            self.gate.pass();
            self.commit(batch, &mut state);
        }
        // The queue is closed and empty: everything accepted has been processed.
        self.shutdown(&mut state)
    }

    /// Blocks for the next op; in Async mode with unflushed writes, flushes when the interval
    /// runs out first. None once the queue is closed and empty.
    fn next_first(&self, state: &mut State) -> Option<Op> {
        loop {
            if self.durability == Durability::Async && state.dirty && !self.shared.is_failed() {
                match self
                    .rx
                    .recv_deadline(state.last_flush + self.async_interval)
                {
                    Ok(op) => return Some(op),
                    Err(RecvTimeoutError::Timeout) => self.flush(state),
                    Err(RecvTimeoutError::Disconnected) => return None,
                }
            } else {
                return self.rx.recv().ok();
            }
        }
    }

    fn fail_all(&self, acks: Vec<Ack>) {
        self.ack(acks, Err(self.shared.failed_error()));
    }

    /// Hands a batch's acks to the ack thread (`acker.rs`), in order; runs them here only
    /// if that thread is gone.
    fn ack(&self, acks: Vec<Ack>, result: Result<(), WalError>) {
        if acks.is_empty() {
            return;
        }
        if let Err(returned) = self.acks.send((acks, result)) {
            let (acks, result) = returned.into_inner();
            for ack in acks {
                acker::call(ack, result.clone());
            }
        }
    }

    fn commit(&self, batch: Vec<Op>, state: &mut State) {
        if self.shared.is_failed() {
            self.fail_all(batch.into_iter().filter_map(Op::into_ack).collect());
            return;
        }
        let Prepared {
            framed,
            answers,
            answer_count,
            answer_bytes,
            forgets,
            snapshots,
            acks,
        } = prepare(batch, state.index.next_frame());
        if framed.records == 0 && snapshots.is_empty() && answer_count == 0 && forgets.is_empty() {
            // Only barriers: what they wait for was made durable (Sync) or written (Async)
            // before their predecessors were acked, so there is nothing to write or flush.
            // Refusals travel as barriers; they must not each cost an fdatasync.
            let batches = self.shared.batches.fetch_add(1, Ordering::AcqRel) + 1;
            if self.durability == Durability::Sync {
                self.shared
                    .flushed_batch_seq
                    .store(batches, Ordering::Release);
            }
            self.ack(acks, Ok(()));
            return;
        }
        let (records, frames) = (framed.records, framed.frames.len() as u64);
        let any_snapshot = !snapshots.is_empty();
        let stored = match self.write_snapshot_files(snapshots) {
            Ok(stored) => stored,
            Err(why) => {
                self.shared.fail(why);
                self.fail_all(acks);
                return;
            }
        };
        let bytes = framed.bytes + stored.bytes + answer_bytes;
        // Answers first: a record that names one never reaches sled before it.
        let answers_written = if answer_count > 0 {
            self.answers.apply_batch(answers)
        } else {
            Ok(())
        };
        let written = answers_written
            .and_then(|()| self.apply(framed, stored.pointers, any_snapshot, state))
            .and_then(|()| {
                forgets.iter().try_for_each(|&(shard, before)| {
                    forget_before(&self.answers, shard, before).map(drop)
                })
            });
        if let Err(e) = written {
            self.shared.fail_in_sled(format!("sled write: {e}"));
            self.fail_all(acks);
            return;
        }
        state.unflushed_files.extend(stored.files);
        // One sample per group commit; a no-op when the process installed no recorder.
        metrics::histogram!(WAL_BATCH_RECORDS).record(records as f64);
        let s = &self.shared;
        s.batches.fetch_add(1, Ordering::AcqRel);
        s.records.fetch_add(records, Ordering::AcqRel);
        s.frames.fetch_add(frames, Ordering::AcqRel);
        s.bytes.fetch_add(bytes, Ordering::AcqRel);
        state.dirty = true;
        for file in &state.unflushed_files {
            let (shard, seq) = (file.shard, file.seq);
            let highest = state.unflushed_snapshots.entry(shard).or_insert(seq);
            *highest = (*highest).max(seq);
        }
        self.flush_and_ack(acks, state);
    }

    /// Sync: flush, then ack (or fail) the batch. Async: ack, then flush if it is time.
    fn flush_and_ack(&self, acks: Vec<Ack>, state: &mut State) {
        match self.durability {
            Durability::Sync => {
                self.flush(state);
                if self.shared.is_failed() {
                    self.fail_all(acks);
                    return;
                }
                self.ack(acks, Ok(()));
            }
            Durability::Async => {
                self.ack(acks, Ok(()));
                if state.last_flush.elapsed() >= self.async_interval {
                    self.flush(state);
                }
            }
        }
    }

    /// Writes each snapshot's file (synced, renamed), then syncs the directory once, and
    /// returns the pointers to apply. Only then may a pointer reach sled: a durable pointer
    /// always names a durable file.
    fn write_snapshot_files(
        &self,
        snapshots: Vec<(u32, u64, Vec<u8>)>,
    ) -> Result<StoredFiles, String> {
        let mut stored = StoredFiles {
            pointers: sled::Batch::default(),
            files: Vec::with_capacity(snapshots.len()),
            bytes: 0,
        };
        if snapshots.is_empty() {
            return Ok(stored);
        }
        for (shard, seq, payload) in snapshots {
            let id = self
                .db
                .generate_id()
                .map_err(|e| format!("sled generate_id for a snapshot file: {e}"))?;
            let file = SnapshotFile { shard, seq, id };
            let len = self.files.write(&file, &payload)?;
            let pointer = encode_snapshot_pointer(&file, len);
            stored.bytes += len + pointer.len() as u64;
            stored.pointers.insert(&snapshot_key(shard)[..], pointer);
            stored.files.push(file);
        }
        self.files.sync_dir()?;
        Ok(stored)
    }

    /// Frames first, then snapshot pointers: a snapshot is never stored ahead of the records of this
    /// batch it may cover. The written frames join the index (and the published span).
    fn apply(
        &self,
        framed: Framed,
        pointers: sled::Batch,
        any_snapshot: bool,
        state: &mut State,
    ) -> sled::Result<()> {
        // An empty sled batch is not free: skipping them took sled from three writes and
        // three `sync_file_range` per durable flush to two (`perf stat -e
        // 'syscalls:sys_enter_*'` on the server during a launch run).
        for batch in framed.batches {
            self.frames.apply_batch(batch)?;
        }
        if any_snapshot {
            self.snapshots.apply_batch(pointers)?;
        }
        state.index.written(framed.frames.len() as u64);
        for (frame, shards) in framed.frames {
            for (shard, seq) in shards {
                state.index.note(shard, frame, seq);
            }
        }
        *lock(&self.shared.span) = state.index.span();
        Ok(())
    }

    /// A durable flush; then deletes the frames that the now-durable snapshots release.
    /// A failure marks the WAL failed.
    fn flush(&self, state: &mut State) {
        if self.shared.is_failed() {
            return;
        }
        let batches = self.shared.batches.load(Ordering::Acquire);
        let flushing = Instant::now();
        if let Err(e) = self.shared.durable_flush(&self.db) {
            self.shared.fail(e);
            return;
        }
        metrics::histogram!(WAL_FSYNC_SECONDS).record(flushing.elapsed().as_secs_f64());
        self.shared
            .flushed_batch_seq
            .store(batches, Ordering::Release);
        state.dirty = false;
        state.last_flush = Instant::now();
        let covered = std::mem::take(&mut state.unflushed_snapshots);
        for (shard, seq) in covered {
            state.index.release(shard, seq);
        }
        // The pointers written before this flush are durable: the files they replaced are
        // garbage. A delete that fails is left to the next open's sweep.
        for file in std::mem::take(&mut state.unflushed_files) {
            if let Some(old) = state.snapshot_files.insert(file.shard, file) {
                if old != file {
                    let _ = self.files.remove(&old);
                }
            }
        }
        if let Some(range) = state.index.deletable() {
            match delete_frames(&self.frames, range.clone()) {
                Ok(count) => state.index.deleted(range.end, count),
                Err(e) => {
                    self.shared.fail_in_sled(format!("sled delete: {e}"));
                    return;
                }
            }
            // The deletes reach the disk with the next flush; until then, or if a crash
            // comes first, recovery skips the records the snapshots cover.
            state.dirty = true;
        }
        *lock(&self.shared.span) = state.index.span();
    }

    fn shutdown(&self, state: &mut State) -> Result<(), WalError> {
        // Twice at most: the first flush makes the queue's last writes (and snapshots)
        // durable, the second the deletes the first one allowed.
        for _ in 0..2 {
            if state.dirty || !state.unflushed_snapshots.is_empty() {
                self.flush(state);
            }
        }
        if self.shared.is_failed() {
            return Err(self.shared.failed_error());
        }
        Ok(())
    }
}

impl Op {
    fn into_ack(self) -> Option<Ack> {
        match self {
            Op::Append { ack, .. } | Op::Snapshot { ack, .. } => Some(ack),
            Op::ForgetAnswers { .. } => None,
        }
    }
}
