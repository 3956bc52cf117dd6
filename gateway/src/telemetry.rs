//! What every request leaves behind, whatever answers it (a handler, an extractor's
//! rejection, the 404/405 fallbacks): its `X-Request-Id`, a tracing span carrying that id,
//! one log line, and its request metrics.
//!
//! The id is the caller's when valid (1-[`REQUEST_ID_LEN_MAX`] characters of
//! `[A-Za-z0-9._-]`), else a new one: this process's random prefix and a counter, so ids are
//! unique across restarts without a random draw per request. Logs and labels name the route
//! by its template (`/v1/appointments/{id}`, axum's `MatchedPath`), never the raw path: ids
//! (citizens', appointments') stay out of the logs, and the label sets stay as few as the
//! routes. A request no route matched is labelled [`UNMATCHED_ROUTE`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics::{route_label, HTTP_REQUESTS_TOTAL, HTTP_REQUEST_DURATION_SECONDS};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id accepted from a caller (docs/API.md, "Operators").
pub const REQUEST_ID_LEN_MAX: usize = 128;

/// The route label of a request no route matched (404s, and requests refused before routing).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Whether a caller's request id may be echoed: 1-128 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    (1..=REQUEST_ID_LEN_MAX).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A new request id: `<8 hex digits of this process>-<counter in hex>`.
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).expect("the OS random number generator is unavailable");
        format!("{:08x}", u32::from_be_bytes(random))
    });
    let id = format!("{prefix}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed));
    HeaderValue::from_str(&id).expect("hex digits and a dash are a valid header value")
}

/// The request's method as a label value (the standard ones; anything else is `OTHER`).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// A status code as a label value, from a table made once (no formatting per request).
fn status_label(status: StatusCode) -> &'static str {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..1000).map(|code| code.to_string()).collect());
    labels
        .get(usize::from(status.as_u16()))
        .map_or("other", String::as_str)
}

/// The middleware (`axum::middleware::from_fn`), outermost on the router.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match request.headers().get(X_REQUEST_ID) {
        Some(given) if is_valid_request_id(given.as_bytes()) => given.clone(),
        _ => new_request_id(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, |m| route_label(m.as_str()));
    let method = method_label(request.method());
    // At debug, like the per-request line: at the default level (`info`) the span is off and
    // costs nothing, where an enabled one costs the log layer a slab entry and its fields
    // formatted into a string per request (the harness's launch run: 0.84-0.91 of the
    // booking rate with it on, within noise of the build before without; docs/PERFORMANCE.md).
    // The warn and error lines below carry the id, route and method themselves.
    let request_id = id.to_str().unwrap_or_default();
    let span = tracing::debug_span!("request", request_id, route, method);
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let labels = [
        ("route", route),
        ("method", method),
        ("status", status_label(status)),
    ];
    metrics::counter!(HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "route" => route)
        .record(elapsed.as_secs_f64());
    let _entered = span.enter();
    let (status, latency_us) = (status.as_u16(), elapsed.as_micros() as u64);
    match status {
        // The server's own failures; 503 is overload or recovery (retried), not a fault.
        500..=599 if status != 503 => {
            tracing::error!(
                request_id,
                route,
                method,
                status,
                latency_us,
                "request failed"
            )
        }
        // The overload bound's refusals: counted, and summed into one line a second.
        503 if response
            .extensions()
            .get::<crate::overload::Refused>()
            .is_some() =>
        {
            crate::overload::note_refused()
        }
        503 => tracing::warn!(
            request_id,
            route,
            method,
            status,
            latency_us,
            "request answered unavailable"
        ),
        _ => tracing::debug!(status, latency_us, "request"),
    }
    drop(_entered);
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked_by_length_and_alphabet() {
        assert!(is_valid_request_id(b"a"));
        assert!(is_valid_request_id(b"Req-1.2_x"));
        assert!(is_valid_request_id(&[b'x'; REQUEST_ID_LEN_MAX]));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(&[b'x'; REQUEST_ID_LEN_MAX + 1]));
        assert!(!is_valid_request_id(b"a b"));
        assert!(!is_valid_request_id(b"a/b"));
        assert!(!is_valid_request_id("é".as_bytes()));
    }

    #[test]
    fn new_request_ids_are_valid_and_distinct() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert!(is_valid_request_id(a.as_bytes()));
    }

    #[test]
    fn labels_are_static_and_bounded() {
        assert_eq!(status_label(StatusCode::NOT_FOUND), "404");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
        assert!(std::ptr::eq(
            route_label("/v1/appointments/{id}"),
            route_label("/v1/appointments/{id}")
        ));
    }
}
