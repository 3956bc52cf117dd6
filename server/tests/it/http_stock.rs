//! Stock and slot changes under live appointments over HTTP: slot cancellation, stock
//! adjustments below what is reserved (`at_risk`), and rebooking with priority.

use std::collections::BTreeSet;

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_slot_cancels_its_appointments_and_returns_seats_and_doses() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 10).await;
    h.put_slot("c-1", "s-2", 10, &[VACCINE]).await;
    for c in ["ann", "bob", "cem", "dan"] {
        h.put_adult(c).await;
    }
    let staff = h.staff_token("c-1");

    // Staff adjust their own clinic's stock.
    let adjusted = h
        .adjust_stock(&staff, "c-1", VACCINE, "B-1", -1)
        .await
        .expect(200);
    assert_eq!(
        (
            adjusted["on_hand"].clone(),
            adjusted["reserved"].clone(),
            adjusted["available"].clone()
        ),
        (json!(9), json!(0), json!(9))
    );

    let pending = h.book_ok("ann", "c-1", "s-1").await;
    let confirmed = h.book_ok("bob", "c-1", "s-1").await;
    h.confirm(&h.citizen_token("bob"), &confirmed)
        .await
        .expect(200);
    let released = h.book_ok("cem", "c-1", "s-1").await;
    h.cancel(&h.citizen_token("cem"), &released)
        .await
        .expect(200);
    let elsewhere = h.book_ok("dan", "c-1", "s-2").await;
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (8, 1, 1));
    assert_eq!(stock(&avail, VACCINE), (9, 3, 6));

    let answer = h
        .send(
            Req::post("/v1/clinics/c-1/slots/s-1/cancel")
                .token(&staff)
                .json(&json!({"reason": "power cut"})),
        )
        .await
        .expect(200);
    let affected: BTreeSet<String> = answer["affected_appointment_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no affected_appointment_ids in {answer}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        affected,
        BTreeSet::from([pending.clone(), confirmed.clone()])
    );
    assert_eq!(answer["slot"]["cancelled"], true, "{answer}");

    for id in [&pending, &confirmed] {
        let a = h.appointment_json(id).await;
        check_appointment_shape(&a);
        assert_eq!(a["status"], "CLINIC_CANCELLED", "{a}");
        assert_eq!(a["rebook_priority"], true, "{a}");
        assert!(a["expires_at"].is_null(), "{a}");
    }
    assert_eq!(h.appointment_json(&released).await["status"], "RELEASED");
    assert_eq!(h.appointment_json(&elsewhere).await["status"], "PENDING");

    let avail = h.availability("c-1").await;
    let s1 = slot(&avail, "s-1");
    assert_eq!(s1["cancelled"], true);
    assert_eq!(seats(&avail, "s-1"), (0, 0, 0));
    assert_eq!(seats(&avail, "s-2"), (9, 1, 0));
    assert_eq!(stock(&avail, VACCINE), (9, 1, 8));

    // Cancelling again changes nothing and answers the same.
    let again = h
        .send(
            Req::post("/v1/clinics/c-1/slots/s-1/cancel")
                .token(&staff)
                .json(&json!({"reason": "power cut"})),
        )
        .await
        .expect(200);
    assert_eq!(
        again["affected_appointment_ids"],
        answer["affected_appointment_ids"]
    );
    assert_eq!(h.availability("c-1").await, avail);
    // The affected appointments are final now.
    let details = assert_error_code(
        &h.confirm(&h.citizen_token("ann"), &pending).await,
        409,
        "INVALID_TRANSITION",
    );
    assert_eq!(details["status"], "CLINIC_CANCELLED");
    // A cancelled slot takes no bookings and no updates.
    assert_error_code(&h.book("cem", "c-1", "s-1").await, 409, "SLOT_CANCELLED");
    let update = slot_body(hours_from_now(24), hours_from_now(25), 20, &[VACCINE], 0);
    assert_error_code(
        &h.put_slot_raw("c-1", "s-1", &update).await,
        409,
        "SLOT_CANCELLED",
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_below_what_is_reserved_puts_the_newest_appointments_at_risk() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 5).await;
    for c in ["ann", "bob", "cem", "dan"] {
        h.put_adult(c).await;
    }
    let first = h.book_ok("ann", "c-1", "s-1").await;
    let second = h.book_ok("bob", "c-1", "s-1").await;
    h.confirm(&h.citizen_token("bob"), &second)
        .await
        .expect(200);
    let third = h.book_ok("cem", "c-1", "s-1").await;
    let at_risk = |a: serde_json::Value| a["at_risk"].as_bool().unwrap();

    // 5 on hand, 3 reserved: 4 break. 1 on hand covers the oldest only.
    let adjusted = h
        .adjust_stock(&h.authority, "c-1", VACCINE, "B-1", -4)
        .await
        .expect(200);
    assert_eq!(adjusted["on_hand"], 1);
    assert_eq!(adjusted["reserved"], 3);
    assert_eq!(adjusted["available"], -2);
    h.assert_invariants_ok().await;
    let avail = h.availability("c-1").await;
    assert_eq!(stock(&avail, VACCINE), (1, 3, -2));
    let clinics = h.send(Req::get("/v1/clinics")).await.expect(200);
    assert_eq!(clinics["clinics"][0]["available_doses"][VACCINE], -2);
    assert!(!at_risk(h.appointment_json(&first).await));
    assert!(
        at_risk(h.appointment_json(&second).await),
        "CONFIRMED ones count too"
    );
    assert!(at_risk(h.appointment_json(&third).await));
    // The citizen sees the flag on its own appointment.
    let own = h
        .appointment(&h.citizen_token("cem"), &third)
        .await
        .expect(200);
    assert_eq!(own["at_risk"], true);

    // No new booking gets a dose.
    assert_error_code(&h.book("dan", "c-1", "s-1").await, 409, "OUT_OF_STOCK");

    // Releasing one at risk leaves one uncovered: the newest remaining.
    h.cancel(&h.citizen_token("cem"), &third).await.expect(200);
    let avail = h.availability("c-1").await;
    assert_eq!(stock(&avail, VACCINE), (1, 2, -1));
    assert!(!at_risk(h.appointment_json(&first).await));
    assert!(at_risk(h.appointment_json(&second).await));
    h.assert_invariants_ok().await;

    // Stock arrives: the flags clear.
    let received = h.receive_stock("c-1", VACCINE, "B-2", 3).await;
    assert_eq!(received["available"], 2);
    assert!(!at_risk(h.appointment_json(&first).await));
    assert!(!at_risk(h.appointment_json(&second).await));
    assert_eq!(stock(&h.availability("c-1").await, VACCINE), (4, 2, 2));
    h.assert_invariants_ok().await;
    h.book_ok("dan", "c-1", "s-1").await;
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_reserve_seats_are_not_for_ordinary_bookings() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 1, 10).await;
    let body = slot_body(hours_from_now(30), hours_from_now(31), 2, &[VACCINE], 1);
    h.put_slot_raw("c-1", "s-r", &body).await.expect(200);
    for c in ["ann", "bob"] {
        h.put_adult(c).await;
    }
    h.book_ok("ann", "c-1", "s-r").await;
    // One seat is left, but it is the reserve's.
    assert_error_code(&h.book("bob", "c-1", "s-r").await, 409, "SOLD_OUT");
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-r"), (1, 1, 0));
    assert_eq!(slot(&avail, "s-r")["priority_reserve"], 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_cancelled_citizen_rebooks_into_the_priority_reserve() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 1, 10).await;
    let body = slot_body(hours_from_now(30), hours_from_now(31), 2, &[VACCINE], 1);
    h.put_slot_raw("c-1", "s-r", &body).await.expect(200);
    for c in ["ann", "bob", "cem"] {
        h.put_adult(c).await;
    }
    let cancelled = h.book_ok("ann", "c-1", "s-1").await;
    h.send(
        Req::post("/v1/clinics/c-1/slots/s-1/cancel")
            .token(&h.authority)
            .json(&json!({"reason": "flood"})),
    )
    .await
    .expect(200);
    assert_eq!(
        h.appointment_json(&cancelled).await["rebook_priority"],
        true
    );

    h.book_ok("bob", "c-1", "s-r").await;
    assert_error_code(&h.book("cem", "c-1", "s-r").await, 409, "SOLD_OUT");
    // Ann's earlier appointment was CLINIC_CANCELLED: the reserve seat is hers.
    let rebooked = h.book("ann", "c-1", "s-r").await.expect(201);
    assert_eq!(rebooked["rebook_priority"], true, "{rebooked}");
    assert_eq!(seats(&h.availability("c-1").await, "s-r"), (0, 2, 0));
    h.shutdown().await;
}
