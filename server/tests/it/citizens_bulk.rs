//! `POST /v1/citizens:bulk`: many citizens' records in one request, each on its own shard,
//! all checked before any is stored, durable before the answer.

use holdfast_persistence::{Durability, WalConfig};
use serde_json::{json, Value};

use crate::common::*;

/// A bulk entry: `citizen_body` with the id.
fn entry(citizen_id: &str) -> Value {
    let mut body = citizen_body("1980-05-05");
    body["citizen_id"] = json!(citizen_id);
    body
}

fn upload(ids: impl IntoIterator<Item = String>) -> Value {
    json!({ "citizens": ids.into_iter().map(|id| entry(&id)).collect::<Vec<_>>() })
}

async fn bulk(api: &Api, token: &str, body: &Value) -> Resp {
    api.send(Req::post("/v1/citizens:bulk").token(token).json(body))
        .await
}

/// Whether `citizen_id` is registered: a booking of theirs is not refused as an unknown
/// citizen.
async fn registered(api: &Api, citizen_id: &str) -> bool {
    let r = api.book(citizen_id, "k", "s").await;
    match r.status {
        201 => true,
        422 => {
            let body = r.json();
            assert_eq!(body["error"]["code"], "NOT_ELIGIBLE", "{body}");
            let reasons = body["error"]["details"]["reasons"].to_string();
            assert!(reasons.contains("unknown_citizen"), "{body}");
            false
        }
        other => panic!("booking {citizen_id}: {other} {}", r.json()),
    }
}

#[tokio::test]
async fn a_bad_upload_is_refused_whole_and_names_the_entry() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("k", "s", 50, 50).await;
    let ids = |n: usize| (0..n).map(|i| format!("c-{i}"));

    let citizen = h.citizen_token("c-0");
    let r = bulk(&h, &citizen, &upload(ids(2))).await;
    assert_eq!(r.expect(403)["error"]["code"], "FORBIDDEN");

    for (body, field) in [
        (json!({ "citizens": [] }), "citizens"),
        (upload(ids(1001)), "citizens"),
        (
            upload(["a".into(), "b".into(), "a".into()]),
            "citizens[2].citizen_id",
        ),
        (upload(["a".into(), "b c".into()]), "citizens[1].citizen_id"),
    ] {
        let r = bulk(&h, &h.authority, &body).await;
        let error = r.expect(400);
        assert_eq!(error["error"]["details"]["field"], field, "{error}");
    }
    // One bad record among good ones: nothing of the upload is stored.
    let mut body = upload(ids(3));
    body["citizens"][2]["region"] = json!("no spaces allowed");
    let error = bulk(&h, &h.authority, &body).await.expect(400);
    assert_eq!(
        error["error"]["details"]["field"], "citizens[2].region",
        "{error}"
    );
    let mut body = upload(ids(3));
    body["citizens"][1]["nickname"] = json!("x");
    bulk(&h, &h.authority, &body).await.expect(400);
    assert!(
        !registered(&h, "c-0").await,
        "c-0 was stored from a refused upload"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn an_upload_reaches_every_shard_and_survives_a_restart() {
    let dir = temp_dir("citizens-bulk");
    let storage = || wal_storage(&dir, WalConfig::new(Durability::Sync));
    let h = Harness::start_storage(SHARDS, storage())
        .await
        .expect("starts");
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("k", "s", 50, 50).await;
    let ids: Vec<String> = (0..1000).map(|i| format!("bulk-{i}")).collect();
    let answer = bulk(&h, &h.authority, &upload(ids.clone()))
        .await
        .expect(200);
    assert_eq!(answer, json!({ "stored": 1000 }));
    // The same upload again (a retry after a 503) changes nothing and answers the same.
    let answer = bulk(&h, &h.authority, &upload(ids.clone()))
        .await
        .expect(200);
    assert_eq!(answer["stored"], 1000);
    h.shutdown().await;

    let h = Harness::start_storage(SHARDS, storage())
        .await
        .expect("restarts");
    let shards: std::collections::BTreeSet<u32> = ids
        .iter()
        .map(|id| holdfast_engine::hash::shard_of(id, SHARDS))
        .collect();
    assert_eq!(
        shards.len(),
        SHARDS as usize,
        "the upload spans every shard"
    );
    for id in [&ids[0], &ids[499], &ids[999]] {
        assert!(
            registered(&h, id).await,
            "{id} is registered after the restart"
        );
    }
    assert!(!registered(&h, "bulk-1000").await);
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
