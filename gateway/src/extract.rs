//! Request extractors that reject bad input in the API's error shape.
//!
//! axum's own `Json`, `Query` and `Path` answer bad input with plain-text bodies and, for
//! JSON, with 422 and 415 where the contract wants 400. This module owns their replacements:
//!
//! - [`StrictJson`] / [`StrictJsonBulk`]: `Content-Type: application/json` or 415, a bounded
//!   body ([`BODY_BYTES_MAX`] / [`BULK_BODY_BYTES_MAX`]) or 413, then deserialisation where
//!   every failure (syntax, wrong type, missing or unknown field, empty body) is 400
//!   `BAD_REQUEST` with `details.field` naming the offending field path, e.g.
//!   `slots[3].capacity` (tracked by `serde_path_to_error`), or `body` when the body as a
//!   whole is wrong.
//! - [`OptionalEmptyBody`]: for POSTs that take no body; reads and drops up to
//!   [`BODY_BYTES_MAX`].
//! - [`StrictQuery`] and [`StrictPath`]: 400 with `details.field` instead of plain text.
//!
//! Every body is read within a deadline ([`BodyReadTimeout`], set per request by the
//! connection layer; [`BODY_READ_TIMEOUT_DEFAULT`] without one): a client that promises a body
//! and trickles it, or never sends it, is answered 408 `REQUEST_TIMEOUT` and its connection
//! closed, instead of holding a task for as long as it likes. Nothing reaches a shard before
//! its body is read, so a slow body never holds a shard.
//!
//! Rejecting unknown fields is the target type's choice (`#[serde(deny_unknown_fields)]`);
//! these extractors only report it well.

use crate::error::ApiError;
use axum::body::{Body, HttpBody};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, RawPathParams, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use std::pin::Pin;
use std::time::Duration;

/// Largest accepted request body, in bytes, for every endpoint but the bulk slot upload.
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// Largest accepted body, in bytes, for the bulk slot upload (at most 1,000 slots).
pub const BULK_BODY_BYTES_MAX: usize = 1024 * 1024;

/// How long reading a whole request body may take, from its first byte asked for to its end,
/// when the connection layer did not say ([`BodyReadTimeout`]). The largest body, a 1 MiB bulk
/// upload, needs 35 KB/s to arrive in time; a 64 KiB booking body 2.2 KB/s.
pub const BODY_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// The body read deadline of one request, a request extension the connection layer inserts
/// (`holdfast_server::connections`); [`BODY_READ_TIMEOUT_DEFAULT`] when absent.
///
/// The clock starts when an extractor begins reading, not when the request arrived, so time a
/// request spends waiting before its handler runs is not charged to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReadTimeout(pub Duration);

/// A JSON body of at most [`BODY_BYTES_MAX`] bytes, deserialised into `T`.
///
/// Rejections: 415 without `Content-Type: application/json`, 413 over the limit, 408 when the
/// body does not arrive within its deadline, 400 for anything `T` does not accept.
#[derive(Debug, Clone, Copy, Default)]
pub struct StrictJson<T>(pub T);

/// [`StrictJson`] with the bulk limit, [`BULK_BODY_BYTES_MAX`] bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct StrictJsonBulk<T>(pub T);

impl<T, S> FromRequest<S> for StrictJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        json_body(req, BODY_BYTES_MAX).await.map(StrictJson)
    }
}

impl<T, S> FromRequest<S> for StrictJsonBulk<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        json_body(req, BULK_BODY_BYTES_MAX)
            .await
            .map(StrictJsonBulk)
    }
}

/// A body the endpoint ignores (confirm, cancel). Any content up to [`BODY_BYTES_MAX`] bytes is
/// accepted and dropped, so clients that send `{}` or nothing both work; a larger one is 413,
/// so the server never buffers an unbounded body it does not even need.
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalEmptyBody;

