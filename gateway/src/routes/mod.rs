//! HTTP handlers, one module per part of the contract (docs/API.md): the catalogue and
//! availability, booking, the clinic's check-in and administration, the waitlist, operators,
//! the waiting room ([`queue`]), the event streams ([`streams`]), the audit log ([`audit`]) and the operators' console page
//! ([`console`]). Each family keeps its request and response bodies beside its handlers
//! (`<family>/types.rs`); what they share is in [`fields`], and the authorisation checks
//! several families use are here.

pub mod audit;
pub mod booking;
pub mod catalogue;
pub mod clinic;
pub mod console;
pub mod fields;
pub mod ops;
pub mod queue;
pub mod streams;
pub mod waitlist;

use holdfast_engine::Output;

use crate::auth::{Caller, Role};
use crate::error::ApiError;

/// Staff of `clinic_id`, or an authority.
pub(crate) fn require_authority_or_staff_of(
    caller: &Caller,
    clinic_id: &str,
) -> Result<(), ApiError> {
    match caller.0.role {
        Role::Authority => Ok(()),
        Role::Staff if caller.0.clinic_id.as_deref() == Some(clinic_id) => Ok(()),
        Role::Staff => Err(ApiError::forbidden(
            "staff may act only for their own clinic",
        )),
        _ => caller.require_role(&[Role::Authority, Role::Staff]),
    }
}

/// The citizen `citizen_id` itself, or an authority; anyone else is 403 with `refusal`.
pub(crate) fn require_citizen_or_authority(
    caller: &Caller,
    citizen_id: &str,
    refusal: &'static str,
) -> Result<(), ApiError> {
    let own = caller.0.citizen_id.as_deref() == Some(citizen_id);
    match caller.0.role {
        Role::Authority => Ok(()),
        Role::Citizen if own => Ok(()),
        _ => Err(ApiError::forbidden(refusal)),
    }
}

/// An engine answer of the wrong kind for the command sent: a bug, 500.
pub(crate) fn unexpected(output: Output) -> ApiError {
    ApiError::internal(format!("unexpected engine answer: {output:?}"))
}
