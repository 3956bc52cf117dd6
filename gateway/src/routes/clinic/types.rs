//! The bodies of the clinic's routes (docs/API.md, "Clinic (staff)"), with their OpenAPI
//! schemas and validation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::routes::fields::{check_id, client_id_schema};

/// `POST /v1/checkin`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckinBody {
    /// The token the QR code carries (`<appointment_id>.<base64url mac>`). Anything that is
    /// not a genuine token of the staff member's clinic is 403 `BAD_QR`.
    pub qr_token: String,
}

/// `POST /v1/appointments/{id}/administer`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdministerBody {
    /// The appointment's token, as scanned.
    pub qr_token: String,
    /// The batch the dose comes from (of the clinic's stock of the appointment's vaccine).
    #[schema(example = "B-1", schema_with = client_id_schema)]
    pub batch: String,
}

impl AdministerBody {
    pub fn validate(&self) -> Result<(), ApiError> {
        check_id("batch", &self.batch)
    }
}
