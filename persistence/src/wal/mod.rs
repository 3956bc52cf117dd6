//! The write-ahead log: per-shard numbered records and snapshots on sled 0.34.7, written by
//! one writer thread that commits in groups.
//!
//! Callers (shard actors) [`Wal::submit`] records and get an [`Ack`] back on the writer
//! thread once the batch holding them is durable (`Sync`) or written to sled (`Async`). The
//! writer blocks for the first queued op, takes whatever else is queued (up to
//! `batch_records_max` records), packs the records into frames (`frames.rs`: one sled insert
//! per frame of up to `FRAME_BYTES_MAX` bytes, holding records of many shards, instead of one
//! per record), applies them to sled, makes it durable with ONE `db.flush()` plus ONE
//! `fdatasync` (see `disk.rs` for why `flush()` alone is not enough), and then acks the batch
//! in submission order. Many shards' writes so share one disk flush and a few sled inserts.
//!
//! Layout (`format.rs`): tree `frames`, key = frame number (global, increasing), value = the
//! frame's records with a version byte and a CRC32; tree `snapshots`, one key per shard, whose
//! value points to the shard's snapshot file in `shard-snapshots/` (`snapshot_files.rs` says
//! why the payloads are not in sled, and how a crash between the file and its pointer is
//! cleaned up); tree `answers`, the stored idempotent answers that came with appends, by
//! shard and age (`answers.rs`).
//! Recovery (`recovery.rs`) reads the frames once at open and hands each shard its tail.
//!
//! Bounds: at most `queue_ops_max` ops wait in the queue (more are refused with
//! [`WalError::QueueFull`], never blocked); a batch holds at most `batch_records_max` records
//! (an op never splits across batches, so one larger op makes a batch of its own); a frame
//! holds at most `FRAME_BYTES_MAX` bytes (one larger record gets a frame of its own); a sled
//! batch holds at most `SLED_BATCH_FRAMES_MAX` frames of whole ops; sled's page cache is
//! `cache_capacity_bytes`; the log keeps only the frames from the oldest one that some shard
//! still needs (records after its latest durable snapshot) on (`index.rs`, [`LogSpan`]);
//! the writer's index of those frames holds one 16-byte entry per shard per live frame.

mod acker;
mod answers;
mod disk;
mod format;
mod frames;
mod index;
mod recovery;
mod snapshot_files;
mod writer;
pub use answers::{Answer, AnswerAt, ANSWER_ID_BYTES};
pub use writer::{WAL_BATCH_RECORDS, WAL_FSYNC_SECONDS};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::headroom::{DiskFault, DiskState, Headroom, DISK_RESERVE_BYTES_DEFAULT};

pub use disk::DiskSync;
use format::{decode_frame, decode_stored_snapshot, snapshot_key, StoredSnapshot};
pub use format::{FRAME_FORMAT_VERSION, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_POINTER_VERSION};
pub use index::LogSpan;
use recovery::{recover_log, Recovered, Tails};
use snapshot_files::SnapshotFiles;
pub use snapshot_files::SNAPSHOT_FILES_DIR;
use writer::{Op, State, Writer};

/// The sled database lives in this subdirectory of the data directory.
pub const WAL_SUBDIR: &str = "wal";
/// Records per group commit, at most (8192 records of ~100 bytes: ~1 MiB per sled batch).
pub const BATCH_RECORDS_MAX_DEFAULT: usize = 8192;
/// Ops (submits and snapshots) waiting for the writer, at most; more get `QueueFull` (503).
pub const QUEUE_OPS_MAX_DEFAULT: usize = 65_536;
/// Bytes of one stored frame (header and records), at most; a record larger than this gets a
/// frame of its own. Why 6 KiB: sled 0.34 splits a leaf above 16 entries (`node.rs`,
/// `should_split`) and stores any page item larger than segment_size / 4 (128 KiB with the
/// default 512 KiB segments, `pagecache/logger.rs`, `over_blob_threshold`) as a separate blob
/// file, which costs its own fdatasync and a directory sync (`disk.rs`). A leaf of frames,
/// at most 17 x 6 KiB plus keys (~105 KB), so stays an ordinary page. Larger frames would
/// save little: at ~150 B a record a 6 KiB frame already holds ~40 of them, so a typical
/// group commit (20-100 records) is one to three inserts.
pub const FRAME_BYTES_MAX: usize = 6 * 1024;
/// Frames per sled `apply_batch`, at most (whole ops only: a frame never spans two sled
/// batches and an op never spans two, so an op is atomic on disk; an op of more frames goes
/// alone). A group commit of more frames is written as several sled batches and flushed once,
/// so it still costs one fdatasync. Why a bound: sled 0.34's memory grows far out of
/// proportion with the size of one batch. Measured with per-record inserts of ~150 B (before
/// frames): batches of ~8,000 inserts (~1.2 MB) left 2.5 GiB resident, ~1,000 (~150 KB) left
/// 0.14 GiB, 256 (~40 KB) was the bound since. 32 frames are at most 32 inserts and ~192 KiB,
/// near the measured-good size in bytes and far below it in inserts. Also the bound on
/// deletes per sled batch (truncation, recovery).
pub const SLED_BATCH_FRAMES_MAX: usize = 32;
/// In `Async` mode, the longest an acknowledged write waits for its flush to disk.
pub const ASYNC_FLUSH_INTERVAL_MS_DEFAULT: u64 = 5;
/// sled's page cache (its default is 1 GiB, too much for docs/PERFORMANCE.md's memory target).
/// The log is written at its end and read only at recovery, so a small cache costs nothing:
/// with 16 MiB instead of 64, WAL appends measured no slower (`--bench wal`, 162 K records/s)
/// and the node with a million live holds 116 MiB smaller (`--bench holds`, 456 MiB). sled
/// uses more memory than this figure says, hence the margin.
pub const CACHE_CAPACITY_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;

