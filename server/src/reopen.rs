//! Recovering in place after the log failed: a write that failed on disk (`ENOSPC` or `EIO`
//! from sled or our `fdatasync`) turns the write-ahead log failed for good (sled 0.34 does not
//! trust itself after an I/O error), and every shard refuses writes with 503 `log_failed`.
//! This supervisor heals the node in the same process:
//!
//! 1. It asks the node every [`LOG_WATCH_PERIOD`] whether its log failed.
//! 2. Then it waits until the data directory's filesystem has room again: the log's headroom
//!    probe (`holdfast_persistence::Headroom`) with the server's reserve, but at least
//!    [`REOPEN_FREE_BYTES_MIN`] (with `--disk-reserve-mib 0` a disk with one free byte is not
//!    worth a restart). Meanwhile the node serves reads and refuses writes as before.
//! 3. It stops the node without a snapshot (nothing more can be written), which drops every
//!    handle on the data directory's sled databases: the log, the event store, the webhooks'
//!    cursors. The listening socket stays open; while no node serves, every request is
//!    answered 503 `UNAVAILABLE` (`/readyz`: `NOT_READY`), `details.reason` `log_failed`,
//!    with `Retry-After`.
//! 4. It starts the node again exactly as at start (`serve.rs`, the one start and recovery
//!    path): the log and the event store are opened, every shard recovers from the log, the
//!    webhooks resume from their durable cursors, and the same socket serves again. What
//!    lives only in memory and should survive is handed over ([`crate::server`]'s `Carried`:
//!    the rate-limit buckets and the waiting room's tickets, and the restart count); the
//!    event streams' subscribers are cut and resume with `Last-Event-ID`.
//! 5. When the log opens and every shard recovered, the restart is counted
//!    (`/v1/admin/shards`, `storage.restarts_in_place`). When it fails (still no room, sled's
//!    lock still held by a handle that leaked, `EIO`), it is tried again after a back-off
//!    from [`REOPEN_BACKOFF_MIN`], doubling to [`REOPEN_BACKOFF_MAX`], each attempt logged.
//!
//! A node whose log fails again within [`REOPEN_STABLE_AFTER`] of a restart waits its
//! back-off before the next one, so a disk that keeps failing never makes it spin.
//!
//! Only a node on the write-ahead log is restarted: without a log nothing can fail, and a
//! journal handed in by a caller cannot be opened again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use holdfast_engine::node::RETRY_AFTER_S;
use holdfast_gateway::error::ApiError;
use holdfast_gateway::restarts::InPlaceRestarts;
use holdfast_gateway::routes::ops::types::HealthJson;
use holdfast_persistence::{Headroom, WAL_SUBDIR};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::connections::close_connection;
use crate::server::{start_carried, Carried, RunningServer, ServerConfig, Storage};
use crate::webhooks::WebhooksConfig;

/// How often the supervisor asks whether the log failed, and, once it has, whether the disk
/// has room again. A `statvfs` and an atomic load each time: nothing next to serving.
pub const LOG_WATCH_PERIOD: Duration = Duration::from_millis(100);
/// The first wait before opening the log again after an attempt failed (and before a restart
/// that comes within [`REOPEN_STABLE_AFTER`] of the previous one).
pub const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest wait between attempts: the back-off doubles up to it.
pub const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A node that served this long since its restart has its back-off reset.
pub const REOPEN_STABLE_AFTER: Duration = Duration::from_secs(60);
/// Free bytes the data directory's filesystem must have, at least, before the node is
/// restarted (more when `--disk-reserve-mib` asks for more): room for sled's next segments
/// (512 KiB each), the event store's catch-up and the first writes after the restart.
pub const REOPEN_FREE_BYTES_MIN: u64 = 8 * 1024 * 1024;
/// How long stopping the failed node may take (the requests' drain, `SHUTDOWN_DRAIN`, the
/// shards' stop, the event recorder's and the log's): past it the attempt goes on, and a
/// handle that is still open shows as a lock the next open waits for.
pub const RESTART_STOP_MAX: Duration = Duration::from_secs(30);

