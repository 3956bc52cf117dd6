//! Wall-clock time for the engine, in unix milliseconds (UTC).
//!
//! Deadlines are absolute wall-clock instants (they are written to the log later and must mean
//! the same thing after a restart), so the engine reads time through this trait: production
//! uses [`SystemClock`], tests and the property model drive a [`ManualClock`].

use std::sync::atomic::{AtomicI64, Ordering};

/// Unix time in milliseconds, UTC.
pub type UnixMs = i64;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> UnixMs;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMs {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("system clock before 1970");
        now.as_millis() as UnixMs
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    pub fn new(now_ms: UnixMs) -> Self {
        ManualClock {
            now_ms: AtomicI64::new(now_ms),
        }
    }
    pub fn set(&self, now_ms: UnixMs) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, delta_ms: i64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMs {
        self.now_ms.load(Ordering::SeqCst)
    }
}
