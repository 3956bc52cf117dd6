//! Idempotency records survive restarts through the write-ahead log and snapshots, and are
//! dropped after the 24 h retention (driven by a controllable clock).

use std::path::Path;
use std::sync::Arc;

use holdfast_engine::{ManualClock, NodeConfig};
use holdfast_persistence::{Durability, WalConfig};
use holdfast_server::ServerConfig;
use serde_json::{json, Value};

use crate::common::*;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A server on the write-ahead log in `dir` whose time is `clock`.
async fn server(dir: &Path, clock: Arc<ManualClock>) -> Harness {
    Harness::start_config(ServerConfig {
        clock,
        ..test_config(
            NodeConfig::embedded(4),
            HOLD_TTL_MS,
            MAX_HOLD_MS,
            wal_storage(dir, WalConfig::new(Durability::Sync)),
        )
    })
    .await
}

/// Stored answers on the write-ahead log's shelf (its `answers` tree), read with the server
/// stopped.
fn shelved_answers(dir: &Path) -> usize {
    let config = sled::Config::new().path(dir.join(holdfast_persistence::WAL_SUBDIR));
    let db = holdfast_persistence::open_sled(&config).expect("the log opens offline");
    let count = db.open_tree("answers").expect("the shelf").len();
    drop(db);
    count
}

/// Books `body` as citizen `p1` with Idempotency-Key `K1`: (status, body text).
async fn create(h: &Harness, body: &Value) -> (u16, String) {
    let r = h.book_with(&h.citizen_token("p1"), "K1", body).await;
    (r.status, r.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_survive_restarts_and_expire_after_the_retention() {
    let dir = temp_dir("idem");
    let clock = Arc::new(ManualClock::new(chrono::Utc::now().timestamp_millis()));

    let h = server(&dir, clock.clone()).await;
    // A slot a month ahead: still ahead when the clock has moved on by a day.
    let start_at = chrono::Utc::now() + chrono::Duration::days(30);
    let end_at = start_at + chrono::Duration::minutes(15);
    h.standard_vaccine(VACCINE).await;
    h.put_clinic("k1").await;
    h.put_slot_raw(
        "k1",
        "s1",
        &slot_body(
            start_at.to_rfc3339(),
            end_at.to_rfc3339(),
            10,
            &[VACCINE],
            0,
        ),
    )
    .await
    .expect(200);
    h.put_adult("p1").await;
    h.receive_stock("k1", VACCINE, "B", 10).await;

    let body = booking_body("p1", "k1", "s1", VACCINE);
    let mut other = body.clone();
    other["hold_seconds"] = json!(60);
    let first = create(&h, &body).await;
    assert_eq!(first.0, 201, "{}", first.1);
    h.shutdown().await;
    // The answers are on the log's shelf, not in the snapshots taken at shutdown.
    let shelved = shelved_answers(&dir);
    assert!(shelved >= 1, "{shelved} answers shelved");

    // After a restart (recovery from the snapshots taken at shutdown) the key still replays.
    let h = server(&dir, clock.clone()).await;
    assert_eq!(create(&h, &body).await, first);
    assert_eq!(create(&h, &other).await.0, 422);
    h.shutdown().await;

    // A day and a bit later the record is gone: the same key with another body is a new request.
    clock.advance(DAY_MS + 60_000);
    let h = server(&dir, clock.clone()).await;
    let again = create(&h, &other).await;
    assert_eq!(again.0, 201, "{}", again.1);
    assert_ne!(again.1, first.1);
    h.shutdown().await;
    // The shelf forgot the expired answers with their records: only the new one is left.
    assert_eq!(shelved_answers(&dir), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
