//! The bodies of the operator routes (docs/API.md, Operators).

use holdfast_engine::actor::ShardPhase;
use holdfast_engine::external::{BreakerState, DependencyStatus};
use holdfast_engine::node::ShardStatus;
use holdfast_engine::Node;
use serde::Serialize;
use utoipa::ToSchema;

use crate::restarts::InPlaceRestarts;
use crate::routes::fields::rfc3339;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShardJson {
    pub shard: u32,
    pub node: String,
    /// ready | recovering | unavailable
    pub status: String,
    pub clinics: u64,
    pub slots: u64,
    pub pending: u64,
    pub confirmed: u64,
    pub administered: u64,
    /// Entries in the shard's deadline queue (live holds plus not yet compacted ones).
    pub timers: u64,
    pub next_expiry: Option<String>,
    /// Requests admitted to the shard and not yet answered (the bound is `mailbox_max`).
    pub mailbox: u32,
    pub mailbox_max: u32,
    /// Events applied since start.
    pub events_applied: u64,
    /// Sequence number of the shard's last log record, of its last snapshot, and when that
    /// snapshot was taken (null until one is, since start).
    pub wal_seq: Option<u64>,
    pub snapshot_seq: Option<u64>,
    pub last_snapshot_at: Option<String>,
    pub idempotency_records: usize,
    /// Log records recovery found torn or corrupt at the tail of this shard's log and cut
    /// off (they were never acknowledged: an answer waits for its record's flush).
    pub recovery_dropped_records: usize,
    /// Why the shard is unavailable (null when it is not).
    pub reason: Option<String>,
}

impl ShardJson {
    /// One shard's status for `/v1/admin/shards`; `node` supplies the mailbox bound and, for
    /// a shard that takes no writes, why (the disk, the journal's failure).
    pub fn render(s: &ShardStatus, node: &Node) -> ShardJson {
        let (status, reason) = match (&s.phase, s.ready && s.runtime.writable) {
            (ShardPhase::Recovering, _) => ("recovering", None),
            (ShardPhase::Failed(reason), _) => ("unavailable", Some(reason.to_string())),
            (ShardPhase::Stopped(reason), _) => (
                "unavailable",
                Some(format!(
                    "a write of this shard was not stored ({reason}); it answers nothing until \
                     a restart recovers it from the log"
                )),
            ),
            (ShardPhase::Ready, true) => ("ready", None),
            (ShardPhase::Ready, false) => (
                "unavailable",
                Some(node.write_refusal().map_or_else(
                    || "the shard stopped taking writes (see the log)".to_string(),
                    |refusal| format!("{}: {refusal}", refusal.reason()),
                )),
            ),
        };
        let known = s.ready;
        ShardJson {
            shard: s.shard,
            node: s.node.clone(),
            status: status.to_string(),
            clinics: s.counts.clinics,
            slots: s.counts.slots,
            pending: s.counts.pending,
            confirmed: s.counts.confirmed,
            administered: s.counts.administered,
            timers: s.counts.timers,
            next_expiry: s.counts.next_expiry_ms.map(rfc3339),
            mailbox: s.inflight,
            mailbox_max: node.config().inflight_per_shard_max,
            events_applied: s.runtime.events_applied,
            wal_seq: known.then_some(s.runtime.wal_seq),
            snapshot_seq: known.then_some(s.runtime.snapshot_seq),
            last_snapshot_at: s.runtime.last_snapshot_at_ms.map(rfc3339),
            idempotency_records: s.runtime.idempotency_records,
            recovery_dropped_records: s.runtime.recovered_dropped,
            reason,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RingJson {
    pub nodes: Vec<String>,
    pub vnodes_per_node: u32,
    pub shards: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShardsJson {
    pub node: String,
    pub ring: RingJson,
    pub shards: Vec<ShardJson>,
    /// The node's external dependencies and their circuit breakers (empty when the server
    /// runs without `--eligibility-url`).
    pub dependencies: Vec<DependencyJson>,
    /// Whether the node takes writes (its disk and its log).
    pub storage: StorageJson,
}

/// Whether the node's journal takes writes, and if not why (`/v1/admin/shards`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StorageJson {
    /// False while writes are refused (reads are served meanwhile).
    pub writable: bool,
    /// `disk_full`, `read_only` (both clear by themselves) or `log_failed` (cleared by a
    /// restart in place once the disk has room again); null while writable.
    pub reason: Option<String>,
    /// What happened and what to do, for a human; null while writable.
    pub message: Option<String>,
    /// Times the node was restarted in place, in this process, after its log failed (the
    /// log and the event store reopened, every shard recovered from the log, on the same
    /// listening socket).
    pub restarts_in_place: u64,
    /// The failure the last restart in place recovered from; null if there was none.
    pub last_restart_reason: Option<String>,
    /// When the last restart in place served again; null if there was none.
    pub last_restart_at: Option<String>,
}

impl StorageJson {
    pub fn render(node: &Node, restarts: &InPlaceRestarts) -> StorageJson {
        let refusal = node.write_refusal();
        let last = restarts.last();
        StorageJson {
            writable: refusal.is_none(),
            reason: refusal.as_ref().map(|r| r.reason().to_string()),
            message: refusal.as_ref().map(|r| r.to_string()),
            restarts_in_place: restarts.count(),
            last_restart_at: last.as_ref().map(|l| rfc3339(l.at_ms)),
            last_restart_reason: last.map(|l| l.reason),
        }
    }
}

/// One external dependency as operators see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DependencyJson {
    /// `eligibility`.
    pub name: String,
    /// closed | open | half_open. An open breaker turns half-open when the first call after
    /// its cooldown arrives (that call is the one trial).
    pub breaker: String,
    /// Failed calls in a row (retries included); the breaker opens at `--breaker-failures`.
    pub consecutive_failures: u32,
    /// When the breaker last opened (null if it never has since start).
    pub opened_at: Option<String>,
    /// Calls made to the dependency since start (retries included), and how many failed.
    pub calls_total: u64,
    pub failures_total: u64,
    /// Bookings answered at once, without a call, because the breaker was open or its trial
    /// was in flight.
    pub short_circuited_total: u64,
}

impl DependencyJson {
    pub fn render(d: &DependencyStatus) -> DependencyJson {
        let breaker = match d.breaker {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        };
        DependencyJson {
            name: d.name.clone(),
            breaker: breaker.to_string(),
            consecutive_failures: d.consecutive_failures,
            opened_at: d.opened_at_ms.map(rfc3339),
            calls_total: d.calls_total,
            failures_total: d.failures_total,
            short_circuited_total: d.short_circuited_total,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthJson {
    pub status: String,
    /// The server's version (`holdfast --version`), so load reports can name what they ran against.
    pub version: String,
}

impl HealthJson {
    /// `status` and this server's version.
    pub fn new(status: &str) -> HealthJson {
        HealthJson {
            status: status.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// `GET /v1/admin/invariants`
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvariantsJson {
    /// True when no invariant is broken.
    pub ok: bool,
    pub shards_checked: usize,
    /// Each broken invariant, named (the first one per shard, then the citizen rule's).
    pub violations: Vec<String>,
}
