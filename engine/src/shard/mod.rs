//! The state of one shard and its state machine, one room per concern:
//!
//! - [`decide`](self::decide): pure decisions, state + command -> events and an answer (or a
//!   domain error), one `decide_<command>` per command;
//! - [`apply`](self::apply): the only code that mutates the state, one event at a time; live
//!   traffic ([`ShardState::execute`]) and recovery (replay of the log) share it;
//! - [`query`](self::query): the read models and the answers to queries;
//! - [`invariants`](self::invariants): the invariants, recomputed from the appointments;
//! - [`claims`](self::claims): the citizen side (records, claims, the appointment index),
//!   decided and applied like the rest (see [`crate::claims`] for the design);
//! - [`waitlist`](self::waitlist): the waitlists of sold-out slots (see [`crate::waitlist`]
//!   for the design).
//! - [`no_show`](self::no_show): CONFIRMED appointments that become NO_SHOW by themselves
//!   (a typed deadline, timed and untimed by `apply`).
//!
//! Nothing here knows about actors, HTTP or disks.

mod apply;
mod claims;
mod decide;
mod invariants;
mod no_show;
mod query;
mod waitlist;

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::appointments::AppointmentTable;
use crate::claims::{CitizenEntry, Regions};
use crate::clock::UnixMs;
use crate::command::Command;
use crate::deadlines::DeadlineQueue;
use crate::error::{DomainError, Resource};
use crate::event::Event;
use crate::model::{Appointment, Batch, Clinic, Vaccine, VaccineIdx};
use crate::view::{Output, ShardCounts};
use crate::waitlist::Waitlists;

pub use decide::{Decision, Reply};
pub use no_show::{NO_SHOW_GRACE_MS_DEFAULT, NO_SHOW_GRACE_MS_MAX};

/// Most deadlines one `ExpireDue` acts on. A pass that finds more leaves the rest for the next
/// wake-up (which the timer arms at once), so a burst of expiries never stalls the shard's
/// other callers for long.
pub const EXPIRE_BATCH_MAX: usize = 4096;
/// Most slots one clinic may have (14 days of 15-minute slots is 1,344).
pub const SLOTS_PER_CLINIC_MAX: usize = 100_000;

/// What a shard's decisions read from the node's configuration. Never logged nor
/// snapshotted: a decision writes what it derives from it into its events (a confirm's
/// no-show instant), so replay does not depend on it and a restart may change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardConfig {
    /// `--no-show-grace`: how long after its slot ends a CONFIRMED appointment becomes
    /// NO_SHOW; 0..=[`NO_SHOW_GRACE_MS_MAX`].
    pub no_show_grace_ms: i64,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            no_show_grace_ms: NO_SHOW_GRACE_MS_DEFAULT,
        }
    }
}

/// Snapshotted with bincode: plain fields only.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ShardState {
    shard: u32,
    vaccines: Vec<Vaccine>,
    vaccine_index: FxHashMap<Arc<str>, VaccineIdx>,
    clinics: Vec<Clinic>,
    clinic_index: FxHashMap<Arc<str>, u32>,
    /// The citizens whose shard this is: record, claim, appointment index (see
    /// [`crate::claims`]).
    /// Boxed: the table keeps only key and pointer per slot, so its empty slots (a hash
    /// table is between 44% and 88% full) cost 24 bytes each, not a whole entry.
    #[serde(deserialize_with = "crate::sized_decode::map")]
    citizens: FxHashMap<Box<str>, Box<CitizenEntry>>,
    /// The regions of `citizens`, each kept once.
    regions: Regions,
    appointments: AppointmentTable,
    next_seq: u64,
    /// The next claim attempt number of this shard's citizens.
    next_attempt: u64,
    deadlines: DeadlineQueue,
    counts: ShardCounts,
    /// The waitlists of this shard's slots (see [`crate::waitlist`]).
    waitlists: Waitlists,
    /// The node's configuration, set by the runtime (not part of the snapshot: see
    /// [`ShardConfig`]).
    #[serde(skip)]
    config: ShardConfig,
}

