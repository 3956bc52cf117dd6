//! Admission on launch morning (docs/API.md): the rate limits per caller and per client IP,
//! their bounded key tables, and the waiting room with its one-booking admission tokens.
//!
//! Every server here runs on a `ManualClock`: the buckets and the room's pace read the node's
//! clock, so a test decides when a token comes back instead of racing real time. Requests
//! from "another IP" leave from 127.0.0.2 and up (all of 127/8 is the loopback on Linux).

use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;

use holdfast_engine::{ManualClock, NodeConfig};
use holdfast_gateway::admission::AdmissionConfig;
use holdfast_gateway::auth::Role;
use holdfast_server::{ServerConfig, Storage};
use serde_json::Value;

use crate::common::*;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(chrono::Utc::now().timestamp_millis()))
}

async fn server(clock: &Arc<ManualClock>, admission: AdmissionConfig) -> Harness {
    Harness::start_config(ServerConfig {
        clock: clock.clone(),
        admission,
        ..test_config(
            NodeConfig::embedded(SHARDS),
            HOLD_TTL_MS,
            MAX_HOLD_MS,
            Storage::Memory,
        )
    })
    .await
}

fn limits(rate: Option<&str>, ip_rate: Option<&str>, keys: usize) -> AdmissionConfig {
    AdmissionConfig {
        rate_limit: rate.map(|r| r.parse().unwrap()),
        ip_rate_limit: ip_rate.map(|r| r.parse().unwrap()),
        rate_limit_keys: NonZeroUsize::new(keys).unwrap(),
        ..AdmissionConfig::default()
    }
}

fn room(per_second: u32, ttl_ms: i64) -> AdmissionConfig {
    AdmissionConfig {
        waiting_room: NonZeroU32::new(per_second),
        admission_ttl_ms: ttl_ms,
        ..AdmissionConfig::default()
    }
}

/// A client whose requests leave from `ip` (a loopback address).
fn client_from(h: &Harness, ip: &str) -> Api {
    let mut api = h.api.clone();
    api.client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    api
}

