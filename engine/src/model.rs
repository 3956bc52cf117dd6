//! Domain types: vaccines, clinics, slots, dose stock by batch, citizens, appointments.
//!
//! These are the shard's in-memory records. Strings that many records share (clinic, slot and
//! vaccine ids, citizen ids) are `Arc<str>` so an appointment view is a few reference-count
//! bumps, not allocations.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::clock::UnixMs;
use crate::ids::AppointmentId;

/// Index of a vaccine in a shard's catalogue. Every shard holds the same catalogue, built by
/// the same sequence of `VaccinePut` events, so indices agree (and replay reproduces them).
pub type VaccineIdx = u16;
/// Largest catalogue; a `u16` index with room to spare.
pub const VACCINES_MAX: usize = 1024;
/// Most slots one bulk upload may carry (docs/API.md).
pub const SLOTS_BULK_MAX: usize = 1000;
/// Largest slot capacity (docs/API.md).
pub const SLOT_CAPACITY_MAX: u32 = 100_000;
/// Largest quantity of one stock delivery or adjustment (docs/API.md: 1..=10^7).
pub const STOCK_QUANTITY_MAX: i64 = 10_000_000;

/// Eligibility rules of a vaccine (docs/API.md, `PUT /v1/vaccines/{vaccine}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaccineRules {
    pub min_age: Option<u32>,
    pub max_age: Option<u32>,
    /// Empty: every region.
    pub regions: Vec<String>,
    pub series_doses: u32,
    pub min_interval_days: u32,
    pub contraindications: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vaccine {
    pub name: Arc<str>,
    pub rules: Arc<VaccineRules>,
}

/// What an authority says about a clinic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicInfo {
    pub name: String,
    pub region: String,
    /// IANA time zone name, validated by the caller (`Europe/Berlin`).
    pub timezone: String,
}

/// What an authority says about a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSpec {
    pub start_ms: UnixMs,
    pub end_ms: UnixMs,
    pub capacity: u32,
    pub vaccines: Vec<String>,
    pub priority_reserve: u32,
}

/// A slot and its seat counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slot {
    pub id: Arc<str>,
    pub start_ms: UnixMs,
    pub end_ms: UnixMs,
    pub capacity: u32,
    pub vaccines: Vec<VaccineIdx>,
    pub priority_reserve: u32,
    pub pending: u32,
    pub confirmed: u32,
    pub administered: u32,
    pub no_show: u32,
    /// Seats held or used by appointments with `rebook_priority`; they draw on the reserve
    /// first.
    pub priority_taken: u32,
    pub cancelled: bool,
}

impl Slot {
    /// Seats held or used: every counter that is not `remaining`.
    pub fn taken(&self) -> u32 {
        self.pending + self.confirmed + self.administered + self.no_show
    }
    /// Free seats, the unused priority reserve included; 0 once cancelled.
    pub fn remaining(&self) -> u32 {
        if self.cancelled {
            0
        } else {
            self.capacity - self.taken()
        }
    }
    /// Reserve seats no priority citizen has taken yet.
    pub fn reserve_unused(&self) -> u32 {
        self.priority_reserve.saturating_sub(self.priority_taken)
    }
}

/// One batch of doses at a clinic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub on_hand: i64,
    pub expires_on: NaiveDate,
}

/// Doses of one vaccine at one clinic (docs/API.md, "Counting").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VaccineStock {
    pub batches: BTreeMap<String, Batch>,
    /// Sum of the batches' `on_hand`.
    pub on_hand: i64,
    /// PENDING + CONFIRMED appointments for this clinic and vaccine.
    pub reserved: i64,
}

