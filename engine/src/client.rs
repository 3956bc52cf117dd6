//! [`ShardClient`]: the one trait every call into a shard goes through. A call is a value (a
//! [`Command`], a [`Query`], an idempotency step) and so is its answer, so the node and its
//! callers never reach into a shard's memory. [`LocalShard`] is the client of a shard actor in
//! this process; a client of a shard owned by another node implements the same trait, and
//! nothing above the node changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use ractor::{Actor, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actor::{Applied, BeginAnswer, ShardActor, ShardArgs, ShardMsg, ShardPhase};
use crate::command::{Command, Query, QueryAnswer, SettleClaims, TakeClaim};
use crate::error::{DomainError, EngineError, StartError};
use crate::idempotency::{Fingerprint, IdemKey, IdemOutcome, StoredResponse};
use crate::journal::Durable;
use crate::view::Output;

/// A boxed future: the trait is used as `dyn ShardClient`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a node's stop waits for its shards to drain their mailboxes and exit (all at
/// once, not each in turn) before it leaves the rest behind; their logs are still complete,
/// since every answer waited for its records.
pub const SHARD_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Calls into one shard.
pub trait ShardClient: Send + Sync {
    fn shard(&self) -> u32;
    /// Where the shard is in its life, as last known.
    fn phase(&self) -> ShardPhase;
    /// Waits until the shard has left `Recovering`; answers the phase it reached.
    fn recovered(&self) -> BoxFuture<'_, ShardPhase>;
    /// Applies `command`; answers once its records are stored.
    fn execute(&self, command: Command) -> BoxFuture<'_, Result<Output, EngineError>>;
    /// Applies `command`; answers at once, with what to wait for before telling anyone.
    fn execute_deferred(&self, command: Command) -> BoxFuture<'_, Result<Applied, EngineError>>;
    /// Many commands in one call; answered once all their records are stored.
    fn execute_batch(
        &self,
        commands: Vec<Command>,
    ) -> BoxFuture<'_, Result<Vec<Result<Output, DomainError>>, EngineError>>;
    /// Reads the shard after every write sent before it.
    fn query(&self, query: Query) -> BoxFuture<'_, Result<QueryAnswer, EngineError>>;
    /// First look at an Idempotency-Key (waits while a request with the same key runs).
    fn idempotency_begin(
        &self,
        key: IdemKey,
        fingerprint: Fingerprint,
    ) -> BoxFuture<'_, Result<IdemOutcome, EngineError>>;
    /// Stores (or forgets) the response of a key that began with `Proceed`.
    fn idempotency_finish(
        &self,
        key: IdemKey,
        response: Option<StoredResponse>,
    ) -> BoxFuture<'_, Result<Durable, EngineError>>;
    /// Begins a booking on the citizen's shard: the key (when given) and the claim.
    fn begin_booking(
        &self,
        key: Option<(IdemKey, Fingerprint)>,
        take: TakeClaim,
    ) -> BoxFuture<'_, Result<BeginAnswer, EngineError>>;
    /// Ends a booking on the citizen's shard: the claim's settlement and the key's answer.
    fn finish_booking(
        &self,
        settle: SettleClaims,
        key: Option<(IdemKey, Option<StoredResponse>)>,
    ) -> BoxFuture<'_, Result<Durable, EngineError>>;
    /// Snapshots the shard; answers the sequence number once stored.
    fn snapshot(&self) -> BoxFuture<'_, Result<u64, EngineError>>;
    /// Tells the shard to stop once it has handled what it already received (at once, when
    /// called); the future resolves when it is gone.
    fn stop(&self) -> BoxFuture<'_, ()>;
}

/// The client of a shard actor in this process.
pub struct LocalShard {
    shard: u32,
    actor: ActorRef<ShardMsg>,
    phase: watch::Receiver<ShardPhase>,
    join: Mutex<Option<JoinHandle<()>>>,
}

impl LocalShard {
    /// Spawns the shard's actor; it recovers as its first message.
    pub async fn spawn(args: ShardArgs) -> Result<LocalShard, StartError> {
        let shard = args.shard;
        let phase = args.phase.subscribe();
        let (actor, join) =
            Actor::spawn(None, ShardActor, args)
                .await
                .map_err(|e| StartError::Spawn {
                    shard,
                    reason: e.to_string(),
                })?;
        Ok(LocalShard {
            shard,
            actor,
            phase,
            join: Mutex::new(Some(join)),
        })
    }

