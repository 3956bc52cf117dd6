//! One ractor actor owns one shard: it is the single writer of the shard's state, so a hold's
//! two decrements (a seat and a dose) are one step with no lock.
//!
//! Messages are handled one at a time and nothing slow is awaited inside a handler: a command
//! is decided and applied in memory, its events are handed to the [`Journal`] with the
//! shard's next sequence numbers, and the answer is sent by the journal's completion once the
//! records are stored. Because the journal completes in submission order, an answer also
//! waits for every record its shard applied before it (a refusal included: it is answered
//! through an empty append, a barrier). Reads do not wait.
//!
//! Hold deadlines live in the shard's deadline queue; a companion timer task (one per shard,
//! not one per hold) sleeps until the earliest deadline, learned through a `watch` channel,
//! and sends `Tick`. Ticks also run housekeeping (purging old idempotency records).
//!
//! Recovery is the shard's first message, not part of `pre_start`: the node (and the HTTP
//! listener) is up at once, every shard recovers in its own task, and the shard's
//! [`ShardPhase`] (published through a `watch` channel) tells the node whether to route to
//! it. A recovering shard answers nothing (the node refuses its requests with 503 and
//! `Retry-After`); once its latest snapshot and its log tail are replayed through the same
//! `apply` the live path uses, the holds whose deadline passed while it was down expire at
//! once, and it turns `Ready`. A shard whose log cannot be replayed turns `Failed` and stays
//! unavailable; the other shards serve.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::sync::watch;

use crate::clock::{Clock, UnixMs};
use crate::event::{Command, DomainError, Event};
use crate::idempotency::{Begin, Fingerprint, IdemKey, IdempotencyTable, StoredResponse};
use crate::journal::{
    decode, encode, Done, IdempotencyRecord, Journal, LogRecord, Refusal, Snapshot,
};
use crate::node::EngineError;
use crate::shard::ShardState;
use crate::view::Output;

/// Longest the timer task sleeps without a tick, so housekeeping runs and a wall-clock jump
/// is noticed within this bound even when no deadline is near.
pub const HOUSEKEEPING_INTERVAL_MS: i64 = 1000;
/// After a tick, how long the timer waits for the shard to move its earliest deadline before
/// looking again; bounds the re-tick rate while a backlog of expiries drains.
const TICK_RETRY_MS: u64 = 5;
/// A shard snapshots after this many records, so recovery replays at most this many (plus
/// what arrives while the snapshot is written) and the log before it can be dropped.
pub const SNAPSHOT_EVERY_RECORDS_DEFAULT: u64 = 100_000;

/// A read of the shard, run between two writes (so it sees every earlier write).
pub type ReadFn = Box<dyn FnOnce(&ShardRuntime) + Send>;

/// The answer to one command.
pub type ExecResult = Result<Output, EngineError>;

/// Resolves once the records a command produced (and everything its shard submitted before
/// them) are stored by the journal. A caller may do more work first, then wait: answers
/// leave only after their events are durable, but two writes of one request can share a
/// group commit instead of waiting for one flush each.
#[must_use = "an answer may leave only after its events are durable: wait for it"]
pub struct Durable {
    shard: u32,
    stored: tokio::sync::oneshot::Receiver<Result<(), String>>,
}

impl Durable {
    fn new(shard: u32) -> (Durable, Done) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: Done = Box::new(move |stored| {
            let _ = tx.send(stored);
        });
        (Durable { shard, stored: rx }, done)
    }

    /// Waits until stored; `Unavailable` when the journal failed (or the shard is gone).
    pub async fn wait(self) -> Result<(), EngineError> {
        match self.stored.await {
            Ok(Ok(())) => Ok(()),
            _ => Err(EngineError::Unavailable { shard: self.shard }),
        }
    }
}

/// A command's outcome, decided and applied, and what to wait for before telling it.
pub type Applied = (Result<Output, DomainError>, Durable);

/// What an idempotency waiter is finally told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemOutcome {
    Begin(Begin),
    /// The first request finished: its stored response (or `None`: it never reached a
    /// decision, retry).
    Finished(Option<StoredResponse>),
}

