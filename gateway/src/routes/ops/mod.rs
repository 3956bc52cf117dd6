//! Operator endpoints: liveness, readiness and the per-shard status.

pub mod types;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use holdfast_engine::actor::ShardPhase;
use holdfast_engine::node::RETRY_AFTER_S;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::{into_response, ok};
use crate::routes::fields::rfc3339;
use crate::state::AppState;

use self::types::{HealthJson, RingJson, ShardJson, ShardsJson};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(admin_shards))
}

/// This document: OpenAPI 3.1, generated from the routes.
#[utoipa::path(get, path = "/openapi.json", tag = "operators",
    responses((status = 200, content_type = "application/json", description = "the OpenAPI document")))]
async fn openapi_json(
    axum::Extension(document): axum::Extension<std::sync::Arc<utoipa::openapi::OpenApi>>,
) -> Response {
    axum::Json(document.as_ref()).into_response()
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operators", responses((status = 200, body = HealthJson)))]
async fn healthz() -> Response {
    into_response(ok(
        StatusCode::OK,
        &HealthJson {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
    ))
}

/// Every shard this node owns has recovered and serves.
#[utoipa::path(get, path = "/readyz", tag = "operators",
    responses((status = 200, body = HealthJson), (status = 503, body = ErrorBody, description = "NOT_READY")))]
async fn readyz(State(state): State<AppState>) -> Response {
    if state.node.is_ready() {
        into_response(ok(
            StatusCode::OK,
            &HealthJson {
                status: "ready".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
        ))
    } else {
        ApiError::not_ready(RETRY_AFTER_S).into_response()
    }
}

/// Per-shard status for operators.
#[utoipa::path(get, path = "/v1/admin/shards", tag = "operators",
    responses((status = 200, body = ShardsJson), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
async fn admin_shards(State(state): State<AppState>, caller: Caller) -> Response {
    if let Err(e) = caller.require_role(&[Role::Operator]) {
        return e.into_response();
    }
    let node = &state.node;
    let shards = node
        .shard_status()
        .await
        .into_iter()
        .map(|s| {
            let journal_failure = node.journal_failure();
            let (status, reason) = match (&s.phase, s.ready && s.runtime.writable) {
                (ShardPhase::Recovering, _) => ("recovering", None),
                (ShardPhase::Failed(reason), _) => ("unavailable", Some(reason.clone())),
                (ShardPhase::Ready, true) => ("ready", None),
                (ShardPhase::Ready, false) => (
                    "unavailable",
                    Some(journal_failure.unwrap_or_else(|| {
                        "the shard stopped taking writes (see the log)".to_string()
                    })),
                ),
            };
            let known = s.ready;
            ShardJson {
                shard: s.shard,
                node: s.node,
                status: status.to_string(),
                clinics: s.counts.clinics,
                slots: s.counts.slots,
                pending: s.counts.pending,
                confirmed: s.counts.confirmed,
                administered: s.counts.administered,
                timers: s.counts.timers,
                next_expiry: s.counts.next_expiry_ms.map(rfc3339),
                mailbox: s.inflight,
                mailbox_max: node.config().inflight_per_shard_max,
                events_applied: s.runtime.events_applied,
                wal_seq: known.then_some(s.runtime.wal_seq),
                snapshot_seq: known.then_some(s.runtime.snapshot_seq),
                last_snapshot_at: s.runtime.last_snapshot_at_ms.map(rfc3339),
                idempotency_records: s.runtime.idempotency_records,
                recovery_dropped_records: s.runtime.recovered_dropped,
                reason,
            }
        })
        .collect();
    let ring = RingJson {
        nodes: node.ring().nodes().to_vec(),
        vnodes_per_node: node.ring().vnodes_per_node(),
        shards: node.shards(),
    };
    into_response(ok(
        StatusCode::OK,
        &ShardsJson {
            node: node.config().node_name.clone(),
            ring,
            shards,
        },
    ))
}