    /// Sends the message now and returns a small future that waits for its answer. The
    /// command moves into the mailbox once; the future holds only the reply's receiver (the
    /// boxed future of a `dyn` call then stays small, and moving it costs nothing).
    fn send<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> ShardMsg,
    ) -> impl Future<Output = Result<T, EngineError>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.actor.cast(build(RpcReplyPort::from(tx)));
        let unavailable = EngineError::Unavailable { shard: self.shard };
        async move {
            // Not sent (the actor is gone), or dropped unanswered: the shard is not there.
            sent.map_err(|_| unavailable.clone())?;
            rx.await.map_err(|_| unavailable)
        }
    }
}

impl ShardClient for LocalShard {
    fn shard(&self) -> u32 {
        self.shard
    }

    fn phase(&self) -> ShardPhase {
        self.phase.borrow().clone()
    }

    fn recovered(&self) -> BoxFuture<'_, ShardPhase> {
        Box::pin(async move {
            let mut phase = self.phase.clone();
            let settled = phase
                .wait_for(|p| *p != ShardPhase::Recovering)
                .await
                .map(|p| p.clone());
            // The sender is gone: the actor stopped before it settled.
            settled.unwrap_or(ShardPhase::Recovering)
        })
    }

    fn execute(&self, command: Command) -> BoxFuture<'_, Result<Output, EngineError>> {
        let answer = self.send(|reply| ShardMsg::Exec(command, reply));
        Box::pin(async move { answer.await? })
    }

    fn execute_deferred(&self, command: Command) -> BoxFuture<'_, Result<Applied, EngineError>> {
        let answer = self.send(|reply| ShardMsg::ExecDeferred(command, reply));
        Box::pin(async move { answer.await? })
    }

    fn execute_batch(
        &self,
        commands: Vec<Command>,
    ) -> BoxFuture<'_, Result<Vec<Result<Output, DomainError>>, EngineError>> {
        let answer = self.send(|reply| ShardMsg::Batch(commands, reply));
        Box::pin(async move { answer.await? })
    }

    fn query(&self, query: Query) -> BoxFuture<'_, Result<QueryAnswer, EngineError>> {
        let answer = self.send(|reply| ShardMsg::Query(query, reply));
        Box::pin(async move { answer.await?.map_err(EngineError::Domain) })
    }

    fn idempotency_begin(
        &self,
        key: IdemKey,
        fingerprint: Fingerprint,
    ) -> BoxFuture<'_, Result<IdemOutcome, EngineError>> {
        Box::pin(self.send(move |reply| ShardMsg::IdemBegin(key, fingerprint, reply)))
    }

    fn idempotency_finish(
        &self,
        key: IdemKey,
        response: Option<StoredResponse>,
    ) -> BoxFuture<'_, Result<Durable, EngineError>> {
        let answer = self.send(|reply| ShardMsg::IdemFinish(key, response, reply));
        Box::pin(async move { answer.await? })
    }

    fn begin_booking(
        &self,
        key: Option<(IdemKey, Fingerprint)>,
        take: TakeClaim,
    ) -> BoxFuture<'_, Result<BeginAnswer, EngineError>> {
        Box::pin(self.send(move |reply| ShardMsg::BeginBooking(key, take, reply)))
    }

    fn finish_booking(
        &self,
        settle: SettleClaims,
        key: Option<(IdemKey, Option<StoredResponse>)>,
    ) -> BoxFuture<'_, Result<Durable, EngineError>> {
        let answer = self.send(|reply| ShardMsg::FinishBooking(settle, key, reply));
        Box::pin(async move { answer.await? })
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<u64, EngineError>> {
        let answer = self.send(ShardMsg::SnapshotNow);
        Box::pin(async move { answer.await? })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        // Drain: what is already in the mailbox is handled (and answered), later messages are
        // refused; then the actor exits and its timer task ends with it.
        if self.actor.drain().is_err() {
            self.actor.stop(None);
        }
        let join = self.join.lock().expect("not poisoned").take();
        Box::pin(async move {
            if let Some(join) = join {
                let _ = join.await;
            }
        })
    }
}

impl Drop for LocalShard {
    /// A node dropped without [`ShardClient::stop`] still stops its actors (tests, errors on
    /// start): the actor exits after the message it is handling.
    fn drop(&mut self) {
        self.actor.stop(None);
    }
}
