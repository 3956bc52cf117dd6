//! `steady`: an open loop at `--rate` requests per second for `--duration`: availability
//! reads, holds, confirms, releases and cancels of confirmed appointments.
//!
//! Request i is due at `start + i / rate`, whatever happened to the ones before it, and its
//! latency is measured from that intended start, not from when it was sent. A closed loop
//! (or an open loop timed from the send) hides a server stall: the stalled requests are
//! few, and the ones that would have queued behind them are never sent ("coordinated
//! omission"). At most `--connections` requests are in flight; when all are busy the next
//! request waits, and that wait is in its latency.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;

use crate::campaign::CampaignSpec;
use crate::client::{Reply, Tokens};
use crate::ledger::{AckKind, Ledger};
use crate::progress::Progress;
use crate::report::{ScenarioReport, SteadyFigures};
use crate::stats::{Live, Op, Stats};
use crate::zipf::{Rng, Zipf};

use super::booking;
use super::{Ctx, Meters};

/// Of the requests that are not reads: the share that cancels a confirmed appointment
/// (returning its seat and its citizen, so a long run does not sell out).
pub const CANCEL_CONFIRMED_PCT: u64 = 10;
/// Of the requests that are not reads: the share that follows up a waiting hold
/// (confirm, release or abandon, by --confirm-pct/--release-pct); the rest are new holds.
pub const FOLLOW_UP_PCT: u64 = 45;
/// The dispatcher's timer granularity (tokio's timer wheel has 1 ms slots). Up to this much
/// lateness of a send is the timer's, not the server's, and is not counted in the latency;
/// beyond it, the latency counts from the intended start (the coordinated-omission
/// correction).
pub const TIMER_SLACK: Duration = Duration::from_millis(1);
/// A request sent this much later than intended counts as a late start (the dispatcher
/// fell behind: every connection was busy, or this client was starved of CPU).
pub const LATE_START: Duration = Duration::from_millis(5);
/// Bound of the queues of waiting holds and confirmed appointments.
pub const QUEUE_MAX: usize = 1_000_000;

struct Appointment {
    id: String,
    citizen: usize,
    bearer: String,
}

enum Task {
    Read(usize),
    Hold {
        citizen: usize,
        clinic: usize,
        slot: usize,
    },
    Confirm(Appointment),
    Release(Appointment),
    Cancel(Appointment),
}

struct Shared {
    ctx: Ctx,
    spec: CampaignSpec,
    vaccine: String,
    tokens: Arc<Tokens>,
    ledger: Arc<Ledger>,
    live: Arc<Live>,
    free: Mutex<VecDeque<usize>>,
    held: Mutex<VecDeque<Appointment>>,
    confirmed: Mutex<VecDeque<Appointment>>,
    stats: Mutex<Stats>,
    retries: AtomicU64,
    replay_seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn record(&self, op: Op, intended: Instant, reply: &Reply) {
        lock(&self.stats).record(op, intended.elapsed(), reply.status, &reply.code);
        self.live.count(reply.status);
        self.retries.fetch_add(
            u64::from(reply.attempts.saturating_sub(1)),
            Ordering::Relaxed,
        );
    }

    fn push(queue: &Mutex<VecDeque<Appointment>>, a: Appointment) {
        let mut q = lock(queue);
        if q.len() < QUEUE_MAX {
            q.push_back(a);
        }
    }

    async fn execute(&self, task: Task, intended: Instant) {
        let api = &self.ctx.api;
        match task {
            Task::Read(clinic) => {
                let reply = api
                    .get(&format!(
                        "/v1/clinics/{}/availability?vaccine={}",
                        self.spec.clinic_id(clinic),
                        self.vaccine
                    ))
                    .await;
                self.record(Op::Read, intended, &reply);
            }
            Task::Hold {
                citizen,
                clinic,
                slot,
            } => {
                let citizen_id = self.spec.citizen_id(citizen);
                let bearer = self.tokens.citizen(&citizen_id);
                let body = json!({
                    "clinic_id": self.spec.clinic_id(clinic),
                    "slot_id": CampaignSpec::slot_id(slot),
                    "vaccine": self.vaccine,
                    "citizen_id": citizen_id,
                });
                let n = self.replay_seq.fetch_add(1, Ordering::Relaxed);
                let key = format!("{}-k{n}", self.spec.prefix);
                let reply = api.create(&bearer, &key, &body).await;
                self.record(Op::Hold, intended, &reply);
                let id = reply.body["appointment_id"].as_str().map(str::to_string);
                match (reply.status, id) {
                    (201, Some(id)) => {
                        self.ledger.record(AckKind::Create, &reply.body);
                        if Rng::for_worker(self.ctx.seed, n).percent(self.ctx.args.replay_pct) {
                            let mut stats = Stats::new();
                            booking::replay(
                                api,
                                &self.ledger,
                                &self.live,
                                &mut stats,
                                (&bearer, None),
                                &key,
                                &citizen_id,
                                &body,
                                &id,
                            )
                            .await;
                            lock(&self.stats).merge(&stats);
                        }
                        Self::push(
                            &self.held,
                            Appointment {
                                id,
                                citizen,
                                bearer,
                            },
                        );
                    }
                    // ALREADY_BOOKED: the citizen holds something we lost track of; retire it.
                    (409, _) if reply.code == "ALREADY_BOOKED" => {}
                    _ => lock(&self.free).push_back(citizen),
                }
            }
            Task::Confirm(a) => {
                let reply = api.transition(&a.bearer, &a.id, "confirm").await;
                self.record(Op::Confirm, intended, &reply);
                match reply.status {
                    200 => {
                        self.ledger.record(AckKind::Confirm, &reply.body);
                        Self::push(&self.confirmed, a);
                    }
                    // The hold expired first: the citizen is free again.
                    410 => lock(&self.free).push_back(a.citizen),
                    _ => {}
                }
            }
            Task::Release(a) => self.cancel(a, Op::Release, intended).await,
            Task::Cancel(a) => self.cancel(a, Op::Cancel, intended).await,
        }
    }

