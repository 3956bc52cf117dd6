//! What a caller may ask of a shard: a [`Command`] (which may change it) or a [`Query`] (which
//! only reads it), each answered by a value ([`Output`](crate::view::Output) or
//! [`QueryAnswer`]). All are plain serde types, so a call can cross a process: nothing that
//! goes into a shard is a closure.

use std::sync::Arc;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, Origin, Settle, Stale};
use crate::clock::UnixMs;
use crate::error::DomainError;
use crate::ids::AppointmentId;
use crate::model::{CitizenRecord, ClinicInfo, SlotSpec, Status, VaccineRules};
use crate::view::{
    AppointmentOutcome, AppointmentView, AvailabilityView, ClinicSummary, RuntimeCounts,
    ShardCounts,
};
use crate::waitlist::{OfferCandidate, SlotRef, WaitlistView};

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
    Move(Move),
    TakeClaim(TakeClaim),
    SettleClaims(SettleClaims),
    /// Act on every deadline of the shard's deadline queue that has passed (at most
    /// `EXPIRE_BATCH_MAX` per command): expire the holds, mark the no-shows.
    ExpireDue,
    Administer(Administer),
    JoinWaitlist(JoinWaitlist),
    LeaveWaitlist(LeaveWaitlist),
    RestoreWaitlist(RestoreWaitlist),
}

/// Puts an offered entry back where it was (the offer task, when the offer's hold was undone
/// because the external check was unavailable).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreWaitlist {
    pub clinic_id: String,
    pub slot_id: String,
    pub entry: crate::waitlist::WaitEntry,
    pub index: u32,
}

/// A citizen joins a sold-out slot's waitlist (the clinic's shard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinWaitlist {
    pub clinic_id: String,
    pub slot_id: String,
    pub vaccine: String,
    pub citizen_id: String,
    /// The citizen's record (from the citizen's shard), for the rules; `None`: unknown
    /// citizen, refused `NOT_ELIGIBLE`.
    pub citizen: Option<Arc<CitizenRecord>>,
    /// `--waitlist-max`: most entries per slot.
    pub per_slot_max: usize,
}

/// An entry leaves its waitlist: the citizen (or an authority) takes it off, or the offer
/// task skips it. `citizen`: when set, the entry must be this citizen's (else `NotYours`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaveWaitlist {
    pub seq: u64,
    pub citizen: Option<String>,
    pub why: crate::waitlist::WaitlistExit,
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

/// Take a seat and a dose for `hold_ms`, and check the rules on `citizen` (the record the
/// citizen's shard answered with the claim) in the same step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    pub clinic_id: String,
    pub slot_id: String,
    pub vaccine: String,
    pub citizen_id: String,
    pub hold_ms: i64,
    pub rebook_priority: bool,
    /// The citizen's record; `None` skips the rules (benchmarks of the clinic side alone).
    pub citizen: Option<Arc<CitizenRecord>>,
    /// The claim's attempt (0: none).
    pub claim: u64,
    /// Refused after this instant (the claim's `not_after_ms`).
    pub not_after_ms: Option<UnixMs>,
    /// Made CONFIRMED at once (a reschedule of a CONFIRMED appointment).
    pub confirmed: bool,
    pub rescheduled_from: Option<AppointmentId>,
    /// A waitlist offer for this entry (its number in the clinic's shard): the hold is made
    /// only while the entry waits, and takes it off its list in the same step.
    pub waitlist: Option<u64>,
}

impl Hold {
    /// A plain hold: no claim, no rules, not a reschedule.
    pub fn new(
        clinic_id: &str,
        slot_id: &str,
        vaccine: &str,
        citizen_id: &str,
        hold_ms: i64,
    ) -> Hold {
        Hold {
            clinic_id: clinic_id.to_string(),
            slot_id: slot_id.to_string(),
            vaccine: vaccine.to_string(),
            citizen_id: citizen_id.to_string(),
            hold_ms,
            rebook_priority: false,
            citizen: None,
            claim: 0,
            not_after_ms: None,
            confirmed: false,
            rescheduled_from: None,
            waitlist: None,
        }
    }
}

