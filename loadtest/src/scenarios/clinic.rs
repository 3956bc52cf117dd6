//! The clinic side of `launch` and `crash`: staff cancelling slots (clinic cancellations),
//! and the crash scenario's no-show group. Administrations happen inline, right after a
//! confirm ([`super::booking::administer`]); this module owns what is not part of a
//! citizen's booking.
//!
//! - Clinic cancellations: `--clinic-cancel-pct` of the campaign's slots, chosen from the
//!   seed, spread evenly over the clinics ([`slots_to_cancel`]); each is cancelled by a
//!   staff member of its clinic with an Idempotency-Key of its own, so a cancellation a kill
//!   left unanswered is sent again after the restart with the same key ([`SlotQueue`]).
//!   Each 200 goes to the ledger with the appointments it named as affected.
//! - The no-show group ([`set_up_no_show_group`]): `--no-show-group` citizens book and
//!   confirm extra slots (`ns`) that start [`NO_SHOW_LEAD`] after set-up and last
//!   [`NO_SHOW_SLOT_LENGTH`]; some are administered (by `--administer-pct`), the rest are
//!   left alone and must become NO_SHOW once the server's `--no-show-grace` has passed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::json;

use crate::campaign::{CampaignSpec, REGION};
use crate::client::{Api, Reply, Tokens};
use crate::ledger::{AckKind, Ledger};
use crate::report::CheckEntry;
use crate::stats::{Live, Op, Stats};
use crate::zipf::Rng;

use super::booking;

/// Concurrent slot cancellations after a launch: quick, and far below what would queue.
pub const CANCEL_CONCURRENCY: usize = 16;
/// How long after set-up the no-show group's slots start: time to book and confirm the
/// whole group (at most [`crate::cli::NO_SHOW_GROUP_MAX`], concurrently) before a started
/// slot refuses bookings.
pub const NO_SHOW_LEAD: Duration = Duration::from_secs(3);
/// Length of a no-show slot (the API needs `end > start`; whole seconds keep RFC 3339 short).
pub const NO_SHOW_SLOT_LENGTH: Duration = Duration::from_secs(1);
/// The no-show group is spread over at most this many clinics, one `ns` slot each.
pub const NO_SHOW_CLINICS_MAX: usize = 4;
/// The id of the no-show slot in each of those clinics (outside the booking board's `s<N>`).
pub const NO_SHOW_SLOT: &str = "ns";
/// Margin past `end + grace + slack` before the check that must see the group settled.
pub const NO_SHOW_CHECK_MARGIN: Duration = Duration::from_millis(250);
/// Salt of the random stream choosing slots to cancel and group administrations.
const CLINIC_STREAM: u64 = 0x00C1_1A1C;

/// The clinic side of a scenario, for the report: what staff did and what the last check
/// saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClinicFigures {
    pub administer_pct: u32,
    pub clinic_cancel_pct: u32,
    /// Administrations acknowledged (200 ADMINISTERED).
    pub administered: usize,
    /// Slot cancellations acknowledged, and the appointments they named as affected.
    pub slots_cancelled: usize,
    pub clinic_cancelled: usize,
    /// Slot cancellations planned but never acknowledged (a kill took the answer, or the
    /// run ended first).
    pub slots_not_cancelled: usize,
    /// The no-show group: appointments confirmed and left to fall due, and when (RFC 3339)
    /// their slots end.
    pub no_show_group: usize,
    pub no_show_slots_end: Option<String>,
    /// Appointments of the campaign per status in the last check's picture.
    pub seen_administered: u64,
    pub seen_no_show: u64,
    pub seen_clinic_cancelled: u64,
}

impl ClinicFigures {
    /// The acknowledged counts from `ledger`, the seen ones from `last_check`.
    pub fn new(args: &crate::cli::Args, ledger: &Ledger, last_check: Option<&CheckEntry>) -> Self {
        let cancellations = ledger.slot_cancellations();
        let seen = |status: &str| {
            last_check
                .and_then(|c| c.report["appointments_by_status"][status].as_u64())
                .unwrap_or(0)
        };
        ClinicFigures {
            administer_pct: args.administer_pct,
            clinic_cancel_pct: args.clinic_cancel_pct,
            administered: ledger.count_kind(AckKind::Administer),
            slots_cancelled: cancellations.len(),
            clinic_cancelled: cancellations.iter().map(|c| c.affected.len()).sum(),
            seen_administered: seen("ADMINISTERED"),
            seen_no_show: seen("NO_SHOW"),
            seen_clinic_cancelled: seen("CLINIC_CANCELLED"),
            ..ClinicFigures::default()
        }
    }
}

