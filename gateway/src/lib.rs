//! holdfast-gateway: the HTTP API of holdfast (axum), its auth and validation, and routing to
//! the engine's shards. The `holdfast` binary that serves it is in holdfast-server.
//!
//! Start at [`app`] (state, router, engine outcomes as HTTP, Idempotency-Key), then
//! [`routes`] (one module per part of API.md), [`types`] (bodies and validation), [`auth`],
//! [`extract`] and [`error`] (the error shape).

pub mod app;
pub mod auth;
pub mod error;
pub mod extract;
pub mod qr;
pub mod routes;
pub mod types;