/// Where a shard is in its life. The node routes only to `Ready` shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardPhase {
    /// Loading its snapshot and replaying its log tail.
    Recovering,
    Ready,
    /// Its log could not be replayed (the reason); it takes no requests.
    Failed(String),
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
    Read(ReadFn),
    IdemBegin(IdemKey, Fingerprint, RpcReplyPort<IdemOutcome>),
    /// Stores (durably) or forgets an in-flight key. Answered at once, with a [`Durable`]
    /// that resolves once the record is stored.
    IdemFinish(
        IdemKey,
        Option<StoredResponse>,
        RpcReplyPort<Result<Durable, EngineError>>,
    ),
    Tick,
    /// Writes a snapshot now (graceful shutdown); answered with its sequence number once
    /// stored.
    SnapshotNow(RpcReplyPort<Result<u64, EngineError>>),
}

pub struct ShardArgs {
    pub shard: u32,
    pub clock: Arc<dyn Clock>,
    pub idempotency_records_max: usize,
    pub idempotency_retention_ms: i64,
    pub journal: Arc<dyn Journal>,
    pub snapshot_every_records: u64,
    /// Where the shard publishes its phase; the node holds a receiver.
    pub phase: Arc<watch::Sender<ShardPhase>>,
}

pub struct ShardActor;

pub struct ShardRuntime {
    shard: u32,
    state: ShardState,
    clock: Arc<dyn Clock>,
    idempotency: IdempotencyTable<RpcReplyPort<IdemOutcome>>,
    earliest_tx: watch::Sender<Option<UnixMs>>,
    journal: Arc<dyn Journal>,
    /// Events applied by the current message, on their way to the journal.
    events: Vec<Event>,
    events_applied: u64,
    /// Sequence number of the last record handed to the journal.
    wal_seq: u64,
    snapshot_seq: u64,
    last_snapshot_at_ms: Option<UnixMs>,
    records_since_snapshot: u64,
    snapshot_every_records: u64,
    /// Set when a record could not be handed to the journal after its change was applied in
    /// memory: memory and log may differ, so the shard takes no more writes (a restart
    /// recovers from the log).
    poisoned: Option<String>,
    recovered_dropped: usize,
    phase: Arc<watch::Sender<ShardPhase>>,
}

/// Figures the operator endpoint shows that the state does not know.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeCounts {
    pub events_applied: u64,
    pub idempotency_records: usize,
    pub wal_seq: u64,
    pub snapshot_seq: u64,
    pub last_snapshot_at_ms: Option<UnixMs>,
    pub writable: bool,
    pub recovered_dropped: usize,
}

/// The same fields as [`Snapshot`], borrowed, so a snapshot does not clone the state.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    seq: u64,
    state: &'a ShardState,
    idempotency: Vec<IdempotencyRecord>,
}

impl ShardRuntime {
    pub fn state(&self) -> &ShardState {
        &self.state
    }

    pub fn runtime_counts(&self) -> RuntimeCounts {
        RuntimeCounts {
            events_applied: self.events_applied,
            idempotency_records: self.idempotency.len(),
            wal_seq: self.wal_seq,
            snapshot_seq: self.snapshot_seq,
            last_snapshot_at_ms: self.last_snapshot_at_ms,
            writable: self.poisoned.is_none() && self.journal.failed().is_none(),
            recovered_dropped: self.recovered_dropped,
        }
    }

    fn publish_earliest(&self) {
        let earliest = self.state.next_deadline();
        self.earliest_tx.send_if_modified(|current| {
            let changed = *current != earliest;
            *current = earliest;
            changed
        });
    }

    /// Refuses a write before it changes anything when the journal cannot take it.
    fn admit_write(&self) -> Result<(), EngineError> {
        if self.poisoned.is_some() || self.journal.failed().is_some() {
            return Err(EngineError::Unavailable { shard: self.shard });
        }
        if self.journal.busy() {
            return Err(EngineError::Overloaded { shard: self.shard });
        }
        Ok(())
    }

