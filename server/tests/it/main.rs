//! The HTTP and process-level tests of holdfast, in one test binary (one link of axum, sled
//! and the engine instead of one per file). Each module was a test file of its own; the
//! modules run in parallel threads of one process, so none of them may install a global,
//! set an environment variable or count anything process-wide.
//!
//! `common` starts in-process servers and holds the shared fixtures; `spawned` runs the real
//! `holdfast` binary (`CARGO_BIN_EXE_holdfast`, which exists only for the tests of the
//! package that has the binary) for `crash` and `crash_saga`; `python` runs the Python
//! scripts of `console_browser` and `contract` against it.

mod common;
mod python;
mod spawned;
mod sse;

mod admission;
mod audit;
mod citizens_bulk;
mod clinic;
mod console;
mod console_browser;
mod contract;
mod crash;
mod crash_saga;
mod disk_faults;
mod durability_faults;
mod durable_answers;
mod durable_idempotency;
mod eligibility;
mod events;
mod hostile;
mod http_auth;
mod http_booking;
mod http_errors;
mod http_holds;
mod http_idempotency;
mod http_ops;
mod http_stock;
mod in_place_recovery;
mod log_span;
mod no_show;
mod observe;
mod openapi;
mod openapi_answers;
mod overload;
mod recovery_status;
mod reschedule;
mod slot_times;
mod waitlist;
mod webhooks;
