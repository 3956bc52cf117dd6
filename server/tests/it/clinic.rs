//! The clinic's side over HTTP (docs/API.md, "Clinic (staff)"): QR tokens (and that `qr.svg`
//! decodes to them with a real QR decoder), check-in, administration by batch with every
//! refusal of the contract, key rotation across restarts, and the dose history the
//! administration leaves in the citizen's record.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use holdfast_engine::NodeConfig;
use holdfast_gateway::qr::{QrFields, QrKeyring};
use holdfast_persistence::{Durability, WalConfig};
use holdfast_server::ServerConfig;
use serde_json::{json, Value};

use crate::common::*;

/// A second vaccine, for batches of the wrong vaccine.
const OTHER_VACCINE: &str = "mod";
const KEY_A: &str = "qr-key-A-0123456789abcdef";
const KEY_B: &str = "qr-key-B-0123456789abcdef";

/// A clinic `c-1` with slot `s-1` tomorrow (10 seats) and batch `B-1` of 10 doses of
/// `VACCINE`, citizens `names`; answers the staff token of `c-1`.
async fn campaign(h: &Harness, names: &[&str]) -> String {
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 10).await;
    for name in names {
        h.put_adult(name).await;
    }
    h.staff_token("c-1")
}

/// Books and confirms for `citizen` in `c-1`/`slot`; answers the confirmed appointment.
async fn confirmed(h: &Harness, citizen: &str, slot: &str) -> Value {
    let id = h.book_ok(citizen, "c-1", slot).await;
    h.confirm(&h.citizen_token(citizen), &id).await.expect(200)
}

async fn checkin(h: &Harness, token: &str, qr_token: &str) -> Resp {
    h.send(
        Req::post("/v1/checkin")
            .token(token)
            .json(&json!({ "qr_token": qr_token })),
    )
    .await
}

async fn administer(h: &Harness, token: &str, id: &str, qr_token: &str, batch: &str) -> Resp {
    h.send(
        Req::post(format!("/v1/appointments/{id}/administer"))
            .token(token)
            .json(&json!({ "qr_token": qr_token, "batch": batch })),
    )
    .await
}

fn qr_of(a: &Value) -> String {
    a["qr_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no qr_token in {a}"))
        .to_string()
}

fn id_of(a: &Value) -> String {
    a["appointment_id"].as_str().unwrap().to_string()
}

/// A genuine token of `a` made with the test server's default key (whatever its status).
fn mint(a: &Value) -> String {
    let field = |name: &str| a[name].as_str().unwrap().to_string();
    let (id, clinic, slot, vaccine, citizen) = (
        field("appointment_id"),
        field("clinic_id"),
        field("slot_id"),
        field("vaccine"),
        field("citizen_id"),
    );
    QrKeyring::derive(SECRET).token(&QrFields {
        appointment_id: &id,
        clinic_id: &clinic,
        slot_id: &slot,
        vaccine: &vaccine,
        citizen_id: &citizen,
    })
}

/// `(on_hand, reserved)` of `VACCINE` at `c-1`, and the slot's `administered`.
async fn counts(h: &Harness, slot: &str) -> (i64, i64, u64) {
    let avail = h.availability("c-1").await;
    let stock = &avail["stock"][VACCINE];
    let s = avail["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot_id"] == slot)
        .unwrap_or_else(|| panic!("no slot {slot} in {avail}"))
        .clone();
    (
        stock["on_hand"].as_i64().unwrap(),
        stock["reserved"].as_i64().unwrap(),
        s["administered"].as_u64().unwrap(),
    )
}

// ---- the QR code ---------------------------------------------------------------------

