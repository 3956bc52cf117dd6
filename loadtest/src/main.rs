//! `holdfast-load`: the load harness for holdfast. See `holdfast-load --help` and
//! `loadtest/README.md`; the work is in the library (`holdfast_loadtest::run`).
//!
//! Exit codes: 0 pass, 1 an invariant violation or a server error, 2 usage or set-up error.

use std::process::ExitCode;

/// The harness shares the machine with the server: every cycle its allocator saves is the
/// server's. mimalloc, as in the `holdfast` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use holdfast_loadtest::cli::Args;
use holdfast_loadtest::run::{run, EXIT_USAGE};

fn main() -> ExitCode {
    holdfast_server::pages::no_transparent_huge_pages();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("holdfast-load: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    ExitCode::from(runtime.block_on(run(args)))
}
