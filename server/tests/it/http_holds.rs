//! Holds over HTTP: expiry at `--hold-ttl`, `hold_seconds` clamped by `--max-hold`, and a
//! confirm after the deadline.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

const TTL_MS: i64 = 500;
const MAX_HOLD_MS: i64 = 2_000;

/// Polls the appointment (at most 3 s, every 25 ms) until its status is `status`.
async fn wait_for_status(api: &Api, id: &str, status: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = serde_json::Value::Null;
    for _ in 0..120 {
        last = api.appointment_json(id).await;
        if last["status"] == status {
            return last;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("appointment {id} did not become {status} within 3 s; last: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_hold_expires_and_gives_back_seat_and_dose() {
    let h = Harness::start_with(SHARDS, TTL_MS, MAX_HOLD_MS).await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 2, 5).await;
    h.put_adult("ann").await;
    let ann = h.citizen_token("ann");

    let started = Instant::now();
    let created = h.book("ann", "c-1", "s-1").await.expect(201);
    let id = created["appointment_id"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "PENDING");
    let ttl = parse_time(&created["expires_at"]) - parse_time(&created["created_at"]);
    assert_eq!(ttl.num_milliseconds(), TTL_MS, "{created}");
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (1, 1, 0));
    assert_eq!(stock(&avail, VACCINE), (5, 1, 4));

    let expired = wait_for_status(&h, &id, "EXPIRED").await;
    assert!(
        started.elapsed() >= Duration::from_millis(TTL_MS as u64),
        "expired before its deadline"
    );
    assert!(expired["expires_at"].is_null(), "{expired}");
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (2, 0, 0));
    assert_eq!(stock(&avail, VACCINE), (5, 0, 5));

    // Confirming an EXPIRED appointment: 410, and it stays EXPIRED.
    assert_error_code(&h.confirm(&ann, &id).await, 410, "HOLD_EXPIRED");
    assert_eq!(h.appointment_json(&id).await["status"], "EXPIRED");
    // Cancelling it is not a transition from EXPIRED.
    let details = assert_error_code(&h.cancel(&ann, &id).await, 409, "INVALID_TRANSITION");
    assert_eq!(details["status"], "EXPIRED");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_after_the_deadline_is_410_even_before_expiry_runs() {
    let h = Harness::start_with(SHARDS, TTL_MS, MAX_HOLD_MS).await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 2, 5).await;
    h.put_adult("bob").await;
    let bob = h.citizen_token("bob");
    let created = h.book("bob", "c-1", "s-1").await.expect(201);
    let id = created["appointment_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(TTL_MS as u64 + 50)).await;
    assert_error_code(&h.confirm(&bob, &id).await, 410, "HOLD_EXPIRED");
    assert_eq!(h.appointment_json(&id).await["status"], "EXPIRED");
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (2, 0, 0));
    assert_eq!(stock(&avail, VACCINE), (5, 0, 5));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_seconds_is_clamped_and_must_be_positive() {
    let h = Harness::start_with(SHARDS, TTL_MS, MAX_HOLD_MS).await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 5, 5).await;
    for c in ["ann", "bob", "cem"] {
        h.put_adult(c).await;
    }

    // 0 and negative: 400 naming hold_seconds, nothing held.
    let before = h.availability("c-1").await;
    for bad in [json!(0), json!(-5)] {
        let mut body = booking_body("cem", "c-1", "s-1", VACCINE);
        body["hold_seconds"] = bad;
        let r = h
            .book_with(&h.citizen_token("cem"), &fresh_key("zero"), &body)
            .await;
        let details = assert_error_code(&r, 400, "BAD_REQUEST");
        assert_eq!(details["field"], "hold_seconds");
    }
    assert_eq!(h.availability("c-1").await, before);

    // Above --max-hold: clamped, and expires_at shows the clamped deadline.
    let mut body = booking_body("ann", "c-1", "s-1", VACCINE);
    body["hold_seconds"] = json!(100);
    let created = h
        .book_with(&h.citizen_token("ann"), &fresh_key("clamp"), &body)
        .await
        .expect(201);
    let hold = parse_time(&created["expires_at"]) - parse_time(&created["created_at"]);
    assert!(
        hold.num_milliseconds() <= MAX_HOLD_MS,
        "hold of {hold} above max-hold: {created}"
    );
    assert_eq!(hold.num_milliseconds(), MAX_HOLD_MS, "{created}");

    // Within --max-hold: as asked.
    let mut body = booking_body("bob", "c-1", "s-1", VACCINE);
    body["hold_seconds"] = json!(1);
    let created = h
        .book_with(&h.citizen_token("bob"), &fresh_key("one"), &body)
        .await
        .expect(201);
    let hold = parse_time(&created["expires_at"]) - parse_time(&created["created_at"]);
    assert_eq!(hold.num_milliseconds(), 1_000, "{created}");

    // A huge value is clamped too, never an overflow or a 500.
    let mut body = booking_body("cem", "c-1", "s-1", VACCINE);
    body["hold_seconds"] = json!(i64::MAX);
    let created = h
        .book_with(&h.citizen_token("cem"), &fresh_key("huge"), &body)
        .await
        .expect(201);
    let hold = parse_time(&created["expires_at"]) - parse_time(&created["created_at"]);
    assert_eq!(hold.num_milliseconds(), MAX_HOLD_MS, "{created}");

    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_appointment_of_a_long_ended_slot_becomes_no_show() {
    let h = Harness::start_with(SHARDS, TTL_MS, MAX_HOLD_MS).await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 2, 5).await;
    h.put_adult("ann").await;
    let id = h.book_ok("ann", "c-1", "s-1").await;
    h.confirm(&h.citizen_token("ann"), &id).await.expect(200);
    // Move the slot into the past: it ended 3 h ago, beyond the default 2 h grace.
    let past = slot_body(hours_from_now(-4), hours_from_now(-3), 2, &[VACCINE], 0);
    h.put_slot_raw("c-1", "s-1", &past).await.expect(200);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        last = h.appointment_json(&id).await;
        if last["status"] == "NO_SHOW" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["status"], "NO_SHOW", "{last}");
    let avail = h.availability("c-1").await;
    assert_eq!(slot(&avail, "s-1")["no_show"], 1);
    assert_eq!(stock(&avail, VACCINE), (5, 0, 5));
    h.shutdown().await;
}
