//! Decisions: state + command -> the events that would happen and the answer, or a domain
//! error. Pure: nothing here mutates the state (`apply` does). One `decide_<command>` per
//! command; [`ShardState::decide`] is the table of contents.

use std::sync::Arc;

use super::{ShardState, EXPIRE_BATCH_MAX, SLOTS_PER_CLINIC_MAX};
use crate::claims::ClaimOutcome;
use crate::clock::UnixMs;
use crate::command::{
    AdjustStock, Administer, Cancel, CancelSlot, Command, Confirm, Hold, MarkForReview, Move,
    PutClinic, PutSlots, PutVaccine, ReceiveStock, Reject,
};
use crate::deadlines::Deadline;
use crate::error::{DomainError, Limit, Resource};
use crate::event::Event;
use crate::model::{
    Appointment, SlotSpec, Status, VaccineIdx, SLOTS_BULK_MAX, SLOT_CAPACITY_MAX,
    STOCK_QUANTITY_MAX, VACCINES_MAX,
};

/// What a decision answers, in terms of the state after its events are applied.
#[derive(Debug, Clone)]
pub enum Reply {
    Ack,
    Appointment(u64),
    Slots {
        clinic: u32,
        slot_ids: Vec<Arc<str>>,
    },
    SlotCancelled {
        clinic: u32,
        slot: u32,
    },
    Stock {
        clinic: u32,
        vaccine: VaccineIdx,
    },
    Expired(usize),
    Claim(ClaimOutcome),
    /// A waitlist entry, by its number in this shard.
    Waitlisted(u64),
}

/// The outcome of a decision: events to apply, then the answer. Some refusals still carry
/// events (a confirm that arrives after the deadline expires the hold and answers 410).
#[derive(Debug)]
pub struct Decision {
    pub events: Vec<Event>,
    pub outcome: Result<Reply, DomainError>,
}

impl Decision {
    pub(super) fn ok(events: Vec<Event>, reply: Reply) -> Self {
        Decision {
            events,
            outcome: Ok(reply),
        }
    }

    pub(super) fn err(error: DomainError) -> Self {
        Decision {
            events: Vec::new(),
            outcome: Err(error),
        }
    }

    fn refused_with(events: Vec<Event>, error: DomainError) -> Self {
        Decision {
            events,
            outcome: Err(error),
        }
    }
}

impl From<Result<Decision, DomainError>> for Decision {
    fn from(decided: Result<Decision, DomainError>) -> Self {
        decided.unwrap_or_else(Decision::err)
    }
}

impl ShardState {
    /// The pure decision for `command` at `now_ms`: the table of contents.
    pub fn decide(&self, command: &Command, now_ms: UnixMs) -> Decision {
        match command {
            Command::PutVaccine(c) => self.decide_put_vaccine(c),
            Command::PutClinic(c) => self.decide_put_clinic(c),
            Command::ReceiveStock(c) => self.decide_receive_stock(c).into(),
            Command::AdjustStock(c) => self.decide_adjust_stock(c).into(),
            Command::PutSlots(c) => self.decide_put_slots(c).into(),
            Command::CancelSlot(c) => self.decide_cancel_slot(c).into(),
            Command::PutCitizen(c) => self.decide_put_citizen(c),
            Command::TakeClaim(c) => self.decide_take_claim(c, now_ms),
            Command::SettleClaims(c) => self.decide_settle_claims(c),
            Command::Hold(c) => self.decide_hold(c, now_ms).into(),
            Command::Move(c) => self.decide_move(c).into(),
            Command::Confirm(c) => self.decide_confirm(c, now_ms).into(),
            Command::Cancel(c) => self.decide_cancel(c, now_ms).into(),
            Command::Reject(c) => self.decide_reject(c).into(),
            Command::MarkForReview(c) => self.decide_mark_for_review(c).into(),
            Command::ExpireDue => self.decide_expire_due(now_ms),
            Command::Administer(c) => self.decide_administer(c, now_ms).into(),
            Command::JoinWaitlist(c) => self.decide_join_waitlist(c, now_ms).into(),
            Command::LeaveWaitlist(c) => self.decide_leave_waitlist(c).into(),
            Command::RestoreWaitlist(c) => self.decide_restore_waitlist(c).into(),
        }
    }

