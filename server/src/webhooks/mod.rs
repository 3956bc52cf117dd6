//! Signed webhooks with durable delivery cursors (docs/API.md, "Operators", Webhooks).
//!
//! Every `--webhook-url` gets every event of the node's durable event sequence, POSTed one at
//! a time and in sequence order, with `X-Holdfast-Event-Id: SEQ` and
//! `X-Holdfast-Signature-256: sha256=<hex HMAC-SHA256 of the body>` ([`sign`]). The rooms:
//!
//! - [`source`]: the [`EventSource`] port the events are read from (pages of at most
//!   [`PAGE_EVENTS_MAX`], so a receiver down for hours is caught up from the store, never
//!   from a buffer);
//! - [`cursor`]: each webhook's delivery cursor, in the data directory, moved only after a 2xx;
//! - `deliver`: one task per webhook, with retries (exponential back-off with jitter from
//!   [`BACKOFF_FIRST`] to [`BACKOFF_MAX`]), a per-request timeout ([`REQUEST_TIMEOUT`]) and a
//!   circuit breaker ([`crate::breaker`]).
//!
//! Delivery is at least once: a crash between a receiver's 2xx and the cursor reaching the
//! disk sends that event again (receivers de-duplicate on `X-Holdfast-Event-Id`). The tasks
//! are the only place webhooks run: no shard and no request ever waits for a receiver.

mod cursor;
mod deliver;
mod sign;
mod source;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_engine::external::BreakerState;
use holdfast_engine::Clock;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::breaker::{Breaker, BreakerConfig};
use crate::http_client::Http;
pub use cursor::{CursorStore, MemoryCursors, WebhookId, CURSOR_TREE};
pub use sign::{secret_from_file_bytes, signature, SECRET_BYTES_MIN};
pub use source::{EventSource, FeedSource, MemorySource, ReadError, SourcedEvent};

/// The header carrying the event's sequence, for de-duplication.
pub const EVENT_ID_HEADER: &str = "x-holdfast-event-id";
/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-holdfast-signature-256";
/// The first retry delay after a failed delivery; each next one doubles.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The largest retry delay before jitter (backon's jitter adds a random part of up to the
/// delay itself, so one wait is at most twice this): a receiver back from an outage gets its
/// events within 20 s, and a dead one costs one connection attempt every 10-20 s.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The longest one delivery may take (connecting, sending, the answer's head); longer is a
/// failure and the event is retried.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest answer body read from a receiver (it is read whole to keep the connection,
/// and ignored); a longer one fails the delivery.
pub const ANSWER_BYTES_MAX: usize = 64 * 1024;
/// Events read from the store at once per webhook: memory per webhook is bounded by this many
/// event bodies (a few hundred bytes each) whatever the receiver's backlog.
pub const PAGE_EVENTS_MAX: usize = 256;
/// Failed deliveries in a row that open a webhook's breaker.
pub const BREAKER_FAILURES: u32 = 5;
/// How long an open breaker waits before one trial delivery (as long as the largest back-off:
/// the breaker marks the receiver as down for operators without delaying its recovery more).
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(10);
/// How often at most a moved cursor is stored and flushed to disk: a crash re-sends at most
/// this long's deliveries, instead of costing one write and one disk flush per event.
pub const CURSOR_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Most `--webhook-url`s: each is a task, a breaker and a cursor.
pub const WEBHOOKS_MAX: usize = 16;
/// How long stopping waits for the delivery tasks (they stop at their next await).
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// The delivery schedule's bounds (the named constants; tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    pub request_timeout: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub page_events_max: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            backoff_first: BACKOFF_FIRST,
            backoff_max: BACKOFF_MAX,
            request_timeout: REQUEST_TIMEOUT,
            breaker_failures: BREAKER_FAILURES,
            breaker_cooldown: BREAKER_COOLDOWN,
            page_events_max: PAGE_EVENTS_MAX,
        }
    }
}

/// `--webhook-url` (repeatable) and `--webhook-secret-file`, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhooksConfig {
    pub urls: Vec<reqwest::Url>,
    /// The HMAC key (the secret file's bytes, one trailing newline trimmed).
    pub secret: Vec<u8>,
    pub timing: Timing,
}

