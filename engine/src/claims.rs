//! The citizen side of booking: one claim per citizen, kept in the citizen's shard, which
//! enforces "at most one PENDING or CONFIRMED appointment per citizen, anywhere"
//! (docs/ARCHITECTURE.md, "A booking across two shards").
//!
//! # The design
//!
//! A citizen's shard keeps, per citizen, the record an authority stored, the index of the
//! citizen's appointments (so a listing asks that shard, then only the shards holding them),
//! the `rebook_priority` a clinic cancellation earned, and at most one [`Claim`]. A claim
//! names the booking attempt that owns the citizen: its attempt number (unique in the
//! citizen's shard), the clinic's shard, the appointment once it exists (`seq`), the hold's
//! deadline, the deadline after which no hold may be made for it (`not_after_ms`), and its
//! origin (the caller, Idempotency-Key and body that started it).
//!
//! The clinic's shard is the authority on an appointment's status; the claim follows it:
//!
//! 1. **Create** (`Node::book`): one message to the citizen's shard begins the
//!    Idempotency-Key and takes a **tentative** claim; one message to the clinic's shard
//!    holds seat and dose and runs the rules on the citizen's record (an appointment records
//!    its claim's attempt); then, after the external check, one message to the citizen's
//!    shard binds the claim to the appointment and stores the idempotency record. Each is
//!    applied at once and its records queued to the one log writer in that order, and the
//!    answer waits for all of them. Any failure compensates in reverse before the answer
//!    (reject the hold, drop the claim).
//! 2. **Every later change** of the appointment (confirm, cancel, expiry, clinic
//!    cancellation, a reschedule's move) is decided by the clinic's shard alone. Once its
//!    records are durable, the shard sends a [`Settle`] notice for each change that ends the
//!    appointment (or spends a priority) through the node to the citizen's shard, which ends
//!    the claim (a plain confirm leaves the claim as it is: it stays bound). Notices name
//!    the attempt, so a late or repeated one is a no-op.
//! 3. **A claim found in the way** of a new booking is verified before the answer is
//!    `ALREADY_BOOKED`: if its appointment has ended (its notice not yet applied) or its
//!    attempt made no hold before `not_after_ms`, the new booking replaces it in one step.
//!    So a cancel followed at once by a new booking succeeds, whatever the notice's timing.
//! 4. **A retry after a crash**: the key's record may be lost while the claim survived. A
//!    claim with the same origin is then the retried booking's own: its appointment (found
//!    by `seq`, or by attempt among the clinic's holds) is answered again, never a second.
//!
//! # Tentative claims
//!
//! A create's claim is held in memory only until it is bound, like an Idempotency-Key in
//! flight: taking it journals nothing, binding it journals the whole claim, bound (one
//! `ClaimTaken` record, in the same append as the key's answer), and a create that fails
//! drops it without a record ([`crate::event::Event::is_journaled`]). Most creates on launch
//! morning fail (`SOLD_OUT`, `OUT_OF_STOCK`); each of them so costs one record (the key's
//! answer) instead of three, and a successful one two records fewer. A reschedule's claim is
//! journaled when taken: it carries the moved appointment's claim (`previous`).
//!
//! # Crash convergence
//!
//! Records reach the log in the order the steps queue them (one writer, one queue), so a
//! crash keeps a prefix: a claim is never released before the end of its appointment is
//! durable, and a move releases the old appointment only after the new one is durable. A
//! create's hold can be durable without its claim (the crash came before the bind); its
//! client was never answered. After recovery, `Node::reconcile_claims` walks every claim
//! once and settles it against its clinic's shard: bound to what is active, ended when its
//! appointment has ended or never existed, and a reschedule cut in the middle is rolled back
//! (the new appointment rejected, the old claim restored) unless the old appointment was
//! already released, in which case it is completed. Then it rejects every live appointment
//! that no claim names (the holds of lost tentative claims: seat and dose return, and the
//! client's retry books afresh). Then no claim is without a live appointment and no live
//! appointment without its claim. A lost tentative claim's attempt number may be handed out
//! again after a restart; its rejected appointment was made before the restart, and a
//! claim's appointment is looked for only among those made since the claim was taken.

use std::sync::Arc;

use chrono::NaiveDate;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::clock::UnixMs;
use crate::hash::stable_hash64;
use crate::idempotency::Fingerprint;
use crate::ids::AppointmentId;
use crate::model::{CitizenRecord, DoseRecord};

/// What started a claim: the caller's Idempotency-Key and the request's fingerprint, folded
/// into 16 bytes. [`NO_ORIGIN`] when the booking had no key.
pub type Origin = [u8; 16];
pub const NO_ORIGIN: Origin = [0; 16];

