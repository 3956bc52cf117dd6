//! The gateway's side of the Idempotency-Key protocol (docs/API.md, Conventions): the header and
//! its validation, the request's fingerprint, begin / replay / finish against the caller's
//! shard, which answers are stored, and answers that wait for their events' records.
//!
//! The shard's side (the table of keys, its bounds and its log records) is in the engine.
//!
//! A mutating handler validates its input, then hands [`idempotent`] the work to do as a
//! closure that returns an [`Answer`] (or a [`Deferred`] one). Without a key the work just
//! runs; with one, the first request runs it and stores its answer, and the others replay it.

use std::convert::Infallible;
use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header::CONTENT_TYPE, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use holdfast_engine::idempotency::{Begin, Fingerprint, IdemKey, IdemOutcome, StoredResponse};
use holdfast_engine::journal::Durable;
use holdfast_engine::node::RETRY_AFTER_S;
use holdfast_engine::saga::IdemRequest;
use holdfast_engine::Node;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

// ---- the header -----------------------------------------------------------------------

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest Idempotency-Key (docs/API.md).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Sent with a replayed answer.
const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A valid Idempotency-Key: 1-[`IDEMPOTENCY_KEY_BYTES_MAX`] printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key, or 400 `BAD_REQUEST` naming the header.
    pub fn parse(value: &HeaderValue) -> Result<IdempotencyKey, ApiError> {
        let bad = || {
            ApiError::bad_request(
                "Idempotency-Key",
                "Idempotency-Key must be 1-128 printable ASCII characters",
            )
        };
        let key = value.to_str().map_err(|_| bad())?;
        if key.is_empty()
            || key.len() > IDEMPOTENCY_KEY_BYTES_MAX
            || !key.bytes().all(|b| (0x20..=0x7e).contains(&b))
        {
            return Err(bad());
        }
        Ok(IdempotencyKey(key.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The Idempotency-Key header of a request, as sent.
///
/// Extracting it never fails: the handler validates it with [`IdempotencyHeader::optional`]
/// or [`IdempotencyHeader::required`] at the point of its own checks where the contract puts
/// it (after the role and the body, for most routes), which a rejecting extractor could not.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyHeader(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(IdempotencyHeader(
            parts.headers.get(IDEMPOTENCY_HEADER).cloned(),
        ))
    }
}

impl IdempotencyHeader {
    /// The key when one was sent; 400 when it is not a valid key.
    pub fn optional(&self) -> Result<Option<IdempotencyKey>, ApiError> {
        self.0.as_ref().map(IdempotencyKey::parse).transpose()
    }

    /// The key of a route that requires one (`what`, e.g. `POST /v1/appointments`): 400
    /// `IDEMPOTENCY_KEY_REQUIRED` when absent.
    pub fn required(&self, what: &str) -> Result<IdempotencyKey, ApiError> {
        self.optional()?.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "IDEMPOTENCY_KEY_REQUIRED",
                format!("{what} requires an Idempotency-Key header"),
            )
        })
    }
}

// ---- answers --------------------------------------------------------------------------

/// A JSON answer rendered once, so the bytes sent are the bytes stored for a replay.
#[derive(Debug, Clone)]
pub struct JsonAnswer {
    pub status: StatusCode,
    pub body: String,
}

impl IntoResponse for JsonAnswer {
    fn into_response(self) -> Response {
        json_response(self.status, self.body)
    }
}

/// What the work of a mutating request answers: JSON, or an error.
pub type Answer = Result<JsonAnswer, ApiError>;

/// `body` as a JSON answer with `status`.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Answer {
    serde_json::to_string(body)
        .map(|body| JsonAnswer { status, body })
        .map_err(|e| ApiError::internal(format!("rendering failed: {e}")))
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An answer decided before the events it reports are durable, with what to wait for before
/// it may leave. Lets a request's idempotency record join the same group commit as its
/// events instead of waiting for a flush of its own.
pub struct Deferred {
    pub answer: Answer,
    pub durable: Vec<Durable>,
}

/// What an idempotent handler returns: an [`Answer`] whose events are already durable, or a
/// [`Deferred`] one.
pub trait IntoDeferred {
    fn into_deferred(self) -> Deferred;
}

impl IntoDeferred for Answer {
    fn into_deferred(self) -> Deferred {
        Deferred {
            answer: self,
            durable: Vec::new(),
        }
    }
}

impl IntoDeferred for Deferred {
    fn into_deferred(self) -> Deferred {
        self
    }
}

/// Waits for every one of `durable`; the first failure replaces the answer (503).
async fn settle(answer: Answer, durable: Vec<Durable>) -> Answer {
    for d in durable {
        if let Err(e) = d.wait().await {
            tracing::warn!(error = %e, "an answer's events could not be stored");
            return Err(e.into());
        }
    }
    answer
}

