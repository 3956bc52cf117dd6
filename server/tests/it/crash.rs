//! Process-level crash test: the real `holdfast` binary on a temporary data directory, driven
//! by concurrent bookings, confirms and cancels, killed with SIGKILL at random moments and
//! restarted on the same directory. After every restart: every change a client saw
//! acknowledged is there (statuses only moved forward from it), the slot and stock counters
//! agree with the appointments, nothing is oversold, and an Idempotency-Key replay returns the
//! original answer byte for byte.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_gateway::auth::Role;
use serde_json::{json, Value};

use crate::common::*;
use crate::spawned::{self, Spawned as Server};

const KILLS: usize = 3;
const CLIENTS: usize = 24;
/// Citizens booking in each round (each books once), so every round drives load.
const CITIZENS_PER_ROUND: usize = 300;
const CITIZENS: usize = CITIZENS_PER_ROUND * KILLS;
const CAPACITY: u32 = 200;

/// Starts the binary on `dir` (see [`spawned::start`]).
async fn start(dir: &Path, secret: &Path) -> Server {
    spawned::start(dir, secret, &dir.with_extension("addr"), "crash", None).await
}

/// What clients saw acknowledged, per appointment: the last status and the create's key and
/// answer (for the replay check).
#[derive(Default)]
struct Acked {
    status: HashMap<String, String>,
    creates: Vec<(String, Value, String)>, // (key, body, answer)
}

fn allowed_after(acked: &str, now: &str) -> bool {
    match acked {
        "PENDING" => ["PENDING", "CONFIRMED", "RELEASED", "CANCELLED", "EXPIRED"].contains(&now),
        "CONFIRMED" => ["CONFIRMED", "CANCELLED"].contains(&now),
        other => other == now,
    }
}

/// The campaign: three clinics `k0`..`k2`, each with two slots `s0`, `s1` of [`CAPACITY`]
/// seats the day after tomorrow and 1,000 doses, and [`CITIZENS`] adults `p0`, `p1`, ...
async fn set_up(api: &Api) {
    api.standard_vaccine(VACCINE).await;
    let start = chrono::Utc::now() + chrono::Duration::days(2);
    for c in 0..3 {
        let clinic = format!("k{c}");
        api.put_clinic(&clinic).await;
        let slots: Vec<Value> = (0..2)
            .map(|s| {
                let t = start + chrono::Duration::minutes(15 * s);
                let end = t + chrono::Duration::minutes(15);
                let mut slot = slot_body(t.to_rfc3339(), end.to_rfc3339(), CAPACITY, &[VACCINE], 0);
                slot["slot_id"] = json!(format!("s{s}"));
                slot
            })
            .collect();
        api.send(
            Req::post(format!("/v1/clinics/{clinic}/slots"))
                .token(&api.authority)
                .json(&json!({"slots": slots})),
        )
        .await
        .expect(200);
        api.receive_stock(&clinic, VACCINE, "B", 1000).await;
    }
    for i in 0..CITIZENS {
        api.put_adult(&format!("p{i}")).await;
    }
}