/// The origin of a booking by `caller` with `key` and the request's `fingerprint`.
pub fn origin_of(caller: &str, key: &str, fingerprint: &Fingerprint) -> Origin {
    let mut bytes = Vec::with_capacity(caller.len() + key.len() + 1);
    bytes.extend_from_slice(caller.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    let mut origin = [0u8; 16];
    origin[..8].copy_from_slice(&stable_hash64(&bytes).to_le_bytes());
    origin[8..].copy_from_slice(&fingerprint[..8]);
    origin
}

/// Most time a booking's steps may take between taking the claim and making the hold: a
/// hold asked for later is refused, so after `not_after_ms` a claim with no hold is known to
/// have none and may be replaced.
pub const SAGA_BUDGET_MS: i64 = 30_000;

/// The one booking that owns a citizen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub attempt: u64,
    pub clinic_shard: u32,
    pub origin: Origin,
    /// The appointment, once bound.
    pub seq: Option<u64>,
    /// The deadline of the hold it was taken or bound for (the clinic's shard decides
    /// expiry; a confirm does not come back to clear it).
    pub expires_at_ms: Option<UnixMs>,
    /// No hold is made for this attempt after this instant.
    pub not_after_ms: UnixMs,
    /// Booked with the citizen's `rebook_priority`.
    pub priority: bool,
    /// A reschedule in progress: the claim of the appointment being moved, put back if the
    /// move fails.
    pub previous: Option<Box<Claim>>,
    /// Taken by a create and not bound yet: held in memory only, never journaled (see
    /// "Tentative claims" above). Binding journals the whole claim; a failed create drops it
    /// without a record.
    pub tentative: bool,
}

impl Claim {
    /// Whether `outcome` changes this claim (the citizen's claim, of the settle's attempt).
    ///
    /// Binding to the appointment the claim is bound to already is no change, whatever the
    /// deadline: the claim's `expires_at_ms` is a record of the hold it was bound for, read by
    /// nothing, and a confirm does not come back to clear it. Counting it made the first
    /// reconciliation after a launch rewrite every confirmed booking's claim (831,225 events
    /// and 3.9 s of a restart, docs/PERFORMANCE.md).
    pub fn changed_by(&self, outcome: &SettleOutcome) -> bool {
        match outcome {
            SettleOutcome::Bound { seq, .. } => self.seq != Some(*seq) || self.previous.is_some(),
            SettleOutcome::Confirmed => self.priority,
            SettleOutcome::Ended { .. } | SettleOutcome::Lapsed { .. } => true,
            SettleOutcome::Restore => self.previous.is_some(),
            SettleOutcome::Administered { .. } => true,
        }
    }

    /// The appointment this claim is bound to.
    pub fn appointment(&self) -> Option<AppointmentId> {
        self.seq.map(|seq| AppointmentId {
            shard: self.clinic_shard,
            seq,
        })
    }

    /// When the claim was taken (its appointment, if any, was made after this).
    pub fn taken_at_ms(&self) -> UnixMs {
        self.not_after_ms - SAGA_BUDGET_MS
    }

    /// The claim without the one it replaces (what a caller is shown).
    pub fn summary(&self) -> Claim {
        Claim {
            previous: None,
            ..self.clone()
        }
    }
}

/// A claim the saga found stale (its appointment ended, or it never made one), to be
/// replaced: by attempt, and whether its appointment was cancelled by the clinic (which earns
/// `rebook_priority`, even when the clinic's notice has not arrived yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stale {
    pub attempt: u64,
    pub clinic_cancelled: bool,
    /// Its appointment was ADMINISTERED with this dose (its notice may not have arrived
    /// yet): the dose joins the history before the new booking's rules read it.
    pub administered: Option<DoseRecord>,
}

/// A citizen as the citizen's shard keeps it: the record in a compact form (a country's
/// millions of citizens live in memory: docs/PERFORMANCE.md), the claim, the index of the
/// citizen's appointments, the priority. [`CitizenEntry::record`] gives the record back.
///
/// The region is an index into the shard's [`Regions`] (regions are few); allergies and
/// doses, which most citizens have none of, are behind one optional box; the appointment
/// index is a boxed slice (an empty one allocates nothing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CitizenEntry {
    #[serde(deserialize_with = "crate::date_decode::naive_date")]
    birth_date: NaiveDate,
    region: u32,
    /// Earned by a clinic cancellation; spent when a booking made with it is confirmed.
    pub rebook_priority: bool,
    insurance_id: Box<str>,
    /// Allergies and doses, when either is non-empty.
    history: Option<Box<History>>,
    pub claim: Option<Box<Claim>>,
    /// Every appointment bound to one of the citizen's claims, oldest first.
    appointments: Box<[AppointmentId]>,
}

