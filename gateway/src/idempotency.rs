//! The gateway's side of the Idempotency-Key protocol (API.md, Conventions): the header and
//! its validation, the request's fingerprint, begin / replay / finish against the caller's
//! shard, which answers are stored, and answers that wait for their events' records.
//!
//! The shard's side (the table of keys, its bounds and its log records) is in the engine.

use std::future::Future;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use holdfast_engine::actor::{Durable, IdemOutcome};
use holdfast_engine::idempotency::{Begin, StoredResponse};
use holdfast_engine::node::RETRY_AFTER_S;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::Claims;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// A JSON answer: status and body.
pub type Answer = Result<(StatusCode, String), ApiError>;

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

pub fn ok<T: Serialize>(status: StatusCode, body: &T) -> Answer {
    serde_json::to_string(body)
        .map(|b| (status, b))
        .map_err(|e| ApiError::internal(format!("rendering failed: {e}")))
}

pub fn into_response(answer: Answer) -> Response {
    match answer {
        Ok((status, body)) => json_response(status, body),
        Err(e) => e.into_response(),
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

// ---- Idempotency-Key ------------------------------------------------------------------

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest Idempotency-Key (API.md).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// The Idempotency-Key of a request, validated; `None` when absent.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
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
    Ok(Some(key.to_string()))
}

/// Answers that reached a decision are stored and replayed; the rest may be retried.
fn is_stored(status: StatusCode) -> bool {
    status.is_success() || matches!(status.as_u16(), 404 | 409 | 410 | 422)
}

fn answer_to_stored(answer: &Answer) -> (StatusCode, String) {
    match answer {
        Ok((status, body)) => (*status, body.clone()),
        Err(e) => (
            e.status,
            serde_json::to_string(&ErrorBody::from(e.clone())).unwrap_or_default(),
        ),
    }
}

fn replay(stored: &StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, stored.body.to_string());
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Runs a mutating request under the Idempotency-Key protocol (API.md, Conventions).
///
/// The request runs in its own task: a client that disconnects does not abandon a saga half
/// way, and the requests waiting on the same key still get its answer. `what` (method and
/// path) and `body` make the fingerprint, so the same key on another path or with another
/// body is `IDEMPOTENCY_KEY_REUSED`.
pub async fn idempotent<B, F, Fut, R>(
    state: &AppState,
    caller: &Claims,
    key: Option<String>,
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
    let Some(key) = key else {
        return run_detached(run).await;
    };
    let mut hasher = Sha256::new();
    hasher.update(what.as_bytes());
    hasher.update(b"\n");
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    let fingerprint: [u8; 32] = hasher.finalize().into();

    let node = state.node.clone();
    let caller = caller.sub.clone();
    let task = tokio::spawn(async move {
        match node.idempotency_begin(&caller, &key, fingerprint).await {
            Err(e) => into_response(Err(e.into())),
            Ok(IdemOutcome::Begin(Begin::Proceed)) => {
                let Deferred {
                    answer,
                    mut durable,
                } = run().await.into_deferred();
                let (status, body) = answer_to_stored(&answer);
                let stored = is_stored(status).then(|| StoredResponse {
                    status: status.as_u16(),
                    body: body.into(),
                });
                // The answer leaves only once its events and its idempotency record are
                // stored, so a replay after a crash finds it instead of running the request
                // again. The record is queued behind the events (one writer, in order), so
                // both usually share one group commit.
                match node
                    .idempotency_finish_deferred(&caller, &key, stored)
                    .await
                {
                    Ok(record) => {
                        durable.push(record);
                        into_response(settle(answer, durable).await)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not store an idempotent answer");
                        into_response(Err(e.into()))
                    }
                }
            }
            Ok(IdemOutcome::Begin(Begin::Replay(stored)))
            | Ok(IdemOutcome::Finished(Some(stored))) => replay(&stored),
            Ok(IdemOutcome::Begin(Begin::Mismatch)) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was used with a different request",
            )
            .into_response(),
            Ok(IdemOutcome::Finished(None)) => ApiError::unavailable(
                RETRY_AFTER_S,
                "the first request with this Idempotency-Key did not complete; retry",
            )
            .into_response(),
            Ok(IdemOutcome::Begin(Begin::Full)) | Ok(IdemOutcome::Begin(Begin::Queued)) => {
                ApiError::unavailable(
                    RETRY_AFTER_S,
                    "too many idempotent requests in flight; retry shortly",
                )
                .into_response()
            }
        }
    });
    task.await
        .unwrap_or_else(|e| ApiError::internal(format!("request task failed: {e}")).into_response())
}

async fn run_detached<F, Fut, R>(run: F) -> Response
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoDeferred,
{
    let task = tokio::spawn(async move {
        let Deferred { answer, durable } = run().await.into_deferred();
        settle(answer, durable).await
    });
    match task.await {
        Ok(answer) => into_response(answer),
        Err(e) => ApiError::internal(format!("request task failed: {e}")).into_response(),
    }
}
