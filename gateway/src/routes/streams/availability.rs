//! `GET /v1/clinics/{clinic_id}/availability/stream`: one clinic's `SlotAvailabilityChanged`
//! as Server-Sent Events, `data` the slot's object of the availability answer, coalesced to
//! at most one message per slot per [`AVAILABILITY_COALESCE_MS`]: a flash sale does not push
//! one message per seat per client. The subscriber's task follows the durable event feed,
//! notes which of the clinic's slots changed, and every window reads the clinic's
//! availability once and sends the changed slots as they are then (so the last message of a
//! burst shows the final counts).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::IntoResponse;
use futures_util::stream;
use holdfast_engine::feed::{EventFeed, StoredEvent};
use holdfast_engine::Node;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::events::sse;
use crate::error::{ApiError, ErrorBody};
use crate::extract::StrictPath;
use crate::routes::catalogue::types::AvailabilityJson;
use crate::routes::fields::check_id;
use crate::state::AppState;
use crate::subscribers::ClinicPlace;

/// The coalescing window: at most one message per slot per this many milliseconds.
pub const AVAILABILITY_COALESCE_MS: u64 = 250;
/// Messages queued for one subscriber; when it is full the task waits (it reads the store,
/// so waiting costs nobody else) and coalesces more.
pub const AVAILABILITY_QUEUE_MESSAGES: usize = 256;
/// Events read from the store at once.
const READ_BATCH_EVENTS: usize = 1_024;

#[derive(Deserialize)]
struct SlotChanged {
    clinic_id: String,
    slot_id: String,
}

/// A clinic's slot availability as Server-Sent Events.
#[utoipa::path(get, path = "/v1/clinics/{clinic_id}/availability/stream", tag = "availability",
    params(("clinic_id" = String, Path, description = "the clinic")),
    responses((status = 200, content_type = "text/event-stream",
            description = "`event: SlotAvailabilityChanged`, `data`: the slot's object of the availability answer; at most one message per slot per 250 ms"),
        (status = 404, body = ErrorBody, description = "unknown clinic"),
        (status = 503, body = ErrorBody, description = "UNAVAILABLE: the clinic or the node has its subscribers")))]
pub async fn availability_stream(
    State(state): State<AppState>,
    StrictPath(clinic_id): StrictPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_id("clinic_id", &clinic_id)?;
    // 404 for an unknown clinic, before taking a place.
    state
        .node
        .availability(&clinic_id, None, None, None)
        .await?;
    let place = state.streams.clinic_subscriber(&clinic_id)?;
    let (tx, rx) = mpsc::channel(AVAILABILITY_QUEUE_MESSAGES);
    let feed = state.events.clone();
    tokio::spawn(follow(state.node.clone(), feed, clinic_id, tx, place));
    let stream = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<Event, Infallible>(event), rx))
    });
    Ok(sse(stream))
}

/// The slots of `clinic_id` that changed in `events`.
/// Every subscriber reads every event, so the test is a string comparison and a substring
/// search before any parsing (`data` is compact JSON, `"clinic_id":"<id>"`).
fn changed_slots(clinic_id: &str, events: &[StoredEvent], dirty: &mut BTreeSet<String>) {
    let needle = format!("\"clinic_id\":{}", serde_json::Value::from(clinic_id));
    for event in events {
        if event.event_type != "SlotAvailabilityChanged" || !event.data.contains(&needle) {
            continue;
        }
        if let Ok(changed) = serde_json::from_str::<SlotChanged>(&event.data) {
            if changed.clinic_id == clinic_id {
                dirty.insert(changed.slot_id);
            }
        }
    }
}

async fn follow(
    node: Arc<Node>,
    feed: Arc<dyn EventFeed>,
    clinic_id: String,
    tx: mpsc::Sender<Event>,
    _place: ClinicPlace,
) {
    let mut head = feed.watch_head();
    let mut last = feed.head();
    let mut dirty = BTreeSet::new();
    let mut window = tokio::time::interval(Duration::from_millis(AVAILABILITY_COALESCE_MS));
    window.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            _ = window.tick() => {
                if !dirty.is_empty() && !send_slots(&node, &clinic_id, &mut dirty, &tx).await {
                    return;
                }
            }
            () = tx.closed() => return,
        }
        loop {
            match feed.read_after(last, READ_BATCH_EVENTS) {
                Ok(batch) if !batch.is_empty() => {
                    last = batch.last().map_or(last, |e| e.seq);
                    changed_slots(&clinic_id, &batch, &mut dirty);
                }
                Ok(_) => break,
                // Passed by the retention: what changed since is unknown, so all of it did.
                Err(gone) => {
                    last = gone.oldest_seq.saturating_sub(1);
                }
            }
        }
    }
}

/// Sends the dirty slots as the clinic's availability shows them now; false when the
/// subscriber is gone.
async fn send_slots(
    node: &Node,
    clinic_id: &str,
    dirty: &mut BTreeSet<String>,
    tx: &mpsc::Sender<Event>,
) -> bool {
    let Ok(view) = node.availability(clinic_id, None, None, None).await else {
        return !tx.is_closed(); // a shard not ready: try again next window
    };
    let answer = AvailabilityJson::from(&view);
    let Ok(serde_json::Value::Object(answer)) = serde_json::to_value(&answer) else {
        return true;
    };
    let slots = answer.get("slots").and_then(|s| s.as_array());
    for slot in slots.into_iter().flatten() {
        let Some(slot_id) = slot.get("slot_id").and_then(|s| s.as_str()) else {
            continue;
        };
        if dirty.remove(slot_id) {
            let event = Event::default()
                .event("SlotAvailabilityChanged")
                .data(slot.to_string());
            if tx.send(event).await.is_err() {
                return false;
            }
        }
    }
    // Slots no longer listed (cancelled, or past the answer's window) are not sent.
    dirty.clear();
    true
}
