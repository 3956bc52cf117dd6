//! Starting and stopping one server: the log and the event store, the node, the listener, and
//! graceful shutdown (no new connections, in-flight requests finish, shards stop). What
//! `holdfast serve` makes of its flags is [`crate::serve`]; the restart in place after a failed
//! log is [`crate::reopen`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use holdfast_engine::journal::{Journal, NoJournal};
use holdfast_engine::ring::Ring;
use holdfast_engine::{Clock, Node, NodeConfig, SystemClock};
use holdfast_gateway::admission::{Admission, AdmissionConfig};
use holdfast_gateway::app::{build_app, AppState, Settings};
use holdfast_gateway::auth::JwtKey;
use holdfast_gateway::metrics::Metrics;
use holdfast_gateway::qr::QrKeyring;
use holdfast_gateway::restarts::InPlaceRestarts;
use holdfast_gateway::state::AppShared;
use holdfast_gateway::subscribers::StreamLimits;
use holdfast_persistence::{Wal, WalConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::connections::ConnectionLimits;
use crate::eligibility::{ExternalConfig, HttpEligibility};
use crate::events::EventStore;
use crate::journal::WalJournal;
use crate::webhooks::{
    CursorStore, EventSource, FeedSource, MemoryCursors, Webhooks, WebhooksConfig, CURSOR_TREE,
};

/// Where shards keep their state.
#[derive(Clone)]
pub enum Storage {
    /// Nowhere: a restart loses everything (tests of the HTTP layer).
    Memory,
    /// The write-ahead log in `dir` (sled, group commit).
    Wal { dir: PathBuf, config: WalConfig },
    /// Any other journal (tests that control recovery or failures; embedding).
    Journal(Arc<dyn Journal>),
}

/// What a server needs to start, decided from the command line (or by a test). Cloned for
/// each restart in place (`reopen.rs`).
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub node: NodeConfig,
    pub jwt_secret: Vec<u8>,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub storage: Storage,
    /// The external eligibility check (`--eligibility-url` and its flags); `None` for none.
    /// Its breaker reads time from `clock`.
    pub external: Option<ExternalConfig>,
    /// The QR keys (`--qr-key-file`); `None`: one key derived from `jwt_secret`.
    pub qr_keys: Option<QrKeyring>,
    /// Rate limits and the waiting room (`--rate-limit`, `--waiting-room`, ...); all off by
    /// default. Their buckets and admissions read time from `clock`.
    pub admission: AdmissionConfig,
    /// The connection bound and the header and body timeouts (`--connections-max`).
    pub connections: ConnectionLimits,
}

/// On shutdown, how long in-flight requests may take to finish before their connections are
/// closed (an answer not sent is a request the client retries; nothing acknowledged is lost).
pub const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// What a restart in place hands from one server to the next (`reopen.rs`): the listening
/// socket (bound once: connections wait in its backlog meanwhile), the admission state
/// (rate-limit buckets, the waiting room's tickets) and the count of restarts.
#[derive(Clone)]
pub(crate) struct Carried {
    pub(crate) listener: Arc<TcpListener>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) restarts: Arc<InPlaceRestarts>,
}

pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    listener: Arc<TcpListener>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    wal: Option<Arc<WalJournal>>,
    events: Arc<EventStore>,
    webhooks: Option<Webhooks>,
}

impl RunningServer {
    /// Starts delivering the node's event feed to `config`'s webhooks, each from its cursor
    /// in the write-ahead log's database (in memory without a log). Once per server.
    pub fn start_webhooks(&mut self, config: &WebhooksConfig) -> Result<(), String> {
        if self.webhooks.is_some() {
            return Err("the webhooks are already started".into());
        }
        let cursors: Arc<dyn CursorStore> = match &self.wal {
            Some(wal) => Arc::new(
                wal.wal()
                    .cursor_tree(CURSOR_TREE)
                    .map_err(|e| format!("cannot open the webhook cursors: {e}"))?,
            ),
            None => Arc::new(MemoryCursors::default()),
        };
        // Real time, whatever the node's clock: the breakers' cooldowns pace real sleeps.
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let source: Arc<dyn EventSource> = Arc::new(FeedSource(self.state.events.clone()));
        let webhooks = Webhooks::start(config, source, cursors, clock)?;
        self.state
            .metrics
            .set_webhook_lags(Arc::new(webhooks.lags_fn()));
        self.webhooks = Some(webhooks);
        Ok(())
    }

