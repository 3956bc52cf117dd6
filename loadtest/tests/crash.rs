//! The crash scenario in CI, at a small size: `holdfast-load --spawn --scenario crash`
//! SIGKILLs the real server 3 times at random moments under booking load, restarts it on
//! the same data directory each time, replays acknowledged creates and runs the invariant
//! checker after every restart. Each round a clinic also cancels two slots under the load
//! (`--cancel-slots 2`), before the kill; staff administer as confirms come and, after each
//! restart, with QR tokens issued before the kill; and a no-show group booked before the
//! first kill falls due (2 s grace) across the kills. The test reads the JSON report: every
//! kill happened, load was acknowledged, the acknowledged cancellations and administrations
//! were checked, the whole no-show group (bar those administered) is NO_SHOW at the last
//! check, citizens who met a sold-out slot joined its waitlist and every later check held
//! each acknowledged join to waiting, served by an offer or gone with its cancelled slot,
//! every check ran and found zero violations, exit code 0.
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
            // Few seats, so slots sell out in the first round and citizens join their
            // waitlists (seats recycle: half the confirmed are cancelled at once).
            "--capacity",
            "2",
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
            "--administer-pct",
            "30",
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
    // The group members not administered are NO_SHOW (the only NO_SHOWs of the run), and
    // the last check held each of them to it.
    let group = clinic["no_show_group"].as_u64().expect("no_show_group");
    assert!(group > 0, "{clinic}");
    assert_eq!(clinic["seen_no_show"], group, "{clinic}");
    let last = &checks[checks.len() - 1]["report"];
    assert_eq!(last["no_show_expected_checked"], NO_SHOW_GROUP, "{last}");
    // Waitlists across the kills: every acknowledged join was checked at the last check.
    let joined = crash["waitlist_joined"].as_u64().expect("waitlist_joined");
    assert!(joined > 0, "no citizen joined a waitlist: {crash}");
    assert_eq!(last["waitlist_checked"], joined, "{last}");
}
