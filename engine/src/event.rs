//! Commands (what a caller asks a shard), events (what happened, applied in one place) and
//! domain errors (why a command was refused).
//!
//! Events name records by shard-local indices and sequence numbers: a shard's state is a pure
//! function of its event sequence, so indices are reproduced exactly on replay.

use std::sync::Arc;

use chrono::NaiveDate;

use crate::clock::UnixMs;
use crate::model::{
    Appointment, CitizenRecord, ClinicInfo, SlotSpec, Status, VaccineIdx, VaccineRules,
};

/// A request that may change a shard.
#[derive(Debug, Clone)]
pub enum Command {
    PutVaccine {
        name: String,
        rules: VaccineRules,
    },
    PutClinic {
        clinic_id: String,
        info: ClinicInfo,
    },
    ReceiveStock {
        clinic_id: String,
        vaccine: String,
        batch: String,
        quantity: i64,
        expires_on: NaiveDate,
    },
    AdjustStock {
        clinic_id: String,
        vaccine: String,
        batch: String,
        delta: i64,
        reason: String,
    },
    /// One or many slots, all or nothing (a single `PUT` is a batch of one).
    PutSlots {
        clinic_id: String,
        slots: Vec<(String, SlotSpec)>,
    },
    CancelSlot {
        clinic_id: String,
        slot_id: String,
        reason: String,
    },
    PutCitizen {
        citizen_id: String,
        record: CitizenRecord,
    },
    /// Take a seat and a dose for `hold_ms`.
    Hold {
        clinic_id: String,
        slot_id: String,
        vaccine: String,
        citizen_id: String,
        hold_ms: i64,
        rebook_priority: bool,
    },
    /// `citizen`: when set, the appointment must be this citizen's (else `NotYours`), so the
    /// ownership check and the transition are one step on the shard.
    Confirm {
        seq: u64,
        citizen: Option<String>,
    },
    Cancel {
        seq: u64,
        citizen: Option<String>,
    },
    /// Saga compensation: the booking failed its checks while held.
    Reject {
        seq: u64,
        reasons: Vec<String>,
    },
    /// Expire every hold whose deadline has passed.
    ExpireDue,
}

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
}

/// Why a command was refused. Each maps to one API error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainError {
    NotFound(&'static str),
    SlotCancelled,
    SlotStarted,
    VaccineNotOffered,
    AlreadyBooked,
    SoldOut,
    OutOfStock,
    NotEligible {
        reasons: Vec<String>,
    },
    HoldExpired,
    InvalidTransition {
        status: Status,
    },
    CapacityInUse {
        taken: u32,
    },
    InsufficientStock {
        on_hand: i64,
    },
    BatchMismatch {
        expires_on: NaiveDate,
    },
    /// A named bound of the shard's tables was reached (for example `VACCINES_MAX`).
    LimitReached(&'static str),
    /// The appointment belongs to another citizen.
    NotYours,
}

impl DomainError {
    /// The API error code (API.md).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::NotFound(_) => "NOT_FOUND",
            DomainError::SlotCancelled => "SLOT_CANCELLED",
            DomainError::SlotStarted => "SLOT_STARTED",
            DomainError::VaccineNotOffered => "VACCINE_NOT_OFFERED",
            DomainError::AlreadyBooked => "ALREADY_BOOKED",
            DomainError::SoldOut => "SOLD_OUT",
            DomainError::OutOfStock => "OUT_OF_STOCK",
            DomainError::NotEligible { .. } => "NOT_ELIGIBLE",
            DomainError::HoldExpired => "HOLD_EXPIRED",
            DomainError::InvalidTransition { .. } => "INVALID_TRANSITION",
            DomainError::CapacityInUse { .. } => "CAPACITY_IN_USE",
            DomainError::InsufficientStock { .. } => "INSUFFICIENT_STOCK",
            DomainError::BatchMismatch { .. } => "BATCH_MISMATCH",
            DomainError::LimitReached(_) => "LIMIT_REACHED",
            DomainError::NotYours => "FORBIDDEN",
        }
    }
}

impl std::fmt::Display for DomainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainError::NotFound(what) => write!(f, "{what} not found"),
            DomainError::SlotCancelled => f.write_str("the slot was cancelled by the clinic"),
            DomainError::SlotStarted => f.write_str("the slot has already started"),
            DomainError::VaccineNotOffered => f.write_str("the slot does not offer this vaccine"),
            DomainError::AlreadyBooked => {
                f.write_str("the citizen already has a pending or confirmed appointment")
            }
            DomainError::SoldOut => f.write_str("no seat is left in this slot"),
            DomainError::OutOfStock => f.write_str("no dose of this vaccine is left at the clinic"),
            DomainError::NotEligible { reasons } => {
                write!(f, "the citizen is not eligible: {}", reasons.join(", "))
            }
            DomainError::HoldExpired => f.write_str("the hold expired before it was confirmed"),
            DomainError::InvalidTransition { status } => {
                write!(f, "not allowed from status {}", status.as_str())
            }
            DomainError::CapacityInUse { taken } => {
                write!(
                    f,
                    "{taken} seats are already taken; capacity cannot go below that"
                )
            }
            DomainError::InsufficientStock { on_hand } => {
                write!(
                    f,
                    "the batch has {on_hand} doses on hand; it cannot go negative"
                )
            }
            DomainError::BatchMismatch { expires_on } => {
                write!(f, "this batch is already stocked with expiry {expires_on}")
            }
            DomainError::LimitReached(what) => write!(f, "limit reached: {what}"),
            DomainError::NotYours => f.write_str("this appointment belongs to someone else"),
        }
    }
}

impl std::error::Error for DomainError {}
