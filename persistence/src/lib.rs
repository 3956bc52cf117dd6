//! holdfast-persistence: the data directory and the write-ahead log.
//!
//! - [`DataDir`]: the directory's manifest (format version, shard count fixed at creation)
//!   and [`write_atomically`] for small files.
//! - [`Wal`]: the write-ahead log and per-shard snapshots on sled 0.34, with group commit
//!   (one writer thread, one `db.flush()` + `fdatasync` per batch in `Sync` mode) and
//!   recovery that cuts a torn or corrupt tail (docs/ARCHITECTURE.md, "Durability").
//! - [`Headroom`]: whether the data directory's filesystem can take more writes (free space
//!   above a reserve, not read-only), asked before a write is decided.
//! - [`CursorTree`]: small durable `u64` cursors in their own tree of the log's database
//!   (the webhooks' delivery cursors).
//!
//! The crate knows bytes and sequence numbers only: what a record means is the engine's
//! business, and nothing here knows HTTP.

#![forbid(unsafe_code)]

mod cursors;
mod datadir;
mod headroom;
mod wal;

pub use cursors::CursorTree;
pub use datadir::{write_atomically, DataDir, DataDirError, Manifest, FORMAT_VERSION};
pub use headroom::{
    DiskFault, DiskState, Headroom, DISK_RESERVE_BYTES_DEFAULT, HEADROOM_RECHECK_MS,
};
pub use wal::{
    open_sled, Ack, Answer, AnswerAt, DiskSync, Dropped, Durability, FlushFault, LogSpan, Record,
    Recovery, Wal, WalConfig, WalError, WalStats, WriterGate, ACK_BATCHES_MAX, ANSWER_ID_BYTES,
    ASYNC_FLUSH_INTERVAL_MS_DEFAULT, BATCH_RECORDS_MAX_DEFAULT, CACHE_CAPACITY_BYTES_DEFAULT,
    FRAME_BYTES_MAX, FRAME_FORMAT_VERSION, QUEUE_OPS_MAX_DEFAULT, SLED_BATCH_FRAMES_MAX,
    SNAPSHOT_FILES_DIR, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_POINTER_VERSION, WAL_BATCH_RECORDS,
    WAL_FSYNC_SECONDS, WAL_SUBDIR,
};
