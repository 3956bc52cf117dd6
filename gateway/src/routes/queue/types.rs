//! The bodies of the waiting room's routes (docs/API.md, Admission on launch morning).

use serde::Serialize;
use utoipa::ToSchema;

use crate::admission::waiting_room::{Place, TicketView};
use crate::routes::fields::rfc3339;

/// A ticket of the waiting room, as `POST /v1/queue` and `GET /v1/queue/{ticket}` answer it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TicketJson {
    /// The ticket's id (for `GET /v1/queue/{ticket}`); good for its caller only.
    pub ticket: String,
    /// Place in line, from 1 (next to be admitted); 0 once admitted.
    #[schema(minimum = 0)]
    pub position: u64,
    /// Seconds until admission at the room's pace (position / admissions per second,
    /// rounded up); 0 once admitted.
    #[schema(minimum = 0)]
    pub estimated_wait_s: u64,
    /// Whether the ticket is admitted (then `admission_token` is set).
    pub admitted: bool,
    /// Once admitted: send it as the `Admission-Token` header of `POST /v1/appointments`.
    /// Good for one successful booking until `admission_expires_at`.
    pub admission_token: Option<String>,
    /// Once admitted: when the admission ends (RFC 3339, UTC).
    pub admission_expires_at: Option<String>,
}

impl TicketJson {
    pub fn render(view: &TicketView) -> TicketJson {
        let (position, estimated_wait_s, token, until) = match &view.place {
            Place::Waiting {
                position,
                estimated_wait_s,
            } => (*position, *estimated_wait_s, None, None),
            Place::Admitted { token, until_ms } => {
                (0, 0, Some(token.clone()), Some(rfc3339(*until_ms)))
            }
        };
        TicketJson {
            ticket: view.ticket.clone(),
            position,
            estimated_wait_s,
            admitted: token.is_some(),
            admission_token: token,
            admission_expires_at: until,
        }
    }
}
