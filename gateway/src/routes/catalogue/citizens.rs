//! Citizens' records (authority): one at a time (`PUT /v1/citizens/{citizen_id}`) or in bulk
//! (`POST /v1/citizens:bulk`, registering a country in minutes: one journal op per shard a
//! batch touches, not one request per citizen). Each record lives on the citizen's shard.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use holdfast_engine::command::PutCitizen;
use holdfast_engine::model::CitizenRecord;
use holdfast_engine::{Command, Node};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{StrictJson, StrictJsonBulk, StrictPath};
use crate::idempotency::{idempotent, json, IdempotencyHeader};
use crate::routes::fields::check_id;
use crate::state::AppState;

use super::types::{CitizenBody, CitizenJson, CitizensBulkBody, CitizensStoredJson};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_citizen))
        .routes(routes!(bulk_citizens))
}

/// Creates or updates a citizen's record (on the citizen's own shard).
#[utoipa::path(put, path = "/v1/citizens/{citizen_id}", tag = "catalogue",
    params(("citizen_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    request_body = CitizenBody,
    responses((status = 200, body = CitizenJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_citizen(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(citizen_id): StrictPath<String>,
    StrictJson(body): StrictJson<CitizenBody>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Authority])?;
    check_id("citizen_id", &citizen_id)?;
    let record = body.clone().validate()?;
    let key = key.optional()?;
    let what = format!("PUT /v1/citizens/{citizen_id}");
    let node = state.node.clone();
    let echo = CitizenJson::echo(citizen_id.clone(), body.clone());
    let answer = idempotent(&state, &caller, key, &what, &body, move || async move {
        store(&node, vec![(citizen_id, record)]).await?;
        json(StatusCode::OK, &echo)
    });
    Ok(answer.await)
}

/// Creates or updates up to 1,000 citizens' records in one request, each as
/// `PUT /v1/citizens/{citizen_id}` would. All are checked before any is stored; a 503 may
/// come after some shards stored theirs: send the same request again (each record is an
/// upsert, so a repeat changes nothing twice).
#[utoipa::path(post, path = "/v1/citizens:bulk", tag = "catalogue",
    params(("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    request_body = CitizensBulkBody,
    responses((status = 200, body = CitizensStoredJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn bulk_citizens(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictJsonBulk(body): StrictJsonBulk<CitizensBulkBody>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Authority])?;
    let citizens = body.clone().validate()?;
    let key = key.optional()?;
    let node = state.node.clone();
    let answer = idempotent(
        &state,
        &caller,
        key,
        "POST /v1/citizens:bulk",
        &body,
        move || async move {
            let stored = citizens.len();
            store(&node, citizens).await?;
            json(StatusCode::OK, &CitizensStoredJson { stored })
        },
    );
    Ok(answer.await)
}

/// Stores the records, each on its citizen's shard: one batch (one message, one journal op)
/// per shard, the shards at once; answers after every batch is durable, or with the first
/// refusal.
async fn store(node: &Arc<Node>, citizens: Vec<(String, CitizenRecord)>) -> Result<(), ApiError> {
    let mut by_shard: BTreeMap<u32, Vec<Command>> = BTreeMap::new();
    for (citizen_id, record) in citizens {
        by_shard
            .entry(node.citizen_shard(&citizen_id))
            .or_default()
            .push(Command::PutCitizen(PutCitizen { citizen_id, record }));
    }
    let batches = by_shard
        .into_iter()
        .map(|(shard, commands)| node.exec_batch(shard, commands));
    for answers in futures_util::future::join_all(batches).await {
        for answer in answers? {
            answer?;
        }
    }
    Ok(())
}
