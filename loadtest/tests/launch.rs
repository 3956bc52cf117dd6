//! The harness end to end: `holdfast-load --spawn --scenario launch` starts the real server
//! on a temporary directory, sets up a small campaign through the API, books it to sell-out
//! with every hold confirmed (staff administering a share of them as they come), runs the
//! invariant checker, and writes its JSON report. The test reads the report: sold out,
//! confirmed seats equal to the sellable seats exactly, the administrations acknowledged and
//! seen by the checker, zero violations, exit code 0. A second launch has a clinic cancel
//! slots mid-run.
//!
//! The server binary is `$HOLDFAST_BIN`, or `holdfast` beside the harness binary (built by
//! `cargo test --workspace`); when missing it is built first.

mod common;

use std::process::{Command, Stdio};

use common::run_harness;

const CLINICS: u64 = 4;
const SLOTS: u64 = 3;
const CAPACITY: u64 = 10;
/// Fewer doses than seats in each clinic, so both SOLD_OUT and OUT_OF_STOCK happen.
const DOSES: u64 = 25;

/// The flags of a small launch against a spawned server of 8 shards, 16 connections, at most
/// 60 s: `[clinics, slots per clinic, seats per slot, doses per clinic]`, the seed, and the
/// test's own flags after them.
fn small_launch(campaign: [u64; 4], seed: u64, flags: &[&str]) -> Vec<String> {
    let [clinics, slots, capacity, doses] = campaign.map(|n| n.to_string());
    let mut args: Vec<String> = [
        "--spawn",
        "--shards",
        "8",
        "--scenario",
        "launch",
        "--connections",
        "16",
        "--duration",
        "60s",
    ]
    .map(String::from)
    .to_vec();
    for (flag, value) in [
        ("--clinics", clinics),
        ("--slots-per-clinic", slots),
        ("--capacity", capacity),
        ("--doses", doses),
        ("--seed", seed.to_string()),
    ] {
        args.extend([flag.to_string(), value]);
    }
    args.extend(flags.iter().map(|flag| flag.to_string()));
    args
}

