//! Making sled's writes durable against power loss, not only against a process crash.
//!
//! What sled 0.34.7 does on its own (read in its source, `src/` of the crate):
//! - Everything lives in one data file, `<path>/db` (`config.rs:262-264`, opened at
//!   `config.rs:556-576`), plus `<path>/conf`, `<path>/snap.<lsn>` (its page-table
//!   snapshots) and `<path>/blobs/<lsn>` (values larger than segment_size / 4 - header,
//!   i.e. about 128 KiB with the default 512 KiB segments: `pagecache/logger.rs:168-173`).
//! - `flush()` (`tree.rs:798`, documented as "calls fsync" at `tree.rs:788-789`, but:
//!   -> `pagecache/mod.rs:761` -> `pagecache/logger.rs:36` -> `iobuf::flush`,
//!   `pagecache/iobuf.rs:1011`) waits until its IO buffers are written by `write_to_log`
//!   (`pagecache/iobuf.rs:569`), which on Linux without io_uring does `pwrite` +
//!   `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)` (`pagecache/iobuf.rs:727-757`) and
//!   falls back to `sync_all` only on ENOSYS. `sync_file_range` writes the pages but
//!   neither flushes the device's volatile cache nor commits the file's metadata (its size),
//!   so after `flush()` returns the data can still be lost on power failure (sled #1452).
//! - Its real `fsync`s: the periodic flusher thread, after each flush
//!   (`flusher.rs:137`), truncating the file (`pagecache/segment.rs:1103`), its page-table
//!   snapshot file (`pagecache/snapshot.rs:556`, then a rename at :561 without a directory
//!   fsync), and on drop (`pagecache/logger.rs:467`). With `flush_every_ms(None)` there is
//!   no flusher thread (`db.rs:86`), so none of these runs per write.
//! - Blob files are written with `write_all` and never synced (`pagecache/blob_io.rs:65-99`);
//!   `conf` is written without a sync (`config.rs:666-682`).
//!
//! So a durable flush here is: `db.flush()`, then `fdatasync` of `db` (one per group commit,
//! counted in `WalStats::fdatasyncs`), then `fdatasync` of every blob file not synced before
//! and of the directories whose listing changed since their last sync (new blobs, a renamed
//! page-table snapshot). Listing two small directories costs microseconds next to the
//! `fdatasync`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// sled's data file inside its directory (`config.rs:262-264`).
const SLED_DATA_FILE: &str = "db";
const SLED_CONF_FILE: &str = "conf";
const SLED_BLOBS_DIR: &str = "blobs";

/// Makes a sled database's flushes durable against power loss (see the module docs): the WAL's
/// and the event store's.
pub struct DiskSync {
    root: PathBuf,
    /// A second handle on sled's data file, only for `fdatasync` (Linux syncs the inode
    /// whatever handle asks; sled's own handle is not public).
    db_file: File,
    /// `<root>` as listed at its last directory fsync.
    root_listing: BTreeSet<OsString>,
    /// `<root>/blobs` as listed at its last sync: every file in it has been synced (blob files
    /// are written once and never changed) and so has the directory.
    blobs_listing: BTreeSet<OsString>,
}

fn listing(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn context<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> String + 'a {
    move |e| format!("{what} {}: {e}", path.display())
}

impl DiskSync {
    /// Opens the handle on sled's data file (sled has created it) and makes the files sled
    /// wrote at start durable: `conf`, the directory itself and its parent.
    pub fn open(root: &Path) -> Result<DiskSync, String> {
        let db_path = root.join(SLED_DATA_FILE);
        let db_file = File::open(&db_path).map_err(context("cannot open", &db_path))?;
        let conf = root.join(SLED_CONF_FILE);
        if conf.exists() {
            File::open(&conf)
                .and_then(|f| f.sync_all())
                .map_err(context("cannot sync", &conf))?;
        }
        if let Some(parent) = root.parent() {
            sync_dir(parent).map_err(context("cannot sync directory", parent))?;
        }
        Ok(DiskSync {
            root: root.to_path_buf(),
            db_file,
            root_listing: BTreeSet::new(),
            blobs_listing: BTreeSet::new(),
        })
    }

    /// `db.flush()` and everything it leaves in the page cache: see the module docs.
    /// Returns how many `fdatasync`s of the data file it did (always 1 on success).
    /// `Err((sled_failed, why))`: `sled_failed` when sled's own flush failed (not our sync).
    pub fn flush(&mut self, db: &sled::Db) -> Result<u64, (bool, String)> {
        db.flush()
            .map_err(|e| (true, format!("sled flush of {}: {e}", self.root.display())))?;
        self.sync_after_sled_flush().map_err(|why| (false, why))
    }

    fn sync_after_sled_flush(&mut self) -> Result<u64, String> {
        self.db_file
            .sync_data()
            .map_err(context("fdatasync", &self.root.join(SLED_DATA_FILE)))?;
        self.sync_blobs()?;
        let now = listing(&self.root).map_err(context("cannot list", &self.root))?;
        if now != self.root_listing {
            sync_dir(&self.root).map_err(context("cannot sync directory", &self.root))?;
            self.root_listing = now;
        }
        Ok(1)
    }

    fn sync_blobs(&mut self) -> Result<(), String> {
        let dir = self.root.join(SLED_BLOBS_DIR);
        let now = match listing(&dir) {
            Ok(now) => now,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(context("cannot list", &dir)(e)),
        };
        if now == self.blobs_listing {
            return Ok(());
        }
        for name in now.difference(&self.blobs_listing) {
            let path = dir.join(name);
            match File::open(&path).and_then(|f| f.sync_data()) {
                Ok(()) => {}
                // Collected by sled between the listing and the open: nothing to keep.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(context("fdatasync", &path)(e)),
            }
        }
        sync_dir(&dir).map_err(context("cannot sync directory", &dir))?;
        self.blobs_listing = now;
        Ok(())
    }
}

/// Bytes of the files under `dir` (apparent sizes), recursively.
pub(crate) fn size_of_dir(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => size_of_dir(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