impl<S> FromRequest<S> for OptionalEmptyBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        read_body(&parts, body, BODY_BYTES_MAX).await?;
        Ok(OptionalEmptyBody)
    }
}

/// axum's [`Query`] with its rejection turned into 400 `BAD_REQUEST` with `details.field`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StrictQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for StrictQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(StrictQuery(value)),
            Err(rejection) => Err(query_error(rejection)),
        }
    }
}

/// axum's [`Path`] with its rejection turned into 400 `BAD_REQUEST` with `details.field`.
///
/// A route/extractor mismatch (wrong number of parameters, no parameters at all) is a bug in
/// the router, not bad input, and stays a 500.
#[derive(Debug, Clone, Copy, Default)]
pub struct StrictPath<T>(pub T);

impl<T, S> FromRequestParts<S> for StrictPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(StrictPath(value)),
            Err(rejection) => {
                // Tuples and single values fail by position; the route's own parameter names
                // (in order) turn that position into a field name.
                let names = match RawPathParams::from_request_parts(parts, state).await {
                    Ok(params) => params.iter().map(|(name, _)| name.to_owned()).collect(),
                    Err(_) => Vec::new(),
                };
                Err(path_error(rejection, &names))
            }
        }
    }
}

/// Deserialises JSON bytes into `T`, reporting failures as 400 with `details.field`.
///
/// This is the decoding half of [`StrictJson`], public for callers that hold the bytes
/// already (for example a body kept for idempotency comparison).
pub fn from_json_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde_json would say "EOF while parsing a value at line 1 column 0"; say it plainly.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "body",
            "the request body is empty; a JSON body is required",
        ));
    }
    // What serde_json::from_slice does, with the path of the value being read tracked.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|err| ApiError::bad_request(&json_error_field(&err), err.inner().to_string()))?;
    // Anything but whitespace after the value is a syntax error of the whole body.
    deserializer
        .end()
        .map_err(|err| ApiError::bad_request("body", err.to_string()))?;
    Ok(value)
}

/// The one implementation behind [`StrictJson`] and [`StrictJsonBulk`].
async fn json_body<T: DeserializeOwned>(req: Request, limit_bytes: usize) -> Result<T, ApiError> {
    let (parts, body) = req.into_parts();
    // The media type is checked before the body is read: a client sending the wrong kind of
    // body learns it without uploading all of it first.
    if !is_json_content_type(&parts.headers) {
        return Err(ApiError::unsupported_media_type());
    }
    let bytes = read_body(&parts, body, limit_bytes).await?;
    from_json_slice(&bytes)
}

/// `application/json`, parameters (`; charset=utf-8`) allowed, case-insensitive.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Reads the whole body, never holding more than `limit_bytes` of it, within the request's
/// [`BodyReadTimeout`].
///
/// A declared `Content-Length` over the limit is refused before reading anything; a chunked
/// or lying body is refused as soon as it crosses the limit. The body is read frame by frame
/// here, rather than with `axum::body::to_bytes`, because that function's error does not say
/// whether the limit was hit (413) or the client's stream failed (400).
async fn read_body(parts: &Parts, body: Body, limit_bytes: usize) -> Result<Vec<u8>, ApiError> {
    let declared_bytes = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut body = body;
    if declared_bytes.is_some_and(|n| n > limit_bytes as u64) {
        // A client that asked `Expect: 100-continue` sends nothing until the body is read
        // (hyper sends the 100 then): leaving it unread answers 413 without the upload.
        if !expects_continue(&parts.headers) {
            drain(&mut body).await;
        }
        return Err(ApiError::payload_too_large(limit_bytes));
    }
    let timeout = parts
        .extensions
        .get::<BodyReadTimeout>()
        .map_or(BODY_READ_TIMEOUT_DEFAULT, |t| t.0);
    // A declared length is at most the limit here, so trusting it for the allocation is safe.
    let capacity = declared_bytes.unwrap_or(0) as usize;
    match tokio::time::timeout(timeout, read_frames(&mut body, capacity, limit_bytes)).await {
        Ok(read) => read,
        // The connection closes with the answer (see `ApiError::into_response`), so what the
        // client still sends is never read.
        Err(_) => Err(ApiError::request_timeout(timeout)),
    }
}

