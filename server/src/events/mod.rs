//! The node's durable domain events and audit chain (docs/ARCHITECTURE.md, "Events and
//! audit"): [`store`] (the sled store and its recorder thread, fed by the publication point),
//! [`mapping`] (a published change -> the contract's events and audit entries) and [`audit`]
//! (the SHA-256 chain and its verification, also offline: `holdfast audit verify`).

pub mod audit;
pub mod mapping;
pub mod store;

pub use store::{EventStore, EVENTS_RETAINED_MAX, EVENTS_SUBDIR};
