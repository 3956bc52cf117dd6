//! The engine's journal, backed by the persistence crate's write-ahead log (sled, group
//! commit). The engine hands numbered records as bytes; the log stores them; this adapter is
//! the only place that knows both.

use holdfast_engine::clock::UnixMs;
use holdfast_engine::idempotency::{ShelfRef, ShelvedAnswer};
use holdfast_engine::journal::{Done, Journal, Recovered};
use holdfast_engine::{JournalError, WriteRefusal};
use holdfast_persistence::{
    Answer, AnswerAt, DiskState, Durability, Record, Wal, WalConfig, WalError,
};

/// Above this many queued operations the journal reports busy, and shards refuse new writes
/// with 503 before applying them. The margin below the queue's bound is larger than the
/// number of shards, each of which submits at most once per message it handles, so an append
/// after a "not busy" answer always fits.
pub const BUSY_MARGIN_OPS: u64 = 8192;
/// The log may span this many frames (group commits, at most `FRAME_BYTES_MAX` each) before
/// the shard holding back its oldest frame is asked for a snapshot: about a minute of launch
/// traffic (~800 group commits a second, docs/PERFORMANCE.md), so a quiet shard snapshots
/// about once a minute under load and never while the node is idle.
pub const LOG_SPAN_FRAMES_MAX: u64 = 50_000;

pub struct WalJournal {
    wal: Wal,
    busy_above_ops: u64,
    span_frames_max: u64,
}

impl WalJournal {
    pub fn new(wal: Wal, config: &WalConfig) -> WalJournal {
        let busy_above_ops = (config.queue_ops_max as u64)
            .saturating_sub(BUSY_MARGIN_OPS)
            .max(1);
        WalJournal {
            wal,
            busy_above_ops,
            span_frames_max: LOG_SPAN_FRAMES_MAX,
        }
    }

    /// The span of the log above which its oldest holder snapshots (default
    /// [`LOG_SPAN_FRAMES_MAX`]; tests set it low).
    pub fn with_span_frames_max(mut self, frames: u64) -> WalJournal {
        self.span_frames_max = frames;
        self
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    pub fn into_wal(self) -> Wal {
        self.wal
    }
}

fn refusal(e: WalError) -> JournalError {
    match e {
        WalError::QueueFull => JournalError::Full,
        other => JournalError::Failed(other.to_string()),
    }
}

fn completion(done: Done) -> holdfast_persistence::Ack {
    Box::new(move |r| done(r.map_err(refusal)))
}

/// The log's address of a shelved answer (times before 1970 count as 0; the clock gives none).
fn answer_at(shard: u32, at: &ShelfRef) -> AnswerAt {
    AnswerAt {
        shard,
        stored_at_ms: unsigned_ms(at.stored_at_ms),
        id: at.id.0,
    }
}

fn unsigned_ms(ms: UnixMs) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

fn records_of(shard: u32, records: Vec<(u64, Vec<u8>)>) -> Vec<Record> {
    records
        .into_iter()
        .map(|(seq, payload)| Record {
            shard,
            seq,
            payload,
        })
        .collect()
}

impl Journal for WalJournal {
    fn append(
        &self,
        shard: u32,
        records: Vec<(u64, Vec<u8>)>,
        done: Done,
    ) -> Result<(), JournalError> {
        self.wal
            .submit(records_of(shard, records), completion(done))
            .map_err(refusal)
    }

    /// The log keeps the answers in its `answers` tree, written with the group commit of
    /// their records.
    fn shelves_answers(&self) -> bool {
        true
    }

    fn append_shelving(
        &self,
        shard: u32,
        records: Vec<(u64, Vec<u8>)>,
        answers: Vec<ShelvedAnswer>,
        done: Done,
    ) -> Result<(), JournalError> {
        let answers = answers
            .into_iter()
            .map(|answer| Answer {
                at: answer_at(shard, &answer.at),
                value: answer.value,
            })
            .collect();
        self.wal
            .submit_with_answers(records_of(shard, records), answers, completion(done))
            .map_err(refusal)
    }

    fn shelved(&self, shard: u32, at: &ShelfRef) -> Result<Option<Vec<u8>>, JournalError> {
        self.wal
            .answer(&answer_at(shard, at))
            .map_err(|e| JournalError::Read(e.to_string()))
    }

    /// Queued behind the appends; a full queue or a failed log skips it (the next purge
    /// forgets these answers too).
    fn forget_shelved(&self, shard: u32, before_ms: UnixMs) {
        let _ = self.wal.forget_answers(shard, unsigned_ms(before_ms));
    }

    fn snapshot(
        &self,
        shard: u32,
        seq: u64,
        bytes: Vec<u8>,
        done: Done,
    ) -> Result<(), JournalError> {
        self.wal
            .submit_snapshot(shard, seq, bytes, completion(done))
            .map_err(refusal)
    }

    fn recover(&self, shard: u32) -> Result<Recovered, JournalError> {
        let r = self
            .wal
            .recover_shard(shard)
            .map_err(|e| JournalError::Read(e.to_string()))?;
        Ok(Recovered {
            snapshot: r.snapshot,
            records: r.records,
            dropped: r.dropped.into_iter().map(|d| (d.seq, d.reason)).collect(),
        })
    }

    fn failed(&self) -> Option<JournalError> {
        self.wal.failure().map(JournalError::Failed)
    }

    /// A failed log first (it needs a restart), then the disk as last checked.
    fn write_refusal(&self) -> Option<WriteRefusal> {
        if let Some(why) = self.wal.failure() {
            return Some(WriteRefusal::LogFailed(why));
        }
        match self.wal.disk_state() {
            DiskState::Writable { .. } => None,
            DiskState::Full {
                available_bytes,
                reserve_bytes,
            } => Some(WriteRefusal::DiskFull {
                available_bytes,
                reserve_bytes,
            }),
            DiskState::ReadOnly => Some(WriteRefusal::ReadOnly),
        }
    }

    /// `Sync` acknowledges after the durable flush; `Async` before it, so a failed flush may
    /// take acknowledged writes with it.
    fn acknowledged_are_durable(&self) -> bool {
        self.wal.durability() == Durability::Sync
    }

    fn busy(&self) -> bool {
        self.wal.stats().queued_ops >= self.busy_above_ops
    }

    fn holds_back(&self, shard: u32) -> bool {
        let span = self.wal.log_span();
        span.oldest_holder == Some(shard)
            && span.next_frame - span.first_live_frame > self.span_frames_max
    }
}
