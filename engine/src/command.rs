//! What a caller may ask of a shard: a [`Command`] (which may change it) or a [`Query`] (which
//! only reads it), each answered by a value ([`Output`](crate::view::Output) or
//! [`QueryAnswer`]). All are plain serde types, so a call can cross a process: nothing that
//! goes into a shard is a closure.

use std::sync::Arc;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::clock::UnixMs;
use crate::model::{CitizenRecord, ClinicInfo, SlotSpec, Status, VaccineRules};
use crate::view::{AppointmentView, AvailabilityView, ClinicSummary, RuntimeCounts, ShardCounts};

/// A request that may change a shard: one variant per command, each carrying its own payload
/// type, so a shard's decision is one `decide_<command>` per variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    PutVaccine(PutVaccine),
    PutClinic(PutClinic),
    ReceiveStock(ReceiveStock),
    AdjustStock(AdjustStock),
    PutSlots(PutSlots),
    CancelSlot(CancelSlot),
    PutCitizen(PutCitizen),
    Hold(Hold),
    Confirm(Confirm),
    Cancel(Cancel),
    Reject(Reject),
    MarkForReview(MarkForReview),
    /// Act on every deadline of the shard's deadline queue that has passed (at most
    /// `EXPIRE_BATCH_MAX` per command): today, expire the holds.
    ExpireDue,
}

/// Creates or updates a vaccine and its eligibility rules (every shard keeps the catalogue).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutVaccine {
    pub name: String,
    pub rules: VaccineRules,
}

/// Creates or updates a clinic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutClinic {
    pub clinic_id: String,
    pub info: ClinicInfo,
}

/// Doses into a batch (created on its first delivery).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveStock {
    pub clinic_id: String,
    pub vaccine: String,
    pub batch: String,
    pub quantity: i64,
    pub expires_on: NaiveDate,
}

/// A correction of a batch (breakage, cold-chain loss, recount).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdjustStock {
    pub clinic_id: String,
    pub vaccine: String,
    pub batch: String,
    pub delta: i64,
    pub reason: String,
}

/// One or many slots, all or nothing (a single `PUT` is a batch of one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutSlots {
    pub clinic_id: String,
    pub slots: Vec<(String, SlotSpec)>,
}

/// The clinic cancels a slot and every live appointment in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelSlot {
    pub clinic_id: String,
    pub slot_id: String,
    pub reason: String,
}

/// Creates or updates a citizen's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutCitizen {
    pub citizen_id: String,
    pub record: CitizenRecord,
}

/// Take a seat and a dose for `hold_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    pub clinic_id: String,
    pub slot_id: String,
    pub vaccine: String,
    pub citizen_id: String,
    pub hold_ms: i64,
    pub rebook_priority: bool,
}

/// `citizen`: when set, the appointment must be this citizen's (else `NotYours`), so the
/// ownership check and the transition are one step on the shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confirm {
    pub seq: u64,
    pub citizen: Option<String>,
}

/// RELEASED from PENDING, CANCELLED from CONFIRMED; `citizen` as for [`Confirm`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cancel {
    pub seq: u64,
    pub citizen: Option<String>,
}

/// Saga compensation: the booking failed its checks while held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reject {
    pub seq: u64,
    pub reasons: Vec<String>,
}

/// The booking was made while the external check was unavailable, under the `provisional`
/// outage policy: flag it `needs_review`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarkForReview {
    pub seq: u64,
}

/// A read of one shard. Answered between two writes, so it sees every earlier write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Query {
    Appointment {
        seq: u64,
    },
    /// This shard's appointments of one citizen, oldest first.
    CitizenAppointments {
        citizen_id: String,
    },
    Citizen {
        citizen_id: String,
    },
    /// A clinic's appointments, oldest first, optionally of one slot and one status.
    ClinicAppointments {
        clinic_id: String,
        slot_id: Option<String>,
        status: Option<Status>,
        limit: usize,
    },
    Availability {
        clinic_id: String,
        vaccine: Option<String>,
        from_ms: Option<UnixMs>,
        to_ms: Option<UnixMs>,
    },
    /// This shard's clinics matching the filters.
    Clinics {
        region: Option<String>,
        vaccine: Option<String>,
    },
    /// Whether the clinic already stocks this batch (lets loaders skip a delivery twice).
    HasBatch {
        clinic_id: String,
        vaccine: String,
        batch: String,
    },
    /// The shard's counters and its runtime figures (operators).
    Status,
    /// Recomputes every counter from the appointments (O(state); tests and checks).
    CheckInvariants,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum QueryAnswer {
    Appointment(Option<AppointmentView>),
    Appointments(Vec<AppointmentView>),
    Citizen(Option<Arc<CitizenRecord>>),
    Availability(AvailabilityView),
    Clinics(Vec<ClinicSummary>),
    HasBatch(bool),
    Status {
        counts: ShardCounts,
        runtime: RuntimeCounts,
    },
    /// `Err`: the first broken invariant.
    Invariants(Result<(), String>),
}
