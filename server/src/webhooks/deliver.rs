//! One webhook's delivery task: read a page of events after the cursor, POST each one until
//! its receiver answers 2xx (retrying with back-off, through the breaker), move the cursor,
//! and wait for new events when caught up. One request in flight per webhook, so the
//! receiver sees the events in sequence order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use hyper::header::HeaderValue;
use tokio::sync::watch;
use tokio::time::Instant;

use holdfast_engine::feed::Gone;

use super::{
    signature, CursorStore, EventSource, Hook, ReadError, SourcedEvent, Timing, EVENT_ID_HEADER,
    SIGNATURE_HEADER,
};
use crate::breaker::Admission;
use crate::http_client::{Failure, Http, Req};
use crate::webhooks::CURSOR_FLUSH_INTERVAL;

/// The `User-Agent` of every delivery.
const USER_AGENT: &str = concat!("holdfast/", env!("CARGO_PKG_VERSION"));

/// Stores each hook's cursor as it is in memory, then makes them durable. Blocking: call it
/// off the async runtime. A cursor that cannot be stored still moves in memory; after a
/// restart its events since the last stored one go out again (at least once).
pub(super) fn save_and_flush(hooks: &[Arc<Hook>], cursors: &dyn CursorStore) -> Result<(), String> {
    for hook in hooks {
        cursors.save(&hook.id, hook.cursor.load(Ordering::Acquire))?;
    }
    cursors.flush()
}

/// The retry schedule: from `backoff_first`, doubling, at most `backoff_max`, each delay plus
/// a random part of up to itself (backon's jitter), never exhausted.
pub(super) fn schedule(timing: &Timing) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(timing.backoff_first)
        .with_factor(2.0)
        .with_max_delay(timing.backoff_max)
        .with_jitter()
        .without_max_times()
        .build()
}

pub(super) struct Worker {
    pub hook: Arc<Hook>,
    pub source: Arc<dyn EventSource>,
    pub cursors: Arc<dyn CursorStore>,
    /// One keep-alive connection to the receiver (one request in flight).
    pub http: Http,
    /// The URL's path and query, as sent.
    pub path: String,
    pub secret: Arc<[u8]>,
    pub timing: Timing,
    pub stop: watch::Receiver<bool>,
}

/// The task stopped (the server is stopping).
struct Stopped;

/// When the cursor was last flushed, and whether it moved since.
struct Flushed {
    at: Instant,
    dirty: bool,
}

impl Worker {
    pub async fn run(self) {
        let mut flushed = Flushed {
            at: Instant::now(),
            dirty: false,
        };
        let _ = self.pump(&mut flushed).await;
        if flushed.dirty {
            self.flush().await;
        }
    }

    /// Delivers until stopped.
    async fn pump(&self, flushed: &mut Flushed) -> Result<(), Stopped> {
        let mut read_failures = schedule(&self.timing);
        loop {
            let after = self.hook.cursor.load(Ordering::Acquire);
            let page = self
                .until_stopped(self.source.read_after(after, self.timing.page_events_max))
                .await?;
            let page = match page {
                Ok(page) => page,
                Err(ReadError::Gone(gone)) => {
                    if !self.skip_gone(gone) {
                        // A store that says "gone" without a way forward: ask again later.
                        self.sleep(self.timing.backoff_max).await?;
                    }
                    continue;
                }
                Err(ReadError::Failed(why)) => {
                    tracing::warn!(webhook = self.hook.id.as_str(), after, %why, "cannot read events for a webhook; retrying");
                    let delay = read_failures.next().unwrap_or(self.timing.backoff_max);
                    self.sleep(delay).await?;
                    continue;
                }
            };
            read_failures = schedule(&self.timing);
            if page.is_empty() {
                self.flush_if(flushed, true).await;
                self.until_stopped(self.source.wait_for_new(after)).await?;
                continue;
            }
            for event in page {
                let cursor = self.hook.cursor.load(Ordering::Acquire);
                if event.seq <= cursor {
                    // A source that answers an event twice: it was delivered already.
                    continue;
                }
                self.deliver(&event, flushed).await?;
                self.advance(event.seq);
                flushed.dirty = true;
                self.flush_if(flushed, false).await;
            }
        }
    }

