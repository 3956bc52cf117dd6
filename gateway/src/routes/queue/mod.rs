//! The waiting room's routes (docs/API.md, Admission on launch morning): take a ticket, see
//! where it stands. The room itself is `crate::admission::waiting_room`; the booking's check
//! of its token is in `routes::booking`.

pub mod types;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admission::waiting_room::{LookupError, WaitingRoom};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{OptionalEmptyBody, StrictPath};
use crate::routes::fields::check_id;
use crate::state::AppState;

use self::types::TicketJson;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(join_queue))
        .routes(routes!(queue_ticket))
}

/// The room, for a citizen; 403 for any other role, 404 when the room is off.
fn room_for(state: &AppState, caller: &Caller) -> Result<Arc<WaitingRoom>, ApiError> {
    caller.require_role(&[Role::Citizen])?;
    state.admission.room.clone().ok_or_else(|| {
        ApiError::not_found("the waiting room is off on this server: book directly")
            .with_detail("resource", "waiting_room")
    })
}

/// Takes a ticket in the waiting room (citizens; no body), or answers the one the caller
/// already holds: one ticket per caller, first come first served. Poll it with
/// `GET /v1/queue/{ticket}` until admitted.
#[utoipa::path(post, path = "/v1/queue", tag = "admission",
    responses((status = 201, body = TicketJson, description = "the caller's ticket (a new one, or the one it holds)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "not a citizen"),
        (status = 404, body = ErrorBody, description = "the waiting room is off"),
        (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "RATE_LIMITED, with Retry-After"),
        (status = 503, body = ErrorBody, description = "UNAVAILABLE: the room is full, with Retry-After")),
    security(("bearer" = [])))]
async fn join_queue(
    State(state): State<AppState>,
    caller: Caller,
    _body: OptionalEmptyBody,
) -> Result<impl IntoResponse, ApiError> {
    let room = room_for(&state, &caller)?;
    let view = room
        .join(&caller.0.sub)
        .map_err(|retry| ApiError::unavailable(retry.0, "the waiting room is full; retry later"))?;
    Ok((StatusCode::CREATED, Json(TicketJson::render(&view))))
}

/// Where a ticket stands: its position and estimated wait, or, once admitted, the
/// `admission_token` to book with (the ticket's citizen only).
#[utoipa::path(get, path = "/v1/queue/{ticket}", tag = "admission",
    params(("ticket" = String, Path, description = "the ticket's id, as POST /v1/queue answered it")),
    responses((status = 200, body = TicketJson), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "not a citizen, or another caller's ticket"),
        (status = 404, body = ErrorBody, description = "unknown ticket (never issued, admission over, or issued before a restart), or the waiting room is off")),
    security(("bearer" = [])))]
async fn queue_ticket(
    State(state): State<AppState>,
    caller: Caller,
    StrictPath(ticket): StrictPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_id("ticket", &ticket)?;
    let room = room_for(&state, &caller)?;
    match room.look(&caller.0.sub, &ticket) {
        Ok(view) => Ok(Json(TicketJson::render(&view))),
        Err(LookupError::Unknown) => {
            Err(ApiError::not_found("no such ticket").with_detail("resource", "ticket"))
        }
        Err(LookupError::NotYours) => {
            Err(ApiError::forbidden("this ticket belongs to someone else"))
        }
    }
}