// ---- what is stored -------------------------------------------------------------------

/// What makes two requests with one key the same request: `what` (method and path), then
/// the body as the handler read it, serialised again (so key order and whitespace do not
/// matter). Fingerprints are stored with their keys: changing this computation would turn
/// every retry of a stored key into `IDEMPOTENCY_KEY_REUSED` after an upgrade.
pub(crate) fn fingerprint<B: Serialize>(what: &str, body: &B) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(what.as_bytes());
    hasher.update(b"\n");
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    hasher.finalize().into()
}

/// Answers that reached a decision are stored and replayed; the rest may be retried.
fn is_stored(status: StatusCode) -> bool {
    status.is_success() || matches!(status.as_u16(), 404 | 409 | 410 | 422)
}

/// The stored form of `answer`, `None` when it is not stored (the key is then forgotten).
pub(crate) fn to_stored(answer: &Answer) -> Option<StoredResponse> {
    let (status, body) = match answer {
        Ok(json) => (json.status, json.body.clone()),
        Err(e) => (
            e.status,
            serde_json::to_string(&ErrorBody::from(e.clone())).unwrap_or_default(),
        ),
    };
    is_stored(status).then(|| StoredResponse {
        status: status.as_u16(),
        body: body.into(),
    })
}

pub(crate) fn replay(stored: &StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, stored.body.to_string());
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

// ---- the protocol ---------------------------------------------------------------------

/// The key of `caller` as the engine keeps it: the caller, the key, the fingerprint of
/// `what` and `body`, and the shard where the caller's keys live (a citizen's own shard).
pub(crate) fn idem_request<B: Serialize>(
    state: &AppState,
    caller: &Caller,
    key: &IdempotencyKey,
    what: &str,
    body: &B,
) -> IdemRequest {
    IdemRequest {
        caller: caller.0.sub.as_str().into(),
        key: key.as_str().into(),
        fingerprint: fingerprint(what, body),
        home: home_of(state, caller),
    }
}

/// The shard where `caller`'s keys live.
fn home_of(state: &AppState, caller: &Caller) -> u32 {
    let citizen = match caller.0.role {
        crate::auth::Role::Citizen => caller.0.citizen_id.as_deref(),
        _ => None,
    };
    state.node.idempotency_home(&caller.0.sub, citizen)
}

/// `IDEMPOTENCY_KEY_REUSED`.
pub(crate) fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
        "this Idempotency-Key was used with a different request",
    )
}

/// The shard that keeps the caller's keys is full of stored answers younger than their
/// retention (`--idempotency-keys-per-shard`): nothing was decided; retry once older ones
/// expire. Said apart from [`key_busy`] so an operator sees which bound was met.
pub(crate) fn keys_full() -> ApiError {
    ApiError::unavailable(
        RETRY_AFTER_S,
        "too many Idempotency-Keys are stored on this node (--idempotency-keys-per-shard); retry later",
    )
    .with_detail("reason", "idempotency_keys_full")
}

/// The first request with a key did not finish, or a bound was reached: retry.
pub(crate) fn key_busy() -> ApiError {
    ApiError::unavailable(
        RETRY_AFTER_S,
        "the request with this Idempotency-Key did not complete, or too many are in flight; retry shortly",
    )
}

/// Runs a mutating request under the Idempotency-Key protocol (docs/API.md, Conventions).
///
/// The request runs in its own task: a client that disconnects does not abandon a saga half
/// way, and the requests waiting on the same key still get its answer. `what` (method and
/// path) and `body` make the fingerprint, so the same key on another path or with another
/// body is `IDEMPOTENCY_KEY_REUSED`.
pub async fn idempotent<B, F, Fut, R>(
    state: &AppState,
    caller: &Caller,
    key: Option<IdempotencyKey>,
    what: &str,
    body: &B,
    run: F,
) -> Response
where
    B: Serialize,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoDeferred,
{
    let task = match key {
        None => tokio::spawn(async move {
            let Deferred { answer, durable } = run().await.into_deferred();
            settle(answer, durable).await.into_response()
        }),
        Some(key) => {
            let idem = idem_request(state, caller, &key, what, body);
            let node = state.node.clone();
            tokio::spawn(async move { under_key(&node, idem, run).await })
        }
    };
    task.await
        .unwrap_or_else(|e| ApiError::internal(format!("request task failed: {e}")).into_response())
}

