//! The invariant checker, proven able to fail: consistent pictures built by hand pass with
//! zero violations, and each minimally broken picture is reported with the expected kind
//! and ids. Then end to end against a real in-process server: a small campaign booked,
//! confirmed and cancelled through the HTTP API passes, and a fabricated acknowledgement
//! is reported as lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use holdfast_engine::{NodeConfig, SystemClock};
use holdfast_gateway::app::Settings;
use holdfast_gateway::auth::{Claims, JwtKey, Role};
use holdfast_loadtest::checker::{
    check, fetch_picture, Appointment, Availability, CheckOptions, CheckReport, ClinicPicture,
    Picture, SlotState, StockLevel, Violation, ViolationKind, WaitlistEntry,
};
use holdfast_loadtest::http::Http;
use holdfast_loadtest::ledger::{AckKind, Ledger, Replay, SlotCancel, WaitlistJoin};
use holdfast_server::connections::ConnectionLimits;
use holdfast_server::{start, ServerConfig, Storage};
use serde_json::{json, Value};

// ---- building pictures -----------------------------------------------------------------

/// The instant every hand-built picture is taken at.
fn taken_at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
        .expect("a valid time")
        .with_timezone(&Utc)
}

fn at(offset_s: i64) -> String {
    (taken_at() + chrono::Duration::seconds(offset_s)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A slot with `[capacity, remaining, pending, confirmed, administered, no_show]`.
fn slot(slot_id: &str, counters: [i64; 6], cancelled: bool) -> SlotState {
    let [capacity, remaining, pending, confirmed, administered, no_show] = counters;
    SlotState {
        slot_id: slot_id.to_string(),
        // Every hand-built slot ended an hour before the picture (see the no-show tests).
        end: Some(at(-3600)),
        capacity,
        remaining,
        pending,
        confirmed,
        administered,
        no_show,
        cancelled,
    }
}

fn stock(on_hand: i64, reserved: i64) -> StockLevel {
    StockLevel {
        on_hand,
        reserved,
        available: on_hand - reserved,
    }
}

fn appointment(
    id: &str,
    status: &str,
    clinic_id: &str,
    slot_id: &str,
    vaccine: &str,
    citizen_id: &str,
) -> Appointment {
    Appointment {
        appointment_id: id.to_string(),
        status: status.to_string(),
        clinic_id: clinic_id.to_string(),
        slot_id: slot_id.to_string(),
        vaccine: vaccine.to_string(),
        citizen_id: citizen_id.to_string(),
        // A hold five minutes from the picture: not overdue.
        expires_at: (status == "PENDING").then(|| at(300)),
        batch: (status == "ADMINISTERED").then(|| "B-1".to_string()),
        offered_from_waitlist: false,
    }
}

/// A consistent picture of two clinics with every status, and its ledger:
///
/// - clinic `c1`, vaccine `pfz` (10 on hand, 2 reserved): slot `s1` (3 seats: a1 PENDING,
///   a2 CONFIRMED, a3 ADMINISTERED; a6 RELEASED), slot `s2` (2 seats: a4 NO_SHOW; a5
///   EXPIRED, a8 CANCELLED), cancelled slot `s3` (a7 CLINIC_CANCELLED);
/// - clinic `c2`, vaccine `mod` (5 on hand, 1 reserved) and `pfz` (none): slot `t1` (2
///   seats: b1 CONFIRMED).
fn consistent() -> Picture {
    let c1 = ClinicPicture {
        clinic_id: "c1".into(),
        availability: Availability {
            clinic_id: "c1".into(),
            stock: [("pfz".to_string(), stock(10, 2))].into(),
            slots: vec![
                slot("s1", [3, 0, 1, 1, 1, 0], false),
                slot("s2", [2, 1, 0, 0, 0, 1], false),
                slot("s3", [5, 0, 0, 0, 0, 0], true),
            ],
        },
        appointments: vec![
            appointment("a1", "PENDING", "c1", "s1", "pfz", "p1"),
            appointment("a2", "CONFIRMED", "c1", "s1", "pfz", "p2"),
            appointment("a3", "ADMINISTERED", "c1", "s1", "pfz", "p3"),
            appointment("a4", "NO_SHOW", "c1", "s2", "pfz", "p4"),
            Appointment {
                // An expired hold may keep its old deadline: only PENDING ones are checked.
                expires_at: Some(at(-3600)),
                ..appointment("a5", "EXPIRED", "c1", "s2", "pfz", "p5")
            },
            appointment("a6", "RELEASED", "c1", "s1", "pfz", "p6"),
            appointment("a7", "CLINIC_CANCELLED", "c1", "s3", "pfz", "p7"),
            appointment("a8", "CANCELLED", "c1", "s2", "pfz", "p8"),
        ],
    };
    let c2 = ClinicPicture {
        clinic_id: "c2".into(),
        availability: Availability {
            clinic_id: "c2".into(),
            stock: [
                ("mod".to_string(), stock(5, 1)),
                ("pfz".to_string(), stock(0, 0)),
            ]
            .into(),
            slots: vec![slot("t1", [2, 1, 0, 1, 0, 0], false)],
        },
        appointments: vec![appointment("b1", "CONFIRMED", "c2", "t1", "mod", "q1")],
    };
    Picture {
        taken_at: taken_at(),
        clinics: vec![c1, c2],
        waitlists: Default::default(),
    }
}

fn answer(a: &Appointment, status: &str) -> Value {
    let mut body = serde_json::to_value(a).expect("an appointment serialises");
    body["status"] = json!(status);
    body
}

/// What the server acknowledged for [`consistent`]: every appointment's furthest answer,
/// and one faithful replay.
fn ledger_for(picture: &Picture) -> Ledger {
    let ledger = Ledger::new();
    let by_id = |id: &str| {
        picture
            .clinics
            .iter()
            .flat_map(|c| &c.appointments)
            .find(|a| a.appointment_id == id)
            .cloned()
            .expect("the appointment is in the picture")
    };
    for (id, kind, status) in [
        ("a1", AckKind::Create, "PENDING"),
        ("a2", AckKind::Confirm, "CONFIRMED"),
        ("a3", AckKind::Confirm, "CONFIRMED"),
        ("a4", AckKind::Confirm, "CONFIRMED"),
        ("a5", AckKind::Create, "PENDING"),
        ("a6", AckKind::Cancel, "RELEASED"),
        ("a7", AckKind::Confirm, "CONFIRMED"),
        ("a8", AckKind::Cancel, "CANCELLED"),
        ("b1", AckKind::Confirm, "CONFIRMED"),
    ] {
        assert!(ledger.record(kind, &answer(&by_id(id), status)));
    }
    ledger.record_replay(replay("k-a1", "a1", "a1"));
    ledger
}

fn replay(key: &str, first: &str, again: &str) -> Replay {
    Replay {
        idempotency_key: key.to_string(),
        citizen_id: "p1".to_string(),
        first_status: 201,
        first_appointment_id: Some(first.to_string()),
        replay_status: 201,
        replay_appointment_id: Some(again.to_string()),
    }
}

fn clinic<'p>(picture: &'p mut Picture, clinic_id: &str) -> &'p mut ClinicPicture {
    picture
        .clinics
        .iter_mut()
        .find(|c| c.clinic_id == clinic_id)
        .expect("the clinic is in the picture")
}