/// A reschedule's last step on the old appointment: RELEASED (from PENDING) or CANCELLED
/// (from CONFIRMED), linked to the new one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Move {
    pub seq: u64,
    pub to: AppointmentId,
}

/// Claims the citizen for a booking attempt (the citizen's shard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TakeClaim {
    pub citizen_id: String,
    pub clinic_shard: u32,
    pub origin: Origin,
    /// The hold's deadline.
    pub expires_at_ms: UnixMs,
    /// Replace this claim (verified stale by the saga).
    pub replace: Option<Stale>,
    /// A reschedule: the appointment being moved, whose claim this one replaces for now.
    pub moving: Option<AppointmentId>,
    /// A waitlist offer: its claim is journaled when taken (see `crate::waitlist`,
    /// "Crashes"), so a crash after the hold finds the claim and binds it.
    pub offer: bool,
}

/// Notices about claims (the citizen's shard); each is a no-op unless its attempt is the
/// citizen's claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettleClaims {
    pub settles: Vec<Settle>,
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

/// Staff give a CONFIRMED appointment's dose from `batch`. The QR token was verified by the
/// caller (the gateway holds the key); the shard decides everything else in one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Administer {
    pub seq: u64,
    /// The staff member's clinic: the appointment must be of it (else `NotYours`).
    pub clinic_id: String,
    pub batch: String,
}

/// Saga compensation: the booking failed its checks while held (or a reschedule could not
/// release the old appointment): the seat and the dose return.
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
    /// The ids of a citizen's appointments, oldest first (the citizen's shard).
    CitizenAppointments {
        citizen_id: String,
    },
    /// Appointments by sequence number (unknown ones are left out).
    Appointments {
        seqs: Vec<u64>,
    },
    /// What a claim's settlement needs of appointments by sequence number (unknown ones are
    /// left out): the reconciliation after recovery, which reads one per claim.
    AppointmentOutcomes {
        seqs: Vec<u64>,
    },
    /// The appointment made under a claim's attempt, if any, whatever its status: the
    /// appointments created since `since_ms` (when the claim was taken) are read, newest
    /// first.
    FindByClaim {
        citizen_id: String,
        attempt: u64,
        since_ms: UnixMs,
    },
    /// The checks of a booking that come before `ALREADY_BOOKED` (not found, cancelled,
    /// started, not offered).
    Bookable {
        clinic_id: String,
        slot_id: String,
        vaccine: String,
        now_ms: UnixMs,
    },
    /// Every claim of the shard's citizens (the reconciliation after recovery).
    Claims,
    /// Every PENDING and CONFIRMED appointment of the shard (O(appointments): checks).
    ActiveAppointments,
    /// The id and citizen of every PENDING and CONFIRMED appointment made under a claim (the
    /// reconciliation after a restart: O(appointments), no views built).
    ActiveClaimed,
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
    /// A citizen's waitlist entries in this shard.
    CitizenWaitlist {
        citizen_id: String,
    },
    /// Who a slot's waitlist should offer a seat to now, if anyone.
    WaitlistOffer {
        clinic_id: String,
        slot_id: String,
    },
    /// Every slot of this shard with both a free seat and waiting citizens (after recovery).
    WaitlistSlots,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum QueryAnswer {
    Appointment(Option<AppointmentView>),
    AppointmentIds(Vec<AppointmentId>),
    Bookable(Result<(), DomainError>),
    Claims(Vec<(Arc<str>, Claim)>),
    Appointments(Vec<AppointmentView>),
    AppointmentOutcomes(Vec<AppointmentOutcome>),
    ActiveClaimed(Vec<(AppointmentId, Arc<str>)>),
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
    Waitlist(Vec<WaitlistView>),
    WaitlistOffer(Option<OfferCandidate>),
    WaitlistSlots(Vec<SlotRef>),
}
