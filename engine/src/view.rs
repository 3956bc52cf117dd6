//! Read models: what a shard answers. Owned, cheap to clone (shared strings are `Arc<str>`),
//! independent of how the gateway renders them.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::claims::ClaimOutcome;
use crate::clock::UnixMs;
use crate::ids::{AppointmentId, WaitlistId};
use crate::model::{ClinicInfo, DoseRecord, Status, VaccineRules};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentView {
    pub id: AppointmentId,
    pub status: Status,
    pub clinic_id: Arc<str>,
    pub slot_id: Arc<str>,
    pub vaccine: Arc<str>,
    pub citizen_id: Arc<str>,
    pub created_at_ms: UnixMs,
    pub expires_at_ms: Option<UnixMs>,
    pub confirmed_at_ms: Option<UnixMs>,
    pub administered_at_ms: Option<UnixMs>,
    pub batch: Option<String>,
    pub needs_review: bool,
    pub at_risk: bool,
    pub rebook_priority: bool,
    pub rescheduled_from: Option<AppointmentId>,
    pub rescheduled_to: Option<AppointmentId>,
    /// Made by a waitlist offer.
    pub offered_from_waitlist: bool,
    /// When its slot starts (the reschedule notice reads it).
    pub slot_start_ms: UnixMs,
    /// Once ADMINISTERED: the dose as the citizen's history records it (the vaccine, on the
    /// slot's local date). The reconciliation after a restart settles a claim with it.
    pub dose: Option<DoseRecord>,
}

/// What settling a claim needs of its appointment ([`crate::reconcile`]): a fraction of an
/// [`AppointmentView`], so the reconciliation after a restart, which reads one per claim
/// (two million at national scale), builds no views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentOutcome {
    pub id: AppointmentId,
    pub status: Status,
    pub expires_at_ms: Option<UnixMs>,
    pub rebook_priority: bool,
    /// Once ADMINISTERED: the dose, as in [`AppointmentView::dose`].
    pub dose: Option<DoseRecord>,
}

impl From<&AppointmentView> for AppointmentOutcome {
    fn from(a: &AppointmentView) -> AppointmentOutcome {
        AppointmentOutcome {
            id: a.id,
            status: a.status,
            expires_at_ms: a.expires_at_ms,
            rebook_priority: a.rebook_priority,
            dose: a.dose.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotView {
    pub slot_id: Arc<str>,
    pub start_ms: UnixMs,
    pub end_ms: UnixMs,
    /// `start_ms` and `end_ms` on the clinic's wall clock, with its UTC offset at each
    /// instant ([`crate::localtime`]).
    pub start_local: DateTime<FixedOffset>,
    pub end_local: DateTime<FixedOffset>,
    pub capacity: u32,
    pub remaining: u32,
    pub pending: u32,
    pub confirmed: u32,
    pub administered: u32,
    pub no_show: u32,
    pub priority_reserve: u32,
    pub vaccines: Vec<Arc<str>>,
    pub cancelled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockView {
    pub vaccine: Arc<str>,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilityView {
    pub clinic_id: Arc<str>,
    /// The clinic's IANA time zone, which `start_local`/`end_local` are in.
    pub timezone: String,
    pub stock: Vec<StockView>,
    pub slots: Vec<SlotView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicSummary {
    pub clinic_id: Arc<str>,
    pub info: ClinicInfo,
    /// Per vaccine, `on_hand - reserved` (may be negative after a downward adjustment).
    pub available_doses: Vec<(Arc<str>, i64)>,
}

/// What the eligibility rules read about a booking's slot (its clinic's shard builds it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldContext {
    pub slot_start_ms: UnixMs,
    pub clinic_region: String,
    pub clinic_timezone: String,
    pub rules: Arc<VaccineRules>,
}

/// Per-shard figures for the operator endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCounts {
    pub clinics: u64,
    pub slots: u64,
    pub pending: u64,
    pub confirmed: u64,
    pub administered: u64,
    pub timers: u64,
    pub next_expiry_ms: Option<UnixMs>,
}

/// The answer to a command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Output {
    Ack,
    Appointment(AppointmentView),
    Slots(Vec<SlotView>),
    SlotCancelled {
        slot: SlotView,
        affected: Vec<AppointmentId>,
    },
    Stock(StockView),
    Expired(usize),
    Claim(ClaimOutcome),
    /// A citizen joined a waitlist: the entry's id and position (from 1).
    Waitlisted {
        id: WaitlistId,
        position: u32,
    },
}

/// Figures the operator endpoint shows that the state does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeCounts {
    /// When the shard looked (its clock): the figures are as of this instant, not of when
    /// the answer arrived.
    pub as_of_ms: UnixMs,
    pub events_applied: u64,
    pub idempotency_records: usize,
    pub wal_seq: u64,
    pub snapshot_seq: u64,
    pub last_snapshot_at_ms: Option<UnixMs>,
    pub writable: bool,
    pub recovered_dropped: usize,
    /// Holds that expired, and appointments marked no-show, since the shard started (live
    /// changes only: the log's replay does not count them again). For `/metrics`.
    pub expiries: u64,
    pub no_shows: u64,
}
