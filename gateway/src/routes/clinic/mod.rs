//! The clinic's side of an appointment (docs/API.md, "Clinic (staff)"): check-in by QR token
//! and administration from a batch. The token is verified here, where the QR keys live
//! ([`crate::qr`]): the appointment it names is read, and the MAC recomputed over its fields.
//! The administration itself is one engine command, decided by the clinic's shard.

pub mod types;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use holdfast_engine::command::Administer;
use holdfast_engine::view::AppointmentView;
use holdfast_engine::{Command, Output, Status};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{StrictJson, StrictPath};
use crate::idempotency::{idempotent, json, IdempotencyHeader};
use crate::qr::{QrFields, QrKeyring};
use crate::routes::booking::types::AppointmentJson;
use crate::routes::booking::{load, render};
use crate::routes::unexpected;
use crate::state::AppState;

use self::types::{AdministerBody, CheckinBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkin))
        .routes(routes!(administer))
}

/// 403 `BAD_QR`: one answer for every token that is not a genuine one of this clinic, so a
/// prober learns nothing about which part was wrong.
fn bad_qr() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "BAD_QR",
        "this QR code is not a valid token of an appointment at your clinic",
    )
}

/// The clinic of a staff caller; anyone else is 403 `FORBIDDEN`.
fn staff_clinic(caller: &Caller) -> Result<&str, ApiError> {
    caller.require_role(&[Role::Staff])?;
    caller
        .0
        .clinic_id
        .as_deref()
        .ok_or_else(|| ApiError::forbidden("a staff token must name its clinic (clinic_id)"))
}

/// Whether `token` is a genuine token of `a`.
fn genuine(state: &AppState, token: &str, a: &AppointmentView) -> bool {
    let id = a.id.to_string();
    state.qr.verify(token, &QrFields::of(a, &id))
}

/// Scans a QR code: answers the appointment when the token is genuine, of the staff
/// member's clinic and CONFIRMED, so the device learns who stands in front of it.
#[utoipa::path(post, path = "/v1/checkin", tag = "clinic",
    request_body = CheckinBody,
    responses((status = 200, body = AppointmentJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "BAD_QR (forged, altered or another clinic's token) or FORBIDDEN (not staff)"),
        (status = 409, body = ErrorBody, description = "NOT_CONFIRMED (details.status)"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn checkin(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<CheckinBody>,
) -> Result<impl IntoResponse, ApiError> {
    let clinic_id = staff_clinic(&caller)?;
    let id = QrKeyring::appointment_id(&body.qr_token).ok_or_else(bad_qr)?;
    let a = match load(&state, id).await {
        Ok(a) => a,
        Err(e) if e.status == StatusCode::NOT_FOUND => return Err(bad_qr()),
        Err(e) => return Err(e),
    };
    if !genuine(&state, &body.qr_token, &a) || *a.clinic_id != *clinic_id {
        return Err(bad_qr());
    }
    if a.status != Status::Confirmed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "NOT_CONFIRMED",
            format!("the appointment is {}, not CONFIRMED", a.status.as_str()),
        )
        .with_detail("status", a.status.as_str()));
    }
    Ok(Json(render(&state, &a)))
}

/// Gives the dose: ADMINISTERED with `batch` and `administered_at`, the dose leaves the batch
/// and the citizen's dose history gains it. Staff of the appointment's clinic only; a repeat
/// answers the appointment as it is.
#[utoipa::path(post, path = "/v1/appointments/{id}/administer", tag = "clinic",
    request_body = AdministerBody,
    params(("id" = String, Path, description = "appointment id"),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    responses((status = 200, body = AppointmentJson, description = "ADMINISTERED (also when it already was)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "FORBIDDEN (not staff of the appointment's clinic) or BAD_QR (forged, altered, or another appointment's token)"),
        (status = 404, body = ErrorBody, description = "NOT_FOUND: the appointment, or a batch the clinic does not hold"),
        (status = 409, body = ErrorBody, description = "INVALID_TRANSITION (details.status), WRONG_BATCH, INSUFFICIENT_STOCK, BATCH_EXPIRED"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn administer(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(id): StrictPath<String>,
    StrictJson(body): StrictJson<AdministerBody>,
) -> Result<impl IntoResponse, ApiError> {
    body.validate()?;
    let key = key.optional()?;
    let clinic_id = staff_clinic(&caller)?.to_string();
    let a = load(&state, &id).await?;
    if *a.clinic_id != *clinic_id {
        return Err(ApiError::forbidden(
            "staff may administer only appointments of their own clinic",
        ));
    }
    if !genuine(&state, &body.qr_token, &a) {
        return Err(bad_qr());
    }
    let what = format!("POST /v1/appointments/{id}/administer");
    let command = Command::Administer(Administer {
        seq: a.id.seq,
        clinic_id,
        batch: body.batch.clone(),
    });
    let shard = a.id.shard;
    let app = state.clone();
    let answer = idempotent(&state, &caller, key, &what, &body, move || async move {
        match app.node.exec(shard, command).await? {
            Output::Appointment(a) => json(StatusCode::OK, &render(&app, &a)),
            other => Err(unexpected(other)),
        }
    });
    Ok(answer.await)
}
