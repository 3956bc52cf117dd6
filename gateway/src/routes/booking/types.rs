//! The bodies of the booking routes (docs/API.md, Booking), with their OpenAPI schemas and
//! validation.

use holdfast_engine::view::AppointmentView;
use holdfast_engine::BookRequest;
use holdfast_engine::Status;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::routes::fields::{check_id, client_id_schema, non_empty, rfc3339, status_schema};
use crate::state::Settings;

/// Longest hold a client may ask for before `--max-hold` clamps it; anything above is
/// clamped anyway, this only keeps the arithmetic far from overflow.
pub const HOLD_SECONDS_MAX: i64 = 366 * 24 * 3600;

/// `POST /v1/appointments`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppointmentBody {
    #[schema(schema_with = client_id_schema)]
    pub clinic_id: String,
    #[schema(schema_with = client_id_schema)]
    pub slot_id: String,
    #[schema(schema_with = client_id_schema)]
    pub vaccine: String,
    #[schema(schema_with = client_id_schema)]
    pub citizen_id: String,
    /// At least 1; above `--max-hold` it is clamped. Absent: `--hold-ttl`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub hold_seconds: Option<i64>,
}

impl CreateAppointmentBody {
    pub fn validate(&self) -> Result<(), ApiError> {
        check_id("clinic_id", &self.clinic_id)?;
        check_id("slot_id", &self.slot_id)?;
        check_id("vaccine", &self.vaccine)?;
        check_id("citizen_id", &self.citizen_id)?;
        check_hold_seconds(self.hold_seconds)
    }

    /// The saga's request: the hold asked for, clamped to `--max-hold`, or `--hold-ttl`.
    pub fn book_request(&self, settings: &Settings) -> BookRequest {
        let hold_ms = hold_ms(self.hold_seconds, settings);
        BookRequest {
            clinic_id: self.clinic_id.clone(),
            slot_id: self.slot_id.clone(),
            vaccine: self.vaccine.clone(),
            citizen_id: self.citizen_id.clone(),
            hold_ms,
        }
    }
}

/// `POST /v1/appointments/{id}/reschedule`: where to (vaccine and citizen stay).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBody {
    #[schema(schema_with = client_id_schema)]
    pub clinic_id: String,
    #[schema(schema_with = client_id_schema)]
    pub slot_id: String,
    /// As on create: at least 1, clamped by `--max-hold`, absent: `--hold-ttl`. Used when
    /// the appointment moved is PENDING.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub hold_seconds: Option<i64>,
}

impl RescheduleBody {
    pub fn validate(&self) -> Result<(), ApiError> {
        check_id("clinic_id", &self.clinic_id)?;
        check_id("slot_id", &self.slot_id)?;
        check_hold_seconds(self.hold_seconds)
    }

    pub fn hold_ms(&self, settings: &Settings) -> i64 {
        hold_ms(self.hold_seconds, settings)
    }
}

fn check_hold_seconds(hold_seconds: Option<i64>) -> Result<(), ApiError> {
    match hold_seconds {
        Some(s) if s < 1 => Err(ApiError::bad_request(
            "hold_seconds",
            "hold_seconds must be 1 or more",
        )),
        _ => Ok(()),
    }
}

/// The hold asked for, clamped to `--max-hold`, or `--hold-ttl`.
fn hold_ms(hold_seconds: Option<i64>, settings: &Settings) -> i64 {
    hold_seconds
        .map(|s| s.min(HOLD_SECONDS_MAX) * 1000)
        .unwrap_or(settings.hold_ttl_ms)
        .min(settings.max_hold_ms)
}

/// An appointment: every field is always present, `null` where it does not apply.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppointmentJson {
    pub appointment_id: String,
    /// PENDING, CONFIRMED, ADMINISTERED, EXPIRED, RELEASED, REJECTED, CANCELLED, NO_SHOW,
    /// CLINIC_CANCELLED
    #[schema(schema_with = status_schema)]
    pub status: String,
    pub clinic_id: String,
    pub slot_id: String,
    pub vaccine: String,
    pub citizen_id: String,
    pub created_at: String,
    /// Set while PENDING.
    pub expires_at: Option<String>,
    pub confirmed_at: Option<String>,
    pub administered_at: Option<String>,
    pub batch: Option<String>,
    pub needs_review: bool,
    pub at_risk: bool,
    pub rebook_priority: bool,
    /// The appointment this one replaced (a reschedule).
    pub rescheduled_from: Option<String>,
    /// The appointment that replaced this one (a reschedule).
    pub rescheduled_to: Option<String>,
    /// Set while CONFIRMED: the token the clinic scans (also as `qr.svg`).
    pub qr_token: Option<String>,
    /// Made by a waitlist offer, not by the citizen's own request.
    pub offered_from_waitlist: bool,
}

impl AppointmentJson {
    pub fn render(a: &AppointmentView, qr_token: Option<String>) -> Self {
        AppointmentJson {
            appointment_id: a.id.to_string(),
            status: a.status.as_str().to_string(),
            clinic_id: a.clinic_id.to_string(),
            slot_id: a.slot_id.to_string(),
            vaccine: a.vaccine.to_string(),
            citizen_id: a.citizen_id.to_string(),
            created_at: rfc3339(a.created_at_ms),
            expires_at: a.expires_at_ms.map(rfc3339),
            confirmed_at: a.confirmed_at_ms.map(rfc3339),
            administered_at: a.administered_at_ms.map(rfc3339),
            batch: a.batch.clone(),
            needs_review: a.needs_review,
            at_risk: a.at_risk,
            rebook_priority: a.rebook_priority,
            rescheduled_from: a.rescheduled_from.map(|id| id.to_string()),
            rescheduled_to: a.rescheduled_to.map(|id| id.to_string()),
            qr_token,
            offered_from_waitlist: a.offered_from_waitlist,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppointmentsJson {
    pub appointments: Vec<AppointmentJson>,
}

/// `GET /v1/clinics/{clinic_id}/appointments`: query parameters, each optional (empty means
/// no filter too).
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClinicAppointmentsQuery {
    /// Only this slot's appointments.
    #[param(schema_with = client_id_schema)]
    pub slot_id: Option<String>,
    /// Only appointments in this status.
    #[param(schema_with = status_schema)]
    pub status: Option<String>,
}

impl ClinicAppointmentsQuery {
    /// The slot and the status to list, each `None` for all.
    pub fn filters(&self) -> Result<(Option<String>, Option<Status>), ApiError> {
        let slot = non_empty(&self.slot_id).map(str::to_string);
        if let Some(slot) = &slot {
            check_id("slot_id", slot)?;
        }
        let status = non_empty(&self.status)
            .map(|s| {
                Status::parse(s)
                    .ok_or_else(|| ApiError::bad_request("status", format!("unknown status {s}")))
            })
            .transpose()?;
        Ok((slot, status))
    }
}