fn slot_mut<'p>(picture: &'p mut Picture, clinic_id: &str, slot_id: &str) -> &'p mut SlotState {
    clinic(picture, clinic_id)
        .availability
        .slots
        .iter_mut()
        .find(|s| s.slot_id == slot_id)
        .expect("the slot is in the picture")
}

fn appointment_mut<'p>(picture: &'p mut Picture, id: &str) -> &'p mut Appointment {
    picture
        .clinics
        .iter_mut()
        .flat_map(|c| c.appointments.iter_mut())
        .find(|a| a.appointment_id == id)
        .expect("the appointment is in the picture")
}

fn stock_mut<'p>(picture: &'p mut Picture, clinic_id: &str, vaccine: &str) -> &'p mut StockLevel {
    clinic(picture, clinic_id)
        .availability
        .stock
        .get_mut(vaccine)
        .expect("the vaccine is stocked")
}

// ---- asserting reports -----------------------------------------------------------------

fn run(picture: &Picture, ledger: &Ledger) -> CheckReport {
    check(picture, ledger, &CheckOptions::default())
}

fn kinds(report: &CheckReport) -> BTreeSet<ViolationKind> {
    report.violations.iter().map(|v| v.kind).collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Asserts the report holds exactly one violation, of `kind` with `expected_ids`.
fn assert_only(report: &CheckReport, kind: ViolationKind, expected_ids: &[&str]) -> Violation {
    assert_eq!(
        report.violations.len(),
        1,
        "expected one {kind:?}, got {:#?}",
        report.violations
    );
    let v = &report.violations[0];
    assert_eq!(v.kind, kind, "{v:#?}");
    assert_eq!(v.ids, ids(expected_ids), "{v:#?}");
    assert!(!v.message.is_empty());
    assert!(!report.ok());
    assert_eq!(report.violations_total, 1);
    v.clone()
}

/// Asserts the report holds a violation of `kind` with `expected_ids`, and no kinds but
/// `kind` and `also` (the unavoidable consequences of the alteration).
fn assert_has(
    report: &CheckReport,
    kind: ViolationKind,
    expected_ids: &[&str],
    also: &[ViolationKind],
) {
    let found = report.of_kind(kind);
    assert_eq!(
        found.len(),
        1,
        "expected one {kind:?}: {:#?}",
        report.violations
    );
    assert_eq!(found[0].ids, ids(expected_ids), "{:#?}", found[0]);
    let allowed: BTreeSet<ViolationKind> = also.iter().copied().chain([kind]).collect();
    assert_eq!(kinds(report), allowed, "{:#?}", report.violations);
}

// ---- waitlists ---------------------------------------------------------------------------

fn join(waitlist_id: &str, citizen_id: &str, clinic_id: &str, slot_id: &str) -> WaitlistJoin {
    WaitlistJoin {
        waitlist_id: waitlist_id.into(),
        citizen_id: citizen_id.into(),
        clinic_id: clinic_id.into(),
        slot_id: slot_id.into(),
    }
}

#[test]
fn an_acknowledged_waitlist_join_that_vanished_is_lost() {
    let picture = consistent();
    let ledger = ledger_for(&picture);
    ledger.record_waitlist_join(join("w-1", "p9", "c1", "s1"));
    let report = run(&picture, &ledger);
    assert_only(
        &report,
        ViolationKind::WaitlistEntryLost,
        &["w-1", "c1", "s1", "p9"],
    );
    assert_eq!(report.waitlist_checked, 1);
}

#[test]
fn a_waitlist_join_waiting_served_or_gone_with_its_slot_holds() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    // Waiting: listed in its citizen's listing.
    ledger.record_waitlist_join(join("w-1", "p9", "c1", "s1"));
    picture.waitlists.insert(
        "p9".into(),
        vec![WaitlistEntry {
            waitlist_id: "w-1".into(),
            clinic_id: "c1".into(),
            slot_id: "s1".into(),
            position: 1,
        }],
    );
    // Served: the citizen's appointment in that slot was offered from the waitlist.
    ledger.record_waitlist_join(join("w-2", "p1", "c1", "s1"));
    appointment_mut(&mut picture, "a1").offered_from_waitlist = true;
    // Gone with its cancelled slot.
    ledger.record_waitlist_join(join("w-3", "p10", "c1", "s3"));
    let report = run(&picture, &ledger);
    assert!(report.ok(), "{:#?}", report.violations);
    assert_eq!(
        (
            report.waitlist_checked,
            report.waitlist_waiting,
            report.waitlist_served
        ),
        (3, 1, 1)
    );
    // An appointment of the citizen in that slot that no offer made does not count.
    appointment_mut(&mut picture, "a1").offered_from_waitlist = false;
    let report = run(&picture, &ledger);
    assert_only(
        &report,
        ViolationKind::WaitlistEntryLost,
        &["w-2", "c1", "s1", "p1"],
    );
}

// ---- consistent pictures pass ----------------------------------------------------------

#[test]
fn a_consistent_picture_has_no_violation_and_is_counted() {
    let picture = consistent();
    let ledger = ledger_for(&picture);
    let options = CheckOptions {
        one_active_per_citizen: true,
        ..CheckOptions::default()
    };
    let report = check(&picture, &ledger, &options);
    assert!(report.ok(), "{:#?}", report.violations);
    assert_eq!(report.violations_total, 0);
    assert_eq!(report.clinics, 2);
    assert_eq!(report.slots, 4);
    assert_eq!(report.appointments, 9);
    assert_eq!(report.acked_checked, 9);
    assert_eq!(report.replays_checked, 1);
    assert_eq!(report.appointments_by_status["CONFIRMED"], 2);
    assert_eq!(report.appointments_by_status["PENDING"], 1);
    assert_eq!(report.taken_at, taken_at());
}

#[test]
fn an_empty_picture_and_ledger_pass() {
    let picture = Picture {
        taken_at: taken_at(),
        clinics: Vec::new(),
        waitlists: Default::default(),
    };
    let report = run(&picture, &Ledger::new());
    assert!(report.ok());
    assert_eq!(
        (report.clinics, report.slots, report.appointments),
        (0, 0, 0)
    );
}

#[test]
fn a_hold_within_the_expiry_slack_is_not_overdue() {
    let mut picture = consistent();
    appointment_mut(&mut picture, "a1").expires_at = Some(at(-1));
    let report = run(&picture, &ledger_for(&picture));
    assert!(report.ok(), "{:#?}", report.violations);
}

// ---- 1. slot counters ------------------------------------------------------------------

#[test]
fn slot_counters_that_do_not_add_up() {
    let mut picture = consistent();
    slot_mut(&mut picture, "c1", "s1").remaining = 1;
    let report = run(&picture, &ledger_for(&picture));
    let v = assert_only(&report, ViolationKind::SlotCountersMismatch, &["c1", "s1"]);
    assert!(v.message.contains("capacity is 3"), "{}", v.message);
}

