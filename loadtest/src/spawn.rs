//! `--spawn`: the harness starts the real `holdfast` binary on a fresh temporary data
//! directory and a loopback port the kernel picks (the server binds port 0 and writes the
//! address to `--addr-file`, so no other process can race it for the port), kills it with SIGKILL (the crash scenario), restarts
//! it on the same directory, and always stops it at the end: the child is killed on drop,
//! so neither a panic nor an early error leaves a server behind.

use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Api;

/// Longest wait for a (re)started server to answer `/readyz` 200. Generous: a debug build
/// on a busy 2-core CI machine recovering a data directory.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Environment variable naming the server binary (after `--server-bin`).
pub const BIN_ENV: &str = "HOLDFAST_BIN";
/// Bytes of the server log quoted when it fails to start.
const LOG_TAIL_BYTES: usize = 2_000;
/// How often a start looks for the server's address file, and the pause after a kill before
/// a restart.
const CHILD_POLL: Duration = Duration::from_millis(20);

/// Finds the `holdfast` binary: `explicit`, else `$HOLDFAST_BIN`, else `holdfast` next to
/// the current executable or in its parent directory (integration tests run from
/// `target/<profile>/deps`).
pub fn find_server_binary(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!("--server-bin {}: no such file", path.display()))
        };
    }
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("${BIN_ENV}={}: no such file", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let name = format!("holdfast{}", std::env::consts::EXE_SUFFIX);
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join(&name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    Err(format!(
        "cannot find the holdfast server binary next to {}: build it with \
         `cargo build --release --bin holdfast`, or name it with --server-bin or ${BIN_ENV}",
        exe.display()
    ))
}

/// Asks Linux to SIGKILL the server when the harness dies, so even a harness killed with
/// SIGKILL (whose drop guards never run) leaves no server behind.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // pre_exec is unsafe by contract; see the SAFETY note
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl,
    // which is async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// A temporary directory removed on drop (unless kept).
#[derive(Debug)]
pub struct TempDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl TempDir {
    pub fn new(label: &str, keep: bool) -> Result<TempDir, String> {
        let path = std::env::temp_dir().join(format!(
            "holdfast-load-{label}-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir { path, keep })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub secret_file: PathBuf,
    pub log_file: PathBuf,
    pub shards: u32,
    pub hold_ttl: Duration,
    pub no_show_grace: Duration,
    pub durability: &'static str,
    /// More arguments for `holdfast serve` (`--server-arg`).
    pub extra_args: Vec<String>,
}

/// A running spawned server; killed on drop.
#[derive(Debug)]
pub struct Spawned {
    pub spec: ServerSpec,
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    pub starts: usize,
}

impl Spawned {
    /// Starts the server and waits until it is ready.
    pub async fn start(spec: ServerSpec, api: &Api) -> Result<Spawned, String> {
        let mut server = Spawned {
            spec,
            child: None,
            port: 0,
            base: String::new(),
            starts: 0,
        };
        server.launch(api).await?;
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    async fn launch(&mut self, api_for: &Api) -> Result<(), String> {
        let addr_file = self.spec.data_dir.with_extension("addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log_file)
            .map_err(|e| format!("server log {}: {e}", self.spec.log_file.display()))?;
        let mut command = Command::new(&self.spec.bin);
        die_with_parent(&mut command);
        let child = command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--data-dir")
            .arg(&self.spec.data_dir)
            .arg("--jwt-secret-file")
            .arg(&self.spec.secret_file)
            .arg("--shards")
            .arg(self.spec.shards.to_string())
            .arg("--hold-ttl")
            .arg(format!("{}ms", self.spec.hold_ttl.as_millis()))
            .arg("--no-show-grace")
            .arg(format!("{}ms", self.spec.no_show_grace.as_millis()))
            .arg("--durability")
            .arg(self.spec.durability)
            .args(&self.spec.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("HOLDFAST_LOAD_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.spec.bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        self.base = format!("(address not yet written to {})", addr_file.display());
        let started = Instant::now();
        let mut api = None;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "the server exited during start-up ({status}); its log ends:\n{}",
                        self.log_tail()
                    ));
                }
            }
            if api.is_none() {
                if let Ok(addr) = std::fs::read_to_string(&addr_file) {
                    let addr: std::net::SocketAddr = addr.trim().parse().map_err(|e| {
                        format!("the server wrote {addr:?} to {}: {e}", addr_file.display())
                    })?;
                    self.port = addr.port();
                    self.base = format!("http://{addr}");
                    api = Some(api_for.with_base(&self.base));
                }
            }
            let remaining = READY_TIMEOUT.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(format!(
                    "the server on {} was not ready within {READY_TIMEOUT:?}; its log ends:\n{}",
                    self.base,
                    self.log_tail()
                ));
            }
            match &api {
                // Not listening yet (recovery runs after the listener opens, so this is short).
                None => tokio::time::sleep(CHILD_POLL).await,
                Some(api) => {
                    if api
                        .wait_ready(remaining.min(Duration::from_secs(1)))
                        .await
                        .is_ok()
                    {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// SIGKILL (no clean shutdown, no final snapshot) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill (if running) and start again on the same data directory, on a new port;
    /// returns once ready.
    pub async fn restart(&mut self, api: &Api) -> Result<(), String> {
        self.kill();
        tokio::time::sleep(CHILD_POLL).await;
        self.launch(api).await
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.spec.log_file) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(LOG_TAIL_BYTES);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_binary_must_exist() {
        assert!(find_server_binary(Some(Path::new("/nonexistent/holdfast"))).is_err());
    }

    #[test]
    fn temp_dirs_are_removed() {
        let dir = TempDir::new("unit", false).unwrap();
        let path = dir.path.clone();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }
}
