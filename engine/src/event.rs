//! Events: what happened to a shard, applied in one place (`ShardState::apply`) and written
//! to the log.
//!
//! Events name records by shard-local indices and sequence numbers: a shard's state is a pure
//! function of its event sequence, so indices are reproduced exactly on replay.

use std::sync::Arc;

use chrono::NaiveDate;

use crate::claims::{Claim, SettleOutcome};
use crate::clock::UnixMs;
use crate::ids::AppointmentId;
use crate::model::{Appointment, CitizenRecord, ClinicInfo, SlotSpec, VaccineIdx, VaccineRules};

/// A change to a shard's state. `ShardState::apply` is the only code that mutates state.
/// Logged with bincode: keep it plain (no skipped, flattened or untagged fields).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Event {
    VaccinePut {
        name: Arc<str>,
        rules: Arc<VaccineRules>,
    },
    ClinicPut {
        clinic_id: Arc<str>,
        info: ClinicInfo,
    },
    StockReceived {
        clinic: u32,
        vaccine: VaccineIdx,
        batch: String,
        quantity: i64,
        expires_on: NaiveDate,
    },
    StockAdjusted {
        clinic: u32,
        vaccine: VaccineIdx,
        batch: String,
        delta: i64,
    },
    SlotPut {
        clinic: u32,
        slot_id: Arc<str>,
        spec: SlotSpec,
        vaccines: Vec<VaccineIdx>,
    },
    SlotCancelled {
        clinic: u32,
        slot: u32,
    },
    CitizenPut {
        citizen_id: Arc<str>,
        record: Arc<CitizenRecord>,
    },
    AppointmentReserved(Box<Appointment>),
    AppointmentConfirmed {
        seq: u64,
        at_ms: UnixMs,
        /// When it becomes NO_SHOW unless it leaves CONFIRMED first: decided (slot end +
        /// the shard's no-show grace) and logged, so replay does not depend on the
        /// configuration (see `Appointment::no_show_at_ms`).
        no_show_at_ms: UnixMs,
    },
    AppointmentReleased {
        seq: u64,
    },
    AppointmentExpired {
        seq: u64,
    },
    AppointmentRejected {
        seq: u64,
    },
    AppointmentCancelled {
        seq: u64,
    },
    AppointmentClinicCancelled {
        seq: u64,
    },
    AppointmentAtRisk {
        seq: u64,
        at_risk: bool,
    },
    AppointmentNeedsReview {
        seq: u64,
    },
    /// A reschedule released (from PENDING) or cancelled (from CONFIRMED) the old
    /// appointment, linked to the new one.
    AppointmentMoved {
        seq: u64,
        to: AppointmentId,
    },
    /// The citizen's shard: a booking attempt claims the citizen (replacing any claim).
    ClaimTaken {
        citizen_id: Arc<str>,
        claim: Box<Claim>,
    },
    /// The citizen's shard: what became of a claim's appointment.
    ClaimSettled {
        citizen_id: Arc<str>,
        attempt: u64,
        outcome: SettleOutcome,
        /// It ends a tentative claim: applied, never journaled.
        tentative: bool,
    },
    /// A CONFIRMED appointment's no-show deadline passed (`Deadline::NoShow`): it becomes
    /// NO_SHOW, its seat stays counted (`no_show`), its dose returns.
    AppointmentNoShow {
        seq: u64,
    },
    /// Staff gave the CONFIRMED appointment's dose from `batch` (of the appointment's clinic
    /// and vaccine): ADMINISTERED, the seat counts as administered, the dose leaves the batch
    /// (`on_hand - 1`) and is no longer reserved (`reserved - 1`).
    AppointmentAdministered {
        seq: u64,
        batch: String,
        at_ms: UnixMs,
    },
}

impl Event {
    /// Whether the event goes to the journal. Only a tentative claim's changes do not: a
    /// create's claim lives in memory until it is bound (`crate::claims`, "Tentative
    /// claims"), like an Idempotency-Key in flight.
    pub fn is_journaled(&self) -> bool {
        match self {
            Event::ClaimTaken { claim, .. } => !claim.tentative,
            Event::ClaimSettled { tentative, .. } => !tentative,
            _ => true,
        }
    }
}