    /// The webhooks' status (none when none are configured).
    pub fn webhooks(&self) -> Option<&Webhooks> {
        self.webhooks.as_ref()
    }

    /// Stops accepting, lets in-flight requests finish, snapshots every shard, stops the
    /// shards and closes the log (flushing it).
    pub async fn shutdown(self) {
        self.stop(true).await
    }

    /// Stops like [`RunningServer::shutdown`] but takes no snapshot, so the next start
    /// replays the log tail, as after a crash (the log itself is closed cleanly, which a
    /// crash cannot do, but every acknowledged record was flushed before its answer anyway).
    /// What SIGTERM does: a snapshot of every shard costs time in proportion to the whole
    /// state (12 s for half a million citizens), a flush only the last group commit, and
    /// the shards' own snapshots (every `SNAPSHOT_EVERY_RECORDS_DEFAULT` records) bound the tail the
    /// next start replays.
    pub async fn stop_without_snapshot(self) {
        self.stop(false).await
    }

    /// What the next server started in place takes over from this one.
    pub(crate) fn carried(&self) -> Carried {
        Carried {
            listener: self.listener.clone(),
            admission: self.state.admission.clone(),
            restarts: self.state.restarts.clone(),
        }
    }

    /// Why the log failed, once it has (writes are refused with `log_failed` since).
    pub fn log_failure(&self) -> Option<String> {
        match self.state.node.write_refusal() {
            Some(holdfast_engine::WriteRefusal::LogFailed(why)) => Some(why),
            _ => None,
        }
    }

    async fn stop(mut self, snapshot: bool) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Before the log closes: the cursors live in its database.
        if let Some(webhooks) = self.webhooks.take() {
            // Their lags read the event store: the metrics must not keep it open.
            self.state.metrics.clear_webhook_lags();
            webhooks.stop().await;
        }
        if tokio::time::timeout(SHUTDOWN_DRAIN, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!(
                drain_ms = SHUTDOWN_DRAIN.as_millis() as u64,
                "requests still running at the end of the drain are cut off"
            );
            self.task.abort();
        }
        if self.wal.is_some() && snapshot {
            if let Err(failures) = self.state.node.snapshot_all().await {
                for (shard, error) in failures {
                    tracing::warn!(shard, %error, "no snapshot; recovery replays this shard's log");
                }
            }
        }
        // Every shard handles what it already received, answers it, and exits: after this
        // no shard holds the log.
        self.state.node.stop().await;
        let Some(wal) = self.wal.take() else {
            return;
        };
        // The node (and its handle on the log) goes with the last application state.
        drop(self.state);
        // The recorder stops with the node's publisher, after storing what it was handed.
        self.events.join_recorder(SHUTDOWN_DRAIN);
        match Arc::try_unwrap(wal) {
            Ok(journal) => {
                if let Err(e) = journal.into_wal().close() {
                    tracing::error!(error = %e, "closing the write-ahead log failed");
                }
            }
            // A caller kept a handle on the node (a test, an embedding): the log's writer
            // drains, flushes and stops when that last handle goes.
            Err(_) => tracing::warn!("the node outlives the server; its log closes with it"),
        }
    }

    /// Serves until the server stops by itself (it does not) or the task ends.
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Starts the node, waits until every shard has recovered, then opens the HTTP listener
/// (tests and embedding: the first request finds every shard ready).
pub async fn start(config: ServerConfig) -> Result<RunningServer, String> {
    start_inner(config, true, None).await
}

/// Opens the HTTP listener at once while the shards recover (`holdfast serve`): `/healthz`
/// answers, `/readyz` is 503 `NOT_READY` until every shard has recovered, and a request for
/// a recovering shard is 503 `UNAVAILABLE` with `Retry-After`. Wait with
/// [`Node::wait_recovered`] on `state.node`.
pub async fn start_listening(config: ServerConfig) -> Result<RunningServer, String> {
    start_inner(config, false, None).await
}

