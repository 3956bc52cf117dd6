//! Reads: the read models a shard answers with ([`crate::view`]), the rendering of a
//! decision's reply, and the answers to [`Query`] values.

use std::sync::Arc;

use super::decide::Reply;
use super::ShardState;
use crate::clock::UnixMs;
use crate::command::{Query, QueryAnswer};
use crate::error::DomainError;
use crate::event::Event;
use crate::ids::AppointmentId;
use crate::localtime::local_time;
use crate::model::{Appointment, DoseRecord, Status, VaccineIdx, VaccineStock};
use crate::publish::Change;
use crate::view::{
    AppointmentOutcome, AppointmentView, AvailabilityView, ClinicSummary, HoldContext, Output,
    ShardCounts, SlotView, StockView,
};

impl ShardState {
    /// The id and citizen of every PENDING or CONFIRMED appointment made under a claim.
    fn active_claimed(&self) -> Vec<(AppointmentId, Arc<str>)> {
        self.appointments
            .iter()
            .filter(|a| a.status.is_active() && a.claim != 0)
            .map(|a| {
                let id = AppointmentId {
                    shard: self.shard,
                    seq: a.seq,
                };
                (id, a.citizen.clone())
            })
            .collect()
    }

    /// Answers a query. `Query::Status` needs the runtime's figures too: the actor answers it
    /// (this answers only the state's half, through [`ShardState::counts`]).
    pub fn query(&self, query: &Query) -> Result<QueryAnswer, DomainError> {
        Ok(match query {
            Query::Appointment { seq } => QueryAnswer::Appointment(self.appointment_view(*seq)),
            Query::CitizenAppointments { citizen_id } => {
                QueryAnswer::AppointmentIds(self.citizen_appointment_ids(citizen_id))
            }
            Query::Appointments { seqs } => QueryAnswer::Appointments(
                seqs.iter()
                    .filter_map(|&seq| self.appointment_view(seq))
                    .collect(),
            ),
            Query::AppointmentOutcomes { seqs } => QueryAnswer::AppointmentOutcomes(
                seqs.iter()
                    .filter_map(|&seq| self.appointment_outcome(seq))
                    .collect(),
            ),
            Query::FindByClaim {
                citizen_id,
                attempt,
                since_ms,
            } => QueryAnswer::Appointment(self.find_by_claim(citizen_id, *attempt, *since_ms)),
            Query::Bookable {
                clinic_id,
                slot_id,
                vaccine,
                now_ms,
            } => QueryAnswer::Bookable(
                self.bookable(clinic_id, slot_id, vaccine, *now_ms)
                    .map(|_| ()),
            ),
            Query::Claims => QueryAnswer::Claims(self.claims()),
            Query::ActiveAppointments => QueryAnswer::Appointments(
                self.appointments
                    .iter()
                    .filter(|a| a.status.is_active())
                    .filter_map(|a| self.appointment_view(a.seq))
                    .collect(),
            ),
            Query::ActiveClaimed => QueryAnswer::ActiveClaimed(self.active_claimed()),
            Query::Citizen { citizen_id } => QueryAnswer::Citizen(self.citizen(citizen_id)),
            Query::ClinicAppointments {
                clinic_id,
                slot_id,
                status,
                limit,
            } => QueryAnswer::Appointments(self.clinic_appointments(
                clinic_id,
                slot_id.as_deref(),
                *status,
                *limit,
            )?),
            Query::Availability {
                clinic_id,
                vaccine,
                from_ms,
                to_ms,
            } => QueryAnswer::Availability(self.availability(
                clinic_id,
                vaccine.as_deref(),
                *from_ms,
                *to_ms,
            )?),
            Query::Clinics { region, vaccine } => {
                QueryAnswer::Clinics(self.clinics(region.as_deref(), vaccine.as_deref()))
            }
            Query::HasBatch {
                clinic_id,
                vaccine,
                batch,
            } => QueryAnswer::HasBatch(self.has_batch(clinic_id, vaccine, batch)),
            Query::Status => QueryAnswer::Status {
                counts: self.counts(),
                runtime: Default::default(),
            },
            Query::CheckInvariants => QueryAnswer::Invariants(self.check_invariants()),
            Query::CitizenWaitlist { citizen_id } => {
                QueryAnswer::Waitlist(self.citizen_waitlist(citizen_id))
            }
            Query::WaitlistOffer { clinic_id, slot_id } => {
                QueryAnswer::WaitlistOffer(self.offer_candidate(clinic_id, slot_id)?)
            }
            Query::WaitlistSlots => QueryAnswer::WaitlistSlots(self.slots_to_offer()),
        })
    }