/// A failure when staff were refused with a `qr_token` the server itself answered to a
/// confirm (403 `BAD_QR`): tokens stay valid until administered, across restarts too.
pub fn refused_own_tokens(stats: &Stats) -> Option<String> {
    let refused: u64 = stats
        .outcomes
        .iter()
        .filter(|(k, _)| k.op == Op::Administer && k.code == "BAD_QR")
        .map(|(_, n)| n)
        .sum();
    (refused > 0).then(|| {
        format!("{refused} administrations refused BAD_QR with the qr_token the server issued")
    })
}

/// `pct` percent of the campaign's `(clinic, slot)`s, rounded up, evenly spaced from a
/// random offset (so they fall on every clinic alike, hot and cold).
pub fn slots_to_cancel(spec: &CampaignSpec, pct: u32, seed: u64) -> Vec<(usize, usize)> {
    let total = spec.clinics as u64 * spec.slots_per_clinic as u64;
    let count = (total * u64::from(pct.min(100))).div_ceil(100);
    if count == 0 {
        return Vec::new();
    }
    let step = total as f64 / count as f64;
    let offset = Rng::for_worker(seed, CLINIC_STREAM).below(step.floor().max(1.0) as u64);
    (0..count)
        .map(|k| ((offset as f64 + k as f64 * step) as u64).min(total - 1))
        .map(|i| {
            let per = spec.slots_per_clinic as u64;
            ((i / per) as usize, (i % per) as usize)
        })
        .collect()
}

/// Slots waiting for their cancellation, shared by the crash rounds; a cancellation left
/// without an answer goes back to the front and is sent again (same key) next round.
#[derive(Debug, Default)]
pub struct SlotQueue {
    pending: Mutex<VecDeque<(usize, usize)>>,
}

impl SlotQueue {
    pub fn new(slots: Vec<(usize, usize)>) -> SlotQueue {
        SlotQueue {
            pending: Mutex::new(slots.into()),
        }
    }

