//! The crash scenario in CI, at a small size: `holdfast-load --spawn --scenario crash`
//! SIGKILLs the real server 3 times at random moments under booking load, restarts it on
//! the same data directory each time, replays acknowledged creates and runs the invariant
//! checker after every restart. Staff administer and cancel slots under the kills, and a
//! no-show group booked before the first kill falls due (2 s grace) across them. The test
//! reads the JSON report: every kill happened, load was acknowledged, the clinic side was
//! acknowledged, the whole no-show group is NO_SHOW at the last check, every check ran and
//! found zero violations, exit code 0.
//!
//! The server binary is `$HOLDFAST_BIN`, or `holdfast` beside the harness binary (built by
//! `cargo test --workspace`); when missing it is built first.

mod common;

use common::run_harness;

/// SIGKILLs in the run (the issue asks for "a few" in CI).
const KILLS: u64 = 3;
/// Appointments confirmed right after set-up and left to fall due as no-shows.
const NO_SHOW_GROUP: u64 = 8;

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
            "--administer-pct",
            "30",
            "--clinic-cancel-pct",
            "10",
            "--no-show-group",
            &NO_SHOW_GROUP.to_string(),
            "--no-show-grace",
            "2s",
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
    let checks = scenario["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), KILLS as usize, "a check after every restart");
    for check in checks {
        assert_eq!(check["ok"], true, "{check}");
        assert_eq!(check["violations"], 0, "{check}");
    }
    // The clinic side ran through the kills.
    let clinic = &scenario["clinic"];
    assert!(
        clinic["administered"].as_u64().is_some_and(|n| n > 0),
        "{clinic}"
    );
    // Tokens issued before a kill were honoured after it.
    assert!(
        crash["administered_after_restart"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{crash}"
    );
    let outcomes = scenario["outcomes"].as_array().expect("outcomes");
    assert!(
        outcomes
            .iter()
            .filter(|o| o["op"] == "administer" && o["status"] != 0)
            .all(|o| o["error"] == false),
        "{outcomes:?}"
    );
    // 10% of 24 slots, rounded up; whatever a kill left unanswered was sent again.
    assert_eq!(clinic["slots_cancelled"], 3, "{clinic}");
    assert_eq!(clinic["slots_not_cancelled"], 0, "{clinic}");
    // The group members not administered are NO_SHOW (the only NO_SHOWs of the run), and
    // the last check held each of them to it.
    let group = clinic["no_show_group"].as_u64().expect("no_show_group");
    assert!(group > 0, "{clinic}");
    assert_eq!(clinic["seen_no_show"], group, "{clinic}");
    let last = &checks[checks.len() - 1]["report"];
    assert_eq!(last["no_show_expected_checked"], NO_SHOW_GROUP, "{last}");
}