#[test]
fn a_negative_counter() {
    let mut picture = consistent();
    // remaining 2 + no_show -1 still adds up to the capacity: only the sign is wrong (and
    // the NO_SHOW appointment listed no longer matches the counter).
    let s2 = slot_mut(&mut picture, "c1", "s2");
    s2.remaining = 3;
    s2.no_show = -1;
    let report = run(&picture, &ledger_for(&picture));
    assert_has(
        &report,
        ViolationKind::NegativeCounter,
        &["c1", "s2"],
        &[ViolationKind::SlotCountMismatch],
    );
    let v = report.of_kind(ViolationKind::NegativeCounter)[0];
    assert!(v.message.contains("no_show = -1"), "{}", v.message);
}

#[test]
fn a_cancelled_slot_with_seats_left() {
    let mut picture = consistent();
    slot_mut(&mut picture, "c1", "s3").remaining = 5;
    let report = run(&picture, &ledger_for(&picture));
    assert_only(&report, ViolationKind::CancelledSlotNotEmpty, &["c1", "s3"]);
}

// ---- 2. oversell and counts ------------------------------------------------------------

#[test]
fn more_seat_holders_than_seats() {
    let mut picture = consistent();
    // The counters still claim 3 seats used; the listing shows 4 holders.
    clinic(&mut picture, "c1").appointments.push(appointment(
        "a9",
        "CONFIRMED",
        "c1",
        "s1",
        "pfz",
        "p9",
    ));
    let report = run(&picture, &ledger_for(&picture));
    assert_has(
        &report,
        ViolationKind::Oversell,
        &["c1", "s1", "a1", "a2", "a3", "a9"],
        &[
            ViolationKind::SlotCountMismatch,
            ViolationKind::ReservedMismatch,
        ],
    );
}

#[test]
fn slot_counters_that_differ_from_the_listing() {
    let mut picture = consistent();
    // Still adds up (1 + 0 + 1 + 1 + 0 = 3), but a1 is listed PENDING.
    let s1 = slot_mut(&mut picture, "c1", "s1");
    s1.pending = 0;
    s1.remaining = 1;
    let report = run(&picture, &ledger_for(&picture));
    let v = assert_only(&report, ViolationKind::SlotCountMismatch, &["c1", "s1"]);
    assert!(
        v.message.contains("pending = 0 but 1 PENDING"),
        "{}",
        v.message
    );
}

// ---- 3. stock --------------------------------------------------------------------------

#[test]
fn reserved_that_is_not_the_active_appointments() {
    let mut picture = consistent();
    *stock_mut(&mut picture, "c1", "pfz") = stock(10, 3);
    let report = run(&picture, &ledger_for(&picture));
    assert_only(&report, ViolationKind::ReservedMismatch, &["c1", "pfz"]);
}

#[test]
fn active_appointments_of_a_vaccine_without_stock_entry() {
    let mut picture = consistent();
    clinic(&mut picture, "c2").availability.stock.remove("mod");
    let report = run(&picture, &ledger_for(&picture));
    assert_only(&report, ViolationKind::ReservedMismatch, &["c2", "mod"]);
}

#[test]
fn available_that_is_not_on_hand_minus_reserved() {
    let mut picture = consistent();
    stock_mut(&mut picture, "c1", "pfz").available = 9;
    let report = run(&picture, &ledger_for(&picture));
    assert_only(&report, ViolationKind::AvailableMismatch, &["c1", "pfz"]);
}

#[test]
fn negative_stock_on_hand() {
    let mut picture = consistent();
    *stock_mut(&mut picture, "c2", "pfz") = stock(-2, 0);
    let report = run(&picture, &ledger_for(&picture));
    assert_only(&report, ViolationKind::NegativeStock, &["c2", "pfz"]);
}

#[test]
fn a_negative_available_after_a_stock_adjustment_is_allowed() {
    let mut picture = consistent();
    // Staff adjusted stock below what is reserved: docs/API.md reports it negative, unclamped.
    *stock_mut(&mut picture, "c1", "pfz") = stock(1, 2);
    let report = run(&picture, &ledger_for(&picture));
    assert!(report.ok(), "{:#?}", report.violations);
}

#[test]
fn on_hand_that_is_not_received_minus_administered() {
    let picture = consistent();
    // c1 received 11 pfz and a3 was administered: 10 on hand, as the picture says.
    let ledger = ledger_for(&picture);
    ledger.record_received("c1", "pfz", 11);
    ledger.record_received("c-elsewhere", "pfz", 3); // Not in the picture: not checked.
    let report = run(&picture, &ledger);
    assert!(report.ok(), "{:#?}", report.violations);
    assert_eq!(report.stock_checked, 1);

    // One dose more received than on hand and administered: a dose went missing.
    let ledger = ledger_for(&picture);
    ledger.record_received("c1", "pfz", 12);
    let v = assert_only(
        &run(&picture, &ledger),
        ViolationKind::StockMismatch,
        &["c1", "pfz"],
    );
    assert!(
        v.message
            .contains("on_hand 10 but 12 received - 1 ADMINISTERED"),
        "{}",
        v.message
    );
}

#[test]
fn an_administration_that_did_not_take_its_dose() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    ledger.record_received("c1", "pfz", 11);
    // Every counter agrees with a4 NO_SHOW turned ADMINISTERED, but on_hand did not move.
    appointment_mut(&mut picture, "a4").status = "ADMINISTERED".into();
    let s2 = slot_mut(&mut picture, "c1", "s2");
    s2.no_show = 0;
    s2.administered = 1;
    let report = run(&picture, &ledger);
    assert_only(&report, ViolationKind::StockMismatch, &["c1", "pfz"]);
}

#[test]
fn a_received_vaccine_without_a_stock_entry() {
    let picture = consistent();
    let ledger = ledger_for(&picture);
    ledger.record_received("c2", "xyz", 3);
    let report = run(&picture, &ledger);
    assert_only(&report, ViolationKind::StockMismatch, &["c2", "xyz"]);
}

// ---- 4. acknowledged changes -----------------------------------------------------------

/// The ledger of [`consistent`] with a3's administration (batch B-1) acknowledged.
fn ledger_with_administration(picture: &Picture) -> Ledger {
    let ledger = ledger_for(picture);
    let a3 = answer(appointment_mut(&mut picture.clone(), "a3"), "ADMINISTERED");
    assert_eq!(a3["batch"], "B-1");
    assert!(ledger.record(AckKind::Administer, &a3));
    ledger
}

#[test]
fn an_acknowledged_administration_holds() {
    let picture = consistent();
    let report = run(&picture, &ledger_with_administration(&picture));
    assert!(report.ok(), "{:#?}", report.violations);
}

#[test]
fn an_acknowledged_administration_now_confirmed() {
    let mut picture = consistent();
    let ledger = ledger_with_administration(&picture);
    let a3 = appointment_mut(&mut picture, "a3");
    a3.status = "CONFIRMED".into();
    a3.batch = None;
    let s1 = slot_mut(&mut picture, "c1", "s1");
    s1.confirmed = 2;
    s1.administered = 0;
    *stock_mut(&mut picture, "c1", "pfz") = stock(10, 3);
    let report = run(&picture, &ledger);
    // The batch it no longer shows is a mismatch too.
    assert_has(
        &report,
        ViolationKind::AckedRegressed,
        &["a3", "c1", "s1", "p3"],
        &[ViolationKind::AckedMismatch],
    );
    let v = report.of_kind(ViolationKind::AckedRegressed)[0];
    assert!(v.message.contains("administration"), "{}", v.message);
}

