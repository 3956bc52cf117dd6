//! Slot times over HTTP (docs/API.md, "Clinic (staff)" and "Reading availability"): the
//! availability answers carry `start_local`/`end_local` with the clinic's UTC offset at each
//! instant (across Berlin's daylight-saving changes of 2027) and the clinic's `timezone`;
//! "the slot's date" of the age rule is the clinic's local date; booking a slot whose start
//! has passed is 409 `SLOT_STARTED`, after `SLOT_CANCELLED` in the order of checks.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::common::*;

/// PUTs clinic `clinic_id` in zone `timezone`.
async fn put_clinic_in(api: &Api, clinic_id: &str, timezone: &str) {
    api.send(
        Req::put(format!("/v1/clinics/{clinic_id}"))
            .token(&api.authority)
            .json(&json!({"name": "Zoned", "region": REGION, "timezone": timezone})),
    )
    .await
    .expect(200);
}

/// PUTs slot `slot_id` from `start` to `end` (RFC 3339) of 5 seats offering `VACCINE`; the
/// slot object answered.
async fn put_slot_at(api: &Api, clinic_id: &str, slot_id: &str, start: &str, end: &str) -> Value {
    let body = slot_body(start.to_string(), end.to_string(), 5, &[VACCINE], 0);
    api.put_slot_raw(clinic_id, slot_id, &body)
        .await
        .expect(200)
}

