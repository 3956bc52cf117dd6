//! The contract as client teams use it, against this build's real `holdfast` binary: the
//! Python scripts of `server/tests/contract/` start the server themselves (port 0, a
//! temporary data directory, a small seeded campaign) and
//!
//! - `check_document.py`: `/openapi.json` passes `openapi-spec-validator`, and
//!   `openapi-python-client` generates a function for every operation without a warning;
//! - `fuzz.py`: Schemathesis, once per caller (authority, operator, staff of a clinic, a
//!   citizen, no token), finds no 5xx, no undocumented status, no wrong content type and no
//!   answer outside its documented schema. Bounded here by [`FUZZ_EXAMPLES`] and
//!   [`FUZZ_CALLER_MAX_S`]; the longer pass is one command in docs/API.md.
//!
//! The tests need python3 with the pinned tools of `server/tests/contract/requirements.txt`.
//! Where they are missing the tests are skipped with the reason printed, unless
//! `HOLDFAST_REQUIRE_CONTRACT=1` (which `.ci/run` sets, after installing them): then a
//! missing prerequisite fails them. `HOLDFAST_CONTRACT_PYTHON` names another interpreter
//! (a virtualenv's) than `python3`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::python::{imports, run_bounded};

/// Set to `1` to make a missing prerequisite a failure instead of a skip.
const REQUIRE_ENV: &str = "HOLDFAST_REQUIRE_CONTRACT";
/// The Python interpreter that has the tools, if not `python3`.
const PYTHON_ENV: &str = "HOLDFAST_CONTRACT_PYTHON";
/// The modules the scripts import.
const MODULES: [&str; 3] = [
    "openapi_spec_validator",
    "openapi_python_client",
    "schemathesis",
];
/// Backstop of `check_document.py` (it takes a few seconds: a start, a fetch, a generation).
const DOCUMENT_TIMEOUT: Duration = Duration::from_secs(300);
/// Schemathesis's `--max-examples` in CI: cases per operation and phase.
const FUZZ_EXAMPLES: u32 = 10;
/// Schemathesis's `--max-time` for one caller's run in CI: five callers make the bounded
/// pass about two minutes and a few thousand requests on a 2-core machine.
const FUZZ_CALLER_MAX_S: u64 = 24;
/// Backstop of `fuzz.py`: five runs at their bound, plus the server's start and seeding.
const FUZZ_TIMEOUT: Duration = Duration::from_secs(5 * FUZZ_CALLER_MAX_S + 240);

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/contract")
        .join(name)
}

/// The interpreter to run the scripts with, or `None` (the test is skipped) when it lacks
/// the tools and they are not required.
fn python(test: &str) -> Option<String> {
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_string());
    match imports(&python, &MODULES) {
        Ok(()) => Some(python),
        Err(reason) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{REQUIRE_ENV}=1 but {test} cannot run: {reason}")
        }
        Err(reason) => {
            eprintln!(
                "SKIPPED {test}: {reason} (`python3 -m pip install -r \
                 server/tests/contract/requirements.txt`). .ci/run installs them and sets \
                 {REQUIRE_ENV}=1."
            );
            None
        }
    }
}

fn run_script(python: &str, name: &str, args: &[String], timeout: Duration) {
    let mut command = Command::new(python);
    command
        .arg(script(name))
        .arg("--holdfast")
        .arg(env!("CARGO_BIN_EXE_holdfast"))
        .args(args);
    let (status, output) = run_bounded(command, timeout);
    eprintln!("{output}");
    assert!(status.success(), "{name} failed ({status}):\n{output}");
}

#[test]
fn the_openapi_document_validates_and_generates_a_client_with_every_endpoint() {
    let Some(python) = python("the document check") else {
        return;
    };
    run_script(&python, "check_document.py", &[], DOCUMENT_TIMEOUT);
}

#[test]
fn schemathesis_finds_no_failure_for_any_caller() {
    let Some(python) = python("the bounded Schemathesis pass") else {
        return;
    };
    let args = [
        "--examples".to_string(),
        FUZZ_EXAMPLES.to_string(),
        "--max-time".to_string(),
        FUZZ_CALLER_MAX_S.to_string(),
    ];
    run_script(&python, "fuzz.py", &args, FUZZ_TIMEOUT);
}