    /// Sends `event` until its receiver answers 2xx.
    async fn deliver(&self, event: &SourcedEvent, flushed: &mut Flushed) -> Result<(), Stopped> {
        let mut delays = schedule(&self.timing);
        loop {
            let call = match self.hook.breaker.admit() {
                Admission::Go(call) => call,
                Admission::ShortCircuited { retry_after_s } => {
                    // The breaker is open: no request until its cooldown ends, then one trial.
                    self.sleep(Duration::from_secs(u64::from(retry_after_s)))
                        .await?;
                    continue;
                }
            };
            // Stopping abandons the attempt; the dropped call counts as a failure.
            match self.until_stopped(self.attempt(event)).await? {
                Ok(()) => {
                    call.succeeded();
                    self.hook.delivered_total.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(why) => {
                    call.failed();
                    let failures = self
                        .hook
                        .failed_attempts_total
                        .fetch_add(1, Ordering::Relaxed);
                    if failures.is_multiple_of(100) {
                        tracing::warn!(webhook = self.hook.id.as_str(), seq = event.seq, %why, "webhook delivery failed; retrying with back-off");
                    } else {
                        tracing::debug!(webhook = self.hook.id.as_str(), seq = event.seq, %why, "webhook delivery failed");
                    }
                }
            }
            // A receiver that fails may stay down for hours: the cursor reaches the disk now.
            self.flush_if(flushed, true).await;
            let delay = delays.next().unwrap_or(self.timing.backoff_max);
            self.sleep(delay).await?;
        }
    }

    /// Flushes a moved cursor: now when `now`, else once [`CURSOR_FLUSH_INTERVAL`] has passed
    /// since the last flush.
    async fn flush_if(&self, flushed: &mut Flushed, now: bool) {
        if flushed.dirty && (now || flushed.at.elapsed() >= CURSOR_FLUSH_INTERVAL) {
            self.flush().await;
            *flushed = Flushed {
                at: Instant::now(),
                dirty: false,
            };
        }
    }

    /// One POST; `Err` says why it failed (a transport error, a timeout, a status not 2xx).
    async fn attempt(&self, event: &SourcedEvent) -> Result<(), String> {
        let signed = HeaderValue::try_from(signature(&self.secret, &event.body))
            .map_err(|e| format!("the signature is not a header value: {e}"))?;
        let request = Req::post(&self.path)
            .json_bytes(event.body.clone())
            .header("user-agent", HeaderValue::from_static(USER_AGENT))
            .header(EVENT_ID_HEADER, HeaderValue::from(event.seq))
            .header(SIGNATURE_HEADER, signed);
        match self
            .http
            .request(&request, self.timing.request_timeout)
            .await
        {
            Ok(answer) if (200..300).contains(&answer.status) => Ok(()),
            Ok(answer) => Err(format!("the receiver answered {}", answer.status)),
            Err(Failure::Timeout(why) | Failure::Transport(why)) => Err(why),
        }
    }

    /// The store's retention dropped events this receiver never got: nothing can send them
    /// any more, so the cursor moves to the oldest kept event, loudly (an error in the log
    /// and `skipped_gone_total`), rather than leaving the webhook stuck for ever.
    /// Answers whether the cursor moved.
    fn skip_gone(&self, gone: Gone) -> bool {
        let resume_after = gone.oldest_seq.saturating_sub(1);
        let skipped = resume_after.saturating_sub(gone.after);
        if skipped == 0 {
            return false;
        }
        tracing::error!(webhook = self.hook.id.as_str(), after = gone.after, oldest_kept = gone.oldest_seq, skipped, "the event store no longer keeps events this webhook has not received; they are skipped");
        self.hook
            .skipped_gone_total
            .fetch_add(skipped, Ordering::Relaxed);
        self.advance(resume_after);
        true
    }

    /// Moves the cursor in memory; [`Worker::flush`] stores it (one write per flush, not
    /// one per event).
    fn advance(&self, seq: u64) {
        self.hook.cursor.store(seq, Ordering::Release);
    }

    async fn flush(&self) {
        let (hook, cursors) = (self.hook.clone(), self.cursors.clone());
        let flushed = tokio::task::spawn_blocking(move || save_and_flush(&[hook], &*cursors)).await;
        if let Ok(Err(e)) | Err(e) = flushed.map_err(|e| e.to_string()) {
            tracing::warn!(webhook = self.hook.id.as_str(), error = %e, "cannot store the webhook cursors");
        }
    }

    async fn sleep(&self, delay: Duration) -> Result<(), Stopped> {
        self.until_stopped(tokio::time::sleep(delay)).await
    }

    /// `work`, unless the server stops first.
    async fn until_stopped<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Stopped> {
        let mut stop = self.stop.clone();
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => Err(Stopped),
            done = work => Ok(done),
        }
    }
}
