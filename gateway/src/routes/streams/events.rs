//! `GET /v1/events`: every domain event of the node as Server-Sent Events, resumable by
//! sequence (`Last-Event-ID` or `?after=`; a sequence above the node's last event is 400),
//! history first from the store, then live, with no
//! gap and no duplicate at the seam (both come from the same store, read in order).
//!
//! A subscriber is a task reading the store into a queue of [`SSE_SUBSCRIBER_QUEUE_EVENTS`],
//! a batch of up to [`SSE_READ_BATCH_EVENTS`] at a time: each batch is rendered once into its
//! wire form (`id:`, `event:`, `data:` per event) and queued as one chunk of the body, so an
//! event costs a subscriber a copy of its bytes, not a message, a frame and a write of its own.
//! While the queue is full (the consumer does not read), the task counts the events the
//! node stores; past [`SSE_LAG_EVENTS_MAX`] it stops, and the consumer, after what was
//! queued, gets a final `event: lagged` with `{"last_seq"}` and the stream ends. A resume
//! from before the store's retention is 410 `EVENTS_GONE`; a consumer the retention passes
//! while it reads gets a final `event: gone`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::stream::{self, Stream};
use holdfast_engine::feed::{EventFeed, Gone, StoredEvent};
use serde::Deserialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use utoipa::IntoParams;

use super::SSE_HEARTBEAT_S;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::StrictQuery;
use crate::state::AppState;

/// Events queued for one subscriber (about 250 bytes each): what the server holds for it.
pub const SSE_SUBSCRIBER_QUEUE_EVENTS: usize = 1_024;
/// Events the node may store while a subscriber's queue stays full before it is cut off
/// with `lagged`: about a quarter of a second of a launch morning's peak.
pub const SSE_LAG_EVENTS_MAX: u64 = 4_096;
/// Events read from the store at once, and sent as one chunk.
pub const SSE_READ_BATCH_EVENTS: usize = 256;
/// The subscriber's queue in chunks: [`SSE_SUBSCRIBER_QUEUE_EVENTS`] events at most.
const SSE_SUBSCRIBER_QUEUE_CHUNKS: usize = SSE_SUBSCRIBER_QUEUE_EVENTS / SSE_READ_BATCH_EVENTS;
/// An empty comment: what an idle stream sends every [`SSE_HEARTBEAT_S`] (as axum's
/// `KeepAlive` does).
const HEARTBEAT: &[u8] = b":\n\n";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this sequence (as `Last-Event-ID`; the header wins).
    after: Option<u64>,
}

/// Where the stream ends, told after the queue drains.
#[derive(Default)]
struct Ending(Mutex<Option<Bytes>>);

impl Ending {
    fn set(&self, event: Bytes) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(event);
    }
    fn take(&self) -> Option<Bytes> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn gone_error(gone: Gone) -> ApiError {
    ApiError::events_gone(gone.to_string(), gone.oldest_seq)
}

fn gone_event(gone: Gone) -> Bytes {
    let data = serde_json::json!({ "after": gone.after, "oldest_seq": gone.oldest_seq });
    Bytes::from(format!("event: gone\ndata: {data}\n\n"))
}

fn lagged_event(last_seq: u64) -> Bytes {
    let data = serde_json::json!({ "last_seq": last_seq });
    Bytes::from(format!("event: lagged\ndata: {data}\n\n"))
}

/// Events in their wire form, as axum's `Event` writes them (`id`, `event`, `data`, a blank
/// line). An event's data is compact JSON: it has no line break to split into `data:` lines.
fn render(events: &[Arc<StoredEvent>]) -> Bytes {
    let size: usize = events
        .iter()
        .map(|e| e.event_type.len() + e.data.len() + 40)
        .sum();
    let mut out = String::with_capacity(size);
    for e in events {
        debug_assert!(!e.data.contains(['\n', '\r']), "event data is one line");
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "id: {}\nevent: {}\ndata: {}\n\n",
                e.seq, e.event_type, e.data
            ),
        );
    }
    Bytes::from(out)
}

