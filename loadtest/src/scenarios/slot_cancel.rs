//! Clinic slot cancellations in the middle of a booking run (`--cancel-slots N`, `launch`
//! and each round of `crash`): a clinic calls off slots while citizens book them.
//!
//! The slots are taken from the most popular clinics first (Zipf rank = clinic index), so
//! they have PENDING and CONFIRMED appointments to turn CLINIC_CANCELLED; one in two is
//! cancelled with the clinic's staff token, the others with the authority's. Each
//! acknowledged cancellation goes into the ledger with the appointments its answer listed,
//! and the checker proves it held (the slot is cancelled, its CLINIC_CANCELLED appointments
//! are exactly those listed, the counters still add up), after every restart too.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::campaign::CampaignSpec;
use crate::ledger::SlotCancel;
use crate::report::SlotCancelFigures;

use super::booking::{Booker, CONTROL_TICK};

/// A launch cancels once this share (%) of its sellable seats is taken (or
/// [`CANCEL_AT_DURATION_FRACTION`] of `--duration` has passed), so there is something to
/// cancel and bookings are still running.
pub const CANCEL_AT_SOLD_PCT: i64 = 25;
/// ... or once `--duration` / this has passed, whichever comes first.
pub const CANCEL_AT_DURATION_FRACTION: u32 = 4;

/// The `k`-th slot to cancel in round `round` of `count` per round: the hottest clinics
/// first, a different slot each round (wrapping once every slot was chosen; a repeated
/// cancellation answers the same list, so it is checked the same way).
pub fn pick(spec: &CampaignSpec, count: usize, round: usize, k: usize) -> (usize, usize) {
    let n = (round * count + k) % (spec.clinics * spec.slots_per_clinic);
    (n % spec.clinics, n / spec.clinics)
}

/// Waits (bounded by the run's deadline and stop flag) until a launch has sold
/// [`CANCEL_AT_SOLD_PCT`] of its seats or [`CANCEL_AT_DURATION_FRACTION`] of its duration
/// passed.
pub async fn wait_for_launch_moment(booker: &Booker, sellable: u64, duration: Duration) {
    let started = Instant::now();
    let threshold = sellable as i64 * (100 - CANCEL_AT_SOLD_PCT) / 100;
    loop {
        let remaining = booker.live.remaining.load(Ordering::Relaxed);
        let due = (remaining >= 0 && remaining <= threshold)
            || started.elapsed() >= duration / CANCEL_AT_DURATION_FRACTION
            || booker.stop.load(Ordering::Relaxed)
            || Instant::now() >= booker.deadline;
        if due {
            return;
        }
        tokio::time::sleep(CONTROL_TICK).await;
    }
}

/// Cancels `count` slots (see [`pick`]) through the API, records each acknowledged one in
/// the ledger, and closes it on the board. Unanswered or refused cancellations (the server
/// was killed) are counted, not recorded.
pub async fn cancel_slots(booker: &Booker, count: usize, round: usize) -> SlotCancelFigures {
    let spec = &booker.spec;
    let mut figures = SlotCancelFigures::default();
    for k in 0..count {
        let (clinic, slot) = pick(spec, count, round, k);
        let clinic_id = spec.clinic_id(clinic);
        let slot_id = CampaignSpec::slot_id(slot);
        let by_staff = k % 2 == 0;
        let bearer = if by_staff {
            booker.tokens.staff(&clinic_id)
        } else {
            booker.tokens.authority()
        };
        figures.requested += 1;
        let reply = booker
            .api
            .authority_call(
                crate::client::Method::POST,
                &bearer,
                &format!("/v1/clinics/{clinic_id}/slots/{slot_id}/cancel"),
                &json!({"reason": "holdfast-load: clinic cancellation"}),
            )
            .await;
        if reply.status != 200 {
            figures.failed += 1;
            continue;
        }
        let affected: Vec<String> = reply.body["affected_appointment_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().map(str::to_string))
            .collect();
        booker.board.close_slot(clinic, slot);
        figures.cancelled += 1;
        figures.by_staff += usize::from(by_staff);
        figures.appointments_clinic_cancelled += affected.len();
        booker.ledger.record_slot_cancel(SlotCancel {
            clinic_id,
            slot_id,
            affected,
            by_staff,
        });
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_hottest_clinics_first_and_other_slots_each_round() {
        let spec = CampaignSpec {
            prefix: "t".into(),
            clinics: 3,
            slots_per_clinic: 2,
            capacity: 1,
            doses: 1,
            citizens: 1,
        };
        let round0: Vec<_> = (0..2).map(|k| pick(&spec, 2, 0, k)).collect();
        assert_eq!(round0, vec![(0, 0), (1, 0)]);
        let round1: Vec<_> = (0..2).map(|k| pick(&spec, 2, 1, k)).collect();
        assert_eq!(round1, vec![(2, 0), (0, 1)]);
        // Every slot once before any repeats.
        let all: std::collections::BTreeSet<_> = (0..6).map(|k| pick(&spec, 6, 0, k)).collect();
        assert_eq!(all.len(), 6);
    }
}
