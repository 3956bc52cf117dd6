//! The node: the shards one process owns, reached through [`ShardClient`]s, the bound in
//! front of each, routing through the ring, start and stop. The booking saga is in
//! [`crate::saga`].
//!
//! Every request names a shard (a clinic's, a citizen's, a caller's or an appointment's) and
//! goes through [`Node::route`], which asks the ring who owns it. A node spawns only the shards
//! the ring gives it; a shard owned elsewhere answers `Unavailable` until remote clients land,
//! never a guess.
//!
//! ractor mailboxes are unbounded and their length is not public, so the bound is ours: an
//! in-flight counter per shard, taken before a call is sent and released when its answer
//! arrives. At `inflight_per_shard_max` a request is refused with `Overloaded` (HTTP 503 with
//! Retry-After) instead of queueing without end.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{broadcast, watch};

use crate::actor::{Applied, BeginAnswer, ShardArgs, ShardPhase, SNAPSHOT_EVERY_RECORDS_DEFAULT};
use crate::client::{LocalShard, ShardClient, SHARD_STOP_TIMEOUT};
use crate::clock::{Clock, UnixMs};
use crate::command::{Command, Query, QueryAnswer, SettleClaims, TakeClaim};
use crate::error::{DomainError, EngineError, JournalError, StartError, WriteRefusal};
use crate::external::{DependencyStatus, ExternalCheck, OutagePolicy};
use crate::hash::shard_of;
use crate::idempotency::{
    Fingerprint, IdemKey, IdemOutcome, StoredResponse, RECORDS_PER_SHARD_MAX_DEFAULT,
    RETENTION_MS_DEFAULT,
};
use crate::ids::AppointmentId;
use crate::journal::{Durable, Journal, NoJournal};
use crate::notices::{Settler, SettlerInbox};
use crate::publish::{Published, Publisher, Recorder};
use crate::ring::Ring;
use crate::shard::{ShardConfig, NO_SHOW_GRACE_MS_DEFAULT, NO_SHOW_GRACE_MS_MAX};
use crate::view::{Output, RuntimeCounts, ShardCounts};
use crate::waitlist::{OfferInbox, Offerer, Passes, WAITLIST_PER_SLOT_MAX_DEFAULT};

/// Default shard count (`--shards`).
pub const SHARDS_DEFAULT: u32 = 64;
/// Largest shard count a data directory may be created with.
pub const SHARDS_MAX: u32 = 4096;
/// Requests in flight per shard. 256 concurrent clients can have at most 256 requests in
/// flight in total, so an ordinary rush stays far below this; reaching it means real overload.
pub const INFLIGHT_PER_SHARD_MAX_DEFAULT: u32 = 8192;
/// What a refused request is told to wait before retrying.
pub const RETRY_AFTER_S: u32 = 1;
/// The hold a waitlist offer makes when the node is not told (`--hold-ttl`'s default).
pub const WAITLIST_HOLD_MS_DEFAULT: i64 = 300_000;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_name: String,
    pub shards: u32,
    pub inflight_per_shard_max: u32,
    pub idempotency_records_per_shard_max: usize,
    pub idempotency_retention_ms: i64,
    /// Records between two snapshots of a shard.
    pub snapshot_every_records: u64,
    /// `--waitlist-max`: most entries one slot's waitlist holds.
    pub waitlist_per_slot_max: usize,
    /// The hold a waitlist offer makes (`--hold-ttl`).
    pub waitlist_hold_ms: i64,
    /// `--no-show-grace`: how long after its slot ends a CONFIRMED appointment becomes
    /// NO_SHOW (0..=`NO_SHOW_GRACE_MS_MAX`; a start with more is refused).
    pub no_show_grace_ms: i64,
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
            waitlist_per_slot_max: WAITLIST_PER_SLOT_MAX_DEFAULT,
            waitlist_hold_ms: WAITLIST_HOLD_MS_DEFAULT,
            no_show_grace_ms: NO_SHOW_GRACE_MS_DEFAULT,
        }
    }
}

/// A shard this node serves: its client and the bound in front of it.
struct Routed {
    client: Box<dyn ShardClient>,
    inflight: AtomicU32,
}

