//! Running a Python script of server/tests/ from a test, bounded in time: for the tests that
//! drive the real binary with tools only Python has (the console's browser test, the
//! contract checks). Each script bounds its own waits; [`run_bounded`] is the backstop.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// After SIGTERM (which a script turns into its clean-up), how long before SIGKILL.
const SCRIPT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs `command` to its end, at most `timeout`; returns its status and its stdout then
/// stderr. Past the bound: SIGTERM, SIGKILL after [`SCRIPT_STOP_GRACE`], and a panic.
pub fn run_bounded(mut command: Command, timeout: Duration) -> (ExitStatus, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let pid = child.id().to_string();
    // Each pipe drained by its own thread, so neither can fill up and stall the script.
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let mut stdout = child.stdout.take().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out.push_str(&stderr_reader.join().unwrap_or_default());
        let _ = done_tx.send((child.wait(), out));
    });
    match done_rx.recv_timeout(timeout) {
        Ok((status, output)) => (status.expect("wait for python3"), output),
        Err(_) => {
            // SIGTERM first: the script then stops what it started.
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let finished = done_rx.recv_timeout(SCRIPT_STOP_GRACE);
            if finished.is_err() {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
            panic!("the script did not finish within {timeout:?}: {finished:?}");
        }
    }
}

/// Whether `python` can import every module of `modules`.
pub fn imports(python: &str, modules: &[&str]) -> Result<(), String> {
    let status = Command::new(python)
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(_) => Err(format!("{python} cannot import {}", modules.join(", "))),
        Err(e) => Err(format!("no {python} ({e})")),
    }
}
