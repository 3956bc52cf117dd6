//! The waitlists of a clinic's slots, decided, applied and read like the rest of the shard
//! (the design is in [`crate::waitlist`]): joining and leaving, the one test of "this change
//! may let a waiting citizen in" ([`ShardState::room_made_by`]), and the reads the offer
//! task and the citizen's listing need.

use super::decide::{Decision, Reply};
use super::ShardState;
use crate::clock::UnixMs;
use crate::command::{JoinWaitlist, LeaveWaitlist, RestoreWaitlist};
use crate::error::{DomainError, Limit, Resource};
use crate::event::Event;
use crate::ids::WaitlistId;
use crate::model::VaccineIdx;
use crate::waitlist::{
    OfferCandidate, SlotAt, SlotRef, WaitEntry, WaitlistExit, WaitlistView,
    WAITLIST_PER_CITIZEN_PER_SHARD_MAX,
};

/// Where a change made room: one slot, or every slot of a clinic (doses arrived).
enum Room {
    Slot(SlotAt),
    Clinic(u32),
}

impl ShardState {
    /// Joins a sold-out slot's waitlist. Checks, first failure wins: not found, slot
    /// cancelled, slot started, vaccine not offered (as on create), then already waiting,
    /// seats available, the list full, the citizen's entries in this shard, the rules.
    pub(super) fn decide_join_waitlist(
        &self,
        c: &JoinWaitlist,
        now_ms: UnixMs,
    ) -> Result<Decision, DomainError> {
        let (clinic, slot, vaccine) =
            self.bookable(&c.clinic_id, &c.slot_id, &c.vaccine, now_ms)?;
        if self.waitlists.is_waiting(&c.citizen_id, (clinic, slot)) {
            return Err(DomainError::AlreadyWaiting);
        }
        if self.has_room_for(clinic, slot, vaccine) {
            return Err(DomainError::SeatsAvailable);
        }
        if self.waitlists.len_of_slot((clinic, slot)) >= c.per_slot_max {
            return Err(DomainError::LimitReached(Limit::WaitlistPerSlot));
        }
        if self.waitlists.of_citizen(&c.citizen_id).len() >= WAITLIST_PER_CITIZEN_PER_SHARD_MAX {
            return Err(DomainError::LimitReached(Limit::WaitlistPerCitizen));
        }
        let reasons = match &c.citizen {
            Some(record) => crate::eligibility::check(
                &c.vaccine,
                Some(record),
                &self.context_of(clinic, slot, vaccine),
            ),
            None => vec!["unknown_citizen".to_string()],
        };
        if !reasons.is_empty() {
            return Err(DomainError::NotEligible { reasons });
        }
        let entry = WaitEntry {
            seq: self.waitlists.next_seq(),
            citizen: c.citizen_id.as_str().into(),
            vaccine,
            joined_at_ms: now_ms,
        };
        let seq = entry.seq;
        Ok(Decision::ok(
            vec![Event::WaitlistJoined {
                clinic,
                slot,
                entry,
            }],
            Reply::Waitlisted(seq),
        ))
    }

    /// The entries of every slot that started by `now_ms`, front first, as they leave
    /// (`WaitlistExit::Closed`), at most `max` (the rest at the next tick): no seat of a
    /// started slot can be offered, so its entries would otherwise stay in the citizen's
    /// listing and count against `WAITLIST_PER_CITIZEN_PER_SHARD_MAX` for ever. Costs a look
    /// at each slot that has a list, at every tick (at least once a second).
    pub(super) fn closed_waitlists(&self, now_ms: UnixMs, max: usize, out: &mut Vec<Event>) {
        let started = self.waitlists.slots().filter(|&(clinic, slot)| {
            self.clinics[clinic as usize].slots[slot as usize].start_ms <= now_ms
        });
        let entries = started.flat_map(|slot| self.waitlists.of_slot(slot));
        out.extend(entries.take(max).map(|entry| Event::WaitlistLeft {
            seq: entry.seq,
            why: WaitlistExit::Closed,
        }));
    }

    /// Takes an entry off its list: the citizen's own (when `citizen` is named), or any.
    pub(super) fn decide_leave_waitlist(
        &self,
        &LeaveWaitlist {
            seq,
            ref citizen,
            why,
        }: &LeaveWaitlist,
    ) -> Result<Decision, DomainError> {
        let (_, _, entry) = self
            .waitlists
            .find(seq)
            .ok_or(DomainError::NotFound(Resource::WaitlistEntry))?;
        if citizen.as_deref().is_some_and(|c| *c != *entry.citizen) {
            return Err(DomainError::NotYours);
        }
        Ok(Decision::ok(
            vec![Event::WaitlistLeft { seq, why }],
            Reply::Ack,
        ))
    }

