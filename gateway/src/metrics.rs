//! Metrics for operators: the Prometheus recorder behind the `metrics` facade, the names and
//! buckets of every series (docs/API.md, "Operators"), and what `GET /metrics` renders.
//!
//! Two kinds of series. Events on the request path (requests, their latency, booking
//! outcomes, the log's group commits in holdfast-persistence) are recorded where they happen
//! through the facade's macros: a label set of `&'static str`s, no allocation, and a no-op
//! when no recorder is installed. State (holds, snapshot age, shard mailboxes, breakers) and
//! the shards' own tallies (expiries, no-shows) are read from the node when scraped, so the
//! booking path pays nothing for them.
//!
//! The recorder is process-wide: `holdfast serve` installs it once ([`Metrics::install`]).
//! A server started in a process that installed none (the in-process tests, embedding) gets a
//! [`Metrics::detached`] recorder, which shows the scraped series only: the facade's macros on
//! the request path reach no recorder there, so parallel servers in one process never mix
//! their counts.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use holdfast_engine::external::BreakerState;

use crate::admission::Admission;
use holdfast_engine::Node;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub const HTTP_REQUESTS_TOTAL: &str = "holdfast_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "holdfast_http_request_duration_seconds";
pub const BOOKINGS_TOTAL: &str = "holdfast_bookings_total";
pub const HOLDS_ACTIVE: &str = "holdfast_holds_active";
pub const EXPIRIES_TOTAL: &str = "holdfast_expiries_total";
pub const NO_SHOWS_TOTAL: &str = "holdfast_no_shows_total";
pub const SNAPSHOT_AGE_SECONDS: &str = "holdfast_snapshot_age_seconds";
pub const SHARD_INFLIGHT: &str = "holdfast_shard_inflight";
pub const BREAKER_OPEN: &str = "holdfast_breaker_open";
pub const WEBHOOK_LAG_EVENTS: &str = "holdfast_webhook_lag_events";
pub const RATE_LIMITED_TOTAL: &str = "holdfast_rate_limited_total";
pub const RATE_LIMIT_KEYS: &str = "holdfast_rate_limit_keys";
pub const WAITING_ROOM_TICKETS: &str = "holdfast_waiting_room_tickets";
/// The log's series are recorded by holdfast-persistence's writer thread (a crate the gateway
/// does not depend on) under the same names; the server's metrics test checks the two agree
/// through the rendered text.
pub const WAL_BATCH_RECORDS: &str = "holdfast_wal_batch_records";
pub const WAL_FSYNC_SECONDS: &str = "holdfast_wal_fsync_seconds";

/// Buckets of the latency histograms (requests, fsyncs), in seconds: 100 µs to 10 s in
/// 1-2.5-5 steps. A durable booking takes 1-5 ms on this machine's disk (one fsync); the
/// lower buckets separate reads served from memory, the upper ones a stalled disk or a slow
/// eligibility check (bounded at 800 ms by default).
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets of the group commit's size in records: powers of two up to the writer's default
/// bound (`BATCH_RECORDS_MAX_DEFAULT`, 8192 records).
pub const WAL_BATCH_RECORDS_BUCKETS: [f64; 14] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// How often the recorder drains its histograms when nobody scrapes, so their pending samples
/// stay bounded (the exporter leaves upkeep to whoever installs it without its listener).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The recorder this process installed, if any.
static INSTALLED: OnceLock<Arc<Metrics>> = OnceLock::new();

/// A Prometheus recorder and how to reach it.
pub struct Metrics {
    handle: PrometheusHandle,
    /// Set for a detached recorder: the scraped series are recorded into it directly.
    detached: Option<PrometheusRecorder>,
    started: std::time::Instant,
    /// Reads each configured webhook's lag when scraped (set once webhooks start).
    webhook_lags: std::sync::Mutex<Option<Arc<WebhookLags>>>,
}

/// `(webhook id, lag in events)` for each configured webhook.
pub type WebhookLags = dyn Fn() -> Vec<(String, u64)> + Send + Sync;

impl Metrics {
    fn builder() -> PrometheusBuilder {
        let latency = |builder: PrometheusBuilder, name: &str| {
            builder
                .set_buckets_for_metric(Matcher::Full(name.into()), &LATENCY_BUCKETS_SECONDS)
                .expect("the buckets are not empty")
        };
        let builder = latency(PrometheusBuilder::new(), HTTP_REQUEST_DURATION_SECONDS);
        latency(builder, WAL_FSYNC_SECONDS)
            .set_buckets_for_metric(
                Matcher::Full(WAL_BATCH_RECORDS.into()),
                &WAL_BATCH_RECORDS_BUCKETS,
            )
            .expect("the buckets are not empty")
    }

