//! The node heals in place after its log failed, without a process restart (`reopen.rs`),
//! through the real write-ahead log with its flush fault hook (so it runs everywhere; the
//! real full disk is `disk_faults.rs`):
//!
//! - a flush fails: the write is answered 503 `log_failed`, never 2xx;
//! - while the disk still fails, the supervisor stops the node and its attempts to open the
//!   log again fail: the same socket answers 503 (`log_failed`, `Retry-After`) and
//!   `/readyz` says why; nothing is counted as a restart;
//! - once the disk heals, writes succeed again on the same address within a bounded wait;
//!   the restart is counted in `/v1/admin/shards`; every change acknowledged before the
//!   failure is there; the failed booking, retried with its Idempotency-Key, answers the
//!   truth (one appointment for the citizen, the counters agree, the invariants hold);
//! - the waiting room's tickets, kept only in memory, survive the restart (the admission
//!   state is handed to the restarted node): a ticket taken before the failure is still known
//!   after it, not 404.

use std::num::NonZeroU32;
use std::time::Duration;

use holdfast_engine::NodeConfig;
use holdfast_gateway::admission::AdmissionConfig;
use holdfast_gateway::auth::Role;
use holdfast_persistence::{Durability, FlushFault, WalConfig};
use holdfast_server::reopen::{supervise, Supervised};
use holdfast_server::ServerConfig;
use serde_json::Value;

use crate::common::*;

const SHARDS_HERE: u32 = 4;
/// How often the test asks whether the node has changed state, at most (50 ms apart): 30 s,
/// far more than the supervisor's back-off (250 ms, doubling) needs in the few attempts
/// the test lets fail.
const POLLS_MAX: usize = 600;
const POLL_EVERY: Duration = Duration::from_millis(50);

/// `/v1/admin/shards`' `storage`, or `None` while no node answers (503).
async fn storage(api: &Api, operator: &str) -> Option<Value> {
    let answer = api.send(Req::get("/v1/admin/shards").token(operator)).await;
    match answer.status {
        200 => Some(answer.json()["storage"].clone()),
        503 => None,
        other => panic!("/v1/admin/shards answered {other}: {}", answer.json()),
    }
}

/// `req`'s answer, or `None` when its connection was closed unanswered: the restart's stop
/// closes a connection it had accepted but not yet read, and the client retries (every
/// request retried here is idempotent).
async fn try_answer(api: &Api, req: Req) -> Option<Resp> {
    api.try_send(req).await.ok()
}

