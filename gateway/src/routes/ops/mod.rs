//! Operator endpoints: liveness, readiness, the per-shard status and the external
//! dependencies' circuit breakers, and the Prometheus metrics.

pub mod types;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use holdfast_engine::node::RETRY_AFTER_S;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

use self::types::{
    DependencyJson, HealthJson, InvariantsJson, RingJson, ShardJson, ShardsJson, StorageJson,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(admin_shards))
        .routes(routes!(admin_invariants))
        .routes(routes!(metrics))
}

/// This document: OpenAPI 3.1, generated from the routes.
#[utoipa::path(get, path = "/openapi.json", tag = "operators",
    responses((status = 200, content_type = "application/json", description = "the OpenAPI document")))]
async fn openapi_json(
    Extension(document): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> impl IntoResponse {
    Json(document)
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operators", responses((status = 200, body = HealthJson)))]
async fn healthz() -> impl IntoResponse {
    Json(HealthJson::new("ok"))
}

/// Every shard this node owns has recovered and serves, and the node takes writes.
#[utoipa::path(get, path = "/readyz", tag = "operators",
    responses((status = 200, body = HealthJson), (status = 503, body = ErrorBody,
        description = "NOT_READY; `details.reason` is `disk_full`, `read_only` or `log_failed` when writes are refused")))]
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if let Some(refusal) = state.node.write_refusal() {
        // Reads are still served; a balancer should send writes elsewhere.
        return Err(ApiError::not_ready(RETRY_AFTER_S)
            .with_message(format!("this node refuses writes: {refusal}"))
            .with_detail("reason", refusal.reason()));
    }
    if !state.node.is_ready() {
        return Err(ApiError::not_ready(RETRY_AFTER_S));
    }
    Ok(Json(HealthJson::new("ready")))
}

/// Per-shard status for operators.
#[utoipa::path(get, path = "/v1/admin/shards", tag = "operators",
    responses((status = 200, body = ShardsJson), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
async fn admin_shards(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Operator])?;
    let node = &state.node;
    let statuses = node.shard_status().await;
    let shards = statuses
        .iter()
        .map(|s| ShardJson::render(s, node))
        .collect();
    let ring = RingJson {
        nodes: node.ring().nodes().to_vec(),
        vnodes_per_node: node.ring().vnodes_per_node(),
        shards: node.shards(),
    };
    let dependencies = node
        .dependencies()
        .iter()
        .map(DependencyJson::render)
        .collect();
    Ok(Json(ShardsJson {
        node: node.config().node_name.clone(),
        ring,
        shards,
        dependencies,
        storage: StorageJson::render(node, &state.restarts),
    }))
}

/// Recomputes the invariants of docs/ARCHITECTURE.md from the appointments: every shard's
/// counters (slots, stock, timers) and, across shards, one active appointment per citizen
/// bound to the citizen's claim. Reads every appointment: an operator's check (after a
/// restart, or off-peak), not a probe.
#[utoipa::path(get, path = "/v1/admin/invariants", tag = "operators",
    responses((status = 200, body = InvariantsJson), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "a shard is not ready")),
    security(("bearer" = [])))]
async fn admin_invariants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Operator])?;
    let node = &state.node;
    let mut violations = Vec::new();
    let shards: Vec<u32> = node.served_shards().collect();
    for &shard in &shards {
        if let Err(broken) = node.check_invariants(shard).await? {
            violations.push(format!("shard {shard}: {broken}"));
        }
    }
    if let Err(broken) = node.check_claims().await? {
        violations.push(broken);
    }
    Ok(Json(InvariantsJson {
        ok: violations.is_empty(),
        shards_checked: shards.len(),
        violations,
    }))
}

/// The Content-Type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metrics in the Prometheus text exposition format (docs/API.md, "Operators", lists the
/// series). The state gauges are read from the shards as this answers.
#[utoipa::path(get, path = "/metrics", tag = "operators",
    responses((status = 200, content_type = "text/plain; version=0.0.4; charset=utf-8", body = String,
            description = "Prometheus text exposition format"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Operator])?;
    let text = state.metrics.render(&state.node, &state.admission).await;
    Ok(([(CONTENT_TYPE, PROMETHEUS_TEXT)], text))
}
