//! The node's durable event feed and audit trail, as ports: what the HTTP streams
//! (`GET /v1/events`, the availability stream), the webhooks and the audit endpoints read.
//!
//! The implementation (a sled store of its own in the data directory, written from the
//! publication point, [`crate::publish`]) lives in the server crate; the engine and the gateway
//! see only these traits, so neither depends on sled.
//!
//! The feed is a per-node sequence of domain events, gap-free and increasing from 1, each
//! stored durably before anyone can read it: a consumer never sees an event that a crash
//! takes back, and a restart serves the same events under the same sequence numbers. The
//! feed keeps a bounded retention (the oldest events are dropped past it); a read from
//! before the oldest kept event is [`Gone`], never a silent gap.
//!
//! # Example: a consumer that resumes after `last` and follows new events
//! ```ignore
//! let mut head = feed.watch_head();
//! loop {
//!     let batch = feed.read_after(last, 256)?;          // history first, in order
//!     for event in &batch { deliver(event.seq, &event.event_type, &event.data); }
//!     if let Some(event) = batch.last() { last = event.seq; continue; }
//!     head.changed().await?;                             // then wait for new sequences
//! }
//! ```

use std::sync::Arc;

use tokio::sync::watch;

/// One domain event as stored: `data` is exactly the JSON object an SSE message carries in
/// `data:` and a webhook posts as its body (`{"seq","type","at","shard", ids...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The per-node sequence number (SSE `id:`, webhook `X-Holdfast-Event-Id`).
    pub seq: u64,
    /// The contract's event name (`AppointmentReserved`, ..., SSE `event:`).
    pub event_type: String,
    /// The event as one JSON object (no trailing newline).
    pub data: String,
}

/// A read from before the oldest event the feed keeps (its retention passed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    /// The sequence asked to read after.
    pub after: u64,
    /// The oldest sequence still kept: a consumer may resume after `oldest_seq - 1`.
    pub oldest_seq: u64,
}

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "events after {} are no longer kept (the oldest kept is {}): resume from {} or later",
            self.after,
            self.oldest_seq,
            self.oldest_seq.saturating_sub(1)
        )
    }
}

/// The node's durable, ordered event feed. Cheap to share (`Arc<dyn EventFeed>`).
pub trait EventFeed: Send + Sync + 'static {
    /// Up to `max` stored events with a sequence greater than `after`, in order and without
    /// gaps; empty when none yet. [`Gone`] when `after + 1` is older than the retention.
    fn read_after(&self, after: u64, max: usize) -> Result<Vec<StoredEvent>, Gone>;
    /// [`EventFeed::read_after`] with each event shared rather than copied: a feed that keeps
    /// recent events in memory hands the same ones to every reader.
    fn read_shared(&self, after: u64, max: usize) -> Result<Vec<Arc<StoredEvent>>, Gone> {
        self.read_after(after, max)
            .map(|events| events.into_iter().map(Arc::new).collect())
    }
    /// The highest durably stored sequence (0 before the first event).
    fn head(&self) -> u64;
    /// Follows [`EventFeed::head`]: changes each time new events are durable.
    fn watch_head(&self) -> watch::Receiver<u64>;
}

/// One status change of an appointment in the audit chain (docs/API.md, "Audit").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub at: String,
    pub appointment_id: String,
    pub status: String,
    /// Hex SHA-256 over `prev_hash` and this record's canonical bytes.
    pub hash: String,
    /// The previous record's `hash` (64 zeros for the first record).
    pub prev_hash: String,
}

/// What a walk of the audit chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerdict {
    Ok { records: u64, head: String },
    Broken { first_bad_seq: u64, reason: String },
}

/// The append-only, hash-chained audit log.
pub trait AuditTrail: Send + Sync + 'static {
    /// Walks the whole chain (streaming, bounded memory).
    fn verify(&self) -> AuditVerdict;
    /// One appointment's records in order, at most `max`.
    fn history(&self, appointment_id: &str, max: usize) -> Vec<AuditRecord>;
}
