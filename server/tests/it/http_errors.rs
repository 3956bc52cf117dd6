//! Bad input over HTTP: every answer has the error shape and the contract's status, and the
//! server stays healthy after each one.

use serde_json::{json, Value};

use crate::common::*;

/// Asserts the error shape, status and code, then that `/healthz` still answers 200;
/// returns `details`.
async fn refused(api: &Api, resp: Resp, status: u16, code: &str) -> Value {
    let details = assert_error_code(&resp, status, code);
    api.healthz().await;
    details
}

async fn bad_request_field(api: &Api, resp: Resp) -> String {
    let details = refused(api, resp, 400, "BAD_REQUEST").await;
    details["field"]
        .as_str()
        .unwrap_or_else(|| panic!("no details.field in {details}"))
        .to_string()
}

async fn setup(h: &Harness) {
    h.standard_vaccine(VACCINE).await;
    h.standard_vaccine("mdn").await;
    h.clinic_with_slot("c-1", "s-1", 10, 10).await;
    h.put_adult("ann").await;
}

fn put_clinic_raw(h: &Harness, clinic_id: &str, content_type: &str, body: &str) -> Req {
    Req::put(format!("/v1/clinics/{clinic_id}"))
        .token(&h.authority)
        .raw(content_type, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_do_not_parse_are_400_naming_the_field() {
    let h = Harness::start().await;
    setup(&h).await;

    // Malformed JSON.
    for body in [
        r#"{"name": "x","#,
        "",
        "not json",
        r#"{"name": "x", "region": "north", "timezone": "UTC"} trailing"#,
    ] {
        let r = h
            .send(put_clinic_raw(&h, "c-2", "application/json", body))
            .await;
        assert_eq!(bad_request_field(&h, r).await, "body", "{body:?}");
    }
    // Unknown field.
    let r = h
        .send(put_clinic_raw(
            &h,
            "c-2",
            "application/json",
            r#"{"name": "x", "region": "north", "timezone": "UTC", "foo": 1}"#,
        ))
        .await;
    assert_eq!(bad_request_field(&h, r).await, "foo");
    // Wrong type.
    let mut slot = slot_body(hours_from_now(24), hours_from_now(25), 10, &[VACCINE], 0);
    slot["capacity"] = json!("ten");
    let r = h.put_slot_raw("c-1", "s-9", &slot).await;
    assert_eq!(bad_request_field(&h, r).await, "capacity");
    let mut slot = slot_body(hours_from_now(24), hours_from_now(25), 10, &[VACCINE], 0);
    slot["start"] = json!("tomorrow");
    let r = h.put_slot_raw("c-1", "s-9", &slot).await;
    assert_eq!(bad_request_field(&h, r).await, "start");
    let mut booking = booking_body("ann", "c-1", "s-1", VACCINE);
    booking["hold_seconds"] = json!("300");
    let r = h.book_with(&h.citizen_token("ann"), "k", &booking).await;
    assert_eq!(bad_request_field(&h, r).await, "hold_seconds");
    // Missing required field.
    let r = h
        .send(put_clinic_raw(
            &h,
            "c-2",
            "application/json",
            r#"{"name": "x", "region": "north"}"#,
        ))
        .await;
    assert_eq!(bad_request_field(&h, r).await, "timezone");
    let r = h
        .book_with(
            &h.citizen_token("ann"),
            "k",
            &json!({"clinic_id": "c-1", "slot_id": "s-1", "citizen_id": "ann"}),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "vaccine");
    // Duplicate field, null for a string, an array for an object, nested unknown field,
    // bytes that are not UTF-8.
    let r = h
        .send(put_clinic_raw(
            &h,
            "c-2",
            "application/json",
            r#"{"name": "a", "name": "b", "region": "north", "timezone": "UTC"}"#,
        ))
        .await;
    assert_eq!(bad_request_field(&h, r).await, "name");
    let r = h
        .book_with(
            &h.citizen_token("ann"),
            "k",
            &json!({"clinic_id": null, "slot_id": "s-1", "vaccine": VACCINE, "citizen_id": "ann"}),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "clinic_id");
    let r = h.book_with(&h.citizen_token("ann"), "k", &json!([1])).await;
    refused(&h, r, 400, "BAD_REQUEST").await;
    let mut citizen = citizen_body("1990-01-01");
    citizen["doses"] = json!([{"vaccine": VACCINE, "date": "2020-01-01", "foo": 1}]);
    let r = h
        .send(
            Req::put("/v1/citizens/zed")
                .token(&h.authority)
                .json(&citizen),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "doses[0].foo");
    let r = h
        .send(Req::put("/v1/clinics/c-2").token(&h.authority).raw(
            "application/json",
            vec![b'{', b'"', 0xff, b'"', b':', b'1', b'}'],
        ))
        .await;
    assert_eq!(bad_request_field(&h, r).await, "body");
    // Nothing of that reached the catalogue or booked anything.
    let clinics = h.send(Req::get("/v1/clinics")).await.expect(200);
    assert_eq!(clinics["clinics"].as_array().unwrap().len(), 1, "{clinics}");
    assert!(h.citizen_appointments("ann").await.is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_size_limits() {
    let h = Harness::start().await;
    setup(&h).await;

    // Over 64 KiB on an ordinary endpoint: 413 (whitespace keeps it valid JSON otherwise).
    let core = serde_json::to_string(&clinic_body()).unwrap();
    let big = format!("{core}{}", " ".repeat(64 * 1024 + 1 - core.len()));
    assert_eq!(big.len(), 64 * 1024 + 1);
    let r = h
        .send_oversized(put_clinic_raw(&h, "c-2", "application/json", &big))
        .await;
    let details = refused(&h, r, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(details["limit_bytes"], 64 * 1024);
    // Exactly 64 KiB is fine.
    let r = h
        .send(put_clinic_raw(
            &h,
            "c-2",
            "application/json",
            &big[..64 * 1024],
        ))
        .await;
    r.expect(200);
    let booking = serde_json::to_string(&booking_body("ann", "c-1", "s-1", VACCINE)).unwrap();
    let big_booking = format!("{booking}{}", " ".repeat(70 * 1024));
    let r = h
        .send_oversized(
            Req::post("/v1/appointments")
                .token(&h.citizen_token("ann"))
                .idem("big")
                .raw("application/json", big_booking),
        )
        .await;
    refused(&h, r, 413, "PAYLOAD_TOO_LARGE").await;
    // A 413 is not stored: the key books once the body is right.
    h.book_with(
        &h.citizen_token("ann"),
        "big",
        &booking_body("ann", "c-1", "s-1", VACCINE),
    )
    .await
    .expect(201);

    // A confirm takes no body, but not an unbounded one either.
    let r = h
        .send_oversized(
            Req::post("/v1/appointments/ap-0-1/confirm")
                .token(&h.authority)
                .raw("application/json", " ".repeat(64 * 1024 + 1)),
        )
        .await;
    refused(&h, r, 413, "PAYLOAD_TOO_LARGE").await;

    // The bulk slot upload takes up to 1 MiB: 1,000 slots in about 300 KB.
    let start = hours_from_now(48);
    let end = hours_from_now(49);
    let slots: Vec<Value> = (0..1000)
        .map(|i| {
            let mut s = slot_body(start.clone(), end.clone(), 20, &[VACCINE], 2);
            s["slot_id"] = json!(format!("bulk-{i:04}-{}", "x".repeat(48)));
            s
        })
        .collect();
    let upload = serde_json::to_string_pretty(&json!({ "slots": slots })).unwrap();
    assert!(
        upload.len() > 250 * 1024 && upload.len() < 1024 * 1024,
        "{}",
        upload.len()
    );
    let r = h
        .send(
            Req::post("/v1/clinics/c-1/slots")
                .token(&h.authority)
                .raw("application/json", upload.clone()),
        )
        .await;
    let answer = r.expect(200);
    assert_eq!(answer["slots"].as_array().unwrap().len(), 1000);
    let avail = h.availability("c-1").await;
    assert_eq!(avail["slots"].as_array().unwrap().len(), 1001);

    // Over 1 MiB: 413.
    let over = format!("{upload}{}", " ".repeat(1024 * 1024 + 1 - upload.len()));
    let r = h
        .send_oversized(
            Req::post("/v1/clinics/c-1/slots")
                .token(&h.authority)
                .raw("application/json", over),
        )
        .await;
    let details = refused(&h, r, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(details["limit_bytes"], 1024 * 1024);

    // 1,001 slots: 400 (at most 1,000 per upload).
    let mut too_many = slots.clone();
    let mut extra = slot_body(start, end, 20, &[VACCINE], 0);
    extra["slot_id"] = json!("bulk-extra");
    too_many.push(extra);
    let r = h
        .send(
            Req::post("/v1/clinics/c-1/slots")
                .token(&h.authority)
                .json(&json!({ "slots": too_many })),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "slots");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_content_types_are_415() {
    let h = Harness::start().await;
    setup(&h).await;
    let body = serde_json::to_string(&clinic_body()).unwrap();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        let r = h.send(put_clinic_raw(&h, "c-2", content_type, &body)).await;
        refused(&h, r, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    }
    let r = h
        .send(
            Req::post("/v1/appointments")
                .token(&h.citizen_token("ann"))
                .idem("k")
                .raw(
                    "text/plain",
                    serde_json::to_string(&booking_body("ann", "c-1", "s-1", VACCINE)).unwrap(),
                ),
        )
        .await;
    refused(&h, r, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    // With a charset parameter it is still JSON.
    h.send(put_clinic_raw(
        &h,
        "c-2",
        "application/json; charset=utf-8",
        &body,
    ))
    .await
    .expect(200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let h = Harness::start().await;
    for path in [
        "/v1/nope",
        "/v2/clinics",
        // `/` is served: it redirects to the operator console (see `console`).
        "/nope",
        "/v1/clinics/c-1/nothing/here",
    ] {
        let r = h.send(Req::get(path)).await;
        refused(&h, r, 404, "NOT_FOUND").await;
    }
    let r = h
        .send(Req::post("/v1/nope").token(&h.authority).json(&json!({})))
        .await;
    refused(&h, r, 404, "NOT_FOUND").await;

    use reqwest::Method;
    for (method, path) in [
        (Method::DELETE, "/v1/clinics/c-1"),
        (Method::GET, "/v1/appointments"),
        (Method::PUT, "/v1/appointments/ap-0-1"),
        (Method::POST, "/healthz"),
        (Method::PATCH, "/v1/clinics"),
        (Method::GET, "/v1/appointments/ap-0-1/confirm"),
        (Method::POST, "/openapi.json"),
    ] {
        let r = h
            .send(Req::new(method.clone(), path).token(&h.authority))
            .await;
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text);
        refused(&h, r, 405, "METHOD_NOT_ALLOWED").await;
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_are_400() {
    let h = Harness::start().await;
    setup(&h).await;
    let long = "x".repeat(65);
    for id in [long.as_str(), "a%20b", "a%2Fb", "%C3%A9", "a.b", "%FF"] {
        let r = h
            .send(
                Req::put(format!("/v1/clinics/{id}"))
                    .token(&h.authority)
                    .json(&clinic_body()),
            )
            .await;
        assert_eq!(bad_request_field(&h, r).await, "clinic_id", "{id}");
        let r = h
            .send(Req::get(format!("/v1/clinics/{id}/availability")))
            .await;
        assert_eq!(bad_request_field(&h, r).await, "clinic_id", "{id}");
        let r = h
            .send(
                Req::put(format!("/v1/citizens/{id}"))
                    .token(&h.authority)
                    .json(&citizen_body("1980-01-01")),
            )
            .await;
        assert_eq!(bad_request_field(&h, r).await, "citizen_id", "{id}");
        let r = h
            .put_slot_raw(
                "c-1",
                id,
                &slot_body(hours_from_now(24), hours_from_now(25), 1, &[VACCINE], 0),
            )
            .await;
        assert_eq!(bad_request_field(&h, r).await, "slot_id", "{id}");
        let r = h
            .send(
                Req::put(format!("/v1/vaccines/{id}"))
                    .token(&h.authority)
                    .json(&vaccine_body(None)),
            )
            .await;
        assert_eq!(bad_request_field(&h, r).await, "vaccine", "{id}");
    }
    // Query strings: unknown parameter, wrong type, bad id.
    for query in ["?foo=1", "?vaccine=a%20b", "?region=x/y"] {
        let r = h.send(Req::get(format!("/v1/clinics{query}"))).await;
        refused(&h, r, 400, "BAD_REQUEST").await;
    }
    for query in ["?from=yesterday", "?to=1", "?limit=3"] {
        let r = h
            .send(Req::get(format!("/v1/clinics/c-1/availability{query}")))
            .await;
        refused(&h, r, 400, "BAD_REQUEST").await;
    }
    // 64 characters is an id.
    h.put_clinic(&"x".repeat(64)).await;

    // Ids in bodies.
    for (field, value) in [
        ("citizen_id", "a b"),
        ("clinic_id", long.as_str()),
        ("slot_id", "a/b"),
        ("vaccine", ""),
    ] {
        let mut body = booking_body("ann", "c-1", "s-1", VACCINE);
        body[field] = json!(value);
        let r = h.book_with(&h.authority, &fresh_key("ids"), &body).await;
        assert_eq!(bad_request_field(&h, r).await, field);
    }
    let r = h
        .send(
            Req::post("/v1/clinics/c-1/stock")
                .token(&h.authority)
                .json(&stock_body(VACCINE, "B 1", 5)),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "batch");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_ranges_are_checked() {
    let h = Harness::start().await;
    setup(&h).await;

    // End before (or at) start.
    let r = h
        .put_slot_raw(
            "c-1",
            "s-9",
            &slot_body(hours_from_now(25), hours_from_now(24), 10, &[VACCINE], 0),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "end");
    let t = hours_from_now(24);
    let r = h
        .put_slot_raw("c-1", "s-9", &slot_body(t.clone(), t, 10, &[VACCINE], 0))
        .await;
    assert_eq!(bad_request_field(&h, r).await, "end");
    // Capacity 1..=100000.
    for capacity in [0, 100_001] {
        let r = h
            .put_slot_raw(
                "c-1",
                "s-9",
                &slot_body(
                    hours_from_now(24),
                    hours_from_now(25),
                    capacity,
                    &[VACCINE],
                    0,
                ),
            )
            .await;
        assert_eq!(bad_request_field(&h, r).await, "capacity", "{capacity}");
    }
    h.put_slot("c-1", "s-max", 100_000, &[VACCINE]).await;
    // priority_reserve <= capacity.
    let r = h
        .put_slot_raw(
            "c-1",
            "s-9",
            &slot_body(hours_from_now(24), hours_from_now(25), 10, &[VACCINE], 11),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "priority_reserve");
    // Quantity 1..=10^7.
    for quantity in [0, -1, 10_000_001] {
        let r = h
            .send(
                Req::post("/v1/clinics/c-1/stock")
                    .token(&h.authority)
                    .json(&stock_body(VACCINE, "B-2", quantity)),
            )
            .await;
        assert_eq!(bad_request_field(&h, r).await, "quantity", "{quantity}");
    }
    // Unknown vaccine in a slot or a stock body: 404.
    let r = h
        .put_slot_raw(
            "c-1",
            "s-9",
            &slot_body(hours_from_now(24), hours_from_now(25), 10, &["nope"], 0),
        )
        .await;
    refused(&h, r, 404, "NOT_FOUND").await;
    let r = h
        .send(
            Req::post("/v1/clinics/c-1/stock")
                .token(&h.authority)
                .json(&stock_body("nope", "B-2", 5)),
        )
        .await;
    refused(&h, r, 404, "NOT_FOUND").await;
    // Unknown clinic for a slot or stock: 404.
    let r = h
        .put_slot_raw(
            "c-404",
            "s-9",
            &slot_body(hours_from_now(24), hours_from_now(25), 10, &[VACCINE], 0),
        )
        .await;
    refused(&h, r, 404, "NOT_FOUND").await;
    let r = h
        .send(
            Req::post("/v1/clinics/c-404/stock")
                .token(&h.authority)
                .json(&stock_body(VACCINE, "B-2", 5)),
        )
        .await;
    refused(&h, r, 404, "NOT_FOUND").await;
    let r = h.send(Req::get("/v1/clinics/c-404/availability")).await;
    refused(&h, r, 404, "NOT_FOUND").await;
    let r = h
        .send(Req::get("/v1/clinics/c-1/availability?vaccine=nope"))
        .await;
    refused(&h, r, 404, "NOT_FOUND").await;
    let r = h
        .send(Req::get("/v1/clinics/c-404/appointments").token(&h.authority))
        .await;
    refused(&h, r, 404, "NOT_FOUND").await;
    let r = h
        .send(
            Req::post("/v1/clinics/c-1/slots/s-404/cancel")
                .token(&h.authority)
                .json(&json!({"reason": "x"})),
        )
        .await;
    refused(&h, r, 404, "NOT_FOUND").await;
    // Vaccine rules.
    let mut rules = vaccine_body(Some(50));
    rules["max_age"] = json!(10);
    let r = h
        .send(
            Req::put("/v1/vaccines/v-2")
                .token(&h.authority)
                .json(&rules),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "max_age");
    // A slot offers at least one vaccine; a cancellation needs a reason.
    let r = h
        .put_slot_raw(
            "c-1",
            "s-9",
            &slot_body(hours_from_now(24), hours_from_now(25), 10, &[], 0),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "vaccines");
    let r = h
        .send(
            Req::post("/v1/clinics/c-1/slots/s-1/cancel")
                .token(&h.authority)
                .json(&json!({"reason": " "})),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "reason");
    // Invalid time zone.
    let r = h
        .send(
            Req::put("/v1/clinics/c-2")
                .token(&h.authority)
                .json(&json!({"name": "x", "region": "north", "timezone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!(bad_request_field(&h, r).await, "timezone");
    // Nothing of the refused writes is visible.
    let avail = h.availability("c-1").await;
    assert_eq!(avail["slots"].as_array().unwrap().len(), 2, "{avail}");
    assert_eq!(stock(&avail, VACCINE), (10, 0, 10));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_in_use_and_insufficient_stock_are_409() {
    let h = Harness::start().await;
    setup(&h).await;
    h.put_adult("bob").await;
    h.book_ok("ann", "c-1", "s-1").await;
    h.book_ok("bob", "c-1", "s-1").await;
    let (start, end) = {
        let avail = h.availability("c-1").await;
        let s = slot(&avail, "s-1");
        (
            s["start"].as_str().unwrap().to_string(),
            s["end"].as_str().unwrap().to_string(),
        )
    };
    let r = h
        .put_slot_raw(
            "c-1",
            "s-1",
            &slot_body(start.clone(), end.clone(), 1, &[VACCINE], 0),
        )
        .await;
    let details = refused(&h, r, 409, "CAPACITY_IN_USE").await;
    assert_eq!(details["taken"], 2);
    // Down to exactly what is taken is allowed.
    let updated = h
        .put_slot_raw("c-1", "s-1", &slot_body(start, end, 2, &[VACCINE], 0))
        .await
        .expect(200);
    assert_eq!(updated["capacity"], 2);
    assert_eq!(seats(&h.availability("c-1").await, "s-1"), (0, 2, 0));

    // A batch may not go below zero.
    let r = h
        .adjust_stock(&h.authority, "c-1", VACCINE, "B-1", -11)
        .await;
    let details = refused(&h, r, 409, "INSUFFICIENT_STOCK").await;
    assert_eq!(details["on_hand"], 10);
    assert_eq!(stock(&h.availability("c-1").await, VACCINE), (10, 2, 8));
    // An unknown batch is 404; a zero delta 400.
    let r = h
        .adjust_stock(&h.authority, "c-1", VACCINE, "B-404", -1)
        .await;
    refused(&h, r, 404, "NOT_FOUND").await;
    let r = h.adjust_stock(&h.authority, "c-1", VACCINE, "B-1", 0).await;
    assert_eq!(bad_request_field(&h, r).await, "delta");
    // To exactly zero is fine.
    let r = h
        .adjust_stock(&h.authority, "c-1", VACCINE, "B-1", -10)
        .await;
    assert_eq!(r.expect(200)["on_hand"], 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_checks_answer_in_the_contract_order() {
    let h = Harness::start().await;
    setup(&h).await;
    h.put_citizen("kid", "2020-01-01").await;
    for c in ["bob", "cem"] {
        h.put_adult(c).await;
    }
    // A slot offering only mdn, a cancelled one, and one that started an hour ago.
    h.put_slot("c-1", "s-mdn", 10, &["mdn"]).await;
    h.receive_stock("c-1", "mdn", "M-1", 10).await;
    h.put_slot("c-1", "s-gone", 10, &[VACCINE]).await;
    h.send(
        Req::post("/v1/clinics/c-1/slots/s-gone/cancel")
            .token(&h.authority)
            .json(&json!({"reason": "staff ill"})),
    )
    .await
    .expect(200);
    h.put_slot_raw(
        "c-1",
        "s-past",
        &slot_body(hours_from_now(-1), hours_from_now(1), 10, &[VACCINE], 0),
    )
    .await
    .expect(200);

    let api: &Api = &h;
    let book = |citizen: &str, clinic: &str, slot: &str, vaccine: &str| {
        let body = booking_body(citizen, clinic, slot, vaccine);
        let token = api.citizen_token(citizen);
        async move { api.book_with(&token, &fresh_key("checks"), &body).await }
    };
    let r = book("ann", "c-404", "s-1", VACCINE).await;
    refused(&h, r, 404, "NOT_FOUND").await;
    let r = book("ann", "c-1", "s-404", VACCINE).await;
    refused(&h, r, 404, "NOT_FOUND").await;
    let r = book("ann", "c-1", "s-1", "nope").await;
    refused(&h, r, 404, "NOT_FOUND").await;
    let r = book("ann", "c-1", "s-1", "mdn").await;
    refused(&h, r, 409, "VACCINE_NOT_OFFERED").await;
    let r = book("ann", "c-1", "s-gone", VACCINE).await;
    refused(&h, r, 409, "SLOT_CANCELLED").await;
    let r = book("ann", "c-1", "s-past", VACCINE).await;
    refused(&h, r, 409, "SLOT_STARTED").await;
    // SLOT_CANCELLED before VACCINE_NOT_OFFERED, SLOT_STARTED before it too.
    let r = book("ann", "c-1", "s-gone", "mdn").await;
    refused(&h, r, 409, "SLOT_CANCELLED").await;
    let r = book("ann", "c-1", "s-past", "mdn").await;
    refused(&h, r, 409, "SLOT_STARTED").await;

    // Unknown citizen: 422 NOT_ELIGIBLE with unknown_citizen, nothing held.
    let r = book("ghost", "c-1", "s-1", VACCINE).await;
    let details = refused(&h, r, 422, "NOT_ELIGIBLE").await;
    assert!(
        reasons(&details).contains(&"unknown_citizen".to_string()),
        "{details}"
    );
    // Too young: 422 with the reason; the seat and the dose return.
    let r = book("kid", "c-1", "s-1", VACCINE).await;
    let details = refused(&h, r, 422, "NOT_ELIGIBLE").await;
    assert!(
        reasons(&details).contains(&"below_min_age".to_string()),
        "{details}"
    );
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (10, 0, 0));
    assert_eq!(stock(&avail, VACCINE), (10, 0, 10));
    let kid = h.citizen_appointments("kid").await;
    assert!(kid.iter().all(|a| a["status"] == "REJECTED"), "{kid:?}");

    // Allergic to a contraindication: 422 contraindication.
    h.send(Req::put("/v1/citizens/peggy").token(&h.authority).json(
        &json!({"birth_date": "1970-01-01", "region": "north", "allergies": ["peg"],
                          "insurance_id": "I-1", "doses": []}),
    ))
    .await
    .expect(200);
    let r = book("peggy", "c-1", "s-1", VACCINE).await;
    let details = refused(&h, r, 422, "NOT_ELIGIBLE").await;
    assert_eq!(reasons(&details), vec!["contraindication".to_string()]);

    // An eligible citizen still gets the seat afterwards.
    h.book_ok("bob", "c-1", "s-1").await;
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (9, 1, 0));
    assert_eq!(stock(&avail, VACCINE), (10, 1, 9));
    h.shutdown().await;
}

/// The server answers 413 from `Content-Length` before reading the body, then closes the
/// connection without reading the rest. A client still uploading gets a broken pipe or a
/// reset instead of the 413 (RFC 9112 section 9.6 asks for a staged, "lingering" close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_always_get_their_413() {
    let h = Harness::start().await;
    let api = h.unpooled();
    let core = serde_json::to_string(&clinic_body()).unwrap();
    let big = format!("{core}{}", " ".repeat(4 * 1024 * 1024 - core.len()));
    let mut failures = Vec::new();
    for _ in 0..10 {
        match api
            .try_send(put_clinic_raw(&h, "c-2", "application/json", &big))
            .await
        {
            Ok(r) => {
                assert_error_code(&r, 413, "PAYLOAD_TOO_LARGE");
            }
            Err(e) => failures.push(error_chain(&e)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 10 uploads got no answer: {failures:?}",
        failures.len()
    );
    h.shutdown().await;
}

/// After a 413 the server closes the connection, but the answer does not say so, so a
/// client that keeps connections alive sends its next request into a closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_says_that_it_closes_the_connection() {
    let h = Harness::start().await;
    let core = serde_json::to_string(&clinic_body()).unwrap();
    let big = format!("{core}{}", " ".repeat(64 * 1024 + 1 - core.len()));
    let r = h
        .send_oversized(put_clinic_raw(&h, "c-2", "application/json", &big))
        .await;
    assert_error_code(&r, 413, "PAYLOAD_TOO_LARGE");
    let connection = r
        .headers
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert_eq!(connection, "close", "headers: {:?}", r.headers);
    h.shutdown().await;
}
