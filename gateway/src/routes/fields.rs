//! What the bodies of every route family share: checks of ids, free text and short lists,
//! instants as RFC 3339, and empty query filters.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use holdfast_engine::ids::is_valid_client_id;

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
