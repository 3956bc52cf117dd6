//! `crash` (with `--spawn`): citizens book under load while the server is killed with
//! SIGKILL at a random moment, `--kills` times. After every restart on the same data
//! directory (and once `/readyz` says 200), a sample of acknowledged creates is replayed
//! with the same Idempotency-Key (the answers must name the same appointments, so the
//! idempotency records survived), and the invariant checker runs against everything the
//! server acknowledged before the kill.
//!
//! The clinic side runs through the kills too: staff administer `--administer-pct` of the
//! confirmed appointments as they come (and, after each restart, some confirmed before the
//! kill, with the QR token issued before it), a clinic cancels `--cancel-slots` slots each
//! round before the kill (see `slot_cancel.rs`), and a no-show group booked right after
//! set-up falls due while the rounds run: the last check waits until it is due and must
//! see it NO_SHOW (or ADMINISTERED).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::Api;
use crate::cpu::{process_cpu_seconds, CpuMeter};
use crate::ledger::AckKind;
use crate::progress::Progress;
use crate::report::{ClinicFigures, CrashFigures, ScenarioReport};
use crate::spawn::Spawned;
use crate::stats::{Live, Op, Stats};
use crate::zipf::Rng;

use super::booking::{self, Booker, BookerPlan};
use super::clinic::{self, GroupSpec, NoShowGroup};
use super::slot_cancel;
use super::Ctx;
use crate::cli::KILL_DELAY_MIN_MS;

/// Acknowledged creates replayed after each restart.
pub const REPLAYS_PER_RESTART: usize = 16;
/// Appointments confirmed before a kill and administered after the restart, with the
/// `qr_token` issued before it (tokens must survive a restart until administered).
pub const ADMINISTERED_AFTER_RESTART: usize = 8;
/// Extra time a round's connections get to notice the kill, beyond their own request
/// timeouts.
pub const ROUND_STOP_GRACE: Duration = Duration::from_secs(5);
/// Percentage of confirmed appointments cancelled at once, so seats and citizens recycle
/// and every round has load however small the campaign (a sold-out server is idle).
pub const CANCEL_CONFIRMED_PCT: u32 = 50;
/// When a round's slot cancellations (`--cancel-slots`) start after its load: before the
/// earliest kill ([`KILL_DELAY_MIN_MS`]), so they race the bookings and the kill.
pub const CANCEL_DELAY_MS: u64 = KILL_DELAY_MIN_MS / 2;
/// Percentage of `SOLD_OUT` answers after which the citizen joins the slot's waitlist and
/// waits (at most `WAITLIST_JOINS_MAX` joins a run): seats returned by releases and cancels
/// are then offered to them across the kills, and every check holds each acknowledged join
/// to waiting, served or gone with its cancelled slot.
pub const WAITLIST_JOIN_PCT: u32 = 30;
/// Salt of the kill-moment random stream (independent of the connections' streams).
const KILL_STREAM: u64 = 0x00C4_A511;

/// Books the no-show group (`--no-show-group`, none when 0) right after set-up.
async fn no_show_group(
    ctx: &Ctx,
    spec: &crate::campaign::CampaignSpec,
    staff: &[String],
    ledger: &crate::ledger::Ledger,
    live: &Live,
    stats: &mut Stats,
) -> Result<Option<NoShowGroup>, String> {
    if ctx.args.no_show_group == 0 {
        return Ok(None);
    }
    let group = GroupSpec {
        api: &ctx.api,
        tokens: &ctx.tokens,
        spec,
        staff,
        ledger,
        live,
        size: ctx.args.no_show_group,
        administer_pct: ctx.args.administer_pct,
        seed: ctx.seed,
    };
    clinic::set_up_no_show_group(&group, stats).await.map(Some)
}

