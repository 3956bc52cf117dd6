//! The Idempotency-Key protocol over HTTP (docs/API.md, Conventions).

use std::sync::Arc;

use holdfast_engine::NodeConfig;
use holdfast_gateway::auth::Role;
use serde_json::json;
use tokio::sync::Barrier;

use crate::common::*;

async fn setup(h: &Harness, capacity: u32) {
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", capacity, 100).await;
    h.put_slot("c-1", "s-2", capacity, &[VACCINE]).await;
    h.clinic_with_slot("c-2", "s-1", capacity, 100).await;
    for c in ["ann", "bob", "cem", "dan"] {
        h.put_adult(c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_same_body_replays_the_first_answer_byte_for_byte() {
    let h = Harness::start().await;
    setup(&h, 10).await;
    let ann = h.citizen_token("ann");
    let body = booking_body("ann", "c-1", "s-1", VACCINE);

    let first = h.book_with(&ann, "k-1", &body).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let second = h.book_with(&ann, "k-1", &body).await;
    assert_eq!(second.status, 201);
    assert_eq!(second.text, first.text, "a replay is byte-identical");
    assert_eq!(h.citizen_appointments("ann").await.len(), 1);

    // Same JSON value, other key order and whitespace: a replay, not a 422.
    let reordered = "{ \"citizen_id\" : \"ann\",\n  \"vaccine\": \"pfz\",\t\"slot_id\":\"s-1\",   \"clinic_id\": \"c-1\" }";
    let third = h
        .send(
            Req::post("/v1/appointments")
                .token(&ann)
                .idem("k-1")
                .raw("application/json", reordered),
        )
        .await;
    assert_eq!(third.status, 201, "{}", third.text);
    assert_eq!(third.text, first.text);
    assert_eq!(h.citizen_appointments("ann").await.len(), 1);
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (9, 1, 0));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_error_is_replayed_too() {
    let h = Harness::start().await;
    setup(&h, 1).await;
    let ann = h.citizen_token("ann");
    let bob = h.citizen_token("bob");
    let winner = h.book_ok("ann", "c-1", "s-1").await;

    let body = booking_body("bob", "c-1", "s-1", VACCINE);
    let first = h.book_with(&bob, "sold", &body).await;
    assert_error_code(&first, 409, "SOLD_OUT");

    // The seat frees up; the key still answers what it answered first.
    h.cancel(&ann, &winner).await.expect(200);
    assert_eq!(seats(&h.availability("c-1").await, "s-1"), (1, 0, 0));
    let replay = h.book_with(&bob, "sold", &body).await;
    assert_eq!(replay.status, 409);
    assert_eq!(
        replay.text, first.text,
        "a replayed error is byte-identical"
    );
    assert!(h.citizen_appointments("bob").await.is_empty());

    // A new key does book.
    h.book_with(&bob, "sold-2", &body).await.expect(201);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_other_body_is_422() {
    let h = Harness::start().await;
    setup(&h, 10).await;
    let ann = h.citizen_token("ann");
    h.book_with(&ann, "k", &booking_body("ann", "c-1", "s-1", VACCINE))
        .await
        .expect(201);

    let mut longer = booking_body("ann", "c-1", "s-1", VACCINE);
    longer["hold_seconds"] = json!(60);
    for other in [
        booking_body("ann", "c-1", "s-2", VACCINE),
        // Another clinic with the same key is detected: keys are per caller.
        booking_body("ann", "c-2", "s-1", VACCINE),
        longer,
    ] {
        let r = h.book_with(&ann, "k", &other).await;
        assert_error_code(&r, 422, "IDEMPOTENCY_KEY_REUSED");
    }
    assert_eq!(h.citizen_appointments("ann").await.len(), 1);
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-2"), (10, 0, 0));
    assert_eq!(seats(&h.availability("c-2").await, "s-1"), (10, 0, 0));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_to_the_caller() {
    let h = Harness::start().await;
    setup(&h, 10).await;
    let first = h
        .book_with(
            &h.citizen_token("ann"),
            "shared",
            &booking_body("ann", "c-1", "s-1", VACCINE),
        )
        .await
        .expect(201);
    // Another citizen (another sub) with the same key: its own booking.
    let second = h
        .book_with(
            &h.citizen_token("bob"),
            "shared",
            &booking_body("bob", "c-1", "s-1", VACCINE),
        )
        .await
        .expect(201);
    assert_ne!(first["appointment_id"], second["appointment_id"]);
    assert_eq!(second["citizen_id"], "bob");
    // An authority with the same key and yet another body: neither a replay nor a 422.
    let third = h
        .book_with(
            &h.authority,
            "shared",
            &booking_body("cem", "c-1", "s-1", VACCINE),
        )
        .await
        .expect(201);
    assert_eq!(third["citizen_id"], "cem");
    // Two tokens with one sub are one caller: the same key with another body is a reuse.
    let same_sub = token(Role::Citizen, "citizen-ann", Some("ann"), None);
    let r = h
        .book_with(
            &same_sub,
            "shared",
            &booking_body("ann", "c-1", "s-2", VACCINE),
        )
        .await;
    assert_error_code(&r, 422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(seats(&h.availability("c-1").await, "s-1"), (7, 3, 0));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_without_a_key_is_400_and_a_bad_key_is_400() {
    let h = Harness::start().await;
    setup(&h, 10).await;
    let ann = h.citizen_token("ann");
    let body = booking_body("ann", "c-1", "s-1", VACCINE);
    let r = h
        .send(Req::post("/v1/appointments").token(&ann).json(&body))
        .await;
    assert_error_code(&r, 400, "IDEMPOTENCY_KEY_REQUIRED");
    let long = "k".repeat(129);
    let r = h.book_with(&ann, &long, &body).await;
    assert_error_code(&r, 400, "BAD_REQUEST");
    // 128 characters is still a key.
    h.book_with(&ann, &"k".repeat(128), &body).await.expect(201);
    assert_eq!(h.citizen_appointments("ann").await.len(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_not_stored_so_the_key_can_be_retried() {
    let h = Harness::start().await;
    setup(&h, 10).await;
    let ann = h.citizen_token("ann");
    let mut bad = booking_body("ann", "c-1", "s-1", VACCINE);
    bad["hold_seconds"] = json!(0);
    assert_error_code(&h.book_with(&ann, "retry", &bad).await, 400, "BAD_REQUEST");
    h.book_with(&ann, "retry", &booking_body("ann", "c-1", "s-1", VACCINE))
        .await
        .expect(201);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_is_not_stored_so_the_key_can_be_retried() {
    let h = Harness::start().await;
    setup(&h, 10).await;
    let bob = h.citizen_token("bob");
    let r = h
        .book_with(&bob, "mine", &booking_body("ann", "c-1", "s-1", VACCINE))
        .await;
    assert_error_code(&r, 403, "FORBIDDEN");
    let own = h
        .book_with(&bob, "mine", &booking_body("bob", "c-1", "s-1", VACCINE))
        .await
        .expect(201);
    assert_eq!(own["citizen_id"], "bob");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_with_one_key_make_one_appointment() {
    let h = Harness::start().await;
    setup(&h, 10).await;
    let body = booking_body("dan", "c-1", "s-1", VACCINE);
    let barrier = Arc::new(Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let api = h.api.clone();
            let barrier = barrier.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let token = api.citizen_token("dan");
                barrier.wait().await;
                api.book_with(&token, "one-key", &body).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("a booking task"));
    }
    for a in &answers {
        assert_eq!(a.status, 201, "{}", a.text);
        assert_eq!(
            a.text, answers[0].text,
            "every request gets the first answer"
        );
    }
    let list = h.citizen_appointments("dan").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        list[0]["appointment_id"],
        answers[0].json()["appointment_id"]
    );
    assert_eq!(seats(&h.availability("c-1").await, "s-1"), (9, 1, 0));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_writes_replay_with_a_key() {
    let h = Harness::start().await;
    setup(&h, 10).await;
    let body = stock_body(VACCINE, "B-9", 5);
    let send = || {
        h.send(
            Req::post("/v1/clinics/c-1/stock")
                .token(&h.authority)
                .idem("stock-1")
                .json(&body),
        )
    };
    let first = send().await;
    assert_eq!(first.status, 200, "{}", first.text);
    let second = send().await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text, first.text);
    // Received once, not twice.
    assert_eq!(stock(&h.availability("c-1").await, VACCINE), (105, 0, 105));
    h.shutdown().await;
}

/// When the shard that keeps a caller's keys holds `idempotency_records_per_shard_max`
/// stored answers (`--idempotency-keys-per-shard`), a new key is refused with 503, a
/// `Retry-After` and the bound named in `details.reason`, and nothing is booked; a key it
/// already holds still replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_of_stored_answers_refuses_a_new_key_and_says_so() {
    let node = NodeConfig {
        idempotency_records_per_shard_max: 1,
        ..NodeConfig::embedded(SHARDS)
    };
    let h = Harness::start_node(node, HOLD_TTL_MS, MAX_HOLD_MS).await;
    setup(&h, 10).await;
    // One caller, so one shard keeps both keys.
    let first = h
        .book_with(
            &h.authority,
            "k-1",
            &booking_body("ann", "c-1", "s-1", VACCINE),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text);

    let refused = h
        .book_with(
            &h.authority,
            "k-2",
            &booking_body("bob", "c-1", "s-1", VACCINE),
        )
        .await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(refused.headers.contains_key("retry-after"));
    let body: serde_json::Value = serde_json::from_str(&refused.text).unwrap();
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
    assert_eq!(
        body["error"]["details"]["reason"], "idempotency_keys_full",
        "{body}"
    );
    assert!(
        h.citizen_appointments("bob").await.is_empty(),
        "nothing booked"
    );

    let again = h
        .book_with(
            &h.authority,
            "k-1",
            &booking_body("ann", "c-1", "s-1", VACCINE),
        )
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.text, first.text, "the stored key still replays");
    h.shutdown().await;
}
