//! Citizens booking as they do on a launch morning, shared by `launch` and `crash`.
//!
//! Each connection takes the next citizen, picks a clinic by Zipf popularity and a slot in
//! it, and holds a seat; the hold is then confirmed, released or abandoned by the given
//! percentages; clinic staff administer a share of the confirmed appointments at once (with
//! the confirm's `qr_token` and the campaign's batch). A citizen whose slot is sold out (or
//! cancelled by its clinic) tries another one. Sold-out slots (and
//! clinics out of stock) are marked on a shared [`Board`] so nobody keeps knocking on a
//! full door; when the board is all closed, a controller asks the server's availability
//! whether anything is left (a release elsewhere may have returned a seat), reopens what is,
//! and otherwise declares the campaign sold out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::campaign::{CampaignSpec, BATCH};
use crate::cli::Args;
use crate::client::{Api, Reply, Tokens};
use crate::ledger::{AckKind, Ledger, Replay, WaitlistJoin};
use crate::stats::{Live, Op, Stats};
use crate::zipf::{Rng, Zipf};

/// Zipf draws before a connection falls back to scanning for any open clinic (late in a
/// launch, when the hot clinics are full).
pub const ZIPF_TRIES: usize = 8;
/// Slots one citizen tries before giving up (each failed try closes a slot on the board,
/// so this only bounds a citizen in a pathological race).
pub const SLOT_TRIES_PER_CITIZEN: usize = 64;
/// How long a connection waits while the controller verifies a sold-out board.
pub const BOARD_WAIT: Duration = Duration::from_millis(5);
/// Controller period: checks whether workers are done and the board is closed.
pub const CONTROL_TICK: Duration = Duration::from_millis(10);
/// Concurrent availability reads when verifying a sold-out board.
pub const VERIFY_CONCURRENCY: usize = 16;
/// In-doubt creates remembered per round (see [`Booker::in_doubt`]).
pub const IN_DOUBT_MAX: usize = 256;
/// Creates remembered per run for replays after a restart (the crash scenario).
pub const RECENT_CREATES: usize = 64;
/// Waitlist joins per run: each joined citizen's listing is read by every check.
pub const WAITLIST_JOINS_MAX: usize = 200;

/// Refusals by admission control (429) one citizen takes before it gives up: each is
/// followed by a pause of its `Retry-After`, so this bounds a citizen's patience.
pub const REFUSALS_PER_CITIZEN_MAX: u32 = 8;
/// Longest pause a `Retry-After` may impose on a connection (a longer one is cut to this).
pub const REFUSAL_PAUSE_MAX: Duration = Duration::from_secs(5);
/// How often a queued citizen polls its ticket: half its estimated wait, within these.
pub const QUEUE_POLL_MIN: Duration = Duration::from_millis(250);
pub const QUEUE_POLL_MAX: Duration = Duration::from_secs(5);
/// Most polls of one ticket (the run's deadline usually ends them first).
pub const QUEUE_POLLS_MAX: usize = 10_000;
/// Confirmed appointments (neither cancelled nor administered) remembered with their
/// `qr_token`, for administrations after a restart (the crash scenario).
pub const RECENT_CONFIRMED: usize = 64;

/// Which slots are still worth trying.
pub struct Board {
    slots_per_clinic: usize,
    open: Vec<AtomicBool>,
    open_in_clinic: Vec<AtomicUsize>,
    open_clinics: AtomicUsize,
}

impl Board {
    pub fn new(clinics: usize, slots_per_clinic: usize) -> Board {
        Board {
            slots_per_clinic,
            open: (0..clinics * slots_per_clinic)
                .map(|_| AtomicBool::new(true))
                .collect(),
            open_in_clinic: (0..clinics)
                .map(|_| AtomicUsize::new(slots_per_clinic))
                .collect(),
            open_clinics: AtomicUsize::new(clinics),
        }
    }

    pub fn all_closed(&self) -> bool {
        self.open_clinics.load(Ordering::Acquire) == 0
    }