/// The restarts in place counted, once there is one: a restart is counted when every shard
/// has recovered, and the first answers of the restarted node may come before that.
async fn restarts_counted(supervised: &Supervised) -> u64 {
    for _ in 0..POLLS_MAX {
        if supervised.restarts().count() > 0 {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    supervised.restarts().count()
}

/// A 503 for a log that failed: `UNAVAILABLE` (or `NOT_READY`), reason `log_failed`,
/// `Retry-After`.
fn assert_log_failed(answer: &Resp) -> Value {
    let body = answer.expect(503);
    assert_eq!(body["error"]["details"]["reason"], "log_failed", "{body}");
    assert!(answer.headers.contains_key("retry-after"), "{body}");
    body
}

async fn start(
    dir: &std::path::Path,
    fault: &FlushFault,
    admission: AdmissionConfig,
) -> (Supervised, Api) {
    let mut wal = WalConfig::new(Durability::Sync);
    wal.flush_fault = fault.clone();
    let config = ServerConfig {
        admission,
        ..test_config(
            NodeConfig::embedded(SHARDS_HERE),
            HOLD_TTL_MS,
            MAX_HOLD_MS,
            wal_storage(dir, wal),
        )
    };
    let server = holdfast_server::start(config.clone())
        .await
        .expect("starts");
    let supervised = supervise(server, config, None);
    let api = Api::new(format!("http://{}", supervised.addr));
    (supervised, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_is_opened_again_in_place_once_the_disk_heals_and_nothing_acknowledged_is_lost(
) {
    let dir = temp_dir("reopen-in-place");
    let fault = FlushFault::default();
    let (supervised, api) = start(&dir, &fault, AdmissionConfig::default()).await;
    let operator = token(Role::Operator, "op", None, None);
    api.standard_vaccine(VACCINE).await;
    api.clinic_with_slot("c1", "s1", 10, 10).await;
    for citizen in ["p1", "p2", "p3"] {
        api.put_adult(citizen).await;
    }
    let first = api.book_ok("p1", "c1", "s1").await;
    api.confirm(&api.citizen_token("p1"), &first)
        .await
        .expect(200);
    assert_eq!(
        storage(&api, &operator).await.unwrap()["restarts_in_place"],
        0
    );

    // The disk fails: the booking whose flush fails is refused, never acknowledged.
    fault.arm();
    let key = fresh_key("doomed");
    let body = booking_body("p2", "c1", "s1", VACCINE);
    let doomed = api.book_with(&api.citizen_token("p2"), &key, &body).await;
    assert_log_failed(&doomed);

    // The supervisor stops the node and cannot open the log while the disk fails: the same
    // socket answers 503 log_failed, and says the node is restarting.
    let mut restarting = Value::Null;
    for _ in 0..POLLS_MAX {
        let Some(ready) = try_answer(&api, Req::get("/readyz")).await else {
            tokio::time::sleep(POLL_EVERY).await;
            continue;
        };
        restarting = assert_log_failed(&ready);
        if restarting["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("restarting in place"))
        {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let message = restarting["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("restarting in place"), "{restarting}");
    assert!(message.contains("injected"), "{restarting}");
    let p3 = Req::post("/v1/appointments")
        .token(&api.citizen_token("p3"))
        .idem(&fresh_key("p3"))
        .json(&booking_body("p3", "c1", "s1", VACCINE));
    if let Some(refused) = try_answer(&api, p3.clone()).await {
        assert_log_failed(&refused);
    }
    assert_eq!(supervised.restarts().count(), 0);

    // The disk heals: writes are taken again, same address, no process restart.
    fault.disarm();
    let mut booked = None;
    for _ in 0..POLLS_MAX {
        let Some(answer) = try_answer(&api, p3.clone()).await else {
            tokio::time::sleep(POLL_EVERY).await;
            continue;
        };
        if answer.status == 201 {
            booked = Some(
                answer.json()["appointment_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.json());
        tokio::time::sleep(POLL_EVERY).await;
    }
    let third = booked.expect("writes are taken again after the disk healed");
    assert_eq!(restarts_counted(&supervised).await, 1);
    let seen = storage(&api, &operator).await.expect("the node serves");
    assert_eq!(seen["writable"], true, "{seen}");
    assert_eq!(seen["restarts_in_place"], 1, "{seen}");
    assert!(
        seen["last_restart_reason"]
            .as_str()
            .is_some_and(|r| r.contains("injected")),
        "{seen}"
    );
    assert!(seen["last_restart_at"].is_string(), "{seen}");
    let ready = api.send(Req::get("/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.json());

    // Nothing acknowledged is lost; the failed booking's retry answers the truth.
    assert_eq!(api.appointment_json(&first).await["status"], "CONFIRMED");
    assert_eq!(api.appointment_json(&third).await["status"], "PENDING");
    let retried = api.book_with(&api.citizen_token("p2"), &key, &body).await;
    assert_eq!(retried.status, 201, "{}", retried.json());
    assert_eq!(api.citizen_appointments("p2").await.len(), 1);
    let availability = api.availability("c1").await;
    assert_eq!(availability["slots"][0]["pending"], 2, "{availability}");
    assert_eq!(availability["slots"][0]["confirmed"], 1, "{availability}");
    let invariants = api
        .send(Req::get("/v1/admin/invariants").token(&operator))
        .await
        .expect(200);
    assert_eq!(invariants["ok"], true, "{invariants}");

    tokio::time::timeout(Duration::from_secs(30), supervised.stop_without_snapshot())
        .await
        .expect("the supervised server stops");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Fails the log with a write, waits until the stand-in answers (the node was stopped), heals
/// the disk and waits until a write is taken again.
async fn fail_and_heal(api: &Api, fault: &FlushFault, supervised: &Supervised) {
    fault.arm();
    let put = |id: &str| {
        Req::put(format!("/v1/citizens/{id}"))
            .token(&api.authority)
            .json(&citizen_body("1980-05-05"))
    };
    assert_log_failed(&api.send(put("doomed")).await);
    for _ in 0..POLLS_MAX {
        let standing_in = try_answer(api, Req::get("/readyz")).await.is_some_and(|r| {
            r.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("restarting in place"))
        });
        if standing_in {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    fault.disarm();
    for _ in 0..POLLS_MAX {
        if try_answer(api, put("healed"))
            .await
            .is_some_and(|r| r.status == 200 || r.status == 201)
        {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    assert_eq!(
        restarts_counted(supervised).await,
        1,
        "the node restarted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_s_tickets_survive_a_restart_in_place() {
    let dir = temp_dir("reopen-tickets");
    let fault = FlushFault::default();
    let room = AdmissionConfig {
        waiting_room: NonZeroU32::new(1),
        ..AdmissionConfig::default()
    };
    let (supervised, api) = start(&dir, &fault, room).await;
    let tokens: Vec<String> = ["q0", "q1"].iter().map(|c| api.citizen_token(c)).collect();
    let mut tickets = Vec::new();
    for token in &tokens {
        let ticket = api
            .send(Req::post("/v1/queue").token(token))
            .await
            .expect(201);
        tickets.push(ticket["ticket"].as_str().unwrap().to_string());
    }

    fail_and_heal(&api, &fault, &supervised).await;

    for (token, ticket) in tokens.iter().zip(&tickets) {
        // A ticket the restarted node did not know would be 404.
        api.send(Req::get(format!("/v1/queue/{ticket}")).token(token))
            .await
            .expect(200);
    }
    tokio::time::timeout(Duration::from_secs(30), supervised.stop_without_snapshot())
        .await
        .expect("the supervised server stops");
    std::fs::remove_dir_all(&dir).unwrap();
}