/// The dark modules of the SVG the `qrcode` crate renders (one `<path>` of
/// `M{x} {y}h{w}v{h}H{x}V{y}` rectangles over a light background) as a pixel bitmap.
fn svg_bitmap(svg: &str) -> (usize, usize, Vec<bool>) {
    let attr = |name: &str| -> usize {
        let start = svg.find(&format!(" {name}=\"")).expect("attribute") + name.len() + 3;
        let end = start + svg[start..].find('"').unwrap();
        svg[start..end].parse().expect("a whole number")
    };
    let (width, height) = (attr("width"), attr("height"));
    let d_start = svg.find(" d=\"").expect("a path") + 4;
    let d = &svg[d_start..d_start + svg[d_start..].find('"').unwrap()];
    let mut pixels = vec![false; width * height];
    for rect in d.split('M').filter(|r| !r.is_empty()) {
        // "{x} {y}h{w}v{h}H{x}V{y}"
        let numbers: Vec<usize> = rect
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| !n.is_empty())
            .map(|n| n.parse().unwrap())
            .collect();
        let [x, y, w, h, ..] = numbers[..] else {
            panic!("not a rectangle: {rect}");
        };
        for row in y..y + h {
            for col in x..x + w {
                pixels[row * width + col] = true;
            }
        }
    }
    (width, height, pixels)
}