impl VaccineStock {
    /// May go negative after a downward adjustment; never through a booking.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Clinic {
    pub id: Arc<str>,
    pub info: ClinicInfo,
    #[serde(deserialize_with = "crate::sized_decode::vec")]
    pub slots: Vec<Slot>,
    #[serde(deserialize_with = "crate::sized_decode::map")]
    pub slot_index: FxHashMap<Arc<str>, u32>,
    pub stock: FxHashMap<VaccineIdx, VaccineStock>,
    /// Appointment sequence numbers of this clinic, in creation order (for listings and the
    /// at-risk rule, which marks the newest first).
    #[serde(deserialize_with = "crate::sized_decode::vec")]
    pub appointments: Vec<u64>,
}

/// One dose a citizen already received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoseRecord {
    pub vaccine: String,
    pub date: NaiveDate,
}

/// What an authority says about a citizen (docs/API.md, `PUT /v1/citizens/{citizen_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitizenRecord {
    pub birth_date: NaiveDate,
    pub region: String,
    pub allergies: Vec<String>,
    pub insurance_id: String,
    pub doses: Vec<DoseRecord>,
}

/// Appointment statuses (docs/API.md, "Booking"). Transitions only go forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Confirmed,
    Administered,
    Expired,
    Released,
    Rejected,
    Cancelled,
    NoShow,
    ClinicCancelled,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Pending,
        Status::Confirmed,
        Status::Administered,
        Status::Expired,
        Status::Released,
        Status::Rejected,
        Status::Cancelled,
        Status::NoShow,
        Status::ClinicCancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Confirmed => "CONFIRMED",
            Status::Administered => "ADMINISTERED",
            Status::Expired => "EXPIRED",
            Status::Released => "RELEASED",
            Status::Rejected => "REJECTED",
            Status::Cancelled => "CANCELLED",
            Status::NoShow => "NO_SHOW",
            Status::ClinicCancelled => "CLINIC_CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// PENDING and CONFIRMED hold a seat and reserve a dose.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Pending | Status::Confirmed)
    }

    pub fn is_final(self) -> bool {
        !self.is_active()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Appointment {
    pub seq: u64,
    pub status: Status,
    pub clinic: u32,
    pub slot: u32,
    pub vaccine: VaccineIdx,
    pub citizen: Arc<str>,
    pub created_at_ms: UnixMs,
    /// Set while PENDING.
    pub expires_at_ms: Option<UnixMs>,
    pub confirmed_at_ms: Option<UnixMs>,
    pub administered_at_ms: Option<UnixMs>,
    pub batch: Option<String>,
    pub needs_review: bool,
    pub at_risk: bool,
    pub rebook_priority: bool,
    /// The citizen's claim (its attempt number in the citizen's shard) this appointment was
    /// made under; 0 for a hold made without one (benchmarks of the clinic side alone).
    pub claim: u64,
    /// Rescheduling links (docs/API.md, reschedule).
    pub rescheduled_from: Option<AppointmentId>,
    pub rescheduled_to: Option<AppointmentId>,
    /// Made by a waitlist offer (docs/API.md, "Waitlist"), not by the citizen's own request.
    pub offered_from_waitlist: bool,
    /// Set exactly while CONFIRMED: when the appointment becomes NO_SHOW by itself, timed in
    /// the shard's deadline queue as `Deadline::NoShow` at this instant.
    ///
    /// Where the instant comes from: the decision that confirms (a confirm, or a
    /// reschedule's new CONFIRMED appointment) computes `slot end + --no-show-grace` and
    /// the event carries it (`Event::AppointmentConfirmed::no_show_at_ms`). So replay never
    /// reads the configuration: a log replayed under another grace rebuilds exactly the
    /// instants the live shard timed, and removal (which reads this field) is exact. A grace
    /// changed between restarts therefore applies to appointments confirmed from then on;
    /// those already confirmed keep the grace they were confirmed under.
    ///
    /// When an authority moves the slot's end (`SlotPut`), apply re-times each CONFIRMED
    /// appointment of the slot by the same shift (its grace after the slot's end is kept).
    pub no_show_at_ms: Option<UnixMs>,
}
