//! The operator console (`GET /console`) in a real headless Chromium: runs
//! `server/tests/browser/console_page.py` against this build's `holdfast` binary. The script
//! starts the server and the browser itself, checks the failure states (401, 403) first, then
//! that the page goes live with the pasted operator token and shows a booking made during the
//! test (its appointment id among the events, the clinic's availability, the shards' totals);
//! see its docstring.
//!
//! The test needs Chromium, python3 and the pinned `websocket-client`
//! (`server/tests/browser/requirements.txt`). Where one is missing it is skipped with the
//! reason printed, unless `HOLDFAST_REQUIRE_BROWSER=1` (which `.ci/run` sets, after installing
//! them): then a missing prerequisite fails it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::python::{imports, run_bounded};

/// The script bounds each of its own waits; this is the backstop for the whole run (its
/// bounds add up to well under it).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Set to `1` to make a missing prerequisite a failure instead of a skip.
const REQUIRE_ENV: &str = "HOLDFAST_REQUIRE_BROWSER";
/// The Chromium binary to use, if not `chromium` on the PATH.
const CHROMIUM_ENV: &str = "HOLDFAST_CHROMIUM";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console_page.py")
}

/// `name` as a file in one of the PATH's directories (or as given, if it is a path).
fn on_path(name: &OsString) -> Option<PathBuf> {
    let given = Path::new(name);
    if given.components().count() > 1 {
        return given.is_file().then(|| given.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(given))
        .find(|candidate| candidate.is_file())
}

/// The Chromium to run, or why the test cannot run here.
fn prerequisites() -> Result<PathBuf, String> {
    let name = std::env::var_os(CHROMIUM_ENV).unwrap_or_else(|| "chromium".into());
    let chromium = on_path(&name).ok_or_else(|| {
        format!("no Chromium ({name:?} is not on the PATH; `apt-get install chromium`)")
    })?;
    imports("python3", &["websocket"]).map_err(|e| {
        format!(
            "{e} (`python3 -m pip install -r server/tests/browser/requirements.txt` installs \
             websocket-client)"
        )
    })?;
    Ok(chromium)
}

#[test]
fn the_console_goes_live_in_headless_chromium_and_shows_a_booking() {
    let chromium = match prerequisites() {
        Ok(chromium) => chromium,
        Err(reason) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{REQUIRE_ENV}=1 but the browser test cannot run: {reason}")
        }
        Err(reason) => {
            eprintln!(
                "SKIPPED the console's browser test: {reason}. .ci/run installs what it needs \
                 and sets {REQUIRE_ENV}=1."
            );
            return;
        }
    };
    let mut command = Command::new("python3");
    command
        .arg(script())
        .arg("--holdfast")
        .arg(env!("CARGO_BIN_EXE_holdfast"))
        .arg("--chromium")
        .arg(&chromium);
    let (status, output) = run_bounded(command, SCRIPT_TIMEOUT);
    eprintln!("{output}");
    assert!(
        status.success(),
        "the browser test failed ({status}):\n{output}"
    );
}