/// Begins the key on its home shard and acts on what it says: run the request, replay a
/// stored answer, or refuse.
async fn under_key<F, Fut, R>(node: &Node, idem: IdemRequest, run: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
    R: IntoDeferred,
{
    let key = IdemKey {
        caller: idem.caller.clone(),
        key: idem.key.clone(),
    };
    let outcome = match node
        .idempotency_begin_at(idem.home, key.clone(), idem.fingerprint)
        .await
    {
        Ok(outcome) => outcome,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match outcome {
        IdemOutcome::Begin(Begin::Proceed) => first(node, idem.home, key, run).await,
        IdemOutcome::Begin(Begin::Replay(stored)) | IdemOutcome::Finished(Some(stored)) => {
            replay(&stored)
        }
        IdemOutcome::Begin(Begin::Mismatch) => key_reused().into_response(),
        IdemOutcome::Begin(Begin::Full) => keys_full().into_response(),
        // Unreadable: the stored answer could not be read (logged by the shard); a retry may
        // read it, running the request again could do twice what the first did.
        IdemOutcome::Finished(None) | IdemOutcome::Begin(Begin::Queued | Begin::Unreadable) => {
            key_busy().into_response()
        }
    }
}

/// The first request with `key`: runs it, then finishes the key with its answer (stored, or
/// forgotten when it may be retried).
async fn first<F, Fut, R>(node: &Node, home: u32, key: IdemKey, run: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
    R: IntoDeferred,
{
    let Deferred {
        answer,
        mut durable,
    } = run().await.into_deferred();
    let stored = to_stored(&answer);
    // The answer leaves only once its events and its idempotency record are stored, so a
    // replay after a crash finds it instead of running the request again. The record is
    // queued behind the events (one writer, in order), so both usually share one group
    // commit.
    match node.idempotency_finish_at(home, key, stored).await {
        Ok(record) => {
            durable.push(record);
            settle(answer, durable).await.into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not store an idempotent answer");
            ApiError::from(e).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &[u8]) -> IdempotencyHeader {
        IdempotencyHeader(Some(HeaderValue::from_bytes(value).unwrap()))
    }

    #[test]
    fn keys_are_1_to_128_printable_ascii_characters() {
        for good in [&b"k"[..], b"order 42/retry~1", &[b'x'; 128]] {
            let key = header(good).optional().unwrap().unwrap();
            assert_eq!(key.as_str().as_bytes(), good);
        }
        for bad in [&b""[..], &[b'x'; 129], b"tab\there", "caf\u{e9}".as_bytes()] {
            let err = header(bad).optional().unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert_eq!(err.details["field"], "Idempotency-Key");
        }
    }

    #[test]
    fn an_absent_key_is_none_or_required() {
        let absent = IdempotencyHeader::default();
        assert_eq!(absent.optional().unwrap(), None);
        let err = absent.required("POST /v1/appointments").unwrap_err();
        assert_eq!(err.code, "IDEMPOTENCY_KEY_REQUIRED");
        assert_eq!(
            err.message,
            "POST /v1/appointments requires an Idempotency-Key header"
        );
        // An invalid key is a bad key, not a missing one.
        let err = header(b"").required("POST /v1/appointments").unwrap_err();
        assert_eq!(err.code, "BAD_REQUEST");
    }

    #[test]
    fn decided_answers_are_stored_the_others_may_be_retried() {
        for status in [200, 201, 404, 409, 410, 422] {
            assert!(is_stored(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [400, 401, 403, 413, 415, 429, 500, 503] {
            assert!(
                !is_stored(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        let stored = to_stored(&Err(ApiError::new(
            StatusCode::GONE,
            "HOLD_EXPIRED",
            "late",
        )))
        .expect("a 410 is stored");
        assert_eq!(stored.status, 410);
        assert_eq!(
            &*stored.body,
            r#"{"error":{"code":"HOLD_EXPIRED","message":"late","details":{}}}"#
        );
        assert!(to_stored(&Err(ApiError::unavailable(1, "busy"))).is_none());
    }

    /// Fingerprints are stored with their keys (and survive restarts), so their computation
    /// must not change: SHA-256 of `what`, a newline, and the body's JSON.
    #[test]
    fn the_fingerprint_is_stable() {
        #[derive(Serialize)]
        struct Body {
            reason: &'static str,
        }
        let hex = |f: Fingerprint| f.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(fingerprint(
                "POST /v1/clinics/c-1/slots/s-1/cancel",
                &Body { reason: "flood" }
            )),
            "e1bf9a67caa7fd41c0107720d6ef003aea14324ffc08c9aefeff46ef35e9c6f3"
        );
        assert_eq!(
            hex(fingerprint("POST /v1/appointments/a-1/confirm", &())),
            "4c4afdd93f6d29fddac8f41fac61e39a556829dd95ae3a28de801dc7682ab2fd"
        );
    }
}