    pub(super) fn render(&self, reply: Reply) -> Output {
        match reply {
            Reply::Ack => Output::Ack,
            Reply::Appointment(seq) => {
                Output::Appointment(self.appointment_view(seq).expect("exists"))
            }

            Reply::Slots { clinic, slot_ids } => {
                let c = &self.clinics[clinic as usize];
                Output::Slots(
                    slot_ids
                        .iter()
                        .map(|id| self.slot_view(clinic, c.slot_index[id]))
                        .collect(),
                )
            }
            Reply::SlotCancelled { clinic, slot } => Output::SlotCancelled {
                slot: self.slot_view(clinic, slot),
                affected: self
                    .slot_appointments(clinic, slot)
                    .filter(|a| a.status == Status::ClinicCancelled)
                    .map(|a| self.id_of(a.seq))
                    .collect(),
            },
            Reply::Stock { clinic, vaccine } => Output::Stock(self.stock_view(clinic, vaccine)),
            Reply::Expired(count) => Output::Expired(count),
            Reply::Claim(outcome) => Output::Claim(outcome),
            Reply::Waitlisted(seq) => {
                let entry = self.waitlist_view(seq).expect("joined");
                Output::Waitlisted {
                    id: entry.id,
                    position: entry.position,
                }
            }
        }
    }

    /// The appointment made under a claim's attempt. Appointments are numbered in the
    /// order they are made, so only those made since the claim was taken are read, newest
    /// first (a PENDING hold, or a reschedule's appointment made CONFIRMED at once).
    fn find_by_claim(
        &self,
        citizen_id: &str,
        attempt: u64,
        since_ms: UnixMs,
    ) -> Option<AppointmentView> {
        self.appointments
            .iter()
            .rev()
            .take_while(|a| a.created_at_ms >= since_ms)
            .find(|a| a.claim == attempt && *a.citizen == *citizen_id)
            .and_then(|a| self.appointment_view(a.seq))
    }

    /// The checks of a booking that come before `ALREADY_BOOKED`, in the contract's order;
    /// answers the clinic, the slot and the vaccine.
    pub(super) fn bookable(
        &self,
        clinic_id: &str,
        slot_id: &str,
        vaccine: &str,
        now_ms: UnixMs,
    ) -> Result<(u32, u32, VaccineIdx), DomainError> {
        let (clinic, slot) = self.clinic_and_slot(clinic_id, slot_id)?;
        let vaccine = self.vaccine_of(vaccine)?;
        let s = &self.clinics[clinic as usize].slots[slot as usize];
        if s.cancelled {
            return Err(DomainError::SlotCancelled);
        }
        if now_ms >= s.start_ms {
            return Err(DomainError::SlotStarted);
        }
        if !s.vaccines.contains(&vaccine) {
            return Err(DomainError::VaccineNotOffered);
        }
        Ok((clinic, slot, vaccine))
    }

    /// What the rules of a booking read about its slot.
    pub(super) fn context_of(&self, clinic: u32, slot: u32, vaccine: VaccineIdx) -> HoldContext {
        let c = &self.clinics[clinic as usize];
        HoldContext {
            slot_start_ms: c.slots[slot as usize].start_ms,
            clinic_region: c.info.region.clone(),
            clinic_timezone: c.info.timezone.clone(),
            rules: self.vaccines[vaccine as usize].rules.clone(),
        }
    }

    pub fn id_of(&self, seq: u64) -> AppointmentId {
        AppointmentId {
            shard: self.shard,
            seq,
        }
    }