    fn decide_put_vaccine(&self, PutVaccine { name, rules }: &PutVaccine) -> Decision {
        match self.vaccine_index.get(name.as_str()) {
            Some(&v) if *self.vaccines[v as usize].rules == *rules => {
                Decision::ok(vec![], Reply::Ack)
            }
            None if self.vaccines.len() >= VACCINES_MAX => {
                Decision::err(DomainError::LimitReached(Limit::VaccinesInCatalogue))
            }
            _ => Decision::ok(
                vec![Event::VaccinePut {
                    name: name.as_str().into(),
                    rules: Arc::new(rules.clone()),
                }],
                Reply::Ack,
            ),
        }
    }

    fn decide_put_clinic(&self, PutClinic { clinic_id, info }: &PutClinic) -> Decision {
        match self.clinic_index.get(clinic_id.as_str()) {
            Some(&c) if self.clinics[c as usize].info == *info => Decision::ok(vec![], Reply::Ack),
            _ => Decision::ok(
                vec![Event::ClinicPut {
                    clinic_id: clinic_id.as_str().into(),
                    info: info.clone(),
                }],
                Reply::Ack,
            ),
        }
    }

    fn decide_receive_stock(&self, c: &ReceiveStock) -> Result<Decision, DomainError> {
        let &ReceiveStock {
            ref clinic_id,
            ref vaccine,
            ref batch,
            quantity,
            expires_on,
        } = c;
        let (clinic, vaccine) = self.clinic_and_vaccine(clinic_id, vaccine)?;
        if !(1..=STOCK_QUANTITY_MAX).contains(&quantity) {
            return Err(DomainError::LimitReached(Limit::StockQuantity));
        }
        if let Some(existing) = self.batch(clinic, vaccine, batch) {
            if existing.expires_on != expires_on {
                return Err(DomainError::BatchMismatch {
                    expires_on: existing.expires_on,
                });
            }
        }
        Ok(Decision::ok(
            vec![Event::StockReceived {
                clinic,
                vaccine,
                batch: batch.to_string(),
                quantity,
                expires_on,
            }],
            Reply::Stock { clinic, vaccine },
        ))
    }

    fn decide_adjust_stock(&self, c: &AdjustStock) -> Result<Decision, DomainError> {
        let &AdjustStock {
            ref clinic_id,
            ref vaccine,
            ref batch,
            delta,
            ..
        } = c;
        let (clinic, vaccine) = self.clinic_and_vaccine(clinic_id, vaccine)?;
        if delta == 0 || delta.abs() > STOCK_QUANTITY_MAX {
            return Err(DomainError::LimitReached(Limit::StockAdjustment));
        }
        let existing = self
            .batch(clinic, vaccine, batch)
            .ok_or(DomainError::NotFound(Resource::Batch))?;
        if existing.on_hand + delta < 0 {
            return Err(DomainError::InsufficientStock {
                on_hand: existing.on_hand,
            });
        }
        Ok(Decision::ok(
            vec![Event::StockAdjusted {
                clinic,
                vaccine,
                batch: batch.to_string(),
                delta,
            }],
            Reply::Stock { clinic, vaccine },
        ))
    }

