//! holdfast-engine: the reservation engine's core.
//!
//! Start reading at [`shard`] (the state machine: pure `decide`, one `apply`, queries,
//! invariants), then [`actor`] (one ractor actor owns one shard; answers wait for the
//! journal), then [`client`] and [`node`] (every call into a shard is a value sent through a
//! `ShardClient`; the node routes through the [`ring`] and bounds each shard), then [`saga`]
//! (booking across two shards), [`waitlist`] (sold-out slots' waitlists and their offers)
//! and [`publish`] (durable changes, published once). No HTTP
//! and no disk here: the gateway and the persistence crate sit on either side.

#![forbid(unsafe_code)]

pub mod actor;
pub mod appointments;
pub mod claims;
pub mod client;
pub mod clock;
pub mod command;
pub mod date_decode;
pub mod deadlines;
pub mod eligibility;
pub mod error;
pub mod event;
pub mod external;
pub mod failpoint;
pub mod feed;
pub mod hash;
pub mod idempotency;
pub mod ids;
pub mod journal;
pub mod localtime;
pub mod model;
pub mod node;
pub mod notices;
pub mod publish;
pub mod queries;
pub mod reconcile;
pub mod ring;
pub mod saga;
pub mod shard;
pub mod sized_decode;
pub mod view;
pub mod waitlist;

pub use clock::{Clock, ManualClock, SystemClock, UnixMs};
pub use command::{Command, Query, QueryAnswer};
pub use error::{
    DomainError, EngineError, JournalError, Limit, RecoveryError, Resource, StartError,
    WriteRefusal,
};
pub use event::Event;
pub use ids::{AppointmentId, WaitlistId};
pub use model::Status;
pub use node::{Node, NodeConfig};
pub use saga::BookRequest;
pub use view::Output;