/// Releases one in-flight slot of a shard when dropped.
struct InflightGuard<'a>(&'a AtomicU32);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a call counts against the shard's in-flight bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// New work: refused at the bound.
    Admit,
    /// Work that ends work already admitted (a compensation, storing an answer, a
    /// snapshot): refusing it would leave the first half hanging.
    Exempt,
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
    /// Indexed by shard; `None` for shards the ring gives to other nodes.
    shards: Vec<Option<Routed>>,
    journal: Arc<dyn Journal>,
    publisher: Arc<Publisher>,
    /// The external eligibility check and its outage policy, when configured.
    external: OnceLock<(Arc<dyn ExternalCheck>, OutagePolicy)>,
    /// Set once the claims were reconciled after recovery (the node is ready only then);
    /// the lock makes concurrent waiters reconcile once.
    reconciled: AtomicBool,
    reconciling: tokio::sync::Mutex<()>,
    /// Claim notices not yet delivered to the citizens' shards.
    notices: Arc<std::sync::atomic::AtomicUsize>,
    /// Turns `true` once the claims are reconciled (the offer task waits for it).
    reconciled_tx: watch::Sender<bool>,
    /// Where slots with room and waiting citizens go (the offer task, [`crate::waitlist`]).
    offerer: Offerer,
    /// The offer passes running.
    pub(crate) passes: Passes,
}