/// `(start_local, end_local)` of a slot object.
fn local(slot: &Value) -> (&str, &str) {
    let field = |f: &str| {
        slot[f]
            .as_str()
            .unwrap_or_else(|| panic!("no {f} in {slot}"))
    };
    (field("start_local"), field("end_local"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_times_carry_berlins_offset_on_each_side_of_the_2027_changes() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    put_clinic_in(&h, "berlin", "Europe/Berlin").await;
    put_clinic_in(&h, "utc", "UTC").await;
    // Last Sunday of March 2027: 02:00 CET becomes 03:00 CEST at 01:00 UTC.
    let answered = put_slot_at(
        &h,
        "berlin",
        "spring",
        "2027-03-28T00:30:00Z",
        "2027-03-28T01:30:00Z",
    )
    .await;
    assert_eq!(
        local(&answered),
        ("2027-03-28T01:30:00+01:00", "2027-03-28T03:30:00+02:00"),
        "the PUT answers the local times too: {answered}"
    );
    put_slot_at(
        &h,
        "berlin",
        "spring-after",
        "2027-03-28T01:00:00Z",
        "2027-03-28T01:15:00Z",
    )
    .await;
    // Last Sunday of October 2027: 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:30 twice.
    put_slot_at(
        &h,
        "berlin",
        "autumn",
        "2027-10-31T00:30:00Z",
        "2027-10-31T01:30:00Z",
    )
    .await;
    put_slot_at(
        &h,
        "utc",
        "plain",
        "2027-03-28T00:30:00Z",
        "2027-03-28T01:30:00Z",
    )
    .await;

    let berlin = h.availability("berlin").await;
    assert_eq!(berlin["timezone"], "Europe/Berlin", "{berlin}");
    let spring = slot(&berlin, "spring");
    assert_eq!(
        spring["start"], "2027-03-28T00:30:00Z",
        "UTC stays: {spring}"
    );
    assert_eq!(spring["end"], "2027-03-28T01:30:00Z", "{spring}");
    assert_eq!(
        local(spring),
        ("2027-03-28T01:30:00+01:00", "2027-03-28T03:30:00+02:00")
    );
    assert_eq!(
        local(slot(&berlin, "spring-after")),
        ("2027-03-28T03:00:00+02:00", "2027-03-28T03:15:00+02:00")
    );
    assert_eq!(
        local(slot(&berlin, "autumn")),
        ("2027-10-31T02:30:00+02:00", "2027-10-31T02:30:00+01:00"),
        "the same wall-clock time twice, an hour apart"
    );
    let utc = h.availability("utc").await;
    assert_eq!(utc["timezone"], "UTC");
    assert_eq!(
        local(slot(&utc, "plain")),
        ("2027-03-28T00:30:00+00:00", "2027-03-28T01:30:00+00:00")
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_counts_on_the_clinics_local_date_on_both_sides_of_daylight_saving() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await; // 12 or older
    for (clinic, zone) in [("berlin", "Europe/Berlin"), ("utc", "UTC")] {
        put_clinic_in(&h, clinic, zone).await;
        h.receive_stock(clinic, VACCINE, "B-1", 10).await;
        // 27 March 23:30 UTC is 28 March 00:30 in Berlin (+01:00, before the change).
        put_slot_at(
            &h,
            clinic,
            "march",
            "2027-03-27T23:30:00Z",
            "2027-03-27T23:45:00Z",
        )
        .await;
        // 30 October 22:30 UTC is 31 October 00:30 in Berlin (+02:00, before the change).
        put_slot_at(
            &h,
            clinic,
            "october",
            "2027-10-30T22:30:00Z",
            "2027-10-30T22:45:00Z",
        )
        .await;
    }
    let cases = [
        ("march-kid", "2015-03-28", "march"),
        ("october-kid", "2015-10-31", "october"),
    ];
    for (citizen, birth_date, slot_id) in cases {
        h.put_citizen(citizen, birth_date).await;
        // In UTC the slot is on the day before the 12th birthday: refused, nothing held.
        let r = h.book(citizen, "utc", slot_id).await;
        let details = assert_error_code(&r, 422, "NOT_ELIGIBLE");
        assert_eq!(reasons(&details), vec!["below_min_age"], "{citizen}");
        // In Berlin the same instant is already the birthday.
        let held = h.book(citizen, "berlin", slot_id).await.expect(201);
        assert_eq!(held["status"], "PENDING", "{citizen}: {held}");
        let avail = h.availability("berlin").await;
        assert_eq!(slot(&avail, slot_id)["pending"], 1, "{avail}");
    }
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_slot_is_slot_started_after_slot_cancelled_and_holds_nothing() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "later", 5, 10).await;
    for c in ["ann", "bob", "cem"] {
        h.put_adult(c).await;
    }
    // Started an hour ago (not yet ended), ended yesterday, and started-then-cancelled.
    put_slot_at(
        &h,
        "c-1",
        "running",
        &hours_from_now(-1),
        &hours_from_now(1),
    )
    .await;
    put_slot_at(
        &h,
        "c-1",
        "over",
        &hours_from_now(-25),
        &hours_from_now(-24),
    )
    .await;
    put_slot_at(&h, "c-1", "gone", &hours_from_now(-1), &hours_from_now(1)).await;
    h.send(
        Req::post("/v1/clinics/c-1/slots/gone/cancel")
            .token(&h.authority)
            .json(&json!({"reason": "staff ill"})),
    )
    .await
    .expect(200);

    for slot_id in ["running", "over"] {
        let r = h.book("ann", "c-1", slot_id).await;
        assert_error_code(&r, 409, "SLOT_STARTED");
    }
    // Cancelled and started: SLOT_CANCELLED comes first.
    let r = h.book("ann", "c-1", "gone").await;
    assert_error_code(&r, 409, "SLOT_CANCELLED");
    // Nothing was held, and the citizen is free to book elsewhere.
    let avail = h.availability("c-1").await;
    for slot_id in ["running", "over"] {
        assert_eq!(seats(&avail, slot_id), (5, 0, 0), "{slot_id}");
    }
    assert_eq!(stock(&avail, VACCINE), (10, 0, 10));
    let ann = h.book_ok("ann", "c-1", "later").await;

    // A reschedule into a started slot is refused the same way; the old appointment stays.
    let r = h
        .send(
            Req::post(format!("/v1/appointments/{ann}/reschedule"))
                .token(&h.citizen_token("ann"))
                .idem(&fresh_key("started"))
                .json(&json!({"clinic_id": "c-1", "slot_id": "running"})),
        )
        .await;
    assert_error_code(&r, 409, "SLOT_STARTED");
    assert_eq!(h.appointment_json(&ann).await["status"], "PENDING");

    // A slot bookable a moment ago is SLOT_STARTED once its start passes.
    let start = Utc::now() + chrono::Duration::seconds(2);
    let end = start + chrono::Duration::hours(1);
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    put_slot_at(&h, "c-1", "soon", &at(start), &at(end)).await;
    h.book_ok("bob", "c-1", "soon").await;
    let wait = (start - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(50);
    tokio::time::sleep(wait).await;
    let r = h.book("cem", "c-1", "soon").await;
    assert_error_code(&r, 409, "SLOT_STARTED");
    assert_eq!(seats(&h.availability("c-1").await, "soon"), (4, 1, 0));
    h.assert_invariants_ok().await;
    h.shutdown().await;
}
