//! Overload: a node-wide bound on the requests in flight, so that ten times the traffic the
//! node serves well is answered quickly (the excess with `503 UNAVAILABLE` and
//! `Retry-After`) instead of queueing without end.
//!
//! Every API request takes a permit of one of two pools before its handler runs and gives it
//! back when its answer is built:
//!
//! - **writes** (every method but `GET` and `HEAD`): `--max-in-flight` permits
//!   ([`WRITES_IN_FLIGHT_MAX_DEFAULT`]);
//! - **reads** (`GET`, `HEAD`): [`READS_PER_WRITE`] times as many. Reads do not touch the log
//!   and cost a fraction of a write, and a flood of bookings must not stop citizens and
//!   clinics from reading availability and appointments, so reads have their own pool.
//!
//! A request that finds its pool empty waits for a permit at most `in_flight_wait`
//! ([`IN_FLIGHT_WAIT_MS_DEFAULT`]; first come, first served: tokio's semaphore is fair), and
//! at most [`WAITERS_PER_PERMIT`] times the pool's size may wait; past either bound it is
//! refused at once with `503 UNAVAILABLE`, `Retry-After: 1` and `details.reason:
//! "overloaded"`. Nothing is decided for a refused request, so a retry (with the same
//! Idempotency-Key) is always safe.
//!
//! Why this bounds the rest: a shard's mailbox only ever holds requests that hold a permit
//! (plus the node's own housekeeping), so the permits bound every shard's queue, and with it
//! the time an admitted request waits inside the node (see docs/ARCHITECTURE.md,
//! "Overload"). The per-shard bound of the engine ([`holdfast_engine::node`], 8,192) stays
//! as the last line for callers that do not come through HTTP.
//!
//! Not bounded here: the probes and the operators' endpoints (`/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json`, the console, `/v1/admin/*`), which must answer during an
//! overload to diagnose it, and the two event streams (`/v1/events`, a clinic's
//! `availability/stream`), which are long-lived and have their own subscriber bounds.
//!
//! The normal path costs one atomic compare-and-swap to take a permit and one to give it
//! back; the timer of the bounded wait is armed only when the pool is empty.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Writes in flight across the node (`--max-in-flight`). The node serves 256 concurrent
/// clients well (docs/PERFORMANCE.md); twice that leaves an ordinary rush untouched while
/// bounding how much work piles up inside at ten times that many (2,560 clients): at the
/// measured 15,000-20,000 writes/s, 512 in flight drain in 25-35 ms.
pub const WRITES_IN_FLIGHT_MAX_DEFAULT: u32 = 512;
/// Largest `--max-in-flight`: tokio's semaphore holds at most `usize::MAX >> 3` permits, and
/// beyond this the bound would not bound anything the shards' own bound does not.
pub const WRITES_IN_FLIGHT_MAX_LIMIT: u32 = 65_536;
/// Reads in flight per write permit: a read answers from memory without the log, so the read
/// pool is larger, and a write flood cannot starve reads (nor reads writes).
pub const READS_PER_WRITE: u32 = 2;
/// How long a request waits for a permit before it is refused (`--in-flight-wait`). Long
/// enough to absorb a burst (at 15,000 answers/s about 1,500 waiters get a permit in it),
/// short enough that a refusal comes quickly, so a client learns at once to come back later.
pub const IN_FLIGHT_WAIT_MS_DEFAULT: u64 = 100;
/// Waiters allowed per permit of a pool: more than this many waiting requests cannot all be
/// served within the in-flight wait anyway, so the rest are refused without waiting.
pub const WAITERS_PER_PERMIT: usize = 4;
/// What a refused request is told to wait (`Retry-After`, whole seconds).
pub const RETRY_AFTER_S: u32 = 1;

/// The bounds, from the command line (`--max-in-flight`, `--in-flight-wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadLimits {
    /// Writes in flight across the node; reads get [`READS_PER_WRITE`] times as many.
    pub writes_in_flight_max: u32,
    /// Longest wait for a permit before a 503.
    pub in_flight_wait_ms: u64,
}

impl Default for OverloadLimits {
    fn default() -> Self {
        OverloadLimits {
            writes_in_flight_max: WRITES_IN_FLIGHT_MAX_DEFAULT,
            in_flight_wait_ms: IN_FLIGHT_WAIT_MS_DEFAULT,
        }
    }
}

/// One pool of permits and the requests waiting for them.
struct Pool {
    kind: &'static str,
    permits: Arc<Semaphore>,
    max: u32,
    waiting: AtomicUsize,
    waiting_max: usize,
}

/// Gives a waiter's place back however its wait ends (a permit, the timeout, or the client
/// going away and the future being dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    fn new(kind: &'static str, max: u32) -> Pool {
        Pool {
            kind,
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            waiting: AtomicUsize::new(0),
            waiting_max: max as usize * WAITERS_PER_PERMIT,
        }
    }

    /// A permit at once, or within `wait`, or the refusal.
    async fn acquire(&self, wait: Duration) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.waiting_max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refusal("too many requests are waiting"));
        }
        let _place = Waiting(&self.waiting);
        match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Closed never happens (nobody closes the pools); refused like a timeout.
            Ok(Err(_)) | Err(_) => Err(self.refusal("no permit came free in time")),
        }
    }

    fn refusal(&self, why: &str) -> ApiError {
        metrics::counter!(OVERLOAD_REFUSED_TOTAL, "pool" => self.kind).increment(1);
        ApiError::unavailable(
            RETRY_AFTER_S,
            format!(
                "the server is overloaded: {} {} requests are in flight and {why}; retry after {RETRY_AFTER_S} s",
                self.max,
                self.kind.trim_end_matches('s')
            ),
        )
        .with_detail("reason", "overloaded")
        .with_detail("in_flight_max", self.max)
    }
}

