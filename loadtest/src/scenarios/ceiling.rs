//! `ceiling`: the same client, connections and duration against `GET /healthz`, an endpoint
//! that does nothing. No HTTP booking path on this machine can beat it, so booking rates in
//! the same run are reported as a fraction of it (docs/PERFORMANCE.md compares ratios, never
//! absolute figures from different runs).

use std::sync::Arc;
use std::time::Instant;

use crate::progress::Progress;
use crate::report::ScenarioReport;
use crate::stats::{Live, Op, Stats};

use super::{Ctx, Meters};

pub async fn run(ctx: &Ctx) -> Result<ScenarioReport, String> {
    let args = &ctx.args;
    let live = Arc::new(Live::new(None));
    let meters = Meters::start(ctx.server_pid);
    let progress = Progress::start("ceiling", live.clone(), None, args.duration, args.quiet);
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let (api, live) = (ctx.api.clone(), live.clone());
        tasks.spawn(async move {
            let mut stats = Stats::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = api.noop().await;
                let code = if status == 0 { "TRANSPORT" } else { "" };
                stats.record(Op::Noop, t.elapsed(), status, code);
                live.count(status);
            }
            stats
        });
    }
    let mut stats = Stats::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(s) = done {
            stats.merge(&s);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();
    let mut report = ScenarioReport::new("ceiling", &stats, seconds, args.connections);
    meters.finish(&mut report);
    report.decide();
    Ok(report)
}
