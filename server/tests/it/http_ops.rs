//! Operator endpoints over HTTP: `/v1/admin/shards`, `/healthz`, `/readyz`.

use std::collections::BTreeSet;

use holdfast_engine::NodeConfig;

use crate::common::*;

/// Every field docs/API.md lists for one shard of `/v1/admin/shards`.
const SHARD_FIELDS: [&str; 14] = [
    "shard",
    "node",
    "status",
    "clinics",
    "slots",
    "pending",
    "confirmed",
    "administered",
    "timers",
    "next_expiry",
    "mailbox",
    "wal_seq",
    "snapshot_seq",
    "last_snapshot_at",
];

async fn shards(h: &Harness) -> serde_json::Value {
    h.send(Req::get("/v1/admin/shards").token(&h.operator))
        .await
        .expect(200)
}

fn sum(answer: &serde_json::Value, field: &str) -> u64 {
    answer["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field} is not a count in {s}"))
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_counts_add_up_to_the_appointments() {
    let h = Harness::start().await;
    assert_eq!(h.configured_shards(), SHARDS);
    let empty = shards(&h).await;
    let list = empty["shards"].as_array().unwrap();
    assert_eq!(list.len(), SHARDS as usize, "{empty}");
    let numbers: BTreeSet<u64> = list.iter().map(|s| s["shard"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (0..u64::from(SHARDS)).collect());
    assert_eq!(empty["ring"]["shards"], SHARDS);
    assert!(empty["node"].is_string(), "{empty}");
    for s in list {
        for field in SHARD_FIELDS {
            assert!(s.get(field).is_some(), "{field} missing in {s}");
        }
        assert_eq!(s["status"], "ready", "{s}");
        assert!(s["node"].is_string(), "{s}");
        assert!(s["mailbox"].is_u64(), "{s}");
    }
    assert_eq!((sum(&empty, "pending"), sum(&empty, "confirmed")), (0, 0));

    // Bookings over several clinics (so over several shards).
    h.standard_vaccine(VACCINE).await;
    let clinics: Vec<String> = (0..6).map(|i| format!("clinic-{i}")).collect();
    for c in &clinics {
        h.clinic_with_slot(c, "s-1", 10, 10).await;
    }
    let mut pending = 0;
    let mut confirmed = 0;
    for i in 0..18 {
        let citizen = format!("cit-{i}");
        h.put_adult(&citizen).await;
        let id = h
            .book_ok(&citizen, &clinics[i % clinics.len()], "s-1")
            .await;
        let token = h.citizen_token(&citizen);
        match i % 3 {
            0 => pending += 1,
            1 => {
                h.confirm(&token, &id).await.expect(200);
                confirmed += 1;
            }
            _ => {
                h.cancel(&token, &id).await.expect(200);
            }
        }
    }
    // One that is not eligible leaves nothing behind.
    let r = h.book("ghost", &clinics[0], "s-1").await;
    assert_error_code(&r, 422, "NOT_ELIGIBLE");

    let answer = shards(&h).await;
    assert_eq!(sum(&answer, "pending"), pending);
    assert_eq!(sum(&answer, "confirmed"), confirmed);
    assert_eq!(sum(&answer, "administered"), 0);
    assert_eq!(sum(&answer, "clinics"), clinics.len() as u64);
    assert_eq!(sum(&answer, "slots"), clinics.len() as u64);

    // And they match what the listings say.
    let mut listed_pending = 0;
    let mut listed_confirmed = 0;
    for c in &clinics {
        listed_pending += h.clinic_appointments(c, "?status=PENDING").await.len() as u64;
        listed_confirmed += h.clinic_appointments(c, "?status=CONFIRMED").await.len() as u64;
    }
    assert_eq!((listed_pending, listed_confirmed), (pending, confirmed));
    // A shard with a pending hold shows its next expiry.
    let with_pending: Vec<_> = answer["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pending"].as_u64() > Some(0))
        .collect();
    assert!(!with_pending.is_empty());
    for s in with_pending {
        parse_time(&s["next_expiry"]);
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_count_is_the_configured_one() {
    let h = Harness::start_with(3, HOLD_TTL_MS, MAX_HOLD_MS).await;
    let answer = shards(&h).await;
    assert_eq!(answer["shards"].as_array().unwrap().len(), 3);
    assert_eq!(answer["ring"]["shards"], 3);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let h = Harness::start().await;
    let health = h.send(Req::get("/healthz")).await;
    assert_eq!(health.status, 200);
    assert!(health.content_type.starts_with("application/json"));
    let ready = h.send(Req::get("/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_shard_answers_503_with_retry_after() {
    // A bound of zero requests in flight: every shard refuses everything.
    let node = NodeConfig {
        inflight_per_shard_max: 0,
        ..NodeConfig::embedded(SHARDS)
    };
    let h = Harness::start_node(node, HOLD_TTL_MS, MAX_HOLD_MS).await;
    for r in [
        h.send(Req::get("/v1/clinics/c-1/availability")).await,
        h.send(Req::get("/v1/clinics")).await,
        h.send(
            Req::put("/v1/clinics/c-1")
                .token(&h.authority)
                .json(&clinic_body()),
        )
        .await,
        h.book_with(
            &h.citizen_token("ann"),
            "k",
            &booking_body("ann", "c-1", "s-1", VACCINE),
        )
        .await,
    ] {
        assert_error_code(&r, 503, "UNAVAILABLE");
        let retry_after = r
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Retry-After on {}", r.text));
        let seconds: u64 = retry_after
            .parse()
            .unwrap_or_else(|_| panic!("Retry-After {retry_after:?} is not whole seconds"));
        assert!(seconds >= 1, "{seconds}");
    }
    // Liveness does not depend on the shards.
    h.healthz().await;
    h.shutdown().await;
}
