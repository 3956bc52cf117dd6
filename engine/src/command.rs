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

/// A request that may change a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Act on every deadline of the shard's deadline queue that has passed (at most
    /// `EXPIRE_BATCH_MAX` per command): today, expire the holds.
    ExpireDue,
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
