//! Idempotency records survive restarts through the write-ahead log and snapshots, and are
//! dropped after the 24 h retention (driven by a controllable clock).

use std::path::Path;
use std::sync::Arc;

use holdfast_engine::{ManualClock, NodeConfig};
use holdfast_gateway::app::Settings;
use holdfast_gateway::auth::{Claims, JwtKey, Role};
use holdfast_persistence::{Durability, WalConfig};
use holdfast_server::{start, RunningServer, ServerConfig, Storage};
use serde_json::{json, Value};

const SECRET: &[u8] = b"durable-idempotency";
const DAY_MS: i64 = 24 * 3600 * 1000;

async fn server(dir: &Path, clock: Arc<ManualClock>) -> RunningServer {
    start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        node: NodeConfig::embedded(4),
        jwt_secret: SECRET.to_vec(),
        settings: Settings {
            hold_ttl_ms: 300_000,
            max_hold_ms: 900_000,
        },
        clock,
        storage: Storage::Wal {
            dir: dir.to_path_buf(),
            config: WalConfig::new(Durability::Sync),
        },
    })
    .await
    .expect("the server starts")
}

fn token(role: Role, sub: &str, citizen: Option<&str>) -> String {
    let exp = chrono::Utc::now().timestamp() + 3600;
    JwtKey::from_secret_file_bytes(SECRET)
        .unwrap()
        .sign(&Claims {
            sub: sub.into(),
            role,
            exp,
            citizen_id: citizen.map(Into::into),
            clinic_id: None,
        })
}

async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_survive_restarts_and_expire_after_the_retention() {
    let dir = std::env::temp_dir().join(format!(
        "holdfast-idem-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    ));
    let clock = Arc::new(ManualClock::new(chrono::Utc::now().timestamp_millis()));
    let client = reqwest::Client::new();
    let authority = format!("Bearer {}", token(Role::Authority, "authority", None));
    let citizen = format!("Bearer {}", token(Role::Citizen, "citizen:p1", Some("p1")));

    let s = server(&dir, clock.clone()).await;
    let base = format!("http://{}", s.addr);
    let start_at = chrono::Utc::now() + chrono::Duration::days(30);
    for (path, body) in [
        (
            "/v1/vaccines/vx",
            json!({"series_doses": 2, "min_interval_days": 0}),
        ),
        (
            "/v1/clinics/k1",
            json!({"name": "k", "region": "r", "timezone": "UTC"}),
        ),
        (
            "/v1/clinics/k1/slots/s1",
            json!({"start": start_at.to_rfc3339(), "end": (start_at + chrono::Duration::minutes(15)).to_rfc3339(), "capacity": 10, "vaccines": ["vx"]}),
        ),
        (
            "/v1/citizens/p1",
            json!({"birth_date": "1980-01-01", "region": "r", "insurance_id": "I"}),
        ),
    ] {
        assert_eq!(
            send(
                client
                    .put(format!("{base}{path}"))
                    .header("authorization", &authority)
                    .json(&body)
            )
            .await
            .0,
            200,
            "{path}"
        );
    }
    let stock = json!({"vaccine": "vx", "batch": "B", "quantity": 10, "expires_on": "2030-01-01"});
    assert_eq!(
        send(
            client
                .post(format!("{base}/v1/clinics/k1/stock"))
                .header("authorization", &authority)
                .json(&stock)
        )
        .await
        .0,
        200
    );

    let body = json!({"clinic_id": "k1", "slot_id": "s1", "vaccine": "vx", "citizen_id": "p1"});
    let other = json!({"clinic_id": "k1", "slot_id": "s1", "vaccine": "vx", "citizen_id": "p1", "hold_seconds": 60});
    let create = |base: &str, body: &Value| {
        client
            .post(format!("{base}/v1/appointments"))
            .header("authorization", &citizen)
            .header("idempotency-key", "K1")
            .json(body)
    };
    let first = send(create(&base, &body)).await;
    assert_eq!(first.0, 201, "{}", first.1);
    s.shutdown().await;

    // After a restart (recovery from the snapshots taken at shutdown) the key still replays.
    let s = server(&dir, clock.clone()).await;
    let base = format!("http://{}", s.addr);
    assert_eq!(send(create(&base, &body)).await, first);
    assert_eq!(send(create(&base, &other)).await.0, 422);
    s.shutdown().await;

    // A day and a bit later the record is gone: the same key with another body is a new request.
    clock.advance(DAY_MS + 60_000);
    let s = server(&dir, clock.clone()).await;
    let base = format!("http://{}", s.addr);
    let again = send(create(&base, &other)).await;
    assert_eq!(again.0, 201, "{}", again.1);
    assert_ne!(again.1, first.1);
    s.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
