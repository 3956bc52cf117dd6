//! The writer thread: drains the queue into batches, one durable flush per batch (group
//! commit), then the batch's acks in submission order.
//!
//! Why two `sled::Batch`es (one per tree) and no transaction: a batch is atomic within its
//! tree, and nothing needs the snapshot and the truncation of the log to be atomic together.
//! The snapshot is applied after the batch's log records (so it never covers records not yet
//! written), and the log records it covers are deleted only after a durable flush has put the
//! snapshot on disk. A crash in between leaves records at or below the snapshot's seq, which
//! recovery skips and deletes; it can never leave a truncated log without its snapshot. A
//! sled transaction would need every key to delete named up front (a transactional tree
//! cannot scan a range) and copies every write into its own buffers, for no gain here.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::format::{encode_record, encode_snapshot, log_key, snapshot_key};
use super::{Ack, Durability, Record, Shared, WalError, SLED_BATCH_RECORDS_MAX};

pub(crate) enum Op {
    Append {
        records: Vec<Record>,
        ack: Ack,
    },
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
            Op::Append { records, .. } => records.len().max(1),
            Op::Snapshot { .. } => 1,
        }
    }
}

pub(crate) struct Writer {
    pub(crate) rx: Receiver<Op>,
    pub(crate) db: sled::Db,
    pub(crate) log: sled::Tree,
    pub(crate) snapshots: sled::Tree,
    pub(crate) shared: Arc<Shared>,
    pub(crate) durability: Durability,
    pub(crate) batch_records_max: usize,
    pub(crate) async_interval: Duration,
}

/// The writer's own bookkeeping between batches.
struct State {
    /// Snapshots written to sled but not yet flushed: shard -> highest seq. Their log
    /// records are deleted after the next durable flush.
    unflushed_snapshots: BTreeMap<u32, u64>,
    /// Something was written to sled since the last durable flush.
    dirty: bool,
    last_flush: Instant,
}

fn call(ack: Ack, result: Result<(), WalError>) {
    // A panicking ack must not take the writer (and every later ack) down with it; the
    // panic hook has already reported it.
    let _ = catch_unwind(AssertUnwindSafe(move || ack(result)));
}

impl Writer {
    pub(crate) fn run(self) -> Result<(), WalError> {
        let mut state = State {
            unflushed_snapshots: BTreeMap::new(),
            dirty: false,
            last_flush: Instant::now(),
        };
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
        for ack in acks {
            call(ack, Err(self.shared.failed_error()));
        }
    }

