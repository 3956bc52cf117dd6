//! Catalogue (authority; stock adjustments and slot cancellation also staff of the clinic)
//! and the public availability reads.

mod citizens;
pub mod types;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use holdfast_engine::command::{CancelSlot, PutClinic, PutSlots, PutVaccine};
use holdfast_engine::model::SlotSpec;
use holdfast_engine::{Command, Node, Output};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{StrictJson, StrictJsonBulk, StrictPath, StrictQuery};
use crate::idempotency::{idempotent, json, Answer, IdempotencyHeader};
use crate::routes::fields::check_id;
use crate::routes::{require_authority_or_staff_of, unexpected};
use crate::state::AppState;

use self::types::{
    AdjustBody, AvailabilityJson, AvailabilityQuery, BulkSlotsBody, CancelSlotBody, ClinicBody,
    ClinicJson, ClinicStockJson, ClinicSummaryJson, ClinicsJson, ClinicsQuery, SlotBody,
    SlotCancelledJson, SlotJson, SlotsJson, StockBody, VaccineBody, VaccineJson,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_vaccine))
        .routes(routes!(put_clinic))
        .routes(routes!(receive_stock))
        .routes(routes!(adjust_stock))
        .routes(routes!(put_slot))
        .routes(routes!(put_slots))
        .routes(routes!(cancel_slot))
        .routes(routes!(list_clinics))
        .routes(routes!(availability))
        .merge(citizens::router())
}

