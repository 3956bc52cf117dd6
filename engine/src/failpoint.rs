//! Named points between the steps of a saga where a crash test stops the process.
//!
//! `HOLDFAST_FAILPOINTS=book.after_claim,settle.lapsed` (read once, at the first point
//! reached) makes a task that reaches a named point wait [`FAILPOINT_SETTLE`] (so the
//! records queued before it reach the log: group commit takes milliseconds), print
//! `failpoint reached: <name>` on stderr, and then never go on. The test kills the process
//! with SIGKILL at that moment and checks what a restart recovers. Unset (always, outside
//! such tests), a point costs one load of a `OnceLock`.
//!
//! The points: `book.after_claim` (the claim is taken, no hold yet), `book.after_hold` (held
//! and checked, the claim not bound, nothing answered), `settle.confirmed` and
//! `settle.lapsed` (a clinic's change is durable, its notice not yet delivered to the
//! citizen's shard: the middle of a confirm and of a cancel or expiry), `settle.administered`
//! (likewise, the middle of an administration: the dose not yet in the citizen's history),
//! `reschedule.after_hold` (the new appointment exists, the old one is still live) and
//! `reschedule.after_move` (the old one is released, the claim not yet moved).

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable that names the enabled points, separated by commas.
pub const FAILPOINTS_ENV: &str = "HOLDFAST_FAILPOINTS";
/// How long a point waits before it announces itself.
pub const FAILPOINT_SETTLE: Duration = Duration::from_millis(300);

static ENABLED: OnceLock<Vec<String>> = OnceLock::new();

fn enabled(name: &str) -> bool {
    ENABLED
        .get_or_init(|| {
            std::env::var(FAILPOINTS_ENV)
                .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
                .unwrap_or_default()
        })
        .iter()
        .any(|p| p == name)
}

/// A named point: returns at once unless it is enabled; then it never returns.
pub async fn point(name: &str) {
    if !enabled(name) {
        return;
    }
    tokio::time::sleep(FAILPOINT_SETTLE).await;
    eprintln!("failpoint reached: {name}");
    tracing::warn!(failpoint = name, "failpoint reached; waiting to be killed");
    std::future::pending::<()>().await;
}
