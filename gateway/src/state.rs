//! What every handler shares: the node, the keys, and the settings from the command line.
//!
//! Apart from the router ([`crate::app`]) so that the route modules can depend on it without
//! depending on the router that mounts them.

use std::sync::Arc;

use axum::extract::FromRef;
use holdfast_engine::Node;

use crate::auth::JwtKey;
use crate::metrics::Metrics;
use crate::qr::QrKeyring;

/// How the server runs; from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hold_ttl_ms: i64,
    pub max_hold_ms: i64,
    /// `--reschedule-notice`: no reschedule when the old slot starts within this (0: off).
    pub reschedule_notice_ms: i64,
}

/// The state of the HTTP application, cloned into every request.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub jwt: Arc<JwtKey>,
    /// The QR keys: the newest signs, every one verifies.
    pub qr: Arc<QrKeyring>,
    pub settings: Arc<Settings>,
    /// What `GET /metrics` renders: the process's recorder, or this server's detached one.
    pub metrics: Arc<Metrics>,
}

impl FromRef<AppState> for Arc<JwtKey> {
    fn from_ref(state: &AppState) -> Arc<JwtKey> {
        state.jwt.clone()
    }
}
