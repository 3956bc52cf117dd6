//! `flood`: ten times the clients the node serves well, and back. Three closed-loop phases
//! of citizens booking as in `launch` (seats and citizens recycle, so the campaign does
//! not sell out and the load stays a booking load):
//!
//! 1. **before**: `--flood-baseline-connections` (256) for `--flood-calm`: the rate the
//!    node serves well;
//! 2. **flood**: `--connections` (2,560 for ten times) for `--duration`. A refused request
//!    (`429`/`503`) comes back after its `Retry-After`, as a patient browser would, with the
//!    same Idempotency-Key. Its connections are opened (and timed) just before it, so the
//!    latencies are the server's answers, not this machine's TCP handshakes;
//! 3. **after**: the baseline again for `--flood-calm`: how soon the node is back to full
//!    speed.
//!
//! It reports, for the flood: the admitted rate and the refused rate (by status and code),
//! the p99 of the admitted requests, the longest any request waited for its answer or its
//! refusal, the server's peak resident memory (`VmHWM`), and the recovery time: from the
//! flood's end until the admitted rate over a [`RECOVERY_WINDOW`] first reaches
//! [`RECOVERED_FRACTION`] of the rate before. The invariant checker runs at the end (no
//! slot oversold, counters equal to the appointments, every acknowledged change there).
//! The scenario fails when a request waited longer than `--flood-wait-max`, the server's
//! peak passed `--flood-rss-max`, or the rate did not recover within [`crate::cli::RECOVERY_MAX`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::campaign::CampaignSpec;
use crate::ledger::Ledger;
use crate::memory;
use crate::progress::Progress;
use crate::report::{FloodFigures, ScenarioReport};
use crate::stats::{is_refusal, Live, Stats};

use super::booking::{self, Booker, BookerPlan, BookingRun};
use super::{Ctx, Meters};

/// How often the admitted count and the server's memory are sampled.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(100);
/// The window the recovery's rate is measured over.
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(1);
/// "Full speed" after the flood: this share of the admitted rate before it (the machine's
/// noise is ±15% between rounds, so asking for 100% would measure the noise).
pub const RECOVERED_FRACTION: f64 = 0.8;
/// Refusals a citizen's request rides out (each after its `Retry-After`) before the citizen
/// gives up.
pub const REFUSED_RETRIES: u32 = 20;
/// Percentage of confirmed appointments cancelled at once: every seat and citizen but the
/// abandoned holds' returns, so the campaign lasts the whole flood.
pub const CANCEL_CONFIRMED_PCT: u32 = 100;

/// What every phase shares.
struct Shared {
    spec: CampaignSpec,
    ledger: Arc<Ledger>,
    live: Arc<Live>,
    staff: Arc<Vec<String>>,
    next_citizen: Arc<AtomicUsize>,
    returned: Arc<Mutex<VecDeque<usize>>>,
}

fn booker(ctx: &Ctx, shared: &Shared, phase: &str, duration: Duration) -> Arc<Booker> {
    let args = &ctx.args;
    let spec = &shared.spec;
    Arc::new(Booker::new(
        args,
        ctx.tokens.clone(),
        spec,
        BookerPlan {
            api: ctx.api.clone(),
            ledger: shared.ledger.clone(),
            live: shared.live.clone(),
            staff: shared.staff.clone(),
            next_citizen: shared.next_citizen.clone(),
            returned: shared.returned.clone(),
            waitlist_joins: Default::default(),
            duration,
            seed: ctx.seed.wrapping_add(phase.len() as u64),
            key_prefix: format!("{}-{phase}-k", spec.prefix),
            cancel_confirmed_pct: CANCEL_CONFIRMED_PCT,
            administer_pct: 0,
            refused_retries: REFUSED_RETRIES,
            waitlist_pct: 0,
        },
    ))
}

/// The admitted answers so far, and the server's resident memory, every [`SAMPLE_PERIOD`].
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Samples>,
}

#[derive(Default)]
struct Samples {
    /// (seconds since the scenario started, answers that were not refusals).
    admitted: Vec<(f64, u64)>,
    /// The largest `VmRSS` seen (MiB).
    rss_max_mib: Option<f64>,
}

impl Sampler {
    fn start(live: Arc<Live>, server_pid: Option<u32>, t0: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut tick = tokio::time::interval(SAMPLE_PERIOD);
            while !stopped.load(Ordering::Relaxed) {
                tick.tick().await;
                let answered =
                    live.requests.load(Ordering::Relaxed) - live.refused.load(Ordering::Relaxed);
                samples
                    .admitted
                    .push((t0.elapsed().as_secs_f64(), answered));
                if let Some(r) = server_pid.and_then(memory::resident) {
                    let max = samples.rss_max_mib.get_or_insert(r.now_mib);
                    *max = max.max(r.now_mib);
                }
            }
            samples
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// Opens the flood's connections before it starts (`GET /healthz` on each, all at once, kept
/// in the client's pool), so the flood measures how the server answers 2,560 clients, not how
/// fast this machine completes 2,300 TCP handshakes at once; that takes the seconds returned.
async fn open_connections(ctx: &Ctx, connections: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let api = ctx.api.clone();
        tasks.spawn(async move { api.noop().await });
    }
    while tasks.join_next().await.is_some() {}
    started.elapsed().as_secs_f64()
}

/// Seconds from `flood_end_s` until the first [`RECOVERY_WINDOW`] whose admitted rate
/// reaches `target_per_s`; `None` when none does. `samples` are (seconds, admitted so far),
/// in time order.
pub fn recovery_s(samples: &[(f64, u64)], flood_end_s: f64, target_per_s: f64) -> Option<f64> {
    let window = RECOVERY_WINDOW.as_secs_f64();
    samples
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| *t >= flood_end_s)
        .find_map(|(i, &(t, count))| {
            let &(t_end, count_end) = samples[i..].iter().find(|(u, _)| *u >= t + window)?;
            let rate = count_end.saturating_sub(count) as f64 / (t_end - t);
            (rate >= target_per_s).then_some(t - flood_end_s)
        })
}