/// Creates or updates a vaccine and its eligibility rules (every shard keeps the catalogue).
#[utoipa::path(put, path = "/v1/vaccines/{vaccine}", tag = "catalogue",
    params(("vaccine" = String, Path, description = "vaccine id"),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    request_body = VaccineBody,
    responses((status = 200, body = VaccineJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_vaccine(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(vaccine): StrictPath<String>,
    StrictJson(body): StrictJson<VaccineBody>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Authority])?;
    check_id("vaccine", &vaccine)?;
    let rules = body.clone().validate()?;
    let key = key.optional()?;
    let what = format!("PUT /v1/vaccines/{vaccine}");
    let node = state.node.clone();
    let echo = VaccineJson::echo(vaccine.clone(), body.clone());
    let answer = idempotent(&state, &caller, key, &what, &body, move || async move {
        let command = Command::PutVaccine(PutVaccine {
            name: vaccine,
            rules,
        });
        node.broadcast(command).await?;
        json(StatusCode::OK, &echo)
    });
    Ok(answer.await)
}

/// Creates or updates a clinic.
#[utoipa::path(put, path = "/v1/clinics/{clinic_id}", tag = "catalogue",
    params(("clinic_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    request_body = ClinicBody,
    responses((status = 200, body = ClinicJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_clinic(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(clinic_id): StrictPath<String>,
    StrictJson(body): StrictJson<ClinicBody>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Authority])?;
    check_id("clinic_id", &clinic_id)?;
    let info = body.clone().validate()?;
    let key = key.optional()?;
    let what = format!("PUT /v1/clinics/{clinic_id}");
    let node = state.node.clone();
    let answer = idempotent(&state, &caller, key, &what, &body, move || async move {
        let shard = node.clinic_shard(&clinic_id);
        let command = Command::PutClinic(PutClinic {
            clinic_id: clinic_id.clone(),
            info: info.clone(),
        });
        node.exec(shard, command).await?;
        let clinic = ClinicJson {
            clinic_id,
            name: info.name,
            region: info.region,
            timezone: info.timezone,
        };
        json(StatusCode::OK, &clinic)
    });
    Ok(answer.await)
}

/// Runs a stock command on the clinic's shard and answers with the batch's vaccine's stock.
async fn exec_stock(node: Arc<Node>, clinic_id: String, command: Command) -> Answer {
    match node.exec(node.clinic_shard(&clinic_id), command).await? {
        Output::Stock(s) => json(StatusCode::OK, &ClinicStockJson::render(clinic_id, &s)),
        other => Err(unexpected(other)),
    }
}

/// Receives doses into a batch (created on first delivery; later deliveries add to it).
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/stock", tag = "catalogue",
    params(("clinic_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    request_body = StockBody,
    responses((status = 200, body = ClinicStockJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown clinic or vaccine"),
        (status = 409, body = ErrorBody, description = "BATCH_MISMATCH: the batch exists with another expiry"), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn receive_stock(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(clinic_id): StrictPath<String>,
    StrictJson(body): StrictJson<StockBody>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Authority])?;
    check_id("clinic_id", &clinic_id)?;
    body.validate()?;
    let key = key.optional()?;
    let what = format!("POST /v1/clinics/{clinic_id}/stock");
    let (node, command) = (state.node.clone(), body.command(&clinic_id));
    let answer = idempotent(&state, &caller, key, &what, &body, move || {
        exec_stock(node, clinic_id, command)
    });
    Ok(answer.await)
}

/// Adjusts a batch (breakage, cold-chain loss, recount). Going below what is reserved is
/// allowed and flags the newest appointments `at_risk`; going below zero is 409.
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/stock/adjust", tag = "catalogue",
    params(("clinic_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    request_body = AdjustBody,
    responses((status = 200, body = ClinicStockJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "INSUFFICIENT_STOCK"), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn adjust_stock(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(clinic_id): StrictPath<String>,
    StrictJson(body): StrictJson<AdjustBody>,
) -> Result<impl IntoResponse, ApiError> {
    check_id("clinic_id", &clinic_id)?;
    require_authority_or_staff_of(&caller, &clinic_id)?;
    body.validate()?;
    let key = key.optional()?;
    let what = format!("POST /v1/clinics/{clinic_id}/stock/adjust");
    let (node, command) = (state.node.clone(), body.command(&clinic_id));
    let answer = idempotent(&state, &caller, key, &what, &body, move || {
        exec_stock(node, clinic_id, command)
    });
    Ok(answer.await)
}

/// How a slot upload answers: with the one slot (`PUT .../slots/{slot_id}`), or with the
/// list of them (the bulk upload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotsAnswer {
    One,
    All,
}

/// Creates or updates `slots` on the clinic's shard, all or nothing.
async fn exec_put_slots(
    node: Arc<Node>,
    clinic_id: String,
    slots: Vec<(String, SlotSpec)>,
    answer: SlotsAnswer,
) -> Answer {
    let shard = node.clinic_shard(&clinic_id);
    let command = Command::PutSlots(PutSlots {
        clinic_id: clinic_id.clone(),
        slots,
    });
    match node.exec(shard, command).await? {
        Output::Slots(views) if answer == SlotsAnswer::One && views.len() == 1 => {
            json(StatusCode::OK, &SlotJson::from(&views[0]))
        }
        Output::Slots(views) => {
            let slots = views.iter().map(SlotJson::from).collect();
            json(StatusCode::OK, &SlotsJson { clinic_id, slots })
        }
        other => Err(unexpected(other)),
    }
}

/// Creates or updates one slot. Capacity may not shrink below the seats already taken.
#[utoipa::path(put, path = "/v1/clinics/{clinic_id}/slots/{slot_id}", tag = "catalogue",
    params(("clinic_id" = String, Path), ("slot_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    request_body = SlotBody,
    responses((status = 200, body = SlotJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown clinic or vaccine"),
        (status = 409, body = ErrorBody, description = "CAPACITY_IN_USE or SLOT_CANCELLED"), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_slot(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath((clinic_id, slot_id)): StrictPath<(String, String)>,
    StrictJson(body): StrictJson<SlotBody>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Authority])?;
    check_id("clinic_id", &clinic_id)?;
    check_id("slot_id", &slot_id)?;
    let spec = body.validate()?;
    let key = key.optional()?;
    let what = format!("PUT /v1/clinics/{clinic_id}/slots/{slot_id}");
    let node = state.node.clone();
    let slots = vec![(slot_id, spec)];
    let answer = idempotent(&state, &caller, key, &what, &body, move || {
        exec_put_slots(node, clinic_id, slots, SlotsAnswer::One)
    });
    Ok(answer.await)
}

/// Creates or updates up to 1,000 slots at once, all or nothing (body up to 1 MiB).
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/slots", tag = "catalogue",
    params(("clinic_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    request_body = BulkSlotsBody,
    responses((status = 200, body = SlotsJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_slots(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath(clinic_id): StrictPath<String>,
    StrictJsonBulk(body): StrictJsonBulk<BulkSlotsBody>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Authority])?;
    check_id("clinic_id", &clinic_id)?;
    let slots = body.clone().validate()?;
    let key = key.optional()?;
    let what = format!("POST /v1/clinics/{clinic_id}/slots");
    let node = state.node.clone();
    let answer = idempotent(&state, &caller, key, &what, &body, move || {
        exec_put_slots(node, clinic_id, slots, SlotsAnswer::All)
    });
    Ok(answer.await)
}

/// Cancels a slot: its PENDING and CONFIRMED appointments become CLINIC_CANCELLED with
/// `rebook_priority`, and their doses return.
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/slots/{slot_id}/cancel", tag = "catalogue",
    params(("clinic_id" = String, Path), ("slot_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional; 1-128 printable ASCII")),
    request_body = CancelSlotBody,
    responses((status = 200, body = SlotCancelledJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn cancel_slot(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    StrictPath((clinic_id, slot_id)): StrictPath<(String, String)>,
    StrictJson(body): StrictJson<CancelSlotBody>,
) -> Result<impl IntoResponse, ApiError> {
    check_id("clinic_id", &clinic_id)?;
    check_id("slot_id", &slot_id)?;
    require_authority_or_staff_of(&caller, &clinic_id)?;
    body.validate()?;
    let key = key.optional()?;
    let what = format!("POST /v1/clinics/{clinic_id}/slots/{slot_id}/cancel");
    let node = state.node.clone();
    let command = Command::CancelSlot(CancelSlot {
        clinic_id: clinic_id.clone(),
        slot_id,
        reason: body.reason.clone(),
    });
    let answer = idempotent(&state, &caller, key, &what, &body, move || async move {
        match node.exec(node.clinic_shard(&clinic_id), command).await? {
            Output::SlotCancelled { slot, affected } => {
                let cancelled = SlotCancelledJson {
                    clinic_id,
                    slot: SlotJson::from(&slot),
                    affected_appointment_ids: affected.iter().map(ToString::to_string).collect(),
                };
                json(StatusCode::OK, &cancelled)
            }
            other => Err(unexpected(other)),
        }
    });
    Ok(answer.await)
}

/// Clinics, optionally of one region and offering one vaccine, with available doses.
#[utoipa::path(get, path = "/v1/clinics", tag = "availability",
    params(ClinicsQuery),
    responses((status = 200, body = ClinicsJson), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list_clinics(
    State(state): State<AppState>,
    StrictQuery(query): StrictQuery<ClinicsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (region, vaccine) = query.filters()?;
    let found = state.node.clinics(region, vaccine).await?;
    let mut clinics: Vec<ClinicSummaryJson> = found.iter().map(ClinicSummaryJson::from).collect();
    clinics.sort_by(|a, b| a.clinic_id.cmp(&b.clinic_id));
    Ok(Json(ClinicsJson { clinics }))
}

/// A clinic's stock and slots, optionally for one vaccine and a window of start times.
#[utoipa::path(get, path = "/v1/clinics/{clinic_id}/availability", tag = "availability",
    params(("clinic_id" = String, Path), AvailabilityQuery),
    responses((status = 200, body = AvailabilityJson), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn availability(
    State(state): State<AppState>,
    StrictPath(clinic_id): StrictPath<String>,
    StrictQuery(query): StrictQuery<AvailabilityQuery>,
) -> Result<impl IntoResponse, ApiError> {
    check_id("clinic_id", &clinic_id)?;
    let (vaccine, from, to) = query.filters()?;
    let view = state
        .node
        .availability(&clinic_id, vaccine, from, to)
        .await?;
    Ok(Json(AvailabilityJson::from(&view)))
}
