//! One ractor actor owns one shard: it is the single writer of the shard's state, so a hold's
//! two decrements (a seat and a dose) are one step with no lock.
//!
//! Messages are handled one at a time and nothing slow is awaited inside a handler: a command
//! is decided and applied in memory, its events are handed to the [`Journal`] with the
//! shard's next sequence numbers, and the answer is sent by the journal's completion once the
//! records are stored. Because the journal completes in submission order, an answer also
//! waits for every record its shard applied before it (a refusal included: it is answered
//! through an empty append, a barrier). Queries do not wait.
//!
//! The rooms: this file (messages and their dispatch), [`runtime`] (what a message does to
//! the shard: execute, journal, publish, snapshot), [`recovery`] (the shard's first message:
//! snapshot + log tail through the same `apply`), [`timer`] (one task per shard wakes it for
//! its earliest deadline).
//!
//! Recovery is the shard's first message, not part of `pre_start`: the node (and the HTTP
//! listener) is up at once, every shard recovers in its own task, and the shard's
//! [`ShardPhase`] (published through a `watch` channel) tells the node whether to route to
//! it. A shard whose log cannot be replayed turns `Failed` and stays unavailable; the others
//! serve.
//!
//! [`Journal`]: crate::journal::Journal

mod recovery;
mod runtime;
mod timer;

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::command::{Command, Query, QueryAnswer, SettleClaims, TakeClaim};
use crate::error::{DomainError, EngineError, RecoveryError};
use crate::idempotency::{Fingerprint, IdemKey, IdemOutcome, StoredResponse};
use crate::journal::{Durable, Journal};
use crate::notices::Settler;
use crate::publish::Publisher;
use crate::shard::ShardConfig;
use crate::view::Output;
use crate::waitlist::Offerer;

pub use runtime::ShardRuntime;
pub use timer::HOUSEKEEPING_INTERVAL_MS;

/// A shard snapshots after this many records, so recovery replays at most this many (plus
/// what arrives while the snapshot is written) and the log before it can be dropped. Why
/// 50,000: a restart after a national launch replayed 1.9 M records of tail (30,000 a shard)
/// in about as much time as it decoded the snapshots; with the idempotent answers out of
/// them, a snapshot of such a shard is 13 MB, not 30, and taking one twice as often costs the
/// shard a pause of tens of milliseconds every few minutes (docs/PERFORMANCE.md).
pub const SNAPSHOT_EVERY_RECORDS_DEFAULT: u64 = 50_000;

/// The answer to one command.
pub type ExecResult = Result<Output, EngineError>;

/// A command's outcome, decided and applied, and what to wait for before telling it.
pub type Applied = (Result<Output, DomainError>, Durable);

/// Where a shard is in its life. The node routes only to `Ready` shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardPhase {
    /// Loading its snapshot and replaying its log tail.
    Recovering,
    Ready,
    /// Its log could not be replayed; it takes no requests.
    Failed(RecoveryError),
    /// A write it had applied in memory could not be stored (the journal failed or refused
    /// it): its memory may be ahead of its log, so it answers nothing, reads included, until
    /// a restart recovers it from the log. The other shards go on serving reads.
    Stopped(String),
}