    fn run(&mut self, command: Command) -> Result<Output, DomainError> {
        let now_ms = self.clock.now_ms();
        self.state.execute(command, now_ms, &mut self.events)
    }

    /// The events applied since the last call, as numbered log records.
    fn take_records(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.events_applied += self.events.len() as u64;
        let mut records = Vec::with_capacity(self.events.len());
        for event in self.events.drain(..) {
            self.wal_seq += 1;
            records.push((self.wal_seq, encode(&LogRecord::Event(event))));
        }
        records
    }

    /// Hands records to the journal; `done` runs once they are stored.
    fn submit(&mut self, records: Vec<(u64, Vec<u8>)>, done: Done) {
        self.records_since_snapshot += records.len() as u64;
        if let Err(refusal) = self.journal.append(self.shard, records, done) {
            let reason = match refusal {
                Refusal::Full => {
                    "the journal queue was full after the change was applied".to_string()
                }
                Refusal::Failed(e) => e,
            };
            tracing::error!(shard = self.shard, %reason, "shard stops taking writes");
            self.poisoned = Some(reason);
        }
    }

    fn maybe_snapshot(&mut self) {
        if self.records_since_snapshot >= self.snapshot_every_records && self.poisoned.is_none() {
            self.snapshot(Box::new(|_| {}));
        }
    }

    fn snapshot(&mut self, done: Done) -> u64 {
        let snapshot = SnapshotRef {
            seq: self.wal_seq,
            state: &self.state,
            idempotency: self
                .idempotency
                .completed()
                .into_iter()
                .map(
                    |(key, fingerprint, response, stored_at_ms)| IdempotencyRecord {
                        caller: key.caller,
                        key: key.key,
                        fingerprint,
                        status: response.status,
                        body: response.body,
                        stored_at_ms,
                    },
                )
                .collect(),
        };
        let bytes = encode(&snapshot);
        let seq = self.wal_seq;
        self.records_since_snapshot = 0;
        self.snapshot_seq = seq;
        self.last_snapshot_at_ms = Some(self.clock.now_ms());
        if let Err(refusal) = self.journal.snapshot(self.shard, seq, bytes, done) {
            tracing::warn!(
                shard = self.shard,
                ?refusal,
                "snapshot not taken; the log is kept"
            );
        }
        seq
    }

    /// Expires holds whose deadline has passed and journals the expiries.
    fn expire_due(&mut self) {
        if self.admit_write().is_err() {
            return; // the next tick tries again
        }
        let _ = self.run(Command::ExpireDue);
        let records = self.take_records();
        if !records.is_empty() {
            self.submit(records, Box::new(|_| {}));
        }
    }
}

