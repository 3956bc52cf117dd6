//! The channel that carries claim notices from clinics' shards to the citizens' shards (the
//! design is in [`crate::claims`]): a shard hands the notices of its durable changes to its
//! [`Settler`] from the journal's completion (never waiting), and one task per node drains
//! the [`SettlerInbox`] in batches and delivers them (`Node::settle`, in
//! [`crate::reconcile`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::claims::Settle;

/// Notices waiting for the settler, across the node. Each applied change sends at most one,
/// and the settler drains them in batches far faster than shards make them; past the bound
/// (a citizen's shard unreachable for a long time) they are dropped with an error in the
/// log, and the claims they name are settled when next looked at (a new booking verifies a
/// claim in its way) or at the next start (the reconciliation).
pub const SETTLE_BACKLOG_MAX: usize = 1_000_000;
/// Most notices the settler sends in one round.
pub const SETTLE_BATCH_MAX: usize = 4096;

/// The shards' side of the notice channel.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Vec<Settle>>,
    backlog: Arc<AtomicUsize>,
}

impl Settler {
    /// The sender shards hold, and the receiver [`run_settler`] drains.
    pub fn channel() -> (Settler, SettlerInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        (
            Settler {
                tx,
                backlog: backlog.clone(),
            },
            SettlerInbox { rx, backlog },
        )
    }

    /// How many notices wait for the settler (across the node).
    pub fn backlog(&self) -> Arc<AtomicUsize> {
        self.backlog.clone()
    }

    /// Queues notices; never waits (it is called from a journal completion).
    pub fn send(&self, notices: Vec<Settle>) {
        let n = notices.len();
        if self.backlog.fetch_add(n, Ordering::AcqRel) + n > SETTLE_BACKLOG_MAX {
            self.backlog.fetch_sub(n, Ordering::AcqRel);
            tracing::error!(
                notices = n,
                bound = SETTLE_BACKLOG_MAX,
                "claim notices dropped: the backlog is full"
            );
            return;
        }
        if self.tx.send(notices).is_err() {
            self.backlog.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

pub struct SettlerInbox {
    rx: mpsc::UnboundedReceiver<Vec<Settle>>,
    backlog: Arc<AtomicUsize>,
}

impl SettlerInbox {
    /// Hands notices to `deliver` in batches of at most [`SETTLE_BATCH_MAX`], until every
    /// sender (every shard) is gone or `deliver` answers `false` (its node is gone).
    pub async fn run<F, Fut>(mut self, deliver: F)
    where
        F: Fn(Vec<Settle>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        while let Some(mut batch) = self.rx.recv().await {
            while batch.len() < SETTLE_BATCH_MAX {
                match self.rx.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            let delivered = deliver(batch).await;
            self.backlog.fetch_sub(n, Ordering::AcqRel);
            if !delivered {
                return;
            }
        }
    }
}
