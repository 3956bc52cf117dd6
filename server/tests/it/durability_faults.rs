//! The disk fails, seen from HTTP, through the real write-ahead log:
//!
//! - a flush that fails (a fault hook in the WAL's writer makes `fdatasync` fail): the write
//!   that needed it is answered 503 (`log_failed`), never 2xx; its shard stops answering
//!   (its memory holds what the log does not); the node takes no more writes, refused before
//!   they change anything; the other shards go on serving reads; `/readyz` turns 503; the
//!   operator endpoint says why; a restart recovers exactly from the log. (A full or
//!   read-only disk, refused before any write fails, is `disk_faults.rs`.)
//! - a torn tail (the log's last frame, holding a shard's last record, cut short as a crash in
//!   the middle of a write leaves it): start-up recovers everything before it, cuts the frame
//!   off and reports it in the log and in `/v1/admin/shards`.

use std::time::Duration;

use holdfast_persistence::{Durability, FlushFault, Wal, WalConfig};

use crate::common::*;

const SHARDS_HERE: u32 = 4;

/// The catalogue both tests book in: one clinic `c1` with one slot `s1` (10 seats, 10
/// doses) and two eligible citizens.
async fn set_up(h: &Harness) {
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c1", "s1", 10, 10).await;
    h.put_adult("p1").await;
    h.put_adult("p2").await;
}

/// Slot counters agree with the clinic's appointments (invariants 1 and 2 for one slot).
async fn assert_counters_match_appointments(h: &Harness, clinic: &str) {
    let availability = h.availability(clinic).await; // checks the slot sums
    let appointments = h.clinic_appointments(clinic, "").await;
    let count = |status: &str| {
        appointments
            .iter()
            .filter(|a| a["status"] == status)
            .count()
    };
    let slot = &availability["slots"][0];
    assert_eq!(slot["pending"], count("PENDING") as u64, "{availability}");
    assert_eq!(
        slot["confirmed"],
        count("CONFIRMED") as u64,
        "{availability}"
    );
    assert_eq!(
        availability["stock"][VACCINE]["reserved"],
        (count("PENDING") + count("CONFIRMED")) as u64,
        "{availability}"
    );
}

