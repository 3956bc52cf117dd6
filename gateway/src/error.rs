//! The one error shape of the HTTP API.
//!
//! Every answer that is not a success, whether it comes from a handler, from one of our
//! extractors or from the router's own fallbacks, is an [`ApiError`] and leaves the server as
//!
//! ```json
//! {"error": {"code": "SOLD_OUT", "message": "human readable", "details": {}}}
//! ```
//!
//! with `Content-Type: application/json` and, for 503s, a `Retry-After` header in whole
//! seconds. `details` is always an object so clients can index into it without a null check.
//!
//! [`ErrorBody`] is the serialised form. It exists separately from [`ApiError`] so the OpenAPI
//! document describes exactly the bytes [`IntoResponse`] writes: both go through it.
//!
//! The engine's errors become answers here too (`From<EngineError>`, `From<DomainError>`), so
//! a handler can `?` any engine call.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast_engine::node::RETRY_AFTER_S;
use holdfast_engine::{DomainError, EngineError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// An error answer: status, stable machine-readable code, human-readable message, details.
///
/// Build one with a named constructor (`ApiError::not_found(..)`) or [`ApiError::new`] for
/// domain codes (`SOLD_OUT`, `HOLD_EXPIRED`, ...), then add details with
/// [`ApiError::with_detail`]:
///
/// ```
/// use axum::http::StatusCode;
/// use holdfast_gateway::error::ApiError;
///
/// let err = ApiError::new(StatusCode::CONFLICT, "INVALID_TRANSITION", "appointment is final")
///     .with_detail("status", "ADMINISTERED");
/// assert_eq!(err.details["status"], "ADMINISTERED");
/// ```
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Stable code clients branch on (`SOLD_OUT`, `BAD_REQUEST`, ...).
    pub code: &'static str,
    /// Human-readable explanation; clients must not parse it.
    pub message: String,
    /// Structured context (`field`, `reasons`, `limit_bytes`, ...); empty when there is none.
    pub details: Map<String, Value>,
    /// Sent as `Retry-After` (whole seconds) when set; used by the 503 answers.
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    /// An error with the given status, code and message and no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after_s: None,
        }
    }

    /// Adds (or replaces) `details.<key>`.
    ///
    /// Values that cannot be represented as JSON (maps with non-string keys) are a programming
    /// error: they panic in debug builds and become `null` in release builds, because an error
    /// answer must still go out.
    #[must_use]
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Serialize) -> ApiError {
        let value = serde_json::to_value(value);
        debug_assert!(value.is_ok(), "error detail is not JSON: {value:?}");
        self.details
            .insert(key.into(), value.unwrap_or(Value::Null));
        self
    }

    /// 400 `BAD_REQUEST`, naming the offending input in `details.field`.
    pub fn bad_request(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message).with_detail("field", field)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 401 `UNAUTHENTICATED`: no token, or one that is malformed, forged or expired.
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    /// 403 `FORBIDDEN`: a valid token with the wrong role or for someone else's resource.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    /// 410 `EVENTS_GONE`: an event stream resuming from before the feed's retention.
    pub fn events_gone(message: impl Into<String>, oldest_seq: u64) -> ApiError {
        ApiError::new(StatusCode::GONE, "EVENTS_GONE", message)
            .with_detail("oldest_seq", oldest_seq)
    }

    /// 503 `UNAVAILABLE` with `Retry-After: <retry_after_s>`: overload or a shard not ready.
    pub fn unavailable(retry_after_s: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
        }
    }

    /// 503 `NOT_READY` with `Retry-After`, the answer of `/readyz` while shards recover.
    pub fn not_ready(retry_after_s: u32) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_READY",
                "not every shard of this node has recovered yet",
            )
        }
    }

    /// The same answer with another message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> ApiError {
        self.message = message.into();
        self
    }

    /// 413 `PAYLOAD_TOO_LARGE` with `details.limit_bytes`, so a client knows how to split.
    pub fn payload_too_large(limit_bytes: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the request body is larger than {limit_bytes} bytes"),
        )
        .with_detail("limit_bytes", limit_bytes)
    }

    /// 408 `REQUEST_TIMEOUT` with `details.timeout_ms`: the request's body did not arrive
    /// within its deadline. The connection closes with it.
    pub fn request_timeout(timeout: std::time::Duration) -> ApiError {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            format!("the request body did not arrive within {timeout_ms} ms"),
        )
        .with_detail("timeout_ms", timeout_ms)
    }

    /// 415 `UNSUPPORTED_MEDIA_TYPE`: every body of this API is JSON.
    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "the request body must be sent with Content-Type: application/json",
        )
    }

    /// 405 `METHOD_NOT_ALLOWED`: the path exists but not with this method.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "this path does not support this method",
        )
    }

    /// 500 `INTERNAL`: a bug. The message should help an operator, never echo secrets.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The contract treats every 500 as a bug; log it here, the one place all of them pass,
        // so none goes unnoticed.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(code = self.code, message = %self.message, "internal error answered");
        }
        let status = self.status;
        let retry_after_s = self.retry_after_s;
        let mut response = (status, Json(ErrorBody::from(self))).into_response();
        if let Some(seconds) = retry_after_s {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        // An oversized or late body may not have been read to its end: the connection cannot
        // carry another request, so say so instead of letting the client reuse it.
        if matches!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// The serialised form of every error answer: `{"error": {...}}`.
///
/// Used by [`ApiError`]'s [`IntoResponse`] and, as a schema, by the OpenAPI document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorObject,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorObject {
    /// Stable machine-readable code, e.g. `SOLD_OUT`.
    #[schema(example = "SOLD_OUT")]
    pub code: String,
    /// Human-readable explanation; not meant to be parsed.
    pub message: String,
    /// Structured context; always an object, `{}` when there is none.
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

impl From<ApiError> for ErrorBody {
    fn from(err: ApiError) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                code: err.code.to_owned(),
                message: err.message,
                details: err.details,
            },
        }
    }
}

