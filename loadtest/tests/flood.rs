//! The flood scenario end to end, small: `holdfast-load --spawn --scenario flood` against the
//! real server with a write bound of 4 (`--server-arg=--max-in-flight --server-arg=4`), 8
//! connections before and after and 64 during. The test reads the JSON report: the flood's
//! figures are there, the server refused some requests and every refusal was `503
//! UNAVAILABLE`, nothing went unanswered, no answer was a server error, the server's memory
//! was read, and the checker found zero violations (nothing oversold, every acknowledged
//! change there). The verdict's time bounds (longest wait, recovery) are not asserted: a
//! debug build on a busy CI machine is not what they are for.
//!
//! The server binary is `$HOLDFAST_BIN`, or `holdfast` beside the harness binary (built by
//! `cargo test --workspace`); when missing it is built first.

mod common;

use common::run_harness;

#[test]
fn a_small_flood_is_refused_with_503_and_nothing_is_lost() {
    let (_code, report, stdout) = run_harness(
        &[
            "--spawn",
            "--shards",
            "8",
            "--scenario",
            "flood",
            "--server-arg=--max-in-flight",
            "--server-arg=4",
            "--server-arg=--in-flight-wait",
            "--server-arg=5ms",
            "--flood-baseline-connections",
            "8",
            "--connections",
            "64",
            "--duration",
            "2s",
            "--flood-calm",
            "6s",
            "--clinics",
            "4",
            "--slots-per-clinic",
            "2",
            "--capacity",
            "50",
            "--doses",
            "400",
            "--timeout",
            "10s",
        ],
        "flood",
    );
    let scenario = &report["scenarios"][0];
    assert_eq!(scenario["scenario"], "flood", "{stdout}");
    let flood = &scenario["flood"];
    assert_eq!(flood["flood_connections"], 64, "{flood}");
    let refused = flood["refused_by_status"]
        .as_object()
        .unwrap_or_else(|| panic!("no refusals by status: {flood}"));
    assert!(
        !refused.is_empty(),
        "nothing was refused: {flood}\n{stdout}"
    );
    // The code, and the reason when the 503 gives one (`503 UNAVAILABLE:overloaded`).
    assert!(
        refused
            .keys()
            .all(|k| k == "503 UNAVAILABLE" || k.starts_with("503 UNAVAILABLE:")),
        "{refused:?}"
    );
    assert_eq!(flood["unanswered"], 0, "{flood}");
    assert_eq!(scenario["server_errors"], 0, "{scenario}");
    assert!(
        flood["server_rss_peak_mib"]
            .as_f64()
            .is_some_and(|m| m > 0.0),
        "{flood}"
    );
    assert!(flood["before_admitted_per_s"]
        .as_f64()
        .is_some_and(|r| r > 0.0));
    let checks = scenario["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["ok"], true, "{}", checks[0]);
    assert_eq!(checks[0]["violations"], 0);
}