/// A server whose node restarts in place after its log failed.
pub struct Supervised {
    pub addr: SocketAddr,
    restarts: Arc<InPlaceRestarts>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Supervised {
    /// The restarts in place so far.
    pub fn restarts(&self) -> &InPlaceRestarts {
        &self.restarts
    }

    /// Stops the node as SIGTERM does ([`RunningServer::stop_without_snapshot`]), whether it
    /// serves, waits for room or is being restarted.
    pub async fn stop_without_snapshot(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What the supervisor needs to start the node again.
struct Restarter {
    config: ServerConfig,
    webhooks: Option<WebhooksConfig>,
    /// `None` when the node has no write-ahead log (nothing to reopen).
    headroom: Option<Headroom>,
    stop: watch::Receiver<bool>,
    backoff: Backoff,
}

/// Supervises `server`, started from `config` (and, when given, its webhooks from
/// `webhooks`): see the module docs.
pub fn supervise(
    server: RunningServer,
    config: ServerConfig,
    webhooks: Option<WebhooksConfig>,
) -> Supervised {
    let headroom = match &config.storage {
        Storage::Wal { dir, config } => Some(Headroom::new(
            &dir.join(WAL_SUBDIR),
            config.disk_reserve_bytes.max(REOPEN_FREE_BYTES_MIN),
            config.disk_fault.clone(),
        )),
        Storage::Memory | Storage::Journal(_) => None,
    };
    let (stop_tx, stop) = watch::channel(false);
    let addr = server.addr;
    let restarts = server.state.restarts.clone();
    let restarter = Restarter {
        config,
        webhooks,
        headroom,
        stop,
        backoff: Backoff::default(),
    };
    let task = tokio::spawn(restarter.run(server));
    Supervised {
        addr,
        restarts,
        stop: stop_tx,
        task,
    }
}

impl Restarter {
    async fn run(mut self, mut server: RunningServer) {
        let mut restarted_at: Option<Instant> = None;
        loop {
            let Some(why) = self.wait_for_failure(&server).await else {
                return server.stop_without_snapshot().await;
            };
            tracing::error!(reason = %why, "the log failed: writes are refused (503 log_failed); the node restarts in place once the disk has room");
            if restarted_at.is_none_or(|at| at.elapsed() >= REOPEN_STABLE_AFTER) {
                self.backoff.reset();
            } else {
                // Failed again soon after a restart: not at once again.
                let wait = self.backoff.next();
                if !self.pause(wait).await {
                    return server.stop_without_snapshot().await;
                }
            }
            if !self.wait_for_room().await {
                return server.stop_without_snapshot().await;
            }
            let carried = server.carried();
            let stopping = Instant::now();
            if tokio::time::timeout(RESTART_STOP_MAX, server.stop_without_snapshot())
                .await
                .is_err()
            {
                tracing::error!(
                    stop_max_ms = RESTART_STOP_MAX.as_millis() as u64,
                    "the failed node did not stop in time; opening the log again anyway"
                );
            }
            tracing::warn!(
                elapsed_ms = stopping.elapsed().as_millis() as u64,
                "the failed node stopped; opening the log again"
            );
            let Some(started) = self.reopen(carried, &why).await else {
                return;
            };
            server = started;
            restarted_at = Some(Instant::now());
        }
    }

    /// Waits until the node's log failed (its reason), or `None` when asked to stop.
    async fn wait_for_failure(&mut self, server: &RunningServer) -> Option<String> {
        loop {
            if *self.stop.borrow() {
                return None;
            }
            if self.headroom.is_some() {
                if let Some(why) = server.log_failure() {
                    return Some(why);
                }
            }
            if !self.pause(LOG_WATCH_PERIOD).await {
                return None;
            }
        }
    }

    /// Waits until the data directory's filesystem has room; false when asked to stop.
    async fn wait_for_room(&mut self) -> bool {
        let mut said = false;
        loop {
            let state = match &self.headroom {
                Some(headroom) => headroom.recheck(),
                None => return true,
            };
            if state.is_writable() {
                return true;
            }
            if !said {
                tracing::warn!(
                    ?state,
                    "waiting for room on the data directory's disk before restarting the node"
                );
                said = true;
            }
            if !self.pause(LOG_WATCH_PERIOD).await {
                return false;
            }
        }
    }

    /// Starts the node again on `carried`, with back-off, while a stand-in answers 503 on the
    /// socket; `None` when asked to stop first.
    async fn reopen(&mut self, carried: Carried, why: &str) -> Option<RunningServer> {
        let down_since = Instant::now();
        for attempt in 1u64.. {
            let standin = StandIn::serve(&carried, &self.config, why);
            let wait = match self.start_once(carried.clone(), attempt).await {
                Ok(server) => {
                    standin.stop().await;
                    match self.finish_start(server, attempt, down_since, why).await {
                        Ok(server) => return Some(server),
                        Err(()) => self.backoff.next(),
                    }
                }
                Err(e) => {
                    standin.stop().await;
                    let wait = self.backoff.next();
                    tracing::error!(attempt, error = %e, retry_in_ms = wait.as_millis() as u64, "restarting the node in place failed; retrying");
                    wait
                }
            };
            // While waiting, the socket answers 503 again.
            let standin = StandIn::serve(&carried, &self.config, why);
            let go_on = self.pause(wait).await && self.wait_for_room().await;
            standin.stop().await;
            if !go_on {
                return None;
            }
        }
        None
    }

    /// Opens the log and the event store and starts the node (its shards recover meanwhile).
    async fn start_once(&self, carried: Carried, attempt: u64) -> Result<RunningServer, String> {
        tracing::warn!(attempt, "restarting the node in place");
        let mut server = start_carried(self.config.clone(), carried).await?;
        if let Some(webhooks) = &self.webhooks {
            if let Err(e) = server.start_webhooks(webhooks) {
                tracing::error!(error = %e, "the webhooks could not resume after the restart in place");
            }
        }
        Ok(server)
    }

    /// Waits for every shard to recover and counts the restart; a node that cannot recover
    /// is stopped again (`Err`: the caller retries after its back-off).
    async fn finish_start(
        &self,
        server: RunningServer,
        attempt: u64,
        down_since: Instant,
        why: &str,
    ) -> Result<RunningServer, ()> {
        let recovered = server.state.node.wait_recovered().await;
        if let Err(e) = recovered {
            tracing::error!(attempt, error = %e, "the node restarted in place but a shard could not recover; stopping it to retry");
            server.stop_without_snapshot().await;
            return Err(());
        }
        let restarts = server.state.restarts.clone();
        restarts.record(server.state.node.now_ms(), why.to_string());
        tracing::warn!(
            attempt,
            restarts_in_place = restarts.count(),
            down_ms = down_since.elapsed().as_millis() as u64,
            "the node restarted in place after its log failed and takes writes again"
        );
        Ok(server)
    }

    /// Sleeps `wait`; false when asked to stop meanwhile.
    async fn pause(&mut self, wait: Duration) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => !*self.stop.borrow(),
            _ = self.stop.changed() => false,
        }
    }
}

/// The waits between attempts: [`REOPEN_BACKOFF_MIN`] doubling to [`REOPEN_BACKOFF_MAX`].
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            next: REOPEN_BACKOFF_MIN,
        }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(REOPEN_BACKOFF_MAX);
        wait
    }

    fn reset(&mut self) {
        self.next = REOPEN_BACKOFF_MIN;
    }
}