const FRAMES_TREE: &str = "frames";
/// One sled key per record: the format before frames, refused at open.
const LEGACY_LOG_TREE: &str = "log";
const SNAPSHOTS_TREE: &str = "snapshots";
const WRITER_THREAD_NAME: &str = "holdfast-wal-writer";
const ACKER_THREAD_NAME: &str = "holdfast-wal-acks";
/// Drops a failed sled database's last handles (`Wal::release_failed_sled`).
const SLED_RELEASE_THREAD_NAME: &str = "holdfast-wal-release";
pub use acker::ACK_BATCHES_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Ack after the batch is on the disk (`db.flush()` + `fdatasync`).
    Sync,
    /// Ack after the batch is written to sled; flushed to disk within
    /// `async_flush_interval_ms` (a crash can lose that window; a clean close cannot).
    Async,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    pub durability: Durability,
    /// Records per batch (group commit), at most; values below 1 count as 1. A single op
    /// with more records is still written whole, in a batch of its own.
    pub batch_records_max: usize,
    /// Ops waiting in the queue, at most (values below 1 count as 1). Each op holds the
    /// caller's records, so memory waiting here is bounded by this times the caller's op size.
    pub queue_ops_max: usize,
    /// `Async` only: flushes are at least this far apart, and a written batch is flushed at
    /// most this long after it was acked (0: after every batch).
    pub async_flush_interval_ms: u64,
    /// sled's `cache_capacity`: its in-memory page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// A fault hook for tests of what happens when the disk fails: once armed, every durable
    /// flush fails as an I/O error would. Never armed unless a caller arms it.
    pub flush_fault: FlushFault,
    /// A hook for tests of back-pressure: while closed, the writer waits before its next
    /// group commit. Never closed unless a caller closes it.
    pub writer_gate: WriterGate,
    /// Bytes that must stay free on the log's filesystem for new writes to be taken
    /// ([`Wal::disk_state`], `headroom.rs`).
    pub disk_reserve_bytes: u64,
    /// A hook for tests of a full or read-only disk: what the headroom check answers instead
    /// of asking the filesystem, while set. Never set unless a caller sets it.
    pub disk_fault: DiskFault,
}

/// Holds the writer before its next group commit while closed (tests that need ops to wait
/// in the queue, now that a slow ack no longer holds the writer). Clones share one gate.
#[derive(Debug, Clone, Default)]
pub struct WriterGate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl WriterGate {
    pub fn close(&self) {
        *lock(&self.0 .0) = true;
    }

    pub fn open(&self) {
        *lock(&self.0 .0) = false;
        self.0 .1.notify_all();
    }