impl ShardRuntime {
    /// Rebuilds the shard from its snapshot and log tail (the same `apply` as live traffic)
    /// and makes it writable. On an error nothing is kept: the shard stays unavailable.
    fn recover(&mut self) -> Result<(), String> {
        let shard = self.shard;
        let recovered = self.journal.recover(shard)?;
        for (seq, reason) in &recovered.dropped {
            tracing::warn!(shard, seq, %reason, "log record dropped at recovery (torn or corrupt tail)");
        }
        let (mut state, mut records, snapshot_seq) = match recovered.snapshot {
            Some((seq, bytes)) => {
                let snapshot: Snapshot =
                    decode(&bytes).map_err(|e| format!("shard {shard} snapshot {seq}: {e}"))?;
                if snapshot.state.shard() != shard || snapshot.seq != seq {
                    return Err(format!("shard {shard} snapshot {seq} belongs elsewhere"));
                }
                (snapshot.state, snapshot.idempotency, seq)
            }
            None => (ShardState::new(shard), Vec::new(), 0),
        };
        let mut wal_seq = snapshot_seq;
        for (seq, bytes) in recovered.records {
            if seq != wal_seq + 1 {
                return Err(format!("shard {shard}: log jumps from {wal_seq} to {seq}"));
            }
            match decode::<LogRecord>(&bytes)
                .map_err(|e| format!("shard {shard} record {seq}: {e}"))?
            {
                LogRecord::Event(event) => state.apply(&event),
                LogRecord::Idempotency(record) => records.push(record),
            }
            wal_seq = seq;
        }
        // A replayed shard must satisfy what the live one did; refuse to serve a broken one.
        state
            .check_invariants()
            .map_err(|e| format!("shard {shard} after recovery: {e}"))?;
        for r in records {
            let key = IdemKey {
                caller: r.caller,
                key: r.key,
            };
            let response = StoredResponse {
                status: r.status,
                body: r.body,
            };
            self.idempotency
                .restore(key, r.fingerprint, response, r.stored_at_ms);
        }
        self.state = state;
        self.wal_seq = wal_seq;
        self.snapshot_seq = snapshot_seq;
        self.records_since_snapshot = wal_seq - snapshot_seq;
        self.recovered_dropped = recovered.dropped.len();
        self.poisoned = None;
        Ok(())
    }
}

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
        let (earliest_tx, _) = watch::channel(None);
        Ok(ShardRuntime {
            shard: args.shard,
            state: ShardState::new(args.shard),
            clock: args.clock,
            idempotency: IdempotencyTable::new(
                args.idempotency_records_max,
                args.idempotency_retention_ms,
            ),
            earliest_tx,
            journal: args.journal,
            events: Vec::new(),
            events_applied: 0,
            wal_seq: 0,
            snapshot_seq: 0,
            last_snapshot_at_ms: None,
            records_since_snapshot: 0,
            snapshot_every_records: args.snapshot_every_records.max(1),
            poisoned: Some("recovering".to_string()),
            recovered_dropped: 0,
            phase: args.phase,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        message: ShardMsg,
        rt: &mut ShardRuntime,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Recover => {
                let phase = match rt.recover() {
                    Ok(()) => {
                        let (earliest_tx, earliest_rx) = watch::channel(None);
                        rt.earliest_tx = earliest_tx;
                        tokio::spawn(timer_task(myself, rt.clock.clone(), earliest_rx));
                        // Holds whose deadline passed while the node was down expire now.
                        rt.expire_due();
                        rt.idempotency.purge(rt.clock.now_ms());
                        ShardPhase::Ready
                    }
                    Err(reason) => {
                        tracing::error!(shard = rt.shard, %reason, "shard recovery failed; it stays unavailable");
                        rt.poisoned = Some(reason.clone());
                        ShardPhase::Failed(reason)
                    }
                };
                rt.phase.send_replace(phase);
            }
            ShardMsg::Exec(command, reply) => match rt.admit_write() {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(()) => {
                    let result = rt.run(command).map_err(EngineError::Domain);
                    let records = rt.take_records();
                    let shard = rt.shard;
                    rt.submit(
                        records,
                        Box::new(move |stored| {
                            // A caller that gave up is not an error of the shard.
                            let _ = reply.send(
                                stored
                                    .map_err(|_| EngineError::Unavailable { shard })
                                    .and(result),
                            );
                        }),
                    );
                    rt.maybe_snapshot();
                }
            },
            ShardMsg::Batch(commands, reply) => match rt.admit_write() {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(()) => {
                    let results: Vec<_> = commands.into_iter().map(|c| rt.run(c)).collect();
                    let records = rt.take_records();
                    let shard = rt.shard;
                    rt.submit(
                        records,
                        Box::new(move |stored| {
                            let _ = reply.send(
                                stored
                                    .map_err(|_| EngineError::Unavailable { shard })
                                    .map(|()| results),
                            );
                        }),
                    );
                    rt.maybe_snapshot();
                }
            },
            ShardMsg::ExecDeferred(command, reply) => match rt.admit_write() {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(()) => {
                    let result = rt.run(command);
                    let records = rt.take_records();
                    let (durable, done) = Durable::new(rt.shard);
                    // Submitted before the answer leaves, so anything the caller writes next
                    // is queued behind these records.
                    rt.submit(records, done);
                    let _ = reply.send(Ok((result, durable)));
                    rt.maybe_snapshot();
                }
            },
            ShardMsg::Read(read) => read(rt),
            ShardMsg::IdemBegin(key, fingerprint, reply) => {
                let now_ms = rt.clock.now_ms();
                let (begin, waiter) = rt.idempotency.begin(key, fingerprint, reply, now_ms);
                if let Some(reply) = waiter {
                    let _ = reply.send(IdemOutcome::Begin(begin));
                }
            }
            ShardMsg::IdemFinish(key, response, reply) => {
                let now_ms = rt.clock.now_ms();
                let fingerprint = rt.idempotency.fingerprint_of(&key);
                let waiters = rt.idempotency.finish(&key, response.clone(), now_ms);
                match (response, fingerprint) {
                    (Some(response), Some(fingerprint)) if rt.admit_write().is_ok() => {
                        rt.wal_seq += 1;
                        let record = IdempotencyRecord {
                            caller: key.caller,
                            key: key.key,
                            fingerprint,
                            status: response.status,
                            body: response.body.clone(),
                            stored_at_ms: now_ms,
                        };
                        let records = vec![(rt.wal_seq, encode(&LogRecord::Idempotency(record)))];
                        let (durable, stored) = Durable::new(rt.shard);
                        rt.submit(
                            records,
                            Box::new(move |result| {
                                // Waiters answer with the response only once it is stored.
                                if result.is_ok() {
                                    for waiter in waiters {
                                        let _ = waiter
                                            .send(IdemOutcome::Finished(Some(response.clone())));
                                    }
                                }
                                stored(result);
                            }),
                        );
                        let _ = reply.send(Ok(durable));
                        rt.maybe_snapshot();
                    }
                    (response, _) => {
                        // Nothing to store (no decision was reached), or the journal cannot
                        // take it: the record stays in memory only, and the answer says so.
                        let stored = response.is_none() || rt.admit_write().is_ok();
                        for waiter in waiters {
                            let _ = waiter.send(IdemOutcome::Finished(response.clone()));
                        }
                        let _ = reply.send(if stored {
                            let (durable, done) = Durable::new(rt.shard);
                            done(Ok(()));
                            Ok(durable)
                        } else {
                            Err(EngineError::Unavailable { shard: rt.shard })
                        });
                    }
                }
            }
            ShardMsg::Tick => {
                rt.expire_due();
                rt.idempotency.purge(rt.clock.now_ms());
                rt.maybe_snapshot();
            }
            ShardMsg::SnapshotNow(reply) => {
                if let Some(reason) = rt.poisoned.clone() {
                    let _ = reply.send(Err(EngineError::Unavailable { shard: rt.shard }));
                    tracing::warn!(shard = rt.shard, %reason, "no snapshot of a shard that stopped taking writes");
                } else {
                    let shard = rt.shard;
                    let seq = rt.wal_seq;
                    rt.snapshot(Box::new(move |stored| {
                        let _ = reply.send(
                            stored
                                .map(|()| seq)
                                .map_err(|_| EngineError::Unavailable { shard }),
                        );
                    }));
                }
            }
        }
        rt.publish_earliest();
        Ok(())
    }
}

/// Sleeps until the shard's earliest deadline (at most `HOUSEKEEPING_INTERVAL_MS`) and sends
/// `Tick`. Ends when the actor is gone.
async fn timer_task(
    actor: ActorRef<ShardMsg>,
    clock: Arc<dyn Clock>,
    mut earliest_rx: watch::Receiver<Option<UnixMs>>,
) {
    loop {
        let earliest = *earliest_rx.borrow_and_update();
        let now_ms = clock.now_ms();
        let sleep_ms = match earliest {
            // +1: wake just after the deadline, so the tick finds it due.
            Some(deadline) => (deadline - now_ms + 1).clamp(0, HOUSEKEEPING_INTERVAL_MS),
            None => HOUSEKEEPING_INTERVAL_MS,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {
                if actor.cast(ShardMsg::Tick).is_err() {
                    return;
                }
                // Give the shard a moment to act on the tick before looking again.
                let waited = tokio::time::timeout(Duration::from_millis(TICK_RETRY_MS), earliest_rx.changed()).await;
                if let Ok(Err(_)) = waited {
                    return;
                }
            }
            changed = earliest_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
