//! Booking over HTTP: the races for the last seat and the last dose, and the appointment's
//! life cycle (create, confirm, QR code, cancel, listings).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::common::*;

/// Sends one booking per citizen at once (each with its own token and key, all released by
/// a barrier) and returns `(status, error code or "")` per citizen.
async fn rush(api: &Api, bookings: Vec<(String, String, String)>) -> Vec<(u16, String)> {
    let barrier = Arc::new(Barrier::new(bookings.len()));
    let tasks: Vec<_> = bookings
        .into_iter()
        .map(|(citizen, clinic, slot)| {
            let api = api.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let token = api.citizen_token(&citizen);
                let body = booking_body(&citizen, &clinic, &slot, VACCINE);
                let key = format!("rush-{citizen}");
                barrier.wait().await;
                let r = api.book_with(&token, &key, &body).await;
                let code = if r.status == 201 {
                    check_appointment_shape(&r.json());
                    String::new()
                } else {
                    assert_error(&r, r.status)
                };
                (r.status, code)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("a booking task"));
    }
    out
}

fn tally(answers: &[(u16, String)]) -> BTreeMap<(u16, String), usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a.clone()).or_insert(0) += 1;
    }
    counts
}

async fn put_citizens(api: &Api, ids: &[String]) {
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let api = api.clone();
            let id = id.clone();
            tokio::spawn(async move {
                api.put_adult(&id).await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a citizen task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_race_for_five_seats() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-race", "s-1", 5, 1000).await;
    let citizens: Vec<String> = (0..200).map(|i| format!("cit-{i}")).collect();
    put_citizens(&h, &citizens).await;

    let bookings = citizens
        .iter()
        .map(|c| (c.clone(), "c-race".to_string(), "s-1".to_string()))
        .collect();
    let answers = rush(&h, bookings).await;

    let expected = BTreeMap::from([
        ((201, String::new()), 5),
        ((409, "SOLD_OUT".to_string()), 195),
    ]);
    assert_eq!(tally(&answers), expected);

    let avail = h.availability("c-race").await;
    let s = slot(&avail, "s-1");
    assert_eq!(seats(&avail, "s-1"), (0, 5, 0), "{s}");
    assert_eq!(s["capacity"], 5);
    assert_eq!(stock(&avail, VACCINE), (1000, 5, 995));
    assert_eq!(
        h.clinic_appointments("c-race", "?status=PENDING")
            .await
            .len(),
        5
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_clients_race_for_three_doses() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-stock", "big-1", 100, 3).await;
    h.put_slot("c-stock", "big-2", 100, &[VACCINE]).await;
    let citizens: Vec<String> = (0..40).map(|i| format!("cit-{i}")).collect();
    put_citizens(&h, &citizens).await;

    let bookings = citizens
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let slot = if i % 2 == 0 { "big-1" } else { "big-2" };
            (c.clone(), "c-stock".to_string(), slot.to_string())
        })
        .collect();
    let answers = rush(&h, bookings).await;

    let expected = BTreeMap::from([
        ((201, String::new()), 3),
        ((409, "OUT_OF_STOCK".to_string()), 37),
    ]);
    assert_eq!(tally(&answers), expected);

    let avail = h.availability("c-stock").await;
    assert_eq!(stock(&avail, VACCINE), (3, 3, 0));
    let (r1, p1, _) = seats(&avail, "big-1");
    let (r2, p2, _) = seats(&avail, "big-2");
    assert_eq!(p1 + p2, 3);
    assert_eq!(r1 + r2, 197);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appointment_goes_through_its_life_cycle() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 10).await;
    h.put_slot("c-1", "s-2", 10, &[VACCINE]).await;
    for c in ["ann", "bob", "cem"] {
        h.put_adult(c).await;
    }
    let ann = h.citizen_token("ann");

    // Create: 201 PENDING with every field.
    let created = h
        .book_with(
            &ann,
            &fresh_key("flow"),
            &json!({"clinic_id": "c-1", "slot_id": "s-1", "vaccine": VACCINE,
                    "citizen_id": "ann", "hold_seconds": 300}),
        )
        .await
        .expect(201);
    check_appointment_shape(&created);
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["clinic_id"], "c-1");
    assert_eq!(created["slot_id"], "s-1");
    assert_eq!(created["vaccine"], VACCINE);
    assert_eq!(created["citizen_id"], "ann");
    let expires = parse_time(&created["expires_at"]);
    let created_at = parse_time(&created["created_at"]);
    assert_eq!((expires - created_at).num_milliseconds(), 300_000);
    for field in ["confirmed_at", "administered_at", "batch"] {
        assert!(created[field].is_null(), "{field} in {created}");
    }
    for field in ["needs_review", "at_risk", "rebook_priority"] {
        assert_eq!(created[field], false, "{field} in {created}");
    }
    let a1 = created["appointment_id"].as_str().unwrap().to_string();
    assert_eq!(h.appointment(&ann, &a1).await.expect(200), created);
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (9, 1, 0));
    assert_eq!(stock(&avail, VACCINE), (10, 1, 9));

    // The QR code exists only once confirmed.
    let qr = h
        .send(Req::get(format!("/v1/appointments/{a1}/qr.svg")).token(&ann))
        .await;
    let details = assert_error_code(&qr, 409, "NOT_CONFIRMED");
    assert_eq!(details["status"], "PENDING");

    // Confirm: 200 CONFIRMED with a qr_token; again: 200, nothing changes.
    let confirmed = h.confirm(&ann, &a1).await.expect(200);
    check_appointment_shape(&confirmed);
    assert_eq!(confirmed["status"], "CONFIRMED");
    assert!(confirmed["qr_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    parse_time(&confirmed["confirmed_at"]);
    assert!(
        confirmed["expires_at"].is_null(),
        "set only while PENDING: {confirmed}"
    );
    let again = h.confirm(&ann, &a1).await.expect(200);
    assert_eq!(again["status"], "CONFIRMED");
    assert_eq!(again["confirmed_at"], confirmed["confirmed_at"]);
    assert_eq!(again["qr_token"], confirmed["qr_token"]);
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (9, 0, 1));
    assert_eq!(stock(&avail, VACCINE), (10, 1, 9));

    let qr = h
        .send(Req::get(format!("/v1/appointments/{a1}/qr.svg")).token(&ann))
        .await;
    assert_eq!(qr.status, 200, "{}", qr.text);
    assert!(
        qr.content_type.starts_with("image/svg+xml"),
        "{}",
        qr.content_type
    );
    assert!(qr.text.contains("<svg"), "{}", qr.text);

    // Cancel: 200 CANCELLED, seat and dose back at once; again: 200.
    let cancelled = h.cancel(&ann, &a1).await.expect(200);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(cancelled["qr_token"].is_null(), "{cancelled}");
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (10, 0, 0));
    assert_eq!(stock(&avail, VACCINE), (10, 0, 10));
    assert_eq!(h.cancel(&ann, &a1).await.expect(200)["status"], "CANCELLED");

    // Confirm after cancel: 409 INVALID_TRANSITION naming the current status.
    let details = assert_error_code(&h.confirm(&ann, &a1).await, 409, "INVALID_TRANSITION");
    assert_eq!(details["status"], "CANCELLED");
    let qr = h
        .send(Req::get(format!("/v1/appointments/{a1}/qr.svg")).token(&ann))
        .await;
    assert_error_code(&qr, 409, "NOT_CONFIRMED");

    // Cancel a PENDING one: RELEASED.
    let a2 = h.book_ok("ann", "c-1", "s-2").await;
    let released = h.cancel(&ann, &a2).await.expect(200);
    assert_eq!(released["status"], "RELEASED");
    assert!(released["expires_at"].is_null(), "{released}");
    assert_eq!(h.cancel(&ann, &a2).await.expect(200)["status"], "RELEASED");
    let details = assert_error_code(&h.confirm(&ann, &a2).await, 409, "INVALID_TRANSITION");
    assert_eq!(details["status"], "RELEASED");
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-2"), (10, 0, 0));
    assert_eq!(stock(&avail, VACCINE), (10, 0, 10));

    // Unknown ids: 404.
    for id in ["ap-0-999999", "ap-99999-1", "nope"] {
        assert_error_code(&h.appointment(&ann, id).await, 404, "NOT_FOUND");
    }

    // Listings.
    let a3 = h.book_ok("bob", "c-1", "s-1").await; // PENDING on s-1
    let a4 = h.book_ok("cem", "c-1", "s-2").await;
    h.confirm(&h.citizen_token("cem"), &a4).await.expect(200); // CONFIRMED on s-2

    let mine = h.citizen_appointments("ann").await;
    assert_eq!(ids(&mine), vec![a1.clone(), a2.clone()]);
    assert_eq!(mine[0]["status"], "CANCELLED");
    assert_eq!(mine[1]["status"], "RELEASED");
    mine.iter().for_each(check_appointment_shape);
    let own = h
        .send(Req::get("/v1/citizens/ann/appointments").token(&ann))
        .await
        .expect(200);
    assert_eq!(own["appointments"].as_array().unwrap(), &mine);
    assert_eq!(ids(&h.citizen_appointments("bob").await), vec![a3.clone()]);
    assert!(h.citizen_appointments("nobody").await.is_empty());

    let all = h.clinic_appointments("c-1", "").await;
    assert_eq!(
        sorted(ids(&all)),
        sorted(vec![a1.clone(), a2.clone(), a3.clone(), a4.clone()])
    );
    let s1 = h.clinic_appointments("c-1", "?slot_id=s-1").await;
    assert_eq!(sorted(ids(&s1)), sorted(vec![a1.clone(), a3.clone()]));
    let pending = h.clinic_appointments("c-1", "?status=PENDING").await;
    assert_eq!(ids(&pending), vec![a3.clone()]);
    let s2_confirmed = h
        .clinic_appointments("c-1", "?slot_id=s-2&status=CONFIRMED")
        .await;
    assert_eq!(ids(&s2_confirmed), vec![a4.clone()]);
    assert!(h
        .clinic_appointments("c-1", "?slot_id=s-1&status=CONFIRMED")
        .await
        .is_empty());
    let staff = h
        .send(Req::get("/v1/clinics/c-1/appointments?status=RELEASED").token(&h.staff_token("c-1")))
        .await
        .expect(200);
    assert_eq!(
        ids(staff["appointments"].as_array().unwrap()),
        vec![a2.clone()]
    );
    let bad_status = h
        .send(Req::get("/v1/clinics/c-1/appointments?status=DONE").token(&h.authority))
        .await;
    assert_error_code(&bad_status, 400, "BAD_REQUEST");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_filters_by_vaccine_and_start_time() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.standard_vaccine("mdn").await;
    h.clinic_with_slot("c-1", "day-1", 5, 5).await;
    let later = slot_body(hours_from_now(48), hours_from_now(49), 5, &["mdn"], 0);
    h.put_slot_raw("c-1", "day-2", &later).await.expect(200);
    h.receive_stock("c-1", "mdn", "M-1", 7).await;

    let get = |query: String| {
        let api = h.api.clone();
        async move {
            let avail = api
                .send(Req::get(format!("/v1/clinics/c-1/availability{query}")))
                .await
                .expect(200);
            let slots: Vec<String> = avail["slots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["slot_id"].as_str().unwrap().to_string())
                .collect();
            let stock: Vec<String> = avail["stock"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            (slots, stock)
        }
    };
    let both = (
        vec!["day-1".to_string(), "day-2".to_string()],
        vec!["mdn".to_string(), VACCINE.to_string()],
    );
    assert_eq!(get(String::new()).await, both);
    assert_eq!(
        get("?vaccine=mdn".to_string()).await,
        (vec!["day-2".to_string()], vec!["mdn".to_string()])
    );
    let middle = hours_from_now(36);
    assert_eq!(
        get(format!("?from={middle}")).await.0,
        vec!["day-2".to_string()]
    );
    assert_eq!(
        get(format!("?to={middle}")).await.0,
        vec!["day-1".to_string()]
    );
    h.shutdown().await;
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_or_cancel_body_is_optional() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 10).await;
    h.put_adult("ann").await;
    let ann = h.citizen_token("ann");
    let id = h.book_ok("ann", "c-1", "s-1").await;
    let r = h
        .send(
            Req::post(format!("/v1/appointments/{id}/confirm"))
                .token(&ann)
                .json(&json!({})),
        )
        .await;
    assert_eq!(r.expect(200)["status"], "CONFIRMED");
    let r: Value = h
        .send(
            Req::post(format!("/v1/appointments/{id}/cancel"))
                .token(&ann)
                .json(&json!({})),
        )
        .await
        .expect(200);
    assert_eq!(r["status"], "CANCELLED");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_holds_at_most_one_active_appointment() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    let clinics: Vec<String> = (0..8).map(|i| format!("clinic-{i}")).collect();
    for c in &clinics {
        h.clinic_with_slot(c, "s-1", 10, 10).await;
    }
    h.put_adult("ann").await;
    h.put_adult("bob").await;

    // Sequentially: the second booking elsewhere is 409 ALREADY_BOOKED, nothing held.
    let first = h.book_ok("ann", &clinics[0], "s-1").await;
    let r = h.book("ann", &clinics[1], "s-1").await;
    assert_error_code(&r, 409, "ALREADY_BOOKED");
    assert_eq!(seats(&h.availability(&clinics[1]).await, "s-1"), (10, 0, 0));
    // Confirmed still counts; once cancelled the citizen may book again.
    h.confirm(&h.citizen_token("ann"), &first).await.expect(200);
    assert_error_code(
        &h.book("ann", &clinics[1], "s-1").await,
        409,
        "ALREADY_BOOKED",
    );
    h.cancel(&h.citizen_token("ann"), &first).await.expect(200);
    h.book_ok("ann", &clinics[1], "s-1").await;

    // Concurrently, with a different key per request: exactly one wins.
    let bookings = clinics
        .iter()
        .map(|c| ("bob".to_string(), c.clone(), "s-1".to_string()))
        .collect::<Vec<_>>();
    let barrier = Arc::new(Barrier::new(bookings.len()));
    let tasks: Vec<_> = bookings
        .into_iter()
        .enumerate()
        .map(|(i, (citizen, clinic, slot))| {
            let api = h.api.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let token = api.citizen_token(&citizen);
                let body = booking_body(&citizen, &clinic, &slot, VACCINE);
                barrier.wait().await;
                api.book_with(&token, &format!("bob-{i}"), &body).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("a booking task"));
    }
    let won = answers.iter().filter(|r| r.status == 201).count();
    assert_eq!(won, 1, "{answers:?}");
    for r in answers.iter().filter(|r| r.status != 201) {
        assert_error_code(r, 409, "ALREADY_BOOKED");
    }
    let active = h
        .citizen_appointments("bob")
        .await
        .into_iter()
        .filter(|a| a["status"] == "PENDING")
        .count();
    assert_eq!(active, 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_bookings_for_one_citizen_across_ten_shards_take_one_seat() {
    // 16 shards, so that ten clinics can each be on a shard of their own.
    const SHARDS_HERE: u32 = 16;
    let h = Harness::start_with(SHARDS_HERE, HOLD_TTL_MS, MAX_HOLD_MS).await;
    h.standard_vaccine(VACCINE).await;
    let clinics = ids_on_distinct_shards("spread", 10, SHARDS_HERE);
    let shards: std::collections::BTreeSet<u32> = clinics
        .iter()
        .map(|c| holdfast_engine::hash::shard_of(c, SHARDS_HERE))
        .collect();
    assert_eq!(shards.len(), 10, "{clinics:?}");
    for c in &clinics {
        h.clinic_with_slot(c, "s-1", 5, 7).await;
    }
    h.put_adult("dan").await;
    let mut before = Vec::new();
    for c in &clinics {
        let avail = h.availability(c).await;
        assert_eq!(seats(&avail, "s-1"), (5, 0, 0));
        assert_eq!(stock(&avail, VACCINE), (7, 0, 7));
        before.push(avail);
    }

    let barrier = Arc::new(Barrier::new(clinics.len()));
    let tasks: Vec<_> = clinics
        .iter()
        .enumerate()
        .map(|(i, clinic)| {
            let api = h.api.clone();
            let barrier = barrier.clone();
            let body = booking_body("dan", clinic, "s-1", VACCINE);
            tokio::spawn(async move {
                let token = api.citizen_token("dan");
                barrier.wait().await;
                api.book_with(&token, &format!("dan-{i}"), &body).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("a booking task"));
    }

    let winners: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].status == 201)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:#?}");
    let winner = winners[0];
    for r in answers.iter().filter(|r| r.status != 201) {
        assert_error_code(r, 409, "ALREADY_BOOKED");
    }
    let won = answers[winner].json();
    check_appointment_shape(&won);
    assert_eq!(won["clinic_id"], clinics[winner].as_str());
    assert_eq!(won["status"], "PENDING");

    // Only the winner's slot and stock moved; the losers' clinics hold nothing at all (the
    // claim is taken before any hold, so a refused booking leaves no appointment behind).
    for (i, c) in clinics.iter().enumerate() {
        let avail = h.availability(c).await;
        if i == winner {
            assert_eq!(seats(&avail, "s-1"), (4, 1, 0), "{c}");
            assert_eq!(stock(&avail, VACCINE), (7, 1, 6), "{c}");
        } else {
            assert_eq!(avail, before[i], "{c}");
            assert!(h.clinic_appointments(c, "").await.is_empty(), "{c}");
        }
    }
    let mine = h.citizen_appointments("dan").await;
    assert_eq!(mine, vec![won]);
    h.assert_invariants_ok().await;
    h.shutdown().await;
}