fn resume_point(headers: &HeaderMap, after: Option<u64>) -> Result<Option<u64>, ApiError> {
    match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID", "Last-Event-ID must be a sequence number")
            }),
        None => Ok(after),
    }
}

/// The node's domain events as Server-Sent Events.
#[utoipa::path(get, path = "/v1/events", tag = "operators", params(EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this sequence")),
    responses((status = 200, content_type = "text/event-stream",
            description = "`id: SEQ`, `event: TYPE`, `data: {\"seq\",\"type\",\"at\",\"shard\", ids...}`; a final `event: lagged` (`{\"last_seq\"}`) for a consumer too slow, `event: gone` when the retention passes it"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 410, body = ErrorBody, description = "EVENTS_GONE: the resume point is older than the retention"),
        (status = 503, body = ErrorBody, description = "UNAVAILABLE: the node has its subscribers")),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    StrictQuery(query): StrictQuery<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_role(&[Role::Operator, Role::Authority])?;
    let feed = state.events.clone();
    let head = feed.head();
    let start = resume_point(&headers, query.after)?.unwrap_or(head);
    if start > head {
        // The head never moves back (it counts durable events): a later sequence is another
        // node's or another data directory's, and following it would skip events silently.
        return Err(ApiError::bad_request(
            "Last-Event-ID",
            format!("sequence {start} is ahead of this node's last event ({head})"),
        )
        .with_detail("head", head));
    }
    feed.read_after(start, 0).map_err(gone_error)?;
    let permit = state.streams.event_subscriber()?;
    let (tx, rx) = mpsc::channel(SSE_SUBSCRIBER_QUEUE_CHUNKS);
    let ending = Arc::new(Ending::default());
    tokio::spawn(follow(feed, start, tx, ending.clone(), permit));
    let heartbeat = Duration::from_secs(SSE_HEARTBEAT_S);
    let stream = stream::unfold((rx, ending), move |(mut rx, ending)| async move {
        match tokio::time::timeout(heartbeat, rx.recv()).await {
            Err(_) => Some((
                Ok::<_, Infallible>(Bytes::from_static(HEARTBEAT)),
                (rx, ending),
            )),
            Ok(Some(chunk)) => Some((Ok(chunk), (rx, ending))),
            Ok(None) => ending.take().map(|chunk| (Ok(chunk), (rx, ending))),
        }
    });
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    Ok((headers, Body::from_stream(stream)))
}

pub(super) fn sse<S>(stream: S) -> impl IntoResponse
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(SSE_HEARTBEAT_S)))
}

/// The subscriber's task: reads the store after `last` into `tx` until the consumer goes,
/// lags or the retention passes it.
async fn follow(
    feed: Arc<dyn EventFeed>,
    mut last: u64,
    tx: mpsc::Sender<Bytes>,
    ending: Arc<Ending>,
    _permit: OwnedSemaphorePermit,
) {
    let mut head = feed.watch_head();
    loop {
        let batch = match feed.read_shared(last, SSE_READ_BATCH_EVENTS) {
            Ok(batch) => batch,
            Err(gone) => return ending.set(gone_event(gone)),
        };
        if batch.is_empty() {
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
            continue;
        }
        let Some(permit) = reserve_or_lag(&tx, &mut head).await else {
            if !tx.is_closed() {
                ending.set(lagged_event(last));
            }
            return;
        };
        permit.send(render(&batch));
        last = batch.last().map_or(last, |event| event.seq);
    }
}

/// A place in the queue, or `None` when the consumer went or the node stored more than
/// [`SSE_LAG_EVENTS_MAX`] events while the queue stayed full.
async fn reserve_or_lag<'a>(
    tx: &'a mpsc::Sender<Bytes>,
    head: &mut tokio::sync::watch::Receiver<u64>,
) -> Option<mpsc::Permit<'a, Bytes>> {
    let full_at = *head.borrow_and_update();
    loop {
        tokio::select! {
            permit = tx.reserve() => return permit.ok(),
            changed = head.changed() => {
                if changed.is_err() || head.borrow_and_update().saturating_sub(full_at) > SSE_LAG_EVENTS_MAX {
                    return None;
                }
            }
        }
    }
}
