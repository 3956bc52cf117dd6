//! The disk fails, seen from HTTP, through the real write-ahead log:
//!
//! - a flush that fails (a fault hook in the WAL's writer makes `fdatasync` fail): the write
//!   that needed it is answered 503, never 2xx; the node takes no more writes and answers no
//!   reads (memory may hold what the log does not); `/readyz` turns 503; the operator
//!   endpoint says why; a restart recovers exactly from the log;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_is_never_acknowledged_and_stops_the_node_until_a_restart() {
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

    fault.arm();
    let refused = h.book("p2", "c1", "s1").await;
    let body = refused.expect(503);
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert!(refused.headers.contains_key("retry-after"));
    // Not ready, and it says why.
    assert_eq!(
        h.send(Req::get("/readyz")).await.expect(503)["error"]["code"],
        "NOT_READY"
    );
    let shard = h.node().clinic_shard("c1");
    let entry = h.shard_entry(shard).await;
    assert_eq!(entry["status"], "unavailable");
    assert!(
        entry["reason"].as_str().unwrap().contains("injected"),
        "{entry}"
    );
    // No more writes, and no reads of a memory that may be ahead of the log.
    assert_eq!(
        h.book("p2", "c1", "s1").await.expect(503)["error"]["code"],
        "UNAVAILABLE"
    );
    assert_eq!(
        h.send(Req::get(format!("/v1/appointments/{first}")).token(&h.authority))
            .await
            .status,
        503
    );
    h.shutdown().await;

    // A restart recovers from the log: the acknowledged confirm is there; the refused
    // booking either never happened or happened whole (a 503 promises neither), and the
    // counters agree with the appointments either way.
    let h = Harness::start_storage(
        SHARDS_HERE,
        wal_storage(&dir, WalConfig::new(Durability::Sync)),
    )
    .await
    .expect("restarts");
    h.send(Req::get("/readyz")).await.expect(200);
    assert_eq!(h.appointment_json(&first).await["status"], "CONFIRMED");
    assert_counters_match_appointments(&h, "c1").await;
    // And it takes writes again (for a new citizen: the refused booking of p2 may have
    // happened whole, and then p2 already has an appointment).
    h.put_adult("p3").await;
    h.book_ok("p3", "c1", "s1").await;
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
