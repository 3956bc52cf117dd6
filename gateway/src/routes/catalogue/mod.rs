//! Catalogue (authority; stock adjustments and slot cancellation also staff of the clinic)
//! and the public availability reads.

pub mod types;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use holdfast_engine::{Command, Output};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{StrictJson, StrictJsonBulk, StrictPath, StrictQuery};
use crate::idempotency::{idempotency_key, idempotent, into_response, ok, Answer};
use crate::routes::fields::{check_id, non_empty, TEXT_BYTES_MAX};
use crate::routes::require_authority_or_staff_of;
use crate::state::AppState;

use self::types::{
    query_instant_ms, slot_spec, AdjustBody, AvailabilityJson, AvailabilityQuery, BulkSlotsBody,
    CancelSlotBody, CitizenBody, CitizenJson, ClinicBody, ClinicJson, ClinicStockJson,
    ClinicSummaryJson, ClinicsJson, ClinicsQuery, SlotBody, SlotCancelledJson, SlotJson, SlotsJson,
    StockBody, VaccineBody, VaccineJson,
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
        .routes(routes!(put_citizen))
        .routes(routes!(list_clinics))
        .routes(routes!(availability))
}

fn unexpected(output: Output) -> ApiError {
    ApiError::internal(format!("unexpected engine answer: {output:?}"))
}

