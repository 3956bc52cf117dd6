//! One ractor actor owns one shard: it is the single writer of the shard's state, so a hold's
//! two decrements (a seat and a dose) are one step with no lock.
//!
//! Messages are handled one at a time and nothing slow is awaited inside a handler. Hold
//! deadlines live in the shard's deadline queue; a companion timer task (one per shard, not
//! one per hold) sleeps until the earliest deadline, learned through a `watch` channel, and
//! sends `Tick`. Ticks also run housekeeping (purging old idempotency records).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use crate::clock::{Clock, UnixMs};
use crate::event::{Command, DomainError, Event};
use crate::idempotency::{Begin, Fingerprint, IdemKey, IdempotencyTable, StoredResponse};
use crate::shard::ShardState;
use crate::view::Output;

/// Longest the timer task sleeps without a tick, so housekeeping runs and a wall-clock jump
/// is noticed within this bound even when no deadline is near.
pub const HOUSEKEEPING_INTERVAL_MS: i64 = 1000;
/// After a tick, how long the timer waits for the shard to move its earliest deadline before
/// looking again; bounds the re-tick rate while a backlog of expiries drains.
const TICK_RETRY_MS: u64 = 5;

/// A read of the shard's state, run between two writes (so it sees every earlier write).
pub type ReadFn = Box<dyn FnOnce(&ShardRuntime) + Send>;

/// What an idempotency waiter is finally told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemOutcome {
    Begin(Begin),
    /// The first request finished: its stored response (or `None`: it never reached a
    /// decision, retry).
    Finished(Option<StoredResponse>),
}

pub enum ShardMsg {
    Exec(Command, RpcReplyPort<Result<Output, DomainError>>),
    /// Many commands in one message: one mailbox hop and one wake-up for all of them.
    Batch(Vec<Command>, RpcReplyPort<Vec<Result<Output, DomainError>>>),
    Read(ReadFn),
    IdemBegin(IdemKey, Fingerprint, RpcReplyPort<IdemOutcome>),
    IdemFinish(IdemKey, Option<StoredResponse>),
    Tick,
}

pub struct ShardArgs {
    pub shard: u32,
    pub clock: Arc<dyn Clock>,
    pub idempotency_records_max: usize,
    pub idempotency_retention_ms: i64,
}

pub struct ShardActor;

pub struct ShardRuntime {
    state: ShardState,
    clock: Arc<dyn Clock>,
    idempotency: IdempotencyTable<RpcReplyPort<IdemOutcome>>,
    earliest_tx: watch::Sender<Option<UnixMs>>,
    /// Events applied by the current message; the write-ahead log's feed once persistence
    /// lands. Cleared after every message, so it holds at most one batch's events.
    events: Vec<Event>,
    events_applied: u64,
}

impl ShardRuntime {
    fn publish_earliest(&self) {
        let earliest = self.state.next_deadline();
        self.earliest_tx.send_if_modified(|current| {
            let changed = *current != earliest;
            *current = earliest;
            changed
        });
    }

    fn run(&mut self, command: Command) -> Result<Output, DomainError> {
        let now_ms = self.clock.now_ms();
        let result = self.state.execute(command, now_ms, &mut self.events);
        self.events_applied += self.events.len() as u64;
        self.events.clear();
        result
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
        let (earliest_tx, earliest_rx) = watch::channel(None);
        tokio::spawn(timer_task(myself, args.clock.clone(), earliest_rx));
        Ok(ShardRuntime {
            state: ShardState::new(args.shard),
            clock: args.clock,
            idempotency: IdempotencyTable::new(
                args.idempotency_records_max,
                args.idempotency_retention_ms,
            ),
            earliest_tx,
            events: Vec::new(),
            events_applied: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        message: ShardMsg,
        rt: &mut ShardRuntime,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Exec(command, reply) => {
                let result = rt.run(command);
                // A caller that gave up is not an error of the shard.
                let _ = reply.send(result);
            }
            ShardMsg::Batch(commands, reply) => {
                let results = commands.into_iter().map(|c| rt.run(c)).collect();
                let _ = reply.send(results);
            }
            ShardMsg::Read(read) => read(rt),
            ShardMsg::IdemBegin(key, fingerprint, reply) => {
                let now_ms = rt.clock.now_ms();
                let (begin, waiter) = rt.idempotency.begin(key, fingerprint, reply, now_ms);
                if let Some(reply) = waiter {
                    let _ = reply.send(IdemOutcome::Begin(begin));
                }
            }
            ShardMsg::IdemFinish(key, response) => {
                let now_ms = rt.clock.now_ms();
                for waiter in rt.idempotency.finish(&key, response.clone(), now_ms) {
                    let _ = waiter.send(IdemOutcome::Finished(response.clone()));
                }
            }
            ShardMsg::Tick => {
                let _ = rt.run(Command::ExpireDue);
                rt.idempotency.purge(rt.clock.now_ms());
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

/// Figures the operator endpoint shows that the state does not know.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeCounts {
    pub events_applied: u64,
    pub idempotency_records: usize,
}

impl ShardRuntime {
    pub fn state(&self) -> &ShardState {
        &self.state
    }

    pub fn runtime_counts(&self) -> RuntimeCounts {
        RuntimeCounts {
            events_applied: self.events_applied,
            idempotency_records: self.idempotency.len(),
        }
    }
}