/// Decodes the QR code of an SVG with `rqrr`; answers every code found.
fn decode_svg(svg: &str) -> Vec<String> {
    let (width, height, pixels) = svg_bitmap(svg);
    let mut image =
        rqrr::PreparedImage::prepare_from_bitmap(width, height, |x, y| pixels[y * width + x]);
    image
        .detect_grids()
        .iter()
        .map(|grid| grid.decode().expect("a readable QR code").1)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_qr_svg_decodes_to_exactly_the_token() {
    let h = Harness::start().await;
    campaign(&h, &["ann"]).await;
    let a = confirmed(&h, "ann", "s-1").await;
    let r = h
        .send(
            Req::get(format!("/v1/appointments/{}/qr.svg", id_of(&a)))
                .token(&h.citizen_token("ann")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.content_type.starts_with("image/svg+xml"),
        "{}",
        r.content_type
    );
    assert_eq!(decode_svg(&r.text), vec![qr_of(&a)]);
    h.shutdown().await;
}

// ---- refusals first --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_bad_qr_and_the_wrong_caller_is_forbidden() {
    let h = Harness::start().await;
    let staff = campaign(&h, &["ann", "bob"]).await;
    h.put_clinic("c-2").await;
    let other_staff = h.staff_token("c-2");
    let a = confirmed(&h, "ann", "s-1").await;
    let (id, qr) = (id_of(&a), qr_of(&a));
    let (prefix, mac) = qr.rsplit_once('.').unwrap();
    let mut flipped = mac.as_bytes().to_vec();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{prefix}.{}", String::from_utf8(flipped).unwrap());
    let forged = format!("{id}.{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
    let bob = h.book_ok("bob", "c-1", "s-1").await;
    let bob_token = mint(&h.appointment_json(&bob).await);
    let other_id = qr.replace(&id, &bob);
    let long = "x".repeat(10_000);
    for bad in [
        tampered.as_str(),
        &qr[..qr.len() - 1],
        forged.as_str(),
        "garbage",
        "",
        other_id.as_str(),
        long.as_str(),
    ] {
        assert_error_code(&checkin(&h, &staff, bad).await, 403, "BAD_QR");
        assert_error_code(
            &administer(&h, &staff, &id, bad, "B-1").await,
            403,
            "BAD_QR",
        );
    }
    // A genuine token of another appointment is not this one's.
    assert_error_code(
        &administer(&h, &staff, &id, &bob_token, "B-1").await,
        403,
        "BAD_QR",
    );
    // Another clinic's staff: the token is not of their clinic; the appointment is not theirs.
    assert_error_code(&checkin(&h, &other_staff, &qr).await, 403, "BAD_QR");
    assert_error_code(
        &administer(&h, &other_staff, &id, &qr, "B-1").await,
        403,
        "FORBIDDEN",
    );
    // Citizens and authorities do not scan or administer.
    for token in [h.citizen_token("ann"), h.authority.clone()] {
        assert_error_code(&checkin(&h, &token, &qr).await, 403, "FORBIDDEN");
        assert_error_code(
            &administer(&h, &token, &id, &qr, "B-1").await,
            403,
            "FORBIDDEN",
        );
    }
    // Bad bodies are 400; an unknown appointment is 404.
    assert_error_code(
        &administer(&h, &staff, &id, &qr, "B 1").await,
        400,
        "BAD_REQUEST",
    );
    let r = h
        .send(
            Req::post("/v1/checkin")
                .token(&staff)
                .json(&json!({"qr_token": 5})),
        )
        .await;
    assert_error_code(&r, 400, "BAD_REQUEST");
    assert_error_code(
        &administer(&h, &staff, "ap-0-999", &qr, "B-1").await,
        404,
        "NOT_FOUND",
    );
    // A PENDING appointment's genuine token checks in as NOT_CONFIRMED.
    let details = assert_error_code(&checkin(&h, &staff, &bob_token).await, 409, "NOT_CONFIRMED");
    assert_eq!(details["status"], "PENDING");
    // Nothing changed.
    assert_eq!(h.appointment_json(&id).await["status"], "CONFIRMED");
    assert_eq!(counts(&h, "s-1").await, (10, 2, 0));
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_that_cannot_give_the_dose_are_refused_with_their_code() {
    let h = Harness::start().await;
    let staff = campaign(&h, &["ann", "bob"]).await;
    h.standard_vaccine(OTHER_VACCINE).await;
    h.receive_stock("c-1", OTHER_VACCINE, "M-1", 5).await;
    h.receive_stock("c-1", VACCINE, "B-EMPTY", 1).await;
    h.adjust_stock(&h.authority, "c-1", VACCINE, "B-EMPTY", -1)
        .await
        .expect(200);
    let yesterday = (Utc::now() - chrono::Duration::days(1))
        .date_naive()
        .to_string();
    h.send(Req::post("/v1/clinics/c-1/stock").token(&h.authority).json(
        &json!({"vaccine": VACCINE, "batch": "B-OLD", "quantity": 5, "expires_on": yesterday}),
    ))
    .await
    .expect(200);
    let a = confirmed(&h, "ann", "s-1").await;
    let (id, qr) = (id_of(&a), qr_of(&a));
    let before = counts(&h, "s-1").await;

    let details = assert_error_code(
        &administer(&h, &staff, &id, &qr, "M-1").await,
        409,
        "WRONG_BATCH",
    );
    assert_eq!(details["vaccine"], OTHER_VACCINE);
    let details = assert_error_code(
        &administer(&h, &staff, &id, &qr, "B-EMPTY").await,
        409,
        "INSUFFICIENT_STOCK",
    );
    assert_eq!(details["on_hand"], 0);
    let details = assert_error_code(
        &administer(&h, &staff, &id, &qr, "B-OLD").await,
        409,
        "BATCH_EXPIRED",
    );
    assert_eq!(details["expires_on"], yesterday);
    let details = assert_error_code(
        &administer(&h, &staff, &id, &qr, "NOPE").await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(details["resource"], "batch");
    assert_eq!(counts(&h, "s-1").await, before);
    assert_eq!(h.appointment_json(&id).await["status"], "CONFIRMED");

    // A cancelled appointment is not administered, whatever its (genuine) token says.
    let b = confirmed(&h, "bob", "s-1").await;
    h.cancel(&h.citizen_token("bob"), &id_of(&b))
        .await
        .expect(200);
    let details = assert_error_code(
        &administer(&h, &staff, &id_of(&b), &qr_of(&b), "B-1").await,
        409,
        "INVALID_TRANSITION",
    );
    assert_eq!(details["status"], "CANCELLED");
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

// ---- the lifecycle ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_confirm_check_in_administer_and_the_dose_leaves_the_batch() {
    let h = Harness::start().await;
    let staff = campaign(&h, &["ann"]).await;
    let a = confirmed(&h, "ann", "s-1").await;
    let (id, qr) = (id_of(&a), qr_of(&a));
    assert_eq!(counts(&h, "s-1").await, (10, 1, 0));

    let checked = checkin(&h, &staff, &qr).await.expect(200);
    check_appointment_shape(&checked);
    assert_eq!(checked["appointment_id"], id.as_str());
    assert_eq!(checked["citizen_id"], "ann");
    assert_eq!(checked["status"], "CONFIRMED");

    let done = administer(&h, &staff, &id, &qr, "B-1").await.expect(200);
    check_appointment_shape(&done);
    assert_eq!(done["status"], "ADMINISTERED");
    assert_eq!(done["batch"], "B-1");
    assert!(parse_time(&done["administered_at"]) <= Utc::now());
    assert_eq!(done["qr_token"], Value::Null);
    // The dose left the batch and is no longer reserved; the seat counts as administered.
    assert_eq!(counts(&h, "s-1").await, (9, 0, 1));
    // Twice: the same appointment, nothing more taken.
    let again = administer(&h, &staff, &id, &qr, "B-1").await.expect(200);
    assert_eq!(again, done);
    assert_eq!(counts(&h, "s-1").await, (9, 0, 1));
    // It is final: no check-in, no cancel.
    let details = assert_error_code(&checkin(&h, &staff, &qr).await, 409, "NOT_CONFIRMED");
    assert_eq!(details["status"], "ADMINISTERED");
    let details = assert_error_code(
        &h.cancel(&h.citizen_token("ann"), &id).await,
        409,
        "INVALID_TRANSITION",
    );
    assert_eq!(details["status"], "ADMINISTERED");
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

// ---- key rotation ----------------------------------------------------------------------

/// A server on the log in `dir` with the QR keys of `key_file`.
async fn server_with_keys(dir: &Path, key_file: &str) -> Harness {
    let keys = QrKeyring::from_key_file(key_file).expect("a valid key file");
    Harness::start_config(ServerConfig {
        qr_keys: Some(keys),
        ..test_config(
            NodeConfig::embedded(SHARDS),
            HOLD_TTL_MS,
            MAX_HOLD_MS,
            wal_storage(dir, WalConfig::new(Durability::Sync)),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_the_previous_key_checks_in_until_that_key_is_removed() {
    let dir = temp_dir("qr-rotation");
    let h = server_with_keys(&dir, &format!("{KEY_A}\n")).await;
    let staff = campaign(&h, &["ann", "bob"]).await;
    let under_a = qr_of(&confirmed(&h, "ann", "s-1").await);
    h.shutdown().await;

    // Rotated: B signs, A still verifies.
    let h = server_with_keys(&dir, &format!("# rotated\n{KEY_B}\n{KEY_A}\n")).await;
    let ann = checkin(&h, &staff, &under_a).await.expect(200);
    let bob = confirmed(&h, "bob", "s-1").await;
    let under_b = qr_of(&bob);
    // Every token is now rendered under B, the old appointment's too.
    assert_ne!(qr_of(&ann), under_a);
    checkin(&h, &staff, &under_b).await.expect(200);
    h.shutdown().await;

    // A removed: its tokens are refused, B's are not.
    let h = server_with_keys(&dir, &format!("{KEY_B}\n")).await;
    assert_error_code(&checkin(&h, &staff, &under_a).await, 403, "BAD_QR");
    assert_error_code(
        &administer(&h, &staff, &id_of(&bob), &under_a, "B-1").await,
        403,
        "BAD_QR",
    );
    checkin(&h, &staff, &under_b).await.expect(200);
    checkin(&h, &staff, &qr_of(&ann)).await.expect(200);
    // A server with only A never accepted B's.
    h.shutdown().await;
    let h = server_with_keys(&dir, &format!("{KEY_A}\n")).await;
    assert_error_code(&checkin(&h, &staff, &under_b).await, 403, "BAD_QR");
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the dose history ------------------------------------------------------------------

/// A slot `days` from now, an hour long.
async fn slot_in_days(h: &Harness, slot: &str, days: i64) {
    let body = slot_body(
        hours_from_now(24 * days),
        hours_from_now(24 * days + 1),
        10,
        &[VACCINE],
        0,
    );
    h.put_slot_raw("c-1", slot, &body).await.expect(200);
}

/// Books `citizen` into `slot`; answers the response.
async fn book(h: &Harness, citizen: &str, slot: &str) -> Resp {
    h.book(citizen, "c-1", slot).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administered_dose_joins_the_history_and_survives_a_restart() {
    let dir = temp_dir("dose-history");
    let storage = || wal_storage(&dir, WalConfig::new(Durability::Sync));
    let h = Harness::start_storage(SHARDS, storage())
        .await
        .expect("starts");
    // The standard vaccine: 2 doses, 21 days apart.
    let staff = campaign(&h, &["ann"]).await;
    slot_in_days(&h, "s-near", 10).await;
    slot_in_days(&h, "s-far", 30).await;
    let a = confirmed(&h, "ann", "s-1").await;
    let id = id_of(&a);
    let a_done = administer(&h, &staff, &id, &qr_of(&a), "B-1")
        .await
        .expect(200);

    // The claim is settled (no ALREADY_BOOKED), and the interval rule sees the dose.
    let details = assert_error_code(&book(&h, "ann", "s-near").await, 422, "NOT_ELIGIBLE");
    assert_eq!(reasons(&details), vec!["min_interval_not_met"]);
    h.assert_invariants_ok().await;
    h.stop_without_snapshot().await;

    // After a restart from the log, then from snapshots: the appointment, the counts and the
    // dose are all still there.
    for snapshot in [false, true] {
        let h = Harness::start_storage(SHARDS, storage())
            .await
            .expect("restarts");
        let after = h.appointment_json(&id).await;
        assert_eq!(after["status"], "ADMINISTERED", "snapshot {snapshot}");
        assert_eq!(after["batch"], "B-1");
        assert_eq!(after["administered_at"], a_done["administered_at"]);
        assert_eq!(counts(&h, "s-1").await, (9, 0, 1));
        let details = assert_error_code(&book(&h, "ann", "s-near").await, 422, "NOT_ELIGIBLE");
        assert_eq!(reasons(&details), vec!["min_interval_not_met"]);
        h.assert_invariants_ok().await;
        h.shutdown().await;
    }
    let h = Harness::start_storage(SHARDS, storage())
        .await
        .expect("restarts");
    // Dose 2 of 2, far enough after the first.
    let second = book(&h, "ann", "s-far").await.expect(201);
    assert_eq!(second["status"], "PENDING");
    h.assert_invariants_ok().await;
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_series_is_not_booked_again() {
    let h = Harness::start().await;
    let staff = campaign(&h, &["ann"]).await;
    slot_in_days(&h, "s-far", 30).await;
    slot_in_days(&h, "s-later", 60).await;
    for slot in ["s-1", "s-far"] {
        let a = confirmed(&h, "ann", slot).await;
        administer(&h, &staff, &id_of(&a), &qr_of(&a), "B-1")
            .await
            .expect(200);
    }
    let details = assert_error_code(&book(&h, "ann", "s-later").await, 422, "NOT_ELIGIBLE");
    assert_eq!(reasons(&details), vec!["series_complete"]);
    // Both doses are in the history, once each, whichever way they arrived (the claim
    // notice or the booking that replaced the claim first).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answers = h.node().check_claims().await.expect("claims readable");
        if answers.is_ok() || std::time::Instant::now() > deadline {
            assert_eq!(answers, Ok(()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.shutdown().await;
}