impl std::fmt::Debug for WebhooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhooksConfig")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("timing", &self.timing)
            .finish()
    }
}

impl WebhooksConfig {
    /// Checks the URLs (http://, a host, no duplicates, at most [`WEBHOOKS_MAX`]) and takes
    /// the secret from a secret file's bytes; every other setting at its default.
    pub fn new(urls: &[String], secret_file_bytes: &[u8]) -> Result<WebhooksConfig, String> {
        if urls.len() > WEBHOOKS_MAX {
            return Err(format!(
                "{} --webhook-url flags; at most {WEBHOOKS_MAX}",
                urls.len()
            ));
        }
        let mut parsed: Vec<reqwest::Url> = Vec::with_capacity(urls.len());
        for url in urls {
            let url = parse_url(url)?;
            if parsed.contains(&url) {
                return Err(format!("--webhook-url {url} is given twice"));
            }
            parsed.push(url);
        }
        let secret = secret_from_file_bytes(secret_file_bytes)
            .map_err(|e| format!("--webhook-secret-file: {e}"))?;
        Ok(WebhooksConfig {
            urls: parsed,
            secret,
            timing: Timing::default(),
        })
    }
}

fn parse_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("--webhook-url {text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "--webhook-url {text:?}: this build speaks plain HTTP only (no TLS library is \
                 linked in); use an http:// URL, e.g. a local TLS-terminating proxy"
            ))
        }
        other => {
            return Err(format!(
                "--webhook-url {text:?}: the scheme must be http, not {other:?}"
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("--webhook-url {text:?} has no host"));
    }
    Ok(url)
}

/// A webhook's lag: events in the store its receiver has not acknowledged yet
/// (`holdfast_webhook_lag_events{webhook}`).
pub fn lag_events(head: u64, cursor: u64) -> u64 {
    head.saturating_sub(cursor)
}

/// One webhook's state, shared by its task and the handle.
struct Hook {
    id: WebhookId,
    url: reqwest::Url,
    /// The last acknowledged sequence.
    cursor: AtomicU64,
    breaker: Breaker,
    delivered_total: AtomicU64,
    failed_attempts_total: AtomicU64,
    /// Events the store dropped (retention) before this webhook got them.
    skipped_gone_total: AtomicU64,
}

/// One webhook as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStatus {
    /// The stable id (the label of `holdfast_webhook_lag_events`; it does not expose the URL).
    pub id: String,
    pub url: String,
    /// The last sequence its receiver acknowledged.
    pub cursor: u64,
    pub lag_events: u64,
    pub breaker: BreakerState,
    pub delivered_total: u64,
    pub failed_attempts_total: u64,
    /// Events the store's retention dropped before this receiver got them (each skip is
    /// logged as an error).
    pub skipped_gone_total: u64,
}