/// `POST /v1/appointments` with an optional `Admission-Token`.
async fn book_admitted(
    api: &Api,
    token: &str,
    key: &str,
    body: &Value,
    admission: Option<&str>,
) -> Resp {
    let mut request = api
        .client
        .post(api.url("/v1/appointments"))
        .header("authorization", format!("Bearer {token}"))
        .header("idempotency-key", key)
        .json(body);
    if let Some(admission) = admission {
        request = request.header("admission-token", admission);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Resp {
        status,
        content_type,
        headers,
        text: response.text().await.unwrap(),
    }
}

fn retry_after_s(r: &Resp) -> u64 {
    r.headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on {} {}", r.status, r.text))
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds")
}

/// A confirm of an appointment that does not exist: a limited route that reaches no shard
/// decision (404), so a test can spend tokens without a campaign.
async fn confirm_nothing(api: &Api, token: &str) -> Resp {
    api.send(Req::post("/v1/appointments/ap-0-999999/confirm").token(token))
        .await
}

fn citizen(api: &Api, id: &str) -> String {
    api.citizen_token(id)
}

async fn scrape(h: &Harness) -> String {
    let r = h.send(Req::get("/metrics").token(&h.operator)).await;
    assert_eq!(r.status, 200);
    r.text
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

// ---- rate limits ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_callers_limit_is_429_with_retry_after_and_others_are_unaffected() {
    let clock = clock();
    let h = server(&clock, limits(Some("2/m"), None, 100)).await;
    let ann = citizen(&h, "ann");
    for _ in 0..2 {
        assert_error_code(&confirm_nothing(&h, &ann).await, 404, "NOT_FOUND");
    }
    let refused = confirm_nothing(&h, &ann).await;
    let details = assert_error_code(&refused, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], "caller");
    // 2 a minute: the next token comes 30 s after the last.
    assert_eq!(retry_after_s(&refused), 30);
    // Every limited route shares the caller's bucket; reads are never limited.
    let cancel = h
        .send(Req::post("/v1/appointments/ap-0-999999/cancel").token(&ann))
        .await;
    assert_error_code(&cancel, 429, "RATE_LIMITED");
    for _ in 0..10 {
        let read = h
            .send(Req::get("/v1/citizens/ann/appointments").token(&ann))
            .await;
        assert_eq!(read.status, 200, "{}", read.text);
    }
    // Another caller has its own bucket.
    let bob = citizen(&h, "bob");
    assert_error_code(&confirm_nothing(&h, &bob).await, 404, "NOT_FOUND");
    // A request without a valid token is not limited by caller: it is 401.
    let anonymous = h.send(Req::post("/v1/appointments/ap-0-1/confirm")).await;
    assert_error_code(&anonymous, 401, "UNAUTHENTICATED");
    clock.advance(30_000);
    assert_error_code(&confirm_nothing(&h, &ann).await, 404, "NOT_FOUND");
    assert_error_code(&confirm_nothing(&h, &ann).await, 429, "RATE_LIMITED");
    let text = scrape(&h).await;
    assert_eq!(
        sample(&text, "holdfast_rate_limited_total{code=\"RATE_LIMITED\"}"),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "holdfast_rate_limited_total{code=\"QUEUE_REQUIRED\"}"
        ),
        0.0
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_booking_is_not_stored_under_its_idempotency_key() {
    let clock = clock();
    let h = server(&clock, limits(Some("1/m"), None, 100)).await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 5, 5).await;
    h.put_adult("ann").await;
    let ann = citizen(&h, "ann");
    assert_error_code(&confirm_nothing(&h, &ann).await, 404, "NOT_FOUND");
    let body = booking_body("ann", "c-1", "s-1", VACCINE);
    assert_error_code(&h.book_with(&ann, "k-1", &body).await, 429, "RATE_LIMITED");
    clock.advance(60_000);
    // The same key now books: the 429 was not replayed.
    let booked = h.book_with(&ann, "k-1", &body).await.expect(201);
    assert_eq!(booked["status"], "PENDING");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_ip_limit_is_429_and_other_ips_are_unaffected() {
    let clock = clock();
    let h = server(&clock, limits(None, Some("3/m"), 100)).await;
    // Three callers from one IP share its bucket.
    for who in ["a", "b", "c"] {
        assert_error_code(
            &confirm_nothing(&h, &citizen(&h, who)).await,
            404,
            "NOT_FOUND",
        );
    }
    let refused = confirm_nothing(&h, &citizen(&h, "d")).await;
    let details = assert_error_code(&refused, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], "client IP");
    assert_eq!(retry_after_s(&refused), 20);
    // Without a token too: the IP's bucket is checked before anything else.
    assert_error_code(
        &h.send(Req::post("/v1/appointments/ap-0-1/confirm")).await,
        429,
        "RATE_LIMITED",
    );
    // X-Forwarded-For is not believed.
    let forwarded = h
        .client
        .post(h.url("/v1/appointments/ap-0-1/confirm"))
        .header("authorization", format!("Bearer {}", citizen(&h, "e")))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status().as_u16(), 429);
    // Reads from the same IP are not limited.
    for _ in 0..10 {
        assert_eq!(h.send(Req::get("/v1/clinics")).await.status, 200);
    }
    // Another IP has its own bucket.
    let elsewhere = client_from(&h, "127.0.0.2");
    assert_error_code(
        &confirm_nothing(&elsewhere, &citizen(&h, "a")).await,
        404,
        "NOT_FOUND",
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_keys_stays_within_the_bound_and_a_real_caller_is_served() {
    let clock = clock();
    const KEYS: usize = 8;
    let h = server(&clock, limits(Some("1/m"), Some("1000/s"), KEYS)).await;
    let real = citizen(&h, "real");
    assert_error_code(&confirm_nothing(&h, &real).await, 404, "NOT_FOUND");
    assert_error_code(&confirm_nothing(&h, &real).await, 429, "RATE_LIMITED");
    // A flood of 200 distinct callers, each served once: none is refused, the table keeps
    // at most KEYS of them.
    for n in 0..200 {
        let flood = token(Role::Citizen, &format!("flood-{n}"), Some("x"), None);
        assert_error_code(&confirm_nothing(&h, &flood).await, 404, "NOT_FOUND");
    }
    // And from 12 distinct IPs.
    for n in 2..14 {
        let from = client_from(&h, &format!("127.0.0.{n}"));
        let who = citizen(&h, &format!("ip-flood-{n}"));
        assert_error_code(&confirm_nothing(&from, &who).await, 404, "NOT_FOUND");
    }
    let text = scrape(&h).await;
    assert!(sample(&text, "holdfast_rate_limit_keys{limiter=\"caller\"}") <= KEYS as f64);
    assert!(sample(&text, "holdfast_rate_limit_keys{limiter=\"ip\"}") <= KEYS as f64);
    // The real caller's key was the idle one: forgotten, it is served with a fresh bucket.
    assert_error_code(&confirm_nothing(&h, &real).await, 404, "NOT_FOUND");
    h.shutdown().await;
}

// ---- the waiting room -------------------------------------------------------------------

async fn join(api: &Api, token: &str) -> Value {
    api.send(Req::post("/v1/queue").token(token))
        .await
        .expect(201)
}

async fn poll(api: &Api, token: &str, ticket: &Value) -> Resp {
    let ticket = ticket["ticket"].as_str().unwrap();
    api.send(Req::get(format!("/v1/queue/{ticket}")).token(token))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_first_come_first_served_and_asking_again_keeps_the_place() {
    let clock = clock();
    let h = server(&clock, room(1, 600_000)).await;
    let tokens: Vec<String> = (0..4).map(|i| citizen(&h, &format!("q{i}"))).collect();
    let mut tickets = Vec::new();
    for t in &tokens {
        tickets.push(join(&h, t).await);
    }
    // One admission a second, a burst of one: the first is in, the rest wait in order.
    let positions: Vec<u64> = tickets
        .iter()
        .map(|t| t["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1, 2, 3]);
    assert_eq!(tickets[0]["admitted"], true);
    assert!(tickets[0]["admission_token"].is_string());
    assert_eq!(tickets[3]["estimated_wait_s"], 3);
    assert_eq!(tickets[3]["admission_token"], Value::Null);
    // Asking again answers the same ticket, at the same place.
    let again = join(&h, &tokens[2]).await;
    assert_eq!(again["ticket"], tickets[2]["ticket"]);
    assert_eq!(again["position"], 2);
    clock.advance(1_000);
    let first_waiting = poll(&h, &tokens[1], &tickets[1]).await.expect(200);
    assert_eq!(first_waiting["admitted"], true);
    assert_eq!(first_waiting["position"], 0);
    let last = poll(&h, &tokens[3], &tickets[3]).await.expect(200);
    assert_eq!(last["position"], 2);
    assert_eq!(last["estimated_wait_s"], 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_their_callers_and_only_citizens_queue() {
    let clock = clock();
    let h = server(&clock, room(1, 600_000)).await;
    let ann = citizen(&h, "ann");
    let ticket = join(&h, &ann).await;
    assert_error_code(
        &poll(&h, &citizen(&h, "bob"), &ticket).await,
        403,
        "FORBIDDEN",
    );
    let unknown = h
        .send(Req::get("/v1/queue/0000000000000000").token(&ann))
        .await;
    assert_error_code(&unknown, 404, "NOT_FOUND");
    let bad = h
        .send(Req::get("/v1/queue/not%20a%20ticket").token(&ann))
        .await;
    assert_error_code(&bad, 400, "BAD_REQUEST");
    assert_error_code(
        &h.send(Req::post("/v1/queue")).await,
        401,
        "UNAUTHENTICATED",
    );
    let staff = h.staff_token("c-1");
    assert_error_code(
        &h.send(Req::post("/v1/queue").token(&staff)).await,
        403,
        "FORBIDDEN",
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_404_while_the_waiting_room_is_off() {
    let h = Harness::start().await;
    let ann = h.citizen_token("ann");
    let r = h.send(Req::post("/v1/queue").token(&ann)).await;
    assert_error_code(&r, 404, "NOT_FOUND");
    h.shutdown().await;
}

/// A campaign of one clinic and two slots, and adult citizens.
async fn campaign(h: &Harness, citizens: &[&str]) {
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 20).await;
    h.put_slot("c-1", "s-2", 10, &[VACCINE]).await;
    for c in citizens {
        h.put_adult(c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_needs_an_admission_token_of_the_caller() {
    let clock = clock();
    let h = server(&clock, room(5, 60_000)).await;
    campaign(&h, &["ann", "bob"]).await;
    let (ann, bob) = (citizen(&h, "ann"), citizen(&h, "bob"));
    let body = booking_body("ann", "c-1", "s-1", VACCINE);
    // Without a token: 429 with the way to the queue.
    let r = book_admitted(&h, &ann, "k-a", &body, None).await;
    let details = assert_error_code(&r, 429, "QUEUE_REQUIRED");
    assert_eq!(details["reason"], "missing");
    assert_eq!(details["queue"], "/v1/queue");
    assert!(retry_after_s(&r) >= 1);
    let ann_token = join(&h, &ann).await["admission_token"]
        .as_str()
        .unwrap()
        .to_string();
    let bob_token = join(&h, &bob).await["admission_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Forged, altered, another caller's: refused.
    let altered = format!("{}x", ann_token);
    let forged = {
        let (ticket, rest) = ann_token.split_once('.').unwrap();
        format!(
            "{}{}.{rest}",
            &ticket[..15],
            if ticket.ends_with('0') { '1' } else { '0' }
        )
    };
    for (bad, reason) in [
        (altered.as_str(), "invalid"),
        (forged.as_str(), "invalid"),
        (bob_token.as_str(), "invalid"),
        ("garbage", "invalid"),
    ] {
        let r = book_admitted(&h, &ann, "k-a", &body, Some(bad)).await;
        assert_eq!(
            assert_error_code(&r, 429, "QUEUE_REQUIRED")["reason"],
            reason,
            "{bad}"
        );
    }
    // The caller's own token books, under the key that was refused before (429s are not
    // stored).
    let booked = book_admitted(&h, &ann, "k-a", &body, Some(&ann_token))
        .await
        .expect(201);
    let id = booked["appointment_id"].as_str().unwrap();
    // An authority books for citizens without queueing.
    h.put_adult("cat").await;
    let by_authority = booking_body("cat", "c-1", "s-1", VACCINE);
    h.book_with(&h.authority, "k-auth", &by_authority)
        .await
        .expect(201);
    // A replay of the booking with its key and token answers the same appointment.
    let replay = book_admitted(&h, &ann, "k-a", &body, Some(&ann_token))
        .await
        .expect(201);
    assert_eq!(replay["appointment_id"], id);
    let text = scrape(&h).await;
    assert_eq!(
        sample(
            &text,
            "holdfast_rate_limited_total{code=\"QUEUE_REQUIRED\"}"
        ),
        5.0
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_books_one_appointment_only() {
    let clock = clock();
    let h = server(&clock, room(5, 60_000)).await;
    campaign(&h, &["ann"]).await;
    let ann = citizen(&h, "ann");
    let token = join(&h, &ann).await["admission_token"]
        .as_str()
        .unwrap()
        .to_string();
    let first = booking_body("ann", "c-1", "s-1", VACCINE);
    let id = book_admitted(&h, &ann, "k-1", &first, Some(&token))
        .await
        .expect(201)["appointment_id"]
        .as_str()
        .unwrap()
        .to_string();
    h.cancel(&ann, &id).await.expect(200);
    // Free to book again as far as the shards are concerned, but the token is used up.
    let second = booking_body("ann", "c-1", "s-2", VACCINE);
    let r = book_admitted(&h, &ann, "k-2", &second, Some(&token)).await;
    assert_eq!(
        assert_error_code(&r, 429, "QUEUE_REQUIRED")["reason"],
        "used"
    );
    // Queueing again gives a new ticket, whose token books.
    let again = join(&h, &ann).await;
    let fresh = again["admission_token"].as_str().unwrap();
    assert_ne!(fresh, token);
    book_admitted(&h, &ann, "k-2", &second, Some(fresh))
        .await
        .expect(201);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_booking_leaves_the_token_good_and_an_expired_one_is_refused() {
    let clock = clock();
    let h = server(&clock, room(5, 60_000)).await;
    campaign(&h, &["ann"]).await;
    h.put_slot("c-1", "s-full", 1, &[VACCINE]).await;
    h.put_adult("zed").await;
    h.book_with(
        &h.authority,
        "k-zed",
        &booking_body("zed", "c-1", "s-full", VACCINE),
    )
    .await
    .expect(201);
    let ann = citizen(&h, "ann");
    let ticket = join(&h, &ann).await;
    let token = ticket["admission_token"].as_str().unwrap().to_string();
    let full = booking_body("ann", "c-1", "s-full", VACCINE);
    let r = book_admitted(&h, &ann, "k-1", &full, Some(&token)).await;
    assert_error_code(&r, 409, "SOLD_OUT");
    let ok = booking_body("ann", "c-1", "s-1", VACCINE);
    let booked = book_admitted(&h, &ann, "k-2", &ok, Some(&token))
        .await
        .expect(201);
    h.cancel(&ann, booked["appointment_id"].as_str().unwrap())
        .await
        .expect(200);
    // A new admission, then its time runs out.
    let again = join(&h, &ann).await;
    let later = again["admission_token"].as_str().unwrap().to_string();
    clock.advance(60_000);
    let r = book_admitted(&h, &ann, "k-3", &ok, Some(&later)).await;
    assert_eq!(
        assert_error_code(&r, 429, "QUEUE_REQUIRED")["reason"],
        "expired"
    );
    // Its ticket has left the room.
    assert_error_code(&poll(&h, &ann, &again).await, 404, "NOT_FOUND");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_and_tokens_do_not_outlive_their_server() {
    let clock = clock();
    let first = server(&clock, room(5, 60_000)).await;
    let ann = citizen(&first, "ann");
    let ticket = join(&first, &ann).await;
    let token = ticket["admission_token"].as_str().unwrap().to_string();
    first.shutdown().await;
    // The next server (a restart) has an empty room and a key of its own.
    let second = server(&clock, room(5, 60_000)).await;
    campaign(&second, &["ann"]).await;
    assert_error_code(&poll(&second, &ann, &ticket).await, 404, "NOT_FOUND");
    let body = booking_body("ann", "c-1", "s-1", VACCINE);
    let r = book_admitted(&second, &ann, "k-1", &body, Some(&token)).await;
    assert_eq!(
        assert_error_code(&r, 429, "QUEUE_REQUIRED")["reason"],
        "invalid"
    );
    second.shutdown().await;
}

// ---- the contract -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_has_the_queue_and_every_429() {
    let h = Harness::start().await;
    let doc = h.send(Req::get("/openapi.json")).await.expect(200);
    let statuses = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("no {method} {path}"))
            .keys()
            .cloned()
            .collect()
    };
    for (method, path, expected) in [
        (
            "post",
            "/v1/queue",
            &["201", "401", "403", "404", "413", "429", "503"][..],
        ),
        (
            "get",
            "/v1/queue/{ticket}",
            // 503: the node's bound on requests in flight covers reads too.
            &["200", "400", "401", "403", "404", "503"],
        ),
    ] {
        assert_eq!(statuses(method, path), expected, "{method} {path}");
    }
    for (method, path) in [
        ("post", "/v1/appointments"),
        ("post", "/v1/appointments/{id}/confirm"),
        ("post", "/v1/appointments/{id}/cancel"),
        ("post", "/v1/appointments/{id}/reschedule"),
        ("post", "/v1/clinics/{clinic_id}/slots/{slot_id}/waitlist"),
        ("delete", "/v1/waitlist/{waitlist_id}"),
    ] {
        assert!(
            statuses(method, path).contains(&"429".to_string()),
            "{method} {path}"
        );
    }
    let create = &doc["paths"]["/v1/appointments"]["post"];
    let headers: Vec<&str> = create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(headers.contains(&"Admission-Token"), "{headers:?}");
    h.shutdown().await;
}
