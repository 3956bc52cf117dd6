//! The external eligibility check as the saga sees it (docs/API.md, "External eligibility
//! check"): a question about one booking, asked while its seat and dose are held, and a
//! verdict. The engine knows no HTTP: the server implements [`ExternalCheck`] (the HTTP
//! client, its time budget, retries and circuit breaker) and hands it to the node.
//!
//! The call runs in the booking's own task, never inside a shard actor, so a slow or dead
//! checker delays only the bookings that wait for it.

use serde::{Deserialize, Serialize};

use crate::client::BoxFuture;
use crate::clock::UnixMs;

/// What the checker is asked (the body of the POST).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalRequest {
    pub citizen_id: String,
    pub insurance_id: String,
    pub vaccine: String,
    pub clinic_id: String,
}

/// What the saga is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExternalVerdict {
    Eligible,
    /// The checker answered `{"eligible": false, "reason": ...}`: 422 with
    /// `external:<reason>`.
    NotEligible {
        reason: String,
    },
    /// No answer within the budget (timeouts, 5xx, refused connections, a malformed answer),
    /// or the circuit is open and the checker was not called: the outage policy decides.
    Unavailable {
        retry_after_s: u32,
        why: String,
    },
}

/// What a booking does when the checker is unavailable (`--outage-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutagePolicy {
    /// 503 `UNAVAILABLE` with `Retry-After`; the hold and the claim are rolled back.
    Reject,
    /// Book with `needs_review: true`.
    Provisional,
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are answered `Unavailable` at once, until the cooldown ends.
    Open,
    /// The cooldown ended: one trial call goes through; its outcome closes or reopens.
    HalfOpen,
}

/// A dependency as operators see it (`GET /v1/admin/shards`, `dependencies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyStatus {
    /// `eligibility`.
    pub name: String,
    pub breaker: BreakerState,
    /// Failed calls in a row (retries included); the breaker opens at its threshold.
    pub consecutive_failures: u32,
    /// When the breaker last opened.
    pub opened_at_ms: Option<UnixMs>,
    /// Calls made (retries included) and how many failed, since start.
    pub calls_total: u64,
    pub failures_total: u64,
    /// Bookings answered at once because the breaker was open.
    pub short_circuited_total: u64,
}

/// The external check. Implementations bound their own time (the verdict arrives within the
/// configured budget) and never panic on a bad answer.
pub trait ExternalCheck: Send + Sync + 'static {
    fn check(&self, request: ExternalRequest) -> BoxFuture<'static, ExternalVerdict>;
    /// The dependency's state for operators.
    fn status(&self) -> DependencyStatus;
}