/// The parts of a record most citizens leave empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct History {
    allergies: Vec<String>,
    doses: Vec<DoseRecord>,
}

impl CitizenEntry {
    /// A citizen with `record`, no claim, no appointments.
    pub fn new(record: &CitizenRecord, regions: &mut Regions) -> CitizenEntry {
        let mut entry = CitizenEntry {
            birth_date: record.birth_date,
            region: 0,
            rebook_priority: false,
            insurance_id: Box::default(),
            history: None,
            claim: None,
            appointments: Box::default(),
        };
        entry.set_record(record, regions);
        entry
    }

    /// Replaces the record (claim, appointments and priority stay).
    pub fn set_record(&mut self, record: &CitizenRecord, regions: &mut Regions) {
        self.birth_date = record.birth_date;
        self.region = regions.intern(&record.region);
        self.insurance_id = record.insurance_id.as_str().into();
        self.history = (!record.allergies.is_empty() || !record.doses.is_empty()).then(|| {
            Box::new(History {
                allergies: record.allergies.clone(),
                doses: record.doses.clone(),
            })
        });
    }

    /// The record, as it was put.
    pub fn record(&self, regions: &Regions) -> CitizenRecord {
        let (allergies, doses) = match self.history.as_deref() {
            Some(h) => (h.allergies.clone(), h.doses.clone()),
            None => (Vec::new(), Vec::new()),
        };
        CitizenRecord {
            birth_date: self.birth_date,
            region: regions.name(self.region).to_string(),
            allergies,
            insurance_id: self.insurance_id.to_string(),
            doses,
        }
    }

    /// Whether the record is `record` (without rebuilding it).
    pub fn has_record(&self, record: &CitizenRecord, regions: &Regions) -> bool {
        let (allergies, doses): (&[String], &[DoseRecord]) = match self.history.as_deref() {
            Some(h) => (&h.allergies, &h.doses),
            None => (&[], &[]),
        };
        self.birth_date == record.birth_date
            && regions.name(self.region) == record.region
            && *self.insurance_id == *record.insurance_id
            && allergies == record.allergies.as_slice()
            && doses == record.doses.as_slice()
    }

    /// Adds `dose` to the history, unless a dose of that vaccine on that date is there
    /// already (a repeated notice). Answers whether it was added.
    pub fn add_dose(&mut self, dose: &DoseRecord) -> bool {
        if self.has_dose(dose) {
            return false;
        }
        let history = self.history.get_or_insert_with(|| {
            Box::new(History {
                allergies: Vec::new(),
                doses: Vec::new(),
            })
        });
        history.doses.push(dose.clone());
        true
    }

    /// Whether the history holds a dose of that vaccine on that date.
    pub fn has_dose(&self, dose: &DoseRecord) -> bool {
        self.history
            .as_deref()
            .is_some_and(|h| h.doses.contains(dose))
    }

    /// Every appointment bound to one of the citizen's claims, oldest first.
    pub fn appointments(&self) -> &[AppointmentId] {
        &self.appointments
    }

    /// Adds `id` to the appointments, unless it is there already.
    pub fn index_appointment(&mut self, id: AppointmentId) {
        if self.appointments.contains(&id) {
            return;
        }
        let mut ids = Vec::with_capacity(self.appointments.len() + 1);
        ids.extend_from_slice(&self.appointments);
        ids.push(id);
        self.appointments = ids.into_boxed_slice();
    }
}

/// The regions of a shard's citizens, each kept once; a citizen keeps its region's index.
/// Only ever grows (a region no citizen has any more keeps its index). Serialized as the list
/// of names, in index order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "Vec<Box<str>>", into = "Vec<Box<str>>")]
pub struct Regions {
    names: Vec<Box<str>>,
    index: FxHashMap<Box<str>, u32>,
}

impl Regions {
    /// The index of `name`, added if new.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = u32::try_from(self.names.len()).expect("fewer than 2^32 regions in a shard");
        self.names.push(name.into());
        self.index.insert(name.into(), i);
        i
    }

    /// The name of region `i` (an index [`Regions::intern`] gave).
    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
}

impl From<Vec<Box<str>>> for Regions {
    fn from(names: Vec<Box<str>>) -> Regions {
        let index = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i as u32))
            .collect();
        Regions { names, index }
    }
}

impl From<Regions> for Vec<Box<str>> {
    fn from(regions: Regions) -> Vec<Box<str>> {
        regions.names
    }
}