    fn commit(&self, batch: Vec<Op>, state: &mut State) {
        let mut acks = Vec::with_capacity(batch.len());
        if self.shared.is_failed() {
            self.fail_all(batch.into_iter().map(Op::into_ack).collect());
            return;
        }
        // Whole ops per sled batch, at most SLED_BATCH_RECORDS_MAX records each (mod.rs).
        let mut log_batches = vec![sled::Batch::default()];
        let mut in_last = 0usize;
        let mut snapshot_batch = sled::Batch::default();
        let mut snapshots = Vec::new();
        let (mut records, mut bytes) = (0u64, 0u64);
        for op in batch {
            match op {
                Op::Append { records: list, ack } => {
                    if in_last > 0 && in_last + list.len() > SLED_BATCH_RECORDS_MAX {
                        log_batches.push(sled::Batch::default());
                        in_last = 0;
                    }
                    let log_batch = log_batches.last_mut().expect("one batch at least");
                    in_last += list.len();
                    for record in list {
                        let key = log_key(record.shard, record.seq);
                        let value = encode_record(&key, &record.payload);
                        bytes += (key.len() + value.len()) as u64;
                        records += 1;
                        log_batch.insert(&key[..], value);
                    }
                    acks.push(ack);
                }
                Op::Snapshot {
                    shard,
                    seq,
                    payload,
                    ack,
                } => {
                    let key = snapshot_key(shard);
                    let value = encode_snapshot(&key, seq, &payload);
                    bytes += (key.len() + value.len()) as u64;
                    snapshot_batch.insert(&key[..], value);
                    snapshots.push((shard, seq));
                    acks.push(ack);
                }
            }
        }
        if records == 0 && snapshots.is_empty() {
            // Only barriers: what they wait for was made durable (Sync) or written (Async)
            // before their predecessors were acked, so there is nothing to write or flush.
            // Refusals travel as barriers; they must not each cost an fdatasync.
            let batches = self.shared.batches.fetch_add(1, Ordering::AcqRel) + 1;
            if self.durability == Durability::Sync {
                self.shared
                    .flushed_batch_seq
                    .store(batches, Ordering::Release);
            }
            for ack in acks {
                call(ack, Ok(()));
            }
            return;
        }
        // Log first, then snapshots: a snapshot is never stored ahead of the records of
        // this batch it may cover.
        // An empty sled batch is not free: skipping them took sled from three writes and
        // three `sync_file_range` per durable flush to two (`perf stat -e
        // 'syscalls:sys_enter_*'` on the server during a launch run).
        let applied = (|| -> sled::Result<()> {
            if records > 0 {
                for log_batch in log_batches {
                    self.log.apply_batch(log_batch)?;
                }
            }
            if !snapshots.is_empty() {
                self.snapshots.apply_batch(snapshot_batch)?;
            }
            Ok(())
        })();
        if let Err(e) = applied {
            self.shared.fail_in_sled(format!("sled write: {e}"));
            self.fail_all(acks);
            return;
        }
        let s = &self.shared;
        s.batches.fetch_add(1, Ordering::AcqRel);
        s.records.fetch_add(records, Ordering::AcqRel);
        s.bytes.fetch_add(bytes, Ordering::AcqRel);
        state.dirty = true;
        for (shard, seq) in snapshots {
            let highest = state.unflushed_snapshots.entry(shard).or_insert(seq);
            *highest = (*highest).max(seq);
        }
        match self.durability {
            Durability::Sync => {
                self.flush(state);
                if self.shared.is_failed() {
                    self.fail_all(acks);
                    return;
                }
                for ack in acks {
                    call(ack, Ok(()));
                }
            }
            Durability::Async => {
                for ack in acks {
                    call(ack, Ok(()));
                }
                if state.last_flush.elapsed() >= self.async_interval {
                    self.flush(state);
                }
            }
        }
    }

    /// A durable flush; then deletes the log records that the now-durable snapshots cover.
    /// A failure marks the WAL failed.
    fn flush(&self, state: &mut State) {
        if self.shared.is_failed() {
            return;
        }
        let batches = self.shared.batches.load(Ordering::Acquire);
        if let Err(e) = self.shared.durable_flush(&self.db) {
            self.shared.fail(e);
            return;
        }
        self.shared
            .flushed_batch_seq
            .store(batches, Ordering::Release);
        state.dirty = false;
        state.last_flush = Instant::now();
        let covered = std::mem::take(&mut state.unflushed_snapshots);
        for (shard, seq) in covered {
            if let Err(e) = self.truncate(shard, seq) {
                self.shared.fail_in_sled(format!("sled delete: {e}"));
                return;
            }
            // The deletes reach the disk with the next flush; until then, or if a crash
            // comes first, recovery skips the records the snapshot covers.
            state.dirty = true;
        }
    }

    /// Deletes `shard`'s log records with seq <= `seq`.
    fn truncate(&self, shard: u32, seq: u64) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for key in self
            .log
            .range(log_key(shard, 0)..=log_key(shard, seq))
            .keys()
        {
            batch.remove(key?);
            any = true;
        }
        if any {
            self.log.apply_batch(batch)?;
        }
        Ok(())
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
    fn into_ack(self) -> Ack {
        match self {
            Op::Append { ack, .. } | Op::Snapshot { ack, .. } => ack,
        }
    }
}
