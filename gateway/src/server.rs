//! Starting and stopping the server: the data directory, the secret, the node, the listener
//! and graceful shutdown (a signal stops accepting, in-flight requests finish, shards stop).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_engine::node::SHARDS_DEFAULT;
use holdfast_engine::ring::Ring;
use holdfast_engine::{Clock, Node, NodeConfig, SystemClock};
use holdfast_persistence::DataDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::{build_app, AppState, Settings};
use crate::auth::JwtKey;
use crate::cli::ServeArgs;
use crate::qr::QrKey;

/// What a server needs to start, decided from the command line (or by a test).
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub node: NodeConfig,
    pub jwt_secret: Vec<u8>,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
}

pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, then stops the shards.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        self.state.node.stop();
    }

    /// Serves until the server stops by itself (it does not) or the task ends.
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Starts the node and the HTTP listener.
pub async fn start(config: ServerConfig) -> Result<RunningServer, String> {
    let jwt = JwtKey::from_secret_file_bytes(&config.jwt_secret)?;
    let qr = QrKey::derive(&config.jwt_secret);
    let ring = Ring::single(&config.node.node_name);
    let node = Node::start(config.node, ring, config.clock).await?;
    let state = AppState {
        node,
        jwt: Arc::new(jwt),
        qr: Arc::new(qr),
        settings: Arc::new(config.settings),
    };
    let app = build_app(state.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "server failed");
        }
    });
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
    })
}

/// Reads the secret file; with `--demo` and no file, creates `<data-dir>/jwt-secret`.
fn load_secret(args: &ServeArgs) -> Result<(Vec<u8>, PathBuf), String> {
    let path = match (&args.jwt_secret_file, args.demo) {
        (Some(path), _) => path.clone(),
        (None, true) => {
            let path = args.data_dir.join("jwt-secret");
            if !path.exists() {
                write_secret(&path)?;
            }
            path
        }
        (None, false) => {
            return Err(
                "--jwt-secret-file is required (or run with --demo, which creates one)".into(),
            )
        }
    };
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    Ok((bytes, path))
}

fn write_secret(path: &Path) -> Result<(), String> {
    let secret = crate::auth::generate_secret();
    holdfast_persistence::write_atomically(path, &secret)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `holdfast serve`
pub async fn serve(args: ServeArgs) -> Result<(), String> {
    if args.eligibility_url.is_some() {
        return Err("--eligibility-url is not available in this build yet (the external check arrives with the citizen-saga work); start without it".into());
    }
    if args.hold_ttl.as_millis() == 0 || args.max_hold < args.hold_ttl {
        return Err("--hold-ttl must be positive and not above --max-hold".into());
    }
    let data_dir = DataDir::open(&args.data_dir, args.shards, SHARDS_DEFAULT)?;
    let (secret, secret_path) = load_secret(&args)?;
    tracing::warn!(
        durability = ?args.durability,
        "the write-ahead log has not landed yet: state is kept in memory only and a restart loses it"
    );
    let config = ServerConfig {
        listen: args.listen,
        node: NodeConfig::embedded(data_dir.shards()),
        jwt_secret: secret,
        settings: Settings {
            hold_ttl_ms: args.hold_ttl.as_millis() as i64,
            max_hold_ms: args.max_hold.as_millis() as i64,
        },
        clock: Arc::new(SystemClock),
    };
    let server = start(config).await?;
    tracing::info!(addr = %server.addr, shards = data_dir.shards(), data_dir = %data_dir.path().display(), "holdfast is serving");
    if args.demo {
        let summary = crate::demo::load(&server.state.node, server.state.node.now_ms()).await?;
        crate::demo::print_banner(&server.state, server.addr, &summary, &secret_path);
    }
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