    pub fn appointment_view(&self, seq: u64) -> Option<AppointmentView> {
        let a = self.appointments.get(&seq)?;
        let c = &self.clinics[a.clinic as usize];
        Some(AppointmentView {
            id: self.id_of(seq),
            status: a.status,
            clinic_id: c.id.clone(),
            slot_id: c.slots[a.slot as usize].id.clone(),
            vaccine: self.vaccines[a.vaccine as usize].name.clone(),
            citizen_id: a.citizen.clone(),
            created_at_ms: a.created_at_ms,
            expires_at_ms: a.expires_at_ms,
            confirmed_at_ms: a.confirmed_at_ms,
            administered_at_ms: a.administered_at_ms,
            batch: a.batch.clone(),
            needs_review: a.needs_review,
            at_risk: a.at_risk,
            rebook_priority: a.rebook_priority,
            rescheduled_from: a.rescheduled_from,
            rescheduled_to: a.rescheduled_to,
            offered_from_waitlist: a.offered_from_waitlist,
            slot_start_ms: c.slots[a.slot as usize].start_ms,
            dose: self.dose_of(a),
        })
    }

    /// What settling a claim needs of appointment `seq`: no strings copied but a dose's.
    pub fn appointment_outcome(&self, seq: u64) -> Option<AppointmentOutcome> {
        let a = self.appointments.get(&seq)?;
        Some(AppointmentOutcome {
            id: self.id_of(seq),
            status: a.status,
            expires_at_ms: a.expires_at_ms,
            rebook_priority: a.rebook_priority,
            dose: self.dose_of(a),
        })
    }

    /// The dose an ADMINISTERED appointment gave, as the citizen's history records it: the
    /// vaccine on the slot's local date (the date the rules count from).
    pub(super) fn dose_of(&self, a: &Appointment) -> Option<DoseRecord> {
        if a.status != Status::Administered {
            return None;
        }
        let c = &self.clinics[a.clinic as usize];
        Some(DoseRecord {
            vaccine: self.vaccines[a.vaccine as usize].name.to_string(),
            date: crate::localtime::local_date(c.slots[a.slot as usize].start_ms, &c.info.timezone),
        })
    }

    pub fn get_appointment(&self, seq: u64) -> Option<AppointmentView> {
        self.appointment_view(seq)
    }

    pub fn slot_view(&self, clinic: u32, slot: u32) -> SlotView {
        let c = &self.clinics[clinic as usize];
        let s = &c.slots[slot as usize];
        SlotView {
            slot_id: s.id.clone(),
            start_ms: s.start_ms,
            end_ms: s.end_ms,
            start_local: local_time(s.start_ms, &c.info.timezone),
            end_local: local_time(s.end_ms, &c.info.timezone),
            capacity: s.capacity,
            remaining: s.remaining(),
            pending: s.pending,
            confirmed: s.confirmed,
            administered: s.administered,
            no_show: s.no_show,
            priority_reserve: s.priority_reserve,
            vaccines: s
                .vaccines
                .iter()
                .map(|&v| self.vaccines[v as usize].name.clone())
                .collect(),
            cancelled: s.cancelled,
        }
    }

    fn stock_view(&self, clinic: u32, vaccine: VaccineIdx) -> StockView {
        let empty = VaccineStock::default();
        let stock = self.clinics[clinic as usize]
            .stock
            .get(&vaccine)
            .unwrap_or(&empty);
        StockView {
            vaccine: self.vaccines[vaccine as usize].name.clone(),
            on_hand: stock.on_hand,
            reserved: stock.reserved,
            available: stock.available(),
        }
    }