    fn decide_put_slots(
        &self,
        PutSlots { clinic_id, slots }: &PutSlots,
    ) -> Result<Decision, DomainError> {
        let clinic = self.clinic_of(clinic_id)?;
        if slots.len() > SLOTS_BULK_MAX {
            return Err(DomainError::LimitReached(Limit::SlotsInOneUpload));
        }
        let c = &self.clinics[clinic as usize];
        let new_slots = slots
            .iter()
            .filter(|(id, _)| !c.slot_index.contains_key(id.as_str()))
            .count();
        if c.slots.len() + new_slots > SLOTS_PER_CLINIC_MAX {
            return Err(DomainError::LimitReached(Limit::SlotsPerClinic));
        }
        let events = slots
            .iter()
            .map(|(slot_id, spec)| self.decide_one_slot(clinic, slot_id, spec))
            .collect::<Result<Vec<_>, _>>()?;
        // A new slot's index is known only after apply, so the reply names slots by id.
        let slot_ids = slots.iter().map(|(id, _)| Arc::from(id.as_str())).collect();
        Ok(Decision::ok(events, Reply::Slots { clinic, slot_ids }))
    }

    /// One slot of an upload: its fields, its vaccines, and what an existing slot allows.
    fn decide_one_slot(
        &self,
        clinic: u32,
        slot_id: &str,
        spec: &SlotSpec,
    ) -> Result<Event, DomainError> {
        if spec.capacity == 0
            || spec.capacity > SLOT_CAPACITY_MAX
            || spec.priority_reserve > spec.capacity
            || spec.end_ms <= spec.start_ms
        {
            return Err(DomainError::LimitReached(Limit::SlotFields));
        }
        let mut vaccines = Vec::with_capacity(spec.vaccines.len());
        for name in &spec.vaccines {
            let v = self.vaccine_of(name)?;
            if !vaccines.contains(&v) {
                vaccines.push(v);
            }
        }
        let c = &self.clinics[clinic as usize];
        if let Some(&s) = c.slot_index.get(slot_id) {
            let existing = &c.slots[s as usize];
            if existing.cancelled {
                return Err(DomainError::SlotCancelled);
            }
            if spec.capacity < existing.taken() {
                return Err(DomainError::CapacityInUse {
                    taken: existing.taken(),
                });
            }
        }
        Ok(Event::SlotPut {
            clinic,
            slot_id: slot_id.into(),
            spec: spec.clone(),
            vaccines,
        })
    }

    fn decide_cancel_slot(&self, c: &CancelSlot) -> Result<Decision, DomainError> {
        let CancelSlot {
            clinic_id, slot_id, ..
        } = c;
        let (clinic, slot) = self.clinic_and_slot(clinic_id, slot_id)?;
        let reply = Reply::SlotCancelled { clinic, slot };
        if self.clinics[clinic as usize].slots[slot as usize].cancelled {
            return Ok(Decision::ok(vec![], reply));
        }
        let mut events: Vec<Event> = self
            .slot_appointments(clinic, slot)
            .filter(|a| a.status.is_active())
            .map(|a| Event::AppointmentClinicCancelled { seq: a.seq })
            .collect();
        events.push(Event::SlotCancelled { clinic, slot });
        Ok(Decision::ok(events, reply))
    }