    pub fn close_slot(&self, clinic: usize, slot: usize) {
        if self.open[clinic * self.slots_per_clinic + slot].swap(false, Ordering::AcqRel)
            && self.open_in_clinic[clinic].fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.open_clinics.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub fn close_clinic(&self, clinic: usize) {
        for slot in 0..self.slots_per_clinic {
            self.close_slot(clinic, slot);
        }
    }

    pub fn reopen_slot(&self, clinic: usize, slot: usize) {
        if !self.open[clinic * self.slots_per_clinic + slot].swap(true, Ordering::AcqRel)
            && self.open_in_clinic[clinic].fetch_add(1, Ordering::AcqRel) == 0
        {
            self.open_clinics.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn open_slot_in(&self, clinic: usize, rng: &mut Rng) -> Option<usize> {
        if self.open_in_clinic[clinic].load(Ordering::Acquire) == 0 {
            return None;
        }
        let first = rng.below(self.slots_per_clinic as u64) as usize;
        (0..self.slots_per_clinic)
            .map(|k| (first + k) % self.slots_per_clinic)
            .find(|&s| self.open[clinic * self.slots_per_clinic + s].load(Ordering::Acquire))
    }

    /// An open (clinic, slot): the clinic by popularity, or any open one when the popular
    /// ones are full.
    pub fn pick(&self, zipf: &Zipf, rng: &mut Rng) -> Option<(usize, usize)> {
        if self.all_closed() {
            return None;
        }
        for _ in 0..ZIPF_TRIES {
            let clinic = zipf.sample(rng);
            if let Some(slot) = self.open_slot_in(clinic, rng) {
                return Some((clinic, slot));
            }
        }
        let clinics = self.open_in_clinic.len();
        let first = rng.below(clinics as u64) as usize;
        (0..clinics).find_map(|k| {
            let clinic = (first + k) % clinics;
            self.open_slot_in(clinic, rng).map(|slot| (clinic, slot))
        })
    }
}

/// A create the server acknowledged, kept for a later replay.
#[derive(Debug, Clone)]
pub struct CreatedRecord {
    pub key: String,
    pub citizen_id: String,
    pub body: Value,
    pub appointment_id: String,
}

/// Why a booking run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    SoldOut,
    Duration,
    CitizensExhausted,
    Stopped,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::SoldOut => "sold_out",
            EndReason::Duration => "duration",
            EndReason::CitizensExhausted => "citizens_exhausted",
            EndReason::Stopped => "stopped",
        }
    }
}

/// Everything the connections of one booking run share.
pub struct Booker {
    pub api: Api,
    pub tokens: Arc<Tokens>,
    pub spec: CampaignSpec,
    pub vaccine: String,
    pub zipf: Zipf,
    pub board: Board,
    pub ledger: Arc<Ledger>,
    pub live: Arc<Live>,
    /// Next citizen index (shared across crash rounds).
    pub next_citizen: Arc<AtomicUsize>,
    pub stop: AtomicBool,
    pub deadline: Instant,
    pub confirm_pct: u32,
    pub release_pct: u32,
    pub replay_pct: f64,
    pub seed: u64,
    /// Prefix of Idempotency-Keys (unique per run and round); a sequence number follows,
    /// so a key is never reused for another body (that would be 422 by the contract).
    pub key_prefix: String,
    pub key_seq: AtomicU64,
    /// Percentage of confirmed appointments cancelled right after (returning the seat and
    /// the citizen). 0 for a launch (citizens book once); the crash scenario recycles
    /// seats and citizens so every round has load, however small the campaign.
    pub cancel_confirmed_pct: u32,
    /// Citizens free to book again (after a release or a cancel), when recycling.
    pub returned: Arc<Mutex<VecDeque<usize>>>,
    /// Percentage of confirmed appointments (not cancelled by their citizen) administered
    /// by the clinic's staff right after the confirm.
    pub administer_pct: u32,
    /// One staff token per clinic, by clinic index (see [`staff_tokens`]).
    pub staff: Arc<Vec<String>>,
    pub abandoned: AtomicU64,
    pub citizens_served: AtomicU64,
    pub retries: AtomicU64,
    pub recent: Mutex<VecDeque<CreatedRecord>>,
    /// The last [`RECENT_CONFIRMED`] confirmed appointments left CONFIRMED, as (clinic
    /// index, appointment id, `qr_token`): the crash scenario administers some after the
    /// restart with the token issued before the kill.
    pub confirmed: Mutex<VecDeque<(usize, String, String)>>,
    /// Creates that got no answer at all (the server died with them in flight), as
    /// (key, citizen, body), at most [`IN_DOUBT_MAX`]: after a restart, the crash scenario
    /// sends them again with the same key to learn what happened.
    pub in_doubt: Mutex<Vec<(String, String, Value)>>,
    /// The server runs a waiting room (learnt from its first 429 QUEUE_REQUIRED): citizens
    /// queue for an admission token before they book.
    pub queue_first: AtomicBool,
    /// How many times a create, confirm or cancel refused with `429`/`503` is sent again
    /// after its `Retry-After` (as a patient browser would; the flood scenario). 0: a
    /// refused citizen stops there (launch, crash), apart from the waiting room's and the
    /// rate limits' `429`s, which every citizen waits out (at most
    /// [`REFUSALS_PER_CITIZEN_MAX`] times).
    pub refused_retries: u32,
    /// Percentage of `SOLD_OUT` answers after which the citizen joins that slot's waitlist
    /// and then waits (books nothing else), at most [`WAITLIST_JOINS_MAX`] joins per run.
    /// 0: nobody joins (launch, flood).
    pub waitlist_pct: u32,
    /// Waitlist joins sent so far (shared across crash rounds).
    pub waitlist_joins: Arc<AtomicUsize>,
}

