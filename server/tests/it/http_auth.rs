//! Authentication and authorisation over HTTP (docs/API.md, Auth).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use holdfast_gateway::auth::Role;
use serde_json::json;

use crate::common::*;

async fn setup(h: &Harness) -> String {
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 10).await;
    h.clinic_with_slot("c-2", "s-1", 10, 10).await;
    for c in ["ann", "bob", "cem"] {
        h.put_adult(c).await;
    }
    h.book_ok("ann", "c-1", "s-1").await
}

/// A token with any header and claims, correctly HS256-signed with the test secret.
fn signed(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    use hmac::{Hmac, Mac};
    let unsigned = forged(header, claims, "");
    let signing_input = unsigned.trim_end_matches('.');
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// A token with any header and claims and the given signature part.
fn forged(header: &serde_json::Value, claims: &serde_json::Value, signature: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap());
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.{signature}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401() {
    let h = Harness::start().await;
    let id = setup(&h).await;
    let exp = Utc::now().timestamp() + 3600;
    let authority_claims = json!({"sub": "x", "role": "authority", "exp": exp});

    let mut bad: Vec<(&str, String)> = vec![
        ("garbage", "Bearer garbage".to_string()),
        ("empty bearer", "Bearer ".to_string()),
        ("not bearer", format!("Basic {}", h.authority)),
        (
            "other secret",
            format!(
                "Bearer {}",
                token_with(b"another-secret", Role::Authority, "x", None, None, exp)
            ),
        ),
        (
            "expired 10 s ago",
            format!(
                "Bearer {}",
                token_with(
                    SECRET,
                    Role::Authority,
                    "x",
                    None,
                    None,
                    Utc::now().timestamp() - 10
                )
            ),
        ),
        (
            "alg none, no signature",
            format!(
                "Bearer {}",
                forged(&json!({"alg": "none", "typ": "JWT"}), &authority_claims, "")
            ),
        ),
        (
            "alg None with the signature of a real token",
            format!(
                "Bearer {}",
                forged(
                    &json!({"alg": "None", "typ": "JWT"}),
                    &authority_claims,
                    h.authority.rsplit('.').next().unwrap()
                )
            ),
        ),
        (
            "citizen without citizen_id",
            format!("Bearer {}", token(Role::Citizen, "x", None, None)),
        ),
        (
            "staff without clinic_id",
            format!("Bearer {}", token(Role::Staff, "x", None, None)),
        ),
    ];
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    for (what, header, claims) in [
        (
            "unknown role",
            hs256.clone(),
            json!({"sub": "x", "role": "admin", "exp": exp}),
        ),
        (
            "no exp",
            hs256.clone(),
            json!({"sub": "x", "role": "authority"}),
        ),
        (
            "exp as text",
            hs256.clone(),
            json!({"sub": "x", "role": "authority", "exp": exp.to_string()}),
        ),
        (
            "alg HS512",
            json!({"alg": "HS512", "typ": "JWT"}),
            authority_claims.clone(),
        ),
        (
            "crit header",
            json!({"alg": "HS256", "crit": ["b64"]}),
            authority_claims.clone(),
        ),
        ("no alg", json!({"typ": "JWT"}), authority_claims.clone()),
    ] {
        bad.push((what, format!("Bearer {}", signed(&header, &claims))));
    }
    // The same construction with a good header and claims is accepted (so the cases above
    // fail for the reason they name).
    let control = signed(&hs256, &authority_claims);
    h.send(Req::get("/v1/clinics/c-1/appointments").token(&control))
        .await
        .expect(200);

    // A valid token with one character of its payload changed.
    let mut parts: Vec<String> = h.authority.split('.').map(str::to_string).collect();
    let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
    parts[1].pop();
    parts[1].push(flipped);
    bad.push(("altered payload", format!("Bearer {}", parts.join("."))));

    for (what, authorization) in &bad {
        let requests = [
            Req::get(format!("/v1/appointments/{id}")),
            Req::get("/v1/admin/shards"),
            Req::put("/v1/clinics/c-3").json(&clinic_body()),
            Req::post("/v1/appointments")
                .idem("k")
                .json(&booking_body("ann", "c-1", "s-1", VACCINE)),
        ];
        for req in requests {
            let r = h.send(req.authorization(authorization)).await;
            assert_eq!(r.status, 401, "{what}: {}", r.text);
            assert_error_code(&r, 401, "UNAUTHENTICATED");
        }
    }
    // No token at all.
    let r = h.send(Req::get(format!("/v1/appointments/{id}"))).await;
    assert_error_code(&r, 401, "UNAUTHENTICATED");
    let r = h
        .send(
            Req::post("/v1/appointments")
                .idem("k")
                .json(&booking_body("ann", "c-1", "s-1", VACCINE)),
        )
        .await;
    assert_error_code(&r, 401, "UNAUTHENTICATED");
    // 401 comes before 400: a bad body without a token is still 401.
    let r = h
        .send(Req::post("/v1/appointments").raw("application/json", "{"))
        .await;
    assert_error_code(&r, 401, "UNAUTHENTICATED");
    let r = h.send(Req::get("/v1/admin/shards")).await;
    assert_error_code(&r, 401, "UNAUTHENTICATED");

    // Within the 5 s leeway a just-expired token still works.
    let fresh = token_with(
        SECRET,
        Role::Authority,
        "x",
        None,
        None,
        Utc::now().timestamp() - 1,
    );
    h.send(Req::get(format!("/v1/appointments/{id}")).token(&fresh))
        .await
        .expect(200);
    // Nothing was created by the refused requests.
    let clinics = h.send(Req::get("/v1/clinics")).await.expect(200);
    assert_eq!(clinics["clinics"].as_array().unwrap().len(), 2);
    assert_eq!(h.citizen_appointments("ann").await.len(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citizens_touch_only_their_own_appointments() {
    let h = Harness::start().await;
    let ann_appointment = setup(&h).await;
    let ann = h.citizen_token("ann");
    let bob = h.citizen_token("bob");

    // Catalogue writes are not for citizens.
    let r = h
        .send(Req::put("/v1/clinics/c-3").token(&ann).json(&clinic_body()))
        .await;
    assert_error_code(&r, 403, "FORBIDDEN");
    let r = h
        .send(
            Req::put("/v1/citizens/ann")
                .token(&ann)
                .json(&citizen_body("1980-05-05")),
        )
        .await;
    assert_error_code(&r, 403, "FORBIDDEN");
    let r = h
        .send(
            Req::post("/v1/clinics/c-1/stock")
                .token(&ann)
                .json(&stock_body(VACCINE, "B-1", 1000)),
        )
        .await;
    assert_error_code(&r, 403, "FORBIDDEN");

    // Booking for someone else: 403, even at an unknown clinic (403 before 404).
    let r = h
        .book_with(&bob, "k-1", &booking_body("ann", "c-1", "s-1", VACCINE))
        .await;
    assert_error_code(&r, 403, "FORBIDDEN");
    let r = h
        .book_with(&bob, "k-2", &booking_body("ann", "c-404", "s-1", VACCINE))
        .await;
    assert_error_code(&r, 403, "FORBIDDEN");
    // ... but 400 before 403.
    let mut bad = booking_body("ann", "c-1", "s-1", VACCINE);
    bad["hold_seconds"] = json!(0);
    assert_error_code(&h.book_with(&bob, "k-3", &bad).await, 400, "BAD_REQUEST");

    // Someone else's appointment: no reading, confirming, cancelling, QR code, listing.
    let path = format!("/v1/appointments/{ann_appointment}");
    for req in [
        Req::get(path.clone()),
        Req::get(format!("{path}/qr.svg")),
        Req::post(format!("{path}/confirm")),
        Req::post(format!("{path}/cancel")),
        Req::get("/v1/citizens/ann/appointments"),
        Req::get("/v1/clinics/c-1/appointments"),
        Req::get("/v1/admin/shards"),
    ] {
        let r = h.send(req.token(&bob)).await;
        assert_error_code(&r, 403, "FORBIDDEN");
    }
    // Still PENDING: the refused confirm and cancel did nothing.
    assert_eq!(
        h.appointment_json(&ann_appointment).await["status"],
        "PENDING"
    );

    // Its own: yes.
    h.send(Req::get(path.clone()).token(&ann)).await.expect(200);
    h.send(Req::get("/v1/citizens/ann/appointments").token(&ann))
        .await
        .expect(200);
    h.confirm(&ann, &ann_appointment).await.expect(200);
    let qr = h.send(Req::get(format!("{path}/qr.svg")).token(&ann)).await;
    assert_eq!(qr.status, 200, "{}", qr.text);
    h.book_with(&bob, "k-4", &booking_body("bob", "c-1", "s-1", VACCINE))
        .await
        .expect(201);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_act_only_for_their_own_clinic() {
    let h = Harness::start().await;
    let ann_appointment = setup(&h).await;
    let bob_appointment = h.book_ok("bob", "c-2", "s-1").await;
    let staff1 = h.staff_token("c-1");

    // Reading appointments of its own clinic, not of another.
    let own = h
        .send(Req::get("/v1/clinics/c-1/appointments").token(&staff1))
        .await
        .expect(200);
    assert_eq!(
        ids(own["appointments"].as_array().unwrap()),
        vec![ann_appointment.clone()]
    );
    let r = h
        .send(Req::get("/v1/clinics/c-2/appointments").token(&staff1))
        .await;
    assert_error_code(&r, 403, "FORBIDDEN");
    h.appointment(&staff1, &ann_appointment).await.expect(200);
    assert_error_code(
        &h.appointment(&staff1, &bob_appointment).await,
        403,
        "FORBIDDEN",
    );

    // Stock adjustments at its own clinic, not at another.
    let r = h.adjust_stock(&staff1, "c-1", VACCINE, "B-1", -1).await;
    assert_eq!(r.expect(200)["on_hand"], 9);
    let r = h.adjust_stock(&staff1, "c-2", VACCINE, "B-1", -1).await;
    assert_error_code(&r, 403, "FORBIDDEN");
    assert_eq!(stock(&h.availability("c-2").await, VACCINE).0, 10);

    // Receiving stock, slots, clinics, citizens, vaccines are the authority's.
    for req in [
        Req::post("/v1/clinics/c-1/stock").json(&stock_body(VACCINE, "B-2", 5)),
        Req::put("/v1/clinics/c-1/slots/s-9").json(&slot_body(
            hours_from_now(24),
            hours_from_now(25),
            5,
            &[VACCINE],
            0,
        )),
        Req::put("/v1/clinics/c-1").json(&clinic_body()),
        Req::put("/v1/citizens/zed").json(&citizen_body("1980-01-01")),
        Req::put("/v1/vaccines/xyz").json(&vaccine_body(None)),
        Req::post("/v1/appointments")
            .idem("k")
            .json(&booking_body("ann", "c-1", "s-1", VACCINE)),
        Req::post(format!("/v1/appointments/{ann_appointment}/cancel")),
        Req::get("/v1/admin/shards"),
        Req::get("/v1/citizens/ann/appointments"),
    ] {
        let r = h.send(req.token(&staff1)).await;
        assert_error_code(&r, 403, "FORBIDDEN");
    }
    // Slot cancellation: its own clinic only.
    let r = h
        .send(
            Req::post("/v1/clinics/c-2/slots/s-1/cancel")
                .token(&staff1)
                .json(&json!({"reason": "no"})),
        )
        .await;
    assert_error_code(&r, 403, "FORBIDDEN");
    assert_eq!(
        slot(&h.availability("c-2").await, "s-1")["cancelled"],
        false
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_authorities() {
    let h = Harness::start().await;
    setup(&h).await;
    h.send(Req::get("/v1/admin/shards").token(&h.operator))
        .await
        .expect(200);
    for req in [
        Req::put("/v1/clinics/c-3").json(&clinic_body()),
        Req::post("/v1/appointments")
            .idem("k")
            .json(&booking_body("cem", "c-1", "s-1", VACCINE)),
        Req::get("/v1/citizens/ann/appointments"),
    ] {
        let r = h.send(req.token(&h.operator)).await;
        assert_error_code(&r, 403, "FORBIDDEN");
    }

    // The authority does every catalogue write.
    let a = &h.authority;
    h.send(
        Req::put("/v1/vaccines/mdn")
            .token(a)
            .json(&vaccine_body(Some(18))),
    )
    .await
    .expect(200);
    h.send(Req::put("/v1/clinics/c-3").token(a).json(&clinic_body()))
        .await
        .expect(200);
    h.send(
        Req::put("/v1/clinics/c-3/slots/s-1")
            .token(a)
            .json(&slot_body(
                hours_from_now(24),
                hours_from_now(25),
                5,
                &[VACCINE, "mdn"],
                1,
            )),
    )
    .await
    .expect(200);
    let mut bulk = slot_body(hours_from_now(26), hours_from_now(27), 5, &["mdn"], 0);
    bulk["slot_id"] = json!("s-2");
    h.send(
        Req::post("/v1/clinics/c-3/slots")
            .token(a)
            .json(&json!({"slots": [bulk]})),
    )
    .await
    .expect(200);
    h.send(
        Req::post("/v1/clinics/c-3/stock")
            .token(a)
            .json(&stock_body("mdn", "M-1", 50)),
    )
    .await
    .expect(200);
    h.adjust_stock(a, "c-3", "mdn", "M-1", -5).await.expect(200);
    h.send(
        Req::put("/v1/citizens/zed")
            .token(a)
            .json(&citizen_body("1990-02-02")),
    )
    .await
    .expect(200);
    h.send(
        Req::post("/v1/clinics/c-3/slots/s-2/cancel")
            .token(a)
            .json(&json!({"reason": "merged"})),
    )
    .await
    .expect(200);
    // And reads everything.
    h.send(Req::get("/v1/clinics/c-1/appointments").token(a))
        .await
        .expect(200);
    h.send(Req::get("/v1/citizens/ann/appointments").token(a))
        .await
        .expect(200);
    let avail = h.availability("c-3").await;
    assert_eq!(stock(&avail, "mdn"), (45, 0, 45));
    assert_eq!(slot(&avail, "s-2")["cancelled"], true);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_endpoints_need_no_token() {
    let h = Harness::start().await;
    setup(&h).await;
    let clinics = h.send(Req::get("/v1/clinics")).await.expect(200);
    let list = clinics["clinics"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["clinic_id"], "c-1");
    assert_eq!(list[0]["available_doses"][VACCINE], 9);
    for key in ["clinic_id", "name", "region", "timezone", "available_doses"] {
        assert!(list[0].get(key).is_some(), "{key} missing in {}", list[0]);
    }
    let filtered = h
        .send(Req::get(format!(
            "/v1/clinics?region={REGION}&vaccine={VACCINE}"
        )))
        .await
        .expect(200);
    assert_eq!(filtered["clinics"].as_array().unwrap().len(), 2);
    let other = h
        .send(Req::get("/v1/clinics?region=south"))
        .await
        .expect(200);
    assert!(other["clinics"].as_array().unwrap().is_empty());
    let avail = h
        .send(Req::get(format!(
            "/v1/clinics/c-1/availability?vaccine={VACCINE}"
        )))
        .await
        .expect(200);
    assert_eq!(avail["clinic_id"], "c-1");
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        h.send(Req::get(path)).await.expect(200);
    }
    // A garbage token on a public endpoint does not turn it private.
    h.send(Req::get("/v1/clinics").authorization("Bearer garbage"))
        .await
        .expect(200);
    h.shutdown().await;
}