    /// Waits while the gate is closed.
    pub(crate) fn pass(&self) {
        let (closed, opened) = &*self.0;
        let mut closed = lock(closed);
        while *closed {
            closed = opened
                .wait(closed)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl PartialEq for WriterGate {
    fn eq(&self, other: &WriterGate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for WriterGate {}

/// Makes durable flushes fail on demand (tests of the failure path through the real
/// writer). Clones share one switch.
#[derive(Debug, Clone, Default)]
pub struct FlushFault(Arc<AtomicBool>);

impl FlushFault {
    /// From now on, every durable flush fails.
    pub fn arm(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Flushes succeed again (a disk that healed; a log that failed stays failed until it
    /// is opened again).
    pub fn disarm(&self) {
        self.0.store(false, Ordering::Release);
    }

    pub fn is_armed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl PartialEq for FlushFault {
    fn eq(&self, other: &FlushFault) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for FlushFault {}

impl WalConfig {
    pub fn new(durability: Durability) -> Self {
        WalConfig {
            durability,
            batch_records_max: BATCH_RECORDS_MAX_DEFAULT,
            queue_ops_max: QUEUE_OPS_MAX_DEFAULT,
            async_flush_interval_ms: ASYNC_FLUSH_INTERVAL_MS_DEFAULT,
            cache_capacity_bytes: CACHE_CAPACITY_BYTES_DEFAULT,
            flush_fault: FlushFault::default(),
            writer_gate: WriterGate::default(),
            disk_reserve_bytes: DISK_RESERVE_BYTES_DEFAULT,
            disk_fault: DiskFault::default(),
        }
    }
}

/// One log record of one shard. Sequence numbers of a shard start at 1 (or right after its
/// snapshot's) and go up by one; recovery treats any other step as a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub shard: u32,
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Called exactly once, on the log's ack thread and in submission order, for every op the WAL
/// accepted (never for one whose `submit` returned `Err`). It must be quick: the acks of later
/// batches wait for it. A panic in it is caught, so the other acks still run.
pub type Ack = Box<dyn FnOnce(Result<(), WalError>) + Send + 'static>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalError {
    /// `queue_ops_max` ops are waiting: answer 503 and let the client retry.
    QueueFull,
    /// A write or flush failed (or the WAL is closed): the node takes no more writes.
    Failed(String),
    /// Opening or reading the store failed.
    Io(String),
    /// Stored data that recovery cannot use (for example a damaged snapshot).
    Corrupt(String),
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::QueueFull => write!(f, "the write-ahead log's queue is full; retry later"),
            WalError::Failed(why) => write!(
                f,
                "the write-ahead log failed and takes no more writes: {why}"
            ),
            WalError::Io(why) => write!(f, "write-ahead log I/O error: {why}"),
            WalError::Corrupt(why) => write!(f, "write-ahead log corrupt: {why}"),
        }
    }
}

impl std::error::Error for WalError {}

/// What [`Wal::recover_shard`] finds for one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The latest snapshot: (seq it was taken at, payload).
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Records after the snapshot (or from seq 1), consecutive, in order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Records cut off as a torn or corrupt tail or after a gap, in order, with the reason.
    /// A frame that failed its check cannot say which records it held: a shard with no
    /// record after it gets one entry, at its next seq, saying it may have lost records
    /// from there on (so `dropped` is never empty for a shard whose log a bad frame cut).
    pub dropped: Vec<Dropped>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub seq: u64,
    pub reason: String,
}

/// Counters for tests and operators. All are totals since `open`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Batches the writer applied to sled (group commits).
    pub batches: u64,
    /// Log records written.
    pub records: u64,
    /// Frames written: sled inserts of log records (many records each).
    pub frames: u64,
    /// Bytes written: keys and values handed to sled (frames, snapshot pointers) and
    /// snapshot files.
    pub bytes: u64,
    /// `fdatasync`s of sled's data file: one per durable flush (including the ones at open,
    /// after a recovery that cut or rewrote frames, and at close).
    pub fdatasyncs: u64,
    /// Batches `1..=flushed_batch_seq` are durable: set to `batches` after each durable
    /// flush (in `Sync` mode also after a batch of barriers only, which has nothing to
    /// flush). In `Sync` mode an ack always sees `flushed_batch_seq == batches`.
    pub flushed_batch_seq: u64,
    /// Ops waiting in the queue right now.
    pub queued_ops: u64,
}

/// State shared by the handle, the writer thread and recovery.
pub(crate) struct Shared {
    failed: AtomicBool,
    /// Set when sled itself returned an error (not our own sync, not the fault hook): sled
    /// 0.34.7 then may not be dropped without hanging (see `Wal::release_failed_sled`).
    sled_failed: AtomicBool,
    /// Set when that error came from a write (an insert, a batch, a delete) rather than from
    /// `db.flush()`: sled then may not have recorded it as its own "global" error, and its
    /// drop's flush can wait forever (see `Wal::release_failed_sled`).
    sled_write_failed: AtomicBool,
    failure: Mutex<Option<String>>,
    batches: AtomicU64,
    records: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    fdatasyncs: AtomicU64,
    flushed_batch_seq: AtomicU64,
    /// Published by the writer after each batch and each truncation.
    span: Mutex<LogSpan>,
    disk: Mutex<DiskSync>,
    flush_fault: FlushFault,
    /// Whether the log's filesystem can take new writes (checked before they are decided).
    pub(crate) headroom: Headroom,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Turns the WAL failed; the first reason is kept. The disk is asked again at once, so
    /// operators see whether it is full or read-only.
    pub(crate) fn fail(&self, why: String) {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            *failure = Some(why);
        }
        self.failed.store(true, Ordering::Release);
        drop(failure);
        self.headroom.recheck();
    }

    /// Like `fail`, for an error a sled write (not its flush) returned.
    pub(crate) fn fail_in_sled(&self, why: String) {
        self.sled_write_failed.store(true, Ordering::Release);
        self.sled_failed.store(true, Ordering::Release);
        self.fail(why);
    }

    pub(crate) fn failed_error(&self) -> WalError {
        WalError::Failed(
            lock(&self.failure)
                .clone()
                .unwrap_or_else(|| "failed".to_string()),
        )
    }

    /// `db.flush()` + `fdatasync` of sled's files (disk.rs).
    pub(crate) fn durable_flush(&self, db: &sled::Db) -> Result<(), String> {
        if self.flush_fault.is_armed() {
            return Err("fdatasync failed: injected I/O error (flush fault hook)".to_string());
        }
        let synced = match lock(&self.disk).flush(db) {
            Ok(synced) => synced,
            Err((sled_failed, why)) => {
                if sled_failed {
                    self.sled_failed.store(true, Ordering::Release);
                }
                return Err(why);
            }
        };
        self.fdatasyncs.fetch_add(synced, Ordering::AcqRel);
        Ok(())
    }
}

/// The write-ahead log. `Send + Sync`: share it behind an `Arc`.
pub struct Wal {
    /// `None` only once stopped (see [`Wal::release_failed_sled`]).
    sled: Option<SledHandles>,
    /// What recovery found at open, until each shard takes its tail.
    tails: Mutex<Tails>,
    /// Where the snapshots' payloads are (the `snapshots` tree points into it).
    files: SnapshotFiles,
    root: PathBuf,
    durability: Durability,
    shared: Arc<Shared>,
    /// `None` only while closing.
    tx: Option<Sender<Op>>,
    writer: Option<JoinHandle<Result<(), WalError>>>,
    /// Runs the acks (`acker.rs`); ends after the writer.
    acker: Option<JoinHandle<()>>,
}

/// The log's handles on its sled database.
struct SledHandles {
    db: sled::Db,
    frames: sled::Tree,
    snapshots: sled::Tree,
    answers: sled::Tree,
}

/// How long a failed sled may take to answer a `flush` before its handles are left alive
/// rather than released ([`sled_settles`]).
const SLED_SETTLE_WAIT: Duration = Duration::from_secs(2);
const SLED_SETTLE_THREAD_NAME: &str = "holdfast-wal-settle";

/// Whether a failed sled's `flush` returns within [`SLED_SETTLE_WAIT`]: at once with its
/// global error when it recorded one (`make_stable_inner` checks it first), or with the
/// flush done. Either way its drop returns too. Asked on a thread of its own: when the flush
/// waits forever, that thread stays behind with its handle, as the handles then do anyway.
fn sled_settles(db: &sled::Db) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let db = db.clone();
    let asked = std::thread::Builder::new()
        .name(SLED_SETTLE_THREAD_NAME.to_string())
        .spawn(move || {
            let _ = db.flush();
            let _ = tx.send(());
        });
    asked.is_ok() && rx.recv_timeout(SLED_SETTLE_WAIT).is_ok()
}

/// How long `open` waits for sled's file lock. sled 0.34 releases the lock on its data file
/// only when its last internal reference goes, which can be a moment after the previous
/// `Db` (a closed `Wal`) was dropped in the same process (sled #1234, #1289); another process
/// holding the directory still gets an error, after this wait.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);
const SLED_LOCK_RETRY: Duration = Duration::from_millis(10);

/// Opens a sled database, waiting up to [`SLED_LOCK_WAIT`] for its file lock (the previous
/// `Db` in this process may be a moment from releasing it). The event store opens its own
/// database through it too.
pub fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    loop {
        match config.open() {
            // sled reports it as ErrorKind::Other with this text (config.rs:598-606).
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(SLED_LOCK_RETRY)
            }
            other => return other,
        }
    }
}

