//! holdfast-server: the composition root of holdfast. It wires the engine, the persistence
//! crate and the HTTP gateway together: the `holdfast` command line ([`cli`]), starting and
//! stopping a server ([`start`], [`start_listening`], [`RunningServer`],
//! [`serve`](fn@serve)), the demo campaign ([`demo`]) and the engine's journal on the
//! write-ahead log ([`journal`]), the accept loop with its connection bounds and timeouts
//! ([`connections`]), and the external eligibility check over HTTP
//! ([`eligibility`]) with its circuit breaker ([`breaker`]), the durable event feed and
//! audit chain ([`events`]), the signed webhooks ([`webhooks`]) on a small HTTP/1.1 client
//! ([`http_client`], the load harness's too), the node's restart in place after its log
//! failed ([`reopen`]), and how the process takes its memory ([`pages`]).
//!
//! Start at [`serve`](fn@serve) (what `holdfast serve` does), then [`start`].

#![forbid(unsafe_code)]

pub mod breaker;
pub mod cli;
pub mod connections;
pub mod demo;
pub mod eligibility;
pub mod events;
pub mod hex;
pub mod http_client;
pub mod journal;
pub mod pages;
pub mod reopen;
mod serve;
mod server;
pub mod webhooks;

pub use eligibility::ExternalConfig;
pub use serve::serve;
pub use server::{start, start_listening, RunningServer, ServerConfig, Storage};