/// What differs between the runs that book (a launch, a flood's phases, a crash's rounds):
/// where they send, what they share with the runs before and after, and their own shares.
pub struct BookerPlan {
    pub api: Api,
    pub ledger: Arc<Ledger>,
    pub live: Arc<Live>,
    pub staff: Arc<Vec<String>>,
    /// Shared with the runs before this one when citizens carry over (crash rounds, flood
    /// phases); a fresh counter otherwise.
    pub next_citizen: Arc<AtomicUsize>,
    pub returned: Arc<Mutex<VecDeque<usize>>>,
    pub waitlist_joins: Arc<AtomicUsize>,
    /// How long the run books.
    pub duration: Duration,
    pub seed: u64,
    /// Unique per run and round (see [`Booker::key_prefix`]).
    pub key_prefix: String,
    pub cancel_confirmed_pct: u32,
    pub administer_pct: u32,
    pub refused_retries: u32,
    pub waitlist_pct: u32,
}

impl Booker {
    /// A run of `plan` over `spec`, its citizens choosing by the flags (`--skew`,
    /// `--confirm-pct`, `--release-pct`, `--replay-pct`), every count at zero.
    pub fn new(args: &Args, tokens: Arc<Tokens>, spec: &CampaignSpec, plan: BookerPlan) -> Booker {
        Booker {
            api: plan.api,
            tokens,
            vaccine: spec.vaccine(),
            zipf: Zipf::new(spec.clinics, args.skew),
            board: Board::new(spec.clinics, spec.slots_per_clinic),
            ledger: plan.ledger,
            live: plan.live,
            next_citizen: plan.next_citizen,
            stop: AtomicBool::new(false),
            deadline: Instant::now() + plan.duration,
            confirm_pct: args.confirm_pct,
            release_pct: args.release_pct,
            replay_pct: args.replay_pct,
            seed: plan.seed,
            key_prefix: plan.key_prefix,
            key_seq: AtomicU64::new(0),
            cancel_confirmed_pct: plan.cancel_confirmed_pct,
            returned: plan.returned,
            administer_pct: plan.administer_pct,
            staff: plan.staff,
            abandoned: AtomicU64::new(0),
            citizens_served: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            recent: Mutex::new(Default::default()),
            confirmed: Mutex::new(Default::default()),
            in_doubt: Mutex::new(Vec::new()),
            queue_first: AtomicBool::new(false),
            refused_retries: plan.refused_retries,
            waitlist_pct: plan.waitlist_pct,
            waitlist_joins: plan.waitlist_joins,
            spec: spec.clone(),
        }
    }
}

/// The citizen a connection is serving.
struct Who<'a> {
    index: usize,
    id: &'a str,
    bearer: &'a str,
    /// The waiting room's admission token, when the server runs one.
    admission: Option<&'a str>,
}

/// One create: its key, its body and the slot it asked for.
struct Attempt {
    key: String,
    body: Value,
    clinic: usize,
    slot: usize,
}

/// The result of [`run`].
pub struct BookingRun {
    pub stats: Stats,
    pub seconds: f64,
    pub end_reason: EndReason,
    pub sell_out: Option<Duration>,
    pub sold_out_checks: u64,
}