/// [`start_listening`] on what the previous server in this process leaves (`reopen.rs`):
/// its listening socket, admission state and restart count.
pub(crate) async fn start_carried(
    config: ServerConfig,
    carried: Carried,
) -> Result<RunningServer, String> {
    start_inner(config, false, Some(carried)).await
}

async fn start_inner(
    config: ServerConfig,
    wait: bool,
    carried: Option<Carried>,
) -> Result<RunningServer, String> {
    let jwt = JwtKey::from_secret_file_bytes(&config.jwt_secret)?;
    let external = match &config.external {
        Some(external) => Some((
            Arc::new(HttpEligibility::new(external, config.clock.clone())?),
            external.outage_policy,
        )),
        None => None,
    };
    let qr = config
        .qr_keys
        .clone()
        .unwrap_or_else(|| QrKeyring::derive(&config.jwt_secret));
    let ring = Ring::single(&config.node.node_name);
    let events_dir = match &config.storage {
        Storage::Wal { dir, .. } => Some(dir.clone()),
        _ => None,
    };
    let (events, recorder) = EventStore::open(events_dir.as_deref())?;
    let (journal, wal): (Arc<dyn Journal>, Option<Arc<WalJournal>>) = match config.storage {
        Storage::Memory => (Arc::new(NoJournal), None),
        Storage::Wal {
            dir,
            config: wal_config,
        } => {
            let opened = Wal::open(&dir, wal_config.clone()).map_err(|e| {
                format!("cannot open the write-ahead log in {}: {e}", dir.display())
            })?;
            let journal = Arc::new(WalJournal::new(opened, &wal_config));
            (journal.clone(), Some(journal))
        }
        Storage::Journal(journal) => (journal, None),
    };
    let clock = config.clock.clone();
    let node = Node::spawn_recorded(config.node, ring, config.clock, journal, Some(recorder))
        .await
        .map_err(|e| e.to_string())?;
    // Before the listener opens, so no booking is served without the check.
    if let Some((check, policy)) = external {
        if !node.set_external_check(check, policy) {
            node.stop().await;
            return Err("the node already has an external check".into());
        }
    }
    if wait {
        if let Err(e) = node.wait_recovered().await {
            node.stop().await;
            return Err(format!("recovery failed: {e}"));
        }
    }
    let state = AppState::new(AppShared {
        node,
        jwt: Arc::new(jwt),
        qr: Arc::new(qr),
        settings: Arc::new(config.settings),
        events: events.clone(),
        audit: events.clone(),
        streams: Arc::new(StreamLimits::default()),
        metrics: Metrics::installed_or_detached(),
        admission: carried
            .as_ref()
            .map(|c| c.admission.clone())
            .unwrap_or_else(|| Arc::new(Admission::new(&config.admission, clock))),
        restarts: carried
            .as_ref()
            .map(|c| c.restarts.clone())
            .unwrap_or_default(),
    });
    let app = build_app(state.clone()).layer(axum::middleware::map_response_with_state(
        state.node.clone(),
        crate::connections::close_if_log_failed,
    ));
    let listener = match carried {
        Some(carried) => carried.listener,
        None => Arc::new(
            listen(config.listen)
                .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?,
        ),
    };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = oneshot::channel::<()>();
    let limits = config.connections;
    let serving = listener.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        crate::connections::serve(serving, app, limits, shutdown).await;
    });
    Ok(RunningServer {
        addr,
        state,
        listener,
        shutdown: Some(tx),
        task,
        wal,
        events,
        webhooks: None,
    })
}

/// Connections the kernel queues for `accept` (the listen backlog; Linux caps it at
/// `net.core.somaxconn`, 4,096 by default). tokio's own is 1,024: a burst of 2,560 new
/// connections (the harness's flood) overflowed it, and every dropped SYN cost its client a
/// retransmit 1 s, then 3 s later, before the server ever saw the request.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio's own bind does).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