impl ShardState {
    pub fn new(shard: u32) -> Self {
        ShardState {
            shard,
            vaccines: Vec::new(),
            vaccine_index: FxHashMap::default(),
            clinics: Vec::new(),
            clinic_index: FxHashMap::default(),
            citizens: FxHashMap::default(),
            regions: Regions::default(),
            appointments: AppointmentTable::default(),
            next_seq: 1,
            next_attempt: 1,
            deadlines: DeadlineQueue::default(),
            counts: ShardCounts::default(),
            waitlists: Waitlists::default(),
            config: ShardConfig::default(),
        }
    }

    /// A new shard whose decisions use `config`.
    pub fn with_config(shard: u32, config: ShardConfig) -> Self {
        let mut state = ShardState::new(shard);
        state.set_config(config);
        state
    }

    /// Sets the configuration the next decisions use (after recovery: a snapshot does not
    /// carry it).
    pub fn set_config(&mut self, config: ShardConfig) {
        assert!(
            (0..=NO_SHOW_GRACE_MS_MAX).contains(&config.no_show_grace_ms),
            "no-show grace out of range"
        );
        self.config = config;
    }

    pub fn config(&self) -> ShardConfig {
        self.config
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Decides, applies and answers one command. Applied events are appended to `sink` (the
    /// write-ahead log's feed), follow-up decisions (the at-risk flags) after them.
    pub fn execute(
        &mut self,
        command: Command,
        now_ms: UnixMs,
        sink: &mut Vec<Event>,
    ) -> Result<Output, DomainError> {
        let decision = self.decide(&command, now_ms);
        let first_new = sink.len();
        self.apply_all(decision.events, sink);
        let follow_ups = self.decide_at_risk(&sink[first_new..]);
        self.apply_all(follow_ups, sink);
        decision.outcome.map(|reply| self.render(reply))
    }

    fn apply_all(&mut self, events: Vec<Event>, sink: &mut Vec<Event>) {
        for event in events {
            self.apply(&event);
            sink.push(event);
        }
    }

    /// The earliest deadline in the queue (the shard's timer sleeps until it).
    pub fn next_deadline(&self) -> Option<UnixMs> {
        self.deadlines.earliest()
    }

    // ---- lookups shared by decisions and queries -------------------------------------

    fn clinic_of(&self, clinic_id: &str) -> Result<u32, DomainError> {
        self.clinic_index
            .get(clinic_id)
            .copied()
            .ok_or(DomainError::NotFound(Resource::Clinic))
    }

    fn vaccine_of(&self, vaccine: &str) -> Result<VaccineIdx, DomainError> {
        self.vaccine_index
            .get(vaccine)
            .copied()
            .ok_or(DomainError::NotFound(Resource::Vaccine))
    }

    fn clinic_and_vaccine(
        &self,
        clinic_id: &str,
        vaccine: &str,
    ) -> Result<(u32, VaccineIdx), DomainError> {
        Ok((self.clinic_of(clinic_id)?, self.vaccine_of(vaccine)?))
    }

    fn clinic_and_slot(&self, clinic_id: &str, slot_id: &str) -> Result<(u32, u32), DomainError> {
        let clinic = self.clinic_of(clinic_id)?;
        let slot = *self.clinics[clinic as usize]
            .slot_index
            .get(slot_id)
            .ok_or(DomainError::NotFound(Resource::Slot))?;
        Ok((clinic, slot))
    }

    fn batch(&self, clinic: u32, vaccine: VaccineIdx, batch: &str) -> Option<&Batch> {
        self.clinics[clinic as usize]
            .stock
            .get(&vaccine)
            .and_then(|s| s.batches.get(batch))
    }

    fn slot_appointments(&self, clinic: u32, slot: u32) -> impl Iterator<Item = &Appointment> {
        self.clinics[clinic as usize]
            .appointments
            .iter()
            .map(|seq| &self.appointments[seq])
            .filter(move |a| a.slot == slot)
    }
}

#[cfg(test)]
mod tests;