#[test]
fn an_acknowledged_administration_now_from_another_batch() {
    let mut picture = consistent();
    let ledger = ledger_with_administration(&picture);
    appointment_mut(&mut picture, "a3").batch = Some("B-2".into());
    let report = run(&picture, &ledger);
    let v = assert_only(
        &report,
        ViolationKind::AckedMismatch,
        &["a3", "c1", "s1", "p3"],
    );
    assert!(
        v.message
            .contains("batch \"B-1\" acknowledged, \"B-2\" now"),
        "{}",
        v.message
    );
}

#[test]
fn an_acknowledged_appointment_the_server_does_not_have() {
    let picture = consistent();
    let ledger = ledger_for(&picture);
    let ghost = appointment("ghost-1", "CONFIRMED", "c1", "s1", "pfz", "p9");
    assert!(ledger.record(AckKind::Confirm, &answer(&ghost, "CONFIRMED")));
    let report = run(&picture, &ledger);
    assert_only(
        &report,
        ViolationKind::AckedLost,
        &["ghost-1", "c1", "s1", "p9"],
    );
    assert_eq!(report.acked_checked, 10);
}

#[test]
fn an_acknowledged_confirm_whose_appointment_disappeared() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    clinic(&mut picture, "c1")
        .appointments
        .retain(|a| a.appointment_id != "a2");
    let report = run(&picture, &ledger);
    // The slot and stock counters still count a2: those mismatches are expected too.
    assert_has(
        &report,
        ViolationKind::AckedLost,
        &["a2", "c1", "s1", "p2"],
        &[
            ViolationKind::SlotCountMismatch,
            ViolationKind::ReservedMismatch,
        ],
    );
}

#[test]
fn an_acknowledged_appointment_whose_clinic_is_not_in_the_picture() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    picture.clinics.retain(|c| c.clinic_id != "c2");
    let report = run(&picture, &ledger);
    let v = assert_only(&report, ViolationKind::AckedLost, &["b1", "c2", "t1", "q1"]);
    assert!(v.message.contains("not in the picture"), "{}", v.message);
}

#[test]
fn an_acknowledged_confirm_now_pending() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    *appointment_mut(&mut picture, "a2") = appointment("a2", "PENDING", "c1", "s1", "pfz", "p2");
    let s1 = slot_mut(&mut picture, "c1", "s1");
    s1.pending = 2;
    s1.confirmed = 0;
    let report = run(&picture, &ledger);
    let v = assert_only(
        &report,
        ViolationKind::AckedRegressed,
        &["a2", "c1", "s1", "p2"],
    );
    assert!(v.message.contains("now reports PENDING"), "{}", v.message);
}

#[test]
fn an_acknowledged_cancel_now_confirmed() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    appointment_mut(&mut picture, "a8").status = "CONFIRMED".into();
    let s2 = slot_mut(&mut picture, "c1", "s2");
    s2.remaining = 0;
    s2.confirmed = 1;
    *stock_mut(&mut picture, "c1", "pfz") = stock(10, 3);
    let report = run(&picture, &ledger);
    assert_only(
        &report,
        ViolationKind::AckedRegressed,
        &["a8", "c1", "s2", "p8"],
    );
}

#[test]
fn an_acknowledged_release_now_clinic_cancelled() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    appointment_mut(&mut picture, "a6").status = "CLINIC_CANCELLED".into();
    let report = run(&picture, &ledger);
    assert_only(
        &report,
        ViolationKind::AckedRegressed,
        &["a6", "c1", "s1", "p6"],
    );
}

#[test]
fn an_acknowledged_appointment_now_of_another_citizen() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    appointment_mut(&mut picture, "a2").citizen_id = "p2x".into();
    let report = run(&picture, &ledger);
    let v = assert_only(
        &report,
        ViolationKind::AckedMismatch,
        &["a2", "c1", "s1", "p2"],
    );
    assert!(v.message.contains("\"p2x\""), "{}", v.message);
}

// ---- 5. replays ------------------------------------------------------------------------

#[test]
fn a_replay_that_named_another_appointment() {
    let picture = consistent();
    let ledger = ledger_for(&picture);
    ledger.record_replay(replay("k-2", "a1", "a9"));
    let report = run(&picture, &ledger);
    assert_only(
        &report,
        ViolationKind::ReplayMismatch,
        &["k-2", "p1", "a1", "a9"],
    );
    assert_eq!(report.replays_checked, 2);
}

#[test]
fn a_replay_with_another_status() {
    let picture = consistent();
    let ledger = ledger_for(&picture);
    ledger.record_replay(Replay {
        replay_status: 409,
        replay_appointment_id: None,
        ..replay("k-3", "a1", "a1")
    });
    let report = run(&picture, &ledger);
    assert_only(&report, ViolationKind::ReplayMismatch, &["k-3", "p1", "a1"]);
}

// ---- 6. one active appointment per citizen ---------------------------------------------

#[test]
fn two_active_appointments_of_one_citizen_unless_the_rule_is_skipped() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    // p2 (CONFIRMED a2 at c1) also holds b2 at c2; every counter agrees.
    clinic(&mut picture, "c2")
        .appointments
        .push(appointment("b2", "PENDING", "c2", "t1", "mod", "p2"));
    let t1 = slot_mut(&mut picture, "c2", "t1");
    t1.remaining = 0;
    t1.pending = 1;
    *stock_mut(&mut picture, "c2", "mod") = stock(5, 2);

    // On by default.
    assert_only(
        &run(&picture, &ledger),
        ViolationKind::CitizenDoubleBooked,
        &["p2", "a2", "b2"],
    );
    let skipped = CheckOptions {
        one_active_per_citizen: false,
        ..CheckOptions::default()
    };
    assert!(
        check(&picture, &ledger, &skipped).ok(),
        "skipped on request"
    );
}

// ---- 7. expiry -------------------------------------------------------------------------

#[test]
fn a_hold_far_past_its_expiry() {
    let mut picture = consistent();
    appointment_mut(&mut picture, "a1").expires_at = Some(at(-60));
    let report = run(&picture, &ledger_for(&picture));
    assert_only(
        &report,
        ViolationKind::ExpiryOverdue,
        &["a1", "c1", "s1", "p1"],
    );
}

/// Checks with the server's no-show grace known: every slot of [`consistent`] ended an hour
/// before the picture, except `t1`, which ends in ten minutes.
fn with_grace(picture: &Picture, ledger: &Ledger, grace: Duration) -> CheckReport {
    let mut picture = picture.clone();
    slot_mut(&mut picture, "c2", "t1").end = Some(at(600));
    let options = CheckOptions {
        no_show_grace: Some(grace),
        ..CheckOptions::default()
    };
    check(&picture, ledger, &options)
}

#[test]
fn a_confirmed_appointment_within_the_no_show_grace_is_not_overdue() {
    let picture = consistent();
    let ledger = ledger_for(&picture);
    assert!(with_grace(&picture, &ledger, Duration::from_secs(2 * 3600)).ok());
    // The grace ended a second ago: within the slack.
    let report = with_grace(&picture, &ledger, Duration::from_secs(3600 - 1));
    assert!(report.ok(), "{:#?}", report.violations);
}

