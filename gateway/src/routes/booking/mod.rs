//! Booking: create (the saga, under a required Idempotency-Key), confirm, cancel, read, the
//! QR code, and the listings by citizen and by clinic.

pub mod types;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast_engine::command::{Cancel, Confirm};
use holdfast_engine::saga::{Booked, RescheduleRequest};
use holdfast_engine::view::AppointmentView;
use holdfast_engine::{AppointmentId, Command, Output, Status};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admission::AdmissionTokenHeader;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{OptionalEmptyBody, StrictJson, StrictPath, StrictQuery};
use crate::idempotency::{
    idem_request, idempotent, json, key_busy, key_reused, keys_full, replay, to_stored,
    IdempotencyHeader,
};
use crate::qr::QrKeyring;
use crate::routes::fields::check_id;
use crate::routes::{require_authority_or_staff_of, require_citizen_or_authority, unexpected};
use crate::state::AppState;

use self::types::{
    AppointmentJson, AppointmentsJson, ClinicAppointmentsQuery, CreateAppointmentBody,
    RescheduleBody,
};

/// Most appointments one listing returns.
pub const LISTING_APPOINTMENTS_MAX: usize = 10_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_appointment))
        .routes(routes!(confirm_appointment))
        .routes(routes!(cancel_appointment))
        .routes(routes!(reschedule_appointment))
        .routes(routes!(get_appointment))
        .routes(routes!(appointment_qr))
        .routes(routes!(citizen_appointments))
        .routes(routes!(clinic_appointments))
}

pub(crate) fn render(state: &AppState, a: &AppointmentView) -> AppointmentJson {
    let qr = (a.status == Status::Confirmed).then(|| qr_token(state, a));
    AppointmentJson::render(a, qr)
}

/// The appointment's QR token, signed with the newest key.
fn qr_token(state: &AppState, a: &AppointmentView) -> String {
    let id = a.id.to_string();
    state.qr.token(&crate::qr::QrFields::of(a, &id))
}

/// Who may book for `citizen_id`: that citizen, or an authority.
pub(crate) fn may_book(caller: &Caller, citizen_id: &str) -> Result<(), ApiError> {
    match caller.0.role {
        Role::Authority => Ok(()),
        Role::Citizen if caller.0.citizen_id.as_deref() == Some(citizen_id) => Ok(()),
        Role::Citizen => Err(ApiError::forbidden(
            "a citizen may book only for their own citizen_id",
        )),
        _ => Err(ApiError::forbidden(
            "only citizens (or an authority) may book",
        )),
    }
}

/// Who may read an appointment: its citizen, staff of its clinic, an authority.
fn may_read(caller: &Caller, a: &AppointmentView) -> Result<(), ApiError> {
    let claims = &caller.0;
    let allowed = match claims.role {
        Role::Authority => true,
        Role::Citizen => claims.citizen_id.as_deref() == Some(&*a.citizen_id),
        Role::Staff => claims.clinic_id.as_deref() == Some(&*a.clinic_id),
        Role::Operator => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "this appointment belongs to someone else",
        ))
    }
}

pub(crate) async fn load(state: &AppState, id: &str) -> Result<AppointmentView, ApiError> {
    let parsed: AppointmentId = state
        .node
        .parse_appointment_id(id)
        .ok_or_else(|| ApiError::not_found("appointment not found"))?;
    state.node.get_appointment(parsed).await?.ok_or_else(|| {
        ApiError::not_found("appointment not found").with_detail("resource", "appointment")
    })
}

/// Books: holds a seat and a dose for `hold_seconds`, checks eligibility while held, and
/// answers 201 with a PENDING appointment. Requires an Idempotency-Key.
#[utoipa::path(post, path = "/v1/appointments", tag = "booking",
    request_body = CreateAppointmentBody,
    params(("Idempotency-Key" = String, Header, description = "required; 1-128 printable ASCII"),
        ("Admission-Token" = Option<String>, Header, description = "required of citizens while the waiting room is on (--waiting-room): the admission_token of GET /v1/queue/{ticket}")),
    responses((status = 201, body = AppointmentJson), (status = 400, body = ErrorBody, description = "BAD_REQUEST or IDEMPOTENCY_KEY_REQUIRED"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "SOLD_OUT, OUT_OF_STOCK, ALREADY_BOOKED, SLOT_CANCELLED, SLOT_STARTED, VACCINE_NOT_OFFERED"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "NOT_ELIGIBLE (details.reasons) or IDEMPOTENCY_KEY_REUSED"),
        (status = 429, body = ErrorBody, description = "RATE_LIMITED, or QUEUE_REQUIRED while the waiting room is on (details.reason: missing, invalid, expired, used); with Retry-After"),
        (status = 503, body = ErrorBody, description = "UNAVAILABLE, with Retry-After")),
    security(("bearer" = [])))]
