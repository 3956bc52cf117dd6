//! Admission on launch morning (docs/API.md): who gets to ask for a seat, and when.
//!
//! - [`rate_limit`]: token buckets per caller (`sub`) and per client IP on the citizen's
//!   mutating endpoints ([`LIMITED_ROUTES`]), `--rate-limit` and `--ip-rate-limit`, each
//!   remembering at most `--rate-limit-keys` keys. Over the limit: 429 `RATE_LIMITED` with
//!   `Retry-After`. Applied by [`middleware::limit`], a middleware around every route, before
//!   the handler reads anything: a refused request costs a hash lookup, never a shard's time.
//! - [`waiting_room`]: `--waiting-room N` tickets, admitted N a second, each admission a
//!   [`token`] that books once; `POST /v1/appointments` without a good one is 429
//!   `QUEUE_REQUIRED` (see [`Admission::booking_pass`], called by the booking handler after
//!   its own 400 and 403 checks). The routes are in `routes::queue`.
//!
//! Both are off unless their flags are given: a node behind a gateway that already limits,
//! or a clinic's own deployment, has no crowd to hold back, and a limit that is on by default
//! would refuse the bundled load harness (one IP, thousands of citizens) and every benchmark.
//!
//! # Client IP
//!
//! The client IP is the TCP peer's address (axum's `ConnectInfo`). `X-Forwarded-For` and
//! `Forwarded` are not read: any client can send them, so trusting them would let every
//! request claim a fresh IP and walk past the per-IP limit. A deployment behind a reverse
//! proxy sees the proxy as the one peer; it should limit per IP at the proxy (which knows the
//! real peer) and keep `--rate-limit` (per caller) here. IPv6 peers are limited per /64, the
//! block one subscriber usually holds, since a single host can use any address in it.
//!
//! Neither refusal is stored by the Idempotency-Key protocol (a 429 never reached a
//! decision), so a client may retry with the same key.

pub mod middleware;
pub mod rate_limit;
pub mod token;
pub mod waiting_room;

use std::convert::Infallible;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use holdfast_engine::Clock;

use crate::auth::{Caller, Role};
use crate::error::ApiError;

use self::rate_limit::{KeyedLimiter, Rate, RetryAfter, RATE_LIMIT_KEYS_DEFAULT};
use self::waiting_room::{BookingPass, Refusal, WaitingRoom, ADMISSION_TTL_MS_DEFAULT};

/// The header a booking carries its admission token in.
pub const ADMISSION_TOKEN_HEADER: &str = "admission-token";

/// The routes the rate limits apply to (method, route template): the citizen's mutating
/// endpoints. Reads are never limited. Reschedule is a booking too, so it is limited as one.
pub const LIMITED_ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/v1/appointments"),
    (Method::POST, "/v1/appointments/{id}/confirm"),
    (Method::POST, "/v1/appointments/{id}/cancel"),
    (Method::POST, "/v1/appointments/{id}/reschedule"),
    (
        Method::POST,
        "/v1/clinics/{clinic_id}/slots/{slot_id}/waitlist",
    ),
    (Method::DELETE, "/v1/waitlist/{waitlist_id}"),
    (Method::POST, "/v1/queue"),
];

/// What the command line asks for; everything off by default.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// `--rate-limit`: per caller (`sub`).
    pub rate_limit: Option<Rate>,
    /// `--ip-rate-limit`: per client IP.
    pub ip_rate_limit: Option<Rate>,
    /// `--rate-limit-keys`: keys each limiter remembers.
    pub rate_limit_keys: NonZeroUsize,
    /// `--waiting-room`: admissions per second across the node.
    pub waiting_room: Option<NonZeroU32>,
    /// `--admission-ttl`, in milliseconds.
    pub admission_ttl_ms: i64,
}

impl Default for AdmissionConfig {
    fn default() -> AdmissionConfig {
        AdmissionConfig {
            rate_limit: None,
            ip_rate_limit: None,
            rate_limit_keys: NonZeroUsize::new(RATE_LIMIT_KEYS_DEFAULT).expect("not zero"),
            waiting_room: None,
            admission_ttl_ms: ADMISSION_TTL_MS_DEFAULT,
        }
    }
}

/// The node's admission control: the two limiters and the waiting room, each when on.
pub struct Admission {
    pub by_caller: Option<KeyedLimiter>,
    pub by_ip: Option<KeyedLimiter>,
    pub room: Option<Arc<WaitingRoom>>,
    rate_limited_total: AtomicU64,
    queue_required_total: AtomicU64,
}