impl Node {
    /// Starts a node that keeps nothing on disk (tests and benchmarks of the engine alone).
    pub async fn start(
        config: NodeConfig,
        ring: Ring,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Node>, StartError> {
        Node::start_with_journal(config, ring, clock, Arc::new(NoJournal)).await
    }

    /// Starts the shards this node owns and waits until every one has recovered from
    /// `journal`; an error names each shard that could not.
    pub async fn start_with_journal(
        config: NodeConfig,
        ring: Ring,
        clock: Arc<dyn Clock>,
        journal: Arc<dyn Journal>,
    ) -> Result<Arc<Node>, StartError> {
        let node = Node::spawn_with_journal(config, ring, clock, journal).await?;
        node.wait_recovered().await?;
        Ok(node)
    }

    /// Starts one actor per shard the ring gives this node and returns at once: each shard
    /// recovers from `journal` in its own task, and answers `Recovering` until it has. See
    /// [`Node::wait_recovered`] and [`Node::is_ready`].
    pub async fn spawn_with_journal(
        config: NodeConfig,
        ring: Ring,
        clock: Arc<dyn Clock>,
        journal: Arc<dyn Journal>,
    ) -> Result<Arc<Node>, StartError> {
        Node::spawn_recorded(config, ring, clock, journal, None).await
    }

    /// [`Node::spawn_with_journal`], with every durable change also handed to `recorder`
    /// (the durable event feed and audit chain, [`crate::publish::Recorder`]).
    pub async fn spawn_recorded(
        config: NodeConfig,
        ring: Ring,
        clock: Arc<dyn Clock>,
        journal: Arc<dyn Journal>,
        recorder: Option<Arc<dyn Recorder>>,
    ) -> Result<Arc<Node>, StartError> {
        if config.shards == 0 || config.shards > SHARDS_MAX {
            return Err(StartError::ShardCount {
                shards: config.shards,
                max: SHARDS_MAX,
            });
        }
        if !(0..=NO_SHOW_GRACE_MS_MAX).contains(&config.no_show_grace_ms) {
            return Err(StartError::NoShowGrace {
                grace_ms: config.no_show_grace_ms,
                max_ms: NO_SHOW_GRACE_MS_MAX,
            });
        }
        if !ring.nodes().contains(&config.node_name) {
            return Err(StartError::NotInRing {
                node: config.node_name.clone(),
            });
        }
        let publisher = Arc::new(match recorder {
            Some(recorder) => Publisher::with_recorder(recorder),
            None => Publisher::default(),
        });
        let (settler, inbox) = Settler::channel();
        let (offerer, offers) = Offerer::channel();
        let mut shards: Vec<Option<Routed>> = Vec::with_capacity(config.shards as usize);
        for shard in 0..config.shards {
            if ring.owner(shard) != config.node_name {
                shards.push(None);
                continue;
            }
            let (phase_tx, _) = watch::channel(ShardPhase::Recovering);
            let args = ShardArgs {
                shard,
                clock: clock.clone(),
                idempotency_records_max: config.idempotency_records_per_shard_max,
                idempotency_retention_ms: config.idempotency_retention_ms,
                journal: journal.clone(),
                publisher: publisher.clone(),
                snapshot_every_records: config.snapshot_every_records,
                phase: Arc::new(phase_tx),
                settler: Some(settler.clone()),
                offerer: Some(offerer.clone()),
                config: ShardConfig {
                    no_show_grace_ms: config.no_show_grace_ms,
                },
            };
            match LocalShard::spawn(args).await {
                Ok(client) => shards.push(Some(Routed {
                    client: Box::new(client),
                    inflight: AtomicU32::new(0),
                })),
                Err(e) => {
                    for started in shards.iter().flatten() {
                        started.client.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        let notices = settler.backlog();
        drop(settler);
        let node = Arc::new(Node {
            config,
            ring,
            clock,
            shards,
            journal,
            publisher,
            external: OnceLock::new(),
            reconciled: AtomicBool::new(false),
            reconciling: tokio::sync::Mutex::new(()),
            notices,
            reconciled_tx: watch::channel(false).0,
            offerer,
            passes: Passes::default(),
        });
        node.spawn_tasks(inbox, offers);
        Ok(node)
    }

    /// The node-level tasks: the settler (claim notices) and the offer task (waitlists).
    /// Each holds the node weakly and ends with it.
    fn spawn_tasks(self: &Arc<Self>, inbox: SettlerInbox, offers: OfferInbox) {
        tokio::spawn(offers.run(Arc::downgrade(self)));
        let weak = Arc::downgrade(self);
        tokio::spawn(inbox.run(move |batch| {
            let node = weak.upgrade();
            async move {
                match node {
                    Some(node) => {
                        node.settle(batch).await;
                        true
                    }
                    None => false,
                }
            }
        }));
    }

    fn served(&self) -> impl Iterator<Item = &Routed> {
        self.shards.iter().flatten()
    }

    /// The shards this node serves.
    pub fn served_shards(&self) -> impl Iterator<Item = u32> + '_ {
        self.served().map(|r| r.client.shard())
    }

    /// Waits until no shard is recovering any more, then reconciles the claims once (the
    /// node is ready only after that). `Err` lists the shards whose log could not be
    /// replayed (they stay unavailable; the others serve).
    pub async fn wait_recovered(&self) -> Result<(), StartError> {
        let mut failures = Vec::new();
        for routed in self.served() {
            match routed.client.recovered().await {
                ShardPhase::Failed(reason) => failures.push(reason),
                // It recovered, then a write of it failed: the node's failure says why.
                ShardPhase::Ready | ShardPhase::Stopped(_) => {}
                ShardPhase::Recovering => {
                    return Err(StartError::Stopped {
                        shard: routed.client.shard(),
                    })
                }
            }
        }
        if !failures.is_empty() {
            return Err(StartError::Recovery(failures));
        }
        self.reconcile_after_recovery().await
    }

    /// Settles every claim against its appointment once, after recovery (see
    /// [`crate::reconcile`]); `Err` when a shard did not answer.
    async fn reconcile_after_recovery(&self) -> Result<(), StartError> {
        let _once = self.reconciling.lock().await;
        if self.reconciled.load(Ordering::Acquire) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let result = match self.reconcile_claims().await {
            Ok(changed) => {
                tracing::info!(
                    claims = changed,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "claims reconciled after recovery"
                );
                Ok(())
            }
            Err(e) => Err(StartError::Reconcile(e.to_string())),
        };
        self.reconciled.store(result.is_ok(), Ordering::Release);
        if result.is_ok() {
            self.reconciled_tx.send_replace(true);
            // Offers are not journaled: every slot with room and waiting citizens gets its
            // pass now, so no seat stays idle while someone waits.
            if let Err(e) = self.offer_everywhere().await {
                tracing::warn!(error = %e, "waitlist offers after recovery not started");
            }
        }
        result
    }

    /// True once the claims are reconciled after recovery: bookings wait for it (saga.rs).
    pub(crate) fn is_reconciled(&self) -> bool {
        self.reconciled.load(Ordering::Acquire)
    }

    /// Resolves once the claims are reconciled after recovery.
    pub(crate) async fn wait_reconciled(&self) {
        let mut rx = self.reconciled_tx.subscribe();
        // `Err`: the node is gone; the offer task then ends at its next receive.
        let _ = rx.wait_for(|done| *done).await;
    }

    pub(crate) fn offerer(&self) -> &Offerer {
        &self.offerer
    }

    /// Stops every shard this node serves: each handles what it already received (so every
    /// answer in flight still leaves), then exits; resolves once all are gone. Their timer
    /// tasks end with them. The journal can be closed after this. Waits at most
    /// [`SHARD_STOP_TIMEOUT`] for all of them together.
    pub async fn stop(&self) {
        // Every shard is told at once; then they are awaited together under one bound.
        let stopping: Vec<_> = self.served().map(|r| r.client.stop()).collect();
        let all = async {
            for stopped in stopping {
                stopped.await;
            }
        };
        if tokio::time::timeout(SHARD_STOP_TIMEOUT, all).await.is_err() {
            tracing::warn!(
                timeout_s = SHARD_STOP_TIMEOUT.as_secs(),
                "not every shard stopped in time; they are left behind (their logs are complete)"
            );
        }
    }

    /// Makes every booking ask `check` while its seat and dose are held (once, before
    /// serving; a second call is refused and returns `false`).
    pub fn set_external_check(&self, check: Arc<dyn ExternalCheck>, policy: OutagePolicy) -> bool {
        self.external.set((check, policy)).is_ok()
    }

    pub(crate) fn external_check(&self) -> Option<&(Arc<dyn ExternalCheck>, OutagePolicy)> {
        self.external.get()
    }

    /// The node's external dependencies and their breakers, for operators.
    pub fn dependencies(&self) -> Vec<DependencyStatus> {
        self.external
            .get()
            .map(|(c, _)| c.status())
            .into_iter()
            .collect()
    }

    /// Claim notices of durable changes not yet delivered to the citizens' shards (0 once
    /// every claim is in step with its appointment).
    pub fn notices_in_flight(&self) -> usize {
        self.notices.load(Ordering::Acquire)
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

    /// Every change of this node's shards, once durable, names resolved (see
    /// [`crate::publish`] for what happens to a subscriber that falls behind).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.publisher.subscribe()
    }

    /// True once every shard this node owns has recovered, and while its journal takes
    /// writes (not failed, its disk neither below its reserve nor read-only).
    pub fn is_ready(&self) -> bool {
        self.journal.write_refusal().is_none()
            && self.reconciled.load(Ordering::Acquire)
            && self.served().all(|r| r.client.phase() == ShardPhase::Ready)
    }

    /// Why the journal takes no more writes, if it does not.
    pub fn journal_failure(&self) -> Option<JournalError> {
        self.journal.failed()
    }

    /// Why new writes are refused now, if they are (the disk full or read-only, the journal
    /// failed); reads are served meanwhile.
    pub fn write_refusal(&self) -> Option<WriteRefusal> {
        self.journal.write_refusal()
    }

    /// The phase of `shard` (`None`: not served by this node).
    pub fn shard_phase(&self, shard: u32) -> Option<ShardPhase> {
        self.routed(shard).map(|r| r.client.phase())
    }

    fn routed(&self, shard: u32) -> Option<&Routed> {
        self.shards.get(shard as usize)?.as_ref()
    }

    /// Snapshots every ready shard (graceful shutdown), each answered once stored. A shard
    /// that is not ready is skipped: its log is what it has. `Err` names every shard that
    /// could not snapshot (their logs are kept, so nothing is lost).
    pub async fn snapshot_all(&self) -> Result<(), Vec<(u32, EngineError)>> {
        let mut failures = Vec::new();
        for routed in self.served() {
            let shard = routed.client.shard();
            if routed.client.phase() != ShardPhase::Ready {
                continue;
            }
            let taken = match self.route(shard, Bound::Exempt) {
                Ok((client, _guard)) => client.snapshot().await,
                Err(e) => Err(e),
            };
            if let Err(e) = taken {
                failures.push((shard, e));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
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

    /// The client of `shard`, if this node serves it and it is ready, with a slot of its
    /// in-flight bound when the call is `Admit`.
    fn route(
        &self,
        shard: u32,
        bound: Bound,
    ) -> Result<(&dyn ShardClient, Option<InflightGuard<'_>>), EngineError> {
        if self.ring.owner(shard) != self.config.node_name {
            return Err(EngineError::Unavailable { shard });
        }
        let routed = self
            .routed(shard)
            .ok_or(EngineError::Unavailable { shard })?;
        // After a failed write, a shard whose write was in flight is `Stopped` (its memory
        // may be ahead of the log); the others hold exactly what the log holds and go on
        // serving reads, unless the journal acknowledged writes before their flush (then
        // any of them may be ahead, and nothing is served until a restart).
        if self.journal.failed().is_some() && !self.journal.acknowledged_are_durable() {
            return Err(EngineError::not_serving(
                shard,
                self.journal.write_refusal(),
            ));
        }
        match routed.client.phase() {
            ShardPhase::Ready => {}
            ShardPhase::Recovering => return Err(EngineError::Recovering { shard }),
            ShardPhase::Failed(_) | ShardPhase::Stopped(_) => {
                return Err(EngineError::not_serving(
                    shard,
                    self.journal.write_refusal(),
                ))
            }
        }
        if bound == Bound::Exempt {
            return Ok((routed.client.as_ref(), None));
        }
        let before = routed.inflight.fetch_add(1, Ordering::AcqRel);
        let guard = InflightGuard(&routed.inflight);
        if before >= self.config.inflight_per_shard_max {
            return Err(EngineError::Overloaded { shard });
        }
        Ok((routed.client.as_ref(), Some(guard)))
    }

    // ---- commands ------------------------------------------------------------------

    pub async fn exec(&self, shard: u32, command: Command) -> Result<Output, EngineError> {
        let (client, _guard) = self.route(shard, Bound::Admit)?;
        client.execute(command).await
    }

    /// Applies `command` and answers at once, with a [`Durable`] to wait on before the
    /// outcome may be told to anyone (a refusal too: it depends on what the shard applied
    /// before it).
    pub async fn exec_deferred(
        &self,
        shard: u32,
        command: Command,
    ) -> Result<Applied, EngineError> {
        let (client, _guard) = self.route(shard, Bound::Admit)?;
        client.execute_deferred(command).await
    }

    /// [`Node::exec_deferred`] for compensation, which must not be refused by the bound it
    /// protects: the saga that needs it already holds a slot of work, so these are bounded
    /// by the sagas in flight.
    pub(crate) async fn exec_compensation_deferred(
        &self,
        shard: u32,
        command: Command,
    ) -> Result<Applied, EngineError> {
        let (client, _guard) = self.route(shard, Bound::Exempt)?;
        client.execute_deferred(command).await
    }

    /// [`Node::exec`] for work that ends work already admitted (see
    /// [`Node::exec_compensation_deferred`]).
    pub(crate) async fn exec_compensation(
        &self,
        shard: u32,
        command: Command,
    ) -> Result<Output, EngineError> {
        let (client, _guard) = self.route(shard, Bound::Exempt)?;
        client.execute(command).await
    }

    /// Many commands to one shard in one message.
    pub async fn exec_batch(
        &self,
        shard: u32,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Output, DomainError>>, EngineError> {
        let (client, _guard) = self.route(shard, Bound::Admit)?;
        client.execute_batch(commands).await
    }

    /// The same command to every shard (the vaccine catalogue lives in each). Answers once
    /// all have applied it, so a following request on any shard sees it.
    pub async fn broadcast(&self, command: Command) -> Result<Output, EngineError> {
        let answers: Vec<_> = (0..self.config.shards)
            .map(|shard| self.exec(shard, command.clone()))
            .collect();
        let mut first = None;
        for answer in answers {
            let output = answer.await?;
            first.get_or_insert(output);
        }
        Ok(first.unwrap_or(Output::Ack))
    }

    // ---- queries -------------------------------------------------------------------

    /// Reads `shard`, after every write sent to it before.
    pub async fn query(&self, shard: u32, query: Query) -> Result<QueryAnswer, EngineError> {
        let (client, _guard) = self.route(shard, Bound::Admit)?;
        client.query(query).await
    }

    /// [`Node::query`] outside the in-flight bound: the node's own housekeeping (the
    /// reconciliation after recovery), which must not be refused by the bound it serves.
    pub(crate) async fn query_exempt(
        &self,
        shard: u32,
        query: Query,
    ) -> Result<QueryAnswer, EngineError> {
        let (client, _guard) = self.route(shard, Bound::Exempt)?;
        client.query(query).await
    }

    /// The same query to every shard, answers in shard order.
    pub async fn query_all(&self, query: Query) -> Result<Vec<QueryAnswer>, EngineError> {
        let pending: Vec<_> = (0..self.config.shards)
            .map(|shard| self.query(shard, query.clone()))
            .collect();
        let mut out = Vec::with_capacity(pending.len());
        for answer in pending {
            out.push(answer.await?);
        }
        Ok(out)
    }

    pub async fn shard_status(&self) -> Vec<ShardStatus> {
        let mut out = Vec::with_capacity(self.config.shards as usize);
        for shard in 0..self.config.shards {
            let node = self.ring.owner(shard).to_string();
            let inflight = self
                .routed(shard)
                .map_or(0, |r| r.inflight.load(Ordering::Acquire));
            let phase = self.shard_phase(shard).unwrap_or(ShardPhase::Recovering);
            // A recovering shard is not asked: it answers once recovered.
            let answer = match phase {
                ShardPhase::Ready => self.status_of(shard).await,
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

    // ---- the citizen side of a booking -------------------------------------------

    pub(crate) async fn begin_booking(
        &self,
        shard: u32,
        key: Option<(IdemKey, Fingerprint)>,
        take: TakeClaim,
    ) -> Result<BeginAnswer, EngineError> {
        let (client, _guard) = self.route(shard, Bound::Admit)?;
        client.begin_booking(key, take).await
    }

    /// Not bounded: it ends work already admitted.
    pub(crate) async fn finish_booking(
        &self,
        shard: u32,
        settle: SettleClaims,
        key: Option<(IdemKey, Option<StoredResponse>)>,
    ) -> Result<Durable, EngineError> {
        let (client, _guard) = self.route(shard, Bound::Exempt)?;
        client.finish_booking(settle, key).await
    }

    // ---- idempotency ---------------------------------------------------------------

    /// Where a caller's Idempotency-Keys live: a citizen's in the citizen's own shard (so a
    /// booking begins its key and takes its claim in one message), anyone else's by `sub`.
    pub fn idempotency_home(&self, sub: &str, citizen_id: Option<&str>) -> u32 {
        match citizen_id {
            Some(citizen_id) => self.citizen_shard(citizen_id),
            None => self.caller_shard(sub),
        }
    }

    /// First look at an Idempotency-Key on its `home` shard; waits (without a timeout of its
    /// own) while another request with the same key and body runs, and then answers with
    /// its response.
    pub async fn idempotency_begin_at(
        &self,
        home: u32,
        key: IdemKey,
        fingerprint: Fingerprint,
    ) -> Result<IdemOutcome, EngineError> {
        let (client, _guard) = self.route(home, Bound::Admit)?;
        client.idempotency_begin(key, fingerprint).await
    }

    /// Stores the response of a request that began with `Proceed` (or forgets the key when
    /// `response` is `None`) and, once stored, answers every waiter. Answered as soon as the
    /// record is applied, with a [`Durable`] for its storage: the caller waits for it
    /// together with the events of the answer it stores (one group commit instead of two),
    /// so a replay after a crash finds it. Not bounded: it ends work already admitted, and a
    /// refused finish would leave waiters hanging.
    pub async fn idempotency_finish_at(
        &self,
        home: u32,
        key: IdemKey,
        response: Option<StoredResponse>,
    ) -> Result<Durable, EngineError> {
        let (client, _guard) = self.route(home, Bound::Exempt)?;
        client.idempotency_finish(key, response).await
    }
}

/// A shard answered a query with the wrong kind of answer: a client and a shard of different
/// builds. Refused like an unavailable shard, never guessed at.
pub(crate) fn mismatch(shard: u32, answer: &QueryAnswer) -> EngineError {
    tracing::error!(
        shard,
        ?answer,
        "a shard answered a query with the wrong kind of answer"
    );
    EngineError::Unavailable { shard }
}