#[test]
fn a_confirmed_appointment_past_its_no_show() {
    let picture = consistent();
    let ledger = ledger_for(&picture);
    let report = with_grace(&picture, &ledger, Duration::from_secs(30 * 60));
    let v = assert_only(
        &report,
        ViolationKind::NoShowOverdue,
        &["a2", "c1", "s1", "p2"],
    );
    assert!(
        v.message.contains("no-show did not happen"),
        "{}",
        v.message
    );
    // Unknown grace: not checked.
    assert!(run(&picture, &ledger).ok());
}

#[test]
fn the_no_show_group_is_confirmed_no_show_or_administered() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    for id in ["a2", "a3", "a4"] {
        ledger.record_no_show_expected(id);
    }
    let grace = Duration::from_secs(2 * 3600);
    let report = with_grace(&picture, &ledger, grace);
    assert!(report.ok(), "{:#?}", report.violations);
    assert_eq!(report.no_show_expected_checked, 3);

    // a4 was left to fall due, yet the server reports it CANCELLED (counters agree).
    appointment_mut(&mut picture, "a4").status = "CANCELLED".into();
    let s2 = slot_mut(&mut picture, "c1", "s2");
    s2.no_show = 0;
    s2.remaining = 2;
    let report = with_grace(&picture, &ledger, grace);
    let v = assert_only(
        &report,
        ViolationKind::NoShowMissed,
        &["a4", "c1", "s2", "p4"],
    );
    assert!(v.message.contains("reports CANCELLED"), "{}", v.message);
    // Without a known grace the group is not checked.
    assert!(run(&picture, &ledger).ok());
}

// ---- 8. shape --------------------------------------------------------------------------

#[test]
fn an_unknown_status() {
    let mut picture = consistent();
    appointment_mut(&mut picture, "a5").status = "ARCHIVED".into();
    let report = run(&picture, &ledger_for(&picture));
    assert_only(
        &report,
        ViolationKind::UnknownStatus,
        &["a5", "c1", "s2", "p5"],
    );
}

#[test]
fn an_appointment_of_a_slot_the_clinic_does_not_have() {
    let mut picture = consistent();
    clinic(&mut picture, "c1")
        .appointments
        .push(appointment("a10", "EXPIRED", "c1", "s-gone", "pfz", "p10"));
    let report = run(&picture, &ledger_for(&picture));
    assert_only(
        &report,
        ViolationKind::UnknownSlot,
        &["a10", "c1", "s-gone", "p10"],
    );
}

#[test]
fn an_appointment_listed_twice() {
    let mut picture = consistent();
    let a6 = appointment_mut(&mut picture, "a6").clone();
    clinic(&mut picture, "c2").appointments.push(a6);
    let report = run(&picture, &ledger_for(&picture));
    assert_only(
        &report,
        ViolationKind::MalformedPicture,
        &["a6", "c1", "c2"],
    );
    assert_eq!(report.appointments, 9);
}

#[test]
fn a_pending_appointment_without_expiry() {
    let mut picture = consistent();
    appointment_mut(&mut picture, "a1").expires_at = None;
    let report = run(&picture, &ledger_for(&picture));
    assert_only(
        &report,
        ViolationKind::MalformedPicture,
        &["a1", "c1", "s1", "p1"],
    );
}

// ---- 9. slot cancellations ----------------------------------------------------------------

/// The ledger of [`consistent`] with the cancellation of slot `c1/s3` acknowledged as
/// having turned `affected` CLINIC_CANCELLED.
fn ledger_with_cancel(picture: &Picture, affected: &[&str]) -> Ledger {
    let ledger = ledger_for(picture);
    ledger.record_slot_cancel(SlotCancel {
        clinic_id: "c1".into(),
        slot_id: "s3".into(),
        affected: ids(affected),
        by_staff: true,
    });
    ledger
}

#[test]
fn an_acknowledged_slot_cancellation_that_holds_passes() {
    let picture = consistent();
    let report = run(&picture, &ledger_with_cancel(&picture, &["a7"]));
    assert!(report.ok(), "{:#?}", report.violations);
}

#[test]
fn an_acknowledged_slot_cancellation_whose_slot_is_open_again() {
    let mut picture = consistent();
    *slot_mut(&mut picture, "c1", "s3") = slot("s3", [5, 5, 0, 0, 0, 0], false);
    let report = run(&picture, &ledger_with_cancel(&picture, &["a7"]));
    assert_only(&report, ViolationKind::SlotCancelNotHonoured, &["c1", "s3"]);
}

#[test]
fn an_acknowledged_slot_cancellation_whose_appointments_differ_from_its_answer() {
    let picture = consistent();
    // The answer listed a1, which is PENDING in another slot.
    let report = run(&picture, &ledger_with_cancel(&picture, &["a7", "a1"]));
    assert_only(
        &report,
        ViolationKind::SlotCancelNotHonoured,
        &["c1", "s3", "a1"],
    );
    // The answer did not list a7, which is CLINIC_CANCELLED in the slot.
    let report = run(&picture, &ledger_with_cancel(&picture, &[]));
    assert_only(
        &report,
        ViolationKind::SlotCancelNotHonoured,
        &["c1", "s3", "a7"],
    );
}

#[test]
fn violations_are_sorted_and_every_one_is_counted() {
    let mut picture = consistent();
    let ledger = ledger_for(&picture);
    appointment_mut(&mut picture, "a1").expires_at = Some(at(-60));
    *stock_mut(&mut picture, "c1", "pfz") = stock(10, 3);
    slot_mut(&mut picture, "c1", "s3").remaining = 5;
    for i in 0..3 {
        let ghost = appointment(&format!("g{i}"), "PENDING", "c1", "s1", "pfz", "p9");
        ledger.record(AckKind::Create, &answer(&ghost, "PENDING"));
    }
    let report = run(&picture, &ledger);
    let listed: Vec<ViolationKind> = report.violations.iter().map(|v| v.kind).collect();
    assert_eq!(
        listed,
        vec![
            ViolationKind::CancelledSlotNotEmpty,
            ViolationKind::ReservedMismatch,
            ViolationKind::AckedLost,
            ViolationKind::AckedLost,
            ViolationKind::AckedLost,
            ViolationKind::ExpiryOverdue,
        ]
    );
    let lost: Vec<&str> = report
        .of_kind(ViolationKind::AckedLost)
        .iter()
        .map(|v| v.ids[0].as_str())
        .collect();
    assert_eq!(lost, ["g0", "g1", "g2"]);
    assert_eq!(report.violations_total, 6);
    assert_eq!(report.violations_by_kind[&ViolationKind::AckedLost], 3);
    let json = serde_json::to_value(&report).expect("the report serialises");
    assert_eq!(json["violations"][0]["kind"], "cancelled_slot_not_empty");
}

// ---- end to end ------------------------------------------------------------------------

const SECRET: &[u8] = b"checker-test-secret";
const VACCINE: &str = "pfz";
/// Every request of the end-to-end test gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole end-to-end test must finish within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn token(role: Role, sub: &str, citizen_id: Option<&str>) -> String {
    JwtKey::from_secret_file_bytes(SECRET)
        .expect("a usable secret")
        .sign(&Claims {
            sub: sub.to_string(),
            role,
            exp: Utc::now().timestamp() + 3600,
            citizen_id: citizen_id.map(str::to_string),
            clinic_id: None,
        })
}