/// A citizen id (`<prefix>-<i>`) on none of the shards in `avoid`.
fn citizen_not_on(h: &Harness, prefix: &str, avoid: &[u32]) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| !avoid.contains(&h.node().citizen_shard(id)))
        .expect("some id lands elsewhere")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_is_never_acknowledged_stops_its_shard_and_refuses_writes_until_a_restart() {
    let dir = temp_dir("flush-fault");
    let fault = FlushFault::default();
    let mut config = WalConfig::new(Durability::Sync);
    config.flush_fault = fault.clone();
    let h = Harness::start_storage(SHARDS_HERE, wal_storage(&dir, config))
        .await
        .expect("starts");
    set_up(&h).await;
    let first = h.book_ok("p1", "c1", "s1").await;
    h.confirm(&h.citizen_token("p1"), &first).await.expect(200);
    let clinic_shard = h.node().clinic_shard("c1");

    // The write whose flush fails: one citizen record, on a shard of its own (neither c1's
    // nor p2's, which are read and written below).
    fault.arm();
    let doomed = citizen_not_on(&h, "doomed", &[clinic_shard, h.node().citizen_shard("p2")]);
    let doomed_shard = h.node().citizen_shard(&doomed);
    let refused = h
        .send(
            Req::put(format!("/v1/citizens/{doomed}"))
                .token(&h.authority)
                .json(&citizen_body("1980-05-05")),
        )
        .await;
    let body = refused.expect(503);
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert_eq!(body["error"]["details"]["reason"], "log_failed", "{body}");
    assert!(refused.headers.contains_key("retry-after"));

    // Not ready, and it says why.
    let ready = h.send(Req::get("/readyz")).await.expect(503);
    assert_eq!(ready["error"]["code"], "NOT_READY");
    assert_eq!(ready["error"]["details"]["reason"], "log_failed", "{ready}");
    let shards = h
        .send(Req::get("/v1/admin/shards").token(&h.operator))
        .await
        .expect(200);
    assert_eq!(shards["storage"]["writable"], false, "{shards}");
    assert_eq!(shards["storage"]["reason"], "log_failed", "{shards}");
    let stopped = h.shard_entry(doomed_shard).await;
    assert_eq!(stopped["status"], "unavailable");
    assert!(
        stopped["reason"].as_str().unwrap().contains("injected"),
        "{stopped}"
    );
    // The shard whose write failed answers nothing (its memory holds the unstored citizen).
    assert_eq!(
        h.send(Req::get(format!("/v1/citizens/{doomed}/appointments")).token(&h.authority))
            .await
            .status,
        503
    );
    // No more writes anywhere, refused before they change anything: the clinic's counters
    // stay as they were.
    let before = h.availability("c1").await;
    let booking = h.book("p2", "c1", "s1").await.expect(503);
    assert_eq!(
        booking["error"]["details"]["reason"], "log_failed",
        "{booking}"
    );
    assert_eq!(h.availability("c1").await["slots"], before["slots"]);
    // Reads of the shards that had no write in flight go on, and show only what is stored.
    assert_eq!(h.appointment_json(&first).await["status"], "CONFIRMED");
    assert_counters_match_appointments(&h, "c1").await;
    h.shutdown().await;

    // A restart recovers from the log: the acknowledged confirm is there; the refused write
    // either never happened or happened whole (a 503 promises neither), and the counters
    // agree with the appointments either way.
    let h = Harness::start_storage(
        SHARDS_HERE,
        wal_storage(&dir, WalConfig::new(Durability::Sync)),
    )
    .await
    .expect("restarts");
    h.send(Req::get("/readyz")).await.expect(200);
    assert_eq!(h.appointment_json(&first).await["status"], "CONFIRMED");
    assert_counters_match_appointments(&h, "c1").await;
    // And it takes writes again.
    h.book_ok("p2", "c1", "s1").await;
    h.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_cut_off_and_reported_and_everything_before_it_recovers() {
    let dir = temp_dir("torn-tail");
    let sync = || WalConfig::new(Durability::Sync);
    let h = Harness::start_storage(SHARDS_HERE, wal_storage(&dir, sync()))
        .await
        .expect("starts");
    set_up(&h).await;
    let kept = h.book_ok("p1", "c1", "s1").await;
    let torn = h.book_ok("p2", "c1", "s1").await;
    // The confirm is the clinic shard's last record: the one the "crash" tears.
    h.confirm(&h.citizen_token("p2"), &torn).await.expect(200);
    let shard = h.node().clinic_shard("c1");
    let last = h.shard_entry(shard).await["wal_seq"].as_u64().unwrap();
    h.stop_without_snapshot().await;

    // Tear it: the stored frame holding it is cut to its first bytes, as a write interrupted
    // by a power cut leaves it (its checksum no longer matches). Opening the log here also
    // recovers it; it finds nothing wrong yet, and the tear comes after.
    {
        let wal = Wal::open(&dir, sync()).unwrap();
        wal.tear_frame_holding_for_test(shard, last).unwrap();
        wal.close().unwrap();
    }

    let h = tokio::time::timeout(
        Duration::from_secs(30),
        Harness::start_storage(SHARDS_HERE, wal_storage(&dir, sync())),
    )
    .await
    .expect("recovery is bounded")
    .expect("a torn tail does not stop start-up");
    h.send(Req::get("/readyz")).await.expect(200);
    let entry = h.shard_entry(shard).await;
    assert_eq!(entry["status"], "ready");
    // The torn frame's records cannot be read, so which shards it held is unknown: every
    // shard with nothing after it is told once, at its next seq, that it may have lost
    // records from there on. For the clinic shard that is the torn confirm.
    assert_eq!(entry["recovery_dropped_records"], 1, "{entry}");
    assert_eq!(entry["wal_seq"], last - 1, "{entry}");
    for other in (0..SHARDS_HERE).filter(|s| *s != shard) {
        let entry = h.shard_entry(other).await;
        assert_eq!(entry["status"], "ready", "{entry}");
        assert!(
            entry["recovery_dropped_records"].as_u64().unwrap() >= 1,
            "{entry}"
        );
    }
    // Everything before the torn record is there; the torn confirm is not.
    assert_eq!(h.appointment_json(&kept).await["status"], "PENDING");
    assert_eq!(h.appointment_json(&torn).await["status"], "PENDING");
    assert_counters_match_appointments(&h, "c1").await;
    // The shard goes on from the record before the tear.
    h.confirm(&h.citizen_token("p2"), &torn).await.expect(200);
    assert_eq!(h.shard_entry(shard).await["wal_seq"], last);
    h.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
