//! The audit endpoints: `GET /v1/admin/audit/verify` walks the hash chain of every status
//! change and reports the first break; `GET /v1/admin/audit?appointment_id=` lists one
//! appointment's records in order (from the store's index by appointment id). The chain
//! itself is the server's ([`holdfast_engine::feed::AuditTrail`]).

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use holdfast_engine::feed::{AuditRecord, AuditVerdict};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::StrictQuery;
use crate::routes::fields::check_id;
use crate::state::AppState;

/// Records one history answer lists at most: an appointment takes a handful of statuses
/// (PENDING, CONFIRMED, ADMINISTERED), so this bound is never reached by a real one.
pub const AUDIT_HISTORY_RECORDS_MAX: usize = 1_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(audit_verify))
        .routes(routes!(audit_history))
}

/// `{"ok": true, "records", "head"}` or `{"ok": false, "first_bad_seq", "reason"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyJson {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// Hex SHA-256 of the last record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<AuditVerdict> for VerifyJson {
    fn from(verdict: AuditVerdict) -> Self {
        match verdict {
            AuditVerdict::Ok { records, head } => VerifyJson {
                ok: true,
                records: Some(records),
                head: Some(head),
                first_bad_seq: None,
                reason: None,
            },
            AuditVerdict::Broken {
                first_bad_seq,
                reason,
            } => VerifyJson {
                ok: false,
                records: None,
                head: None,
                first_bad_seq: Some(first_bad_seq),
                reason: Some(reason),
            },
        }
    }
}

/// One audit record.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRecordJson {
    pub seq: u64,
    pub at: String,
    pub appointment_id: String,
    pub status: String,
    pub hash: String,
    pub prev_hash: String,
}

impl From<AuditRecord> for AuditRecordJson {
    fn from(r: AuditRecord) -> Self {
        AuditRecordJson {
            seq: r.seq,
            at: r.at,
            appointment_id: r.appointment_id,
            status: r.status,
            hash: r.hash,
            prev_hash: r.prev_hash,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditHistoryJson {
    pub records: Vec<AuditRecordJson>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The appointment whose records to list.
    appointment_id: String,
}

/// Walks the whole audit chain (streamed: one record in memory at a time).
#[utoipa::path(get, path = "/v1/admin/audit/verify", tag = "operators",
    responses((status = 200, body = VerifyJson), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
async fn audit_verify(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Operator])?;
    let audit = state.audit.clone();
    let verdict = tokio::task::spawn_blocking(move || audit.verify())
        .await
        .map_err(|e| ApiError::internal(format!("the audit walk failed: {e}")))?;
    Ok(Json(VerifyJson::from(verdict)))
}

/// One appointment's audit records, in order.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "operators", params(AuditQuery),
    responses((status = 200, body = AuditHistoryJson), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
async fn audit_history(
    State(state): State<AppState>,
    caller: Caller,
    StrictQuery(query): StrictQuery<AuditQuery>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Operator, Role::Authority])?;
    check_id("appointment_id", &query.appointment_id)?;
    let records = state
        .audit
        .history(&query.appointment_id, AUDIT_HISTORY_RECORDS_MAX)
        .into_iter()
        .map(AuditRecordJson::from)
        .collect();
    Ok(Json(AuditHistoryJson { records }))
}