/// A minimal HTTP client of the test server.
struct Api {
    client: reqwest::Client,
    base: String,
    authority: String,
}

impl Api {
    /// Sends a request; returns the status and the JSON body (panics with the request when
    /// there is no answer or the body is not JSON).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: body: {e}"));
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} not JSON ({e}): {text}"));
        (status, json)
    }

    /// Sends as the authority and expects 200.
    async fn authority(&self, method: reqwest::Method, path: &str, body: &Value) -> Value {
        let (status, json) = self
            .send(method, path, &self.authority, None, Some(body))
            .await;
        assert_eq!(status, 200, "{path}: {json}");
        json
    }

    /// Books for `citizen` with `key`; returns the status and body.
    async fn book(&self, citizen: &str, clinic: &str, slot: &str, key: &str) -> (u16, Value) {
        let body = json!({"clinic_id": clinic, "slot_id": slot, "vaccine": VACCINE,
                          "citizen_id": citizen});
        let token = token(Role::Citizen, &format!("citizen-{citizen}"), Some(citizen));
        self.send(
            reqwest::Method::POST,
            "/v1/appointments",
            &token,
            Some(key),
            Some(&body),
        )
        .await
    }

    /// Confirms or cancels (`action`) as the citizen; expects 200, returns the appointment.
    async fn act(&self, citizen: &str, appointment: &Value, action: &str) -> Value {
        let id = appointment["appointment_id"]
            .as_str()
            .expect("an appointment id");
        let token = token(Role::Citizen, &format!("citizen-{citizen}"), Some(citizen));
        let path = format!("/v1/appointments/{id}/{action}");
        let (status, json) = self
            .send(reqwest::Method::POST, &path, &token, None, None)
            .await;
        assert_eq!(status, 200, "{path}: {json}");
        json
    }
}

fn staff_token(clinic_id: &str) -> String {
    JwtKey::from_secret_file_bytes(SECRET)
        .expect("a usable secret")
        .sign(&Claims {
            sub: format!("staff-{clinic_id}"),
            role: Role::Staff,
            exp: Utc::now().timestamp() + 3600,
            citizen_id: None,
            clinic_id: Some(clinic_id.to_string()),
        })
}