pub enum ShardMsg {
    /// The first message of every shard (sent by `pre_start`): recover, then turn `Ready`.
    Recover,
    Exec(Command, RpcReplyPort<ExecResult>),
    /// Many commands in one message: one mailbox hop, one journal append, one wake-up.
    Batch(
        Vec<Command>,
        RpcReplyPort<Result<Vec<Result<Output, DomainError>>, EngineError>>,
    ),
    /// Like `Exec`, but answered as soon as the command is applied, with a [`Durable`] that
    /// resolves once its records are stored.
    ExecDeferred(Command, RpcReplyPort<Result<Applied, EngineError>>),
    Query(Query, RpcReplyPort<Result<QueryAnswer, DomainError>>),
    IdemBegin(IdemKey, Fingerprint, RpcReplyPort<IdemOutcome>),
    /// Stores (durably) or forgets an in-flight key. Answered at once, with a [`Durable`]
    /// that resolves once the record is stored.
    IdemFinish(
        IdemKey,
        Option<StoredResponse>,
        RpcReplyPort<Result<Durable, EngineError>>,
    ),
    /// Begins a booking on the citizen's shard: the Idempotency-Key (when it lives in this
    /// shard) and the claim, in one step.
    BeginBooking(
        Option<(IdemKey, Fingerprint)>,
        TakeClaim,
        RpcReplyPort<BeginAnswer>,
    ),
    /// Ends a booking on the citizen's shard: settles the claim and stores the key's answer
    /// (when it lives in this shard), in one step. Answered at once, with a [`Durable`] for
    /// both.
    FinishBooking(
        SettleClaims,
        Option<(IdemKey, Option<StoredResponse>)>,
        RpcReplyPort<Result<Durable, EngineError>>,
    ),
    /// The timer's wake-up: act on due deadlines, housekeeping.
    Tick,
    /// Writes a snapshot now (graceful shutdown); answered with its sequence number once
    /// stored.
    SnapshotNow(RpcReplyPort<Result<u64, EngineError>>),
}

/// What [`ShardMsg::BeginBooking`] answers.
pub enum BeginAnswer {
    /// The key was not new: replay, mismatch or a bound (the claim was not looked at).
    Key(IdemOutcome),
    /// The same key is running: its answer arrives here.
    Wait(tokio::sync::oneshot::Receiver<IdemOutcome>),
    /// The key is new (or there was none) and the claim was decided.
    Claim(Box<Applied>),
    /// The shard takes no writes now.
    Refused(EngineError),
}

pub struct ShardArgs {
    pub shard: u32,
    pub clock: Arc<dyn Clock>,
    pub idempotency_records_max: usize,
    pub idempotency_retention_ms: i64,
    pub journal: Arc<dyn Journal>,
    pub publisher: Arc<Publisher>,
    pub snapshot_every_records: u64,
    /// Where the shard publishes its phase; the node holds a receiver.
    pub phase: Arc<watch::Sender<ShardPhase>>,
    /// Where the shard sends the claim notices of its durable appointment changes.
    pub settler: Option<Settler>,
    /// Where the shard sends the slots its durable changes made room in, when citizens wait
    /// there (waitlist offers).
    pub offerer: Option<Offerer>,
    /// What the shard's decisions read from the node's configuration (the no-show grace).
    pub config: ShardConfig,
}

pub struct ShardActor;

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardRuntime;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardRuntime, ActorProcessingErr> {
        // Nobody holds a reference to this actor yet, so `Recover` is its first message.
        myself.cast(ShardMsg::Recover)?;
        Ok(ShardRuntime::new(args))
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        message: ShardMsg,
        rt: &mut ShardRuntime,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Recover => rt.recover_and_serve(myself),
            ShardMsg::Exec(command, reply) => rt.exec(command, reply),
            ShardMsg::Batch(commands, reply) => rt.exec_batch(commands, reply),
            ShardMsg::ExecDeferred(command, reply) => rt.exec_deferred(command, reply),
            ShardMsg::Query(query, reply) => {
                let _ = reply.send(rt.query(&query));
            }
            ShardMsg::IdemBegin(key, fingerprint, reply) => {
                rt.idempotency_begin(key, fingerprint, reply)
            }
            ShardMsg::IdemFinish(key, response, reply) => {
                rt.idempotency_finish(key, response, reply)
            }
            ShardMsg::BeginBooking(key, take, reply) => rt.begin_booking(key, take, reply),
            ShardMsg::FinishBooking(settle, key, reply) => rt.finish_booking(settle, key, reply),
            ShardMsg::Tick => rt.tick(),
            ShardMsg::SnapshotNow(reply) => rt.snapshot_now(reply),
        }
        rt.publish_earliest();
        Ok(())
    }
}
