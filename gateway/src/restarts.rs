//! The node's restarts in place: how often the server stopped the node after its log failed
//! and started it again in the same process, on the same listening socket (the server's
//! `reopen.rs`), and why the last one happened. Kept across those restarts (the server hands
//! the same record to each node it starts) and shown to operators in `/v1/admin/shards`
//! (`storage.restarts_in_place`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The last restart in place: when (ms since the epoch) and the failure it recovered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRestart {
    pub at_ms: i64,
    pub reason: String,
}

/// Restarts in place since the process started.
#[derive(Debug, Default)]
pub struct InPlaceRestarts {
    count: AtomicU64,
    last: Mutex<Option<LastRestart>>,
}

impl InPlaceRestarts {
    /// Counts a restart that served again, recovering from `reason`.
    pub fn record(&self, at_ms: i64, reason: String) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastRestart { at_ms, reason });
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    pub fn last(&self) -> Option<LastRestart> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
