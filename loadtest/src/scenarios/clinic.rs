//! The clinic side of `launch` and `crash` beyond a citizen's booking: the crash scenario's
//! no-show group, and the clinic figures of the report. Administrations happen inline, right
//! after a confirm ([`super::booking::administer`]); clinic cancellations of slots are
//! `slot_cancel.rs`.
//!
//! - The no-show group ([`set_up_no_show_group`]): `--no-show-group` citizens book and
//!   confirm extra slots (`ns`) that start [`NO_SHOW_LEAD`] after set-up and last
//!   [`NO_SHOW_SLOT_LENGTH`]; some are administered (by `--administer-pct`), the rest are
//!   left alone and must become NO_SHOW once the server's `--no-show-grace` has passed.

use std::time::{Duration, Instant};

use crate::client::Method;
use serde_json::json;

use crate::campaign::{CampaignSpec, REGION};
use crate::client::{Api, Reply, Tokens};
use crate::ledger::{AckKind, Ledger};
use crate::report::{CheckEntry, ClinicFigures};
use crate::stats::{Live, Op, Stats};
use crate::zipf::Rng;

use super::booking;

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

impl ClinicFigures {
    /// The acknowledged counts from `ledger`, the seen ones from `last_check`.
    pub fn new(args: &crate::cli::Args, ledger: &Ledger, last_check: Option<&CheckEntry>) -> Self {
        let cancellations = ledger.slot_cancels();
        let seen = |status: &str| {
            last_check
                .and_then(|c| c.report["appointments_by_status"][status].as_u64())
                .unwrap_or(0)
        };
        ClinicFigures {
            administer_pct: args.administer_pct,
            administered: ledger.count_kind(AckKind::Administer),
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

    #[test]
    fn the_group_settles_after_its_slots_end_the_grace_the_slack_and_a_margin() {
        let end = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
        let group = NoShowGroup {
            left_to_fall_due: 3,
            administered: 1,
            slots_end: end,
        };
        let settled = group.settled_at(Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(
            (settled - end).num_milliseconds(),
            4_000 + NO_SHOW_CHECK_MARGIN.as_millis() as i64
        );
    }
}
