//! The waitlist of a sold-out slot (docs/API.md, "Waitlist"): who may join and when,
//! positions that close up, offers that go to the first waiting citizen through the booking
//! saga (skipping those booked elsewhere), an order that survives restarts from the log and
//! from a snapshot, and Idempotency-Key replays of a join.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use holdfast_engine::{ManualClock, NodeConfig};
use holdfast_persistence::{Durability, WalConfig};
use holdfast_server::{ServerConfig, Storage};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// Most polls for something the server does by itself (an offer), 25 ms apart.
const POLLS_MAX: usize = 400;
const POLL_EVERY: Duration = Duration::from_millis(25);

fn join_path(clinic_id: &str, slot_id: &str) -> String {
    format!("/v1/clinics/{clinic_id}/slots/{slot_id}/waitlist")
}

/// `POST .../waitlist` as `citizen_id` itself, without a key.
async fn join(api: &Api, clinic_id: &str, slot_id: &str, citizen_id: &str) -> Resp {
    let body = json!({"citizen_id": citizen_id, "vaccine": VACCINE});
    api.send(
        Req::post(join_path(clinic_id, slot_id))
            .token(&api.citizen_token(citizen_id))
            .json(&body),
    )
    .await
}

/// Joins and asserts 201 at `position`; answers the entry's id.
async fn join_ok(
    api: &Api,
    clinic_id: &str,
    slot_id: &str,
    citizen_id: &str,
    position: u32,
) -> String {
    let joined = join(api, clinic_id, slot_id, citizen_id).await.expect(201);
    assert_eq!(joined["position"], position, "{citizen_id}: {joined}");
    joined["waitlist_id"].as_str().expect("an id").to_string()
}

async fn leave(api: &Api, token: &str, waitlist_id: &str) -> Resp {
    api.send(Req::new(Method::DELETE, format!("/v1/waitlist/{waitlist_id}")).token(token))
        .await
}

/// The citizen's entries, as the citizen reads them.
async fn entries(api: &Api, citizen_id: &str) -> Vec<Value> {
    let listing = api
        .send(
            Req::get(format!("/v1/citizens/{citizen_id}/waitlist"))
                .token(&api.citizen_token(citizen_id)),
        )
        .await
        .expect(200);
    listing["entries"].as_array().expect("entries").clone()
}

/// The citizen's position on the waitlist of `slot_id` (`None`: not waiting there).
async fn position(api: &Api, citizen_id: &str, slot_id: &str) -> Option<u64> {
    entries(api, citizen_id)
        .await
        .iter()
        .find(|e| e["slot_id"] == slot_id)
        .map(|e| e["position"].as_u64().expect("a number"))
}

