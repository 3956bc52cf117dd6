//! `expiry`: `--expiry-holds` holds of `--expiry-hold` are placed and abandoned; the harness
//! then watches availability recover and measures, for each hold, how late its seat was
//! seen back against the `expires_at` its create answer carried.
//!
//! How: the campaign has its own vaccine, so a clinic's `reserved` count (doses −
//! available, from one `GET /v1/clinics?vaccine=` for all clinics) is exactly its holds
//! still pending. When k of a clinic's holds are gone, they are its k earliest deadlines
//! (expiry is in deadline order); each is stamped with the time the answer that showed it
//! was received. The poll runs every [`POLL_INTERVAL`]; the resolution reported is the
//! largest gap between two consecutive answers, so "lateness" is an upper bound that is
//! at most one resolution above the truth.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::campaign::CampaignSpec;
use crate::ledger::AckKind;
use crate::progress::Progress;
use crate::report::{ExpiryFigures, ScenarioReport};
use crate::stats::{Live, Op, Stats};
use crate::zipf::{Rng, Zipf};

use super::{Ctx, Meters};

/// Target period of the availability poll.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// The resolution the measurement must reach; coarser runs say so in a note.
pub const RESOLUTION_REQUIRED_MS: f64 = 10.0;
/// How long past the last deadline the watch goes on before unseen expiries are reported
/// as missing.
pub const WATCH_GRACE: Duration = Duration::from_secs(10);
/// Most concurrent creates while placing the holds.
pub const CREATE_CONCURRENCY_MAX: usize = 64;
/// Slots a citizen tries when its first choice is full.
const SLOT_TRIES: usize = 16;