    /// Appointments of a clinic, optionally of one slot and one status, oldest first.
    pub fn clinic_appointments(
        &self,
        clinic_id: &str,
        slot_id: Option<&str>,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<AppointmentView>, DomainError> {
        let clinic = self.clinic_of(clinic_id)?;
        let slot = match slot_id {
            Some(id) => Some(self.clinic_and_slot(clinic_id, id)?.1),
            None => None,
        };
        Ok(self.clinics[clinic as usize]
            .appointments
            .iter()
            .map(|seq| &self.appointments[seq])
            .filter(|a| slot.is_none_or(|s| a.slot == s) && status.is_none_or(|st| a.status == st))
            .take(limit)
            .filter_map(|a| self.appointment_view(a.seq))
            .collect())
    }

    pub fn availability(
        &self,
        clinic_id: &str,
        vaccine: Option<&str>,
        from_ms: Option<UnixMs>,
        to_ms: Option<UnixMs>,
    ) -> Result<AvailabilityView, DomainError> {
        let clinic = self.clinic_of(clinic_id)?;
        let vaccine = vaccine.map(|name| self.vaccine_of(name)).transpose()?;
        let c = &self.clinics[clinic as usize];
        let mut stock: Vec<StockView> = c
            .stock
            .keys()
            .filter(|v| vaccine.is_none_or(|want| **v == want))
            .map(|&v| self.stock_view(clinic, v))
            .collect();
        stock.sort_by(|a, b| a.vaccine.cmp(&b.vaccine));
        let mut slots: Vec<SlotView> = c
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                vaccine.is_none_or(|v| s.vaccines.contains(&v))
                    && from_ms.is_none_or(|from| s.start_ms >= from)
                    && to_ms.is_none_or(|to| s.start_ms < to)
            })
            .map(|(i, _)| self.slot_view(clinic, i as u32))
            .collect();
        slots.sort_by(|a, b| (a.start_ms, &a.slot_id).cmp(&(b.start_ms, &b.slot_id)));
        Ok(AvailabilityView {
            clinic_id: c.id.clone(),
            timezone: c.info.timezone.clone(),
            stock,
            slots,
        })
    }

    /// This shard's clinics matching the filters (vaccine: offered by a slot or stocked).
    pub fn clinics(&self, region: Option<&str>, vaccine: Option<&str>) -> Vec<ClinicSummary> {
        let vaccine = match vaccine {
            Some(name) => match self.vaccine_index.get(name) {
                Some(&v) => Some(v),
                None => return Vec::new(),
            },
            None => None,
        };
        self.clinics
            .iter()
            .filter(|c| region.is_none_or(|r| c.info.region == r))
            .filter(|c| {
                vaccine.is_none_or(|v| {
                    c.stock.contains_key(&v) || c.slots.iter().any(|s| s.vaccines.contains(&v))
                })
            })
            .map(|c| {
                let mut available_doses: Vec<(Arc<str>, i64)> = c
                    .stock
                    .iter()
                    .filter(|(v, _)| vaccine.is_none_or(|want| **v == want))
                    .map(|(&v, s)| (self.vaccines[v as usize].name.clone(), s.available()))
                    .collect();
                available_doses.sort();
                ClinicSummary {
                    clinic_id: c.id.clone(),
                    info: c.info.clone(),
                    available_doses,
                }
            })
            .collect()
    }

    pub fn counts(&self) -> ShardCounts {
        let mut counts = self.counts;
        counts.clinics = self.clinics.len() as u64;
        counts.slots = self.clinics.iter().map(|c| c.slots.len() as u64).sum();
        counts.administered = self
            .clinics
            .iter()
            .flat_map(|c| c.slots.iter())
            .map(|s| u64::from(s.administered))
            .sum();
        counts.timers = self.deadlines.len() as u64;
        counts.next_expiry_ms = self.deadlines.earliest();
        counts
    }

    /// True when the clinic already stocks `batch` of `vaccine`.
    pub fn has_batch(&self, clinic_id: &str, vaccine: &str, batch: &str) -> bool {
        self.clinic_and_vaccine(clinic_id, vaccine)
            .ok()
            .and_then(|(c, v)| self.batch(c, v, batch))
            .is_some()
    }

    /// The change `event` made, by name, for the publisher. Read after the event is applied:
    /// every name it needs exists by then and never changes.
    pub fn describe(&self, event: &Event) -> Change {
        let clinic_id = |clinic: u32| self.clinics[clinic as usize].id.clone();
        match event {
            Event::VaccinePut { name, .. } => Change::VaccinePut {
                vaccine: name.clone(),
            },
            Event::ClinicPut { clinic_id, .. } => Change::ClinicPut {
                clinic_id: clinic_id.clone(),
            },
            Event::StockReceived {
                clinic,
                vaccine,
                batch,
                quantity: delta,
                ..
            }
            | Event::StockAdjusted {
                clinic,
                vaccine,
                batch,
                delta,
            } => Change::StockChanged {
                clinic_id: clinic_id(*clinic),
                vaccine: self.vaccines[*vaccine as usize].name.clone(),
                batch: batch.clone(),
                delta: *delta,
            },
            Event::SlotPut {
                clinic, slot_id, ..
            } => Change::SlotPut {
                clinic_id: clinic_id(*clinic),
                slot_id: slot_id.clone(),
            },
            Event::SlotCancelled { clinic, slot } => Change::SlotCancelled {
                clinic_id: clinic_id(*clinic),
                slot_id: self.clinics[*clinic as usize].slots[*slot as usize]
                    .id
                    .clone(),
            },
            Event::CitizenPut { citizen_id, .. } => Change::CitizenPut {
                citizen_id: citizen_id.clone(),
            },
            Event::AppointmentReserved(a) => self.status_change(a.seq, Status::Pending),
            Event::AppointmentConfirmed { seq, .. } => self.status_change(*seq, Status::Confirmed),
            Event::AppointmentReleased { seq } => self.status_change(*seq, Status::Released),
            Event::AppointmentExpired { seq } => self.status_change(*seq, Status::Expired),
            Event::AppointmentRejected { seq } => self.status_change(*seq, Status::Rejected),
            Event::AppointmentCancelled { seq } => self.status_change(*seq, Status::Cancelled),
            Event::AppointmentClinicCancelled { seq } => {
                self.status_change(*seq, Status::ClinicCancelled)
            }
            Event::AppointmentNoShow { seq } => self.status_change(*seq, Status::NoShow),
            Event::AppointmentAtRisk { seq, at_risk } => Change::AppointmentAtRisk {
                appointment_id: self.id_of(*seq),
                clinic_id: clinic_id(self.appointments[seq].clinic),
                at_risk: *at_risk,
            },
            Event::AppointmentMoved { seq, .. } => {
                let a = &self.appointments[seq];
                self.status_change(*seq, a.status)
            }
            Event::ClaimTaken { citizen_id, .. } | Event::ClaimSettled { citizen_id, .. } => {
                Change::CitizenClaim {
                    citizen_id: citizen_id.clone(),
                }
            }
            Event::AppointmentAdministered { seq, .. } => {
                self.status_change(*seq, Status::Administered)
            }
            Event::AppointmentNeedsReview { seq } => Change::AppointmentNeedsReview {
                appointment_id: self.id_of(*seq),
                clinic_id: clinic_id(self.appointments[seq].clinic),
            },
            Event::WaitlistJoined {
                clinic,
                slot,
                entry,
            }
            | Event::WaitlistRestored {
                clinic,
                slot,
                entry,
                ..
            } => Change::WaitlistJoined {
                waitlist_id: self.waitlist_id(entry.seq),
                clinic_id: clinic_id(*clinic),
                slot_id: self.clinics[*clinic as usize].slots[*slot as usize]
                    .id
                    .clone(),
                citizen_id: entry.citizen.clone(),
            },
            // Applied already: the entry is gone, so only its id is known here.
            Event::WaitlistLeft { seq, why } => Change::WaitlistLeft {
                waitlist_id: self.waitlist_id(*seq),
                why: *why,
            },
        }
    }

    fn status_change(&self, seq: u64, status: Status) -> Change {
        let a = &self.appointments[&seq];
        let c = &self.clinics[a.clinic as usize];
        Change::AppointmentStatus {
            appointment_id: self.id_of(seq),
            clinic_id: c.id.clone(),
            slot_id: c.slots[a.slot as usize].id.clone(),
            vaccine: self.vaccines[a.vaccine as usize].name.clone(),
            citizen_id: a.citizen.clone(),
            status,
            offered_from_waitlist: a.offered_from_waitlist,
            rescheduled_from: a.rescheduled_from,
            rescheduled_to: a.rescheduled_to,
        }
    }
}