fn record(stats: &mut Stats, live: &Live, op: Op, started: Instant, reply: &Reply) {
    stats.record(op, started.elapsed(), reply.status, &reply.code);
    live.count(reply.status);
}

impl Booker {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    /// One connection: citizens one after another until stopped, out of citizens or out of
    /// seats.
    async fn connection(self: Arc<Self>, index: u64) -> Stats {
        let mut stats = Stats::new();
        let mut rng = Rng::for_worker(self.seed, index);
        while !self.stopped() {
            let citizen = self.next_citizen.fetch_add(1, Ordering::Relaxed);
            let citizen = if citizen < self.spec.citizens {
                citizen
            } else {
                match self.returned.lock().ok().and_then(|mut r| r.pop_front()) {
                    Some(c) => c,
                    None => break,
                }
            };
            self.citizen(citizen, &mut rng, &mut stats).await;
            self.citizens_served.fetch_add(1, Ordering::Relaxed);
        }
        stats
    }

    async fn citizen(&self, citizen: usize, rng: &mut Rng, stats: &mut Stats) {
        let citizen_id = self.spec.citizen_id(citizen);
        let bearer = self.tokens.citizen(&citizen_id);
        let mut tries = 0;
        let mut refusals = 0;
        let mut admission: Option<String> = None;
        while tries < SLOT_TRIES_PER_CITIZEN && !self.stopped() {
            if admission.is_none() && self.queue_first.load(Ordering::Relaxed) {
                match self.admit(&bearer, stats).await {
                    Some(token) => admission = Some(token),
                    None => return,
                }
            }
            let Some((clinic, slot)) = self.board.pick(&self.zipf, rng) else {
                // Sold out as far as we know: wait for the controller's verdict.
                tokio::time::sleep(BOARD_WAIT).await;
                continue;
            };
            tries += 1;
            let attempt = self.attempt(&citizen_id, clinic, slot);
            let reply = self
                .send_recorded(Op::Hold, stats, || {
                    self.api.create_admitted(
                        &bearer,
                        &attempt.key,
                        &attempt.body,
                        admission.as_deref(),
                    )
                })
                .await;
            match (reply.status, reply.code.as_str()) {
                (201, _) => {
                    let who = Who {
                        index: citizen,
                        id: &citizen_id,
                        bearer: &bearer,
                        admission: admission.as_deref(),
                    };
                    self.created(&who, attempt, &reply, rng, stats).await;
                    return;
                }
                (409, "SOLD_OUT") => {
                    self.board.close_slot(clinic, slot);
                    if rng.percent(f64::from(self.waitlist_pct))
                        && self
                            .join_waitlist(&bearer, &citizen_id, (clinic, slot), stats)
                            .await
                    {
                        return; // The citizen waits for an offer.
                    }
                }
                (409, "OUT_OF_STOCK") => self.board.close_clinic(clinic),
                // The clinic cancelled the slot (`--cancel-slots`): nobody books it again.
                (409, "SLOT_CANCELLED") => self.board.close_slot(clinic, slot),
                // A refusal by admission control is no answer about the slot: wait as told
                // (queue first, for QUEUE_REQUIRED) and try again, within the citizen's patience.
                (429, code) => {
                    refusals += 1;
                    tries -= 1;
                    if refusals > REFUSALS_PER_CITIZEN_MAX {
                        return;
                    }
                    if code == "QUEUE_REQUIRED" {
                        self.queue_first.store(true, Ordering::Relaxed);
                        admission = None;
                    } else if !self.pause_for(&reply).await {
                        return;
                    }
                }
                (0, _) => {
                    if let Ok(mut d) = self.in_doubt.lock() {
                        if d.len() < IN_DOUBT_MAX {
                            d.push((attempt.key, citizen_id.clone(), attempt.body));
                        }
                    }
                    return;
                }
                // Anything else (ALREADY_BOOKED after a crash lost our answer, 503 while a
                // shard recovers): this citizen stops here.
                _ => return,
            }
        }
    }

