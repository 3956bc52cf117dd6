//! `holdfast serve`: from its flags to a running server ([`crate::server`]) under the
//! supervisor that restarts it in place after its log failed ([`crate::reopen`]), until
//! SIGTERM or SIGINT stops it gracefully. Also the secret (read, or created for `--demo`) and
//! the demo campaign's load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_engine::node::SHARDS_DEFAULT;
use holdfast_engine::shard::NO_SHOW_GRACE_MS_MAX;
use holdfast_engine::{NodeConfig, SystemClock};
use holdfast_gateway::app::Settings;
use holdfast_gateway::metrics::Metrics;
use holdfast_persistence::{DataDir, WalConfig};

use crate::cli::{Durability, ServeArgs};
use crate::connections::ConnectionLimits;
use crate::server::{start_listening, ServerConfig, Storage};

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
    let secret = holdfast_gateway::auth::generate_secret();
    holdfast_persistence::write_atomically(path, &secret).map_err(|e| e.to_string())?;
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
    let signalled = shutdown_signal();
    let external = args.external_config()?;
    let webhooks = args.webhooks_config()?;
    if args.hold_ttl.as_millis() == 0 || args.max_hold < args.hold_ttl {
        return Err("--hold-ttl must be positive and not above --max-hold".into());
    }
    if args.admission_ttl.as_millis() == 0 {
        return Err("--admission-ttl must be positive".into());
    }
    if args.no_show_grace.as_millis() > NO_SHOW_GRACE_MS_MAX as u128 {
        return Err(format!(
            "--no-show-grace must be at most {}h",
            NO_SHOW_GRACE_MS_MAX / 3_600_000
        ));
    }
    let data_dir =
        DataDir::open(&args.data_dir, args.shards, SHARDS_DEFAULT).map_err(|e| e.to_string())?;
    let (secret, secret_path) = load_secret(&args)?;
    let durability = match args.durability {
        Durability::Sync => holdfast_persistence::Durability::Sync,
        Durability::Async => holdfast_persistence::Durability::Async,
    };
    let config = ServerConfig {
        listen: args.listen,
        node: NodeConfig {
            waitlist_per_slot_max: args.waitlist_max,
            idempotency_records_per_shard_max: args.idempotency_keys_per_shard,
            // A waitlist offer holds as long as a booking that does not say.
            waitlist_hold_ms: args.hold_ttl.as_millis() as i64,
            no_show_grace_ms: i64::try_from(args.no_show_grace.as_millis()).unwrap_or(i64::MAX),
            ..NodeConfig::embedded(data_dir.shards())
        },
        jwt_secret: secret,
        settings: Settings {
            hold_ttl_ms: args.hold_ttl.as_millis() as i64,
            max_hold_ms: args.max_hold.as_millis() as i64,
            reschedule_notice_ms: args.reschedule_notice.as_millis() as i64,
            overload: args.overload_limits(),
        },
        clock: Arc::new(SystemClock),
        storage: Storage::Wal {
            dir: data_dir.path().to_path_buf(),
            config: WalConfig {
                disk_reserve_bytes: args.disk_reserve_mib.saturating_mul(crate::cli::MIB),
                ..WalConfig::new(durability)
            },
        },
        external: external.clone(),
        qr_keys: args.qr_keys()?,
        admission: args.admission_config(),
        connections: ConnectionLimits {
            connections_max: args.connections_max,
            ..ConnectionLimits::default()
        },
    };
    crate::connections::warn_if_over_open_file_limit(config.connections.connections_max);
    // Process-wide, before the node starts: the log's writer records into it from its
    // first group commit.
    Metrics::install()?;
    let recovery = std::time::Instant::now();
    let mut server = start_listening(config.clone()).await?;
    if let Some(webhooks) = &webhooks {
        // From here on, deliveries run in their own tasks; bookings never wait for them.
        server.start_webhooks(webhooks)?;
        tracing::info!(
            webhooks = webhooks.urls.len(),
            "every event is POSTed to the webhooks, from each one's delivery cursor"
        );
    }
    tracing::info!(addr = %server.addr, shards = data_dir.shards(), data_dir = %data_dir.path().display(), "holdfast is listening; shards are recovering");
    if let Some(external) = &external {
        tracing::info!(
            url = %external.url,
            timeout_ms = external.timeout.as_millis() as u64,
            breaker_failures = external.breaker_failures,
            breaker_cooldown_ms = external.breaker_cooldown.as_millis() as u64,
            outage_policy = ?external.outage_policy,
            "bookings ask the external eligibility check"
        );
    }
    if let Some(path) = &args.addr_file {
        holdfast_persistence::write_atomically(path, server.addr.to_string().as_bytes())
            .map_err(|e| format!("--addr-file: {e}"))?;
    }
    let recovered = {
        let node = server.state.node.clone();
        tokio::spawn(async move {
            let result = node.wait_recovered().await;
            match &result {
                Ok(()) => tracing::info!(
                    elapsed_ms = recovery.elapsed().as_millis() as u64,
                    "every shard recovered; ready"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "some shards could not recover; they stay unavailable and /readyz stays 503")
                }
            }
            result
        })
    };
    if args.demo {
        recovered
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("recovery failed, so the demo cannot load: {e}"))?;
        let summary = crate::demo::load(&server.state.node, server.state.node.now_ms()).await?;
        crate::demo::print_banner(&server.state, server.addr, &summary, &secret_path);
    }
    // From here on, a log that fails is opened again in place once the disk has room.
    let server = crate::reopen::supervise(server, config, webhooks);
    signalled.await;
    stop_on_signal(server).await;
    Ok(())
}

/// What SIGTERM or SIGINT does: see [`crate::server::RunningServer::stop_without_snapshot`].
async fn stop_on_signal(server: crate::reopen::Supervised) {
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let stopping = std::time::Instant::now();
    server.stop_without_snapshot().await;
    tracing::info!(
        elapsed_ms = stopping.elapsed().as_millis() as u64,
        "stopped; the log is flushed"
    );
}

/// Registers for SIGTERM and SIGINT at once, so a signal that comes during start-up (the
/// demo's load included) waits for the graceful stop instead of killing the process; the
/// future resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut terminate, mut interrupt) = streams;
            let terminated = async {
                match terminate.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = terminated => {},
                _ = interrupted => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