/// Lateness percentile over sorted values.
fn percentile(sorted: &[f64], pct: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub async fn run(ctx: &Ctx) -> Result<ScenarioReport, String> {
    let args = ctx.args.clone();
    let mut notes = Vec::new();
    let mut spec = ctx.campaign_spec("expiry", Some(args.expiry_holds));
    let holds_wanted = (args.expiry_holds as u64).min(spec.sellable()) as usize;
    if holds_wanted < args.expiry_holds {
        notes.push(format!(
            "--expiry-holds {} is more than the campaign's {} sellable seats: placing {holds_wanted}",
            args.expiry_holds,
            spec.sellable()
        ));
    }
    spec.citizens = holds_wanted;
    let set_up = ctx.set_up(&spec).await?;
    let ledger = ctx.ledger_for(&spec);
    let live = Arc::new(Live::new(None));
    let hold_seconds = args.expiry_hold.as_secs().max(1);
    let vaccine = spec.vaccine();
    let meters = Meters::start(ctx.server_pid);
    let started = Instant::now();

    // Place the holds.
    let deadlines: Arc<Mutex<Vec<Vec<DateTime<Utc>>>>> =
        Arc::new(Mutex::new(vec![Vec::new(); spec.clinics]));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let zipf = Arc::new(Zipf::new(spec.clinics, args.skew));
    for worker in 0..args.connections.min(CREATE_CONCURRENCY_MAX) {
        let (ctx, spec, ledger, live, deadlines, next, zipf, vaccine) = (
            ctx.clone(),
            spec.clone(),
            ledger.clone(),
            live.clone(),
            deadlines.clone(),
            next.clone(),
            zipf.clone(),
            vaccine.clone(),
        );
        tasks.spawn(async move {
            let mut stats = Stats::new();
            let mut rng = Rng::for_worker(ctx.seed, worker as u64);
            loop {
                let citizen = next.fetch_add(1, Ordering::Relaxed);
                if citizen >= spec.citizens {
                    return stats;
                }
                let citizen_id = spec.citizen_id(citizen);
                let bearer = ctx.tokens.citizen(&citizen_id);
                for attempt in 0..SLOT_TRIES {
                    let clinic = zipf.sample(&mut rng);
                    let slot = rng.below(spec.slots_per_clinic as u64) as usize;
                    let body = json!({"clinic_id": spec.clinic_id(clinic),
                        "slot_id": CampaignSpec::slot_id(slot), "vaccine": vaccine,
                        "citizen_id": citizen_id, "hold_seconds": hold_seconds});
                    let key = format!("{}-k{citizen}-{attempt}", spec.prefix);
                    let t = Instant::now();
                    let reply = ctx.api.create(&bearer, &key, &body).await;
                    stats.record(Op::Hold, t.elapsed(), reply.status, &reply.code);
                    live.count(reply.status);
                    if reply.status == 201 {
                        ledger.record(AckKind::Create, &reply.body);
                        let expires = reply.body["expires_at"]
                            .as_str()
                            .and_then(|s| DateTime::parse_from_rfc3339(s).ok());
                        if let (Some(expires), Ok(mut d)) = (expires, deadlines.lock()) {
                            d[clinic].push(expires.with_timezone(&Utc));
                        }
                        break;
                    }
                    if reply.code != "SOLD_OUT" && reply.code != "OUT_OF_STOCK" {
                        break;
                    }
                }
            }
        });
    }
    let mut stats = Stats::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(s) = done {
            stats.merge(&s);
        }
    }
    let placed_in = started.elapsed();
    let mut deadlines = std::mem::take(&mut *deadlines.lock().map_err(|e| e.to_string())?);
    for d in &mut deadlines {
        d.sort();
    }
    let holds: usize = deadlines.iter().map(Vec::len).sum();
    let last_deadline = deadlines.iter().flatten().max().copied();

    // Watch availability recover.
    let index: HashMap<String, usize> = (0..spec.clinics).map(|c| (spec.clinic_id(c), c)).collect();
    let mut seen = vec![0usize; spec.clinics];
    let mut lateness_ms: Vec<f64> = Vec::with_capacity(holds);
    let mut before_watch = 0usize;
    let mut first_poll_sent: Option<DateTime<Utc>> = None;
    let mut previous_answer: Option<DateTime<Utc>> = None;
    let (mut largest_gap_ms, mut gaps_total_ms, mut gaps) = (0.0f64, 0.0f64, 0u64);
    let give_up =
        last_deadline.map(|d| d + chrono::Duration::from_std(WATCH_GRACE).unwrap_or_default());
    let progress = Progress::start(
        "expiry",
        live.clone(),
        None,
        Duration::from_secs(hold_seconds) + WATCH_GRACE,
        args.quiet,
    );
    let path = format!("/v1/clinics?vaccine={vaccine}");
    let mut poll_error = None;
    while seen.iter().sum::<usize>() < holds {
        let Some(give_up) = give_up else { break };
        if Utc::now() > give_up {
            break;
        }
        let sent = Utc::now();
        let t = Instant::now();
        first_poll_sent.get_or_insert(sent);
        let reply = ctx.api.get(&path).await;
        let answered = Utc::now();
        stats.record(Op::Poll, t.elapsed(), reply.status, &reply.code);
        live.count(reply.status);
        if let Some(prev) = previous_answer {
            let gap = (answered - prev).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            largest_gap_ms = largest_gap_ms.max(gap);
            gaps_total_ms += gap;
            gaps += 1;
        }
        previous_answer = Some(answered);
        if reply.status != 200 {
            poll_error = Some(format!("{} {}", reply.status, reply.code));
        }
        for clinic in reply.body["clinics"].as_array().into_iter().flatten() {
            let Some(&c) = clinic["clinic_id"].as_str().and_then(|id| index.get(id)) else {
                continue;
            };
            let Some(available) = clinic["available_doses"][&vaccine].as_i64() else {
                continue;
            };
            let reserved = (spec.doses - available).max(0) as usize;
            let gone = deadlines[c].len().saturating_sub(reserved);
            while seen[c] < gone {
                let deadline = deadlines[c][seen[c]];
                if first_poll_sent.is_some_and(|f| deadline <= f) {
                    before_watch += 1;
                } else {
                    let late = (answered - deadline).num_microseconds().unwrap_or(0);
                    lateness_ms.push(late as f64 / 1000.0);
                }
                seen[c] += 1;
            }
        }
        let next_poll = t + POLL_INTERVAL;
        tokio::time::sleep_until(next_poll.into()).await;
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    lateness_ms.sort_by(f64::total_cmp);
    let seen_total: usize = seen.iter().sum();
    let mut report = ScenarioReport::new("expiry", &stats, seconds, args.connections);
    meters.finish(&mut report);
    report.campaign = Some(set_up);
    report.notes = notes;
    let resolution = largest_gap_ms;
    report.expiry = Some(ExpiryFigures {
        holds: holds as u64,
        hold_seconds,
        seen_expired: seen_total as u64,
        not_seen_expired: (holds - seen_total) as u64,
        lateness_p50_ms: percentile(&lateness_ms, 50.0),
        lateness_p99_ms: percentile(&lateness_ms, 99.0),
        lateness_max_ms: lateness_ms.last().copied(),
        lateness_min_ms: lateness_ms.first().copied(),
        resolution_ms: resolution,
        poll_period_mean_ms: if gaps > 0 {
            gaps_total_ms / gaps as f64
        } else {
            0.0
        },
        polls: stats.count(Op::Poll),
    });
    if before_watch > 0 {
        report.notes.push(format!(
            "{before_watch} holds expired before the watch began (placing {holds} holds took {:.2} s against a {hold_seconds} s hold): they are not in the lateness figures; raise --expiry-hold or lower --expiry-holds",
            placed_in.as_secs_f64()
        ));
    }
    if resolution > RESOLUTION_REQUIRED_MS {
        report.notes.push(format!(
            "resolution {resolution:.1} ms is coarser than {RESOLUTION_REQUIRED_MS} ms: the client or the server was too busy to poll every {POLL_INTERVAL:?}"
        ));
    }
    if let Some(e) = poll_error {
        report
            .notes
            .push(format!("some availability polls failed: {e}"));
    }
    if seen_total < holds {
        report.failures.push(format!(
            "{} of {holds} abandoned holds were not seen to expire within {WATCH_GRACE:?} of their deadline",
            holds - seen_total
        ));
    }
    report.checks.push(
        ctx.check(&ctx.api, "end", &spec.clinic_ids(), &ledger)
            .await,
    );
    report.decide();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0], 0.0), Some(3.0));
    }
}