    /// Puts an offered entry back where it was (its offer was undone for a reason that is
    /// not the citizen's); a no-op when it still waits, or when its slot cannot be offered
    /// any more.
    pub(super) fn decide_restore_waitlist(
        &self,
        c: &RestoreWaitlist,
    ) -> Result<Decision, DomainError> {
        let (clinic, slot) = self.clinic_and_slot(&c.clinic_id, &c.slot_id)?;
        let cancelled = self.clinics[clinic as usize].slots[slot as usize].cancelled;
        if cancelled
            || self.waitlists.find(c.entry.seq).is_some()
            || self.waitlists.is_waiting(&c.entry.citizen, (clinic, slot))
        {
            return Ok(Decision::ok(vec![], Reply::Ack));
        }
        Ok(Decision::ok(
            vec![Event::WaitlistRestored {
                clinic,
                slot,
                entry: c.entry.clone(),
                index: c.index,
            }],
            Reply::Ack,
        ))
    }

    /// A hold for a waitlist offer: entry `seq` must still wait for this slot and be this
    /// citizen's. Its removal goes in the same decision as the hold.
    pub(super) fn offered_entry(
        &self,
        seq: u64,
        slot: SlotAt,
        citizen: &str,
    ) -> Result<Event, DomainError> {
        match self.waitlists.find(seq) {
            Some((at, _, entry)) if at == slot && *entry.citizen == *citizen => {
                Ok(Event::WaitlistLeft {
                    seq,
                    why: WaitlistExit::Served,
                })
            }
            _ => Err(DomainError::NotFound(Resource::WaitlistEntry)),
        }
    }

    /// Whether an ordinary citizen could book `vaccine` in the slot now: a seat outside the
    /// unused priority reserve, and a dose.
    fn has_room_for(&self, clinic: u32, slot: u32, vaccine: VaccineIdx) -> bool {
        let c = &self.clinics[clinic as usize];
        let s = &c.slots[slot as usize];
        s.remaining() > s.reserve_unused()
            && c.stock.get(&vaccine).is_some_and(|st| st.available() > 0)
    }

    // ---- the offer task's reads ---------------------------------------------------------

    /// The one test of "this change may let a waiting citizen in": a seat came back, or
    /// capacity or doses were added. Listed one by one, so a new kind of change must say
    /// whether it makes room.
    fn room_made_by(&self, event: &Event) -> Option<Room> {
        let slot_of = |seq: &u64| self.appointments.get(seq).map(|a| (a.clinic, a.slot));
        let offered = |seq: &u64| {
            self.appointments
                .get(seq)
                .is_some_and(|a| a.offered_from_waitlist)
        };
        match event {
            // An offer's own rollback: the pass that made it goes on (or, when the external
            // check is down, stops until the next change) by itself; a notice would rerun it
            // at once, in a loop against the outage.
            Event::AppointmentRejected { seq } if offered(seq) => None,
            Event::AppointmentReleased { seq }
            | Event::AppointmentExpired { seq }
            | Event::AppointmentRejected { seq }
            | Event::AppointmentCancelled { seq }
            | Event::AppointmentMoved { seq, .. } => slot_of(seq).map(Room::Slot),
            Event::SlotPut {
                clinic, slot_id, ..
            } => self.clinics[*clinic as usize]
                .slot_index
                .get(slot_id)
                .map(|&slot| Room::Slot((*clinic, slot))),
            Event::StockReceived { clinic, .. } => Some(Room::Clinic(*clinic)),
            // A no-show's slot is over, but its dose returns to the clinic's other slots.
            Event::AppointmentNoShow { seq } => self
                .appointments
                .get(seq)
                .map(|a| Room::Clinic(a.clinic)),
            Event::StockAdjusted { clinic, delta, .. } if *delta > 0 => Some(Room::Clinic(*clinic)),
            // A clinic cancellation comes with its slot's cancellation, which drops the list.
            Event::StockAdjusted { .. }
            | Event::AppointmentClinicCancelled { .. }
            | Event::AppointmentReserved(_)
            | Event::AppointmentConfirmed { .. }
            // An administered dose keeps its seat (counted as administered).
            | Event::AppointmentAdministered { .. }
            | Event::AppointmentAtRisk { .. }
            | Event::AppointmentNeedsReview { .. }
            | Event::VaccinePut { .. }
            | Event::ClinicPut { .. }
            | Event::SlotCancelled { .. }
            | Event::CitizenPut { .. }
            | Event::ClaimTaken { .. }
            | Event::ClaimSettled { .. }
            | Event::WaitlistJoined { .. }
            | Event::WaitlistLeft { .. }
            | Event::WaitlistRestored { .. } => None,
        }
    }

