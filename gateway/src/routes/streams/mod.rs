//! The Server-Sent Events streams: `GET /v1/events` (every domain event, resumable by
//! sequence, [`events`]) and `GET /v1/clinics/{clinic_id}/availability/stream` (one clinic's
//! slot availability, coalesced, [`availability`]); the bounds on their subscribers are
//! [`crate::subscribers`].
//!
//! Both read the node's durable event feed ([`holdfast_engine::feed::EventFeed`]), never the
//! shards: each subscriber is a task that reads the store at its own pace into a bounded
//! queue, so a slow subscriber costs a shard nothing and the server holds at most its queue.

pub mod availability;
pub mod events;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// Heartbeat comments on an idle stream at this interval: the contract asks for at most 15 s
/// (proxies cut idle connections at 30-60 s).
pub const SSE_HEARTBEAT_S: u64 = 15;
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(events::events))
        .routes(routes!(availability::availability_stream))
}
