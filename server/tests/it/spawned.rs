//! The real `holdfast` binary as a child process of a test: started on a data directory,
//! ready when `/readyz` says so, its stderr read line by line (for the failpoints of
//! `engine/src/failpoint.rs`), killed with SIGKILL and reaped on demand or when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;

/// Longest wait for the server to become ready after a (re)start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the `failpoint reached` line once the request that reaches it is sent.
const FAILPOINT_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `holdfast` child: killed (SIGKILL) and reaped when dropped, whatever happened.
pub struct Spawned {
    pub child: Child,
    pub api: Api,
    /// The child's stderr, line by line (a reader thread forwards it here).
    stderr: mpsc::Receiver<String>,
    tag: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    /// SIGKILL (`Child::kill` on unix) and reap.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// The child's stderr lines printed since the last call (or the start), without waiting.
    pub fn stderr_lines(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.stderr.try_recv().ok()).collect()
    }

    /// Waits (bounded) until `failpoint reached: <name>` was printed `times` times on the
    /// child's stderr; kills the child and fails the test when it does not come.
    pub async fn wait_for_failpoint(&mut self, name: &str, times: usize) {
        let wanted = format!("failpoint reached: {name}");
        let started = Instant::now();
        let mut seen = 0;
        loop {
            loop {
                match self.stderr.try_recv() {
                    Ok(line) if line.trim_end() == wanted => {
                        seen += 1;
                        if seen == times {
                            eprintln!(
                                "[{}] {name} reached {times}x after {:?}",
                                self.tag,
                                started.elapsed()
                            );
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        let _ = self.child.kill();
                        let status = self.child.wait();
                        panic!(
                            "[{}] the server's stderr closed after {seen} of {times} `{wanted}` \
                             ({status:?})",
                            self.tag
                        );
                    }
                }
            }
            if started.elapsed() > FAILPOINT_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "[{}] {seen} of {times} `{wanted}` on the server's stderr within \
                     {FAILPOINT_TIMEOUT:?}",
                    self.tag
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Starts the binary on `data` (with `failpoint` enabled, or none), on a port the kernel
/// picks (`--listen 127.0.0.1:0`), learns it from `--addr-file` (choosing a "free" port first
/// would race the other tests' servers for it) and waits (bounded) until `/readyz` answers
/// 200. `tag` prefixes the child's stderr lines, which are forwarded to the test's.
pub async fn start(
    data: &Path,
    secret: &Path,
    addr_file: &Path,
    tag: &str,
    failpoint: Option<&str>,
) -> Spawned {
    start_with_flags(data, secret, addr_file, tag, failpoint, &[]).await
}

/// [`start`] with more `holdfast serve` flags (`["--no-show-grace", "1s"]`), after the
/// fixed ones.
pub async fn start_with_flags(
    data: &Path,
    secret: &Path,
    addr_file: &Path,
    tag: &str,
    failpoint: Option<&str>,
    flags: &[&str],
) -> Spawned {
    start_logging(data, secret, addr_file, tag, failpoint, flags, "warn").await
}

/// [`start_with_flags`] with `RUST_LOG` set to `rust_log` (the others run at `warn`).
pub async fn start_logging(
    data: &Path,
    secret: &Path,
    addr_file: &Path,
    tag: &str,
    failpoint: Option<&str>,
    flags: &[&str],
    rust_log: &str,
) -> Spawned {
    let _ = std::fs::remove_file(addr_file);
    let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    command
        .args([
            "serve",
            "--shards",
            "8",
            "--hold-ttl",
            "600s",
            "--durability",
            "sync",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--addr-file")
        .arg(addr_file)
        .arg("--data-dir")
        .arg(data)
        .arg("--jwt-secret-file")
        .arg(secret)
        .args(flags)
        .env("RUST_LOG", rust_log)
        .env_remove("HOLDFAST_FAILPOINTS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(point) = failpoint {
        command.env("HOLDFAST_FAILPOINTS", point);
    }
    let mut child = command.spawn().expect("the holdfast binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let thread_tag = tag.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{thread_tag} stderr] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut server = Spawned {
        child,
        api: Api::new(String::new()),
        stderr: rx,
        tag: tag.to_string(),
    };
    let addr = loop {
        // Written atomically (a rename) once the listener is open.
        if let Ok(addr) = std::fs::read_to_string(addr_file) {
            break addr;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("[{tag}] the server exited during start-up: {status}");
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "[{tag}] the server did not listen within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    server.api = Api::new(format!("http://{}", addr.trim()));
    loop {
        if let Ok(r) = server.api.try_send(Req::get("/readyz")).await {
            if r.status == 200 {
                eprintln!("[{tag}] ready after {:?}", started.elapsed());
                return server;
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("[{tag}] the server exited before it was ready: {status}");
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "[{tag}] server not ready within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