    /// The slots an applied `event` may have made room in that have citizens waiting and a
    /// free seat now: what the shard hands the offer task once the change is durable.
    pub fn waitlist_notice_for(&self, event: &Event) -> Vec<SlotRef> {
        if self.waitlists.is_empty() {
            return Vec::new();
        }
        match self.room_made_by(event) {
            None => Vec::new(),
            Some(Room::Slot(slot)) => self.offerable(slot).into_iter().collect(),
            Some(Room::Clinic(clinic)) => self
                .waitlists
                .slots()
                .filter(|(c, _)| *c == clinic)
                .filter_map(|slot| self.offerable(slot))
                .collect(),
        }
    }

    /// `slot` by name, when it has citizens waiting and a free seat.
    fn offerable(&self, (clinic, slot): SlotAt) -> Option<SlotRef> {
        let c = &self.clinics[clinic as usize];
        let s = &c.slots[slot as usize];
        (s.remaining() > 0 && self.waitlists.len_of_slot((clinic, slot)) > 0).then(|| SlotRef {
            clinic_id: c.id.clone(),
            slot_id: s.id.clone(),
        })
    }

    /// Every slot with citizens waiting and a free seat (the sweep after recovery).
    pub(super) fn slots_to_offer(&self) -> Vec<SlotRef> {
        let mut slots: Vec<SlotRef> = self
            .waitlists
            .slots()
            .filter_map(|slot| self.offerable(slot))
            .collect();
        slots.sort();
        slots
    }

    /// The first waiting citizen of the slot whose vaccine has a dose, when the slot has a
    /// free seat (those waiting for a vaccine without doses keep their place).
    pub(super) fn offer_candidate(
        &self,
        clinic_id: &str,
        slot_id: &str,
    ) -> Result<Option<OfferCandidate>, DomainError> {
        let (clinic, slot) = self.clinic_and_slot(clinic_id, slot_id)?;
        let c = &self.clinics[clinic as usize];
        if c.slots[slot as usize].remaining() == 0 {
            return Ok(None);
        }
        let dosed = |v: &VaccineIdx| c.stock.get(v).is_some_and(|st| st.available() > 0);
        Ok(self
            .waitlists
            .of_slot((clinic, slot))
            .enumerate()
            .find(|(_, e)| dosed(&e.vaccine))
            .map(|(i, e)| OfferCandidate {
                id: self.waitlist_id(e.seq),
                citizen_id: e.citizen.clone(),
                vaccine: self.vaccines[e.vaccine as usize].name.clone(),
                entry: e.clone(),
                index: u32::try_from(i).unwrap_or(u32::MAX),
            }))
    }

    /// `citizen_id`'s entries in this shard, with their positions.
    pub(super) fn citizen_waitlist(&self, citizen_id: &str) -> Vec<WaitlistView> {
        self.waitlists
            .of_citizen(citizen_id)
            .iter()
            .filter_map(|&seq| self.waitlist_view(seq))
            .collect()
    }

    pub(super) fn waitlist_view(&self, seq: u64) -> Option<WaitlistView> {
        let ((clinic, slot), position, entry) = self.waitlists.find(seq)?;
        let c = &self.clinics[clinic as usize];
        Some(WaitlistView {
            id: self.waitlist_id(seq),
            clinic_id: c.id.clone(),
            slot_id: c.slots[slot as usize].id.clone(),
            vaccine: self.vaccines[entry.vaccine as usize].name.clone(),
            citizen_id: entry.citizen.clone(),
            position: u32::try_from(position).unwrap_or(u32::MAX),
            joined_at_ms: entry.joined_at_ms,
        })
    }

    pub fn waitlist_id(&self, seq: u64) -> WaitlistId {
        WaitlistId {
            shard: self.shard,
            seq,
        }
    }

    // ---- apply -------------------------------------------------------------------------

    pub(super) fn waitlist_joined(&mut self, clinic: u32, slot: u32, entry: &WaitEntry) {
        let s = &self.clinics[clinic as usize].slots[slot as usize];
        assert!(
            !s.cancelled,
            "joined the waitlist of cancelled slot {}",
            s.id
        );
        self.waitlists.join((clinic, slot), entry.clone());
    }

    pub(super) fn waitlist_restored(
        &mut self,
        clinic: u32,
        slot: u32,
        entry: &WaitEntry,
        index: u32,
    ) {
        let s = &self.clinics[clinic as usize].slots[slot as usize];
        assert!(
            !s.cancelled,
            "restored to the waitlist of cancelled slot {}",
            s.id
        );
        self.waitlists
            .restore((clinic, slot), entry.clone(), index as usize);
    }

    pub(super) fn waitlist_left(&mut self, seq: u64) {
        self.waitlists.leave(seq);
    }
}