/// The clinic side through the HTTP API, on a clinic of its own: an administration and a
/// slot cancellation are acknowledged, recorded, and the picture agrees with them; then
/// fabricated ones (a dose never received, a slot never cancelled) are reported.
async fn clinic_side(api: &Api) {
    use reqwest::Method;
    let clinic = "ck-c";
    api.authority(
        Method::PUT,
        &format!("/v1/clinics/{clinic}"),
        &json!({"name": "Clinic side", "region": "north", "timezone": "Europe/Berlin"}),
    )
    .await;
    for (slot, capacity) in [("s1", 3), ("s2", 2)] {
        api.authority(
            Method::PUT,
            &format!("/v1/clinics/{clinic}/slots/{slot}"),
            &json!({"start": hours_from_now(24), "end": hours_from_now(25),
                    "capacity": capacity, "vaccines": [VACCINE], "priority_reserve": 0}),
        )
        .await;
    }
    api.authority(
        Method::POST,
        &format!("/v1/clinics/{clinic}/stock"),
        &json!({"vaccine": VACCINE, "batch": "B-1", "quantity": 10, "expires_on": "2099-12-31"}),
    )
    .await;
    let ledger = Ledger::new();
    ledger.record_received(clinic, VACCINE, 10);
    // q1 and q2 confirm in s1, q3 confirms in s2, q4 holds in s2.
    let mut confirmed = Vec::new();
    for (citizen, slot, confirm) in [
        ("q1", "s1", true),
        ("q2", "s1", true),
        ("q3", "s2", true),
        ("q4", "s2", false),
    ] {
        api.authority(
            Method::PUT,
            &format!("/v1/citizens/{citizen}"),
            &json!({"birth_date": "1980-05-05", "region": "north", "allergies": [],
                    "insurance_id": "I-9", "doses": []}),
        )
        .await;
        let (status, body) = api
            .book(citizen, clinic, slot, &format!("cs-{citizen}"))
            .await;
        assert_eq!(status, 201, "booking {citizen}: {body}");
        assert!(ledger.record(AckKind::Create, &body));
        if confirm {
            let body = api.act(citizen, &body, "confirm").await;
            assert!(ledger.record(AckKind::Confirm, &body));
            confirmed.push(body);
        }
    }
    // Staff administer q1 with its QR token, and cancel s2 (q3 and q4 are affected).
    let staff = staff_token(clinic);
    let q1 = &confirmed[0];
    let id = q1["appointment_id"].as_str().expect("an id");
    let (status, administered) = api
        .send(
            Method::POST,
            &format!("/v1/appointments/{id}/administer"),
            &staff,
            None,
            Some(&json!({"qr_token": q1["qr_token"], "batch": "B-1"})),
        )
        .await;
    assert_eq!(status, 200, "{administered}");
    assert!(ledger.record(AckKind::Administer, &administered));
    let (status, cancelled) = api
        .send(
            Method::POST,
            &format!("/v1/clinics/{clinic}/slots/s2/cancel"),
            &staff,
            Some("cs-cancel-s2"),
            Some(&json!({"reason": "no vaccinator"})),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let affected: Vec<String> = cancelled["affected_appointment_ids"]
        .as_array()
        .expect("affected ids")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert_eq!(affected.len(), 2, "{cancelled}");
    ledger.record_slot_cancel(SlotCancel {
        clinic_id: clinic.to_string(),
        slot_id: "s2".to_string(),
        affected,
        by_staff: true,
    });

    let clinic_ids = vec![clinic.to_string()];
    let picture = fetch_picture(&Http::new(&api.base, 8), &api.authority, &clinic_ids)
        .await
        .expect("a picture");
    let options = CheckOptions {
        no_show_grace: Some(Duration::from_secs(7200)),
        ..CheckOptions::default()
    };
    let report = check(&picture, &ledger, &options);
    assert!(report.ok(), "{:#?}", report.violations);
    assert_eq!(report.stock_checked, 1);
    assert_eq!(report.slot_cancellations_checked, 1);
    for (status, count) in [
        ("ADMINISTERED", 1),
        ("CONFIRMED", 1),
        ("CLINIC_CANCELLED", 2),
    ] {
        assert_eq!(
            report.appointments_by_status.get(status),
            Some(&count),
            "{status}"
        );
    }
    let listed = picture.clinics[0]
        .appointments
        .iter()
        .find(|a| a.appointment_id == id)
        .expect("q1 is listed");
    assert_eq!(listed.batch.as_deref(), Some("B-1"));
    assert_eq!(
        picture.clinics[0].availability.stock[VACCINE],
        StockLevel {
            on_hand: 9,
            reserved: 1,
            available: 8
        }
    );

    // A dose the clinic never received, and a slot it never cancelled.
    ledger.record_received(clinic, VACCINE, 1);
    ledger.record_slot_cancel(SlotCancel {
        clinic_id: clinic.to_string(),
        slot_id: "s1".to_string(),
        affected: Vec::new(),
        by_staff: true,
    });
    let report = check(&picture, &ledger, &options);
    let found: BTreeSet<ViolationKind> = report.violations.iter().map(|v| v.kind).collect();
    assert_eq!(
        found,
        [
            ViolationKind::StockMismatch,
            ViolationKind::SlotCancelNotHonoured
        ]
        .into(),
        "{:#?}",
        report.violations
    );
}

fn hours_from_now(hours: i64) -> String {
    (Utc::now() + chrono::Duration::hours(hours)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_passes_and_a_fabricated_acknowledgement_is_lost() {
    let server = start(ServerConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        node: NodeConfig::embedded(4),
        jwt_secret: SECRET.to_vec(),
        settings: Settings {
            hold_ttl_ms: 300_000,
            max_hold_ms: 900_000,
            reschedule_notice_ms: 0,
            overload: Default::default(),
        },
        clock: Arc::new(SystemClock),
        storage: Storage::Memory,
        external: None,
        qr_keys: None,
        admission: Default::default(),
        connections: ConnectionLimits::default(),
    })
    .await
    .expect("the server starts");
    let api = Api {
        client: reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a client"),
        base: format!("http://{}", server.addr),
        authority: token(Role::Authority, "authority-1", None),
    };
    tokio::time::timeout(TEST_TIMEOUT, scenario(&api))
        .await
        .expect("the end-to-end scenario finishes in time");
    tokio::time::timeout(TEST_TIMEOUT, clinic_side(&api))
        .await
        .expect("the clinic side finishes in time");
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("the server shuts down in time");
}

async fn scenario(api: &Api) {
    use reqwest::Method;
    api.authority(
        Method::PUT,
        &format!("/v1/vaccines/{VACCINE}"),
        &json!({"min_age": 12, "max_age": null, "regions": [], "series_doses": 2,
                "min_interval_days": 21, "contraindications": []}),
    )
    .await;
    let clinics = ["ck-a", "ck-b"];
    for (clinic, slots) in [
        (clinics[0], &[("s1", 3), ("s2", 2)][..]),
        (clinics[1], &[("s1", 2)]),
    ] {
        api.authority(
            Method::PUT,
            &format!("/v1/clinics/{clinic}"),
            &json!({"name": "Checker clinic", "region": "north", "timezone": "Europe/Berlin"}),
        )
        .await;
        for (slot, capacity) in slots {
            api.authority(
                Method::PUT,
                &format!("/v1/clinics/{clinic}/slots/{slot}"),
                &json!({"start": hours_from_now(24), "end": hours_from_now(25),
                        "capacity": capacity, "vaccines": [VACCINE], "priority_reserve": 0}),
            )
            .await;
        }
        api.authority(
            Method::POST,
            &format!("/v1/clinics/{clinic}/stock"),
            &json!({"vaccine": VACCINE, "batch": "B-1", "quantity": 10,
                    "expires_on": "2099-12-31"}),
        )
        .await;
    }

    let ledger = Ledger::new();
    let bookings = [
        ("p1", clinics[0], "s1"),
        ("p2", clinics[0], "s1"),
        ("p3", clinics[0], "s2"),
        ("p4", clinics[1], "s1"),
        ("p5", clinics[0], "s2"),
    ];
    let mut booked = Vec::new();
    for (citizen, clinic, slot) in bookings {
        api.authority(
            Method::PUT,
            &format!("/v1/citizens/{citizen}"),
            &json!({"birth_date": "1980-05-05", "region": "north", "allergies": [],
                    "insurance_id": "I-9", "doses": []}),
        )
        .await;
        let key = format!("book-{citizen}");
        let (status, body) = api.book(citizen, clinic, slot, &key).await;
        assert_eq!(status, 201, "booking {citizen}: {body}");
        assert!(ledger.record(AckKind::Create, &body));
        booked.push((citizen, clinic, slot, key, body));
    }
    // p2, p3 and p4 confirm; p1 releases its hold, p3 cancels its confirmed appointment.
    for index in [1, 2, 3] {
        let (citizen, _, _, _, body) = &booked[index];
        let confirmed = api.act(citizen, body, "confirm").await;
        assert_eq!(confirmed["status"], "CONFIRMED");
        assert!(ledger.record(AckKind::Confirm, &confirmed));
    }
    for (index, expected) in [(0, "RELEASED"), (2, "CANCELLED")] {
        let (citizen, _, _, _, body) = &booked[index];
        let cancelled = api.act(citizen, body, "cancel").await;
        assert_eq!(cancelled["status"], expected);
        assert!(ledger.record(AckKind::Cancel, &cancelled));
    }
    // p5 replays its booking: the same key and body name the same appointment.
    let (citizen, clinic, slot, key, first) = &booked[4];
    let (replay_status, replayed) = api.book(citizen, clinic, slot, key).await;
    let id = |body: &Value| body["appointment_id"].as_str().map(str::to_string);
    ledger.record_replay(Replay {
        idempotency_key: key.clone(),
        citizen_id: citizen.to_string(),
        first_status: 201,
        first_appointment_id: id(first),
        replay_status,
        replay_appointment_id: id(&replayed),
    });

    let clinic_ids: Vec<String> = clinics.iter().map(|c| c.to_string()).collect();
    let picture = fetch_picture(&Http::new(&api.base, 8), &api.authority, &clinic_ids)
        .await
        .expect("a picture");
    let options = CheckOptions {
        one_active_per_citizen: true,
        ..CheckOptions::default()
    };
    let report = check(&picture, &ledger, &options);
    assert!(report.ok(), "{:#?}", report.violations);
    assert_eq!(report.clinics, 2);
    assert_eq!(report.slots, 3);
    assert_eq!(report.appointments, 5);
    assert_eq!(report.acked_checked, 5);
    assert_eq!(report.replays_checked, 1);
    for (status, count) in [
        ("PENDING", 1),
        ("CONFIRMED", 2),
        ("RELEASED", 1),
        ("CANCELLED", 1),
    ] {
        assert_eq!(
            report.appointments_by_status.get(status),
            Some(&count),
            "{status}: {:?}",
            report.appointments_by_status
        );
    }
    let a = &picture.clinics[0].availability;
    assert_eq!(
        a.stock[VACCINE],
        StockLevel {
            on_hand: 10,
            reserved: 2,
            available: 8
        }
    );

    // An acknowledgement the server never gave: the checker must call it lost.
    let ghost = json!({"appointment_id": "ghost-1", "status": "CONFIRMED", "clinic_id": clinics[0],
                       "slot_id": "s1", "vaccine": VACCINE, "citizen_id": "p9"});
    assert!(ledger.record(AckKind::Confirm, &ghost));
    let report = check(&picture, &ledger, &options);
    assert_only(
        &report,
        ViolationKind::AckedLost,
        &["ghost-1", clinics[0], "s1", "p9"],
    );

    // A picture that cannot be taken is an error, not a pass.
    let unknown = vec!["ck-nowhere".to_string()];
    let err = fetch_picture(&Http::new(&api.base, 8), &api.authority, &unknown)
        .await
        .expect_err("an unknown clinic is an error");
    assert!(err.contains("404"), "{err}");
    let forged = token(Role::Citizen, "citizen-p1", Some("p1"));
    let err = fetch_picture(&Http::new(&api.base, 8), &forged, &clinic_ids)
        .await
        .expect_err("a citizen may not list a clinic's appointments");
    assert!(err.contains("403"), "{err}");
}

// ---- taking pictures from a scripted server --------------------------------------------

/// Answers one request: the path with its query, to a status and a body.
type Script = dyn Fn(&str) -> (u16, String) + Send + Sync;

/// A bare HTTP/1.1 server on loopback that answers every request from `script` and closes
/// the connection; for answers no real server gives on demand (availability that keeps
/// moving, a listing at the cap). Returns its base URL; it stops with the test's runtime.
async fn scripted_server(script: Arc<Script>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback listener");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = script(&target);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    base
}

/// An availability body of clinic `c` with one slot `s1` of 100 seats, `remaining` free.
fn availability_body(remaining: usize) -> String {
    json!({"clinic_id": "c", "stock": {"pfz": {"on_hand": 100, "reserved": 0, "available": 100}},
           "slots": [{"slot_id": "s1", "start": "2026-12-01T09:00:00Z",
                      "end": "2026-12-01T10:00:00Z", "capacity": 100, "remaining": remaining,
                      "pending": 0, "confirmed": 0, "administered": 0, "no_show": 0,
                      "priority_reserve": 0, "vaccines": ["pfz"], "cancelled": false}]})
    .to_string()
}

fn listing_body(count: usize, status: &str) -> String {
    let appointments: Vec<Value> = (0..count)
        .map(|i| {
            json!({"appointment_id": format!("{status}-{i}"), "status": status,
                   "clinic_id": "c", "slot_id": "s1", "vaccine": "pfz",
                   "citizen_id": format!("p{i}"), "created_at": "2026-11-01T09:00:00Z",
                   "expires_at": null, "confirmed_at": null, "administered_at": null,
                   "batch": null, "needs_review": false, "at_risk": false,
                   "rebook_priority": false})
        })
        .collect();
    json!({ "appointments": appointments }).to_string()
}

fn test_client(base: &str) -> Http {
    Http::new(base, 8)
}

#[tokio::test]
async fn a_clinic_whose_availability_keeps_moving_is_an_error() {
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&reads);
    let base = scripted_server(Arc::new(move |target: &str| {
        if target.ends_with("/availability") {
            // Every read differs: a hold expires between any two.
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (200, availability_body(n % 100))
        } else {
            (200, listing_body(0, "EXPIRED"))
        }
    }))
    .await;
    let picture = tokio::time::timeout(
        TEST_TIMEOUT,
        fetch_picture(&test_client(&base), "t", &["c".to_string()]),
    )
    .await
    .expect("the reads end in time");
    let err = picture.expect_err("an unstable clinic is an error");
    assert!(err.contains("changed while"), "{err}");
    let expected = 2 * holdfast_loadtest::checker::FETCH_ATTEMPTS as usize;
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), expected);
}

