//! Shared by the harness's integration tests: find (or build) the `holdfast` binary, run
//! `holdfast-load` to completion with a bound, and read its JSON report.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The whole run must end within this (the harness's own --duration bounds the load).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

pub fn server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("HOLDFAST_BIN") {
        return PathBuf::from(bin);
    }
    let dir = Path::new(env!("CARGO_BIN_EXE_holdfast-load"))
        .parent()
        .expect("the harness binary has a directory");
    let bin = dir.join(format!("holdfast{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "holdfast-server", "--bin", "holdfast"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "cargo build of the holdfast binary failed"
        );
    }
    bin
}

/// Runs the harness to completion (killed after [`RUN_TIMEOUT`]); returns its exit code and
/// its JSON report.
pub fn run_harness<S: AsRef<std::ffi::OsStr>>(args: &[S], label: &str) -> (i32, Value, String) {
    let report = std::env::temp_dir().join(format!(
        "holdfast-load-{label}-{}-{}.json",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast-load"))
        .args(args)
        .arg("--server-bin")
        .arg(server_binary())
        .arg("--report")
        .arg(&report)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the harness starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the harness") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the harness did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut stdout);
    }
    println!("{stdout}");
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report at {} ({e}); output:\n{stdout}", report.display()));
    let _ = std::fs::remove_file(&report);
    let json: Value = serde_json::from_str(&text).expect("the report is JSON");
    (status.code().unwrap_or(-1), json, stdout)
}