    /// Sends with `send` and records every answer; a refusal (`429`/`503`) is sent again
    /// after its `Retry-After` (at most [`REFUSAL_PAUSE_MAX`], and not past the run's
    /// end), up to `refused_retries` times. A create is sent again with its key: a refusal
    /// decided nothing.
    async fn send_recorded<F, Fut>(&self, op: Op, stats: &mut Stats, send: F) -> Reply
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Reply>,
    {
        let mut refusals = 0;
        loop {
            let started = Instant::now();
            let reply = send().await;
            record(stats, &self.live, op, started, &reply);
            self.retries
                .fetch_add(u64::from(reply.attempts - 1), Ordering::Relaxed);
            if !reply.is_refusal() || refusals >= self.refused_retries || self.stopped() {
                return reply;
            }
            refusals += 1;
            let asked = Duration::from_secs(reply.retry_after_s.unwrap_or(1));
            let left = self.deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(asked.min(REFUSAL_PAUSE_MAX).min(left)).await;
            if self.stopped() {
                return reply;
            }
        }
    }

    /// Joins the waitlist of (clinic, slot) for the citizen; a 201 is recorded in the
    /// ledger. Returns whether the citizen now waits (a 201, or no answer: the join may
    /// have happened, so the citizen books nothing else either way).
    async fn join_waitlist(
        &self,
        bearer: &str,
        citizen_id: &str,
        (clinic, slot): (usize, usize),
        stats: &mut Stats,
    ) -> bool {
        if self.waitlist_joins.fetch_add(1, Ordering::Relaxed) >= WAITLIST_JOINS_MAX {
            return false;
        }
        let (clinic_id, slot_id) = (self.spec.clinic_id(clinic), CampaignSpec::slot_id(slot));
        let key = format!(
            "{}w{}",
            self.key_prefix,
            self.key_seq.fetch_add(1, Ordering::Relaxed)
        );
        let body = json!({"citizen_id": citizen_id, "vaccine": self.vaccine});
        let reply = self
            .send_recorded(Op::Waitlist, stats, || {
                self.api
                    .join_waitlist(bearer, &key, (&clinic_id, &slot_id), &body)
            })
            .await;
        match (reply.status, reply.body["waitlist_id"].as_str()) {
            (201, Some(id)) => {
                self.ledger.record_waitlist_join(WaitlistJoin {
                    waitlist_id: id.to_string(),
                    citizen_id: citizen_id.to_string(),
                    clinic_id,
                    slot_id,
                });
                true
            }
            (0, _) => true,
            _ => false,
        }
    }

    /// A create of a seat in `(clinic, slot)` for `citizen_id`, under a fresh key (unique
    /// per run and round, so a key is never reused for another body).
    fn attempt(&self, citizen_id: &str, clinic: usize, slot: usize) -> Attempt {
        let body = json!({
            "clinic_id": self.spec.clinic_id(clinic),
            "slot_id": CampaignSpec::slot_id(slot),
            "vaccine": self.vaccine,
            "citizen_id": citizen_id,
        });
        let seq = self.key_seq.fetch_add(1, Ordering::Relaxed);
        Attempt {
            key: format!("{}{seq}", self.key_prefix),
            body,
            clinic,
            slot,
        }
    }