#[tokio::test]
async fn a_clinic_that_settles_is_read_again_until_stable() {
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&reads);
    let base = scripted_server(Arc::new(move |target: &str| {
        if target.ends_with("/availability") {
            // The first two reads differ, then it holds still at 90 free seats.
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (200, availability_body(if n == 0 { 80 } else { 90 }))
        } else {
            (200, listing_body(0, "EXPIRED"))
        }
    }))
    .await;
    let picture = fetch_picture(&test_client(&base), "t", &["c".to_string()])
        .await
        .expect("a stable picture on the second attempt");
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(picture.clinics[0].availability.slots[0].remaining, 90);
}

#[tokio::test]
async fn a_listing_at_the_server_cap_is_read_again_per_slot_and_status() {
    use holdfast_loadtest::checker::LISTING_CAP;
    let base = scripted_server(Arc::new(|target: &str| {
        if target.ends_with("/availability") {
            (200, availability_body(100))
        } else if target.contains("status=EXPIRED") {
            (200, listing_body(7, "EXPIRED"))
        } else if target.contains("status=RELEASED") {
            (200, listing_body(2, "RELEASED"))
        } else if target.contains("status=") {
            (200, listing_body(0, "EXPIRED"))
        } else {
            // The clinic's and the slot's listings are cut at the cap.
            (200, listing_body(LISTING_CAP, "EXPIRED"))
        }
    }))
    .await;
    let picture = fetch_picture(&test_client(&base), "t", &["c".to_string()])
        .await
        .expect("a complete picture");
    let statuses: Vec<&str> = picture.clinics[0]
        .appointments
        .iter()
        .map(|a| a.status.as_str())
        .collect();
    assert_eq!(statuses.len(), 9, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "RELEASED").count(), 2);
}

#[tokio::test]
async fn odd_answers_are_errors_that_quote_them() {
    let base = scripted_server(Arc::new(|target: &str| {
        if target.ends_with("/availability") {
            (
                200,
                "{\"clinic_id\": \"c\", \"slots\": \"many\"}".to_string(),
            )
        } else {
            (200, listing_body(0, "EXPIRED"))
        }
    }))
    .await;
    let err = fetch_picture(&test_client(&base), "t", &["c".to_string()])
        .await
        .expect_err("a malformed availability is an error");
    assert!(
        err.contains("unexpected body") && err.contains("many"),
        "{err}"
    );

    let err = fetch_picture(&test_client(&base), "t", &["c/../x".to_string()])
        .await
        .expect_err("an id that is not a client id is refused before any request");
    assert!(err.contains("not a clinic id"), "{err}");
}

// ---- 3 and 4 again: doses received, on hand or administered -----------------------------

#[test]
fn every_dose_received_is_on_hand_or_administered() {
    let picture = consistent();
    let ledger = ledger_for(&picture);
    // c1: 10 on hand and a3 ADMINISTERED; c2: 5 of `mod` on hand, none administered.
    ledger.record_received("c1", "pfz", 11);
    ledger.record_received("c2", "mod", 5);
    assert!(ledger.record(
        AckKind::Administer,
        &answer(&picture.clinics[0].appointments[2], "ADMINISTERED")
    ));
    let report = run(&picture, &ledger);
    assert!(report.ok(), "{:#?}", report.violations);
}

#[test]
fn a_dose_lost_or_given_twice() {
    for received in [12, 10] {
        let picture = consistent();
        let ledger = ledger_for(&picture);
        ledger.record_received("c1", "pfz", received);
        let report = run(&picture, &ledger);
        assert_only(&report, ViolationKind::StockMismatch, &["c1", "pfz"]);
    }
}

#[test]
fn an_acknowledged_administration_of_an_appointment_still_confirmed() {
    let picture = consistent();
    let ledger = ledger_for(&picture);
    // a2 is CONFIRMED in the picture, but an administration of it was acknowledged.
    assert!(ledger.record(
        AckKind::Administer,
        &answer(&picture.clinics[0].appointments[1], "ADMINISTERED")
    ));
    let report = run(&picture, &ledger);
    assert_only(
        &report,
        ViolationKind::AckedRegressed,
        &["a2", "c1", "s1", "p2"],
    );
}
