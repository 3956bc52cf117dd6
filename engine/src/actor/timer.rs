//! One timer task per shard (not one per deadline): it sleeps until the shard's earliest
//! deadline, learned through a `watch` channel, and sends `Tick`. Ticks also run
//! housekeeping (purging old idempotency records), at least every
//! [`HOUSEKEEPING_INTERVAL_MS`].

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::watch;

use super::ShardMsg;
use crate::clock::{Clock, UnixMs};

/// Longest the timer task sleeps without a tick, so housekeeping runs and a wall-clock jump
/// is noticed within this bound even when no deadline is near.
pub const HOUSEKEEPING_INTERVAL_MS: i64 = 1000;
/// After a tick, how long the timer waits for the shard to move its earliest deadline before
/// looking again; bounds the re-tick rate while a backlog of expiries drains.
const TICK_RETRY_MS: u64 = 5;

/// Sleeps until the shard's earliest deadline (at most `HOUSEKEEPING_INTERVAL_MS`) and sends
/// `Tick`. Ends when the actor is gone (a send fails) or the shard drops its sender.
pub(super) async fn run(
    actor: ActorRef<ShardMsg>,
    clock: Arc<dyn Clock>,
    mut earliest_rx: watch::Receiver<Option<UnixMs>>,
) {
    loop {
        let earliest = *earliest_rx.borrow_and_update();
        let now_ms = clock.now_ms();
        let sleep_ms = match earliest {
            // +1: wake just after the deadline, so the tick finds it due.
            Some(deadline) => (deadline - now_ms + 1).clamp(0, HOUSEKEEPING_INTERVAL_MS),
            None => HOUSEKEEPING_INTERVAL_MS,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {
                if actor.cast(ShardMsg::Tick).is_err() {
                    return;
                }
                // Give the shard a moment to act on the tick before looking again.
                let waited = tokio::time::timeout(
                    Duration::from_millis(TICK_RETRY_MS),
                    earliest_rx.changed(),
                )
                .await;
                if let Ok(Err(_)) = waited {
                    return;
                }
            }
            changed = earliest_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