    /// A create answered 201: recorded, replayed as `--replay-pct` says, then followed up
    /// (confirm, release or abandon).
    async fn created(
        &self,
        who: &Who<'_>,
        attempt: Attempt,
        reply: &Reply,
        rng: &mut Rng,
        stats: &mut Stats,
    ) {
        self.ledger.record(AckKind::Create, &reply.body);
        self.live.seats_taken(1);
        let Some(id) = reply.body["appointment_id"].as_str().map(str::to_string) else {
            return;
        };
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_CREATES {
                recent.pop_front();
            }
            recent.push_back(CreatedRecord {
                key: attempt.key.clone(),
                citizen_id: who.id.to_string(),
                body: attempt.body.clone(),
                appointment_id: id.clone(),
            });
        }
        if rng.percent(self.replay_pct) {
            replay(
                &self.api,
                &self.ledger,
                &self.live,
                stats,
                (who.bearer, who.admission),
                &attempt.key,
                who.id,
                &attempt.body,
                &id,
            )
            .await;
        }
        let place = (attempt.clinic, attempt.slot);
        self.follow_up(who.bearer, &id, who.index, place, rng, stats)
            .await;
    }

    fn recycle(&self, citizen: usize) {
        if self.cancel_confirmed_pct > 0 {
            if let Ok(mut r) = self.returned.lock() {
                r.push_back(citizen);
            }
        }
    }

    async fn follow_up(
        &self,
        bearer: &str,
        id: &str,
        citizen: usize,
        (clinic, slot): (usize, usize),
        rng: &mut Rng,
        stats: &mut Stats,
    ) {
        let roll = rng.below(100) as u32;
        let (op, action, kind) = if roll < self.confirm_pct {
            (Op::Confirm, "confirm", AckKind::Confirm)
        } else if roll < self.confirm_pct + self.release_pct {
            (Op::Release, "cancel", AckKind::Cancel)
        } else {
            self.abandoned.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let reply = self
            .transition_politely(bearer, id, action, op, stats)
            .await;
        if reply.status != 200 {
            return;
        }
        self.ledger.record(kind, &reply.body);
        if op == Op::Release {
            self.live.seats_taken(-1);
            self.board.reopen_slot(clinic, slot);
            self.recycle(citizen);
            return;
        }
        if rng.below(100) < u64::from(self.cancel_confirmed_pct) {
            let reply = self
                .transition_politely(bearer, id, "cancel", Op::Cancel, stats)
                .await;
            if reply.status == 200 {
                self.ledger.record(AckKind::Cancel, &reply.body);
                self.live.seats_taken(-1);
                self.board.reopen_slot(clinic, slot);
                self.recycle(citizen);
            }
        } else if rng.below(100) < u64::from(self.administer_pct) {
            let qr_token = reply.body["qr_token"].as_str().unwrap_or_default();
            administer(
                &self.api,
                &self.ledger,
                &self.live,
                stats,
                &self.staff[clinic],
                id,
                qr_token,
            )
            .await;
        } else if let (Ok(mut recent), Some(qr_token)) =
            (self.confirmed.lock(), reply.body["qr_token"].as_str())
        {
            if recent.len() == RECENT_CONFIRMED {
                recent.pop_front();
            }
            recent.push_back((clinic, id.to_string(), qr_token.to_string()));
        }
    }
}

impl Booker {
    /// Sleeps `pause` (cut at the run's end); whether the run goes on.
    async fn sleep_unless_stopped(&self, pause: Duration) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(pause.min(left)).await;
        !self.stopped()
    }

    /// Waits as a refusal's `Retry-After` says (1 s without one, at most
    /// [`REFUSAL_PAUSE_MAX`]); whether the run goes on.
    async fn pause_for(&self, reply: &Reply) -> bool {
        self.sleep_unless_stopped(refusal_pause(reply)).await
    }

    /// A confirm or cancel, sent again after each 429's `Retry-After` (at most
    /// [`REFUSALS_PER_CITIZEN_MAX`] times); every answer is recorded.
    async fn transition_politely(
        &self,
        bearer: &str,
        id: &str,
        action: &str,
        op: Op,
        stats: &mut Stats,
    ) -> Reply {
        let mut refusals = 0;
        loop {
            let started = Instant::now();
            let reply = self.api.transition(bearer, id, action).await;
            record(stats, &self.live, op, started, &reply);
            self.retries
                .fetch_add(u64::from(reply.attempts - 1), Ordering::Relaxed);
            // A citizen holding a seat finishes with it even once the campaign is sold out
            // (the stop flag): only the run's deadline cuts its patience.
            let polite =
                reply.status == 429 || (reply.is_refusal() && refusals < self.refused_retries);
            if !polite || refusals >= REFUSALS_PER_CITIZEN_MAX || Instant::now() >= self.deadline {
                return reply;
            }
            refusals += 1;
            let left = self.deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(refusal_pause(&reply).min(left)).await;
        }
    }

    /// Queues in the waiting room and polls the ticket politely (half its estimated wait,
    /// within [`QUEUE_POLL_MIN`]..[`QUEUE_POLL_MAX`]) until admitted; the admission token,
    /// or `None` when the run ends first or the room will not have the citizen.
    async fn admit(&self, bearer: &str, stats: &mut Stats) -> Option<String> {
        let started = Instant::now();
        let mut reply = self.api.queue_join(bearer).await;
        record(stats, &self.live, Op::Queue, started, &reply);
        let mut refusals = 0;
        for _ in 0..QUEUE_POLLS_MAX {
            if let Some(token) = reply.body["admission_token"].as_str() {
                return Some(token.to_string());
            }
            let (op, next) = match (reply.status, reply.body["ticket"].as_str()) {
                (200 | 201, Some(ticket)) => {
                    let wait_s = reply.body["estimated_wait_s"].as_u64().unwrap_or(1);
                    let pause = Duration::from_millis(wait_s.saturating_mul(500))
                        .clamp(QUEUE_POLL_MIN, QUEUE_POLL_MAX);
                    if !self.sleep_unless_stopped(pause).await {
                        return None;
                    }
                    (Op::QueuePoll, Some(ticket.to_string()))
                }
                // Rate limited, or the room is full: wait as told, then ask again.
                (429 | 503, _) if refusals < REFUSALS_PER_CITIZEN_MAX => {
                    refusals += 1;
                    if !self.pause_for(&reply).await {
                        return None;
                    }
                    (Op::Queue, None)
                }
                _ => return None,
            };
            let started = Instant::now();
            reply = match &next {
                Some(ticket) => self.api.queue_poll(bearer, ticket).await,
                None => self.api.queue_join(bearer).await,
            };
            record(stats, &self.live, op, started, &reply);
        }
        None
    }
}