    /// Installs the process-wide recorder (once; later calls return the same one) and starts
    /// its upkeep on the current tokio runtime. From then on every macro in the process
    /// records into it, and every server started afterwards renders it.
    pub fn install() -> Result<Arc<Metrics>, String> {
        if let Some(installed) = INSTALLED.get() {
            return Ok(installed.clone());
        }
        let recorder = Metrics::builder().build_recorder();
        let metrics = Arc::new(Metrics {
            handle: recorder.handle(),
            detached: None,
            started: std::time::Instant::now(),
            webhook_lags: Default::default(),
        });
        metrics::set_global_recorder(recorder)
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        describe();
        let _ = INSTALLED.set(metrics.clone());
        let handle = metrics.handle.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
        Ok(metrics)
    }

    /// A recorder of this server's own, not installed: it shows only the series read from the
    /// node when scraped.
    pub fn detached() -> Arc<Metrics> {
        let recorder = Metrics::builder().build_recorder();
        let metrics = Metrics {
            handle: recorder.handle(),
            detached: Some(recorder),
            started: std::time::Instant::now(),
            webhook_lags: Default::default(),
        };
        metrics.record(describe);
        Arc::new(metrics)
    }

    /// The installed recorder, else a detached one.
    pub fn installed_or_detached() -> Arc<Metrics> {
        INSTALLED.get().cloned().unwrap_or_else(Metrics::detached)
    }

    /// Where the scrape reads the webhooks' lags (`holdfast_webhook_lag_events{webhook}`).
    pub fn set_webhook_lags(&self, lags: Arc<WebhookLags>) {
        *self
            .webhook_lags
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(lags);
    }

    /// Forgets the webhooks' lags (their closure holds the event store: a server that stops
    /// clears it, so its store can close and open again in this process).
    pub fn clear_webhook_lags(&self) {
        *self
            .webhook_lags
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    /// Whether request-path macros reach this recorder.
    pub fn is_installed(&self) -> bool {
        self.detached.is_none()
    }

    /// Runs `f`'s macros against this recorder.
    fn record(&self, f: impl FnOnce()) {
        match &self.detached {
            Some(recorder) => metrics::with_local_recorder(recorder, f),
            None => f(),
        }
    }

    /// Reads the node's state into the scraped series, then renders every series in the
    /// Prometheus text exposition format (version 0.0.4). The admission control's series
    /// (its 429s, its limiters' keys, the waiting room's tickets) are read from `admission`.
    pub async fn render(&self, node: &Node, admission: &Admission) -> String {
        let statuses = node.shard_status().await;
        let dependencies = node.dependencies();
        let now_ms = node.now_ms();
        let process_age_s = self.started.elapsed().as_secs_f64();
        let webhook_lags = self
            .webhook_lags
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .map(|lags| lags())
            .unwrap_or_default();
        self.record(|| {
            let (mut holds, mut expiries, mut no_shows) = (0u64, 0u64, 0u64);
            for s in &statuses {
                holds += s.counts.pending;
                expiries += s.runtime.expiries;
                no_shows += s.runtime.no_shows;
                let shard = s.shard.to_string();
                gauge!(SHARD_INFLIGHT, "shard" => shard.clone()).set(f64::from(s.inflight));
                if s.ready {
                    // A shard with no snapshot yet: its whole log since this process started.
                    let age_s = s
                        .runtime
                        .last_snapshot_at_ms
                        .map_or(process_age_s, |at| (now_ms - at).max(0) as f64 / 1000.0);
                    gauge!(SNAPSHOT_AGE_SECONDS, "shard" => shard).set(age_s);
                }
            }
            gauge!(HOLDS_ACTIVE).set(holds as f64);
            // `absolute` keeps the highest value seen: a shard still recovering (counted as
            // 0) does not make the counter go back.
            counter!(EXPIRIES_TOTAL).absolute(expiries);
            counter!(NO_SHOWS_TOTAL).absolute(no_shows);
            // No external check configured: no breaker, so none open.
            if dependencies.is_empty() {
                gauge!(BREAKER_OPEN, "dependency" => "eligibility").set(0.0);
            }
            for d in &dependencies {
                let open = matches!(d.breaker, BreakerState::Open);
                gauge!(BREAKER_OPEN, "dependency" => d.name.clone()).set(f64::from(u8::from(open)));
            }
            // Counted by the admission control as it refuses (so a detached recorder shows
            // them too); both codes exist from the start, at 0.
            for (code, total) in admission.refusals() {
                counter!(RATE_LIMITED_TOTAL, "code" => code).absolute(total);
            }
            // Counted by the overload bound as it refuses; both pools exist from the start, at 0.
            for pool in ["writes", "reads"] {
                counter!(crate::overload::OVERLOAD_REFUSED_TOTAL, "pool" => pool).increment(0);
            }
            for (limiter, keys) in admission.limiter_keys() {
                gauge!(RATE_LIMIT_KEYS, "limiter" => limiter).set(keys as f64);
            }
            if let Some(room) = &admission.room {
                gauge!(WAITING_ROOM_TICKETS).set(room.tickets() as f64);
            }
            for (webhook, lag) in &webhook_lags {
                webhook_lag(webhook, *lag);
            }
        });
        self.handle.render()
    }
}

/// How far a webhook's delivery cursor is behind the newest event, in events.
pub fn webhook_lag(webhook: &str, lag_events: u64) {
    gauge!(WEBHOOK_LAG_EVENTS, "webhook" => webhook.to_string()).set(lag_events as f64);
}

/// The `# HELP` lines.
fn describe() {
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP answers by route template, method and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a request's arrival to its answer, by route template."
    );
    describe_counter!(BOOKINGS_TOTAL, "Bookings (POST /v1/appointments) by outcome: created, or the refusal's code in lower case.");
    describe_gauge!(
        HOLDS_ACTIVE,
        "Appointments PENDING now: seats and doses held."
    );
    describe_counter!(
        EXPIRIES_TOTAL,
        "Holds expired unconfirmed, since this process started."
    );
    describe_counter!(
        NO_SHOWS_TOTAL,
        "Confirmed appointments marked no-show, since this process started."
    );
    describe_histogram!(
        WAL_BATCH_RECORDS,
        "Records per group commit of the write-ahead log."
    );
    describe_histogram!(
        WAL_FSYNC_SECONDS,
        Unit::Seconds,
        "Duration of the log's durable flushes."
    );
    describe_gauge!(
        SNAPSHOT_AGE_SECONDS,
        Unit::Seconds,
        "Time since the shard's last snapshot."
    );
    describe_gauge!(
        SHARD_INFLIGHT,
        "Requests admitted to the shard and not yet answered."
    );
    describe_gauge!(
        BREAKER_OPEN,
        "1 while the dependency's circuit breaker is open."
    );
    describe_gauge!(WEBHOOK_LAG_EVENTS, "Events a webhook's delivery is behind.");
    describe_counter!(
        RATE_LIMITED_TOTAL,
        "Requests refused 429 by admission control, by code: RATE_LIMITED (--rate-limit, --ip-rate-limit) or QUEUE_REQUIRED (--waiting-room)."
    );
    describe_counter!(
        crate::overload::OVERLOAD_REFUSED_TOTAL,
        "Requests refused 503 by the node's bound on requests in flight (--max-in-flight, --in-flight-wait), by pool: writes or reads."
    );
    describe_gauge!(
        RATE_LIMIT_KEYS,
        "Keys a rate limiter remembers now (limiter: caller or ip), at most --rate-limit-keys."
    );
    describe_gauge!(
        WAITING_ROOM_TICKETS,
        "Tickets in the waiting room now, waiting or admitted (at most WAITING_ROOM_TICKETS_MAX)."
    );
}