/// Requests refused by the bound, by pool (`reads`, `writes`).
pub const OVERLOAD_REFUSED_TOTAL: &str = "holdfast_overload_refused_total";

/// The node's two pools; one per application ([`crate::app::build_app`]).
pub struct Overload {
    writes: Pool,
    reads: Pool,
    wait: Duration,
}

impl Overload {
    pub fn new(limits: OverloadLimits) -> Overload {
        let writes = limits.writes_in_flight_max.max(1);
        Overload {
            writes: Pool::new("writes", writes),
            reads: Pool::new("reads", writes.saturating_mul(READS_PER_WRITE)),
            wait: Duration::from_millis(limits.in_flight_wait_ms),
        }
    }

    /// The pool a request draws from; `None` for the unbounded paths (see the module doc).
    fn pool_for(&self, method: &Method, path: &str) -> Option<&Pool> {
        if !is_bounded(path) {
            return None;
        }
        if method == Method::GET || method == Method::HEAD {
            Some(&self.reads)
        } else {
            Some(&self.writes)
        }
    }
}

/// Whether `path` counts against the bound: the API (`/v1/...`) but its operators' part and
/// its event streams.
pub fn is_bounded(path: &str) -> bool {
    path.starts_with("/v1/")
        && !path.starts_with("/v1/admin/")
        && path != "/v1/events"
        && !path.ends_with("/availability/stream")
}

/// The middleware: a permit for the request's pool, held until its answer is built; or the
/// 503.
pub async fn admit(
    State(overload): State<Arc<Overload>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(pool) = overload.pool_for(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    match pool.acquire(overload.wait).await {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(refusal) => {
            let mut response = refusal.into_response();
            response.extensions_mut().insert(Refused);
            response
        }
    }
}

/// Marks an answer as this bound's refusal, so the request log does not write a warning
/// for each of thousands a second (see [`note_refused`]).
#[derive(Debug, Clone, Copy)]
pub struct Refused;

/// The process's refusals since the last warning, and the second of that warning.
static REFUSED_SINCE_WARNING: AtomicUsize = AtomicUsize::new(0);
static LAST_WARNING_S: AtomicU64 = AtomicU64::new(0);

/// Counts a refusal and writes at most one warning a second for all of them (each is also
/// in `holdfast_overload_refused_total` and `holdfast_http_requests_total{status="503"}`):
/// under a flood, a line per refusal would cost the server the time it is short of.
pub fn note_refused() {
    REFUSED_SINCE_WARNING.fetch_add(1, Ordering::Relaxed);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_WARNING_S.load(Ordering::Relaxed);
    if now_s > last
        && LAST_WARNING_S
            .compare_exchange(last, now_s, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        let refused = REFUSED_SINCE_WARNING.swap(0, Ordering::AcqRel);
        tracing::warn!(
            refused,
            "overloaded: requests refused with 503 since the last warning"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_operators_and_streams_are_not_bounded() {
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/console",
            "/v1/admin/shards",
            "/v1/events",
            "/v1/clinics/c-1/availability/stream",
        ] {
            assert!(!is_bounded(path), "{path}");
        }
        for path in [
            "/v1/appointments",
            "/v1/clinics/c-1/availability",
            "/v1/waitlist/w-1",
        ] {
            assert!(is_bounded(path), "{path}");
        }
    }

    #[tokio::test]
    async fn a_full_pool_refuses_after_its_wait_and_serves_again_once_freed() {
        let overload = Overload::new(OverloadLimits {
            writes_in_flight_max: 1,
            in_flight_wait_ms: 1,
        });
        let pool = overload
            .pool_for(&Method::POST, "/v1/appointments")
            .unwrap();
        let held = pool
            .acquire(overload.wait)
            .await
            .expect("the first is admitted");
        let refused = pool
            .acquire(overload.wait)
            .await
            .expect_err("the pool is full");
        assert_eq!(refused.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.code, "UNAVAILABLE");
        assert_eq!(refused.retry_after_s, Some(RETRY_AFTER_S));
        assert_eq!(refused.details["reason"], "overloaded");
        // Reads have their own pool: a full write pool does not refuse them.
        let reads = overload.pool_for(&Method::GET, "/v1/clinics").unwrap();
        let _read = reads.acquire(overload.wait).await.expect("reads are apart");
        drop(held);
        let _again = pool
            .acquire(overload.wait)
            .await
            .expect("freed, admitted again");
        assert_eq!(pool.waiting.load(Ordering::Acquire), 0, "every waiter left");
    }

    #[tokio::test]
    async fn waiters_beyond_their_bound_are_refused_without_waiting() {
        let overload = Overload::new(OverloadLimits {
            writes_in_flight_max: 1,
            in_flight_wait_ms: 60_000,
        });
        let pool = overload
            .pool_for(&Method::POST, "/v1/appointments")
            .unwrap();
        let _held = pool.acquire(overload.wait).await.unwrap();
        // Fill the waiting places as if that many requests waited.
        pool.waiting.store(pool.waiting_max, Ordering::Release);
        let refused = pool
            .acquire(overload.wait)
            .await
            .expect_err("no place to wait");
        assert_eq!(refused.details["reason"], "overloaded");
        assert_eq!(pool.waiting.load(Ordering::Acquire), pool.waiting_max);
    }
}
