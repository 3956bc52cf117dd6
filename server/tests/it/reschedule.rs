//! Rescheduling over HTTP (`POST /v1/appointments/{id}/reschedule`, docs/API.md, Booking):
//! a move across shards and within a clinic, every create error leaving the old appointment
//! as it was, concurrent reschedules of one appointment, a reschedule racing a cancel, the
//! order of the checks, the Idempotency-Key, and `--reschedule-notice`.

use std::collections::BTreeSet;
use std::sync::Arc;

use holdfast_engine::hash::shard_of;
use holdfast_gateway::app::Settings;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::common::*;

/// A reschedule body: where to.
fn target(clinic_id: &str, slot_id: &str) -> Value {
    json!({"clinic_id": clinic_id, "slot_id": slot_id})
}

fn path(id: &str) -> String {
    format!("/v1/appointments/{id}/reschedule")
}

async fn reschedule_with(api: &Api, token: &str, key: &str, id: &str, body: &Value) -> Resp {
    api.send(Req::post(path(id)).token(token).idem(key).json(body))
        .await
}

/// Reschedules as the appointment's citizen, with a fresh key.
async fn reschedule(api: &Api, citizen_id: &str, id: &str, clinic_id: &str, slot_id: &str) -> Resp {
    let token = api.citizen_token(citizen_id);
    reschedule_with(
        api,
        &token,
        &fresh_key("resched"),
        id,
        &target(clinic_id, slot_id),
    )
    .await
}

fn id_of(a: &Value) -> String {
    a["appointment_id"]
        .as_str()
        .expect("an appointment id")
        .to_string()
}

/// What a clinic's slot and stock look like: `((remaining, pending, confirmed), (on_hand,
/// reserved, available))`.
type Picture = ((u64, u64, u64), (i64, i64, i64));

async fn picture(api: &Api, clinic_id: &str, slot_id: &str) -> Picture {
    let avail = api.availability(clinic_id).await;
    (seats(&avail, slot_id), stock(&avail, VACCINE))
}

/// The citizen's appointments that are PENDING or CONFIRMED.
async fn live(api: &Api, citizen_id: &str) -> Vec<Value> {
    api.citizen_appointments(citizen_id)
        .await
        .into_iter()
        .filter(|a| a["status"] == "PENDING" || a["status"] == "CONFIRMED")
        .collect()
}

