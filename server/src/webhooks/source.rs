//! Where webhooks read events from: the [`EventSource`] port, so the delivery engine does not
//! know how the node keeps its event sequence; [`FeedSource`] on the node's durable
//! [`EventFeed`], and an in-memory [`MemorySource`] for tests.

use std::sync::{Arc, Mutex};

use holdfast_engine::client::BoxFuture;
use holdfast_engine::feed::{EventFeed, Gone};
use hyper::body::Bytes;
use tokio::sync::watch;

/// One event as a receiver gets it: its sequence (`X-Holdfast-Event-Id`) and its JSON body,
/// the exact bytes that are signed and sent (the same object the SSE `data` carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcedEvent {
    pub seq: u64,
    /// Shared by every attempt to send it (a clone is a reference count, not a copy).
    pub body: Bytes,
}

/// The node's durable event sequence, as webhooks read it.
pub trait EventSource: Send + Sync + 'static {
    /// The events with a sequence above `after`, in increasing order, at most `max` of them
    /// (fewer, or none, when fewer exist).
    fn read_after(
        &self,
        after: u64,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<SourcedEvent>, ReadError>>;

    /// The sequence of the newest event (0 before the first).
    fn head(&self) -> u64;

    /// Resolves once an event above `at` exists (at once if one already does); it may also
    /// resolve early, so the caller reads again to find out.
    fn wait_for_new(&self, at: u64) -> BoxFuture<'static, ()>;
}

/// Why a read found no events to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The store no longer keeps the events after `after` (its retention passed them).
    Gone(Gone),
    /// The store cannot answer now; the caller retries later.
    Failed(String),
}

/// The node's durable event feed as webhooks read it. Its reads are sled reads, so they run
/// on the blocking pool, never on a runtime thread.
pub struct FeedSource(pub Arc<dyn EventFeed>);

impl EventSource for FeedSource {
    fn read_after(
        &self,
        after: u64,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<SourcedEvent>, ReadError>> {
        let feed = self.0.clone();
        Box::pin(async move {
            let read = tokio::task::spawn_blocking(move || feed.read_shared(after, max)).await;
            match read {
                Ok(Ok(events)) => Ok(events
                    .into_iter()
                    .map(|event| SourcedEvent {
                        seq: event.seq,
                        body: Bytes::copy_from_slice(event.data.as_bytes()),
                    })
                    .collect()),
                Ok(Err(gone)) => Err(ReadError::Gone(gone)),
                Err(e) => Err(ReadError::Failed(format!(
                    "the read of the feed failed: {e}"
                ))),
            }
        })
    }

    fn head(&self) -> u64 {
        self.0.head()
    }

    fn wait_for_new(&self, at: u64) -> BoxFuture<'static, ()> {
        let mut head = self.0.watch_head();
        Box::pin(async move {
            if head.wait_for(|head| *head > at).await.is_err() {
                // The store is gone (the node is stopping): nothing new will come, and
                // answering at once would spin the caller; its stop signal ends the wait.
                std::future::pending::<()>().await;
            }
        })
    }
}

/// Events in memory, numbered from 1 (tests, and a node without a log).
pub struct MemorySource {
    events: Mutex<Vec<SourcedEvent>>,
    head: watch::Sender<u64>,
}

impl Default for MemorySource {
    fn default() -> Self {
        MemorySource {
            events: Mutex::new(Vec::new()),
            head: watch::channel(0).0,
        }
    }
}

impl MemorySource {
    /// Appends an event with the next sequence; answers that sequence.
    pub fn push(&self, body: impl Into<Bytes>) -> u64 {
        let seq = {
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            let seq = events.len() as u64 + 1;
            events.push(SourcedEvent {
                seq,
                body: body.into(),
            });
            seq
        };
        self.head.send_replace(seq);
        seq
    }
}

impl EventSource for MemorySource {
    fn read_after(
        &self,
        after: u64,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<SourcedEvent>, ReadError>> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let from = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(events.len());
        let page: Vec<SourcedEvent> = events[from..].iter().take(max).cloned().collect();
        Box::pin(async move { Ok(page) })
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn wait_for_new(&self, at: u64) -> BoxFuture<'static, ()> {
        let mut head = self.head.subscribe();
        Box::pin(async move {
            if head.wait_for(|head| *head > at).await.is_err() {
                // The store is gone (the node is stopping): nothing new will come, and
                // answering at once would spin the caller; its stop signal ends the wait.
                std::future::pending::<()>().await;
            }
        })
    }
}
