//! What the bodies of every route family share: checks of ids, free text and short lists,
//! instants as RFC 3339, and empty query filters; and the same constraints as OpenAPI schemas
//! (for `#[schema(schema_with = ...)]`), so a client generated from the document checks what
//! the server checks.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use holdfast_engine::ids::{is_valid_client_id, CLIENT_ID_BYTES_MAX};
use holdfast_engine::Status;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{Array, Object};

use crate::error::ApiError;

/// Longest free text (names, reasons, insurance ids).
pub const TEXT_BYTES_MAX: usize = 256;
/// Most entries in a short list field (regions, allergies, contraindications, vaccines of a
/// slot, doses of a citizen).
pub const LIST_ITEMS_MAX: usize = 64;

/// An id chosen by a client: 1-64 characters of `[A-Za-z0-9_-]`, else 400 naming `field`.
pub fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    if is_valid_client_id(value) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            field,
            format!("{field} must be 1-64 characters of [A-Za-z0-9_-]"),
        ))
    }
}

/// Free text: 1-[`TEXT_BYTES_MAX`] bytes, not only blanks, no control characters.
pub fn check_text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty()
        || value.len() > TEXT_BYTES_MAX
        || value.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            field,
            format!("{field} must be 1-{TEXT_BYTES_MAX} bytes of printable text"),
        ));
    }
    Ok(())
}

/// A list of ids of at most [`LIST_ITEMS_MAX`] entries.
pub fn check_list(field: &str, values: &[String]) -> Result<(), ApiError> {
    if values.len() > LIST_ITEMS_MAX {
        return Err(ApiError::bad_request(
            field,
            format!("{field} has more than {LIST_ITEMS_MAX} entries"),
        ));
    }
    values.iter().try_for_each(|v| check_id(field, v))
}

/// Unix ms as RFC 3339 in UTC, as every answer writes instants.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A clinic-local time as RFC 3339 with its UTC offset (`2027-03-28T03:00:00+02:00`; UTC
/// reads `+00:00`, not `Z`, so every local time has the same shape).
pub fn rfc3339_local(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A query parameter given empty (`?region=`) means "no filter".
pub fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// [`check_id`]'s rule as a regular expression (`CLIENT_ID_BYTES_MAX` is 64).
pub const CLIENT_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// The schema of an id a client chooses: what [`check_id`] accepts.
pub fn client_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(CLIENT_ID_PATTERN))
        .min_length(Some(1))
        .max_length(Some(CLIENT_ID_BYTES_MAX))
        .build()
}

/// The schema of a short list of ids: what [`check_list`] accepts.
pub fn client_id_list_schema() -> Array {
    ArrayBuilder::new()
        .items(client_id_schema())
        .max_items(Some(LIST_ITEMS_MAX))
        .build()
}

/// The schema of free text: what [`check_text`] accepts, as far as JSON Schema can say it
/// (`maxLength` counts characters, the server counts UTF-8 bytes).
pub fn text_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(TEXT_BYTES_MAX))
        .description(Some(format!(
            "1-{TEXT_BYTES_MAX} bytes of UTF-8, not only blanks, no control characters"
        )))
        .build()
}

/// The schema of an appointment's status: one of [`Status::ALL`].
pub fn status_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Status::ALL.iter().map(|s| s.as_str())))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_pattern_says_what_check_id_checks() {
        let bound = format!("{{1,{CLIENT_ID_BYTES_MAX}}}$");
        assert!(CLIENT_ID_PATTERN.ends_with(&bound), "{CLIENT_ID_PATTERN}");
        for ok in ["a", "A-z_09", &"x".repeat(CLIENT_ID_BYTES_MAX)] {
            assert!(check_id("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "é", "a/b", &"x".repeat(CLIENT_ID_BYTES_MAX + 1)] {
            assert!(check_id("f", bad).is_err(), "{bad}");
        }
    }
}
