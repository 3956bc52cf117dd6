//! Disk headroom: whether the filesystem of the data directory can take more writes, asked
//! before a write changes anything.
//!
//! A write the log cannot store is worse than a refused one: by the time sled's `pwrite` or
//! the `fdatasync` after it fails, the shard has applied the change in memory, and after a
//! failed `fdatasync` nothing tells which of the pages were kept (Linux marks them clean and
//! reports the error once: the "fsyncgate" lesson PostgreSQL learned). So the log asks the
//! filesystem first (`statvfs`: space available to unprivileged users, and the read-only
//! mount flag) and the shards refuse new writes, before deciding them, while the space left is
//! below a reserve or the filesystem is read-only. Reads go on; once space returns (or the
//! filesystem is writable again) the next check lets writes through, with no restart.
//!
//! The check is lazy and lock-free: whoever asks after [`HEADROOM_RECHECK_MS`] probes again
//! (one `statvfs`, about a microsecond), everyone else reads the last answer. Nothing runs
//! while nobody asks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Bytes that must stay free on the data directory's filesystem for new writes to be taken
/// (`--disk-reserve-mib`). What may still be written once writes are refused: the ops already
/// queued for the log (at most `QUEUE_OPS_MAX_DEFAULT`, in practice a few group commits of
/// at most ~1 MiB each), sled's next 512 KiB segment, the event store's catch-up of those
/// changes, and the shards' snapshots at shutdown (each the size of its shard's state: a
/// million live holds over 64 shards are about 2 MiB a shard). 64 MiB covers all of these
/// with room to spare; raise it for shards far larger than that.
pub const DISK_RESERVE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// A cached answer is used for at most this long; the first caller after it probes again.
/// Writes resume this long at most after space returns; 100 ms of writes at launch rates
/// (~20 K changes/s of ~150 B) are ~300 KiB, far inside the reserve.
pub const HEADROOM_RECHECK_MS: u64 = 100;

/// What the last check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    /// Writes are taken. `available_bytes` is `None` when the filesystem could not be asked
    /// (the log's own write errors then speak for it).
    Writable { available_bytes: Option<u64> },
    /// Less than `reserve_bytes` is available: new writes are refused.
    Full {
        available_bytes: u64,
        reserve_bytes: u64,
    },
    /// The filesystem is mounted read-only (or was remounted so after an error).
    ReadOnly,
}

impl DiskState {
    pub fn is_writable(&self) -> bool {
        matches!(self, DiskState::Writable { .. })
    }
}

/// Makes the headroom check answer what a test says instead of asking the filesystem (tests
/// of a full or read-only disk where no small filesystem can be mounted). Clones share one
/// switch; never set unless a caller sets it.
#[derive(Debug, Clone, Default)]
pub struct DiskFault(Arc<Mutex<Option<DiskState>>>);

impl DiskFault {
    /// From now on the disk looks full (nothing available).
    pub fn fill(&self) {
        self.set(Some(DiskState::Full {
            available_bytes: 0,
            reserve_bytes: 0,
        }));
    }

    /// From now on the filesystem looks read-only.
    pub fn read_only(&self) {
        self.set(Some(DiskState::ReadOnly));
    }

    /// The filesystem is asked again.
    pub fn clear(&self) {
        self.set(None);
    }