/// Answers that were not refusals, per second of `run`.
fn admitted_per_s(run: &BookingRun) -> f64 {
    run.stats.admitted.as_ref().map_or(0, |h| h.len()) as f64 / run.seconds.max(f64::EPSILON)
}

fn refused_by_status(stats: &Stats) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (key, n) in &stats.outcomes {
        if is_refusal(key.status) {
            *out.entry(format!("{} {}", key.status, key.code))
                .or_insert(0) += n;
        }
    }
    out
}

pub async fn run(ctx: &Ctx) -> Result<ScenarioReport, String> {
    let args = &ctx.args;
    let spec = ctx.campaign_spec("flood", None);
    let set_up = ctx.set_up(&spec).await?;
    let shared = Shared {
        ledger: ctx.ledger_for(&spec),
        live: Arc::new(Live::new(None)),
        staff: booking::staff_tokens(&ctx.tokens, &spec),
        next_citizen: Arc::new(AtomicUsize::new(0)),
        returned: Arc::new(Mutex::new(VecDeque::new())),
        spec: spec.clone(),
    };
    let (baseline, calm) = (args.flood_baseline_connections, args.flood_calm);
    let t0 = Instant::now();
    let sampler = Sampler::start(shared.live.clone(), ctx.server_pid, t0);
    let progress = Progress::start(
        "flood",
        shared.live.clone(),
        None,
        calm * 2 + args.duration,
        args.quiet,
    );
    let before = booking::run(booker(ctx, &shared, "before", calm), baseline).await;
    let warm_up_s = open_connections(ctx, args.connections).await;
    let meters = Meters::start(ctx.server_pid);
    let flood_booker = booker(ctx, &shared, "flood", args.duration);
    let flood_deadline = flood_booker.deadline;
    let flood = booking::run(flood_booker, args.connections).await;
    let mut report = ScenarioReport::new("flood", &flood.stats, flood.seconds, args.connections);
    meters.finish(&mut report);
    let flood_end_s = flood_deadline.duration_since(t0).as_secs_f64();
    let after = booking::run(booker(ctx, &shared, "after", calm), baseline).await;
    let samples = sampler.finish().await;
    progress.finish();

    let before_rate = admitted_per_s(&before);
    let resident = ctx.server_pid.and_then(memory::resident);
    let ms = |h: Option<&hdrhistogram::Histogram<u64>>, p: f64| {
        h.map(|h| h.value_at_percentile(p) as f64 / 1000.0)
    };
    let max_ms = |h: Option<&hdrhistogram::Histogram<u64>>| h.map(|h| h.max() as f64 / 1000.0);
    let s = &flood.stats;
    let figures = FloodFigures {
        baseline_connections: baseline,
        connections_opened_s: warm_up_s,
        flood_connections: args.connections,
        before_admitted_per_s: before_rate,
        flood_admitted_per_s: admitted_per_s(&flood),
        flood_refused_per_s: s.refused.as_ref().map_or(0, |h| h.len()) as f64
            / flood.seconds.max(f64::EPSILON),
        refused_by_status: refused_by_status(s),
        admitted_p99_ms: ms(s.admitted.as_ref(), 99.0),
        admitted_max_ms: max_ms(s.admitted.as_ref()),
        refused_p99_ms: ms(s.refused.as_ref(), 99.0),
        refused_max_ms: max_ms(s.refused.as_ref()),
        longest_wait_ms: s
            .latency
            .values()
            .map(|h| h.max() as f64 / 1000.0)
            .fold(0.0, f64::max),
        unanswered: s
            .outcomes
            .iter()
            .filter(|(k, _)| k.status == 0)
            .map(|(_, n)| n)
            .sum(),
        after_admitted_per_s: admitted_per_s(&after),
        recovery_s: recovery_s(
            &samples.admitted,
            flood_end_s,
            before_rate * RECOVERED_FRACTION,
        ),
        server_rss_peak_mib: resident.map(|r| r.peak_mib),
        server_rss_sampled_max_mib: samples.rss_max_mib,
        server_rss_end_mib: resident.map(|r| r.now_mib),
        wait_max_ms: args.flood_wait_max.as_millis() as u64,
        rss_max_mib: args.flood_rss_max_mib,
    };
    report.failures.extend(figures.failures());
    report.campaign = Some(set_up);
    report.flood = Some(figures);
    report.checks.push(
        ctx.check(&ctx.api, "end", &spec.clinic_ids(), &shared.ledger)
            .await,
    );
    report.decide();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_the_first_full_window_after_the_flood() {
        // 10 per 100 ms before, 2 per 100 ms during the flood (ends at 1.0 s), full again
        // from 1.5 s.
        let mut samples = Vec::new();
        let mut count = 0;
        for i in 0..40 {
            let t = f64::from(i) / 10.0;
            samples.push((t, count));
            count += if (0.5..1.5).contains(&t) { 2 } else { 10 };
        }
        let recovered = recovery_s(&samples, 1.0, 80.0).expect("recovers");
        assert!((recovered - 0.3).abs() < 1e-9, "{recovered}");
        assert_eq!(recovery_s(&samples, 1.0, 1_000.0), None, "never that fast");
        assert_eq!(
            recovery_s(&samples[..12], 1.0, 80.0),
            None,
            "no full window"
        );
    }
}
