//! The audit chain on a real history: thousands of status changes across several snapshots
//! verify; one appointment's history lists its statuses in order; one flipped byte in one
//! record on disk is reported at that record by the endpoint and by `holdfast audit verify`
//! (which exits 1 then, 0 on an intact chain).

use std::path::Path;
use std::process::Command;

use holdfast_engine::NodeConfig;
use holdfast_gateway::auth::Role;
use holdfast_persistence::{Durability, WalConfig};
use holdfast_server::events::frames;
use serde_json::Value;

use crate::common::*;

const SHARDS_HERE: u32 = 4;
const WORKERS: usize = 16;
/// Book, confirm, cancel: three status changes a round.
const ROUNDS_PER_WORKER: usize = 70;

async fn start(dir: &Path) -> Harness {
    let node = NodeConfig {
        // Several snapshots in the run (each truncates the log): the chain must not care.
        snapshot_every_records: 200,
        ..NodeConfig::embedded(SHARDS_HERE)
    };
    let storage = wal_storage(dir, WalConfig::new(Durability::Sync));
    Harness::start_config(test_config(node, HOLD_TTL_MS, MAX_HOLD_MS, storage)).await
}

/// `holdfast audit verify --data-dir dir`: exit code and printed JSON.
fn verify_offline(dir: &Path) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{stdout:?} {:?}: {e}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

/// Flips one bit in the middle of audit record `seq`, offline: in the audit frame holding it
/// (records one a line, the frame keyed by its first record's sequence).
fn flip_a_byte(dir: &Path, seq: u64) {
    let db = sled::open(dir.join("events")).expect("the event store opens offline");
    let tree = db.open_tree(frames::TREE).unwrap();
    let (key, frame) = tree
        .range(frames::audit_key(0)..=frames::audit_key(seq))
        .next_back()
        .expect("the frame holding the record")
        .unwrap();
    let first = frames::first_of(&key).unwrap();
    let mut bytes = frame.to_vec();
    let line_start: usize = bytes
        .split(|&b| b == b'\n')
        .take((seq - first) as usize)
        .map(|line| line.len() + 1)
        .sum();
    let line_len = bytes[line_start..]
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len() - line_start);
    bytes[line_start + line_len / 2] ^= 0x02;
    tree.insert(key, bytes).unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn the_audit_chain_verifies_a_long_history_and_reports_a_flipped_byte() {
    let dir = temp_dir("audit");
    let h = start(&dir).await;
    let citizen = h.citizen_token("p0");
    assert_eq!(h.send(Req::get("/v1/admin/audit/verify")).await.status, 401);
    assert_eq!(
        h.send(Req::get("/v1/admin/audit/verify").token(&citizen))
            .await
            .status,
        403
    );
    let no_id = h.send(Req::get("/v1/admin/audit").token(&h.operator)).await;
    assert_eq!(no_id.status, 400, "{}", no_id.text);
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("k1", "s1", 1000, 1000).await;
    for w in 0..WORKERS {
        h.put_adult(&format!("p{w}")).await;
    }
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let api = h.api.clone();
        tasks.push(tokio::spawn(async move {
            let citizen = format!("p{w}");
            let token = api.citizen_token(&citizen);
            let mut ids = Vec::new();
            for _ in 0..ROUNDS_PER_WORKER {
                let id = api.book_ok(&citizen, "k1", "s1").await;
                api.confirm(&token, &id).await.expect(200);
                api.cancel(&token, &id).await.expect(200);
                ids.push(id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    let changes = (WORKERS * ROUNDS_PER_WORKER * 3) as u64;
    let mut snapshots = 0;
    for shard in 0..SHARDS_HERE {
        snapshots += h.shard_entry(shard).await["snapshot_seq"].as_u64().unwrap() / 200;
    }
    assert!(
        snapshots >= 3,
        "several snapshots cut the log during the run"
    );
    // The recorder stores asynchronously: wait (bounded) until every change is chained.
    let mut verdict = Value::Null;
    for _ in 0..200 {
        verdict = h
            .send(Req::get("/v1/admin/audit/verify").token(&h.operator))
            .await
            .expect(200);
        if verdict["records"].as_u64() == Some(changes) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["records"].as_u64(), Some(changes), "{verdict}");
    assert_eq!(verdict["head"].as_str().map(str::len), Some(64));
    let authority = token(Role::Authority, "a", None, None);
    let history = h
        .send(Req::get(format!("/v1/admin/audit?appointment_id={}", ids[7])).token(&authority))
        .await
        .expect(200);
    let records = history["records"].as_array().unwrap();
    let statuses: Vec<&str> = records
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["PENDING", "CONFIRMED", "CANCELLED"]);
    assert!(records
        .windows(2)
        .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()));
    for r in records {
        assert_eq!(r["appointment_id"].as_str(), Some(ids[7].as_str()));
        assert!(r["at"].is_string() && r["hash"].is_string() && r["prev_hash"].is_string());
    }
    h.shutdown().await;

    let (code, json) = verify_offline(&dir);
    assert_eq!((code, &json["ok"]), (0, &Value::Bool(true)), "{json}");
    assert_eq!(json["records"].as_u64(), Some(changes));
    let bad = changes / 2;
    flip_a_byte(&dir, bad);
    let (code, json) = verify_offline(&dir);
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["ok"], false);
    assert_eq!(json["first_bad_seq"].as_u64(), Some(bad), "{json}");
    assert!(json["reason"].is_string());
    let h = start(&dir).await;
    let verdict = h
        .send(Req::get("/v1/admin/audit/verify").token(&h.operator))
        .await
        .expect(200);
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["first_bad_seq"].as_u64(), Some(bad), "{verdict}");
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
