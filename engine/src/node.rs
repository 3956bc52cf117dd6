//! The node: the shards one process owns, the bound in front of each, routing through the
//! ring, and the booking saga.
//!
//! Every request names a shard (a clinic's, a citizen's, a caller's or an appointment's) and
//! goes through [`Node::route`], which asks the ring who owns it. In the embedded default the
//! ring has one node, this process; a shard owned elsewhere answers `Unavailable` until remote
//! routing lands, never a guess.
//!
//! ractor mailboxes are unbounded and their length is not public, so the bound is ours: an
//! in-flight counter per shard, taken before a message is sent and released when its answer
//! arrives. At `inflight_per_shard_max` a request is refused with `Overloaded` (HTTP 503 with
//! Retry-After) instead of queueing without end.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorRef, RpcReplyPort};
use tokio::sync::{oneshot, watch};

use crate::actor::{
    Applied, Durable, IdemOutcome, RuntimeCounts, ShardActor, ShardArgs, ShardMsg, ShardPhase,
    ShardRuntime, SNAPSHOT_EVERY_RECORDS_DEFAULT,
};
use crate::clock::{Clock, UnixMs};
use crate::event::{Command, DomainError};
use crate::hash::shard_of;
use crate::idempotency::{
    Fingerprint, IdemKey, StoredResponse, RECORDS_PER_SHARD_MAX_DEFAULT, RETENTION_MS_DEFAULT,
};
use crate::ids::AppointmentId;
use crate::journal::{Journal, NoJournal};
use crate::ring::Ring;
use crate::view::{AppointmentView, Output, ShardCounts};

/// Default shard count (API.md `--shards`).
pub const SHARDS_DEFAULT: u32 = 64;
/// Largest shard count a data directory may be created with.
pub const SHARDS_MAX: u32 = 4096;
/// Requests in flight per shard. 256 concurrent clients can have at most 256 requests in
/// flight in total, so an ordinary rush stays far below this; reaching it means real overload.
pub const INFLIGHT_PER_SHARD_MAX_DEFAULT: u32 = 8192;
/// What a refused request is told to wait before retrying.
pub const RETRY_AFTER_S: u32 = 1;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_name: String,
    pub shards: u32,
    pub inflight_per_shard_max: u32,
    pub idempotency_records_per_shard_max: usize,
    pub idempotency_retention_ms: i64,
    /// Records between two snapshots of a shard.
    pub snapshot_every_records: u64,
}

impl NodeConfig {
    pub fn embedded(shards: u32) -> Self {
        NodeConfig {
            node_name: "local".to_string(),
            shards,
            inflight_per_shard_max: INFLIGHT_PER_SHARD_MAX_DEFAULT,
            idempotency_records_per_shard_max: RECORDS_PER_SHARD_MAX_DEFAULT,
            idempotency_retention_ms: RETENTION_MS_DEFAULT,
            snapshot_every_records: SNAPSHOT_EVERY_RECORDS_DEFAULT,
        }
    }
}

/// Why the engine did not answer with a domain outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    Domain(DomainError),
    /// The shard's in-flight bound was reached.
    Overloaded {
        shard: u32,
    },
    /// The shard is not served here (owned by another node, its actor is gone, its journal
    /// failed, or its log could not be recovered).
    Unavailable {
        shard: u32,
    },
    /// The shard is loading its snapshot and log; it serves once that is done.
    Recovering {
        shard: u32,
    },
}

impl From<DomainError> for EngineError {
    fn from(e: DomainError) -> Self {
        EngineError::Domain(e)
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Domain(e) => e.fmt(f),
            EngineError::Overloaded { shard } => {
                write!(f, "shard {shard} is overloaded; retry shortly")
            }
            EngineError::Unavailable { shard } => {
                write!(f, "shard {shard} is not available on this node")
            }
            EngineError::Recovering { shard } => {
                write!(f, "shard {shard} is recovering its log; retry shortly")
            }
        }
    }
}

impl std::error::Error for EngineError {}

struct ShardHandle {
    actor: ActorRef<ShardMsg>,
    inflight: AtomicU32,
    phase: watch::Receiver<ShardPhase>,
}

/// Releases one in-flight slot of a shard when dropped.
struct InflightGuard<'a>(&'a AtomicU32);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A citizen's request for an appointment (API.md `POST /v1/appointments`), validated.
#[derive(Debug, Clone)]
pub struct BookRequest {
    pub clinic_id: String,
    pub slot_id: String,
    pub vaccine: String,
    pub citizen_id: String,
    pub hold_ms: i64,
}