#[test]
fn launch_sells_out_exactly_with_zero_violations() {
    let args = small_launch(
        [CLINICS, SLOTS, CAPACITY, DOSES],
        7,
        &[
            "--confirm-pct",
            "100",
            "--release-pct",
            "0",
            "--replay-pct",
            "20",
            "--administer-pct",
            "30",
            // No clinic cancellation: returned doses would be sold again, and this launch
            // must sell out exactly.
            "--cancel-slots",
            "0",
        ],
    );
    let (code, report, stdout) = run_harness(&args, "launch");
    assert_eq!(code, 0, "exit code; output:\n{stdout}");
    assert_eq!(report["verdict"], "pass");
    let scenario = &report["scenarios"][0];
    assert_eq!(scenario["scenario"], "launch");
    let launch = &scenario["launch"];
    let sellable = CLINICS * DOSES.min(SLOTS * CAPACITY);
    assert_eq!(launch["sellable"], sellable);
    assert_eq!(launch["end_reason"], "sold_out", "{launch}");
    assert!(launch["sell_out_s"].as_f64().is_some_and(|s| s > 0.0));
    // Every seat confirmed, none twice: confirmed == capacity exactly.
    assert_eq!(launch["created"], sellable, "{launch}");
    assert_eq!(launch["confirmed"], sellable, "{launch}");
    // The checker ran and found nothing.
    let checks = scenario["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["ok"], true, "{}", checks[0]);
    assert_eq!(checks[0]["violations"], 0);
    // The clinic side: administrations acknowledged and seen as such by the last check (no
    // kill: nothing in doubt), and the stock held to what was received minus them.
    let clinic = &scenario["clinic"];
    let administered = clinic["administered"].as_u64().expect("administered");
    assert!(administered > 0, "{clinic}");
    assert_eq!(clinic["seen_administered"], administered, "{clinic}");
    let check = &checks[0]["report"];
    assert_eq!(check["stock_checked"], CLINICS, "{check}");
    // Some clinics ran out of doses before seats: the answers say so.
    let outcomes = scenario["outcomes"].as_array().expect("outcomes");
    assert!(
        outcomes.iter().any(|o| o["code"] == "OUT_OF_STOCK"),
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| o["error"] == false), "{outcomes:?}");
    // Replays were sent on purpose and checked.
    assert!(scenario["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .any(|o| o["op"] == "replay"));
    // The report carries what a reader needs.
    assert_eq!(report["server"]["spawned"], true);
    assert!(report["server"]["version"].is_string());
    assert!(scenario["client_cpu_pct"].is_number());
    assert!(scenario["server_cpu_pct"].is_number());
    for side in ["client_cpu_us_per_request", "server_cpu_us_per_request"] {
        let us = scenario[side].as_f64().unwrap_or(-1.0);
        assert!(us > 0.0, "{side}: {}", scenario[side]);
    }
    let rss = scenario["server_rss_mib"]
        .as_f64()
        .expect("the server's memory");
    let peak = scenario["server_rss_peak_mib"].as_f64().expect("its peak");
    assert!(
        rss > 0.0 && peak >= rss,
        "{rss} MiB now, {peak} MiB at most"
    );
    assert_eq!(report["flags"]["confirm_pct"], 100);
}

/// A launch during which a clinic cancels two slots (`--cancel-slots 2`, once a quarter of
/// the seats is taken; one with the clinic's staff token, one with the authority's): their
/// appointments end CLINIC_CANCELLED, exactly those the answers listed, and the checker
/// finds zero violations.
#[test]
fn a_launch_with_clinic_slot_cancellations_has_zero_violations() {
    let args = small_launch(
        [CLINICS, SLOTS, CAPACITY, DOSES],
        11,
        &[
            "--confirm-pct",
            "80",
            "--release-pct",
            "10",
            "--cancel-slots",
            "2",
        ],
    );
    let (code, report, stdout) = run_harness(&args, "launch-cancel");
    assert_eq!(code, 0, "exit code; output:\n{stdout}");
    assert_eq!(report["verdict"], "pass");
    let scenario = &report["scenarios"][0];
    let cancels = &scenario["slot_cancels"];
    assert_eq!(cancels["requested"], 2, "{cancels}");
    assert_eq!(cancels["cancelled"], 2, "{cancels}");
    assert_eq!(cancels["by_staff"], 1, "{cancels}");
    let affected = cancels["appointments_clinic_cancelled"]
        .as_u64()
        .expect("a count");
    assert!(
        affected > 0,
        "the hottest clinic's slots were empty: {cancels}"
    );
    let checks = scenario["checks"].as_array().expect("checks");
    assert_eq!(checks[0]["ok"], true, "{}", checks[0]);
    assert_eq!(
        checks[0]["report"]["appointments_by_status"]["CLINIC_CANCELLED"], affected,
        "{}",
        checks[0]
    );
    assert_eq!(checks[0]["report"]["slot_cancellations_checked"], 2);
    let clinic = &scenario["clinic"];
    assert_eq!(clinic["clinic_cancelled"], affected, "{clinic}");
    assert_eq!(clinic["seen_clinic_cancelled"], affected, "{clinic}");
}

/// A launch through the admission control (`--server-arg` passes its flags to the spawned
/// server): the citizens learn of the waiting room from their first 429 QUEUE_REQUIRED,
/// queue, poll their tickets and book with their admission tokens; the rate limits refuse
/// some requests, which are paused by their Retry-After and sent again. Every 429 is a
/// refusal, not an error, the campaign still sells out exactly, zero violations.
#[test]
fn a_launch_through_the_waiting_room_and_the_rate_limits_sells_out() {
    let args = small_launch(
        [2, 2, 10, 15],
        5,
        &[
            "--confirm-pct",
            "100",
            "--release-pct",
            "0",
            "--replay-pct",
            "20",
            // No clinic cancellation: the campaign must sell out exactly.
            "--cancel-slots",
            "0",
            "--server-arg=--waiting-room=10",
            "--server-arg",
            "--rate-limit=5/s",
            "--server-arg=--ip-rate-limit=80/s",
        ],
    );
    let (code, report, stdout) = run_harness(&args, "launch-admission");
    assert_eq!(code, 0, "exit code; output:\n{stdout}");
    assert_eq!(report["verdict"], "pass");
    let scenario = &report["scenarios"][0];
    let launch = &scenario["launch"];
    assert_eq!(launch["end_reason"], "sold_out", "{launch}");
    assert_eq!(launch["created"], 30, "{launch}");
    assert_eq!(launch["confirmed"], 30, "{launch}");
    let outcomes = scenario["outcomes"].as_array().expect("outcomes");
    let count = |op: &str, status: u64, code: &str| -> u64 {
        outcomes
            .iter()
            .filter(|o| o["op"] == op && o["status"] == status && o["code"] == code)
            .map(|o| o["count"].as_u64().unwrap())
            .sum()
    };
    assert!(count("hold", 429, "QUEUE_REQUIRED") > 0, "{outcomes:?}");
    assert!(count("queue", 201, "") > 0, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o["error"] == false), "{outcomes:?}");
    assert_eq!(scenario["errors"], 0);
    assert!(scenario["refusals"].as_u64().unwrap() > 0, "{scenario}");
    assert_eq!(
        scenario["checks"][0]["ok"], true,
        "{}",
        scenario["checks"][0]
    );
}

#[test]
fn bad_flags_exit_with_code_2() {
    let status = Command::new(env!("CARGO_BIN_EXE_holdfast-load"))
        .args(["--spawn", "--confirm-pct", "90", "--release-pct", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the harness starts");
    assert_eq!(status.code(), Some(2));
    let status = Command::new(env!("CARGO_BIN_EXE_holdfast-load"))
        .args(["--scenario", "nonsense"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the harness starts");
    assert_eq!(status.code(), Some(2));
}
