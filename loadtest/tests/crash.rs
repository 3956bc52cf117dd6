//! The crash scenario in CI, at a small size: `holdfast-load --spawn --scenario crash`
//! SIGKILLs the real server 3 times at random moments under booking load, restarts it on
//! the same data directory each time, replays acknowledged creates and runs the invariant
//! checker after every restart. Each round a clinic also cancels two slots under the load
//! (`--cancel-slots 2`), before the kill. The test reads the JSON report: every kill
//! happened, load was acknowledged, the acknowledged cancellations were checked, every check
//! ran and found zero violations, exit code 0.
//!
//! The server binary is `$HOLDFAST_BIN`, or `holdfast` beside the harness binary (built by
//! `cargo test --workspace`); when missing it is built first.

mod common;

use common::run_harness;

/// SIGKILLs in the run (the issue asks for "a few" in CI).
const KILLS: u64 = 3;

#[test]
fn crash_rehearsal_finds_zero_violations() {
    let (code, report, stdout) = run_harness(
        &[
            "--spawn",
            "--shards",
            "8",
            "--scenario",
            "crash",
            "--kills",
            &KILLS.to_string(),
            "--kill-window",
            "900ms",
            "--clinics",
            "6",
            "--slots-per-clinic",
            "4",
            "--capacity",
            "40",
            "--doses",
            "1000",
            "--citizens",
            "3000",
            "--connections",
            "16",
            "--replay-pct",
            "5",
            "--timeout",
            "5s",
            "--cancel-slots",
            "2",
        ],
        "crash",
    );
    assert_eq!(code, 0, "exit code; output:\n{stdout}");
    assert_eq!(report["verdict"], "pass");
    let scenario = &report["scenarios"][0];
    assert_eq!(scenario["scenario"], "crash");
    let crash = &scenario["crash"];
    assert_eq!(crash["kills"], KILLS, "{crash}");
    assert_eq!(
        crash["recovery_s"].as_array().map(Vec::len),
        Some(KILLS as usize)
    );
    assert!(
        crash["acknowledged"].as_u64().is_some_and(|n| n > 0),
        "no load was acknowledged: {crash}"
    );
    assert!(crash["replays_after_restart"]
        .as_u64()
        .is_some_and(|n| n > 0));
    let cancels = &scenario["slot_cancels"];
    assert_eq!(cancels["requested"], 2 * KILLS, "{cancels}");
    assert!(
        cancels["cancelled"].as_u64().is_some_and(|n| n > 0),
        "no slot cancellation was acknowledged: {cancels}"
    );
    let checks = scenario["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), KILLS as usize, "a check after every restart");
    for check in checks {
        assert_eq!(check["ok"], true, "{check}");
        assert_eq!(check["violations"], 0, "{check}");
    }
}
