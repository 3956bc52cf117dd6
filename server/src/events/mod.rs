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

/// Opens the sled database at `dir` (or a temporary one) without starting a recorder: for
/// reading offline (`holdfast audit verify`).
pub fn open_db(dir: Option<&Path>) -> Result<sled::Db, String> {
    let config = match dir {
        Some(dir) => sled::Config::new().path(dir.join(store::EVENTS_SUBDIR)),
        None => sled::Config::new().temporary(true),
    };
    // Waiting for the lock: after an in-place restart (`reopen.rs`) the previous store's
    // database may be a moment from releasing it.
    holdfast_persistence::open_sled(&config)
        .map_err(|e| format!("cannot open the event store: {e}"))
}