    fn set(&self, state: Option<DiskState>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    fn get(&self) -> Option<DiskState> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PartialEq for DiskFault {
    fn eq(&self, other: &DiskFault) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for DiskFault {}

const WRITABLE: u8 = 0;
const FULL: u8 = 1;
const READ_ONLY: u8 = 2;
/// `available` when the filesystem could not be asked.
const UNKNOWN_BYTES: u64 = u64::MAX;

/// The headroom of one directory's filesystem, checked at most every
/// [`HEADROOM_RECHECK_MS`].
#[derive(Debug)]
pub struct Headroom {
    dir: PathBuf,
    reserve_bytes: u64,
    fault: DiskFault,
    started: Instant,
    /// Milliseconds after `started` of the last probe, plus one (0: never probed).
    checked_at_ms: AtomicU64,
    kind: AtomicU8,
    available: AtomicU64,
}

impl Headroom {
    pub fn new(dir: &Path, reserve_bytes: u64, fault: DiskFault) -> Headroom {
        let headroom = Headroom {
            dir: dir.to_path_buf(),
            reserve_bytes,
            fault,
            started: Instant::now(),
            checked_at_ms: AtomicU64::new(0),
            kind: AtomicU8::new(WRITABLE),
            available: AtomicU64::new(UNKNOWN_BYTES),
        };
        headroom.recheck();
        headroom
    }

    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_bytes
    }

    /// The state, probed again when the last probe is older than [`HEADROOM_RECHECK_MS`].
    pub fn state(&self) -> DiskState {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.checked_at_ms.load(Ordering::Acquire);
        // One caller wins the exchange and probes; the others read the last answer.
        if now.saturating_sub(last) >= HEADROOM_RECHECK_MS
            && self
                .checked_at_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return self.store(self.probe());
        }
        self.load()
    }

    /// Probes now (after a failed write, and at open).
    pub fn recheck(&self) -> DiskState {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.checked_at_ms.store(now, Ordering::Release);
        self.store(self.probe())
    }

    fn probe(&self) -> DiskState {
        if let Some(state) = self.fault.get() {
            return state;
        }
        match rustix::fs::statvfs(&self.dir) {
            Ok(stat) => classify(&stat, self.reserve_bytes),
            // A filesystem that cannot be asked is not refused on a guess: the log's own
            // write errors speak for it, and operators see `available_bytes: null`.
            Err(_) => DiskState::Writable {
                available_bytes: None,
            },
        }
    }

    fn store(&self, state: DiskState) -> DiskState {
        let (kind, available) = match state {
            DiskState::Writable { available_bytes } => {
                (WRITABLE, available_bytes.unwrap_or(UNKNOWN_BYTES))
            }
            DiskState::Full {
                available_bytes, ..
            } => (FULL, available_bytes),
            DiskState::ReadOnly => (READ_ONLY, 0),
        };
        self.available.store(available, Ordering::Release);
        self.kind.store(kind, Ordering::Release);
        state
    }

    fn load(&self) -> DiskState {
        let available = self.available.load(Ordering::Acquire);
        match self.kind.load(Ordering::Acquire) {
            FULL => DiskState::Full {
                available_bytes: available,
                reserve_bytes: self.reserve_bytes,
            },
            READ_ONLY => DiskState::ReadOnly,
            _ => DiskState::Writable {
                available_bytes: (available != UNKNOWN_BYTES).then_some(available),
            },
        }
    }
}

/// Read-only first (nothing can be written however much is free), then the reserve.
fn classify(stat: &rustix::fs::StatVfs, reserve_bytes: u64) -> DiskState {
    if stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return DiskState::ReadOnly;
    }
    // `f_bavail`: blocks available to unprivileged users (ext4 keeps 5% for root); counting
    // only those keeps the reserve whoever runs the server.
    let available_bytes = stat.f_bavail.saturating_mul(stat.f_frsize);
    if available_bytes < reserve_bytes {
        DiskState::Full {
            available_bytes,
            reserve_bytes,
        }
    } else {
        DiskState::Writable {
            available_bytes: Some(available_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_directory_is_writable_and_reports_its_space() {
        let dir = std::env::temp_dir();
        let headroom = Headroom::new(&dir, 0, DiskFault::default());
        match headroom.state() {
            DiskState::Writable {
                available_bytes: Some(_),
            } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reserve_above_the_free_space_refuses() {
        let dir = std::env::temp_dir();
        let headroom = Headroom::new(&dir, u64::MAX, DiskFault::default());
        match headroom.state() {
            DiskState::Full { reserve_bytes, .. } => assert_eq!(reserve_bytes, u64::MAX),
            other => panic!("{other:?}"),
        }
    }

    fn stat(available_blocks: u64, flags: rustix::fs::StatVfsMountFlags) -> rustix::fs::StatVfs {
        rustix::fs::StatVfs {
            f_bsize: 4096,
            f_frsize: 4096,
            f_blocks: 1 << 20,
            f_bfree: available_blocks,
            f_bavail: available_blocks,
            f_files: 1 << 16,
            f_ffree: 1 << 15,
            f_favail: 1 << 15,
            f_fsid: 0,
            f_flag: flags,
            f_namemax: 255,
        }
    }

    #[test]
    fn read_only_wins_over_free_space_and_the_reserve_counts_bytes() {
        use rustix::fs::StatVfsMountFlags as Flags;
        let reserve = 10 * 4096;
        assert_eq!(
            classify(&stat(1 << 20, Flags::RDONLY | Flags::NOSUID), reserve),
            DiskState::ReadOnly
        );
        assert_eq!(
            classify(&stat(9, Flags::empty()), reserve),
            DiskState::Full {
                available_bytes: 9 * 4096,
                reserve_bytes: reserve
            }
        );
        assert_eq!(
            classify(&stat(10, Flags::NOSUID), reserve),
            DiskState::Writable {
                available_bytes: Some(reserve)
            }
        );
    }

    #[test]
    fn the_fault_hook_is_seen_at_the_next_recheck_and_cleared_again() {
        let fault = DiskFault::default();
        let headroom = Headroom::new(&std::env::temp_dir(), 0, fault.clone());
        assert!(headroom.state().is_writable());
        fault.read_only();
        assert_eq!(headroom.recheck(), DiskState::ReadOnly);
        assert_eq!(headroom.state(), DiskState::ReadOnly, "cached");
        fault.fill();
        assert!(matches!(headroom.recheck(), DiskState::Full { .. }));
        fault.clear();
        assert!(headroom.recheck().is_writable());
    }
}
