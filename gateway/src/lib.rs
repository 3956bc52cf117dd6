//! holdfast-gateway: the HTTP API of holdfast (axum), its auth and validation, and routing to
//! the engine's shards. The `holdfast` binary that serves it is in holdfast-server.
//!
//! Start at [`app`] (the router and its OpenAPI document, which [`contract`] completes) and [`state`] (what handlers
//! share), then [`routes`] (one module per part of docs/API.md, each with its bodies),
//! [`idempotency`] (the Idempotency-Key protocol), [`auth`], [`extract`] and [`error`] (the
//! error shape, and engine errors as HTTP). What each request leaves behind (its
//! `X-Request-Id`, span, log line and metrics) is [`telemetry`]; the series `/metrics` shows
//! are [`metrics`]. Who may ask for a seat on a launch morning (rate limits, the waiting room)
//! is [`admission`]; the node-wide bound on requests in flight (503 under overload) is
//! [`overload`]; the bounds on the event streams' subscribers are [`subscribers`], and the
//! count of the node's restarts in place is [`restarts`].

#![forbid(unsafe_code)]

pub mod admission;
pub mod app;
pub mod auth;
pub mod contract;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod overload;
pub mod qr;
pub mod restarts;
pub mod routes;
pub mod state;
pub mod subscribers;
pub mod telemetry;
