//! What every handler shares: the node, the keys, and the settings from the command line.
//!
//! Apart from the router ([`crate::app`]) so that the route modules can depend on it without
//! depending on the router that mounts them.

use std::sync::Arc;

use axum::extract::FromRef;
use holdfast_engine::feed::{AuditTrail, EventFeed};
use holdfast_engine::Node;

use crate::admission::Admission;
use crate::auth::JwtKey;
use crate::metrics::Metrics;
use crate::overload::OverloadLimits;
use crate::qr::QrKeyring;
use crate::restarts::InPlaceRestarts;
use crate::subscribers::StreamLimits;

/// How the server runs; from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hold_ttl_ms: i64,
    pub max_hold_ms: i64,
    /// `--reschedule-notice`: no reschedule when the old slot starts within this (0: off).
    pub reschedule_notice_ms: i64,
    /// `--max-in-flight` and `--in-flight-wait`: the node-wide bound on requests in flight
    /// ([`crate::overload`]).
    pub overload: OverloadLimits,
}

/// The state of the HTTP application, cloned into every request (and more than once: each
/// extractor and middleware that reads it takes a clone): one reference count, so a clone is
/// one atomic increment however many parts the state has. Each part is read through `Deref`
/// (`state.node`).
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl AppState {
    pub fn new(shared: AppShared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppShared;
    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// The parts of [`AppState`]. Each is an `Arc` of its own, so a part can outlive the state
/// (the admission state and the restart record carry over a restart in place).
pub struct AppShared {
    pub node: Arc<Node>,
    pub jwt: Arc<JwtKey>,
    /// The QR keys: the newest signs, every one verifies.
    pub qr: Arc<QrKeyring>,
    pub settings: Arc<Settings>,
    /// The node's durable event feed (the SSE streams and the webhooks read it).
    pub events: Arc<dyn EventFeed>,
    /// The hash-chained audit log.
    pub audit: Arc<dyn AuditTrail>,
    /// The places of the streams' subscribers.
    pub streams: Arc<StreamLimits>,
    /// What `GET /metrics` renders: the process's recorder, or this server's detached one.
    pub metrics: Arc<Metrics>,
    /// Rate limits and the waiting room (`crate::admission`), each off unless configured.
    pub admission: Arc<Admission>,
    /// The node's restarts in place after its log failed (`crate::restarts`); the same record
    /// across them.
    pub restarts: Arc<InPlaceRestarts>,
}

impl FromRef<AppState> for Arc<JwtKey> {
    fn from_ref(state: &AppState) -> Arc<JwtKey> {
        state.jwt.clone()
    }
}