async fn create_appointment(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    admission: AdmissionTokenHeader,
    StrictJson(body): StrictJson<CreateAppointmentBody>,
) -> Result<impl IntoResponse, ApiError> {
    const WHAT: &str = "POST /v1/appointments";
    body.validate()?;
    let key = key.required(WHAT)?;
    may_book(&caller, &body.citizen_id)?;
    // After 400 and 403, before any shard: a 429 is never stored under the key.
    let pass = state
        .admission
        .booking_pass(&caller, &admission, key.as_str())?;
    let request = body.book_request(&state.settings);
    let idem = idem_request(&state, &caller, &key, WHAT, &body);
    let app = state.clone();
    let task = tokio::spawn(async move {
        let booked = app.node.book(request, Some(idem)).await;
        if let Booked::Ran(booking) = &booked {
            crate::metrics::count_booking(booking.outcome().as_ref().err().map(refusal_code));
        }
        let answer = answer_booked(&app, booked).await;
        // A replay of the first 201 answers 201 again: the token stays used by this key.
        if let Some(pass) = pass.filter(|_| answer.status() == StatusCode::CREATED) {
            pass.booked();
        }
        answer
    });
    Ok(joined(task).await)
}

/// Moves a PENDING or CONFIRMED appointment to another slot (any clinic) in one step: the
/// new seat and dose are secured first, the old ones return once the new appointment
/// exists. Requires an Idempotency-Key.
#[utoipa::path(post, path = "/v1/appointments/{id}/reschedule", tag = "booking",
    request_body = RescheduleBody,
    params(("id" = String, Path, description = "appointment id"),
        ("Idempotency-Key" = String, Header, description = "required; 1-128 printable ASCII")),
    responses((status = 201, body = AppointmentJson, description = "the new appointment, with rescheduled_from"),
        (status = 400, body = ErrorBody, description = "BAD_REQUEST or IDEMPOTENCY_KEY_REQUIRED"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "INVALID_TRANSITION, TOO_LATE, or a create error (SOLD_OUT, OUT_OF_STOCK, SLOT_CANCELLED, SLOT_STARTED, VACCINE_NOT_OFFERED, ALREADY_BOOKED)"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "NOT_ELIGIBLE (details.reasons) or IDEMPOTENCY_KEY_REUSED"),
        (status = 429, body = ErrorBody, description = "RATE_LIMITED, with Retry-After"),
        (status = 503, body = ErrorBody, description = "UNAVAILABLE, with Retry-After")),
    security(("bearer" = [])))]
async fn reschedule_appointment(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(id): StrictPath<String>,
    StrictJson(body): StrictJson<RescheduleBody>,
) -> Result<impl IntoResponse, ApiError> {
    let what = format!("POST /v1/appointments/{id}/reschedule");
    body.validate()?;
    let key = key.required(&what)?;
    if !matches!(caller.0.role, Role::Citizen | Role::Authority) {
        return Err(ApiError::forbidden(
            "only the citizen or an authority may reschedule an appointment",
        ));
    }
    let from = load(&state, &id).await?;
    if caller.0.role == Role::Citizen && caller.0.citizen_id.as_deref() != Some(&*from.citizen_id) {
        return Err(ApiError::forbidden(
            "this appointment belongs to someone else",
        ));
    }
    let idem = idem_request(&state, &caller, &key, &what, &body);
    let app = state.clone();
    let task = tokio::spawn(async move {
        let request = RescheduleRequest {
            from,
            clinic_id: body.clinic_id.clone(),
            slot_id: body.slot_id.clone(),
            hold_ms: body.hold_ms(&app.settings),
            notice_ms: app.settings.reschedule_notice_ms,
        };
        let booked = app.node.reschedule(request, Some(idem)).await;
        answer_booked(&app, booked).await
    });
    Ok(joined(task).await)
}