/// Answers on the listening socket while no node serves: 503 to everything but `/healthz`.
struct StandIn {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl StandIn {
    fn serve(carried: &Carried, config: &ServerConfig, why: &str) -> StandIn {
        let message =
            format!("this node is restarting in place after its log failed ({why}); retry shortly");
        let ready_message = message.clone();
        let app = axum::Router::new()
            .route("/healthz", get(|| async { Json(HealthJson::new("ok")) }))
            .route(
                "/readyz",
                get(move || async move {
                    ApiError::not_ready(RETRY_AFTER_S)
                        .with_message(ready_message)
                        .with_detail("reason", "log_failed")
                        .into_response()
                }),
            )
            .fallback(move || async move {
                ApiError::unavailable(RETRY_AFTER_S, message)
                    .with_detail("reason", "log_failed")
                    .into_response()
            })
            .layer(axum::middleware::map_response(
                |mut response: Response| async move {
                    close_connection(&mut response);
                    response
                },
            ));
        let (shutdown, rx) = oneshot::channel::<()>();
        let listener = carried.listener.clone();
        let limits = config.connections;
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.await;
            };
            crate::connections::serve(listener, app, limits, stopped).await;
        });
        StandIn { shutdown, task }
    }

    /// Stops accepting; its answers are instant, so the drain is short (bounded anyway).
    async fn stop(self) {
        let _ = self.shutdown.send(());
        let mut task = self.task;
        if tokio::time::timeout(crate::server::SHUTDOWN_DRAIN, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_to_its_bound_and_resets() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next(), REOPEN_BACKOFF_MIN);
        assert_eq!(backoff.next(), REOPEN_BACKOFF_MIN * 2);
        for _ in 0..20 {
            assert!(backoff.next() <= REOPEN_BACKOFF_MAX);
        }
        assert_eq!(backoff.next(), REOPEN_BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.next(), REOPEN_BACKOFF_MIN);
    }
}
