//! The bodies of the waitlist routes (docs/API.md, Waitlist), with their OpenAPI schemas
//! and validation.

use holdfast_engine::waitlist::WaitlistView;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::routes::fields::{check_id, client_id_schema};

/// `POST /v1/clinics/{clinic_id}/slots/{slot_id}/waitlist`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinWaitlistBody {
    #[schema(schema_with = client_id_schema)]
    pub citizen_id: String,
    #[schema(schema_with = client_id_schema)]
    pub vaccine: String,
}

impl JoinWaitlistBody {
    pub fn validate(&self) -> Result<(), ApiError> {
        check_id("citizen_id", &self.citizen_id)?;
        check_id("vaccine", &self.vaccine)
    }
}

/// A new entry: its id (for `DELETE /v1/waitlist/{waitlist_id}`) and its position.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JoinedJson {
    pub waitlist_id: String,
    /// From 1 (the front of the list).
    pub position: u32,
}

/// One entry of a citizen's listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaitlistEntryJson {
    pub waitlist_id: String,
    pub clinic_id: String,
    pub slot_id: String,
    pub vaccine: String,
    /// From 1; closes up when someone ahead leaves or is served.
    pub position: u32,
}

impl WaitlistEntryJson {
    pub fn render(e: &WaitlistView) -> Self {
        WaitlistEntryJson {
            waitlist_id: e.id.to_string(),
            clinic_id: e.clinic_id.to_string(),
            slot_id: e.slot_id.to_string(),
            vaccine: e.vaccine.to_string(),
            position: e.position,
        }
    }
}

/// `GET /v1/citizens/{citizen_id}/waitlist`
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaitlistJson {
    pub entries: Vec<WaitlistEntryJson>,
}

/// `DELETE /v1/waitlist/{waitlist_id}`
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LeftJson {
    pub waitlist_id: String,
    /// Always `true`.
    pub left: bool,
}