/// The running webhooks: one delivery task each. Stop with [`Webhooks::stop`].
pub struct Webhooks {
    hooks: Vec<Arc<Hook>>,
    source: Arc<dyn EventSource>,
    cursors: Arc<dyn CursorStore>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Webhooks {
    /// Loads each webhook's cursor (none yet: it starts before the first event) and starts
    /// its delivery task. Call within a tokio runtime.
    pub fn start(
        config: &WebhooksConfig,
        source: Arc<dyn EventSource>,
        cursors: Arc<dyn CursorStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Webhooks, String> {
        let secret: Arc<[u8]> = config.secret.clone().into();
        let (stop, stopped) = watch::channel(false);
        let mut hooks = Vec::with_capacity(config.urls.len());
        let mut tasks = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let hook = Arc::new(new_hook(
                url,
                &config.timing,
                cursors.as_ref(),
                clock.clone(),
            )?);
            log_start(&hook, source.head());
            let worker = deliver::Worker {
                hook: hook.clone(),
                source: source.clone(),
                cursors: cursors.clone(),
                http: Http::to_authority(authority(url), 1).answers_at_most(ANSWER_BYTES_MAX),
                path: path_and_query(url),
                secret: secret.clone(),
                timing: config.timing,
                stop: stopped.clone(),
            };
            tasks.push(tokio::spawn(worker.run()));
            hooks.push(hook);
        }
        Ok(Webhooks {
            hooks,
            source,
            cursors,
            stop,
            tasks,
        })
    }

    /// Every webhook's status, in flag order.
    pub fn status(&self) -> Vec<WebhookStatus> {
        let head = self.source.head();
        self.hooks
            .iter()
            .map(|hook| {
                let cursor = hook.cursor.load(Ordering::Acquire);
                WebhookStatus {
                    id: hook.id.as_str().to_string(),
                    url: hook.url.to_string(),
                    cursor,
                    lag_events: lag_events(head, cursor),
                    breaker: hook.breaker.state(),
                    delivered_total: hook.delivered_total.load(Ordering::Relaxed),
                    failed_attempts_total: hook.failed_attempts_total.load(Ordering::Relaxed),
                    skipped_gone_total: hook.skipped_gone_total.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// `(webhook id, lag in events)` for each webhook: one line to export as
    /// `holdfast_webhook_lag_events{webhook}`.
    pub fn lags(&self) -> Vec<(String, u64)> {
        (self.lags_fn())()
    }

    /// [`Webhooks::lags`] as a function that outlives this handle's borrow, for a metrics
    /// exporter that does not know this crate (`holdfast_webhook_lag_events{webhook}`).
    pub fn lags_fn(&self) -> impl Fn() -> Vec<(String, u64)> + Send + Sync + 'static {
        let hooks = self.hooks.clone();
        let source = self.source.clone();
        move || {
            let head = source.head();
            hooks
                .iter()
                .map(|hook| {
                    let cursor = hook.cursor.load(Ordering::Acquire);
                    (hook.id.as_str().to_string(), lag_events(head, cursor))
                })
                .collect()
        }
    }

    /// Stops every task (an attempt in flight is abandoned: its event is sent again on the
    /// next start) and flushes the cursors.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_WAIT, task).await.is_err() {
                abort.abort();
            }
        }
        let (hooks, cursors) = (self.hooks.clone(), self.cursors.clone());
        match tokio::task::spawn_blocking(move || deliver::save_and_flush(&hooks, &*cursors)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the webhook cursors were not flushed; the last deliveries will be sent again")
            }
            Err(e) => tracing::warn!(error = %e, "the webhook cursors' flush failed"),
        }
    }
}

/// `host:port` of a webhook URL (port 80 when it names none).
fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    format!("{host}:{}", url.port_or_known_default().unwrap_or(80))
}

/// What a delivery's request line names: the URL's path and its query.
fn path_and_query(url: &reqwest::Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    }
}

fn log_start(hook: &Hook, head: u64) {
    let (id, url) = (hook.id.as_str(), &hook.url);
    let cursor = hook.cursor.load(Ordering::Acquire);
    if cursor > head {
        // The event store is younger than the cursor (a data directory put together from two):
        // events numbered up to the cursor would never be sent.
        tracing::error!(webhook = id, %url, cursor, head, "a webhook's cursor is ahead of the event store; events numbered up to it are not sent");
    } else {
        tracing::info!(webhook = id, %url, cursor, head, "webhook delivering from its cursor");
    }
}

fn new_hook(
    url: &reqwest::Url,
    timing: &Timing,
    cursors: &dyn CursorStore,
    clock: Arc<dyn Clock>,
) -> Result<Hook, String> {
    let id = WebhookId::of(url);
    let cursor = cursors
        .load(&id)
        .map_err(|e| format!("cannot read the delivery cursor of webhook {url}: {e}"))?
        .unwrap_or(0);
    let cooldown_ms = i64::try_from(timing.breaker_cooldown.as_millis()).unwrap_or(i64::MAX);
    let breaker = Breaker::new(
        format!("webhook {}", id.as_str()),
        BreakerConfig {
            failures: timing.breaker_failures,
            cooldown_ms,
        },
        clock,
    );
    Ok(Hook {
        id,
        url: url.clone(),
        cursor: AtomicU64::new(cursor),
        breaker,
        delivered_total: AtomicU64::new(0),
        failed_attempts_total: AtomicU64::new(0),
        skipped_gone_total: AtomicU64::new(0),
    })
}

#[cfg(test)]
mod tests;