    /// Cancels a hold (a release) or a confirmed appointment; either way the seat, the dose
    /// and the citizen come back.
    async fn cancel(&self, a: Appointment, op: Op, intended: Instant) {
        let reply = self.ctx.api.transition(&a.bearer, &a.id, "cancel").await;
        self.record(op, intended, &reply);
        match reply.status {
            200 => {
                self.ledger.record(AckKind::Cancel, &reply.body);
                lock(&self.free).push_back(a.citizen);
            }
            // INVALID_TRANSITION from EXPIRED: the hold expired first; the citizen is free.
            409 if reply.body["error"]["details"]["status"] == "EXPIRED" => {
                lock(&self.free).push_back(a.citizen)
            }
            _ => {}
        }
    }
}

/// Chooses the next request. Runs in the dispatcher only (one RNG, no contention).
fn choose(shared: &Shared, rng: &mut Rng, zipf: &Zipf) -> Task {
    let args = &shared.ctx.args;
    let clinic = zipf.sample(rng);
    let read = Task::Read(clinic);
    if rng.below(100) < u64::from(args.read_pct) {
        return read;
    }
    let roll = rng.below(100);
    if roll < CANCEL_CONFIRMED_PCT {
        if let Some(a) = lock(&shared.confirmed).pop_front() {
            return Task::Cancel(a);
        }
    } else if roll < CANCEL_CONFIRMED_PCT + FOLLOW_UP_PCT {
        // Abandoned holds are dropped here and the request becomes a new hold.
        let next = lock(&shared.held).pop_front();
        if let Some(a) = next {
            let outcome = rng.below(100) as u32;
            if outcome < args.confirm_pct {
                return Task::Confirm(a);
            } else if outcome < args.confirm_pct + args.release_pct {
                return Task::Release(a);
            }
        }
    }
    match lock(&shared.free).pop_front() {
        Some(citizen) => Task::Hold {
            citizen,
            clinic,
            slot: rng.below(shared.spec.slots_per_clinic as u64) as usize,
        },
        None => read,
    }
}

pub async fn run(ctx: &Ctx) -> Result<ScenarioReport, String> {
    let args = ctx.args.clone();
    let spec = ctx.campaign_spec("steady", None);
    let set_up = ctx.set_up(&spec).await?;
    let ledger = ctx.ledger_for(&spec);
    let live = Arc::new(Live::new(None));
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        vaccine: spec.vaccine(),
        tokens: ctx.tokens.clone(),
        ledger: ledger.clone(),
        live: live.clone(),
        free: Mutex::new((0..spec.citizens).collect()),
        held: Mutex::new(VecDeque::new()),
        confirmed: Mutex::new(VecDeque::new()),
        stats: Mutex::new(Stats::new()),
        retries: AtomicU64::new(0),
        replay_seq: AtomicU64::new(0),
        spec: spec.clone(),
    });
    let zipf = Zipf::new(spec.clinics, args.skew);
    let mut rng = Rng::for_worker(ctx.seed, u64::MAX);
    let slots = Arc::new(Semaphore::new(args.connections));
    let meters = Meters::start(ctx.server_pid);
    let progress = Progress::start("steady", live, None, args.duration, args.quiet);
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut late_starts = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut i: u32 = 0;
    loop {
        let intended = started + interval * i;
        if intended >= deadline {
            break;
        }
        i = i.saturating_add(1);
        tokio::time::sleep_until(intended.into()).await;
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let lateness = intended.elapsed();
        if lateness > LATE_START {
            late_starts += 1;
        }
        let measured_from = intended + lateness.min(TIMER_SLACK);
        let task = choose(&shared, &mut rng, &zipf);
        let shared = shared.clone();
        tasks.spawn(async move {
            shared.execute(task, measured_from).await;
            drop(permit);
        });
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    let drain = args.timeout * (args.retries + 1) + Duration::from_secs(1);
    let drained =
        tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();
    let stats = lock(&shared.stats).clone();
    let mut report = ScenarioReport::new("steady", &stats, seconds, args.connections);
    meters.finish(&mut report);
    report.campaign = Some(set_up);
    report.retries = shared.retries.load(Ordering::Relaxed);
    report.steady = Some(SteadyFigures {
        target_rate_per_s: args.rate,
        achieved_rate_per_s: report.requests_per_s,
        late_starts,
        read_pct: args.read_pct,
    });
    if drained.is_err() {
        report.notes.push(format!(
            "requests still in flight after {drain:?} were abandoned"
        ));
    }
    if late_starts * 100 > u64::from(i) {
        report.notes.push(format!(
            "{late_starts} of {i} requests started more than {LATE_START:?} late: the server or this client could not keep up with --rate {}; their latency counts from the intended start",
            args.rate
        ));
    }
    report.checks.push(
        ctx.check(&ctx.api, "end", &spec.clinic_ids(), &ledger)
            .await,
    );
    report.decide();
    Ok(report)
}