/// What became of a claim's appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettleOutcome {
    /// The hold exists: bind the claim to it (and, for a move, drop the old claim).
    Bound {
        seq: u64,
        expires_at_ms: Option<UnixMs>,
    },
    /// The appointment, booked with the citizen's `rebook_priority`, was confirmed: the
    /// priority is spent. (A confirm sends no other notice: the claim stays as it is.)
    Confirmed,
    /// The appointment ended (or was never made): the citizen is free;
    /// `clinic_cancelled` earns `rebook_priority`.
    Ended { clinic_cancelled: bool },
    /// A clinic's notice that the appointment ended: like `Ended`, except that a
    /// reschedule's new appointment ending before the move completed gives the citizen back
    /// the claim of the old one (the notice cannot know whether the move completed; the saga
    /// and the reconciliation, which do, send `Ended` or `Restore`).
    Lapsed { clinic_cancelled: bool },
    /// A move failed: the claim of the old appointment comes back.
    Restore,
    /// The appointment was ADMINISTERED: the citizen is free, and the dose (`vaccine`, on
    /// the slot's local date) joins the citizen's history, where the series and interval
    /// rules see it. Unlike the others it is applied even when the claim has moved on (a
    /// new booking may have replaced the claim first): the dose is a fact about the
    /// citizen, not about the claim. A dose already in the history is not added twice.
    Administered { vaccine: String, date: NaiveDate },
}

/// A notice to a citizen's shard about one claim, by attempt (a stale one is a no-op).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settle {
    pub citizen_id: Arc<str>,
    pub attempt: u64,
    pub outcome: SettleOutcome,
}

/// A claim taken for a booking attempt: what the saga goes on with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TakenClaim {
    pub attempt: u64,
    /// The citizen's record, for the rules the clinic's shard runs with the hold.
    pub record: Arc<CitizenRecord>,
    pub rebook_priority: bool,
    pub not_after_ms: UnixMs,
}

/// The citizen's shard's answer to `TakeClaim`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClaimOutcome {
    /// The citizen is claimed for this attempt.
    Taken(TakenClaim),
    /// Another attempt holds the citizen; the saga verifies it before answering
    /// `ALREADY_BOOKED`. `same_origin`: it was started by this very request (a retry).
    Held { claim: Claim, same_origin: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_tell_callers_keys_and_bodies_apart() {
        let a = origin_of("alice", "k1", &[1; 32]);
        assert_eq!(a, origin_of("alice", "k1", &[1; 32]));
        assert_ne!(a, origin_of("alice", "k2", &[1; 32]));
        assert_ne!(a, origin_of("bob", "k1", &[1; 32]));
        assert_ne!(a, origin_of("alice", "k1", &[2; 32]));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            origin_of("ab", "c", &[0; 32]),
            origin_of("a", "bc", &[0; 32])
        );
        assert_ne!(a, NO_ORIGIN);
    }

    fn record(region: &str, allergies: &[&str], doses: usize) -> CitizenRecord {
        CitizenRecord {
            birth_date: NaiveDate::from_ymd_opt(1980, 2, 29).expect("valid"),
            region: region.to_string(),
            allergies: allergies.iter().map(|a| a.to_string()).collect(),
            insurance_id: "I-1".to_string(),
            doses: (0..doses)
                .map(|d| DoseRecord {
                    vaccine: format!("v{d}"),
                    date: NaiveDate::from_ymd_opt(2026, 1, 1 + d as u32).expect("valid"),
                })
                .collect(),
        }
    }

    #[test]
    fn an_entry_gives_its_record_back_and_shares_regions() {
        let mut regions = Regions::default();
        let plain = record("north", &[], 0);
        let full = record("south", &["peg", "egg"], 2);
        let mut a = CitizenEntry::new(&plain, &mut regions);
        let b = CitizenEntry::new(&full, &mut regions);
        let c = CitizenEntry::new(&record("north", &[], 1), &mut regions);
        assert_eq!(a.record(&regions), plain);
        assert_eq!(b.record(&regions), full);
        assert!(a.has_record(&plain, &regions) && !a.has_record(&full, &regions));
        assert!(b.has_record(&full, &regions));
        assert!(!c.has_record(&plain, &regions));
        assert_eq!(a.region, c.region);
        assert_eq!(regions.names.len(), 2);
        a.set_record(&full, &mut regions);
        assert_eq!(a.record(&regions), full);

        let id = AppointmentId { shard: 3, seq: 7 };
        a.index_appointment(id);
        a.index_appointment(id);
        a.index_appointment(AppointmentId { shard: 1, seq: 9 });
        assert_eq!(a.appointments(), &[id, AppointmentId { shard: 1, seq: 9 }]);

        // A snapshot keeps the region names; the index comes back with them.
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&regions, config).expect("encode");
        let (back, _): (Regions, _) =
            bincode::serde::decode_from_slice(&bytes, config).expect("decode");
        assert_eq!(back.names, regions.names);
        assert_eq!(back.clone().intern("south"), 1);
        assert_eq!(b.record(&back), full);
    }
}