/// Removes `keys` from `tree` in sled batches of at most `per_batch`; returns how many.
pub(crate) fn remove_in_batches(
    tree: &sled::Tree,
    keys: impl Iterator<Item = sled::Result<sled::IVec>>,
    per_batch: usize,
) -> sled::Result<u64> {
    let mut removed = 0u64;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    for key in keys {
        batch.remove(key?);
        in_batch += 1;
        if in_batch == per_batch {
            tree.apply_batch(std::mem::take(&mut batch))?;
            removed += in_batch as u64;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        tree.apply_batch(batch)?;
        removed += in_batch as u64;
    }
    Ok(removed)
}

pub(crate) fn io(what: &str) -> impl FnOnce(sled::Error) -> WalError + '_ {
    move |e| WalError::Io(format!("{what}: {e}"))
}

impl Wal {
    /// Opens (creating if needed) the sled database in `dir/wal`, reads the log once (see
    /// `recover_shard`; what recovery cuts is durably gone before this returns), and starts
    /// the writer thread. A data directory in the format before frames is refused
    /// (`Corrupt`).
    pub fn open(dir: &Path, config: WalConfig) -> Result<Wal, WalError> {
        let root = dir.join(WAL_SUBDIR);
        std::fs::create_dir_all(&root)
            .map_err(|e| WalError::Io(format!("cannot create {}: {e}", root.display())))?;
        let sled_config = sled::Config::new()
            .path(&root)
            .cache_capacity(config.cache_capacity_bytes)
            // No background flusher: the writer thread decides when the disk is written
            // (every batch in Sync mode, every async_flush_interval_ms in Async mode) and
            // follows each flush with the fdatasync sled lacks. sled's default (500 ms)
            // would add uncounted flushes + fsyncs racing the group commit, and is longer
            // than the Async window anyway.
            .flush_every_ms(None);
        let db = open_sled(&sled_config)
            .map_err(io(&format!("cannot open sled in {}", root.display())))?;
        let frames = db
            .open_tree(FRAMES_TREE)
            .map_err(io("cannot open tree frames"))?;
        let snapshots = db
            .open_tree(SNAPSHOTS_TREE)
            .map_err(io("cannot open tree snapshots"))?;
        let answers = db
            .open_tree(answers::ANSWERS_TREE)
            .map_err(io("cannot open tree answers"))?;
        let files = SnapshotFiles::open(&root).map_err(WalError::Io)?;
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            sled_failed: AtomicBool::new(false),
            sled_write_failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            batches: AtomicU64::new(0),
            records: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            fdatasyncs: AtomicU64::new(0),
            flushed_batch_seq: AtomicU64::new(0),
            span: Mutex::new(LogSpan::default()),
            disk: Mutex::new(DiskSync::open(&root).map_err(WalError::Io)?),
            flush_fault: config.flush_fault.clone(),
            headroom: Headroom::new(&root, config.disk_reserve_bytes, config.disk_fault.clone()),
        });
        // The trees' creation and sled's new files become durable before any write.
        shared.durable_flush(&db).map_err(WalError::Io)?;
        let Recovered {
            tails,
            index,
            snapshot_files,
        } = recover_log(&db, &frames, &snapshots, &files, &shared)?;
        *lock(&shared.span) = index.span();
        // Files no pointer names: a crash came before their pointer was durable, or after a
        // newer one was (snapshot_files.rs).
        files
            .sweep(&snapshot_files.values().copied().collect())
            .map_err(WalError::Io)?;

        let (tx, rx) = crossbeam_channel::bounded(config.queue_ops_max.max(1));
        let (acks_tx, acker) = acker::start(ACKER_THREAD_NAME)?;
        let writer = Writer {
            rx,
            acks: acks_tx,
            db: db.clone(),
            frames: frames.clone(),
            snapshots: snapshots.clone(),
            answers: answers.clone(),
            files: files.clone(),
            shared: shared.clone(),
            durability: config.durability,
            batch_records_max: config.batch_records_max.max(1),
            async_interval: Duration::from_millis(config.async_flush_interval_ms),
            gate: config.writer_gate.clone(),
        };
        let writer = std::thread::Builder::new()
            .name(WRITER_THREAD_NAME.to_string())
            .spawn(move || writer.run(State::new(index, snapshot_files)))
            .map_err(|e| WalError::Io(format!("cannot start the writer thread: {e}")))?;
        Ok(Wal {
            sled: Some(SledHandles {
                db,
                frames,
                snapshots,
                answers,
            }),
            tails: Mutex::new(tails),
            files,
            root,
            durability: config.durability,
            shared,
            tx: Some(tx),
            writer: Some(writer),
            acker: Some(acker),
        })
    }

    /// Queues records (possibly none: a barrier) in submission order. `ack` is called exactly
    /// once, from the ack thread: with Sync after the batch holding them is durably on
    /// disk; with Async right after they are written to sled (durable within
    /// `async_flush_interval_ms`). `Err(QueueFull)` at once when `queue_ops_max` ops wait
    /// (the caller answers 503); `Err(Failed)` once a write or flush has failed (the node
    /// stops taking writes). When this returns `Err`, `ack` is dropped without being called.
    pub fn submit(&self, records: Vec<Record>, ack: Ack) -> Result<(), WalError> {
        self.submit_with_answers(records, Vec::new(), ack)
    }

    /// [`Wal::submit`], and stores `answers` in the same group commit, ahead of the records
    /// (`answers.rs`): once `ack` says the records are durable, so are the answers.
    pub fn submit_with_answers(
        &self,
        records: Vec<Record>,
        answers: Vec<Answer>,
        ack: Ack,
    ) -> Result<(), WalError> {
        self.send(Op::Append {
            records,
            answers,
            ack,
        })
    }

    /// A stored answer, read from sled on the caller's thread: `None` when none is stored
    /// there, or not yet (it is written with its group commit).
    pub fn answer(&self, at: &AnswerAt) -> Result<Option<Vec<u8>>, WalError> {
        Ok(self
            .handles()
            .answers
            .get(answers::answer_key(at))
            .map_err(io("cannot read answers"))?
            .map(|value| value.to_vec()))
    }

    /// Queues the removal of `shard`'s answers stored before `before_ms` (in order with the
    /// appends, so an answer stored before it in the queue and older than that goes too).
    pub fn forget_answers(&self, shard: u32, before_ms: u64) -> Result<(), WalError> {
        self.send(Op::ForgetAnswers { shard, before_ms })
    }

    /// Stores a shard's snapshot taken at `seq`, in order with the appends (so a snapshot
    /// never covers records not yet written), acked like submit. Once it is durable, the
    /// shard no longer holds the frames whose records of it are all at or below `seq`; the
    /// frames no shard holds any more are deleted (see [`Wal::log_span`]). A crash in between
    /// leaves stale records that recovery ignores, never a hole.
    pub fn submit_snapshot(
        &self,
        shard: u32,
        seq: u64,
        payload: Vec<u8>,
        ack: Ack,
    ) -> Result<(), WalError> {
        self.send(Op::Snapshot {
            shard,
            seq,
            payload,
            ack,
        })
    }

    fn send(&self, op: Op) -> Result<(), WalError> {
        if self.shared.is_failed() {
            return Err(self.shared.failed_error());
        }
        let tx = self.tx.as_ref().expect("the queue is open until close");
        match tx.try_send(op) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(WalError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(self.shared.failed_error()),
        }
    }

    /// For start-up: the shard's latest snapshot and its log records after the snapshot's
    /// seq, in order, as the one read of the log at `open` found them (`recovery.rs` has the
    /// rules). A frame that fails its check (checksum, version byte, cut short) ends the log
    /// for every shard, and a gap in a shard's seq numbers ends that shard's log: what is cut
    /// is reported in `dropped` and is already deleted, so it never comes back. Records at
    /// or below the snapshot's seq (a truncation a crash interrupted) are skipped silently.
    /// Call once per shard, before any submit for it: the tail is handed out once (a second
    /// call is an `Io` error), and the memory holding it is freed.
    pub fn recover_shard(&self, shard: u32) -> Result<Recovery, WalError> {
        let snapshot = match self
            .handles()
            .snapshots
            .get(snapshot_key(shard))
            .map_err(io("cannot read snapshots"))?
        {
            Some(value) => {
                let corrupt = |why| WalError::Corrupt(format!("shard {shard} snapshot: {why}"));
                match decode_stored_snapshot(&snapshot_key(shard), &value).map_err(corrupt)? {
                    StoredSnapshot::File { file, len } => {
                        Some((file.seq, self.files.read(&file, len).map_err(corrupt)?))
                    }
                    StoredSnapshot::Inline { seq, payload } => Some((seq, payload.to_vec())),
                }
            }
            None => None,
        };
        let snapshot_seq = snapshot.as_ref().map_or(0, |(seq, _)| *seq);
        let tail = lock(&self.tails).take(shard, snapshot_seq).ok_or_else(|| {
            WalError::Io(format!(
                "shard {shard} was already recovered: its tail is handed out once"
            ))
        })?;
        Ok(Recovery {
            snapshot,
            records: tail.records,
            dropped: tail.dropped,
        })
    }

    /// Where the log stands: the oldest frame still needed and which shard needs it. A quiet
    /// shard that rarely snapshots holds every later frame on disk, however busy the others
    /// are; the engine asks `oldest_holder` for a snapshot when the span grows too long.
    pub fn log_span(&self) -> LogSpan {
        *lock(&self.shared.span)
    }

    pub fn stats(&self) -> WalStats {
        let s = &self.shared;
        WalStats {
            batches: s.batches.load(Ordering::Acquire),
            records: s.records.load(Ordering::Acquire),
            frames: s.frames.load(Ordering::Acquire),
            bytes: s.bytes.load(Ordering::Acquire),
            fdatasyncs: s.fdatasyncs.load(Ordering::Acquire),
            flushed_batch_seq: s.flushed_batch_seq.load(Ordering::Acquire),
            queued_ops: self.tx.as_ref().map_or(0, |tx| tx.len() as u64),
        }
    }

    /// Whether the log's filesystem can take new writes: below `disk_reserve_bytes` of free
    /// space, or read-only, callers refuse new writes before deciding them (the log itself
    /// still writes what was queued). Asked again at most every `HEADROOM_RECHECK_MS`.
    pub fn disk_state(&self) -> DiskState {
        self.shared.headroom.state()
    }

    /// The durability this log was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// True once a write or flush failed: every later submit gets `Err(Failed)`.
    pub fn is_failed(&self) -> bool {
        self.shared.is_failed()
    }

    /// Why the WAL failed (the first failure: the I/O error and what it hit), if it has.
    pub fn failure(&self) -> Option<String> {
        self.shared.is_failed().then(|| {
            lock(&self.shared.failure)
                .clone()
                .unwrap_or_else(|| "failed".to_string())
        })
    }

    /// Bytes of the files in `dir/wal` (sled's data file, blobs, its own snapshots).
    pub fn size_on_disk_bytes(&self) -> u64 {
        disk::size_of_dir(&self.root)
    }

    /// Flushes everything queued (durably), stops the writer thread, returns when done.
    /// `Err(Failed)` if a write or flush failed at any time since `open`.
    pub fn close(mut self) -> Result<(), WalError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), WalError> {
        // Dropping the only sender lets the writer drain the queue, flush and return; its
        // return ends the ack thread once that has run every ack.
        drop(self.tx.take());
        let in_ack = self
            .acker
            .as_ref()
            .is_some_and(|acker| acker.thread().id() == std::thread::current().id());
        if in_ack {
            // The last handle dropped inside an ack: this thread cannot wait for the writer
            // (which may wait for this thread to take more acks) nor for itself. Both finish
            // the queue, flush and stop on their own.
            return Ok(());
        }
        let stopped = match self.writer.take() {
            Some(writer) => writer.join().unwrap_or_else(|_| {
                Err(WalError::Failed("the writer thread panicked".to_string()))
            }),
            None => Ok(()),
        };
        if let Some(acker) = self.acker.take() {
            let _ = acker.join();
        }
        if self.shared.sled_failed.load(Ordering::Acquire) {
            self.release_failed_sled();
        }
        stopped
    }

    fn handles(&self) -> &SledHandles {
        self.sled
            .as_ref()
            .expect("the sled handles live until the log stops")
    }

    /// After sled failed, dropping it may not return: dropping its last tree flushes, and
    /// that flush can wait forever for the buffer whose write failed (seen when the data
    /// directory vanished under a running server: SIGTERM never finished), holding sled's
    /// process-wide concurrency lock, which then stops every sled database of the process
    /// (another log opened later included). Nothing more can be made durable anyway, and every
    /// acknowledged record already was.
    ///
    /// - When the error came from `db.flush()` (a full disk: sled's `pwrite` of its buffer
    ///   failed), sled has recorded it as its global error, and its drop skips the flush and
    ///   returns at once (read in sled 0.34.7: `iobuf.rs` `make_stable_inner`, `logger.rs`
    ///   `Drop for Log`; seen with a full tmpfs). The last handles are dropped, on a detached
    ///   thread of their own ([`SLED_RELEASE_THREAD_NAME`]) so nothing waits for it anyway,
    ///   and sled's file lock is released: the directory can be opened again in this process
    ///   (the server's restart in place, `reopen.rs` there).
    /// - When it came from a write (`sled_write_failed`), that is not certain: sled records
    ///   the failure of a buffer's write as its global error whichever call made the write (a
    ///   full disk met by an insert, since the answers made group commits larger), but a write
    ///   can fail otherwise (a blob written into a vanished directory: the hang above). So
    ///   on a full disk (`StorageFull`) sled is asked first ([`sled_settles`]): a `flush` that
    ///   returns
    ///   within [`SLED_SETTLE_WAIT`], with its error or without, says its drop returns too,
    ///   and the handles are released as above. Otherwise they are left alive (one extra
    ///   reference each, never released) and the process may exit; sled's lock stays held, and
    ///   every later open of the directory in this process fails after [`SLED_LOCK_WAIT`]
    ///   saying so (a process restart opens it).
    fn release_failed_sled(&mut self) {
        // Called again when the log is dropped after `close`: released already.
        let Some(handles) = self.sled.as_ref() else {
            return;
        };
        // Asked only of a full disk: a vanished directory fails a blob's write without a
        // global error, and there the flush is what waits forever.
        let full_disk = lock(&self.shared.failure)
            .as_deref()
            .is_some_and(|why| why.contains("StorageFull"));
        let write_failed = self.shared.sled_write_failed.load(Ordering::Acquire);
        if write_failed && !(full_disk && sled_settles(&handles.db)) {
            let handles = self.handles();
            std::mem::forget(handles.db.clone());
            std::mem::forget(handles.frames.clone());
            std::mem::forget(handles.snapshots.clone());
            std::mem::forget(handles.answers.clone());
            return;
        }
        let Some(handles) = self.sled.take() else {
            return;
        };
        // When no thread can be started, the handles drop here (the process is out of
        // threads: hanging one more is the least of its problems).
        let _ = std::thread::Builder::new()
            .name(SLED_RELEASE_THREAD_NAME.to_string())
            .spawn(move || drop(handles));
    }

    /// The cursors kept in sled tree `name` of this log's database (created if needed); see
    /// [`CursorTree`](crate::CursorTree). Drop every one before [`Wal::close`].
    pub fn cursor_tree(&self, name: &str) -> Result<crate::CursorTree, WalError> {
        let tree = self
            .handles()
            .db
            .open_tree(name)
            .map_err(io(&format!("cannot open tree {name}")))?;
        Ok(crate::CursorTree::new(tree))
    }

    /// Test hook: cuts the stored value of the frame that holds `shard`'s record `seq` to its
    /// first 5 bytes (version byte and checksum), as a write torn by a crash leaves it.
    #[doc(hidden)]
    pub fn tear_frame_holding_for_test(&self, shard: u32, seq: u64) -> Result<(), WalError> {
        let SledHandles { db, frames, .. } = self.handles();
        for entry in frames.iter() {
            let (key, value) = entry.map_err(io("cannot read the log"))?;
            let Ok(records) = decode_frame(&key, &value) else {
                continue;
            };
            if records.iter().any(|r| r.shard == shard && r.seq == seq) {
                let torn = value[..format::HEADER_LEN].to_vec();
                frames
                    .insert(key, torn)
                    .map_err(io("cannot tear a frame"))?;
                db.flush().map_err(io("cannot flush"))?;
                return Ok(());
            }
        }
        Err(WalError::Io(format!(
            "no frame holds shard {shard} record {seq}"
        )))
    }
}