/// `Router::fallback` handler: an unknown path is 404 `NOT_FOUND` in the error shape.
pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found("no such path")
}

/// `Router::method_not_allowed_fallback` handler: 405 `METHOD_NOT_ALLOWED` in the error shape.
///
/// axum applies this fallback only to the routes that exist when it is set, so the router must
/// install it after its last `route` call.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::method_not_allowed()
}

// ---- engine errors as HTTP ------------------------------------------------------------

/// Overload and shards that cannot serve yet are 503 with `Retry-After`; domain refusals get
/// their own status (see `From<DomainError>`).
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Domain(d) => d.into(),
            EngineError::Overloaded { shard } => ApiError::unavailable(
                RETRY_AFTER_S,
                format!("shard {shard} is overloaded; retry shortly"),
            ),
            EngineError::Unavailable { shard } => ApiError::unavailable(
                RETRY_AFTER_S,
                format!("shard {shard} is not available; retry shortly"),
            ),
            EngineError::Recovering { shard } => ApiError::unavailable(
                RETRY_AFTER_S,
                format!("shard {shard} is recovering its log; retry shortly"),
            )
            .with_detail("shard", shard),
            EngineError::DependencyUnavailable {
                dependency,
                retry_after_s,
            } => ApiError::unavailable(
                retry_after_s,
                format!("the {dependency} check is unavailable; retry later"),
            )
            .with_detail("dependency", dependency),
            EngineError::WritesRefused { shard, refusal } => {
                ApiError::unavailable(WRITES_REFUSED_RETRY_AFTER_S, refusal.to_string())
                    .with_detail("reason", refusal.reason())
                    .with_detail("shard", shard)
            }
        }
    }
}

/// `Retry-After` of a write refused because the disk is full or read-only, or the log
/// failed: an operator frees space or restarts, which takes longer than an overload's
/// second, and clients retrying every second would only add load to a node that is
/// already refusing.
pub const WRITES_REFUSED_RETRY_AFTER_S: u32 = 5;