    fn decide_hold(&self, r: &Hold, now_ms: UnixMs) -> Result<Decision, DomainError> {
        let (clinic, slot, vaccine) =
            self.bookable(&r.clinic_id, &r.slot_id, &r.vaccine, now_ms)?;
        // An offer holds only for an entry still waiting, and takes it off in this step.
        let served = r
            .waitlist
            .map(|seq| self.offered_entry(seq, (clinic, slot), &r.citizen_id))
            .transpose()?;
        let c = &self.clinics[clinic as usize];
        let s = &c.slots[slot as usize];
        // A priority rebooking may take the reserve; anyone else leaves it alone.
        let seats_open = if r.rebook_priority {
            s.remaining() > 0
        } else {
            s.remaining() > s.reserve_unused()
        };
        if !seats_open {
            return Err(DomainError::SoldOut);
        }
        if c.stock.get(&vaccine).is_none_or(|s| s.available() <= 0) {
            return Err(DomainError::OutOfStock);
        }
        if let Some(citizen) = &r.citizen {
            let context = self.context_of(clinic, slot, vaccine);
            let reasons = crate::eligibility::check(&r.vaccine, Some(citizen), &context);
            if !reasons.is_empty() {
                return Err(DomainError::NotEligible { reasons });
            }
        }
        if r.not_after_ms.is_some_and(|deadline| now_ms > deadline) {
            return Err(DomainError::ClaimLapsed);
        }
        debug_assert!(r.hold_ms > 0);
        let seq = self.next_seq;
        let appointment = Appointment {
            seq,
            status: Status::Pending,
            clinic,
            slot,
            vaccine,
            citizen: r.citizen_id.as_str().into(),
            created_at_ms: now_ms,
            expires_at_ms: Some(now_ms + r.hold_ms.max(1)),
            confirmed_at_ms: None,
            administered_at_ms: None,
            batch: None,
            needs_review: false,
            at_risk: false,
            rebook_priority: r.rebook_priority,
            claim: r.claim,
            rescheduled_from: r.rescheduled_from,
            rescheduled_to: None,
            offered_from_waitlist: served.is_some(),
            no_show_at_ms: None,
        };
        let mut events = vec![Event::AppointmentReserved(Box::new(appointment))];
        events.extend(served);
        if r.confirmed {
            events.push(Event::AppointmentConfirmed {
                seq,
                at_ms: now_ms,
                no_show_at_ms: self.no_show_at(clinic, slot),
            });
        }
        Ok(Decision::ok(events, Reply::Appointment(seq)))
    }

    /// The old appointment of a reschedule, once the new one exists.
    fn decide_move(&self, &Move { seq, to }: &Move) -> Result<Decision, DomainError> {
        let a = self.owned_appointment(seq, None)?;
        Ok(match a.status {
            Status::Pending | Status::Confirmed => Decision::ok(
                vec![Event::AppointmentMoved { seq, to }],
                Reply::Appointment(seq),
            ),
            _ if a.rescheduled_to == Some(to) => Decision::ok(vec![], Reply::Appointment(seq)),
            status => Decision::err(DomainError::InvalidTransition { status }),
        })
    }

    fn decide_confirm(
        &self,
        &Confirm { seq, ref citizen }: &Confirm,
        now_ms: UnixMs,
    ) -> Result<Decision, DomainError> {
        let a = self.owned_appointment(seq, citizen.as_deref())?;
        Ok(match a.status {
            Status::Pending if hold_has_expired(a, now_ms) => Decision::refused_with(
                vec![Event::AppointmentExpired { seq }],
                DomainError::HoldExpired,
            ),
            Status::Pending => Decision::ok(
                vec![Event::AppointmentConfirmed {
                    seq,
                    at_ms: now_ms,
                    no_show_at_ms: self.no_show_at(a.clinic, a.slot),
                }],
                Reply::Appointment(seq),
            ),
            Status::Confirmed => Decision::ok(vec![], Reply::Appointment(seq)),
            Status::Expired => Decision::err(DomainError::HoldExpired),
            status => Decision::err(DomainError::InvalidTransition { status }),
        })
    }

    fn decide_cancel(
        &self,
        &Cancel { seq, ref citizen }: &Cancel,
        now_ms: UnixMs,
    ) -> Result<Decision, DomainError> {
        let a = self.owned_appointment(seq, citizen.as_deref())?;
        Ok(match a.status {
            Status::Pending if hold_has_expired(a, now_ms) => Decision::refused_with(
                vec![Event::AppointmentExpired { seq }],
                DomainError::InvalidTransition {
                    status: Status::Expired,
                },
            ),
            Status::Pending => Decision::ok(
                vec![Event::AppointmentReleased { seq }],
                Reply::Appointment(seq),
            ),
            Status::Confirmed => Decision::ok(
                vec![Event::AppointmentCancelled { seq }],
                Reply::Appointment(seq),
            ),
            Status::Released | Status::Cancelled => Decision::ok(vec![], Reply::Appointment(seq)),
            status => Decision::err(DomainError::InvalidTransition { status }),
        })
    }