impl Drop for Wal {
    /// Like `close`, without the answer: queued ops are written and acked before the writer
    /// stops.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    /// A fresh directory for one unit test (removed by the test at its end).
    fn unit_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "holdfast-wal-unit-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ))
    }

    /// A log written before snapshot files holds each snapshot in the tree itself: it is
    /// still read, and the shard's next snapshot replaces it with a pointer to a file.
    #[test]
    fn a_snapshot_stored_in_the_tree_by_an_older_build_is_still_read() {
        let dir = unit_dir("inline-snapshot");
        {
            let db = open_sled(&sled::Config::new().path(dir.join(WAL_SUBDIR))).unwrap();
            let tree = db.open_tree(SNAPSHOTS_TREE).unwrap();
            let key = snapshot_key(4);
            tree.insert(key, format::encode_snapshot(&key, 7, b"older"))
                .unwrap();
            db.flush().unwrap();
        }
        let wal = Wal::open(&dir, WalConfig::new(Durability::Sync)).unwrap();
        let recovery = wal.recover_shard(4).unwrap();
        assert_eq!(recovery.snapshot, Some((7, b"older".to_vec())));
        let (tx, rx) = crossbeam_channel::unbounded();
        wal.submit_snapshot(
            4,
            7,
            b"newer".to_vec(),
            Box::new(move |r| tx.send(r).unwrap()),
        )
        .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), Ok(()));
        wal.close().unwrap();
        let wal = Wal::open(&dir, WalConfig::new(Durability::Sync)).unwrap();
        assert_eq!(
            wal.recover_shard(4).unwrap().snapshot,
            Some((7, b"newer".to_vec()))
        );
        wal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_handle_can_be_shared_between_threads() {
        assert_send_sync::<Wal>();
        assert_send_sync::<WalError>();
    }

    #[test]
    fn defaults_are_the_named_constants() {
        let config = WalConfig::new(Durability::Sync);
        assert_eq!(config.batch_records_max, BATCH_RECORDS_MAX_DEFAULT);
        assert_eq!(config.queue_ops_max, QUEUE_OPS_MAX_DEFAULT);
        assert_eq!(
            config.async_flush_interval_ms,
            ASYNC_FLUSH_INTERVAL_MS_DEFAULT
        );
        assert_eq!(config.cache_capacity_bytes, CACHE_CAPACITY_BYTES_DEFAULT);
    }

    #[test]
    fn a_failure_fails_every_pending_and_later_write() {
        let dir = unit_dir("failure");
        let wait = Duration::from_secs(30);
        let config = WalConfig::new(Durability::Sync);
        let fault = config.flush_fault.clone();
        let wal = Wal::open(&dir, config).unwrap();
        // The next durable flush fails: the op it covers, and every op queued behind it,
        // are answered with the failure, never Ok.
        fault.arm();
        let (tx, rx) = crossbeam_channel::unbounded();
        let record = |seq| Record {
            shard: 0,
            seq,
            payload: b"x".to_vec(),
        };
        for seq in 1..=3 {
            let tx = tx.clone();
            wal.submit(vec![record(seq)], Box::new(move |r| tx.send(r).unwrap()))
                .unwrap();
        }
        for _ in 1..=3 {
            let answer = rx.recv_timeout(wait).unwrap();
            assert!(matches!(answer, Err(WalError::Failed(_))), "{answer:?}");
        }
        assert!(wal.is_failed());
        let failed = wal.shared.failed_error();
        assert!(failed.to_string().contains("injected"), "{failed}");
        assert_eq!(
            wal.submit(vec![record(4)], Box::new(|_| panic!("never called"))),
            Err(failed.clone())
        );
        assert_eq!(
            wal.submit_snapshot(0, 1, Vec::new(), Box::new(|_| panic!("never called"))),
            Err(failed.clone())
        );
        assert_eq!(wal.close(), Err(failed));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The acks run on their own thread, in order: a slow ack delays the acks after it, never
    /// the writer's next group commit.
    #[test]
    fn a_slow_ack_does_not_hold_the_writer() {
        let dir = unit_dir("slow-ack");
        let wait = Duration::from_secs(30);
        let wal = Wal::open(&dir, WalConfig::new(Durability::Sync)).unwrap();
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
        let (tx, rx) = crossbeam_channel::unbounded();
        let first_tx = tx.clone();
        let record = |seq| Record {
            shard: 0,
            seq,
            payload: b"y".to_vec(),
        };
        wal.submit(
            vec![record(1)],
            Box::new(move |r| {
                let _ = release_rx.recv_timeout(wait);
                first_tx.send((1, r)).unwrap();
            }),
        )
        .unwrap();
        let second_tx = tx.clone();
        wal.submit(
            vec![record(2)],
            Box::new(move |r| second_tx.send((2, r)).unwrap()),
        )
        .unwrap();
        // Both records are committed while the first ack still waits.
        let deadline = std::time::Instant::now() + wait;
        while wal.stats().records < 2 || wal.stats().flushed_batch_seq < wal.stats().batches {
            assert!(std::time::Instant::now() < deadline, "{:?}", wal.stats());
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(rx.try_recv().is_err(), "no ack overtook the slow one");
        release_tx.send(()).unwrap();
        assert_eq!(rx.recv_timeout(wait).unwrap(), (1, Ok(())));
        assert_eq!(rx.recv_timeout(wait).unwrap(), (2, Ok(())));
        wal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_panicking_ack_does_not_stop_the_writer() {
        let dir = unit_dir("panic");
        let wal = Wal::open(&dir, WalConfig::new(Durability::Sync)).unwrap();
        wal.submit(
            Vec::new(),
            Box::new(|_| panic!("an ack that panics (expected)")),
        )
        .unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        wal.submit(Vec::new(), Box::new(move |result| tx.send(result).unwrap()))
            .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), Ok(()));
        assert!(!wal.is_failed());
        wal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_last_handle_dropped_inside_an_ack_does_not_deadlock() {
        let dir = unit_dir("self-drop");
        let wal = Arc::new(Wal::open(&dir, WalConfig::new(Durability::Sync)).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let holder = Arc::new(Mutex::new(Some(wal.clone())));
        let in_ack = holder.clone();
        wal.submit(
            Vec::new(),
            Box::new(move |_| {
                // Drops what may be the last handle, on the ack thread.
                let taken = lock(&in_ack).take();
                drop(taken);
                tx.send(()).unwrap();
            }),
        )
        .unwrap();
        drop(wal);
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(lock(&holder).is_none());
        // The writer finishes and releases sled's lock: the directory opens again.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let reopened = loop {
            match Wal::open(&dir, WalConfig::new(Durability::Sync)) {
                Ok(wal) => break wal,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "{e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        reopened.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_say_what_happened() {
        assert!(WalError::QueueFull.to_string().contains("full"));
        assert!(WalError::Failed("disk gone".into())
            .to_string()
            .contains("disk gone"));
    }
}