/// One client: books, then confirms, cancels or leaves the hold, until the server dies.
async fn client_loop(
    api: Api,
    acked: Arc<Mutex<Acked>>,
    worker: usize,
    round: usize,
    next: Arc<Mutex<usize>>,
) {
    let mut rng = (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round as u64;
    loop {
        let i = {
            let mut n = next.lock().unwrap();
            if *n >= CITIZENS_PER_ROUND * (round + 1) {
                return;
            }
            *n += 1;
            *n - 1
        };
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let citizen = format!("p{i}");
        let token = api.citizen_token(&citizen);
        let body = booking_body(
            &citizen,
            &format!("k{}", rng % 3),
            &format!("s{}", (rng >> 8) % 2),
            VACCINE,
        );
        let key = format!("r{round}-c{i}");
        let req = Req::post("/v1/appointments")
            .token(&token)
            .idem(&key)
            .json(&body);
        // A transport failure is expected here: the server is killed under load.
        let answer = match api.try_send(req).await {
            Ok(r) if r.status == 201 => r.text,
            _ => {
                if api.try_send(Req::get("/healthz")).await.is_err() {
                    return; // the server is gone
                }
                continue;
            }
        };
        let created: Value = serde_json::from_str(&answer).unwrap();
        let id = created["appointment_id"].as_str().unwrap().to_string();
        {
            let mut a = acked.lock().unwrap();
            a.status.insert(id.clone(), "PENDING".into());
            a.creates.push((key, body, answer));
        }
        let action = match (rng >> 16) % 3 {
            0 => "confirm",
            1 => "cancel",
            _ => continue,
        };
        let req = Req::post(format!("/v1/appointments/{id}/{action}")).token(&token);
        if let Ok(r) = api.try_send(req).await {
            if r.status == 200 {
                let v: Value = serde_json::from_str(&r.text).unwrap();
                acked
                    .lock()
                    .unwrap()
                    .status
                    .insert(id, v["status"].as_str().unwrap().to_string());
            }
        }
    }
}

async fn verify(api: &Api, acked: &Acked) {
    // Every acknowledged change is there, and statuses only moved forward from it.
    let mut by_id: HashMap<String, Value> = HashMap::new();
    let mut total_seen = 0;
    for c in 0..3 {
        let clinic = format!("k{c}");
        let list = api.clinic_appointments(&clinic, "").await;
        for a in &list {
            by_id.insert(a["appointment_id"].as_str().unwrap().to_string(), a.clone());
            total_seen += 1;
        }
        // Counters agree with the appointments; nothing oversold.
        let availability = api.availability(&clinic).await;
        let active = list
            .iter()
            .filter(|a| ["PENDING", "CONFIRMED"].contains(&a["status"].as_str().unwrap()))
            .count();
        assert_eq!(
            stock(&availability, VACCINE).1,
            active as i64,
            "clinic k{c}: reserved vs appointments"
        );
        for slot in availability["slots"].as_array().unwrap() {
            let sum: u64 = [
                "remaining",
                "pending",
                "confirmed",
                "administered",
                "no_show",
            ]
            .iter()
            .map(|f| slot[*f].as_u64().unwrap())
            .sum();
            assert_eq!(
                sum,
                u64::from(CAPACITY),
                "clinic k{c} slot {}: counters {slot}",
                slot["slot_id"]
            );
            let holding = list
                .iter()
                .filter(|a| {
                    a["slot_id"] == slot["slot_id"]
                        && ["PENDING", "CONFIRMED"].contains(&a["status"].as_str().unwrap())
                })
                .count() as u64;
            assert_eq!(
                holding,
                slot["pending"].as_u64().unwrap() + slot["confirmed"].as_u64().unwrap()
            );
            assert!(holding <= u64::from(CAPACITY), "oversold");
        }
    }
    for (id, acked_status) in &acked.status {
        let now = by_id.get(id).unwrap_or_else(|| {
            panic!("acknowledged appointment {id} is lost ({total_seen} present)")
        });
        let now = now["status"].as_str().unwrap();
        assert!(
            allowed_after(acked_status, now),
            "{id}: acknowledged {acked_status}, now {now}"
        );
    }
    // A replay of an acknowledged create returns the original answer, byte for byte.
    for (key, body, answer) in acked.creates.iter().rev().take(5) {
        let citizen = body["citizen_id"].as_str().unwrap();
        let replayed = api.book_with(&api.citizen_token(citizen), key, body).await;
        assert_eq!(
            (replayed.status, replayed.text.as_str()),
            (201, answer.as_str()),
            "replay of {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_kill_9() {
    let dir = temp_dir("crash");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let data = dir.join("data");
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut server = start(&data, &secret).await;
    set_up(&server.api).await;
    let mut rng = chrono::Utc::now().timestamp_micros() as u64 | 1;
    for round in 0..KILLS {
        let next = Arc::new(Mutex::new(round * CITIZENS_PER_ROUND));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|w| {
                tokio::spawn(client_loop(
                    server.api.clone(),
                    acked.clone(),
                    w,
                    round,
                    next.clone(),
                ))
            })
            .collect();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Kill at a random moment while the clients are busy.
        tokio::time::sleep(Duration::from_millis(100 + rng % 400)).await;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("clients stop once the server is gone")
                .unwrap();
        }
        drop(server);
        server = start(&data, &secret).await;
        let snapshot = std::mem::take(&mut *acked.lock().unwrap());
        eprintln!(
            "round {round}: killed; {} acknowledged appointments checked after restart",
            snapshot.status.len()
        );
        verify(&server.api, &snapshot).await;
        *acked.lock().unwrap() = snapshot;
    }
    let acknowledged = acked.lock().unwrap().status.len();
    assert!(
        acknowledged > 0,
        "no booking was acknowledged: the test drove no load"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Books slot `s0` of `clinic` for `citizen` (asserts 201).
async fn book(api: &Api, citizen: &str, clinic: &str, hold_seconds: Option<i64>) -> Value {
    let mut body = booking_body(citizen, clinic, "s0", VACCINE);
    if let Some(s) = hold_seconds {
        body["hold_seconds"] = json!(s);
    }
    api.book_with(&api.citizen_token(citizen), &format!("b-{citizen}"), &body)
        .await
        .expect(201)
}

async fn slot_s0(api: &Api, clinic: &str) -> Value {
    slot(&api.availability(clinic).await, "s0").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_that_expire_while_down_are_released_at_recovery() {
    let dir = temp_dir("crash");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let data = dir.join("data");
    let mut server = start(&data, &secret).await;
    set_up(&server.api).await;
    let short = book(&server.api, "p1", "k0", Some(1)).await;
    let long = book(&server.api, "p2", "k0", Some(600)).await;
    assert_eq!(slot_s0(&server.api, "k0").await["pending"], 2);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    // The short hold's deadline passes while the process is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = start(&data, &secret).await;
    let short_id = short["appointment_id"].as_str().unwrap();
    let long_id = long["appointment_id"].as_str().unwrap();
    assert_eq!(
        server.api.appointment_json(short_id).await["status"],
        "EXPIRED"
    );
    assert_eq!(
        server.api.appointment_json(long_id).await["status"],
        "PENDING"
    );
    let slot = slot_s0(&server.api, "k0").await;
    assert_eq!(
        (slot["pending"].as_u64(), slot["remaining"].as_u64()),
        (Some(1), Some(u64::from(CAPACITY) - 1))
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_log_without_snapshots_and_the_next_start_replays_it() {
    let dir = temp_dir("crash");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let data = dir.join("data");
    let mut server = start(&data, &secret).await;
    set_up(&server.api).await;
    let booked = book(&server.api, "p7", "k1", None).await;
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no clean exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit after SIGTERM: {exit:?}");
    drop(server);
    let server = start(&data, &secret).await;
    let operator = token(Role::Operator, "crash-operator", None, None);
    let shards = server
        .api
        .send(Req::get("/v1/admin/shards").token(&operator))
        .await
        .json();
    for shard in shards["shards"].as_array().unwrap() {
        // SIGTERM only flushes (a snapshot of every shard would cost time in proportion to
        // the whole state): the restart replayed every record from the log.
        assert_eq!(shard["snapshot_seq"], 0, "{shard}");
        assert_eq!(shard["recovery_dropped_records"], 0, "{shard}");
        assert_eq!(shard["status"], "ready");
    }
    let total_seq: u64 = shards["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["wal_seq"].as_u64().unwrap())
        .sum();
    assert!(total_seq > 0);
    let id = booked["appointment_id"].as_str().unwrap();
    assert_eq!(server.api.appointment_json(id).await["status"], "PENDING");
    assert_eq!(slot_s0(&server.api, "k1").await["pending"], 1);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
