//! holdfast-gateway: the HTTP API of holdfast (axum), its auth and validation, routing to the
//! engine's shards, and the `holdfast` command line.
//!
//! Start at [`app`] (state, router, engine outcomes as HTTP, Idempotency-Key), then
//! [`routes`] (one module per part of API.md), [`types`] (bodies and validation), [`auth`],
//! [`extract`] and [`error`] (the error shape).

pub mod app;
pub mod auth;
pub mod cli;
pub mod demo;
pub mod error;
pub mod extract;
pub mod journal;
pub mod qr;
pub mod routes;
pub mod server;
pub mod types;
