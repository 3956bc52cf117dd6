//! No-shows: a CONFIRMED appointment whose slot ended more than `--no-show-grace` ago
//! becomes NO_SHOW by itself (docs/API.md, "Clinic (staff)").
//!
//! It is a typed deadline of the shard's queue ([`Deadline::NoShow`]), not a sweep over the
//! appointments: timed when an appointment becomes CONFIRMED (a confirm, or a reschedule's
//! new appointment made CONFIRMED at once), untimed in [`ShardState::leave_confirmed`]
//! whichever way it leaves CONFIRMED, and acted on by the `ExpireDue` command like an
//! expired hold (`decide_expire_due` turns a due `NoShow` into `Event::AppointmentNoShow`).
//!
//! The instant is decided once, when the appointment is confirmed, and logged in the event;
//! the appointment keeps it (`Appointment::no_show_at_ms`, which says why). Moving a slot's
//! end shifts the instants of its CONFIRMED appointments by as much
//! ([`ShardState::shift_no_shows`]). Deadlines that passed while the node was down are due at
//! the first tick after recovery.

use super::ShardState;
use crate::clock::UnixMs;
use crate::deadlines::Deadline;
use crate::model::Status;

/// `--no-show-grace` when not given: 2 h after the slot's end (docs/API.md).
pub const NO_SHOW_GRACE_MS_DEFAULT: i64 = 2 * 3600 * 1000;
/// Longest `--no-show-grace`: a week. A clinic that needs longer does not want automatic
/// no-shows; the bound keeps `slot end + grace` far from overflow and typos (`2000h`) out.
pub const NO_SHOW_GRACE_MS_MAX: i64 = 7 * 24 * 3600 * 1000;

impl ShardState {
    /// When an appointment of `slot` confirmed now becomes NO_SHOW: the slot's end plus this
    /// shard's configured grace (read by decisions only, never by replay).
    pub(super) fn no_show_at(&self, clinic: u32, slot: u32) -> UnixMs {
        let end_ms = self.clinics[clinic as usize].slots[slot as usize].end_ms;
        end_ms.saturating_add(self.config.no_show_grace_ms)
    }

    /// Starts timing the no-show of `seq`, which has just become CONFIRMED.
    pub(super) fn time_no_show(&mut self, seq: u64, no_show_at_ms: UnixMs) {
        let a = self.appointment_mut(seq);
        debug_assert_eq!(a.status, Status::Confirmed);
        let previous = a.no_show_at_ms.replace(no_show_at_ms);
        assert!(previous.is_none(), "appointment {seq} was already timed");
        self.deadlines
            .insert(no_show_at_ms, Deadline::NoShow { seq });
    }

    /// The one step every way out of CONFIRMED takes (a cancel, a clinic cancellation, a
    /// reschedule's move or compensation, NO_SHOW itself, and administration): the no-show
    /// stops being timed, exactly. [`ShardState::end_active`] calls it; a transition out of
    /// CONFIRMED that does not go through `end_active` must call it itself (the invariants
    /// catch one that does not: a timed appointment that is no longer CONFIRMED).
    pub(super) fn leave_confirmed(&mut self, seq: u64) {
        let a = self.appointment_mut(seq);
        assert_eq!(
            a.status,
            Status::Confirmed,
            "appointment {seq} leaves CONFIRMED"
        );
        let at_ms = a
            .no_show_at_ms
            .take()
            .expect("a CONFIRMED appointment has a no-show instant");
        let timed = self.deadlines.remove(at_ms, Deadline::NoShow { seq });
        assert!(timed, "no-show of {seq} was not timed at {at_ms}");
    }

    /// An authority moved the end of `slot` by `shift_ms`: its CONFIRMED appointments become
    /// NO_SHOW as long after the new end as they would have after the old one. Reads the
    /// clinic's appointments (as a slot cancellation does), only when the end moved and the
    /// slot has CONFIRMED appointments.
    pub(super) fn shift_no_shows(&mut self, clinic: u32, slot: u32, shift_ms: i64) {
        let confirmed: Vec<u64> = self
            .slot_appointments(clinic, slot)
            .filter(|a| a.status == Status::Confirmed)
            .map(|a| a.seq)
            .collect();
        for seq in confirmed {
            let a = self.appointment_mut(seq);
            let old_ms = a.no_show_at_ms.expect("CONFIRMED is timed");
            let new_ms = old_ms.saturating_add(shift_ms);
            a.no_show_at_ms = Some(new_ms);
            let timed = self.deadlines.remove(old_ms, Deadline::NoShow { seq });
            assert!(timed, "no-show of {seq} was not timed at {old_ms}");
            self.deadlines.insert(new_ms, Deadline::NoShow { seq });
        }
    }
}