    fn decide_reject(&self, &Reject { seq, .. }: &Reject) -> Result<Decision, DomainError> {
        let a = self.owned_appointment(seq, None)?;
        Ok(match a.status {
            // Compensation of a failed booking (or of a reschedule's new appointment, made
            // CONFIRMED when the old one was): it must return the seat even when the
            // deadline has passed meanwhile, and a repeat is a no-op.
            Status::Pending => Decision::ok(
                vec![Event::AppointmentRejected { seq }],
                Reply::Appointment(seq),
            ),
            Status::Confirmed if a.rescheduled_from.is_some() => Decision::ok(
                vec![Event::AppointmentRejected { seq }],
                Reply::Appointment(seq),
            ),
            Status::Rejected | Status::Expired => Decision::ok(vec![], Reply::Appointment(seq)),
            status => Decision::err(DomainError::InvalidTransition { status }),
        })
    }

    fn decide_mark_for_review(
        &self,
        &MarkForReview { seq }: &MarkForReview,
    ) -> Result<Decision, DomainError> {
        let a = self.owned_appointment(seq, None)?;
        let events = if a.needs_review || !a.status.is_active() {
            vec![]
        } else {
            vec![Event::AppointmentNeedsReview { seq }]
        };
        Ok(Decision::ok(events, Reply::Appointment(seq)))
    }

    /// Staff give the dose of a CONFIRMED appointment of their clinic. Checks, first failure
    /// wins: the clinic (`NotYours`), the status (a repeat answers the appointment as it is;
    /// anything but CONFIRMED is `InvalidTransition`), then the batch
    /// ([`ShardState::check_batch_for`]).
    fn decide_administer(
        &self,
        Administer {
            seq,
            clinic_id,
            batch,
        }: &Administer,
        now_ms: UnixMs,
    ) -> Result<Decision, DomainError> {
        let a = self.owned_appointment(*seq, None)?;
        if *self.clinics[a.clinic as usize].id != **clinic_id {
            return Err(DomainError::NotYours);
        }
        match a.status {
            Status::Administered => return Ok(Decision::ok(vec![], Reply::Appointment(*seq))),
            Status::Confirmed => {}
            status => return Err(DomainError::InvalidTransition { status }),
        }
        self.check_batch_for(a, batch)?;
        Ok(Decision::ok(
            vec![Event::AppointmentAdministered {
                seq: *seq,
                batch: batch.clone(),
                at_ms: now_ms,
            }],
            Reply::Appointment(*seq),
        ))
    }

    /// Whether `batch` may give `a`'s dose: held by the clinic (else `NotFound`), of the
    /// appointment's vaccine (`WrongBatch`), a dose on hand (`InsufficientStock`), and not
    /// expired on the slot's local date (`BatchExpired`; `expires_on` is the last usable
    /// day).
    fn check_batch_for(&self, a: &Appointment, batch: &str) -> Result<(), DomainError> {
        let c = &self.clinics[a.clinic as usize];
        let Some(b) = self.batch(a.clinic, a.vaccine, batch) else {
            // The lowest index, so the answer does not depend on the map's order.
            let other = c
                .stock
                .iter()
                .filter(|(_, stock)| stock.batches.contains_key(batch))
                .map(|(v, _)| *v)
                .min();
            return Err(match other {
                Some(v) => DomainError::WrongBatch {
                    vaccine: self.vaccines[v as usize].name.to_string(),
                },
                None => DomainError::NotFound(Resource::Batch),
            });
        };
        if b.on_hand <= 0 {
            return Err(DomainError::InsufficientStock { on_hand: b.on_hand });
        }
        let slot_date =
            crate::localtime::local_date(c.slots[a.slot as usize].start_ms, &c.info.timezone);
        if slot_date > b.expires_on {
            return Err(DomainError::BatchExpired {
                expires_on: b.expires_on,
            });
        }
        Ok(())
    }