impl Admission {
    pub fn new(config: &AdmissionConfig, clock: Arc<dyn Clock>) -> Admission {
        let limiter = |rate: Option<Rate>| {
            rate.map(|rate| KeyedLimiter::new(rate, config.rate_limit_keys, clock.clone()))
        };
        Admission {
            by_caller: limiter(config.rate_limit),
            by_ip: limiter(config.ip_rate_limit),
            room: config.waiting_room.map(|per_second| {
                Arc::new(WaitingRoom::new(
                    per_second,
                    config.admission_ttl_ms,
                    clock.clone(),
                ))
            }),
            rate_limited_total: AtomicU64::new(0),
            queue_required_total: AtomicU64::new(0),
        }
    }

    /// Nothing on: what tests and embedders get by default.
    pub fn off() -> Admission {
        Admission::new(
            &AdmissionConfig::default(),
            Arc::new(holdfast_engine::SystemClock),
        )
    }

    /// Refusals so far by code, for `holdfast_rate_limited_total{code}`.
    pub fn refusals(&self) -> [(&'static str, u64); 2] {
        [
            (
                "RATE_LIMITED",
                self.rate_limited_total.load(Ordering::Relaxed),
            ),
            (
                "QUEUE_REQUIRED",
                self.queue_required_total.load(Ordering::Relaxed),
            ),
        ]
    }

    /// Keys each limiter that is on remembers now, for `holdfast_rate_limit_keys{limiter}`.
    pub fn limiter_keys(&self) -> Vec<(&'static str, usize)> {
        [("caller", &self.by_caller), ("ip", &self.by_ip)]
            .into_iter()
            .filter_map(|(name, limiter)| limiter.as_ref().map(|l| (name, l.keys())))
            .collect()
    }

    fn rate_limited(&self, retry: RetryAfter, scope: &'static str) -> ApiError {
        self.rate_limited_total.fetch_add(1, Ordering::Relaxed);
        ApiError {
            retry_after_s: Some(retry.0),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!(
                    "too many requests from this {scope}; retry after {} s",
                    retry.0
                ),
            )
            .with_detail("scope", scope)
        }
    }

    /// The waiting room's word on a booking by `caller` under Idempotency-Key `key`:
    /// `Ok(None)` when the room is off or the caller is an authority (who books for
    /// citizens, e.g. at a call centre, and cannot queue), a pass to hold until the
    /// booking's answer, or 429 `QUEUE_REQUIRED` with the wait a newcomer faces.
    pub fn booking_pass(
        &self,
        caller: &Caller,
        token: &AdmissionTokenHeader,
        key: &str,
    ) -> Result<Option<BookingPass>, ApiError> {
        let Some(room) = &self.room else {
            return Ok(None);
        };
        if caller.0.role == Role::Authority {
            return Ok(None);
        }
        let token = token.0.as_ref().map(|v| v.to_str().unwrap_or_default());
        room.pass(&caller.0.sub, token, key)
            .map(Some)
            .map_err(|refusal| {
                self.queue_required_total.fetch_add(1, Ordering::Relaxed);
                queue_required(room.newcomer_wait(), refusal)
            })
    }
}

/// 429 `QUEUE_REQUIRED`: book with a valid `Admission-Token` from `POST /v1/queue`.
fn queue_required(retry: RetryAfter, refusal: Refusal) -> ApiError {
    let message = match refusal {
        Refusal::Missing => "the waiting room is on: queue at POST /v1/queue and book with the Admission-Token it admits you with",
        Refusal::Invalid => "this Admission-Token was not issued to you by this server (or before a restart): queue again at POST /v1/queue",
        Refusal::Expired => "this Admission-Token has expired: queue again at POST /v1/queue",
        Refusal::Used => "this Admission-Token has already booked an appointment: queue again at POST /v1/queue",
    };
    ApiError {
        retry_after_s: Some(retry.0),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "QUEUE_REQUIRED", message)
            .with_detail("reason", refusal.as_str())
            .with_detail("queue", "/v1/queue")
    }
}

/// The `Admission-Token` header of a request, as sent (checked by
/// [`Admission::booking_pass`] where the booking's order of checks puts it).
#[derive(Debug, Clone, Default)]
pub struct AdmissionTokenHeader(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for AdmissionTokenHeader {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(AdmissionTokenHeader(
            parts.headers.get(ADMISSION_TOKEN_HEADER).cloned(),
        ))
    }
}