/// Waits (bounded) until `citizen_id` has a PENDING appointment in `slot_id` and answers it.
async fn offered(api: &Api, citizen_id: &str, slot_id: &str) -> Value {
    for _ in 0..POLLS_MAX {
        let found = api
            .citizen_appointments(citizen_id)
            .await
            .into_iter()
            .find(|a| a["slot_id"] == slot_id && a["status"] == "PENDING");
        if let Some(a) = found {
            return a;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    panic!("{citizen_id} was never offered a seat in {slot_id}");
}

/// Waits (bounded) until `citizen_id` waits for no slot.
async fn gone_from_waitlists(api: &Api, citizen_id: &str) {
    for _ in 0..POLLS_MAX {
        if entries(api, citizen_id).await.is_empty() {
            return;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    panic!("{citizen_id} stays on a waitlist");
}

/// The standard vaccine, clinic `k1` with slot `s1` of one seat and doses, and the adults.
async fn sold_out_setup(api: &Api, citizens: &[&str]) {
    api.standard_vaccine(VACCINE).await;
    api.clinic_with_slot("k1", "s1", 1, 100).await;
    for c in citizens {
        api.put_adult(c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_is_refused_unless_the_slot_is_sold_out_once_per_citizen_and_up_to_the_bound() {
    let node = NodeConfig {
        waitlist_per_slot_max: 2,
        ..NodeConfig::embedded(SHARDS)
    };
    let h = Harness::start_node(node, HOLD_TTL_MS, MAX_HOLD_MS).await;
    sold_out_setup(&h, &["x", "a", "b", "c"]).await;
    h.put_slot("k1", "s2", 3, &[VACCINE]).await;
    h.put_vaccine("other", &vaccine_body(None)).await;

    // Failure cases first: a free seat, bad input, unknown things, another's token.
    let free = join(&h, "k1", "s1", "a").await;
    assert_error_code(&free, 409, "SEATS_AVAILABLE");
    let bad = h
        .send(
            Req::post(join_path("k1", "s1"))
                .token(&h.citizen_token("a"))
                .json(&json!({"citizen_id": "a"})),
        )
        .await;
    assert_error_code(&bad, 400, "BAD_REQUEST");
    let unknown_slot = join(&h, "k1", "nope", "a").await;
    assert_error_code(&unknown_slot, 404, "NOT_FOUND");
    let unknown_clinic = join(&h, "k9", "s1", "a").await;
    assert_error_code(&unknown_clinic, 404, "NOT_FOUND");
    let not_offered = h
        .send(
            Req::post(join_path("k1", "s1"))
                .token(&h.citizen_token("a"))
                .json(&json!({"citizen_id": "a", "vaccine": "other"})),
        )
        .await;
    assert_error_code(&not_offered, 409, "VACCINE_NOT_OFFERED");
    let for_another = h
        .send(
            Req::post(join_path("k1", "s1"))
                .token(&h.citizen_token("b"))
                .json(&json!({"citizen_id": "a", "vaccine": VACCINE})),
        )
        .await;
    assert_error_code(&for_another, 403, "FORBIDDEN");

    h.book_ok("x", "k1", "s1").await;
    let a = join_ok(&h, "k1", "s1", "a", 1).await;
    assert_error_code(&join(&h, "k1", "s1", "a").await, 409, "ALREADY_WAITING");
    join_ok(&h, "k1", "s1", "b", 2).await;
    assert_error_code(&join(&h, "k1", "s1", "c").await, 409, "LIMIT_REACHED");

    // Someone else's entry and listing are not theirs to touch; unknown ids are 404.
    assert_error_code(
        &leave(&h, &h.citizen_token("b"), &a).await,
        403,
        "FORBIDDEN",
    );
    let others = h
        .send(Req::get("/v1/citizens/a/waitlist").token(&h.citizen_token("b")))
        .await;
    assert_error_code(&others, 403, "FORBIDDEN");
    assert_error_code(&leave(&h, &h.authority, "wl-0-999").await, 404, "NOT_FOUND");
    assert_error_code(&leave(&h, &h.authority, "nonsense").await, 404, "NOT_FOUND");

    // An authority may act for the citizen; a second leave finds nothing.
    leave(&h, &h.authority, &a).await.expect(200);
    assert_error_code(
        &leave(&h, &h.citizen_token("a"), &a).await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(position(&h, "b", "s1").await, Some(1));

    // A cancelled slot drops its waitlist, and nobody may join it any more.
    h.send(
        Req::post("/v1/clinics/k1/slots/s1/cancel")
            .token(&h.authority)
            .json(&json!({"reason": "flood"})),
    )
    .await
    .expect(200);
    assert!(entries(&h, "b").await.is_empty());
    assert_error_code(&join(&h, "k1", "s1", "c").await, 409, "SLOT_CANCELLED");
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_seat_goes_to_the_first_waiting_citizen_and_skips_those_booked_elsewhere() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now().timestamp_millis()));
    let h = Harness::start_config(ServerConfig {
        clock: clock.clone(),
        ..test_config(
            NodeConfig::embedded(SHARDS),
            HOLD_TTL_MS,
            MAX_HOLD_MS,
            Storage::Memory,
        )
    })
    .await;
    sold_out_setup(&h, &["x", "a", "b", "c", "d"]).await;
    h.clinic_with_slot("k2", "s9", 5, 100).await;

    let mut body = booking_body("x", "k1", "s1", VACCINE);
    body["hold_seconds"] = json!(5);
    h.book_with(&h.citizen_token("x"), &fresh_key("x"), &body)
        .await
        .expect(201);
    join_ok(&h, "k1", "s1", "a", 1).await;
    join_ok(&h, "k1", "s1", "b", 2).await;
    let c = join_ok(&h, "k1", "s1", "c", 3).await;
    join_ok(&h, "k1", "s1", "d", 4).await;
    let listed = entries(&h, "c").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["waitlist_id"], c.as_str());
    assert_eq!(listed[0]["clinic_id"], "k1");
    assert_eq!(listed[0]["vaccine"], VACCINE);

    // C leaves: D moves up.
    leave(&h, &h.citizen_token("c"), &c).await.expect(200);
    assert_eq!(position(&h, "d", "s1").await, Some(3));
    assert!(entries(&h, "c").await.is_empty());
    // B books elsewhere meanwhile.
    h.book_ok("b", "k2", "s9").await;

    // X's hold expires: A, first in line, gets the seat.
    clock.advance(6_000);
    let a = offered(&h, "a", "s1").await;
    assert_eq!(a["offered_from_waitlist"], true, "{a}");
    check_appointment_shape(&a);
    assert!(entries(&h, "a").await.is_empty());
    assert_eq!(position(&h, "b", "s1").await, Some(1));
    assert_eq!(position(&h, "d", "s1").await, Some(2));

    // A cancels: B (booked elsewhere) is skipped and removed, D gets the seat.
    let a_id = a["appointment_id"].as_str().unwrap();
    h.cancel(&h.citizen_token("a"), a_id).await.expect(200);
    let d = offered(&h, "d", "s1").await;
    assert_eq!(d["offered_from_waitlist"], true, "{d}");
    gone_from_waitlists(&h, "b").await;
    let b_appointments = h.citizen_appointments("b").await;
    assert_eq!(b_appointments.len(), 1, "{b_appointments:?}");
    assert_eq!(b_appointments[0]["slot_id"], "s9");
    // D confirms the offer like any hold; a booking the citizen made has no flag.
    let d_id = d["appointment_id"].as_str().unwrap();
    let confirmed = h.confirm(&h.citizen_token("d"), d_id).await.expect(200);
    assert_eq!(confirmed["status"], "CONFIRMED");
    assert_eq!(b_appointments[0]["offered_from_waitlist"], false);
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

/// A server on the write-ahead log in `dir`.
async fn on_disk(dir: &Path) -> Harness {
    Harness::start_storage(SHARDS, wal_storage(dir, WalConfig::new(Durability::Sync)))
        .await
        .expect("the server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_survives_restarts_from_the_log_and_from_a_snapshot() {
    let dir = temp_dir("waitlist");
    let h = on_disk(&dir).await;
    sold_out_setup(&h, &["x", "a", "b", "c"]).await;
    let x = h.book_ok("x", "k1", "s1").await;
    join_ok(&h, "k1", "s1", "a", 1).await;
    join_ok(&h, "k1", "s1", "b", 2).await;
    let c = join_ok(&h, "k1", "s1", "c", 3).await;

    // From the log alone.
    h.stop_without_snapshot().await;
    let h = on_disk(&dir).await;
    for (citizen, at) in [("a", 1), ("b", 2), ("c", 3)] {
        assert_eq!(position(&h, citizen, "s1").await, Some(at), "{citizen}");
    }
    // A new entry after the restart gets a new id, behind the others.
    h.put_adult("d").await;
    let d = join_ok(&h, "k1", "s1", "d", 4).await;
    assert_ne!(d, c);

    // From a snapshot (a graceful stop snapshots every shard).
    h.shutdown().await;
    let h = on_disk(&dir).await;
    for (citizen, at) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        assert_eq!(position(&h, citizen, "s1").await, Some(at), "{citizen}");
    }
    assert_error_code(&join(&h, "k1", "s1", "b").await, 409, "ALREADY_WAITING");

    // An offer after the restart goes to the first.
    h.cancel(&h.citizen_token("x"), &x).await.expect(200);
    let a = offered(&h, "a", "s1").await;
    assert_eq!(a["offered_from_waitlist"], true, "{a}");
    assert_eq!(position(&h, "b", "s1").await, Some(1));
    h.assert_invariants_ok().await;
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_freed_while_the_server_was_down_is_offered_after_recovery() {
    let dir = temp_dir("waitlist-down");
    let h = on_disk(&dir).await;
    sold_out_setup(&h, &["x", "a"]).await;
    let mut body = booking_body("x", "k1", "s1", VACCINE);
    body["hold_seconds"] = json!(1);
    h.book_with(&h.citizen_token("x"), &fresh_key("x"), &body)
        .await
        .expect(201);
    join_ok(&h, "k1", "s1", "a", 1).await;
    // Stopped before the hold's deadline (if the stop is quick) or after it: either way the
    // seat is free once the server is back, and A must get it.
    h.stop_without_snapshot().await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let h = on_disk(&dir).await;
    let a = offered(&h, "a", "s1").await;
    assert_eq!(a["offered_from_waitlist"], true, "{a}");
    h.assert_invariants_ok().await;
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_replays_under_its_idempotency_key() {
    let h = Harness::start().await;
    sold_out_setup(&h, &["x", "a"]).await;
    h.book_ok("x", "k1", "s1").await;
    let body = json!({"citizen_id": "a", "vaccine": VACCINE});
    let send = |body: Value| {
        h.send(
            Req::post(join_path("k1", "s1"))
                .token(&h.citizen_token("a"))
                .idem("join-1")
                .json(&body),
        )
    };
    let first = send(body.clone()).await;
    first.expect(201);
    let again = send(body.clone()).await;
    again.expect(201);
    assert_eq!(again.text, first.text);
    let other = send(json!({"citizen_id": "a", "vaccine": "other"})).await;
    assert_error_code(&other, 422, "IDEMPOTENCY_KEY_REUSED");
    // Without the key, a second join is refused: one entry per citizen per slot.
    assert_error_code(&join(&h, "k1", "s1", "a").await, 409, "ALREADY_WAITING");
    assert_eq!(entries(&h, "a").await.len(), 1);
    h.shutdown().await;
}

// ---- crashes in the middle of an offer (the real binary, killed at a failpoint) ----------

/// One crash test's files.
struct CrashDirs {
    root: std::path::PathBuf,
}

impl CrashDirs {
    fn new(name: &str) -> CrashDirs {
        let root = temp_dir(&format!("waitlist-crash-{name}"));
        std::fs::write(root.join("secret"), SECRET).unwrap();
        CrashDirs { root }
    }

    async fn start(&self, failpoint: Option<&str>) -> crate::spawned::Spawned {
        let root = &self.root;
        let tag = failpoint.unwrap_or("restarted");
        crate::spawned::start(
            &root.join("data"),
            &root.join("secret"),
            &root.join("addr"),
            tag,
            failpoint,
        )
        .await
    }
}

impl Drop for CrashDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// X holds the one seat of `k1/s1`, A and B wait; X cancels, and the offer to A stops at
/// `point`, where the process is killed. Answers the restarted server.
async fn offer_cut_at(dirs: &CrashDirs, point: &str) -> crate::spawned::Spawned {
    let mut server = dirs.start(Some(point)).await;
    sold_out_setup(&server.api, &["x", "a", "b"]).await;
    let x = server.api.book_ok("x", "k1", "s1").await;
    join_ok(&server.api, "k1", "s1", "a", 1).await;
    join_ok(&server.api, "k1", "s1", "b", 2).await;
    let token = server.api.citizen_token("x");
    server.api.cancel(&token, &x).await.expect(200);
    server.wait_for_failpoint(point, 1).await;
    server.kill();
    dirs.start(None).await
}

async fn assert_invariants(api: &Api) {
    let operator = token(holdfast_gateway::auth::Role::Operator, "op", None, None);
    let report = api
        .send(Req::get("/v1/admin/invariants").token(&operator))
        .await
        .expect(200);
    assert_eq!(report["ok"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_an_offers_hold_keeps_the_hold_and_binds_its_claim() {
    let dirs = CrashDirs::new("after-hold");
    let server = offer_cut_at(&dirs, "offer.after_hold").await;
    let api = &server.api;
    // The hold and the entry's removal were one step; the claim, journaled when taken, is
    // bound to it by the reconciliation (not rejected as an orphan).
    let a = offered(api, "a", "s1").await;
    assert_eq!(a["offered_from_waitlist"], true, "{a}");
    assert!(entries(api, "a").await.is_empty());
    assert_eq!(position(api, "b", "s1").await, Some(1));
    assert_invariants(api).await;
    let token = api.citizen_token("a");
    let id = a["appointment_id"].as_str().unwrap();
    api.confirm(&token, id).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_an_offers_hold_keeps_the_entry_and_offers_again_after_recovery() {
    let dirs = CrashDirs::new("after-claim");
    let server = offer_cut_at(&dirs, "offer.after_claim").await;
    let api = &server.api;
    // Nothing was held: A keeps the front, and the sweep after recovery offers the free seat.
    let a = offered(api, "a", "s1").await;
    assert_eq!(a["offered_from_waitlist"], true, "{a}");
    assert!(entries(api, "a").await.is_empty());
    assert_eq!(position(api, "b", "s1").await, Some(1));
    assert_invariants(api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_replays_under_its_idempotency_key() {
    let h = Harness::start().await;
    sold_out_setup(&h, &["x", "a"]).await;
    h.book_ok("x", "k1", "s1").await;
    let id = join_ok(&h, "k1", "s1", "a", 1).await;
    let token = h.citizen_token("a");
    let send = || {
        h.send(
            Req::new(Method::DELETE, format!("/v1/waitlist/{id}"))
                .token(&token)
                .idem("leave-1"),
        )
    };
    let first = send().await;
    first.expect(200);
    // The entry is gone, but the same key answers the first 200 again.
    let again = send().await;
    again.expect(200);
    assert_eq!(again.text, first.text);
    assert_error_code(&leave(&h, &token, &id).await, 404, "NOT_FOUND");
    h.shutdown().await;
}