/// `Expect: 100-continue` (case-insensitive, RFC 9110 section 10.1.1).
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// The frames of `body`, concatenated, or 413 once they pass `limit_bytes`.
async fn read_frames(
    body: &mut Body,
    capacity: usize,
    limit_bytes: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut buffer = Vec::with_capacity(capacity);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let frame = frame.map_err(|err| {
            ApiError::bad_request("body", format!("could not read the request body: {err}"))
        })?;
        // Trailers carry no payload; only data frames count against the limit.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buffer.len() + data.len() > limit_bytes {
            drain(body).await;
            return Err(ApiError::payload_too_large(limit_bytes));
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer)
}

/// Most bytes of an oversized body read and thrown away before answering 413, so a client
/// that is still sending sees the answer instead of a reset connection. Past this the
/// connection is closed regardless.
pub const OVERSIZED_DRAIN_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How long the drain may take, so a slow sender cannot hold a task.
const OVERSIZED_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and discards the rest of a body, within `OVERSIZED_DRAIN_BYTES_MAX` and
/// `OVERSIZED_DRAIN_TIMEOUT`.
async fn drain(body: &mut Body) {
    let mut drained = 0usize;
    let read = async {
        while drained < OVERSIZED_DRAIN_BYTES_MAX {
            match std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
                Some(Ok(frame)) => drained += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(OVERSIZED_DRAIN_TIMEOUT, read).await;
}

/// The field path a failed deserialisation is about (`slots[3].capacity`), `body` when it is
/// about the body as a whole.
///
/// `serde_path_to_error` tracks the path of the value being read. Only data errors (wrong
/// type, missing or unknown field) get a path; a syntax error or an empty body is a problem
/// of the whole body.
fn json_error_field(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    if err.inner().classify() != serde_json::error::Category::Data {
        return "body".to_owned();
    }
    // The path of the top level is ".".
    let path = err.path().to_string();
    let path = if path == "." { "" } else { path.as_str() };
    // serde reports a missing or duplicate field from the object that holds it, after the
    // field's own key (or the object's end), so the path is the object's and only the
    // message names the field.
    let message = err.inner().to_string();
    if let Some(name) = ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| backticked_after(&message, prefix))
    {
        return join_path(path, name);
    }
    if path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// The backticked name following `prefix` in `message`: `missing field `x`` gives `x`.
fn backticked_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let start = message.find(prefix)? + prefix.len();
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// Maps axum's query rejection to 400 with `details.field`.
///
/// axum deserialises the query through `serde_path_to_error`, whose message reads
/// `limit: invalid digit found in string` when it knows the field; that prefix is the field.
fn query_error(rejection: QueryRejection) -> ApiError {
    let QueryRejection::FailedToDeserializeQueryString(inner) = rejection else {
        return from_unknown_rejection(rejection.status(), rejection.body_text(), "query");
    };
    // The source is the deserialiser's own message, without axum's "Failed to ..." preamble.
    let text = std::error::Error::source(&inner)
        .map(ToString::to_string)
        .unwrap_or_else(|| inner.body_text());
    let (field, message) = match text.split_once(": ") {
        Some((path, rest)) if is_field_path(path) => (path.to_owned(), rest.to_owned()),
        _ => {
            let named = ["missing field `", "unknown field `", "duplicate field `"]
                .iter()
                .find_map(|prefix| backticked_after(&text, prefix));
            (named.unwrap_or("query").to_owned(), text.clone())
        }
    };
    ApiError::bad_request(&field, format!("invalid query string: {message}"))
}

/// Whether `s` looks like a `serde_path_to_error` path (`a.b[0]`) rather than prose.
fn is_field_path(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']'))
}