/// Two clinic ids whose shards differ (among `SHARDS`).
fn two_shards(prefix: &str) -> (String, String) {
    let ids = ids_on_distinct_shards(prefix, 2, SHARDS);
    assert_ne!(shard_of(&ids[0], SHARDS), shard_of(&ids[1], SHARDS));
    (ids[0].clone(), ids[1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_appointment_moves_to_a_clinic_on_another_shard() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    let (from, to) = two_shards("move");
    h.clinic_with_slot(&from, "s-1", 10, 10).await;
    h.clinic_with_slot(&to, "s-9", 10, 10).await;
    h.put_adult("ann").await;
    h.put_adult("bob").await;
    let ann = h.citizen_token("ann");

    let old = h.book("ann", &from, "s-1").await.expect(201);
    let old_id = id_of(&old);
    assert_eq!(picture(&h, &from, "s-1").await, ((9, 1, 0), (10, 1, 9)));

    // A longer hold than the first one's (300 s): the new deadline is fresh, counted from the
    // new appointment's creation.
    let body = json!({"clinic_id": to, "slot_id": "s-9", "hold_seconds": 600});
    let moved = reschedule_with(&h, &ann, &fresh_key("move"), &old_id, &body)
        .await
        .expect(201);
    check_appointment_shape(&moved);
    let new_id = id_of(&moved);
    assert_ne!(new_id, old_id);
    assert_eq!(moved["status"], "PENDING");
    assert_eq!(moved["clinic_id"], to.as_str());
    assert_eq!(moved["slot_id"], "s-9");
    assert_eq!(moved["vaccine"], VACCINE);
    assert_eq!(moved["citizen_id"], "ann");
    assert_eq!(moved["rescheduled_from"], old_id.as_str());
    assert!(moved["rescheduled_to"].is_null(), "{moved}");
    assert!(moved["qr_token"].is_null(), "{moved}");
    let created = parse_time(&moved["created_at"]);
    let expires = parse_time(&moved["expires_at"]);
    assert_eq!((expires - created).num_milliseconds(), 600_000, "{moved}");
    assert!(
        created >= parse_time(&old["created_at"]),
        "{old} then {moved}"
    );
    assert!(
        expires > parse_time(&old["expires_at"]),
        "{old} then {moved}"
    );
    assert_eq!(h.appointment(&ann, &new_id).await.expect(200), moved);

    // The old one is RELEASED, pointing at the new one, in the same step.
    let released = h.appointment(&ann, &old_id).await.expect(200);
    check_appointment_shape(&released);
    assert_eq!(released["status"], "RELEASED");
    assert_eq!(released["rescheduled_to"], new_id.as_str());
    assert!(released["rescheduled_from"].is_null(), "{released}");
    assert!(released["expires_at"].is_null(), "{released}");

    // The old seat and dose are back; the new ones are taken.
    assert_eq!(picture(&h, &from, "s-1").await, ((10, 0, 0), (10, 0, 10)));
    assert_eq!(picture(&h, &to, "s-9").await, ((9, 1, 0), (10, 1, 9)));

    // The citizen's listing has both, oldest first.
    let mine = h.citizen_appointments("ann").await;
    assert_eq!(ids(&mine), vec![old_id.clone(), new_id.clone()]);
    assert_eq!(mine[0], released);
    assert_eq!(mine[1], moved);
    h.assert_invariants_ok().await;

    // The citizen's claim moved with it: another booking is ALREADY_BOOKED, the old slot is
    // free for someone else, and once the new one is cancelled the citizen books again.
    assert_error_code(&h.book("ann", &from, "s-1").await, 409, "ALREADY_BOOKED");
    h.book_ok("bob", &from, "s-1").await;
    assert_eq!(
        h.cancel(&ann, &new_id).await.expect(200)["status"],
        "RELEASED"
    );
    h.book_ok("ann", &from, "s-1").await;
    assert_eq!(picture(&h, &from, "s-1").await, ((8, 2, 0), (10, 2, 8)));
    assert_eq!(picture(&h, &to, "s-9").await, ((10, 0, 0), (10, 0, 10)));
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_appointment_moves_confirmed_with_a_new_qr_token() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 10).await;
    h.put_slot("c-1", "s-2", 10, &[VACCINE]).await;
    h.put_adult("ann").await;
    let ann = h.citizen_token("ann");

    let old_id = h.book_ok("ann", "c-1", "s-1").await;
    let confirmed = h.confirm(&ann, &old_id).await.expect(200);
    let old_qr = confirmed["qr_token"].as_str().unwrap().to_string();

    let moved = reschedule(&h, "ann", &old_id, "c-1", "s-2")
        .await
        .expect(201);
    check_appointment_shape(&moved);
    let new_id = id_of(&moved);
    assert_eq!(moved["status"], "CONFIRMED");
    assert_eq!(moved["slot_id"], "s-2");
    assert_eq!(moved["rescheduled_from"], old_id.as_str());
    assert!(moved["rescheduled_to"].is_null(), "{moved}");
    assert!(
        moved["expires_at"].is_null(),
        "set only while PENDING: {moved}"
    );
    parse_time(&moved["confirmed_at"]);
    let new_qr = moved["qr_token"].as_str().expect("a qr_token").to_string();
    assert!(!new_qr.is_empty());
    assert_ne!(new_qr, old_qr);
    assert_eq!(h.appointment(&ann, &new_id).await.expect(200), moved);

    let cancelled = h.appointment(&ann, &old_id).await.expect(200);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["rescheduled_to"], new_id.as_str());
    assert!(cancelled["qr_token"].is_null(), "{cancelled}");

    // Confirmed seats moved; one dose stays reserved.
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (10, 0, 0));
    assert_eq!(seats(&avail, "s-2"), (9, 0, 1));
    assert_eq!(stock(&avail, VACCINE), (10, 1, 9));

    // The QR code belongs to the new appointment now.
    let qr = h
        .send(Req::get(format!("/v1/appointments/{new_id}/qr.svg")).token(&ann))
        .await;
    assert_eq!(qr.status, 200, "{}", qr.text);
    let qr = h
        .send(Req::get(format!("/v1/appointments/{old_id}/qr.svg")).token(&ann))
        .await;
    assert_error_code(&qr, 409, "NOT_CONFIRMED");
    // Confirming the new one again changes nothing.
    let again = h.confirm(&ann, &new_id).await.expect(200);
    assert_eq!(again["confirmed_at"], moved["confirmed_at"]);

    assert_eq!(
        ids(&h.citizen_appointments("ann").await),
        vec![old_id, new_id]
    );
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reschedule_leaves_the_old_appointment_untouched() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.standard_vaccine("mdn").await;
    let (from, to) = two_shards("refuse");
    h.clinic_with_slot(&from, "s-1", 10, 10).await;
    // The target clinic: a sold-out slot, a cancelled one, one offering another vaccine,
    // and stock; a third clinic with seats and no stock.
    h.clinic_with_slot(&to, "full", 1, 10).await;
    h.put_slot(&to, "gone", 10, &[VACCINE]).await;
    h.put_slot(&to, "other", 10, &["mdn"]).await;
    h.put_slot(&to, "open", 10, &[VACCINE]).await;
    h.send(
        Req::post(format!("/v1/clinics/{to}/slots/gone/cancel"))
            .token(&h.authority)
            .json(&json!({"reason": "flooded"})),
    )
    .await
    .expect(200);
    h.clinic_with_slot("no-stock", "s-1", 10, 0).await;
    for c in ["ann", "bob", "cem"] {
        h.put_adult(c).await;
    }
    h.book_ok("bob", &to, "full").await;

    // Once for a PENDING appointment (ann), once for a CONFIRMED one (cem).
    let pending = h.book_ok("ann", &from, "s-1").await;
    let confirmed = h.book_ok("cem", &from, "s-1").await;
    h.confirm(&h.citizen_token("cem"), &confirmed)
        .await
        .expect(200);

    let refusals: [(&str, &str, u16, &str); 6] = [
        (&to, "full", 409, "SOLD_OUT"),
        (&to, "nope", 404, "NOT_FOUND"),
        ("no-such-clinic", "s-1", 404, "NOT_FOUND"),
        (&to, "gone", 409, "SLOT_CANCELLED"),
        (&to, "other", 409, "VACCINE_NOT_OFFERED"),
        ("no-stock", "s-1", 409, "OUT_OF_STOCK"),
    ];
    for (citizen, id) in [("ann", &pending), ("cem", &confirmed)] {
        let token = h.citizen_token(citizen);
        let before = h.appointment(&token, id).await.expect(200);
        let from_before = picture(&h, &from, "s-1").await;
        let to_before = h.availability(&to).await;
        for (clinic, slot, status, code) in refusals {
            let r = reschedule(&h, citizen, id, clinic, slot).await;
            assert_error_code(&r, status, code);
            assert_eq!(
                h.appointment(&token, id).await.expect(200),
                before,
                "after {code}"
            );
            assert_eq!(picture(&h, &from, "s-1").await, from_before, "after {code}");
            assert_eq!(h.availability(&to).await, to_before, "after {code}");
            assert_eq!(
                seats(&h.availability("no-stock").await, "s-1"),
                (10, 0, 0),
                "after {code}"
            );
            assert_eq!(
                ids(&h.citizen_appointments(citizen).await),
                vec![id.clone()],
                "after {code}"
            );
            h.assert_invariants_ok().await;
        }
        // The claim is the old appointment's again: a booking elsewhere is ALREADY_BOOKED,
        // and a reschedule to a slot with room succeeds.
        assert_error_code(&h.book(citizen, &to, "open").await, 409, "ALREADY_BOOKED");
        let moved = reschedule(&h, citizen, id, &to, "open").await.expect(201);
        assert_eq!(moved["status"], before["status"]);
        assert_eq!(moved["rescheduled_from"], id.as_str());
    }
    assert_eq!(picture(&h, &from, "s-1").await, ((10, 0, 0), (10, 0, 10)));
    assert_eq!(picture(&h, &to, "open").await, ((8, 1, 1), (10, 3, 7)));
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reschedules_of_one_appointment_move_it_once() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("home", "s-1", 10, 10).await;
    let targets: Vec<String> = (0..8).map(|i| format!("target-{i}")).collect();
    for t in &targets {
        h.clinic_with_slot(t, "s-1", 10, 10).await;
    }
    // Three rounds: a PENDING appointment, a CONFIRMED one, a PENDING one.
    for (round, citizen) in ["ann", "bob", "cem"].into_iter().enumerate() {
        h.put_adult(citizen).await;
        let token = h.citizen_token(citizen);
        let old_id = h.book_ok(citizen, "home", "s-1").await;
        let confirmed = round == 1;
        if confirmed {
            h.confirm(&token, &old_id).await.expect(200);
        }
        let before: Vec<Picture> = {
            let mut all = Vec::new();
            for t in &targets {
                all.push(picture(&h, t, "s-1").await);
            }
            all
        };

        let barrier = Arc::new(Barrier::new(targets.len()));
        let tasks: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let api = h.api.clone();
                let barrier = barrier.clone();
                let token = token.clone();
                let old_id = old_id.clone();
                let body = target(t, "s-1");
                let key = format!("race-{citizen}-{i}");
                tokio::spawn(async move {
                    barrier.wait().await;
                    reschedule_with(&api, &token, &key, &old_id, &body).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("a reschedule task"));
        }

        let winners: Vec<usize> = (0..answers.len())
            .filter(|&i| answers[i].status == 201)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:#?}");
        let winner = winners[0];
        for r in answers.iter().filter(|r| r.status != 201) {
            let code = assert_error(r, 409);
            assert!(
                code == "ALREADY_BOOKED" || code == "INVALID_TRANSITION",
                "round {round}: {}",
                r.text
            );
        }
        let moved = answers[winner].json();
        let new_id = id_of(&moved);
        assert_eq!(moved["rescheduled_from"], old_id.as_str());
        assert_eq!(moved["clinic_id"], targets[winner].as_str());

        // Exactly one live appointment: the winner's; the old one points at it.
        let still = live(&h, citizen).await;
        assert_eq!(ids(&still), vec![new_id.clone()], "round {round}");
        let old = h.appointment_json(&old_id).await;
        let ended = if confirmed { "CANCELLED" } else { "RELEASED" };
        assert_eq!(old["status"], ended);
        assert_eq!(old["rescheduled_to"], new_id.as_str());
        assert_eq!(
            ids(&h.citizen_appointments(citizen).await),
            vec![old_id.clone(), new_id.clone()]
        );

        // Counters: the home slot is free again, only the winner's target gained one.
        assert_eq!(picture(&h, "home", "s-1").await, ((10, 0, 0), (10, 0, 10)));
        for (i, t) in targets.iter().enumerate() {
            let ((remaining, pending, confirmed_seats), (on_hand, reserved, available)) = before[i];
            let expected = if i != winner {
                before[i]
            } else if confirmed {
                (
                    (remaining - 1, pending, confirmed_seats + 1),
                    (on_hand, reserved + 1, available - 1),
                )
            } else {
                (
                    (remaining - 1, pending + 1, confirmed_seats),
                    (on_hand, reserved + 1, available - 1),
                )
            };
            assert_eq!(picture(&h, t, "s-1").await, expected, "round {round}, {t}");
        }
        h.assert_invariants_ok().await;
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_racing_a_cancel_leaves_at_most_one_live_appointment() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    let (from, to) = two_shards("cancel-race");
    h.clinic_with_slot(&from, "s-1", 20, 100).await;
    h.clinic_with_slot(&to, "s-1", 20, 100).await;
    h.clinic_with_slot("elsewhere", "s-1", 20, 100).await;
    let mut wins = (0u64, 0u64); // reschedules that won, of (PENDING, CONFIRMED) ones
    let mut outcomes = BTreeSet::new();
    for round in 0..10 {
        let citizen = format!("racer-{round}");
        h.put_adult(&citizen).await;
        let token = h.citizen_token(&citizen);
        let old_id = h.book_ok(&citizen, &from, "s-1").await;
        let confirmed = round % 2 == 1;
        if confirmed {
            h.confirm(&token, &old_id).await.expect(200);
        }

        let barrier = Arc::new(Barrier::new(2));
        let moving = {
            let (api, barrier, token, old_id) = (
                h.api.clone(),
                barrier.clone(),
                token.clone(),
                old_id.clone(),
            );
            let body = target(&to, "s-1");
            let key = fresh_key("race-move");
            tokio::spawn(async move {
                barrier.wait().await;
                reschedule_with(&api, &token, &key, &old_id, &body).await
            })
        };
        let cancelling = {
            let (api, barrier, token, old_id) = (
                h.api.clone(),
                barrier.clone(),
                token.clone(),
                old_id.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                api.cancel(&token, &old_id).await
            })
        };
        let moved = moving.await.expect("the reschedule task");
        let cancel = cancelling.await.expect("the cancel task");

        // The cancel always answers 200: it ended the old appointment, or found it already
        // ended by the move (and answers it as it is).
        let cancel = cancel.expect(200);
        let ended = if confirmed { "CANCELLED" } else { "RELEASED" };
        assert_eq!(cancel["status"], ended, "round {round}");
        let old = h.appointment_json(&old_id).await;
        assert_eq!(old["status"], ended, "round {round}");
        let still = live(&h, &citizen).await;
        assert!(still.len() <= 1, "round {round}: {still:#?}");

        if moved.status == 201 {
            // The reschedule won: the cancel came after the move.
            outcomes.insert("reschedule");
            let new = moved.json();
            let new_id = id_of(&new);
            assert_eq!(old["rescheduled_to"], new_id.as_str(), "round {round}");
            assert_eq!(cancel["rescheduled_to"], new_id.as_str(), "round {round}");
            assert_eq!(new["rescheduled_from"], old_id.as_str());
            assert_eq!(ids(&still), vec![new_id.clone()], "round {round}");
            assert_eq!(
                h.appointment_json(&new_id).await["status"],
                if confirmed { "CONFIRMED" } else { "PENDING" }
            );
            if confirmed {
                wins.1 += 1;
            } else {
                wins.0 += 1;
            }
            // The claim is the new appointment's.
            assert_error_code(
                &h.book(&citizen, "elsewhere", "s-1").await,
                409,
                "ALREADY_BOOKED",
            );
        } else {
            // The cancel won: the reschedule is refused and leaves nothing live.
            outcomes.insert("cancel");
            let code = assert_error(&moved, 409);
            assert!(
                code == "INVALID_TRANSITION" || code == "ALREADY_BOOKED",
                "round {round}: {}",
                moved.text
            );
            assert!(old["rescheduled_to"].is_null(), "round {round}: {old}");
            assert!(still.is_empty(), "round {round}: {still:#?}");
            let at_target = h.clinic_appointments(&to, "").await;
            assert!(
                at_target
                    .iter()
                    .filter(|a| a["citizen_id"] == citizen.as_str())
                    .all(|a| a["status"] != "PENDING" && a["status"] != "CONFIRMED"),
                "round {round}: {at_target:#?}"
            );
            // The citizen is free: a booking elsewhere succeeds.
            h.book_ok(&citizen, "elsewhere", "s-1").await;
        }

        // Counters: nothing left at the old clinic, the target holds the moves that won.
        assert_eq!(picture(&h, &from, "s-1").await, ((20, 0, 0), (100, 0, 100)));
        let taken = wins.0 + wins.1;
        assert_eq!(
            picture(&h, &to, "s-1").await,
            (
                (20 - taken, wins.0, wins.1),
                (100, taken as i64, 100 - taken as i64)
            ),
            "round {round}"
        );
        h.assert_invariants_ok().await;
    }
    // Not asserted (it depends on scheduling), shown when the test is run with --nocapture.
    println!("reschedule-versus-cancel winners seen: {outcomes:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_checks_come_in_the_documented_order() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 10).await;
    h.put_slot("c-1", "s-2", 10, &[VACCINE]).await;
    h.clinic_with_slot("c-full", "s-1", 1, 10).await;
    for c in ["ann", "bob", "dan"] {
        h.put_adult(c).await;
    }
    h.book_ok("dan", "c-full", "s-1").await;
    let ann = h.citizen_token("ann");
    let bob = h.citizen_token("bob");
    let id = h.book_ok("ann", "c-1", "s-1").await;
    let to_s2 = target("c-1", "s-2");
    let before = h.appointment_json(&id).await;

    // 401: no token, or a bad one (before the missing key).
    let r = h.send(Req::post(path(&id)).json(&to_s2)).await;
    assert_error_code(&r, 401, "UNAUTHENTICATED");
    let r = h
        .send(Req::post(path(&id)).token("not-a-token").json(&to_s2))
        .await;
    assert_error_code(&r, 401, "UNAUTHENTICATED");
    // 400: a bad body, then a missing key (before 403 and 404).
    let r = h
        .send(
            Req::post(path(&id))
                .token(&ann)
                .idem("k")
                .json(&json!({"clinic_id": "c-1"})),
        )
        .await;
    assert_error_code(&r, 400, "BAD_REQUEST");
    let r = h
        .send(
            Req::post(path(&id))
                .token(&ann)
                .idem("k")
                .json(&json!({"clinic_id": "c-1", "slot_id": "s-2", "hold_seconds": 0})),
        )
        .await;
    assert_error_code(&r, 400, "BAD_REQUEST");
    for token in [&ann, &bob] {
        let r = h.send(Req::post(path(&id)).token(token).json(&to_s2)).await;
        assert_error_code(&r, 400, "IDEMPOTENCY_KEY_REQUIRED");
    }
    let r = h
        .send(Req::post(path("ap-0-999999")).token(&ann).json(&to_s2))
        .await;
    assert_error_code(&r, 400, "IDEMPOTENCY_KEY_REQUIRED");
    // 403: another citizen, staff, an operator (before anything else is looked at).
    let staff = h.staff_token("c-1");
    for token in [&bob, &staff, &h.operator] {
        let r = reschedule_with(&h, token, &fresh_key("403"), &id, &to_s2).await;
        assert_error_code(&r, 403, "FORBIDDEN");
    }
    // 404: an unknown appointment.
    for unknown in ["ap-0-999999", "ap-99999-1", "nope"] {
        let r = reschedule_with(&h, &ann, &fresh_key("404"), unknown, &to_s2).await;
        assert_error_code(&r, 404, "NOT_FOUND");
    }
    assert_eq!(h.appointment_json(&id).await, before);

    // INVALID_TRANSITION for an appointment that is not PENDING or CONFIRMED, before the
    // target's own checks (a sold-out slot, an unknown one).
    let released = h.book_ok("bob", "c-1", "s-1").await;
    h.cancel(&bob, &released).await.expect(200);
    for (clinic, slot) in [("c-1", "s-2"), ("c-full", "s-1"), ("c-1", "nope")] {
        let r = reschedule(&h, "bob", &released, clinic, slot).await;
        let details = assert_error_code(&r, 409, "INVALID_TRANSITION");
        assert_eq!(details["status"], "RELEASED");
    }
    let r = reschedule_with(&h, &h.authority, &fresh_key("it"), &released, &to_s2).await;
    assert_error_code(&r, 409, "INVALID_TRANSITION");

    // A stored refusal is replayed under its key; the key with another body is 422, and the
    // old appointment is untouched throughout.
    let key = fresh_key("stored");
    let full = target("c-full", "s-1");
    let first = reschedule_with(&h, &ann, &key, &id, &full).await;
    assert_error_code(&first, 409, "SOLD_OUT");
    let again = reschedule_with(&h, &ann, &key, &id, &full).await;
    assert_error_code(&again, 409, "SOLD_OUT");
    assert_eq!(again.text, first.text);
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let other = reschedule_with(&h, &ann, &key, &id, &to_s2).await;
    assert_error_code(&other, 422, "IDEMPOTENCY_KEY_REUSED");
    // The key's scope includes the path: the key of the create, on the reschedule, is 422.
    let create_key = fresh_key("create");
    let created = h
        .book_with(
            &bob,
            &create_key,
            &booking_body("bob", "c-1", "s-1", VACCINE),
        )
        .await
        .expect(201);
    let r = reschedule_with(&h, &bob, &create_key, &id_of(&created), &to_s2).await;
    assert_error_code(&r, 422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(
        h.appointment_json(&id_of(&created)).await["status"],
        "PENDING"
    );
    assert_eq!(h.appointment_json(&id).await, before);

    // An authority may move anyone's appointment.
    let moved = reschedule_with(&h, &h.authority, &fresh_key("auth"), &id, &to_s2)
        .await
        .expect(201);
    assert_eq!(moved["citizen_id"], "ann");
    assert_eq!(moved["rescheduled_from"], id.as_str());
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

/// Bug (gateway/src/routes/booking/mod.rs, `reschedule_appointment`): `may_move` (the
/// INVALID_TRANSITION and TOO_LATE checks on the appointment as loaded) runs before the
/// Idempotency-Key is looked up, so once the first request has moved the appointment
/// (RELEASED), the replay with the same key and body answers 409 INVALID_TRANSITION
/// (`details.status: RELEASED`, no `Idempotent-Replayed`) instead of the stored 201, and the
/// same key with another body answers 409 INVALID_TRANSITION instead of 422
/// IDEMPOTENCY_KEY_REUSED. The stored answer exists; it is never reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_reschedule_answers_its_first_201_again() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 10).await;
    h.put_slot("c-1", "s-2", 10, &[VACCINE]).await;
    h.put_slot("c-1", "s-3", 10, &[VACCINE]).await;
    h.put_adult("ann").await;
    let ann = h.citizen_token("ann");
    let id = h.book_ok("ann", "c-1", "s-1").await;

    let key = fresh_key("replay");
    let first = reschedule_with(&h, &ann, &key, &id, &target("c-1", "s-2")).await;
    let moved = first.expect(201);
    let again = reschedule_with(&h, &ann, &key, &id, &target("c-1", "s-2")).await;
    assert_eq!(again.status, 201, "the replay: {}", again.text);
    assert_eq!(again.text, first.text);
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let other = reschedule_with(&h, &ann, &key, &id, &target("c-1", "s-3")).await;
    assert_error_code(&other, 422, "IDEMPOTENCY_KEY_REUSED");

    // One move, no third appointment.
    assert_eq!(
        ids(&h.citizen_appointments("ann").await),
        vec![id.clone(), id_of(&moved)]
    );
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (10, 0, 0));
    assert_eq!(seats(&avail, "s-2"), (9, 1, 0));
    assert_eq!(seats(&avail, "s-3"), (10, 0, 0));
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_notice_refuses_an_appointment_starting_soon() {
    const NOTICE_MS: i64 = 2 * 3_600_000;
    let h = Harness::start_with_settings(Settings {
        hold_ttl_ms: HOLD_TTL_MS,
        max_hold_ms: MAX_HOLD_MS,
        reschedule_notice_ms: NOTICE_MS,
        overload: Default::default(),
    })
    .await;
    h.standard_vaccine(VACCINE).await;
    h.put_clinic("c-1").await;
    h.receive_stock("c-1", VACCINE, "B-1", 10).await;
    for (slot, from_h, to_h) in [("soon", 1, 2), ("after-notice", 3, 4), ("tomorrow", 24, 25)] {
        let body = slot_body(
            hours_from_now(from_h),
            hours_from_now(to_h),
            10,
            &[VACCINE],
            0,
        );
        h.put_slot_raw("c-1", slot, &body).await.expect(200);
    }
    h.clinic_with_slot("c-full", "s-1", 1, 10).await;
    for c in ["ann", "bob", "cem", "dan"] {
        h.put_adult(c).await;
    }
    h.book_ok("dan", "c-full", "s-1").await;

    // Within the notice: 409 TOO_LATE, before the target's checks; nothing changes.
    let soon = h.book_ok("ann", "c-1", "soon").await;
    let before = h.appointment_json(&soon).await;
    let avail_before = h.availability("c-1").await;
    for (clinic, slot) in [("c-1", "tomorrow"), ("c-full", "s-1"), ("c-1", "nope")] {
        let r = reschedule(&h, "ann", &soon, clinic, slot).await;
        let details = assert_error_code(&r, 409, "TOO_LATE");
        assert_eq!(details["notice_seconds"], NOTICE_MS / 1000, "{}", r.text);
    }
    assert_eq!(h.appointment_json(&soon).await, before);
    assert_eq!(h.availability("c-1").await, avail_before);
    // A CONFIRMED one too.
    let ann = h.citizen_token("ann");
    h.confirm(&ann, &soon).await.expect(200);
    let r = reschedule(&h, "ann", &soon, "c-1", "tomorrow").await;
    assert_error_code(&r, 409, "TOO_LATE");
    // INVALID_TRANSITION comes before TOO_LATE.
    h.cancel(&ann, &soon).await.expect(200);
    let r = reschedule(&h, "ann", &soon, "c-1", "tomorrow").await;
    assert_error_code(&r, 409, "INVALID_TRANSITION");

    // Outside the notice: moved (into a slot within the notice, which only limits moves
    // out of a slot).
    let later = h.book_ok("bob", "c-1", "after-notice").await;
    let moved = reschedule(&h, "bob", &later, "c-1", "soon")
        .await
        .expect(201);
    assert_eq!(moved["rescheduled_from"], later.as_str());
    let far = h.book_ok("cem", "c-1", "tomorrow").await;
    reschedule(&h, "cem", &far, "c-1", "after-notice")
        .await
        .expect(201);
    h.assert_invariants_ok().await;
    h.shutdown().await;

    // Without the flag (0, off) the same appointment moves.
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.put_clinic("c-1").await;
    h.receive_stock("c-1", VACCINE, "B-1", 10).await;
    let body = slot_body(hours_from_now(1), hours_from_now(2), 10, &[VACCINE], 0);
    h.put_slot_raw("c-1", "soon", &body).await.expect(200);
    h.put_slot("c-1", "tomorrow", 10, &[VACCINE]).await;
    h.put_adult("ann").await;
    let soon = h.book_ok("ann", "c-1", "soon").await;
    reschedule(&h, "ann", &soon, "c-1", "tomorrow")
        .await
        .expect(201);
    h.assert_invariants_ok().await;
    h.shutdown().await;
}
