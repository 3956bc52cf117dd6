//! The node-wide bound on requests in flight (gateway/src/overload.rs, docs/API.md "When is a
//! 503 UNAVAILABLE sent?"): with a write bound of one, a booking that holds the only permit
//! (its external eligibility check hangs until the test lets it go) makes every other write
//! a quick `503 UNAVAILABLE` with `Retry-After` and `details.reason: "overloaded"`, while
//! reads, probes and operators are still answered; the admitted booking is answered
//! correctly once its check answers; the refused creates decided nothing (the same keys book
//! afterwards, once each), and afterwards the server serves normally with its counters
//! intact.
//!
//! No timing is asserted: the permit is held by a request the test itself keeps waiting, so
//! the refusals do not depend on how fast anything runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use holdfast_engine::external::OutagePolicy;
use holdfast_engine::NodeConfig;
use holdfast_gateway::overload::{OverloadLimits, RETRY_AFTER_S};
use holdfast_server::{ExternalConfig, ServerConfig, Storage};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::common::*;

/// Bookings refused while the permit is held.
const REFUSED: usize = 8;
/// Seats (and doses) of the slot: more than every booking of the test.
const CAPACITY: u32 = 20;
/// Longest the test waits for anything it waits on (a bound, not a timing assertion).
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// An eligibility checker that answers nobody until released, counting its calls.
struct GateChecker {
    url: String,
    calls: Arc<AtomicU64>,
    release: watch::Sender<bool>,
}

async fn gate(
    State((calls, open)): State<(Arc<AtomicU64>, watch::Receiver<bool>)>,
    Json(_body): Json<Value>,
) -> Json<Value> {
    calls.fetch_add(1, Ordering::SeqCst);
    let mut open = open;
    let _ = open.wait_for(|open| *open).await;
    Json(json!({"eligible": true}))
}

impl GateChecker {
    async fn start() -> GateChecker {
        let (release, open) = watch::channel(false);
        let calls = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route("/check", post(gate))
            .with_state((calls.clone(), open));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the checker binds");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GateChecker {
            url: format!("http://{addr}/check"),
            calls,
            release,
        }
    }

    /// Waits until the checker has been called `n` times (bounded).
    async fn wait_for_calls(&self, n: u64) {
        let waited = tokio::time::timeout(WAIT_LIMIT, async {
            while self.calls.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "the checker was not called {n} time(s)");
    }
}

async fn server(checker: &GateChecker) -> Harness {
    let mut config = test_config(
        NodeConfig::embedded(4),
        HOLD_TTL_MS,
        MAX_HOLD_MS,
        Storage::Memory,
    );
    config.settings.overload = OverloadLimits {
        writes_in_flight_max: 1,
        in_flight_wait_ms: 20,
    };
    Harness::start_config(ServerConfig {
        external: Some(ExternalConfig {
            url: checker.url.clone(),
            // Far longer than the test keeps the check waiting.
            timeout: Duration::from_secs(60),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            outage_policy: OutagePolicy::Reject,
        }),
        ..config
    })
    .await
}

fn assert_overloaded(r: &Resp) {
    let details = assert_error_code(r, 503, "UNAVAILABLE");
    assert_eq!(details["reason"], "overloaded", "{details}");
    assert_eq!(details["in_flight_max"], 1, "{details}");
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some(RETRY_AFTER_S.to_string().as_str()),
        "{:?}",
        r.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_the_bound_are_refused_with_503_and_the_admitted_one_is_served() {
    let checker = GateChecker::start().await;
    let h = server(&checker).await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", CAPACITY, i64::from(CAPACITY))
        .await;
    for i in 0..=REFUSED {
        h.put_adult(&format!("p-{i}")).await;
    }

    // p-0's booking takes the only write permit and waits on its eligibility check.
    let first = {
        let api = h.api.clone();
        tokio::spawn(async move { api.book("p-0", "c-1", "s-1").await })
    };
    checker.wait_for_calls(1).await;

    // Every other write is refused, quickly and in the error shape, whatever it is.
    let keys: Vec<String> = (1..=REFUSED)
        .map(|i| fresh_key(&format!("p-{i}")))
        .collect();
    let mut refused = tokio::task::JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        let (api, key) = (h.api.clone(), key.clone());
        let citizen = format!("p-{}", i + 1);
        refused.spawn(async move {
            let token = api.citizen_token(&citizen);
            api.book_with(&token, &key, &booking_body(&citizen, "c-1", "s-1", VACCINE))
                .await
        });
    }
    while let Some(answer) = refused.join_next().await {
        assert_overloaded(&answer.expect("the request task"));
    }
    assert_overloaded(
        &h.send(
            Req::put("/v1/clinics/c-2")
                .token(&h.authority)
                .json(&json!({"name": "C2", "region": REGION, "timezone": "Europe/Berlin"})),
        )
        .await,
    );
    // Reads have their own pool; probes and operators are not bounded.
    let avail = h.availability("c-1").await;
    assert_eq!(avail["slots"][0]["pending"], 1, "{avail}");
    h.send(Req::get("/readyz")).await.expect(200);
    h.send(Req::get("/v1/admin/shards").token(&h.operator))
        .await
        .expect(200);

    // Once its check answers, the admitted booking is answered like any other.
    checker.release.send_replace(true);
    let first = tokio::time::timeout(WAIT_LIMIT, first)
        .await
        .expect("the admitted booking is answered")
        .expect("the request task");
    let first = first.expect(201);
    assert_eq!(first["status"], "PENDING", "{first}");
    assert_eq!(first["citizen_id"], "p-0", "{first}");

    // After the burst: normal service. The refused creates decided nothing, so their keys
    // book now, once each.
    for (i, key) in keys.iter().enumerate() {
        let citizen = format!("p-{}", i + 1);
        let token = h.citizen_token(&citizen);
        let body = booking_body(&citizen, "c-1", "s-1", VACCINE);
        let booked = h.book_with(&token, key, &body).await.expect(201);
        let again = h.book_with(&token, key, &body).await.expect(201);
        assert_eq!(booked["appointment_id"], again["appointment_id"]);
    }
    let avail = h.availability("c-1").await;
    assert_eq!(avail["slots"][0]["pending"], 1 + REFUSED as u64, "{avail}");
    assert_eq!(
        avail["slots"][0]["remaining"],
        u64::from(CAPACITY) - 1 - REFUSED as u64,
        "{avail}"
    );
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_the_overload_answer_on_bounded_operations_only() {
    let h = Harness::start().await;
    let doc = h.send(Req::get("/openapi.json")).await.expect(200);
    let create = &doc["paths"]["/v1/appointments"]["post"]["responses"];
    assert!(create["503"].is_object(), "{create}");
    let availability = &doc["paths"]["/v1/clinics/{clinic_id}/availability"]["get"]["responses"];
    assert!(availability["503"].is_object(), "{availability}");
    let health = &doc["paths"]["/healthz"]["get"]["responses"];
    assert!(health.get("503").is_none(), "{health}");
    h.shutdown().await;
}