/// A domain refusal keeps the engine's code and message; the status and the details that
/// help a client act on it are chosen here.
impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        let message = e.to_string();
        let code = e.code();
        let conflict = |message| ApiError::new(StatusCode::CONFLICT, code, message);
        match e {
            DomainError::NotFound(what) => {
                ApiError::not_found(message).with_detail("resource", what.as_str())
            }
            DomainError::NotYours => ApiError::forbidden(message),
            DomainError::ClaimLapsed => ApiError::unavailable(RETRY_AFTER_S, message),
            DomainError::TooLate { notice_s } => {
                conflict(message).with_detail("notice_seconds", notice_s)
            }
            DomainError::NotEligible { reasons } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
                    .with_detail("reasons", reasons)
            }
            DomainError::HoldExpired => ApiError::new(StatusCode::GONE, code, message),
            DomainError::InvalidTransition { status } => {
                conflict(message).with_detail("status", status.as_str())
            }
            DomainError::CapacityInUse { taken } => conflict(message).with_detail("taken", taken),
            DomainError::InsufficientStock { on_hand } => {
                conflict(message).with_detail("on_hand", on_hand)
            }
            DomainError::BatchMismatch { expires_on } => {
                conflict(message).with_detail("expires_on", expires_on.to_string())
            }
            DomainError::WrongBatch { vaccine } => {
                conflict(message).with_detail("vaccine", vaccine)
            }
            DomainError::BatchExpired { expires_on } => {
                conflict(message).with_detail("expires_on", expires_on.to_string())
            }
            _ => conflict(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{header::CONTENT_TYPE, Method, Request};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn body_json(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn body_has_the_contract_shape() {
        let response = ApiError::new(StatusCode::CONFLICT, "SOLD_OUT", "no seat left")
            .with_detail("slot_id", "s-1")
            .into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert!(response.headers().get(RETRY_AFTER).is_none());
        let body = body_json(response).await;
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "code": "SOLD_OUT",
                "message": "no seat left",
                "details": {"slot_id": "s-1"},
            }})
        );
    }

    #[tokio::test]
    async fn details_is_an_object_even_when_empty() {
        let body = body_json(ApiError::not_found("gone").into_response()).await;
        assert_eq!(body["error"]["details"], serde_json::json!({}));
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }

    #[tokio::test]
    async fn unavailable_sends_retry_after_in_seconds() {
        let response = ApiError::unavailable(3, "shard 7 is busy").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        assert_eq!(body_json(response).await["error"]["code"], "UNAVAILABLE");

        let response = ApiError::not_ready(1).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert_eq!(body_json(response).await["error"]["code"], "NOT_READY");
    }

    #[tokio::test]
    async fn constructors_set_status_code_and_details() {
        let cases = [
            (
                ApiError::bad_request("capacity", "too big"),
                400,
                "BAD_REQUEST",
            ),
            (
                ApiError::unauthenticated("no token"),
                401,
                "UNAUTHENTICATED",
            ),
            (ApiError::forbidden("not yours"), 403, "FORBIDDEN"),
            (ApiError::method_not_allowed(), 405, "METHOD_NOT_ALLOWED"),
            (ApiError::payload_too_large(10), 413, "PAYLOAD_TOO_LARGE"),
            (
                ApiError::request_timeout(std::time::Duration::from_millis(300)),
                408,
                "REQUEST_TIMEOUT",
            ),
            (
                ApiError::unsupported_media_type(),
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            (ApiError::internal("bug"), 500, "INTERNAL"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status.as_u16(), status, "{code}");
            assert_eq!(err.code, code);
        }
        assert_eq!(
            ApiError::bad_request("capacity", "x").details["field"],
            "capacity"
        );
        assert_eq!(ApiError::payload_too_large(10).details["limit_bytes"], 10);
    }

    #[test]
    fn error_body_round_trips_through_serde() {
        let body = ErrorBody::from(ApiError::forbidden("no").with_detail("n", 1));
        let text = serde_json::to_string(&body).unwrap();
        assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), body);
    }

    fn router() -> Router {
        Router::new()
            .route("/things", get(|| async { "ok" }))
            .fallback(not_found_fallback)
            .method_not_allowed_fallback(method_not_allowed_fallback)
    }

    #[tokio::test]
    async fn unknown_path_is_404_in_the_error_shape() {
        let request = Request::get("/nope").body(Body::empty()).unwrap();
        let response = router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "NOT_FOUND");
        assert_eq!(body["error"]["message"], "no such path");
        assert_eq!(body["error"]["details"], serde_json::json!({}));
    }

    #[tokio::test]
    async fn wrong_method_is_405_in_the_error_shape() {
        let request = Request::builder()
            .method(Method::DELETE)
            .uri("/things")
            .body(Body::empty())
            .unwrap();
        let response = router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
        assert_eq!(body["error"]["details"], serde_json::json!({}));
    }
}