/// The pause a refusal asks for: its `Retry-After` (1 s without one), at most
/// [`REFUSAL_PAUSE_MAX`].
fn refusal_pause(reply: &Reply) -> Duration {
    Duration::from_secs(reply.retry_after_s.unwrap_or(1).max(1)).min(REFUSAL_PAUSE_MAX)
}

/// One staff token per clinic of `spec`, by clinic index.
pub fn staff_tokens(tokens: &Tokens, spec: &CampaignSpec) -> Arc<Vec<String>> {
    Arc::new(
        (0..spec.clinics)
            .map(|c| tokens.staff(&spec.clinic_id(c)))
            .collect(),
    )
}

/// Staff administer a CONFIRMED appointment from the campaign's batch, with the `qr_token`
/// its confirm answered; a 200 is recorded in the ledger (ADMINISTERED with the batch).
/// Returns whether it was acknowledged.
pub async fn administer(
    api: &Api,
    ledger: &Ledger,
    live: &Live,
    stats: &mut Stats,
    staff: &str,
    id: &str,
    qr_token: &str,
) -> bool {
    let started = Instant::now();
    let reply = api.administer(staff, id, qr_token, BATCH).await;
    record(stats, live, Op::Administer, started, &reply);
    reply.status == 200 && ledger.record(AckKind::Administer, &reply.body)
}

/// Sends a create again with the same key and body, and records what came back.
#[allow(clippy::too_many_arguments)]
pub async fn replay(
    api: &Api,
    ledger: &Ledger,
    live: &Live,
    stats: &mut Stats,
    (bearer, admission): (&str, Option<&str>),
    key: &str,
    citizen_id: &str,
    body: &Value,
    first_id: &str,
) {
    let mut again = Reply::default();
    for _ in 0..=REFUSALS_PER_CITIZEN_MAX {
        let started = Instant::now();
        again = api.create_admitted(bearer, key, body, admission).await;
        record(stats, live, Op::Replay, started, &again);
        if again.status != 429 {
            break;
        }
        // Refused by admission control before any decision (not stored under the key):
        // wait as told and send it again.
        tokio::time::sleep(refusal_pause(&again)).await;
    }
    if again.is_transport_failure() || again.is_refusal() {
        // No answer to compare: nothing reached the booking (refused before any decision:
        // admission control or the overload bound).
        return;
    }
    ledger.record_replay(Replay {
        idempotency_key: key.to_string(),
        citizen_id: citizen_id.to_string(),
        first_status: 201,
        first_appointment_id: Some(first_id.to_string()),
        replay_status: again.status,
        replay_appointment_id: again.body["appointment_id"].as_str().map(str::to_string),
    });
}

