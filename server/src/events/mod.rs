//! The node's durable domain events and audit chain (docs/ARCHITECTURE.md, "Events and
//! audit"): [`store`] (the sled store and its recorder thread, fed by the publication point),
//! [`mapping`] (a published change -> the contract's events and audit entries) and [`audit`]
//! (the SHA-256 chain and its verification, also offline: `holdfast audit verify`).

pub mod audit;
pub mod audit_index;
pub mod frames;
pub mod mapping;
pub mod ring;
pub mod store;

use std::path::Path;

pub use store::{EventStore, EVENTS_RETAINED_MAX, EVENTS_SUBDIR};

/// sled's in-memory page cache for the event store, in bytes. sled's own default is 1 GiB,
/// which a store of a national launch's events (about 1 GB on disk for ten million citizens'
/// bookings) fills by its reads: a resume from old sequences, an audit walk, the index at start.
/// Followers read recent events from the ring (`ring.rs`), not through this cache, and the
/// recorder only appends, so the log's own size is enough (`CACHE_CAPACITY_BYTES_DEFAULT`).
pub const CACHE_CAPACITY_BYTES: u64 = holdfast_persistence::CACHE_CAPACITY_BYTES_DEFAULT;

/// Opens the sled database at `dir` (or a temporary one) without starting a recorder: for
/// reading offline (`holdfast audit verify`).
pub fn open_db(dir: Option<&Path>) -> Result<sled::Db, String> {
    let config = match dir {
        Some(dir) => sled::Config::new().path(dir.join(store::EVENTS_SUBDIR)),
        None => sled::Config::new().temporary(true),
    }
    .cache_capacity(CACHE_CAPACITY_BYTES);
    // Waiting for the lock: after an in-place restart (`reopen.rs`) the previous store's
    // database may be a moment from releasing it.
    holdfast_persistence::open_sled(&config)
        .map_err(|e| format!("cannot open the event store: {e}"))
}