    pub fn len(&self) -> usize {
        self.pending.lock().map_or(0, |q| q.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pop(&self) -> Option<(usize, usize)> {
        self.pending.lock().ok()?.pop_front()
    }

    fn put_back(&self, slot: (usize, usize)) {
        if let Ok(mut q) = self.pending.lock() {
            q.push_front(slot);
        }
    }
}

/// What a cancellation needs.
pub struct Canceller {
    pub api: Api,
    pub ledger: Arc<Ledger>,
    pub live: Arc<Live>,
    pub spec: CampaignSpec,
    pub staff: Arc<Vec<String>>,
    pub queue: Arc<SlotQueue>,
}

impl Canceller {
    /// The Idempotency-Key of one slot's cancellation: the same in every round.
    fn key(&self, clinic: usize, slot: usize) -> String {
        format!("{}-cc{clinic}-{slot}", self.spec.prefix)
    }

    /// Cancels one slot as its clinic's staff. A 200 is recorded with its affected ids;
    /// no answer puts the slot back for the next round; any other answer drops it (a
    /// 409/404 is the server's decision, not a loss).
    async fn cancel_one(&self, (clinic, slot): (usize, usize), stats: &mut Stats) {
        let clinic_id = self.spec.clinic_id(clinic);
        let slot_id = CampaignSpec::slot_id(slot);
        let started = Instant::now();
        let reply = self
            .api
            .cancel_slot(
                &self.staff[clinic],
                &clinic_id,
                &slot_id,
                &self.key(clinic, slot),
            )
            .await;
        stats.record(
            Op::ClinicCancel,
            started.elapsed(),
            reply.status,
            &reply.code,
        );
        self.live.count(reply.status);
        match reply.status {
            200 => {
                self.ledger
                    .record_slot_cancellation(&clinic_id, &slot_id, &affected_ids(&reply))
            }
            0 => self.queue.put_back((clinic, slot)),
            _ => {}
        }
    }

    /// Cancels every queued slot, [`CANCEL_CONCURRENCY`] at a time (after a launch).
    pub async fn drain(self: Arc<Self>) -> Stats {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CANCEL_CONCURRENCY.min(self.queue.len()) {
            let me = self.clone();
            tasks.spawn(async move {
                let mut stats = Stats::new();
                // A slot put back after a transport failure is tried once more at most.
                let mut tries = 0;
                while let Some(slot) = me.queue.pop() {
                    me.cancel_one(slot, &mut stats).await;
                    tries += 1;
                    if tries > 2 * me.spec.clinics * me.spec.slots_per_clinic {
                        break;
                    }
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
        stats
    }

    /// One crash round's share: `count` cancellations evenly over `window`, until `stop`.
    pub async fn during_round(
        self: Arc<Self>,
        count: usize,
        window: Duration,
        stop: Arc<AtomicBool>,
    ) -> Stats {
        let mut stats = Stats::new();
        let pause = window / (count as u32 + 1);
        for _ in 0..count {
            tokio::time::sleep(pause).await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Some(slot) = self.queue.pop() else { break };
            self.cancel_one(slot, &mut stats).await;
        }
        stats
    }
}

/// The `affected_appointment_ids` of a slot cancellation's answer.
fn affected_ids(reply: &Reply) -> Vec<String> {
    reply.body["affected_appointment_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The no-show group once booked: how many were left to fall due, and when their slots end.
#[derive(Debug, Clone)]
pub struct NoShowGroup {
    pub left_to_fall_due: usize,
    pub administered: usize,
    pub slots_end: chrono::DateTime<chrono::Utc>,
}

impl NoShowGroup {
    /// When a check must see every one of them NO_SHOW (or ADMINISTERED): after the grace
    /// and the checker's slack, plus [`NO_SHOW_CHECK_MARGIN`].
    pub fn settled_at(&self, grace: Duration, slack: Duration) -> chrono::DateTime<chrono::Utc> {
        let wait = grace + slack + NO_SHOW_CHECK_MARGIN;
        self.slots_end + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero())
    }

    /// Sleeps until [`NoShowGroup::settled_at`] (no longer than that: it is in the near
    /// future by construction, the grace being bounded by `--no-show-grace`'s validation).
    pub async fn wait_until_settled(&self, grace: Duration, slack: Duration) {
        let left = self.settled_at(grace, slack) - chrono::Utc::now();
        if let Ok(left) = left.to_std() {
            tokio::time::sleep(left).await;
        }
    }
}

/// What the no-show group's set-up needs.
pub struct GroupSpec<'a> {
    pub api: &'a Api,
    pub tokens: &'a Tokens,
    pub spec: &'a CampaignSpec,
    pub staff: &'a [String],
    pub ledger: &'a Ledger,
    pub live: &'a Live,
    pub size: usize,
    pub administer_pct: u32,
    pub seed: u64,
}

/// Creates the group's citizens and slots, books and confirms every member concurrently,
/// administers some (by `administer_pct`) and records the rest as expected no-shows.
pub async fn set_up_no_show_group(
    g: &GroupSpec<'_>,
    stats: &mut Stats,
) -> Result<NoShowGroup, String> {
    let authority = g.tokens.authority();
    let citizens: Vec<String> = (0..g.size)
        .map(|i| format!("{}-ns{i}", g.spec.prefix))
        .collect();
    for (i, citizen) in citizens.iter().enumerate() {
        let reply = g
            .api
            .authority_call(
                Method::PUT,
                &authority,
                &format!("/v1/citizens/{citizen}"),
                &json!({"birth_date": "1980-01-01", "region": REGION, "allergies": [],
                        "insurance_id": format!("I-ns{i}"), "doses": []}),
            )
            .await;
        expect_200("PUT no-show citizen", &reply)?;
    }
    let clinics = NO_SHOW_CLINICS_MAX.min(g.spec.clinics).min(g.size).max(1);
    let capacity = g.size.div_ceil(clinics).max(1);
    let lead = chrono::Duration::from_std(NO_SHOW_LEAD).unwrap_or(chrono::Duration::zero());
    let length =
        chrono::Duration::from_std(NO_SHOW_SLOT_LENGTH).unwrap_or(chrono::Duration::seconds(1));
    let start = chrono::DateTime::from_timestamp((chrono::Utc::now() + lead).timestamp() + 1, 0)
        .ok_or("the clock is out of range")?;
    let end = start + length;
    for clinic in 0..clinics {
        let clinic_id = g.spec.clinic_id(clinic);
        let reply = g
            .api
            .authority_call(
                Method::PUT,
                &authority,
                &format!("/v1/clinics/{clinic_id}/slots/{NO_SHOW_SLOT}"),
                &json!({"start": start.to_rfc3339(), "end": end.to_rfc3339(),
                        "capacity": capacity, "vaccines": [g.spec.vaccine()],
                        "priority_reserve": 0}),
            )
            .await;
        expect_200("PUT no-show slot", &reply)?;
    }
    let mut rng = Rng::for_worker(g.seed, CLINIC_STREAM + 1);
    let mut members = Vec::new();
    for (i, citizen) in citizens.into_iter().enumerate() {
        let administer = rng.below(100) < u64::from(g.administer_pct);
        members.push(book_member(g, citizen, i % clinics, administer));
    }
    let mut group = NoShowGroup {
        left_to_fall_due: 0,
        administered: 0,
        slots_end: end,
    };
    for (member_stats, outcome) in futures_join_all(members).await {
        stats.merge(&member_stats);
        match outcome {
            Member::LeftToFallDue => group.left_to_fall_due += 1,
            Member::Administered => group.administered += 1,
            Member::NotBooked => {}
        }
    }
    Ok(group)
}

enum Member {
    LeftToFallDue,
    Administered,
    NotBooked,
}

/// Books, confirms and (maybe) administers one member of the group.
async fn book_member(
    g: &GroupSpec<'_>,
    citizen: String,
    clinic: usize,
    administer: bool,
) -> (Stats, Member) {
    let mut stats = Stats::new();
    let bearer = g.tokens.citizen(&citizen);
    let body = json!({"clinic_id": g.spec.clinic_id(clinic), "slot_id": NO_SHOW_SLOT,
                      "vaccine": g.spec.vaccine(), "citizen_id": citizen});
    let started = Instant::now();
    let key = format!("{}-nsk-{citizen}", g.spec.prefix);
    let created = g.api.create(&bearer, &key, &body).await;
    stats.record(Op::Hold, started.elapsed(), created.status, &created.code);
    g.live.count(created.status);
    if created.status != 201 || !g.ledger.record(AckKind::Create, &created.body) {
        return (stats, Member::NotBooked);
    }
    let id = created.body["appointment_id"].as_str().unwrap_or_default();
    let started = Instant::now();
    let confirmed = g.api.transition(&bearer, id, "confirm").await;
    stats.record(
        Op::Confirm,
        started.elapsed(),
        confirmed.status,
        &confirmed.code,
    );
    g.live.count(confirmed.status);
    if confirmed.status != 200 || !g.ledger.record(AckKind::Confirm, &confirmed.body) {
        return (stats, Member::NotBooked);
    }
    g.ledger.record_no_show_expected(id);
    if administer {
        let qr_token = confirmed.body["qr_token"].as_str().unwrap_or_default();
        let staff = &g.staff[clinic];
        if booking::administer(g.api, g.ledger, g.live, &mut stats, staff, id, qr_token).await {
            return (stats, Member::Administered);
        }
    }
    (stats, Member::LeftToFallDue)
}

/// Awaits every future, concurrently on this task (the group is small and bounded).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn expect_200(what: &str, reply: &Reply) -> Result<(), String> {
    if reply.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "no-show group set-up: {what} answered {} {}: {}",
            reply.status, reply.code, reply.body
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(clinics: usize, slots: usize) -> CampaignSpec {
        CampaignSpec {
            prefix: "p".into(),
            clinics,
            slots_per_clinic: slots,
            capacity: 10,
            doses: 10,
            citizens: 1,
        }
    }

    #[test]
    fn a_share_of_the_slots_rounded_up_distinct_and_in_range() {
        assert!(slots_to_cancel(&spec(4, 3), 0, 1).is_empty());
        assert_eq!(
            slots_to_cancel(&spec(4, 3), 5, 1).len(),
            1,
            "12 slots, 5%: one"
        );
        for seed in 0..20 {
            let chosen = slots_to_cancel(&spec(10, 10), 10, seed);
            assert_eq!(chosen.len(), 10);
            let distinct: std::collections::BTreeSet<_> = chosen.iter().collect();
            assert_eq!(distinct.len(), 10, "{chosen:?}");
            assert!(chosen.iter().all(|&(c, s)| c < 10 && s < 10));
            // Evenly spaced: one per clinic.
            let clinics: std::collections::BTreeSet<_> = chosen.iter().map(|(c, _)| c).collect();
            assert_eq!(clinics.len(), 10, "{chosen:?}");
        }
        let all = slots_to_cancel(&spec(3, 2), 100, 9);
        assert_eq!(all.len(), 6);
        assert_eq!(
            all.iter().collect::<std::collections::BTreeSet<_>>().len(),
            6
        );
    }

    #[test]
    fn a_slot_left_unanswered_goes_back_to_the_front() {
        let queue = SlotQueue::new(vec![(0, 0), (0, 1)]);
        let first = queue.pop().expect("a slot");
        queue.put_back(first);
        assert_eq!(queue.pop(), Some((0, 0)));
        assert_eq!(queue.len(), 1);
    }
}
