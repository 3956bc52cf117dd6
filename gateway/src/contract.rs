//! What the OpenAPI document says of every operation because every handler shares the same
//! extractors, added wherever the handler's own annotation does not say it already. Rules
//! kept here cannot drift from the extractors one route at a time, and hold for routes added
//! later without anyone remembering them:
//!
//! - a JSON request body ([`crate::extract::StrictJson`]): 400 `BAD_REQUEST` (bad JSON, a
//!   field out of range), 413 `PAYLOAD_TOO_LARGE`, 415 `UNSUPPORTED_MEDIA_TYPE`;
//! - a path or query parameter ([`crate::extract::StrictPath`], `StrictQuery`): 400 (a
//!   path segment that is not UTF-8, an unknown or mistyped query parameter);
//! - a bearer token ([`crate::auth::Caller`]): 401 `UNAUTHENTICATED` without one or with a
//!   bad one;
//! - an `Idempotency-Key` header ([`crate::idempotency::IdempotencyHeader`]): 400 for a
//!   malformed key, 422 `IDEMPOTENCY_KEY_REUSED` for a key used with another request, 503
//!   `UNAVAILABLE` while the first request with the key is still in flight;
//! - a path parameter named as one of [`CLIENT_ID_PATH_PARAMETERS`]: the schema of an id a
//!   client chooses ([`client_id_schema`]), which the handler checks with `check_id`.
//!
//! A handler documents the rest itself (its 403, 404, 409, 503, ...); checked by
//! server/tests/it/openapi.rs and, against the running server, by Schemathesis
//! (server/tests/contract/).

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, Response, ResponseBuilder};

use crate::routes::fields::client_id_schema;

/// Path parameters that are ids a client chose (1-64 characters of `[A-Za-z0-9_-]`),
/// whatever the route. (Appointment and waitlist ids are the server's own; a malformed one
/// is simply not found.)
pub const CLIENT_ID_PATH_PARAMETERS: [&str; 4] = ["clinic_id", "slot_id", "citizen_id", "vaccine"];

/// The header of the Idempotency-Key protocol (docs/API.md, Idempotency-Key).
const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// Adds the shared rules to every operation of `doc`.
pub fn complete(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            complete_operation(operation);
        }
    }
}

fn complete_operation(operation: &mut Operation) {
    let mut statuses: Vec<(&str, &str)> = Vec::new();
    if operation.request_body.is_some() {
        statuses.extend([
            (
                "400",
                "BAD_REQUEST: the body is not valid JSON or a field is invalid (details.field)",
            ),
            (
                "413",
                "PAYLOAD_TOO_LARGE: the body is over the limit (details.limit_bytes)",
            ),
            (
                "415",
                "UNSUPPORTED_MEDIA_TYPE: the body is not sent as application/json",
            ),
        ]);
    }
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    if parameters
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query))
    {
        statuses.push(("400", "BAD_REQUEST: a parameter is invalid (details.field)"));
    }
    if parameters
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Header && p.name == IDEMPOTENCY_KEY_HEADER)
    {
        statuses.extend([
            ("400", "BAD_REQUEST: a malformed Idempotency-Key"),
            (
                "422",
                "IDEMPOTENCY_KEY_REUSED: the key was used with another request",
            ),
            (
                "503",
                "UNAVAILABLE, with Retry-After: the first request with this key is in flight",
            ),
        ]);
    }
    for parameter in parameters.iter_mut() {
        if parameter.parameter_in == ParameterIn::Path
            && CLIENT_ID_PATH_PARAMETERS.contains(&parameter.name.as_str())
        {
            parameter.schema = Some(client_id_schema().into());
        }
    }
    if parameters.is_empty() {
        operation.parameters = None;
    }
    if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
        statuses.push(("401", "UNAUTHENTICATED: no bearer token, or a bad one"));
    }
    for (status, description) in statuses {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    }
}

/// A response in the error shape (`ErrorBody`).
fn error_response(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            "ErrorBody",
        ))))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build()
        .into()
}