/// A refused booking's answer code, without building the answer: a domain refusal's own
/// code, and `UNAVAILABLE` for the rest (overload, recovery, a dependency down: all 503).
fn refusal_code(e: &holdfast_engine::EngineError) -> &'static str {
    match e {
        holdfast_engine::EngineError::Domain(d) => d.code(),
        _ => "UNAVAILABLE",
    }
}

/// Answers a saga under its key: a replay as first sent, or the saga's outcome, stored with
/// the claim's settlement in one message, once everything it depends on is durable.
async fn answer_booked(state: &AppState, booked: Booked) -> Response {
    let booking = match booked {
        Booked::Replay(stored) => return replay(&stored),
        Booked::KeyReused => return key_reused().into_response(),
        Booked::Busy => return key_busy().into_response(),
        Booked::KeysFull => return keys_full().into_response(),
        Booked::Ran(booking) => booking,
    };
    let answer = match booking.outcome() {
        Ok(a) => json(StatusCode::CREATED, &render(state, a)),
        Err(e) => Err(ApiError::from(e.clone())),
    };
    let stored = to_stored(&answer);
    match booking.finish(&state.node, stored).await {
        Ok(_) => answer.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "a booking's records could not be stored");
            ApiError::from(e).into_response()
        }
    }
}

/// The answer of a request's own task (a client that disconnects does not abandon a saga
/// half way).
async fn joined(task: tokio::task::JoinHandle<Response>) -> Response {
    task.await
        .unwrap_or_else(|e| ApiError::internal(format!("request task failed: {e}")).into_response())
}

/// What a citizen (or an authority) may do to an appointment after booking it.
#[derive(Debug, Clone, Copy)]
enum Transition {
    Confirm,
    Cancel,
}

impl Transition {
    fn verb(self) -> &'static str {
        match self {
            Transition::Confirm => "confirm",
            Transition::Cancel => "cancel",
        }
    }

    /// `citizen`: the only citizen the appointment may belong to, `None` for an authority.
    fn command(self, seq: u64, citizen: Option<String>) -> Command {
        match self {
            Transition::Confirm => Command::Confirm(Confirm { seq, citizen }),
            Transition::Cancel => Command::Cancel(Cancel { seq, citizen }),
        }
    }
}

async fn transition(
    state: AppState,
    caller: Caller,
    key: IdempotencyHeader,
    id: String,
    change: Transition,
) -> Result<impl IntoResponse, ApiError> {
    let key = key.optional()?;
    let parsed = state.node.parse_appointment_id(&id).ok_or_else(|| {
        ApiError::not_found("appointment not found").with_detail("resource", "appointment")
    })?;
    // The shard checks ownership in the same step as the transition: one hop, no race.
    let citizen = match caller.0.role {
        Role::Authority => None,
        Role::Citizen => caller.0.citizen_id.clone(),
        _ => {
            return Err(ApiError::forbidden(
                "only the citizen or an authority may change an appointment",
            ))
        }
    };
    let what = format!("POST /v1/appointments/{id}/{}", change.verb());
    let command = change.command(parsed.seq, citizen);
    let app = state.clone();
    let answer = idempotent(&state, &caller, key, &what, &(), move || async move {
        match app.node.exec(parsed.shard, command).await? {
            Output::Appointment(a) => json(StatusCode::OK, &render(&app, &a)),
            other => Err(unexpected(other)),
        }
    });
    Ok(answer.await)
}