/// Label values that must be `&'static str` (route templates, lower-cased codes) without a
/// leak per request: each distinct value is leaked once. Bounded by the routes and codes the
/// code base has (a few dozen), never by what clients send.
type Interned = OnceLock<RwLock<HashMap<String, &'static str>>>;

/// `value` turned into a label by `make`, leaked the first time it is seen.
fn intern(value: &str, table: &'static Interned, make: fn(&str) -> String) -> &'static str {
    let table = table.get_or_init(Default::default);
    if let Some(interned) = table.read().unwrap_or_else(|e| e.into_inner()).get(value) {
        return interned;
    }
    let mut write = table.write().unwrap_or_else(|e| e.into_inner());
    write
        .entry(value.to_string())
        .or_insert_with(|| Box::leak(make(value).into_boxed_str()))
}

/// A route template (axum's `MatchedPath`) as a label value.
pub fn route_label(template: &str) -> &'static str {
    static ROUTES: Interned = OnceLock::new();
    intern(template, &ROUTES, str::to_string)
}

/// A booking's outcome as a label value: `created`, or the refusal's code in lower case
/// (`sold_out`, `not_eligible`, ...).
pub fn booking_outcome(code: Option<&'static str>) -> &'static str {
    static CODES: Interned = OnceLock::new();
    match code {
        None => "created",
        Some(code) => intern(code, &CODES, str::to_ascii_lowercase),
    }
}

/// Counts a booking's outcome.
pub fn count_booking(code: Option<&'static str>) {
    counter!(BOOKINGS_TOTAL, "outcome" => booking_outcome(code)).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booking_outcomes_are_lower_cased_codes_interned_once() {
        assert_eq!(booking_outcome(None), "created");
        assert_eq!(booking_outcome(Some("SOLD_OUT")), "sold_out");
        assert!(std::ptr::eq(
            booking_outcome(Some("NOT_ELIGIBLE")),
            booking_outcome(Some("NOT_ELIGIBLE"))
        ));
    }

    #[test]
    fn latency_buckets_resolve_100_us_to_10_s() {
        assert_eq!(LATENCY_BUCKETS_SECONDS.first(), Some(&0.000_1));
        assert_eq!(LATENCY_BUCKETS_SECONDS.last(), Some(&10.0));
        assert!(LATENCY_BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }
}