/// After a restart, staff administer up to [`ADMINISTERED_AFTER_RESTART`] of the round's
/// appointments confirmed before the kill, with the `qr_token` issued before it. Returns how
/// many were sent.
async fn administer_confirmed_before_kill(api: &Api, booker: &Booker, stats: &mut Stats) -> usize {
    let confirmed: Vec<_> = booker
        .confirmed
        .lock()
        .map(|c| {
            c.iter()
                .rev()
                .take(ADMINISTERED_AFTER_RESTART)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for (clinic, id, qr_token) in &confirmed {
        let staff = &booker.staff[*clinic];
        booking::administer(
            api,
            &booker.ledger,
            &booker.live,
            stats,
            staff,
            id,
            qr_token,
        )
        .await;
    }
    confirmed.len()
}

pub async fn run(ctx: &Ctx, server: &mut Spawned) -> Result<ScenarioReport, String> {
    let args = &ctx.args;
    let spec = ctx.campaign_spec("crash", None);
    let set_up = ctx.set_up(&spec).await?;
    let ledger = ctx.ledger_for(&spec);
    let live = Arc::new(Live::new(Some(spec.sellable() as i64)));
    let staff = booking::staff_tokens(&ctx.tokens, &spec);
    let mut stats = Stats::new();
    let group = no_show_group(ctx, &spec, &staff, &ledger, &live, &mut stats).await?;
    let next_citizen = Arc::new(AtomicUsize::new(0));
    let waitlist_joins = Arc::new(AtomicUsize::new(0));
    // Citizens free to book again, shared by the rounds.
    let returned = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    let mut rng = Rng::for_worker(ctx.seed, KILL_STREAM);
    let window_ms = args.kill_window.as_millis() as u64;
    let connection_bound = args.timeout * (args.retries + 1) + ROUND_STOP_GRACE;

    let mut figures = CrashFigures {
        kills: 0,
        kill_after_ms: Vec::new(),
        recovery_s: Vec::new(),
        acknowledged: 0,
        replays_after_restart: 0,
        in_doubt_resent: 0,
        in_doubt_booked: 0,
        in_doubt_applied_before_kill: 0,
        administered_after_restart: 0,
        waitlist_joined: 0,
    };
    let mut checks = Vec::new();
    let mut slot_cancels = (args.cancel_slots > 0).then(crate::report::SlotCancelFigures::default);
    let mut retries = 0;
    let mut server_cpu = Some(0.0);
    let client_meter = CpuMeter::for_self();
    let progress = Progress::start(
        "crash",
        live.clone(),
        Some(spec.sellable()),
        args.kill_window * args.kills as u32,
        args.quiet,
    );
    let started = Instant::now();
    for round in 0..args.kills {
        let api = ctx.api.with_base(&server.base);
        let booker = Arc::new(Booker::new(
            args,
            ctx.tokens.clone(),
            &spec,
            BookerPlan {
                api: api.clone(),
                ledger: ledger.clone(),
                live: live.clone(),
                staff: staff.clone(),
                next_citizen: next_citizen.clone(),
                returned: returned.clone(),
                waitlist_joins: waitlist_joins.clone(),
                duration: args.kill_window + connection_bound,
                seed: ctx.seed.wrapping_add(round as u64),
                key_prefix: format!("{}-r{round}-k", spec.prefix),
                cancel_confirmed_pct: CANCEL_CONFIRMED_PCT,
                administer_pct: args.administer_pct,
                refused_retries: 0,
                waitlist_pct: WAITLIST_JOIN_PCT,
            },
        ));
        let pid = server.pid();
        let cpu_before = pid.and_then(process_cpu_seconds);
        let load = tokio::spawn(booking::run(booker.clone(), args.connections));
        let canceller = (args.cancel_slots > 0).then(|| {
            let (booker, count) = (booker.clone(), args.cancel_slots);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(CANCEL_DELAY_MS)).await;
                slot_cancel::cancel_slots(&booker, count, round).await
            })
        });
        let delay = KILL_DELAY_MIN_MS + rng.below(window_ms - KILL_DELAY_MIN_MS + 1);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let cpu_after = pid.and_then(process_cpu_seconds);
        server_cpu = match (server_cpu, cpu_before, cpu_after) {
            (Some(total), Some(a), Some(b)) => Some(total + (b - a)),
            _ => None,
        };
        booker.stop.store(true, Ordering::Relaxed);
        server.kill();
        let killed_at = chrono::Utc::now();
        figures.kills += 1;
        figures.kill_after_ms.push(delay);
        match tokio::time::timeout(connection_bound, load).await {
            Ok(Ok(result)) => stats.merge(&result.stats),
            Ok(Err(e)) => return Err(format!("crash round {round}: load task failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "crash round {round}: connections did not stop within {connection_bound:?}"
                ))
            }
        }
        if let Some(task) = canceller {
            // Its requests are bounded like the connections' (timeout and retries).
            match tokio::time::timeout(connection_bound, task).await {
                Ok(Ok(figures)) => {
                    if let Some(total) = slot_cancels.as_mut() {
                        total.add(&figures);
                    }
                }
                Ok(Err(e)) => {
                    return Err(format!("crash round {round}: slot cancellations failed: {e}"))
                }
                Err(_) => {
                    return Err(format!(
                        "crash round {round}: slot cancellations did not end within {connection_bound:?}"
                    ))
                }
            }
        }
        retries += booker.retries.load(Ordering::Relaxed);
        let restart = Instant::now();
        server.restart(&ctx.api).await?;
        figures.recovery_s.push(restart.elapsed().as_secs_f64());
        let api = ctx.api.with_base(&server.base);
        let recent: Vec<_> = booker
            .recent
            .lock()
            .map(|r| r.iter().rev().take(REPLAYS_PER_RESTART).cloned().collect())
            .unwrap_or_default();
        for created in &recent {
            let bearer = ctx.tokens.citizen(&created.citizen_id);
            booking::replay(
                &api,
                &ledger,
                &live,
                &mut stats,
                (&bearer, None),
                &created.key,
                &created.citizen_id,
                &created.body,
                &created.appointment_id,
            )
            .await;
            figures.replays_after_restart += 1;
        }
        if args.administer_pct > 0 {
            figures.administered_after_restart +=
                administer_confirmed_before_kill(&api, &booker, &mut stats).await;
        }
        // Creates the kill left without an answer: the same key again tells what happened
        // (the stored answer if the create was applied, else a fresh decision), and a 201
        // is an acknowledgement like any other.
        let in_doubt = booker
            .in_doubt
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        for (key, citizen_id, body) in in_doubt {
            let bearer = ctx.tokens.citizen(&citizen_id);
            let t = Instant::now();
            let reply = api.create(&bearer, &key, &body).await;
            stats.record(Op::Hold, t.elapsed(), reply.status, &reply.code);
            figures.in_doubt_resent += 1;
            if reply.status == 201 {
                ledger.record(AckKind::Create, &reply.body);
                figures.in_doubt_booked += 1;
                let created = reply.body["created_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                if created.is_some_and(|t| t < killed_at) {
                    figures.in_doubt_applied_before_kill += 1;
                }
            }
        }
        if round + 1 == args.kills {
            // The no-shows' due time: the last check must see them.
            if let Some(group) = &group {
                group
                    .wait_until_settled(args.no_show_grace, args.expiry_slack)
                    .await;
            }
        }
        checks.push(
            ctx.check(
                &api,
                &format!("restart {}", round + 1),
                &spec.clinic_ids(),
                &ledger,
            )
            .await,
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();
    figures.acknowledged = ledger.len();
    figures.waitlist_joined = ledger.waitlist_joins().len();
    let mut report = ScenarioReport::new("crash", &stats, seconds, args.connections);
    report.client_cpu_pct = client_meter.percent();
    report.client_cpu_us_per_request =
        crate::cpu::us_per_request(client_meter.seconds_used(), report.requests);
    report.server_cpu_us_per_request = crate::cpu::us_per_request(server_cpu, report.requests);
    // Server CPU over the load phases only (from each start until its kill): a restart's
    // recovery is another process's work and is reported as recovery time instead.
    let load_seconds = figures.kill_after_ms.iter().sum::<u64>() as f64 / 1000.0;
    report.server_cpu_pct = server_cpu
        .filter(|_| load_seconds > 0.0)
        .map(|s| s / load_seconds * 100.0);
    report.campaign = Some(set_up);
    report.retries = retries;
    if figures.acknowledged == 0 {
        report
            .failures
            .push("no booking was acknowledged: the crash scenario drove no load".to_string());
    }
    report.crash = Some(figures);
    let mut clinic_figures = ClinicFigures::new(args, &ledger, checks.last());
    if let Some(group) = &group {
        clinic_figures.no_show_group = group.left_to_fall_due;
        clinic_figures.no_show_slots_end = Some(group.slots_end.to_rfc3339());
    }
    report.clinic = Some(clinic_figures);
    report.failures.extend(clinic::refused_own_tokens(&stats));
    report.slot_cancels = slot_cancels;
    report.checks = checks;
    report.decide();
    Ok(report)
}