    /// Acts on the deadlines that have passed, earliest first, at most `EXPIRE_BATCH_MAX`
    /// (counted in the reply), then closes the waitlists of slots that started, with what is
    /// left of the same bound. Reads the queue only: applying each event removes its deadline.
    fn decide_expire_due(&self, now_ms: UnixMs) -> Decision {
        let mut events: Vec<Event> = self
            .deadlines
            .due(now_ms, EXPIRE_BATCH_MAX)
            .map(|(_, deadline)| match deadline {
                Deadline::Hold { seq } => Event::AppointmentExpired { seq },
                Deadline::NoShow { seq } => Event::AppointmentNoShow { seq },
            })
            .collect();
        let count = events.len();
        self.closed_waitlists(now_ms, EXPIRE_BATCH_MAX - count, &mut events);
        Decision::ok(events, Reply::Expired(count))
    }

    /// A derived decision after events that change a clinic's doses or reservations: when
    /// more doses are reserved than on hand, the newest active appointments beyond what is on
    /// hand are flagged at risk; the flags clear when stock covers them again.
    pub(super) fn decide_at_risk(&self, applied: &[Event]) -> Vec<Event> {
        let mut touched: Vec<(u32, VaccineIdx)> = Vec::new();
        for event in applied {
            if let Some(pair) = self.stock_touched_by(event) {
                if !touched.contains(&pair) {
                    touched.push(pair);
                }
            }
        }
        touched
            .into_iter()
            .flat_map(|(clinic, vaccine)| self.at_risk_flags(clinic, vaccine))
            .collect()
    }

    /// The (clinic, vaccine) whose doses or reservations `event` changed.
    fn stock_touched_by(&self, event: &Event) -> Option<(u32, VaccineIdx)> {
        match event {
            Event::StockReceived {
                clinic, vaccine, ..
            }
            | Event::StockAdjusted {
                clinic, vaccine, ..
            } => Some((*clinic, *vaccine)),
            Event::AppointmentReleased { seq }
            | Event::AppointmentMoved { seq, .. }
            | Event::AppointmentExpired { seq }
            | Event::AppointmentRejected { seq }
            | Event::AppointmentCancelled { seq }
            | Event::AppointmentClinicCancelled { seq }
            | Event::AppointmentAdministered { seq, .. }
            | Event::AppointmentNoShow { seq } => {
                self.appointments.get(seq).map(|a| (a.clinic, a.vaccine))
            }
            _ => None,
        }
    }

    /// The flag changes that make exactly the newest uncovered appointments at risk.
    fn at_risk_flags(&self, clinic: u32, vaccine: VaccineIdx) -> Vec<Event> {
        let c = &self.clinics[clinic as usize];
        let Some(stock) = c.stock.get(&vaccine) else {
            return Vec::new();
        };
        let mut uncovered = (stock.reserved - stock.on_hand).max(0);
        let mut events = Vec::new();
        for seq in c.appointments.iter().rev() {
            let a = &self.appointments[seq];
            if a.vaccine != vaccine || !a.status.is_active() {
                continue;
            }
            let should = uncovered > 0;
            uncovered -= i64::from(should);
            if a.at_risk != should {
                events.push(Event::AppointmentAtRisk {
                    seq: *seq,
                    at_risk: should,
                });
            }
        }
        events
    }

    /// The appointment `seq`, which must be `citizen`'s when one is named.
    fn owned_appointment(
        &self,
        seq: u64,
        citizen: Option<&str>,
    ) -> Result<&Appointment, DomainError> {
        let a = self
            .appointments
            .get(&seq)
            .ok_or(DomainError::NotFound(Resource::Appointment))?;
        match citizen {
            Some(c) if *a.citizen != *c => Err(DomainError::NotYours),
            _ => Ok(a),
        }
    }
}

fn hold_has_expired(a: &Appointment, now_ms: UnixMs) -> bool {
    a.expires_at_ms.is_some_and(|deadline| now_ms >= deadline)
}