/// Confirms a PENDING appointment before its `expires_at`; answers with its `qr_token`.
#[utoipa::path(post, path = "/v1/appointments/{id}/confirm", tag = "booking",
    params(("id" = String, Path, description = "appointment id"),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    responses((status = 200, body = AppointmentJson), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "INVALID_TRANSITION (details.status)"),
        (status = 410, body = ErrorBody, description = "HOLD_EXPIRED"),
        (status = 413, body = ErrorBody, description = "a body (ignored) over 64 KiB"),
        (status = 422, body = ErrorBody, description = "IDEMPOTENCY_KEY_REUSED"),
        (status = 429, body = ErrorBody, description = "RATE_LIMITED, with Retry-After"), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn confirm_appointment(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(id): StrictPath<String>,
    _body: OptionalEmptyBody,
) -> Result<impl IntoResponse, ApiError> {
    transition(state, caller, key, id, Transition::Confirm).await
}

/// Cancels: RELEASED from PENDING, CANCELLED from CONFIRMED; the seat and the dose return
/// at once.
#[utoipa::path(post, path = "/v1/appointments/{id}/cancel", tag = "booking",
    params(("id" = String, Path, description = "appointment id"),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    responses((status = 200, body = AppointmentJson), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "INVALID_TRANSITION (details.status)"),
        (status = 413, body = ErrorBody, description = "a body (ignored) over 64 KiB"),
        (status = 422, body = ErrorBody, description = "IDEMPOTENCY_KEY_REUSED"),
        (status = 429, body = ErrorBody, description = "RATE_LIMITED, with Retry-After"), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn cancel_appointment(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(id): StrictPath<String>,
    _body: OptionalEmptyBody,
) -> Result<impl IntoResponse, ApiError> {
    transition(state, caller, key, id, Transition::Cancel).await
}

/// One appointment (its citizen, staff of its clinic, an authority).
#[utoipa::path(get, path = "/v1/appointments/{id}", tag = "booking",
    params(("id" = String, Path, description = "appointment id")),
    responses((status = 200, body = AppointmentJson), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_appointment(
    State(state): State<AppState>,
    caller: Caller,
    StrictPath(id): StrictPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let a = load(&state, &id).await?;
    may_read(&caller, &a)?;
    Ok(Json(render(&state, &a)))
}

/// The QR code of a CONFIRMED appointment's `qr_token`, as SVG.
#[utoipa::path(get, path = "/v1/appointments/{id}/qr.svg", tag = "booking",
    params(("id" = String, Path, description = "appointment id")),
    responses((status = 200, content_type = "image/svg+xml", body = String), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "NOT_CONFIRMED"), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn appointment_qr(
    State(state): State<AppState>,
    caller: Caller,
    StrictPath(id): StrictPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let a = load(&state, &id).await?;
    may_read(&caller, &a)?;
    if a.status != Status::Confirmed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "NOT_CONFIRMED",
            "only a CONFIRMED appointment has a QR code",
        )
        .with_detail("status", a.status.as_str()));
    }
    let svg = QrKeyring::svg(&qr_token(&state, &a)).map_err(ApiError::internal)?;
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"))],
        svg,
    ))
}

/// A citizen's appointments, oldest first (the citizen, an authority).
#[utoipa::path(get, path = "/v1/citizens/{citizen_id}/appointments", tag = "booking",
    params(("citizen_id" = String, Path)),
    responses((status = 200, body = AppointmentsJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn citizen_appointments(
    State(state): State<AppState>,
    caller: Caller,
    StrictPath(citizen_id): StrictPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_id("citizen_id", &citizen_id)?;
    require_citizen_or_authority(
        &caller,
        &citizen_id,
        "only the citizen or an authority may list these appointments",
    )?;
    let all = state
        .node
        .citizen_appointments(&citizen_id, LISTING_APPOINTMENTS_MAX)
        .await?;
    let appointments = all
        .iter()
        .take(LISTING_APPOINTMENTS_MAX)
        .map(|a| render(&state, a))
        .collect();
    Ok(Json(AppointmentsJson { appointments }))
}

/// A clinic's appointments, oldest first, optionally of one slot and one status (staff of
/// the clinic, an authority).
#[utoipa::path(get, path = "/v1/clinics/{clinic_id}/appointments", tag = "booking",
    params(("clinic_id" = String, Path), ClinicAppointmentsQuery),
    responses((status = 200, body = AppointmentsJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn clinic_appointments(
    State(state): State<AppState>,
    caller: Caller,
    StrictPath(clinic_id): StrictPath<String>,
    StrictQuery(query): StrictQuery<ClinicAppointmentsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    check_id("clinic_id", &clinic_id)?;
    require_authority_or_staff_of(&caller, &clinic_id)?;
    let (slot, status) = query.filters()?;
    let list = state
        .node
        .clinic_appointments(&clinic_id, slot, status, LISTING_APPOINTMENTS_MAX)
        .await?;
    let appointments = list.iter().map(|a| render(&state, a)).collect();
    Ok(Json(AppointmentsJson { appointments }))
}
