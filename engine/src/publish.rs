//! The one publication point of a node: every applied event, once its log records are durable,
//! is published here once, with its names resolved (clinic, slot, vaccine, citizen and
//! appointment ids and the status it set; never shard-local indices), for the consumers that
//! watch the campaign (event streams, webhooks, the audit chain, metrics).
//!
//! A consumer never sees an event a crash can take back: a shard hands its events here from
//! the journal's completion, after the batch holding them is stored. Events of one shard come
//! in log order; events of different shards interleave in the order their batches completed.
//!
//! Bounded, and never in a shard's way: a [`tokio::sync::broadcast`] ring of
//! [`PUBLISH_BUFFER_EVENTS`] events. Publishing never waits and never allocates per
//! subscriber. A subscriber that falls more than the bound behind loses the oldest events it
//! had not read and is told how many (`RecvError::Lagged(n)`); it must then resume from the
//! log by sequence number (`shard`, `wal_seq`) or give up. Memory stays at the ring's size
//! however slow a subscriber is. With nobody subscribed, shards skip resolving names at all.
//!
//! One consumer is lossless: the node's [`Recorder`] (the durable event feed and audit chain,
//! docs/ARCHITECTURE.md, "Events and audit"). It is handed every published batch before the
//! ring, and says per shard up to which `wal_seq` it has stored; a shard keeps the changes
//! above that in its snapshots and re-publishes them, with its replayed log tail, at recovery.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::clock::UnixMs;
use crate::ids::{AppointmentId, WaitlistId};
use crate::model::Status;
use crate::waitlist::WaitlistExit;

/// Events a subscriber may fall behind before it loses the oldest. At about 200 bytes an
/// event this is about 13 MiB, and a second of a launch morning's busiest traffic (measured
/// at 15-25 K changes/s on this machine).
pub const PUBLISH_BUFFER_EVENTS: usize = 65_536;

/// One durable change, its names resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub shard: u32,
    /// The sequence number of the change's log record in its shard: with `shard`, where to
    /// resume from the log.
    pub wal_seq: u64,
    pub at_ms: UnixMs,
    pub change: Change,
}

/// What changed, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    VaccinePut {
        vaccine: Arc<str>,
    },
    ClinicPut {
        clinic_id: Arc<str>,
    },
    /// Doses of a batch changed (a delivery, or an adjustment by `delta`).
    StockChanged {
        clinic_id: Arc<str>,
        vaccine: Arc<str>,
        batch: String,
        delta: i64,
    },
    SlotPut {
        clinic_id: Arc<str>,
        slot_id: Arc<str>,
    },
    SlotCancelled {
        clinic_id: Arc<str>,
        slot_id: Arc<str>,
    },
    CitizenPut {
        citizen_id: Arc<str>,
    },
    /// A citizen's claim was taken or settled (the citizen side of booking).
    CitizenClaim {
        citizen_id: Arc<str>,
    },
    /// An appointment took `status` (PENDING when it was created).
    AppointmentStatus {
        appointment_id: AppointmentId,
        clinic_id: Arc<str>,
        slot_id: Arc<str>,
        vaccine: Arc<str>,
        citizen_id: Arc<str>,
        status: Status,
        /// Made by a waitlist offer (docs/API.md, "Waitlist").
        offered_from_waitlist: bool,
        /// A reschedule's links (docs/API.md, "Reschedule"): the new appointment names the
        /// one it replaced, the old one (once released or cancelled) the one replacing it.
        rescheduled_from: Option<AppointmentId>,
        rescheduled_to: Option<AppointmentId>,
    },
    AppointmentAtRisk {
        appointment_id: AppointmentId,
        clinic_id: Arc<str>,
        at_risk: bool,
    },
    /// Booked while the external check was unavailable (`provisional` policy).
    AppointmentNeedsReview {
        appointment_id: AppointmentId,
        clinic_id: Arc<str>,
    },
    /// A citizen joined a slot's waitlist.
    WaitlistJoined {
        waitlist_id: WaitlistId,
        clinic_id: Arc<str>,
        slot_id: Arc<str>,
        citizen_id: Arc<str>,
    },
    /// A waitlist entry left, was served or was skipped.
    WaitlistLeft {
        waitlist_id: WaitlistId,
        why: WaitlistExit,
    },
}

/// The lossless consumer of every published change: it stores them durably (the server's
/// event store). Per shard, changes arrive in `wal_seq` order; after a restart the changes a
/// shard published but the recorder had not stored are published again (and those it had
/// stored may be too: it skips a `wal_seq` at or below [`Recorder::recorded`]).
pub trait Recorder: Send + Sync + 'static {
    /// Takes a batch. May block the caller (the journal's completion) while the recorder is
    /// its bound behind: back-pressure, like the journal's own queue, never loss.
    fn record(&self, changes: Vec<Published>);
    /// The highest `wal_seq` of `shard` whose change is durably stored by the recorder.
    fn recorded(&self, shard: u32) -> u64;
}

/// The node's publisher; shards hold it, consumers [`Publisher::subscribe`].
pub struct Publisher {
    tx: broadcast::Sender<Arc<Published>>,
    recorder: Option<Arc<dyn Recorder>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("recorded", &self.recorder.is_some())
            .finish()
    }
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher::new(PUBLISH_BUFFER_EVENTS)
    }
}

impl Publisher {
    /// A publisher whose subscribers may fall `buffer_events` behind.
    pub fn new(buffer_events: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer_events.max(1));
        Publisher { tx, recorder: None }
    }

    /// A publisher that hands every change to `recorder` first.
    pub fn with_recorder(recorder: Arc<dyn Recorder>) -> Self {
        Publisher {
            recorder: Some(recorder),
            ..Publisher::default()
        }
    }

    /// The recorder, when the node has one.
    pub fn recorder(&self) -> Option<&Arc<dyn Recorder>> {
        self.recorder.as_ref()
    }

    /// Every event published from now on, until the receiver lags past the bound.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// Whether anyone listens; shards resolve names only then.
    pub fn is_watched(&self) -> bool {
        self.recorder.is_some() || self.tx.receiver_count() > 0
    }

    /// Publishes durable changes, in order. Never waits for a subscriber; the recorder may
    /// hold the caller while it is its bound behind ([`Recorder::record`]).
    pub fn publish(&self, changes: Vec<Published>) {
        if changes.is_empty() {
            return;
        }
        if self.tx.receiver_count() == 0 {
            // Nobody subscribed: the recorder takes the batch itself, no copy.
            if let Some(recorder) = &self.recorder {
                recorder.record(changes);
            }
            return;
        }
        if let Some(recorder) = &self.recorder {
            recorder.record(changes.clone());
        }
        for change in changes {
            // No receiver left: nobody to tell, which is not an error.
            let _ = self.tx.send(Arc::new(change));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(wal_seq: u64) -> Published {
        Published {
            shard: 0,
            wal_seq,
            at_ms: 0,
            change: Change::VaccinePut {
                vaccine: "pfz".into(),
            },
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_the_oldest_and_is_told_how_many() {
        let publisher = Publisher::new(4);
        assert!(!publisher.is_watched());
        let mut slow = publisher.subscribe();
        assert!(publisher.is_watched());
        // Publishing 10 into a ring of 4 neither waits nor grows.
        publisher.publish((1..=10).map(change).collect());
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(lost)) => assert_eq!(lost, 6),
            other => panic!("expected a lag notice, got {other:?}"),
        }
        let next = slow.recv().await.expect("the newest 4 are kept");
        assert_eq!(next.wal_seq, 7);
    }
}
