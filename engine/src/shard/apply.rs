//! The one place a shard's state changes: [`ShardState::apply`], one event at a time. Live
//! traffic and recovery both come through here, so a replayed log rebuilds exactly the state
//! the live shard had. An event that does not fit the state is a broken log, not a case to
//! handle: it panics rather than corrupting counters.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::ShardState;
use crate::deadlines::Deadline;
use crate::event::Event;
use crate::model::{
    Appointment, Batch, Clinic, ClinicInfo, Slot, SlotSpec, Status, Vaccine, VaccineIdx,
};

impl ShardState {
    /// Applies one event: the table of contents, one helper per kind of change.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::VaccinePut { name, rules } => self.put_vaccine(Vaccine {
                name: name.clone(),
                rules: rules.clone(),
            }),
            Event::ClinicPut { clinic_id, info } => self.put_clinic(clinic_id, info),
            Event::StockReceived {
                clinic,
                vaccine,
                batch,
                quantity,
                expires_on,
            } => {
                let stock = self.clinics[*clinic as usize]
                    .stock
                    .entry(*vaccine)
                    .or_default();
                let b = stock.batches.entry(batch.clone()).or_insert(Batch {
                    on_hand: 0,
                    expires_on: *expires_on,
                });
                b.on_hand += quantity;
                stock.on_hand += quantity;
            }
            Event::StockAdjusted {
                clinic,
                vaccine,
                batch,
                delta,
            } => self.adjust_stock(*clinic, *vaccine, batch, *delta),
            Event::SlotPut {
                clinic,
                slot_id,
                spec,
                vaccines,
            } => self.put_slot(*clinic, slot_id, spec, vaccines),
            Event::SlotCancelled { clinic, slot } => {
                let s = &mut self.clinics[*clinic as usize].slots[*slot as usize];
                assert!(
                    s.pending == 0 && s.confirmed == 0,
                    "slot cancelled with live appointments"
                );
                s.cancelled = true;
            }
            Event::CitizenPut { citizen_id, record } => self.put_citizen(citizen_id, record),
            Event::ClaimTaken { citizen_id, claim } => self.claim_taken(citizen_id, claim),
            Event::ClaimSettled {
                citizen_id,
                attempt,
                outcome,
                tentative: _,
            } => self.claim_settled(citizen_id, *attempt, outcome),
            Event::AppointmentReserved(appointment) => self.reserve((**appointment).clone()),
            Event::AppointmentConfirmed {
                seq,
                at_ms,
                no_show_at_ms,
            } => self.confirm(*seq, *at_ms, *no_show_at_ms),
            Event::AppointmentReleased { seq } => self.end_active(*seq, Status::Released),
            Event::AppointmentExpired { seq } => self.end_active(*seq, Status::Expired),
            Event::AppointmentRejected { seq } => self.end_active(*seq, Status::Rejected),
            Event::AppointmentCancelled { seq } => self.end_active(*seq, Status::Cancelled),
            Event::AppointmentClinicCancelled { seq } => {
                self.end_active(*seq, Status::ClinicCancelled);
                self.appointment_mut(*seq).rebook_priority = true;
            }
            Event::AppointmentAtRisk { seq, at_risk } => {
                self.appointment_mut(*seq).at_risk = *at_risk;
            }
            Event::AppointmentMoved { seq, to } => {
                let status = match self.appointments[seq].status {
                    Status::Pending => Status::Released,
                    _ => Status::Cancelled,
                };
                self.end_active(*seq, status);
                self.appointment_mut(*seq).rescheduled_to = Some(*to);
            }
            Event::AppointmentNeedsReview { seq } => {
                self.appointment_mut(*seq).needs_review = true;
            }
            Event::AppointmentNoShow { seq } => self.end_active(*seq, Status::NoShow),
            Event::AppointmentAdministered { seq, batch, at_ms } => {
                self.administer(*seq, batch, *at_ms);
            }
        }
    }

    pub(super) fn appointment_mut(&mut self, seq: u64) -> &mut Appointment {
        self.appointments.get_mut(&seq).expect("known appointment")
    }

    fn put_vaccine(&mut self, vaccine: Vaccine) {
        match self.vaccine_index.get(&vaccine.name) {
            Some(&v) => self.vaccines[v as usize].rules = vaccine.rules,
            None => {
                let v = VaccineIdx::try_from(self.vaccines.len()).expect("VACCINES_MAX fits u16");
                self.vaccine_index.insert(vaccine.name.clone(), v);
                self.vaccines.push(vaccine);
            }
        }
    }

    fn put_clinic(&mut self, clinic_id: &Arc<str>, info: &ClinicInfo) {
        match self.clinic_index.get(clinic_id) {
            Some(&c) => self.clinics[c as usize].info = info.clone(),
            None => {
                let c = u32::try_from(self.clinics.len()).expect("clinics fit u32");
                self.clinics.push(Clinic {
                    id: clinic_id.clone(),
                    info: info.clone(),
                    slots: Vec::new(),
                    slot_index: FxHashMap::default(),
                    stock: FxHashMap::default(),
                    appointments: Vec::new(),
                });
                self.clinic_index.insert(clinic_id.clone(), c);
            }
        }
    }

    fn adjust_stock(&mut self, clinic: u32, vaccine: VaccineIdx, batch: &str, delta: i64) {
        let stock = self.clinics[clinic as usize]
            .stock
            .entry(vaccine)
            .or_default();
        let b = stock
            .batches
            .get_mut(batch)
            .expect("decided on an existing batch");
        b.on_hand += delta;
        stock.on_hand += delta;
        assert!(b.on_hand >= 0, "batch {batch} went negative");
    }

    fn put_slot(
        &mut self,
        clinic: u32,
        slot_id: &Arc<str>,
        spec: &SlotSpec,
        vaccines: &[VaccineIdx],
    ) {
        let c = &mut self.clinics[clinic as usize];
        if let Some(&s) = c.slot_index.get(slot_id) {
            let slot = &mut c.slots[s as usize];
            let end_shift_ms = spec.end_ms - slot.end_ms;
            slot.start_ms = spec.start_ms;
            slot.end_ms = spec.end_ms;
            slot.capacity = spec.capacity;
            slot.vaccines = vaccines.to_vec();
            slot.priority_reserve = spec.priority_reserve;
            assert!(
                slot.taken() <= slot.capacity,
                "slot {slot_id} shrank below taken"
            );
            if end_shift_ms != 0 && slot.confirmed > 0 {
                self.shift_no_shows(clinic, s, end_shift_ms);
            }
            return;
        }
        let s = u32::try_from(c.slots.len()).expect("slots fit u32");
        c.slots.push(Slot {
            id: slot_id.clone(),
            start_ms: spec.start_ms,
            end_ms: spec.end_ms,
            capacity: spec.capacity,
            vaccines: vaccines.to_vec(),
            priority_reserve: spec.priority_reserve,
            pending: 0,
            confirmed: 0,
            administered: 0,
            no_show: 0,
            priority_taken: 0,
            cancelled: false,
        });
        c.slot_index.insert(slot_id.clone(), s);
    }

    /// A hold: a seat and a dose taken in one step, and its deadline timed.
    fn reserve(&mut self, a: Appointment) {
        let c = &mut self.clinics[a.clinic as usize];
        let s = &mut c.slots[a.slot as usize];
        s.pending += 1;
        if a.rebook_priority {
            s.priority_taken += 1;
        }
        assert!(s.taken() <= s.capacity, "oversold slot {}", s.id);
        let stock = c
            .stock
            .get_mut(&a.vaccine)
            .expect("held against existing stock");
        stock.reserved += 1;
        debug_assert!(stock.reserved <= stock.on_hand, "reserved beyond on hand");
        c.appointments.push(a.seq);
        let deadline = a.expires_at_ms.expect("a hold has a deadline");
        self.deadlines
            .insert(deadline, Deadline::Hold { seq: a.seq });
        self.counts.pending += 1;
        self.next_seq = self.next_seq.max(a.seq + 1);
        self.appointments.push(a);
    }

    /// A hold becomes CONFIRMED: its hold deadline stops, its no-show deadline starts.
    fn confirm(&mut self, seq: u64, at_ms: i64, no_show_at_ms: i64) {
        let a = self.appointments.get_mut(&seq).expect("known appointment");
        assert_eq!(a.status, Status::Pending);
        let deadline = a.expires_at_ms.take().expect("a hold has a deadline");
        a.status = Status::Confirmed;
        a.confirmed_at_ms = Some(at_ms);
        let s = &mut self.clinics[a.clinic as usize].slots[a.slot as usize];
        s.pending -= 1;
        s.confirmed += 1;
        self.counts.pending -= 1;
        self.counts.confirmed += 1;
        self.untime_hold(seq, deadline);
        self.time_no_show(seq, no_show_at_ms);
    }

    /// An active appointment ends: its dose returns exactly once, and so does its seat
    /// unless it ends as NO_SHOW (the seat stays counted in `no_show`); a hold's deadline or
    /// a CONFIRMED appointment's no-show deadline stops being timed.
    pub(super) fn end_active(&mut self, seq: u64, status: Status) {
        let was = self.appointments[&seq].status;
        assert!(
            was.is_active(),
            "{} from final status {}",
            status.as_str(),
            was.as_str()
        );
        if was == Status::Confirmed {
            self.leave_confirmed(seq);
        }
        let a = self.appointments.get_mut(&seq).expect("known appointment");
        a.status = status;
        let deadline = a.expires_at_ms.take();
        a.at_risk = false;
        let c = &mut self.clinics[a.clinic as usize];
        let s = &mut c.slots[a.slot as usize];
        if was == Status::Pending {
            s.pending -= 1;
            self.counts.pending -= 1;
        } else {
            s.confirmed -= 1;
            self.counts.confirmed -= 1;
        }
        if status == Status::NoShow {
            // The slot is over: the seat stays used, a priority seat stays a priority seat.
            s.no_show += 1;
        } else if a.rebook_priority {
            s.priority_taken -= 1;
        }
        let stock = c
            .stock
            .get_mut(&a.vaccine)
            .expect("reserved against existing stock");
        stock.reserved -= 1;
        assert!(stock.reserved >= 0, "reserved went negative");
        if let Some(deadline) = deadline {
            self.untime_hold(seq, deadline);
        }
    }

    /// The dose is given: ADMINISTERED with its batch and instant; the seat moves from
    /// confirmed to administered; the dose leaves the batch and is no longer reserved
    /// (`on_hand - 1`, `reserved - 1`: `available` is unchanged).
    fn administer(&mut self, seq: u64, batch: &str, at_ms: i64) {
        let a = self.appointments.get_mut(&seq).expect("known appointment");
        assert_eq!(
            a.status,
            Status::Confirmed,
            "administered from {:?}",
            a.status
        );
        self.leave_confirmed(seq);
        let a = self.appointments.get_mut(&seq).expect("known appointment");
        a.status = Status::Administered;
        a.batch = Some(batch.to_string());
        a.administered_at_ms = Some(at_ms);
        // The dose was on hand: the appointment is no longer at risk of going without.
        a.at_risk = false;
        let (clinic, slot, vaccine) = (a.clinic, a.slot, a.vaccine);
        self.count_out_confirmed(seq);
        let c = &mut self.clinics[clinic as usize];
        c.slots[slot as usize].administered += 1;
        let stock = c
            .stock
            .get_mut(&vaccine)
            .expect("administered from existing stock");
        let b = stock
            .batches
            .get_mut(batch)
            .expect("decided on a batch of the appointment's vaccine");
        b.on_hand -= 1;
        assert!(b.on_hand >= 0, "batch {batch} went negative");
        stock.on_hand -= 1;
        stock.reserved -= 1;
        assert!(stock.reserved >= 0, "reserved went negative");
    }

    /// A CONFIRMED appointment leaves CONFIRMED by administration: its slot's and the
    /// shard's confirmed counts drop. The one place administration ends CONFIRMED, so what
    /// is timed while CONFIRMED (a no-show deadline) is untimed here.
    fn count_out_confirmed(&mut self, seq: u64) {
        let a = &self.appointments[&seq];
        let s = &mut self.clinics[a.clinic as usize].slots[a.slot as usize];
        s.confirmed -= 1;
        self.counts.confirmed -= 1;
    }

    fn untime_hold(&mut self, seq: u64, deadline: i64) {
        let timed = self.deadlines.remove(deadline, Deadline::Hold { seq });
        assert!(timed, "hold {seq} was not timed at {deadline}");
    }
}