/// Maps axum's path rejection to 400 with `details.field`, or 500 for router bugs.
/// `names` are the route's parameter names in order.
fn path_error(rejection: PathRejection, names: &[String]) -> ApiError {
    use axum::extract::path::ErrorKind;
    let PathRejection::FailedToDeserializePathParams(inner) = rejection else {
        return from_unknown_rejection(rejection.status(), rejection.body_text(), "path");
    };
    let kind = inner.kind();
    let message = format!("invalid path: {kind}");
    match kind {
        ErrorKind::ParseErrorAtKey { key, .. }
        | ErrorKind::InvalidUtf8InPathParam { key }
        | ErrorKind::DeserializeError { key, .. } => ApiError::bad_request(key, message),
        ErrorKind::ParseErrorAtIndex { index, .. } => {
            let field = names.get(*index).map_or("path", String::as_str);
            ApiError::bad_request(field, message)
        }
        ErrorKind::ParseError { .. } if names.len() == 1 => {
            ApiError::bad_request(&names[0], message)
        }
        ErrorKind::WrongNumberOfParameters { .. } | ErrorKind::UnsupportedType { .. } => {
            ApiError::internal(message)
        }
        _ => ApiError::bad_request("path", message),
    }
}

/// Rejection variants axum may add later (the enums are non-exhaustive): keep their status
/// class, give them our shape.
fn from_unknown_rejection(status: axum::http::StatusCode, text: String, field: &str) -> ApiError {
    if status.is_server_error() {
        ApiError::internal(text)
    } else {
        ApiError::bad_request(field, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, StatusCode};
    use axum::response::Response;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde::Deserialize;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct Hold {
        clinic_id: String,
        seats: u32,
        #[serde(default)]
        doses: Vec<Dose>,
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct Dose {
        vaccine: String,
        day: u32,
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct Filter {
        vaccine: String,
        limit: Option<u32>,
    }

    fn router() -> Router {
        Router::new()
            .route(
                "/hold",
                post(|StrictJson(hold): StrictJson<Hold>| async move { Json(hold) }),
            )
            .route(
                "/bulk",
                post(|StrictJsonBulk(v): StrictJsonBulk<Value>| async move { Json(v) }),
            )
            .route("/confirm", post(|_: OptionalEmptyBody| async { "done" }))
            .route(
                "/filter",
                get(|StrictQuery(f): StrictQuery<Filter>| async move { Json(f) }),
            )
            .route(
                "/items/{id}",
                get(|StrictPath(id): StrictPath<u32>| async move { id.to_string() }),
            )
            .route(
                "/clinics/{clinic_id}/slots/{seat}",
                get(
                    |StrictPath((clinic, seat)): StrictPath<(String, u16)>| async move {
                        format!("{clinic}/{seat}")
                    },
                ),
            )
    }

    async fn call(
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Response {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let request = request.body(body.into()).unwrap();
        router().oneshot(request).await.unwrap()
    }

    async fn post_json(uri: &str, body: &str) -> Response {
        call(Method::POST, uri, Some("application/json"), body.to_owned()).await
    }

    async fn json_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 21)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Asserts a 400 in the error shape and returns `details.field`.
    async fn bad_request_field(response: Response) -> String {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = json_of(response).await;
        assert_eq!(body["error"]["code"], "BAD_REQUEST", "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        body["error"]["details"]["field"]
            .as_str()
            .unwrap_or_else(|| panic!("no details.field in {body}"))
            .to_owned()
    }

    #[tokio::test]
    async fn valid_body_reaches_the_handler() {
        let response = post_json("/hold", r#"{"clinic_id": "c-1", "seats": 2}"#).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            json_of(response).await,
            json!({"clinic_id": "c-1", "seats": 2, "doses": []})
        );
    }

    #[tokio::test]
    async fn content_type_parameters_and_case_are_accepted() {
        for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
            let body = r#"{"clinic_id": "c", "seats": 1}"#;
            let response = call(Method::POST, "/hold", Some(content_type), body).await;
            assert_eq!(response.status(), StatusCode::OK, "{content_type}");
        }
    }

    #[tokio::test]
    async fn other_or_missing_content_type_is_415() {
        for content_type in [Some("text/plain"), Some("application/jsonx"), None] {
            let body = r#"{"clinic_id": "c", "seats": 1}"#;
            let response = call(Method::POST, "/hold", content_type, body).await;
            assert_eq!(
                response.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}"
            );
            let body = json_of(response).await;
            assert_eq!(body["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");
        }
    }

    fn padded_body(total_bytes: usize) -> String {
        // Whitespace is valid JSON padding, so only the size can make these fail.
        let core = r#"{"clinic_id": "c", "seats": 1}"#;
        format!("{core}{}", " ".repeat(total_bytes - core.len()))
    }

    #[tokio::test]
    async fn body_at_the_limit_is_accepted_one_byte_more_is_413() {
        let response = post_json("/hold", &padded_body(BODY_BYTES_MAX)).await;
        assert_eq!(response.status(), StatusCode::OK);

        let response = post_json("/hold", &padded_body(BODY_BYTES_MAX + 1)).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = json_of(response).await;
        assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
        assert_eq!(body["error"]["details"]["limit_bytes"], BODY_BYTES_MAX);
    }

    #[tokio::test]
    async fn declared_content_length_over_the_limit_is_413_before_reading() {
        let request = Request::post("/hold")
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, (BODY_BYTES_MAX + 1).to_string())
            .body(Body::from("{}"))
            .unwrap();
        let response = router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn chunked_body_over_the_limit_is_413() {
        // No Content-Length: the limit has to hold while reading.
        let first = padded_body(BODY_BYTES_MAX);
        let answer = raw_http(chunked_request(&[&first, " "])).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    }

    #[tokio::test]
    async fn chunked_body_in_several_frames_is_reassembled() {
        let answer = raw_http(chunked_request(&[
            r#"{"clinic_id": "#,
            r#""c-9", "seats""#,
            ": 3}",
        ]))
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""clinic_id":"c-9""#), "{answer}");
    }

    /// A request for `/hold` whose body sends `first` and then nothing, ever.
    fn stalled_request(first: &'static str, timeout: Option<Duration>) -> Request {
        use futures_util::StreamExt;
        let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(first)])
            .chain(futures_util::stream::pending());
        let mut request = Request::post("/hold")
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, "1000")
            .body(Body::from_stream(frames))
            .unwrap();
        if let Some(timeout) = timeout {
            request.extensions_mut().insert(BodyReadTimeout(timeout));
        }
        request
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_is_408_and_closes_the_connection() {
        let timeout = Duration::from_millis(50);
        let response = router()
            .oneshot(stalled_request("{\"clinic_id\"", Some(timeout)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[axum::http::header::CONNECTION], "close");
        let body = json_of(response).await;
        assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT");
        assert_eq!(body["error"]["details"]["timeout_ms"], 50);
        // A body that takes no deadline from the connection gets the default one, not none.
        let pending = router().oneshot(stalled_request("{", None));
        assert!(
            tokio::time::timeout(Duration::from_millis(100), pending)
                .await
                .is_err(),
            "the default deadline is long, not absent or zero"
        );
    }

    #[tokio::test]
    async fn deeply_nested_and_non_utf8_bodies_are_400_on_the_body() {
        // serde_json refuses nesting past 128 levels, so 100,000 brackets cost no stack (the
        // ordinary limit allows 60,000 of them).
        // A struct refuses the first bracket it does not expect; a free-form value (the bulk
        // route takes one) reads until the depth limit.
        let nested = "[".repeat(60_000);
        bad_request_field(post_json("/hold", &nested).await).await;
        let nested = "[".repeat(100_000);
        let field = bad_request_field(post_json("/bulk", &nested).await).await;
        assert_eq!(field, "body");
        let nested_object = format!(
            r#"{{"clinic_id": "c", "seats": 1, "doses": {}}}"#,
            "[{\"vaccine\": ".repeat(5_000)
        );
        assert_eq!(
            response_status(post_json("/hold", &nested_object).await),
            StatusCode::BAD_REQUEST
        );
        let mut bytes = br#"{"clinic_id": "c"#.to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe, 0x80]);
        bytes.extend_from_slice(br#"", "seats": 1}"#);
        let response = call(Method::POST, "/hold", Some("application/json"), bytes).await;
        assert_eq!(bad_request_field(response).await, "body");
    }

    fn response_status(response: Response) -> StatusCode {
        response.status()
    }

    #[tokio::test]
    async fn bulk_limit_is_larger() {
        let big = format!("[{}]", vec!["1"; BODY_BYTES_MAX].join(","));
        assert!(big.len() > BODY_BYTES_MAX && big.len() <= BULK_BODY_BYTES_MAX);
        let response = post_json("/bulk", &big).await;
        assert_eq!(response.status(), StatusCode::OK);

        let response = post_json("/bulk", &" ".repeat(BULK_BODY_BYTES_MAX + 1)).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = json_of(response).await;
        assert_eq!(body["error"]["details"]["limit_bytes"], BULK_BODY_BYTES_MAX);
    }

    #[tokio::test]
    async fn unknown_field_is_400_naming_it() {
        let body = r#"{"clinic_id": "c", "seats": 1, "foo": true}"#;
        assert_eq!(
            bad_request_field(post_json("/hold", body).await).await,
            "foo"
        );
    }

    #[tokio::test]
    async fn missing_field_is_400_naming_it() {
        let body = r#"{"clinic_id": "c"}"#;
        assert_eq!(
            bad_request_field(post_json("/hold", body).await).await,
            "seats"
        );
    }

    #[tokio::test]
    async fn wrong_type_is_400_naming_the_field() {
        let body = r#"{"clinic_id": "c", "seats": "two"}"#;
        assert_eq!(
            bad_request_field(post_json("/hold", body).await).await,
            "seats"
        );
        let body = r#"{"clinic_id": "c", "seats": -1}"#;
        assert_eq!(
            bad_request_field(post_json("/hold", body).await).await,
            "seats"
        );
        let body = r#"{"clinic_id": {"nested": 1}, "seats": 1}"#;
        assert_eq!(
            bad_request_field(post_json("/hold", body).await).await,
            "clinic_id"
        );
    }

    #[tokio::test]
    async fn nested_errors_name_the_full_path() {
        let ok = r#"{"vaccine": "pfz", "day": 1}"#;
        let body = format!(
            r#"{{"clinic_id": "c", "seats": 1, "doses": [{ok}, {{"vaccine": "pfz", "day": "x"}}]}}"#
        );
        assert_eq!(
            bad_request_field(post_json("/hold", &body).await).await,
            "doses[1].day"
        );
        let body = format!(r#"{{"clinic_id": "c", "seats": 1, "doses": [{ok}, {{"day": 2}}]}}"#);
        assert_eq!(
            bad_request_field(post_json("/hold", &body).await).await,
            "doses[1].vaccine"
        );
        let body = r#"{"clinic_id": "c", "seats": 1,
            "doses": [{"vaccine": "pfz", "day": 1, "extra": 0}]}"#;
        assert_eq!(
            bad_request_field(post_json("/hold", body).await).await,
            "doses[0].extra"
        );
    }

    #[tokio::test]
    async fn syntax_errors_and_empty_bodies_are_400_on_the_body() {
        for body in [
            "",
            "{",
            r#"{"clinic_id": "c",}"#,
            r#""text""#,
            "null",
            r#"{"clinic_id": "c", "seats": 1} x"#,
        ] {
            let field = bad_request_field(post_json("/hold", body).await).await;
            assert_eq!(field, "body", "{body:?}");
        }
    }

    #[tokio::test]
    async fn optional_empty_body_accepts_nothing_and_small_bodies() {
        for body in ["", "{}", "anything"] {
            let response = call(Method::POST, "/confirm", None, body).await;
            assert_eq!(response.status(), StatusCode::OK, "{body:?}");
        }
        let response = call(
            Method::POST,
            "/confirm",
            None,
            " ".repeat(BODY_BYTES_MAX + 1),
        )
        .await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn query_errors_are_400_naming_the_parameter() {
        let ok = call(Method::GET, "/filter?vaccine=pfz&limit=3", None, "").await;
        assert_eq!(ok.status(), StatusCode::OK);
        let missing = call(Method::GET, "/filter?limit=3", None, "").await;
        assert_eq!(bad_request_field(missing).await, "vaccine");
        let wrong_type = call(Method::GET, "/filter?vaccine=pfz&limit=x", None, "").await;
        assert_eq!(bad_request_field(wrong_type).await, "limit");
        let unknown = call(Method::GET, "/filter?vaccine=pfz&foo=1", None, "").await;
        assert_eq!(bad_request_field(unknown).await, "foo");
    }

    #[tokio::test]
    async fn path_errors_are_400_in_the_error_shape() {
        let ok = call(Method::GET, "/items/7", None, "").await;
        assert_eq!(ok.status(), StatusCode::OK);
        let bad = call(Method::GET, "/items/seven", None, "").await;
        assert_eq!(bad_request_field(bad).await, "id");
        let bad = call(Method::GET, "/clinics/c-1/slots/70000", None, "").await;
        assert_eq!(bad_request_field(bad).await, "seat");
    }

    #[test]
    fn an_enum_value_error_names_the_field_not_the_variant() {
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Status {
            Pending,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Update {
            status: Status,
        }
        let err = from_json_slice::<Update>(br#"{"status": "done"}"#).unwrap_err();
        assert_eq!(err.details["field"], "status");
        assert!(
            err.message.contains("unknown variant `done`"),
            "{}",
            err.message
        );
        assert!(from_json_slice::<Update>(br#"{"status": "pending"}"#).is_ok());
    }

    #[test]
    fn field_paths_follow_nesting_and_ignore_string_contents() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            #[serde(default)]
            k: String,
            #[serde(default)]
            a: Option<Middle>,
            #[serde(default)]
            n: u32,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Middle {
            b: Vec<Inner>,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            c: u32,
        }
        let field = |body: &str| {
            from_json_slice::<Outer>(body.as_bytes())
                .unwrap_err()
                .details["field"]
                .clone()
        };
        assert_eq!(field(r#"{"a": {"b": [{"c": 1}, {"c": "x"}]}}"#), "a.b[1].c");
        assert_eq!(field(r#"{"a": {"b": [{"c": 1}, {}]}}"#), "a.b[1].c");
        assert_eq!(field(r#"{"a": {"b": [{"c": 1, "c": 2}]}}"#), "a.b[0].c");
        assert_eq!(field(r#"{"a\"b": 1}"#), "a\"b");
        assert_eq!(field(r#"{"k": "v,}]{[", "n": "x"}"#), "n");
    }

    /// Sends `request` as raw bytes to the router served on a real socket and returns the
    /// whole raw answer. Used for chunked uploads, whose frames a `Body` built in memory
    /// cannot reproduce.
    async fn raw_http(request: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router()).await });
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        server.abort();
        String::from_utf8(answer).unwrap()
    }

    fn chunked_request(chunks: &[&str]) -> Vec<u8> {
        let mut request = "POST /hold HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
            Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_owned();
        for chunk in chunks {
            request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
        }
        request.push_str("0\r\n\r\n");
        request.into_bytes()
    }
}