/// Creates or updates a vaccine and its eligibility rules (every shard keeps the catalogue).
#[utoipa::path(put, path = "/v1/vaccines/{vaccine}", tag = "catalogue",
    params(("vaccine" = String, Path, description = "vaccine id")),
    request_body = VaccineBody,
    responses((status = 200, body = VaccineJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_vaccine(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    StrictPath(vaccine): StrictPath<String>,
    StrictJson(body): StrictJson<VaccineBody>,
) -> Response {
    let prepared = (|| {
        caller.require_role(&[Role::Authority])?;
        check_id("vaccine", &vaccine)?;
        Ok::<_, ApiError>((body.clone().validate()?, idempotency_key(&headers)?))
    })();
    let (rules, key) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let what = format!("PUT /v1/vaccines/{vaccine}");
    let node = state.node.clone();
    let echo = body.clone();
    idempotent(&state, &caller.0, key, &what, &body, move || async move {
        node.broadcast(Command::PutVaccine {
            name: vaccine.clone(),
            rules,
        })
        .await?;
        ok(
            StatusCode::OK,
            &VaccineJson {
                vaccine,
                rules: echo,
            },
        )
    })
    .await
}

/// Creates or updates a clinic.
#[utoipa::path(put, path = "/v1/clinics/{clinic_id}", tag = "catalogue",
    params(("clinic_id" = String, Path)),
    request_body = ClinicBody,
    responses((status = 200, body = ClinicJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_clinic(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    StrictPath(clinic_id): StrictPath<String>,
    StrictJson(body): StrictJson<ClinicBody>,
) -> Response {
    let prepared = (|| {
        caller.require_role(&[Role::Authority])?;
        check_id("clinic_id", &clinic_id)?;
        Ok::<_, ApiError>((body.clone().validate()?, idempotency_key(&headers)?))
    })();
    let (info, key) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let what = format!("PUT /v1/clinics/{clinic_id}");
    let node = state.node.clone();
    idempotent(&state, &caller.0, key, &what, &body, move || async move {
        let shard = node.clinic_shard(&clinic_id);
        node.exec(
            shard,
            Command::PutClinic {
                clinic_id: clinic_id.clone(),
                info: info.clone(),
            },
        )
        .await?;
        ok(
            StatusCode::OK,
            &ClinicJson {
                clinic_id,
                name: info.name,
                region: info.region,
                timezone: info.timezone,
            },
        )
    })
    .await
}

fn stock_answer(clinic_id: String, output: Output) -> Answer {
    match output {
        Output::Stock(s) => ok(
            StatusCode::OK,
            &ClinicStockJson {
                clinic_id,
                vaccine: s.vaccine.to_string(),
                on_hand: s.on_hand,
                reserved: s.reserved,
                available: s.available,
            },
        ),
        other => Err(unexpected(other)),
    }
}

/// Receives doses into a batch (created on first delivery; later deliveries add to it).
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/stock", tag = "catalogue",
    params(("clinic_id" = String, Path)),
    request_body = StockBody,
    responses((status = 200, body = ClinicStockJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown clinic or vaccine"),
        (status = 409, body = ErrorBody, description = "BATCH_MISMATCH: the batch exists with another expiry"), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn receive_stock(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    StrictPath(clinic_id): StrictPath<String>,
    StrictJson(body): StrictJson<StockBody>,
) -> Response {
    let prepared = (|| {
        caller.require_role(&[Role::Authority])?;
        check_id("clinic_id", &clinic_id)?;
        body.validate()?;
        idempotency_key(&headers)
    })();
    let key = match prepared {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let what = format!("POST /v1/clinics/{clinic_id}/stock");
    let node = state.node.clone();
    let command = Command::ReceiveStock {
        clinic_id: clinic_id.clone(),
        vaccine: body.vaccine.clone(),
        batch: body.batch.clone(),
        quantity: body.quantity,
        expires_on: body.expires_on,
    };
    idempotent(&state, &caller.0, key, &what, &body, move || async move {
        let output = node.exec(node.clinic_shard(&clinic_id), command).await?;
        stock_answer(clinic_id, output)
    })
    .await
}

/// Adjusts a batch (breakage, cold-chain loss, recount). Going below what is reserved is
/// allowed and flags the newest appointments `at_risk`; going below zero is 409.
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/stock/adjust", tag = "catalogue",
    params(("clinic_id" = String, Path)),
    request_body = AdjustBody,
    responses((status = 200, body = ClinicStockJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "INSUFFICIENT_STOCK"), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn adjust_stock(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    StrictPath(clinic_id): StrictPath<String>,
    StrictJson(body): StrictJson<AdjustBody>,
) -> Response {
    let prepared = (|| {
        check_id("clinic_id", &clinic_id)?;
        require_authority_or_staff_of(&caller, &clinic_id)?;
        body.validate()?;
        idempotency_key(&headers)
    })();
    let key = match prepared {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let what = format!("POST /v1/clinics/{clinic_id}/stock/adjust");
    let node = state.node.clone();
    let command = Command::AdjustStock {
        clinic_id: clinic_id.clone(),
        vaccine: body.vaccine.clone(),
        batch: body.batch.clone(),
        delta: body.delta,
        reason: body.reason.clone(),
    };
    idempotent(&state, &caller.0, key, &what, &body, move || async move {
        let output = node.exec(node.clinic_shard(&clinic_id), command).await?;
        stock_answer(clinic_id, output)
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn put_slots_common(
    state: &AppState,
    caller: &Caller,
    key: Option<String>,
    what: String,
    clinic_id: String,
    slots: Vec<(String, holdfast_engine::model::SlotSpec)>,
    body: &impl serde::Serialize,
    single: bool,
) -> Response {
    let node = state.node.clone();
    idempotent(state, &caller.0, key, &what, body, move || async move {
        let shard = node.clinic_shard(&clinic_id);
        match node
            .exec(
                shard,
                Command::PutSlots {
                    clinic_id: clinic_id.clone(),
                    slots,
                },
            )
            .await?
        {
            Output::Slots(views) if single && views.len() == 1 => {
                ok(StatusCode::OK, &SlotJson::from(&views[0]))
            }
            Output::Slots(views) => ok(
                StatusCode::OK,
                &SlotsJson {
                    clinic_id,
                    slots: views.iter().map(SlotJson::from).collect(),
                },
            ),
            other => Err(unexpected(other)),
        }
    })
    .await
}

/// Creates or updates one slot. Capacity may not shrink below the seats already taken.
#[utoipa::path(put, path = "/v1/clinics/{clinic_id}/slots/{slot_id}", tag = "catalogue",
    params(("clinic_id" = String, Path), ("slot_id" = String, Path)),
    request_body = SlotBody,
    responses((status = 200, body = SlotJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown clinic or vaccine"),
        (status = 409, body = ErrorBody, description = "CAPACITY_IN_USE or SLOT_CANCELLED"), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_slot(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    StrictPath((clinic_id, slot_id)): StrictPath<(String, String)>,
    StrictJson(body): StrictJson<SlotBody>,
) -> Response {
    let prepared = (|| {
        caller.require_role(&[Role::Authority])?;
        check_id("clinic_id", &clinic_id)?;
        check_id("slot_id", &slot_id)?;
        let b = body.clone();
        let spec = slot_spec(
            "",
            b.start,
            b.end,
            b.capacity,
            b.vaccines,
            b.priority_reserve,
        )?;
        Ok::<_, ApiError>((spec, idempotency_key(&headers)?))
    })();
    let (spec, key) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let what = format!("PUT /v1/clinics/{clinic_id}/slots/{slot_id}");
    put_slots_common(
        &state,
        &caller,
        key,
        what,
        clinic_id,
        vec![(slot_id, spec)],
        &body,
        true,
    )
    .await
}

/// Creates or updates up to 1,000 slots at once, all or nothing (body up to 1 MiB).
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/slots", tag = "catalogue",
    params(("clinic_id" = String, Path)),
    request_body = BulkSlotsBody,
    responses((status = 200, body = SlotsJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_slots(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    StrictPath(clinic_id): StrictPath<String>,
    StrictJsonBulk(body): StrictJsonBulk<BulkSlotsBody>,
) -> Response {
    let prepared = (|| {
        caller.require_role(&[Role::Authority])?;
        check_id("clinic_id", &clinic_id)?;
        Ok::<_, ApiError>((body.clone().validate()?, idempotency_key(&headers)?))
    })();
    let (slots, key) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let what = format!("POST /v1/clinics/{clinic_id}/slots");
    put_slots_common(&state, &caller, key, what, clinic_id, slots, &body, false).await
}

/// Cancels a slot: its PENDING and CONFIRMED appointments become CLINIC_CANCELLED with
/// `rebook_priority`, and their doses return.
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/slots/{slot_id}/cancel", tag = "catalogue",
    params(("clinic_id" = String, Path), ("slot_id" = String, Path)),
    request_body = CancelSlotBody,
    responses((status = 200, body = SlotCancelledJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn cancel_slot(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    StrictPath((clinic_id, slot_id)): StrictPath<(String, String)>,
    StrictJson(body): StrictJson<CancelSlotBody>,
) -> Response {
    let prepared = (|| {
        check_id("clinic_id", &clinic_id)?;
        check_id("slot_id", &slot_id)?;
        require_authority_or_staff_of(&caller, &clinic_id)?;
        if body.reason.trim().is_empty() || body.reason.len() > TEXT_BYTES_MAX {
            return Err(ApiError::bad_request(
                "reason",
                format!("reason must be 1-{TEXT_BYTES_MAX} bytes"),
            ));
        }
        idempotency_key(&headers)
    })();
    let key = match prepared {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let what = format!("POST /v1/clinics/{clinic_id}/slots/{slot_id}/cancel");
    let node = state.node.clone();
    let command = Command::CancelSlot {
        clinic_id: clinic_id.clone(),
        slot_id,
        reason: body.reason.clone(),
    };
    idempotent(&state, &caller.0, key, &what, &body, move || async move {
        match node.exec(node.clinic_shard(&clinic_id), command).await? {
            Output::SlotCancelled { slot, affected } => ok(
                StatusCode::OK,
                &SlotCancelledJson {
                    clinic_id,
                    slot: SlotJson::from(&slot),
                    affected_appointment_ids: affected.iter().map(ToString::to_string).collect(),
                },
            ),
            other => Err(unexpected(other)),
        }
    })
    .await
}

/// Creates or updates a citizen's record (on the citizen's own shard).
#[utoipa::path(put, path = "/v1/citizens/{citizen_id}", tag = "catalogue",
    params(("citizen_id" = String, Path)),
    request_body = CitizenBody,
    responses((status = 200, body = CitizenJson), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_citizen(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    StrictPath(citizen_id): StrictPath<String>,
    StrictJson(body): StrictJson<CitizenBody>,
) -> Response {
    let prepared = (|| {
        caller.require_role(&[Role::Authority])?;
        check_id("citizen_id", &citizen_id)?;
        Ok::<_, ApiError>((body.clone().validate()?, idempotency_key(&headers)?))
    })();
    let (record, key) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let what = format!("PUT /v1/citizens/{citizen_id}");
    let node = state.node.clone();
    let echo = body.clone();
    idempotent(&state, &caller.0, key, &what, &body, move || async move {
        let shard = node.citizen_shard(&citizen_id);
        node.exec(
            shard,
            Command::PutCitizen {
                citizen_id: citizen_id.clone(),
                record,
            },
        )
        .await?;
        ok(
            StatusCode::OK,
            &CitizenJson {
                citizen_id,
                citizen: echo,
            },
        )
    })
    .await
}

/// Clinics, optionally of one region and offering one vaccine, with available doses.
#[utoipa::path(get, path = "/v1/clinics", tag = "availability",
    params(ClinicsQuery),
    responses((status = 200, body = ClinicsJson), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list_clinics(
    State(state): State<AppState>,
    StrictQuery(query): StrictQuery<ClinicsQuery>,
) -> Response {
    let answer = async {
        let region = non_empty(&query.region).map(str::to_string);
        let vaccine = non_empty(&query.vaccine).map(str::to_string);
        if let Some(r) = &region {
            check_id("region", r)?;
        }
        if let Some(v) = &vaccine {
            check_id("vaccine", v)?;
        }
        let per_shard = state
            .node
            .read_all(move |rt| rt.state().clinics(region.as_deref(), vaccine.as_deref()))
            .await?;
        let mut clinics: Vec<ClinicSummaryJson> = per_shard
            .iter()
            .flatten()
            .map(ClinicSummaryJson::from)
            .collect();
        clinics.sort_by(|a, b| a.clinic_id.cmp(&b.clinic_id));
        ok(StatusCode::OK, &ClinicsJson { clinics })
    };
    into_response(answer.await)
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
) -> Response {
    let answer = async {
        check_id("clinic_id", &clinic_id)?;
        let vaccine = non_empty(&query.vaccine).map(str::to_string);
        if let Some(v) = &vaccine {
            check_id("vaccine", v)?;
        }
        let shard = state.node.clinic_shard(&clinic_id);
        let from = query_instant_ms("from", &query.from)?;
        let to = query_instant_ms("to", &query.to)?;
        let view = state
            .node
            .read(shard, move |rt| {
                rt.state()
                    .availability(&clinic_id, vaccine.as_deref(), from, to)
            })
            .await??;
        ok(StatusCode::OK, &AvailabilityJson::from(&view))
    };
    into_response(answer.await)
}
