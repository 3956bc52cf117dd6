//! holdfast-engine: the reservation engine's core.
//!
//! Start reading at [`shard`] (the state machine: pure `decide`, one `apply`), then [`actor`]
//! (one ractor actor owns one shard), then [`node`] (the shards of one process, their bounds,
//! routing through the [`ring`] and the booking saga). No HTTP and no disk here: the gateway
//! and the persistence crate sit on either side.

pub mod actor;
pub mod appointments;
pub mod clock;
pub mod eligibility;
pub mod event;
pub mod hash;
pub mod idempotency;
pub mod ids;
pub mod journal;
pub mod model;
pub mod node;
pub mod ring;
pub mod shard;
pub mod timers;
pub mod view;

pub use clock::{Clock, ManualClock, SystemClock, UnixMs};
pub use event::{Command, DomainError, Event};
pub use ids::AppointmentId;
pub use model::Status;
pub use node::{EngineError, Node, NodeConfig};
pub use view::Output;
