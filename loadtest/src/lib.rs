//! `holdfast-load`, the bundled load harness, as a library: the binary in `main.rs` and the
//! integration tests share it.
//!
//! - [`ledger`]: what the server acknowledged during a run (creates, confirms, cancels,
//!   replays), recorded by the scenarios and read by the checker.
//! - [`checker`]: the invariant checker, a pure function over a picture of the server's
//!   state (taken through its public API) and the ledger.

pub mod campaign;
pub mod checker;
pub mod cli;
pub mod client;
pub mod cpu;
/// The HTTP/1.1 client (holdfast-server's, which its webhooks use too).
pub use holdfast_server::http_client as http;
pub mod ledger;
pub mod memory;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod spawn;
pub mod stats;
pub mod zipf;
