//! The waitlist of a sold-out slot (docs/API.md, Waitlist): join, a citizen's listing, and
//! leave. Offers are made by the engine (`holdfast_engine::waitlist`), not through a route.

pub mod types;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use holdfast_engine::waitlist::JoinRequest;
use holdfast_engine::{DomainError, EngineError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{StrictJson, StrictPath};
use crate::idempotency::{idempotent, json, Deferred, IdempotencyHeader};
use crate::routes::booking::may_book;
use crate::routes::fields::check_id;
use crate::routes::require_citizen_or_authority;
use crate::state::AppState;

use self::types::{JoinWaitlistBody, JoinedJson, LeftJson, WaitlistEntryJson, WaitlistJson};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(join_waitlist))
        .routes(routes!(citizen_waitlist))
        .routes(routes!(leave_waitlist))
}

/// Joins a sold-out slot's waitlist (the citizen for itself, or an authority). When a seat
/// returns, the first eligible waiting citizen gets a PENDING hold (`offered_from_waitlist`)
/// to confirm like any other.
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/slots/{slot_id}/waitlist", tag = "waitlist",
    request_body = JoinWaitlistBody,
    params(("clinic_id" = String, Path), ("slot_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    responses((status = 201, body = JoinedJson), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "unknown clinic, slot or vaccine"),
        (status = 409, body = ErrorBody, description = "SEATS_AVAILABLE, ALREADY_WAITING, LIMIT_REACHED, SLOT_CANCELLED, SLOT_STARTED, VACCINE_NOT_OFFERED"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "NOT_ELIGIBLE (details.reasons) or IDEMPOTENCY_KEY_REUSED"),
        (status = 429, body = ErrorBody, description = "RATE_LIMITED, with Retry-After"),
        (status = 503, body = ErrorBody, description = "UNAVAILABLE, with Retry-After")),
    security(("bearer" = [])))]
async fn join_waitlist(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath((clinic_id, slot_id)): StrictPath<(String, String)>,
    StrictJson(body): StrictJson<JoinWaitlistBody>,
) -> Result<impl IntoResponse, ApiError> {
    check_id("clinic_id", &clinic_id)?;
    check_id("slot_id", &slot_id)?;
    body.validate()?;
    let key = key.optional()?;
    may_book(&caller, &body.citizen_id)?;
    let what = format!("POST /v1/clinics/{clinic_id}/slots/{slot_id}/waitlist");
    let request = JoinRequest {
        clinic_id,
        slot_id,
        vaccine: body.vaccine.clone(),
        citizen_id: body.citizen_id.clone(),
    };
    let app = state.clone();
    let answer = idempotent(&state, &caller, key, &what, &body, move || async move {
        let joined = app.node.join_waitlist(request).await;
        let answer = joined
            .outcome
            .map_err(ApiError::from)
            .and_then(|(id, position)| {
                let body = JoinedJson {
                    waitlist_id: id.to_string(),
                    position,
                };
                json(StatusCode::CREATED, &body)
            });
        Deferred {
            answer,
            durable: joined.durable,
        }
    });
    Ok(answer.await)
}

/// A citizen's waitlist entries, with their positions (the citizen, an authority).
#[utoipa::path(get, path = "/v1/citizens/{citizen_id}/waitlist", tag = "waitlist",
    params(("citizen_id" = String, Path)),
    responses((status = 200, body = WaitlistJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn citizen_waitlist(
    State(state): State<AppState>,
    caller: Caller,
    StrictPath(citizen_id): StrictPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_id("citizen_id", &citizen_id)?;
    require_citizen_or_authority(
        &caller,
        &citizen_id,
        "only the citizen or an authority may list this waitlist",
    )?;
    let entries = state.node.citizen_waitlist(&citizen_id).await?;
    let entries = entries.iter().map(WaitlistEntryJson::render).collect();
    Ok(Json(WaitlistJson { entries }))
}

/// Leaves a waitlist (the entry's citizen, an authority); the entries behind move up.
#[utoipa::path(delete, path = "/v1/waitlist/{waitlist_id}", tag = "waitlist",
    params(("waitlist_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    responses((status = 200, body = LeftJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "unknown entry (or one that already left, was served or skipped)"),
        (status = 422, body = ErrorBody, description = "IDEMPOTENCY_KEY_REUSED"),
        (status = 429, body = ErrorBody, description = "RATE_LIMITED, with Retry-After"),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn leave_waitlist(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(waitlist_id): StrictPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let key = key.optional()?;
    let citizen = match caller.0.role {
        Role::Authority => None,
        Role::Citizen => caller.0.citizen_id.clone(),
        _ => {
            return Err(ApiError::forbidden(
                "only the citizen or an authority may leave a waitlist",
            ))
        }
    };
    let what = format!("DELETE /v1/waitlist/{waitlist_id}");
    let app = state.clone();
    let answer = idempotent(&state, &caller, key, &what, &(), move || async move {
        let not_found = || {
            ApiError::not_found("waitlist entry not found")
                .with_detail("resource", "waitlist_entry")
        };
        let id = app
            .node
            .parse_waitlist_id(&waitlist_id)
            .ok_or_else(not_found)?;
        match app.node.leave_waitlist(id, citizen).await {
            Ok(()) => json(
                StatusCode::OK,
                &LeftJson {
                    waitlist_id,
                    left: true,
                },
            ),
            Err(EngineError::Domain(DomainError::NotYours)) => Err(ApiError::forbidden(
                "this waitlist entry belongs to someone else",
            )),
            Err(e) => Err(e.into()),
        }
    });
    Ok(answer.await)
}