/// One shard as the operator endpoint shows it.
#[derive(Debug, Clone)]
pub struct ShardStatus {
    pub shard: u32,
    pub node: String,
    /// `Recovering`, `Ready`, or `Failed` (its log could not be replayed).
    pub phase: ShardPhase,
    /// Whether the shard answered (its counts are known).
    pub ready: bool,
    pub counts: ShardCounts,
    pub runtime: RuntimeCounts,
    pub inflight: u32,
}

pub struct Node {
    config: NodeConfig,
    ring: Ring,
    clock: Arc<dyn Clock>,
    shards: Vec<ShardHandle>,
    journal: Arc<dyn Journal>,
}

impl Node {
    /// Starts a node that keeps nothing on disk (tests and benchmarks of the engine alone).
    pub async fn start(
        config: NodeConfig,
        ring: Ring,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Node>, String> {
        Node::start_with_journal(config, ring, clock, Arc::new(NoJournal)).await
    }

    /// Starts one actor per shard this node owns and waits until every one has recovered
    /// from `journal`; an error names each shard that could not.
    pub async fn start_with_journal(
        config: NodeConfig,
        ring: Ring,
        clock: Arc<dyn Clock>,
        journal: Arc<dyn Journal>,
    ) -> Result<Arc<Node>, String> {
        let node = Node::spawn_with_journal(config, ring, clock, journal).await?;
        node.wait_recovered().await?;
        Ok(node)
    }

    /// Starts one actor per shard this node owns and returns at once: each shard recovers
    /// from `journal` in its own task, and answers `Recovering` until it has. See
    /// [`Node::wait_recovered`] and [`Node::is_ready`].
    pub async fn spawn_with_journal(
        config: NodeConfig,
        ring: Ring,
        clock: Arc<dyn Clock>,
        journal: Arc<dyn Journal>,
    ) -> Result<Arc<Node>, String> {
        if config.shards == 0 || config.shards > SHARDS_MAX {
            return Err(format!(
                "--shards must be 1..={SHARDS_MAX}, got {}",
                config.shards
            ));
        }
        if !ring.nodes().contains(&config.node_name) {
            return Err(format!("node {} is not in the ring", config.node_name));
        }
        let mut shards: Vec<ShardHandle> = Vec::with_capacity(config.shards as usize);
        for shard in 0..config.shards {
            let (phase_tx, phase_rx) = watch::channel(ShardPhase::Recovering);
            let args = ShardArgs {
                shard,
                clock: clock.clone(),
                idempotency_records_max: config.idempotency_records_per_shard_max,
                idempotency_retention_ms: config.idempotency_retention_ms,
                journal: journal.clone(),
                snapshot_every_records: config.snapshot_every_records,
                phase: Arc::new(phase_tx),
            };
            let spawned = Actor::spawn(None, ShardActor, args).await;
            let (actor, _join) = match spawned {
                Ok(spawned) => spawned,
                Err(e) => {
                    for started in &shards {
                        started.actor.stop(None);
                    }
                    return Err(format!("shard {shard} failed to start: {e}"));
                }
            };
            shards.push(ShardHandle {
                actor,
                inflight: AtomicU32::new(0),
                phase: phase_rx,
            });
        }
        Ok(Arc::new(Node {
            config,
            ring,
            clock,
            shards,
            journal,
        }))
    }

    /// Waits until no shard is recovering any more. `Err` lists the shards whose log could
    /// not be replayed (they stay unavailable; the others serve).
    pub async fn wait_recovered(&self) -> Result<(), String> {
        let mut failures = Vec::new();
        for (shard, handle) in self.shards.iter().enumerate() {
            let mut phase = handle.phase.clone();
            let settled = phase
                .wait_for(|p| *p != ShardPhase::Recovering)
                .await
                .map(|p| p.clone());
            match settled {
                Ok(ShardPhase::Failed(reason)) => failures.push(reason),
                Ok(_) => {}
                Err(_) => failures.push(format!("shard {shard} stopped while recovering")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// Stops every shard actor (their timer tasks end with them).
    pub fn stop(&self) {
        for shard in &self.shards {
            shard.actor.stop(None);
        }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn shards(&self) -> u32 {
        self.config.shards
    }

    pub fn now_ms(&self) -> UnixMs {
        self.clock.now_ms()
    }

    /// True once every shard this node owns has recovered, and while its journal works.
    pub fn is_ready(&self) -> bool {
        self.journal.failed().is_none()
            && self
                .shards
                .iter()
                .all(|h| *h.phase.borrow() == ShardPhase::Ready)
    }

    /// Why the journal takes no more writes, if it does not.
    pub fn journal_failure(&self) -> Option<String> {
        self.journal.failed()
    }

    /// The phase of `shard` (`None`: no such shard here).
    pub fn shard_phase(&self, shard: u32) -> Option<ShardPhase> {
        self.shards
            .get(shard as usize)
            .map(|h| h.phase.borrow().clone())
    }

    /// Snapshots every ready shard (graceful shutdown), each answered once stored. A shard
    /// that is not ready is skipped: its log is what it has. `Err` names every shard that
    /// could not snapshot (their logs are kept, so nothing is lost).
    pub async fn snapshot_all(&self) -> Result<(), String> {
        let mut failures = Vec::new();
        for shard in 0..self.config.shards {
            if self.shard_phase(shard) != Some(ShardPhase::Ready) {
                continue;
            }
            if let Err(e) = self
                .ask(shard, false, ShardMsg::SnapshotNow)
                .await
                .and_then(|r| r)
            {
                failures.push(format!("shard {shard}: {e}"));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    pub fn clinic_shard(&self, clinic_id: &str) -> u32 {
        shard_of(clinic_id, self.config.shards)
    }

    pub fn citizen_shard(&self, citizen_id: &str) -> u32 {
        shard_of(citizen_id, self.config.shards)
    }

    /// Idempotency records live with the caller (`sub`), not with a clinic.
    pub fn caller_shard(&self, caller: &str) -> u32 {
        shard_of(caller, self.config.shards)
    }

    pub fn parse_appointment_id(&self, id: &str) -> Option<AppointmentId> {
        AppointmentId::parse(id, self.config.shards)
    }

    /// The local handle of `shard`, if the ring says this node owns it and it has recovered.
    fn route(&self, shard: u32) -> Result<&ShardHandle, EngineError> {
        if self.ring.owner(shard) != self.config.node_name {
            return Err(EngineError::Unavailable { shard });
        }
        let handle = self
            .shards
            .get(shard as usize)
            .ok_or(EngineError::Unavailable { shard })?;
        // After a failed flush, memory may hold changes the log does not: answer nothing
        // (reads included) until a restart recovers from the log.
        if self.journal.failed().is_some() {
            return Err(EngineError::Unavailable { shard });
        }
        match *handle.phase.borrow() {
            ShardPhase::Ready => Ok(handle),
            ShardPhase::Recovering => Err(EngineError::Recovering { shard }),
            ShardPhase::Failed(_) => Err(EngineError::Unavailable { shard }),
        }
    }

    fn admit(&self, shard: u32) -> Result<(&ShardHandle, InflightGuard<'_>), EngineError> {
        let handle = self.route(shard)?;
        let before = handle.inflight.fetch_add(1, Ordering::AcqRel);
        let guard = InflightGuard(&handle.inflight);
        if before >= self.config.inflight_per_shard_max {
            return Err(EngineError::Overloaded { shard });
        }
        Ok((handle, guard))
    }

    /// Sends a request to `shard` and waits for its answer, within the shard's bound.
    async fn ask<T: Send + 'static>(
        &self,
        shard: u32,
        bounded: bool,
        build: impl FnOnce(RpcReplyPort<T>) -> ShardMsg,
    ) -> Result<T, EngineError> {
        let (handle, _guard) = if bounded {
            let (h, g) = self.admit(shard)?;
            (h, Some(g))
        } else {
            (self.route(shard)?, None)
        };
        match handle.actor.call(build, None).await {
            Ok(ractor::rpc::CallResult::Success(answer)) => Ok(answer),
            _ => Err(EngineError::Unavailable { shard }),
        }
    }

    pub async fn exec(&self, shard: u32, command: Command) -> Result<Output, EngineError> {
        self.ask(shard, true, |reply| ShardMsg::Exec(command, reply))
            .await?
    }

    /// Applies `command` and answers at once, with a [`Durable`] to wait on before the
    /// outcome may be told to anyone (a refusal too: it depends on what the shard applied
    /// before it).
    pub async fn exec_deferred(
        &self,
        shard: u32,
        command: Command,
    ) -> Result<Applied, EngineError> {
        self.ask(shard, true, |reply| ShardMsg::ExecDeferred(command, reply))
            .await?
    }

    /// [`Node::exec_deferred`] for compensation, which must not be refused by the bound it
    /// protects: the saga that needs it already holds a slot of work, so these are bounded
    /// by the sagas in flight.
    async fn exec_compensation_deferred(
        &self,
        shard: u32,
        command: Command,
    ) -> Result<Applied, EngineError> {
        self.ask(shard, false, |reply| ShardMsg::ExecDeferred(command, reply))
            .await?
    }

    /// Many commands to one shard in one message.
    pub async fn exec_batch(
        &self,
        shard: u32,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Output, DomainError>>, EngineError> {
        self.ask(shard, true, |reply| ShardMsg::Batch(commands, reply))
            .await?
    }

    /// Runs `read` on the shard's state, ordered after every write sent before it.
    pub async fn read<T: Send + 'static>(
        &self,
        shard: u32,
        read: impl FnOnce(&ShardRuntime) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (handle, _guard) = self.admit(shard)?;
        let (tx, rx) = oneshot::channel();
        let message = ShardMsg::Read(Box::new(move |rt| {
            let _ = tx.send(read(rt));
        }));
        handle
            .actor
            .cast(message)
            .map_err(|_| EngineError::Unavailable { shard })?;
        rx.await.map_err(|_| EngineError::Unavailable { shard })
    }

    /// The same command to every shard (the vaccine catalogue lives in each). Answers once
    /// all have applied it, so a following request on any shard sees it.
    pub async fn broadcast(&self, command: Command) -> Result<Output, EngineError> {
        let mut answers = Vec::with_capacity(self.shards.len());
        for shard in 0..self.config.shards {
            answers.push(self.exec(shard, command.clone()));
        }
        let mut first = None;
        for answer in answers {
            let output = answer.await?;
            first.get_or_insert(output);
        }
        Ok(first.unwrap_or(Output::Ack))
    }

    /// Runs `read` on every shard and gathers the answers.
    pub async fn read_all<T: Send + 'static>(
        &self,
        read: impl Fn(&ShardRuntime) -> T + Send + Sync + Clone + 'static,
    ) -> Result<Vec<T>, EngineError> {
        let pending: Vec<_> = (0..self.config.shards)
            .map(|shard| self.read(shard, read.clone()))
            .collect();
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(p.await?);
        }
        Ok(out)
    }

    pub async fn get_appointment(
        &self,
        id: AppointmentId,
    ) -> Result<Option<AppointmentView>, EngineError> {
        self.read(id.shard, move |rt| rt.state().get_appointment(id.seq))
            .await
    }

    /// A citizen's appointments from every shard, oldest first.
    pub async fn citizen_appointments(
        &self,
        citizen_id: &str,
    ) -> Result<Vec<AppointmentView>, EngineError> {
        let citizen: Arc<str> = citizen_id.into();
        let per_shard = self
            .read_all(move |rt| rt.state().citizen_appointments(&citizen))
            .await?;
        let mut all: Vec<AppointmentView> = per_shard.into_iter().flatten().collect();
        all.sort_by_key(|a| (a.created_at_ms, a.id));
        Ok(all)
    }

    pub async fn shard_status(&self) -> Vec<ShardStatus> {
        let mut out = Vec::with_capacity(self.shards.len());
        for shard in 0..self.config.shards {
            let node = self.ring.owner(shard).to_string();
            let inflight = self
                .shards
                .get(shard as usize)
                .map_or(0, |h| h.inflight.load(Ordering::Acquire));
            let phase = self
                .shard_phase(shard)
                .unwrap_or_else(|| ShardPhase::Failed("not on this node".into()));
            // A recovering shard is not asked: it answers once recovered.
            let answer = match phase {
                ShardPhase::Ready => {
                    self.read(shard, |rt| (rt.state().counts(), rt.runtime_counts()))
                        .await
                }
                _ => Err(EngineError::Unavailable { shard }),
            };
            let (ready, counts, runtime) = match answer {
                Ok((counts, runtime)) => (true, counts, runtime),
                Err(_) => (false, ShardCounts::default(), RuntimeCounts::default()),
            };
            out.push(ShardStatus {
                shard,
                node,
                phase,
                ready,
                counts,
                runtime,
                inflight,
            });
        }
        out
    }

    // ---- idempotency ---------------------------------------------------------------

    /// First look at an Idempotency-Key; waits (without a timeout of its own) while another
    /// request with the same key and body runs, and then answers with its response.
    pub async fn idempotency_begin(
        &self,
        caller: &str,
        key: &str,
        fingerprint: Fingerprint,
    ) -> Result<IdemOutcome, EngineError> {
        let shard = self.caller_shard(caller);
        let idem_key = IdemKey {
            caller: caller.into(),
            key: key.into(),
        };
        self.ask(shard, true, |reply| {
            ShardMsg::IdemBegin(idem_key, fingerprint, reply)
        })
        .await
    }

    /// Stores the response of a request that began with `Proceed` (or forgets the key when
    /// `response` is `None`) and, once stored, answers every waiter. Answered as soon as the
    /// record is applied, with a [`Durable`] for its storage: the caller waits for it
    /// together with the events of the answer it stores (one group commit instead of two),
    /// so a replay after a crash finds it. Not bounded: it ends work already admitted, and a
    /// refused finish would leave waiters hanging.
    pub async fn idempotency_finish_deferred(
        &self,
        caller: &str,
        key: &str,
        response: Option<StoredResponse>,
    ) -> Result<Durable, EngineError> {
        let shard = self.caller_shard(caller);
        let idem_key = IdemKey {
            caller: caller.into(),
            key: key.into(),
        };
        self.ask(shard, false, |reply| {
            ShardMsg::IdemFinish(idem_key, response, reply)
        })
        .await?
    }

    // ---- the booking saga ----------------------------------------------------------

    /// Books an appointment as a saga across the citizen's shard and the clinic's shard:
    ///
    /// 1. citizen step (citizen shard): today it reads the citizen's record; the citizen-saga
    ///    work turns it into the claim that enforces one active appointment per citizen, with
    ///    its own compensation (release the claim).
    /// 2. hold (clinic shard): seat and dose in one single-writer step, with a deadline.
    /// 3. checks while held: the eligibility rules.
    /// 4. answer. On a failure after the hold, compensate in reverse: reject the hold, which
    ///    returns the seat and the dose.
    ///
    /// Every step is idempotent by appointment id, so a retried compensation converges.
    pub async fn book(&self, request: BookRequest) -> Result<AppointmentView, EngineError> {
        let (outcome, durable) = self.book_deferred(request).await;
        for d in durable {
            d.wait().await?;
        }
        outcome
    }

    /// [`Node::book`] without waiting for the log: the outcome, and what must be durable
    /// before it may be told (the hold, a refusal's barrier, a compensation).
    pub async fn book_deferred(
        &self,
        request: BookRequest,
    ) -> (Result<AppointmentView, EngineError>, Vec<Durable>) {
        let clinic_shard = self.clinic_shard(&request.clinic_id);
        let citizen_shard = self.citizen_shard(&request.citizen_id);
        let mut durable = Vec::with_capacity(2);

        // Step 1: the citizen.
        let citizen_id: Arc<str> = request.citizen_id.as_str().into();
        let citizen = match self
            .read(citizen_shard, move |rt| rt.state().citizen(&citizen_id))
            .await
        {
            Ok(citizen) => citizen,
            Err(e) => return (Err(e), durable),
        };

        // Step 2: the hold.
        let hold = Command::Hold {
            clinic_id: request.clinic_id,
            slot_id: request.slot_id,
            vaccine: request.vaccine.clone(),
            citizen_id: request.citizen_id,
            hold_ms: request.hold_ms,
            rebook_priority: false,
        };
        let (appointment, context) = match self.exec_deferred(clinic_shard, hold).await {
            Err(e) => return (Err(e), durable),
            Ok((outcome, stored)) => {
                durable.push(stored);
                match outcome {
                    Ok(Output::Held(appointment, context)) => (appointment, context),
                    Ok(other) => unreachable!("a hold answers Held, got {other:?}"),
                    Err(refused) => return (Err(EngineError::Domain(refused)), durable),
                }
            }
        };

        // Step 3: checks while the seat and the dose are held.
        let reasons = crate::eligibility::check(&request.vaccine, citizen.as_deref(), &context);
        if reasons.is_empty() {
            return (Ok(appointment), durable);
        }

        // Compensation, in reverse.
        let reject = Command::Reject {
            seq: appointment.id.seq,
            reasons: reasons.clone(),
        };
        match self.exec_compensation_deferred(clinic_shard, reject).await {
            Ok((_, stored)) => durable.push(stored),
            // The hold still expires at its deadline, which returns the seat and the dose.
            Err(e) => {
                tracing::warn!(appointment = %appointment.id, error = %e, "rejecting an ineligible hold failed; it will expire")
            }
        }
        (
            Err(EngineError::Domain(DomainError::NotEligible { reasons })),
            durable,
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}