/// Asks the server whether any seat is left; reopens every slot that has one. Returns how
/// many slots were reopened, or an error when availability could not be read.
async fn verify_sold_out(booker: &Booker) -> Result<usize, String> {
    let clinics = booker.spec.clinics;
    let next = Arc::new(AtomicUsize::new(0));
    let reopened = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..VERIFY_CONCURRENCY.min(clinics) {
        let (api, spec, vaccine, next, reopened) = (
            booker.api.clone(),
            booker.spec.clone(),
            booker.vaccine.clone(),
            next.clone(),
            reopened.clone(),
        );
        tasks.spawn(async move {
            let mut open = Vec::new();
            loop {
                let clinic = next.fetch_add(1, Ordering::Relaxed);
                if clinic >= spec.clinics {
                    return Ok::<_, String>(open);
                }
                let reply = api
                    .get(&format!(
                        "/v1/clinics/{}/availability?vaccine={vaccine}",
                        spec.clinic_id(clinic)
                    ))
                    .await;
                if reply.status != 200 {
                    return Err(format!(
                        "availability of {}: {} {}",
                        spec.clinic_id(clinic),
                        reply.status,
                        reply.code
                    ));
                }
                let doses = reply.body["stock"][&vaccine]["available"]
                    .as_i64()
                    .unwrap_or(0);
                if doses <= 0 {
                    continue;
                }
                for slot in reply.body["slots"].as_array().into_iter().flatten() {
                    let remaining = slot["remaining"].as_u64().unwrap_or(0);
                    let index = slot["slot_id"]
                        .as_str()
                        .and_then(|s| s.strip_prefix('s'))
                        .and_then(|s| s.parse::<usize>().ok());
                    if let (true, Some(index)) = (remaining > 0, index) {
                        if index < spec.slots_per_clinic {
                            open.push((clinic, index));
                            reopened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(open)) => {
                for (clinic, slot) in open {
                    booker.board.reopen_slot(clinic, slot);
                }
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(e.to_string())),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(reopened.load(Ordering::Relaxed)),
    }
}

/// Runs `connections` connections until sold out, out of citizens, stopped or the deadline.
pub async fn run(booker: Arc<Booker>, connections: usize) -> BookingRun {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..connections {
        tasks.spawn(booker.clone().connection(index as u64));
    }
    let mut stats = Stats::new();
    let mut sell_out = None;
    let mut sold_out_checks = 0;
    let mut closed_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(CONTROL_TICK);
    while !tasks.is_empty() {
        tokio::select! {
            done = tasks.join_next() => {
                if let Some(Ok(s)) = done {
                    stats.merge(&s);
                }
            }
            _ = ticker.tick() => {
                if sell_out.is_some() || booker.stop.load(Ordering::Relaxed) {
                    continue;
                }
                if !booker.board.all_closed() {
                    closed_since = None;
                    continue;
                }
                let since = *closed_since.get_or_insert_with(Instant::now);
                sold_out_checks += 1;
                match verify_sold_out(&booker).await {
                    Ok(0) => {
                        sell_out = Some(since.duration_since(started));
                        booker.stop.store(true, Ordering::Relaxed);
                    }
                    Ok(_) => closed_since = None,
                    // Could not read availability (the server is going down): leave the
                    // board closed and let the deadline or the stop flag end the run.
                    Err(_) => {}
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let end_reason = if sell_out.is_some() {
        EndReason::SoldOut
    } else if booker.next_citizen.load(Ordering::Relaxed) >= booker.spec.citizens {
        EndReason::CitizensExhausted
    } else if Instant::now() >= booker.deadline {
        EndReason::Duration
    } else {
        EndReason::Stopped
    };
    BookingRun {
        stats,
        seconds,
        end_reason,
        sell_out,
        sold_out_checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_closes_and_reopens() {
        let board = Board::new(3, 2);
        let zipf = Zipf::new(3, 1.0);
        let mut rng = Rng::new(1);
        assert!(board.pick(&zipf, &mut rng).is_some());
        board.close_clinic(0);
        board.close_slot(1, 0);
        board.close_slot(1, 0); // twice: counted once
        for _ in 0..100 {
            let (c, s) = board.pick(&zipf, &mut rng).unwrap();
            assert!(c != 0 && (c, s) != (1, 0));
        }
        board.close_slot(1, 1);
        board.close_clinic(2);
        assert!(board.all_closed());
        assert_eq!(board.pick(&zipf, &mut rng), None);
        board.reopen_slot(0, 1);
        board.reopen_slot(0, 1);
        assert!(!board.all_closed());
        assert_eq!(board.pick(&zipf, &mut rng), Some((0, 1)));
        board.close_slot(0, 1);
        assert!(board.all_closed());
    }
}
