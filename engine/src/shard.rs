//! The state of one shard and its state machine.
//!
//! `decide` is pure: it reads the state and a command and returns the events that would happen
//! and the answer (or a domain error). `apply` is the only code that mutates the state, one
//! event at a time; live traffic (`execute`) and recovery (replay of the log) share it.
//! Nothing here knows about actors, HTTP or disks.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::appointments::{AppointmentTable, SeqList};
use crate::clock::UnixMs;
use crate::event::{Command, DomainError, Event};
use crate::ids::AppointmentId;
use crate::model::{
    Appointment, CitizenRecord, Clinic, Slot, SlotSpec, Status, Vaccine, VaccineIdx, VaccineRules,
    VaccineStock, SLOTS_BULK_MAX, SLOT_CAPACITY_MAX, STOCK_QUANTITY_MAX, VACCINES_MAX,
};
use crate::view::{
    AppointmentView, AvailabilityView, ClinicSummary, HoldContext, Output, ShardCounts, SlotView,
    StockView,
};

/// Most holds one expiry pass handles. A pass that finds more leaves the rest for the next
/// wake-up (which the timer arms at once), so a burst of expiries never stalls the shard's
/// other callers for long.
pub const EXPIRE_BATCH_MAX: usize = 4096;
/// Most slots one clinic may have (14 days of 15-minute slots is 1,344).
pub const SLOTS_PER_CLINIC_MAX: usize = 100_000;

/// What a decision answers, in terms of the state after its events are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack,
    Appointment(u64),
    Held(u64),
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
}

/// The outcome of `decide`: events to apply, then the answer. Some refusals still carry
/// events (a confirm that arrives after the deadline expires the hold and answers 410).
#[derive(Debug)]
pub struct Decision {
    pub events: Vec<Event>,
    pub outcome: Result<Reply, DomainError>,
}

impl Decision {
    fn ok(events: Vec<Event>, reply: Reply) -> Self {
        Decision {
            events,
            outcome: Ok(reply),
        }
    }
    fn err(error: DomainError) -> Self {
        Decision {
            events: Vec::new(),
            outcome: Err(error),
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
    citizens: FxHashMap<Arc<str>, Arc<CitizenRecord>>,
    appointments: AppointmentTable,
    /// Appointments of this shard's clinics by citizen, for the citizen's listing.
    by_citizen: FxHashMap<Arc<str>, SeqList>,
    next_seq: u64,
    timers: crate::timers::DeadlineQueue,
    counts: ShardCounts,
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
            appointments: AppointmentTable::default(),
            by_citizen: FxHashMap::default(),
            next_seq: 1,
            timers: Default::default(),
            counts: ShardCounts::default(),
        }
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Decides, applies and answers one command. Applied events are appended to `sink` (the
    /// write-ahead log's feed).
    pub fn execute(
        &mut self,
        command: Command,
        now_ms: UnixMs,
        sink: &mut Vec<Event>,
    ) -> Result<Output, DomainError> {
        let decision = match command {
            Command::ExpireDue => self.decide_expire_due(now_ms),
            command => self.decide(&command, now_ms),
        };
        let first_new = sink.len();
        for event in decision.events {
            self.apply(&event);
            sink.push(event);
        }
        self.follow_up_at_risk(first_new, sink);
        decision.outcome.map(|reply| self.render(reply))
    }

    /// The pure decision for every command but `ExpireDue` (see `decide_expire_due`).
    pub fn decide(&self, command: &Command, now_ms: UnixMs) -> Decision {
        match command {
            Command::PutVaccine { name, rules } => self.decide_put_vaccine(name, rules),
            Command::PutClinic { clinic_id, info } => {
                match self.clinic_index.get(clinic_id.as_str()) {
                    Some(&c) if self.clinics[c as usize].info == *info => {
                        Decision::ok(vec![], Reply::Ack)
                    }
                    _ => Decision::ok(
                        vec![Event::ClinicPut {
                            clinic_id: clinic_id.as_str().into(),
                            info: info.clone(),
                        }],
                        Reply::Ack,
                    ),
                }
            }
            Command::ReceiveStock {
                clinic_id,
                vaccine,
                batch,
                quantity,
                expires_on,
            } => {
                let (clinic, vaccine) = match self.clinic_and_vaccine(clinic_id, vaccine) {
                    Ok(found) => found,
                    Err(e) => return Decision::err(e),
                };
                if !(1..=STOCK_QUANTITY_MAX).contains(quantity) {
                    return Decision::err(DomainError::LimitReached("stock quantity"));
                }
                let stock = self.clinics[clinic as usize].stock.get(&vaccine);
                if let Some(existing) = stock.and_then(|s| s.batches.get(batch)) {
                    if existing.expires_on != *expires_on {
                        return Decision::err(DomainError::BatchMismatch {
                            expires_on: existing.expires_on,
                        });
                    }
                }
                Decision::ok(
                    vec![Event::StockReceived {
                        clinic,
                        vaccine,
                        batch: batch.clone(),
                        quantity: *quantity,
                        expires_on: *expires_on,
                    }],
                    Reply::Stock { clinic, vaccine },
                )
            }
            Command::AdjustStock {
                clinic_id,
                vaccine,
                batch,
                delta,
                reason: _,
            } => {
                let (clinic, vaccine) = match self.clinic_and_vaccine(clinic_id, vaccine) {
                    Ok(found) => found,
                    Err(e) => return Decision::err(e),
                };
                if *delta == 0 || delta.abs() > STOCK_QUANTITY_MAX {
                    return Decision::err(DomainError::LimitReached("stock adjustment"));
                }
                let stock = self.clinics[clinic as usize].stock.get(&vaccine);
                let Some(existing) = stock.and_then(|s| s.batches.get(batch)) else {
                    return Decision::err(DomainError::NotFound("batch"));
                };
                if existing.on_hand + delta < 0 {
                    return Decision::err(DomainError::InsufficientStock {
                        on_hand: existing.on_hand,
                    });
                }
                Decision::ok(
                    vec![Event::StockAdjusted {
                        clinic,
                        vaccine,
                        batch: batch.clone(),
                        delta: *delta,
                    }],
                    Reply::Stock { clinic, vaccine },
                )
            }
            Command::PutSlots { clinic_id, slots } => self.decide_put_slots(clinic_id, slots),
            Command::CancelSlot {
                clinic_id,
                slot_id,
                reason: _,
            } => {
                let (clinic, slot) = match self.clinic_and_slot(clinic_id, slot_id) {
                    Ok(found) => found,
                    Err(e) => return Decision::err(e),
                };
                let reply = Reply::SlotCancelled { clinic, slot };
                if self.clinics[clinic as usize].slots[slot as usize].cancelled {
                    return Decision::ok(vec![], reply);
                }
                let mut events: Vec<Event> = self
                    .slot_appointments(clinic, slot)
                    .filter(|a| a.status.is_active())
                    .map(|a| Event::AppointmentClinicCancelled { seq: a.seq })
                    .collect();
                events.push(Event::SlotCancelled { clinic, slot });
                Decision::ok(events, reply)
            }
            Command::PutCitizen { citizen_id, record } => {
                match self.citizens.get(citizen_id.as_str()) {
                    Some(existing) if **existing == *record => Decision::ok(vec![], Reply::Ack),
                    _ => Decision::ok(
                        vec![Event::CitizenPut {
                            citizen_id: citizen_id.as_str().into(),
                            record: Arc::new(record.clone()),
                        }],
                        Reply::Ack,
                    ),
                }
            }
            Command::Hold {
                clinic_id,
                slot_id,
                vaccine,
                citizen_id,
                hold_ms,
                rebook_priority,
            } => self.decide_hold(
                clinic_id,
                slot_id,
                vaccine,
                citizen_id,
                *hold_ms,
                *rebook_priority,
                now_ms,
            ),
            Command::Confirm { seq, citizen } => {
                let a = match self.owned_appointment(*seq, citizen.as_deref()) {
                    Ok(a) => a,
                    Err(e) => return Decision::err(e),
                };
                match a.status {
                    Status::Pending if self.hold_has_expired(a, now_ms) => Decision {
                        events: vec![Event::AppointmentExpired { seq: *seq }],
                        outcome: Err(DomainError::HoldExpired),
                    },
                    Status::Pending => Decision::ok(
                        vec![Event::AppointmentConfirmed {
                            seq: *seq,
                            at_ms: now_ms,
                        }],
                        Reply::Appointment(*seq),
                    ),
                    Status::Confirmed => Decision::ok(vec![], Reply::Appointment(*seq)),
                    Status::Expired => Decision::err(DomainError::HoldExpired),
                    status => Decision::err(DomainError::InvalidTransition { status }),
                }
            }
            Command::Cancel { seq, citizen } => {
                let a = match self.owned_appointment(*seq, citizen.as_deref()) {
                    Ok(a) => a,
                    Err(e) => return Decision::err(e),
                };
                match a.status {
                    Status::Pending if self.hold_has_expired(a, now_ms) => Decision {
                        events: vec![Event::AppointmentExpired { seq: *seq }],
                        outcome: Err(DomainError::InvalidTransition {
                            status: Status::Expired,
                        }),
                    },
                    Status::Pending => Decision::ok(
                        vec![Event::AppointmentReleased { seq: *seq }],
                        Reply::Appointment(*seq),
                    ),
                    Status::Confirmed => Decision::ok(
                        vec![Event::AppointmentCancelled { seq: *seq }],
                        Reply::Appointment(*seq),
                    ),
                    Status::Released | Status::Cancelled => {
                        Decision::ok(vec![], Reply::Appointment(*seq))
                    }
                    status => Decision::err(DomainError::InvalidTransition { status }),
                }
            }
            Command::Reject { seq, reasons: _ } => {
                let Some(a) = self.appointments.get(seq) else {
                    return Decision::err(DomainError::NotFound("appointment"));
                };
                match a.status {
                    // Compensation of a failed booking: it must return the seat even when the
                    // deadline has passed meanwhile, and a repeat is a no-op.
                    Status::Pending => Decision::ok(
                        vec![Event::AppointmentRejected { seq: *seq }],
                        Reply::Appointment(*seq),
                    ),
                    Status::Rejected | Status::Expired => {
                        Decision::ok(vec![], Reply::Appointment(*seq))
                    }
                    status => Decision::err(DomainError::InvalidTransition { status }),
                }
            }
            Command::ExpireDue => {
                // Needs the deadline index; `execute` routes it to `decide_expire_due`.
                Decision::ok(vec![], Reply::Expired(0))
            }
        }
    }

    /// Expires the holds whose deadline has passed, at most `EXPIRE_BATCH_MAX` per pass.
    /// Popping the deadline index is index maintenance; the decision itself is still "these
    /// appointments expire".
    fn decide_expire_due(&mut self, now_ms: UnixMs) -> Decision {
        let appointments = &self.appointments;
        let due = self
            .timers
            .pop_due(now_ms, EXPIRE_BATCH_MAX, |seq, deadline| {
                is_live_deadline(appointments, seq, deadline)
            });
        let count = due.len();
        let events = due
            .into_iter()
            .map(|seq| Event::AppointmentExpired { seq })
            .collect();
        Decision::ok(events, Reply::Expired(count))
    }

    fn decide_put_vaccine(&self, name: &str, rules: &VaccineRules) -> Decision {
        match self.vaccine_index.get(name) {
            Some(&v) if *self.vaccines[v as usize].rules == *rules => {
                Decision::ok(vec![], Reply::Ack)
            }
            None if self.vaccines.len() >= VACCINES_MAX => {
                Decision::err(DomainError::LimitReached("vaccines in the catalogue"))
            }
            _ => Decision::ok(
                vec![Event::VaccinePut {
                    name: name.into(),
                    rules: Arc::new(rules.clone()),
                }],
                Reply::Ack,
            ),
        }
    }

    fn decide_put_slots(&self, clinic_id: &str, slots: &[(String, SlotSpec)]) -> Decision {
        let Some(&clinic) = self.clinic_index.get(clinic_id) else {
            return Decision::err(DomainError::NotFound("clinic"));
        };
        if slots.len() > SLOTS_BULK_MAX {
            return Decision::err(DomainError::LimitReached("slots in one upload"));
        }
        let c = &self.clinics[clinic as usize];
        let new_slots = slots
            .iter()
            .filter(|(id, _)| !c.slot_index.contains_key(id.as_str()))
            .count();
        if c.slots.len() + new_slots > SLOTS_PER_CLINIC_MAX {
            return Decision::err(DomainError::LimitReached("slots per clinic"));
        }
        let mut events = Vec::with_capacity(slots.len());
        for (slot_id, spec) in slots {
            if spec.capacity == 0
                || spec.capacity > SLOT_CAPACITY_MAX
                || spec.priority_reserve > spec.capacity
                || spec.end_ms <= spec.start_ms
            {
                return Decision::err(DomainError::LimitReached("slot fields"));
            }
            let mut vaccines = Vec::with_capacity(spec.vaccines.len());
            for name in &spec.vaccines {
                match self.vaccine_index.get(name.as_str()) {
                    Some(&v) if !vaccines.contains(&v) => vaccines.push(v),
                    Some(_) => {}
                    None => return Decision::err(DomainError::NotFound("vaccine")),
                }
            }
            if let Some(&s) = c.slot_index.get(slot_id.as_str()) {
                let existing = &c.slots[s as usize];
                if existing.cancelled {
                    return Decision::err(DomainError::SlotCancelled);
                }
                if spec.capacity < existing.taken() {
                    return Decision::err(DomainError::CapacityInUse {
                        taken: existing.taken(),
                    });
                }
            }
            events.push(Event::SlotPut {
                clinic,
                slot_id: slot_id.as_str().into(),
                spec: spec.clone(),
                vaccines,
            });
        }
        // A new slot's index is known only after apply, so the reply names slots by id.
        let slot_ids = slots.iter().map(|(id, _)| Arc::from(id.as_str())).collect();
        Decision::ok(events, Reply::Slots { clinic, slot_ids })
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_hold(
        &self,
        clinic_id: &str,
        slot_id: &str,
        vaccine: &str,
        citizen_id: &str,
        hold_ms: i64,
        rebook_priority: bool,
        now_ms: UnixMs,
    ) -> Decision {
        let (clinic, slot) = match self.clinic_and_slot(clinic_id, slot_id) {
            Ok(found) => found,
            Err(e) => return Decision::err(e),
        };
        let Some(&vaccine) = self.vaccine_index.get(vaccine) else {
            return Decision::err(DomainError::NotFound("vaccine"));
        };
        let c = &self.clinics[clinic as usize];
        let s = &c.slots[slot as usize];
        if s.cancelled {
            return Decision::err(DomainError::SlotCancelled);
        }
        if now_ms >= s.start_ms {
            return Decision::err(DomainError::SlotStarted);
        }
        if !s.vaccines.contains(&vaccine) {
            return Decision::err(DomainError::VaccineNotOffered);
        }
        let seats_open = if rebook_priority {
            s.remaining() > 0
        } else {
            s.remaining() > s.reserve_unused()
        };
        if !seats_open {
            return Decision::err(DomainError::SoldOut);
        }
        match c.stock.get(&vaccine) {
            Some(stock) if stock.available() > 0 => {}
            _ => return Decision::err(DomainError::OutOfStock),
        }
        debug_assert!(hold_ms > 0);
        let seq = self.next_seq;
        let appointment = Appointment {
            seq,
            status: Status::Pending,
            clinic,
            slot,
            vaccine,
            citizen: citizen_id.into(),
            created_at_ms: now_ms,
            expires_at_ms: Some(now_ms + hold_ms.max(1)),
            confirmed_at_ms: None,
            administered_at_ms: None,
            batch: None,
            needs_review: false,
            at_risk: false,
            rebook_priority,
        };
        Decision::ok(
            vec![Event::AppointmentReserved(Box::new(appointment))],
            Reply::Held(seq),
        )
    }

    /// The one place state changes.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::VaccinePut { name, rules } => match self.vaccine_index.get(name) {
                Some(&v) => self.vaccines[v as usize].rules = rules.clone(),
                None => {
                    let v =
                        VaccineIdx::try_from(self.vaccines.len()).expect("VACCINES_MAX fits u16");
                    self.vaccines.push(Vaccine {
                        name: name.clone(),
                        rules: rules.clone(),
                    });
                    self.vaccine_index.insert(name.clone(), v);
                }
            },
            Event::ClinicPut { clinic_id, info } => match self.clinic_index.get(clinic_id) {
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
            },
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
                let b = stock
                    .batches
                    .entry(batch.clone())
                    .or_insert(crate::model::Batch {
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
            } => {
                let stock = self.clinics[*clinic as usize]
                    .stock
                    .entry(*vaccine)
                    .or_default();
                let b = stock
                    .batches
                    .get_mut(batch)
                    .expect("decided on an existing batch");
                b.on_hand += delta;
                stock.on_hand += delta;
                assert!(b.on_hand >= 0, "batch {batch} went negative");
            }
            Event::SlotPut {
                clinic,
                slot_id,
                spec,
                vaccines,
            } => {
                let c = &mut self.clinics[*clinic as usize];
                match c.slot_index.get(slot_id) {
                    Some(&s) => {
                        let slot = &mut c.slots[s as usize];
                        slot.start_ms = spec.start_ms;
                        slot.end_ms = spec.end_ms;
                        slot.capacity = spec.capacity;
                        slot.vaccines = vaccines.clone();
                        slot.priority_reserve = spec.priority_reserve;
                        assert!(
                            slot.taken() <= slot.capacity,
                            "slot {slot_id} shrank below taken"
                        );
                    }
                    None => {
                        let s = u32::try_from(c.slots.len()).expect("slots fit u32");
                        c.slots.push(Slot {
                            id: slot_id.clone(),
                            start_ms: spec.start_ms,
                            end_ms: spec.end_ms,
                            capacity: spec.capacity,
                            vaccines: vaccines.clone(),
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
                }
            }
            Event::SlotCancelled { clinic, slot } => {
                let s = &mut self.clinics[*clinic as usize].slots[*slot as usize];
                assert!(
                    s.pending == 0 && s.confirmed == 0,
                    "slot cancelled with live appointments"
                );
                s.cancelled = true;
            }
            Event::CitizenPut { citizen_id, record } => {
                self.citizens.insert(citizen_id.clone(), record.clone());
            }
            Event::AppointmentReserved(appointment) => {
                let a = (**appointment).clone();
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
                match self.by_citizen.entry(a.citizen.clone()) {
                    std::collections::hash_map::Entry::Occupied(mut seqs) => {
                        seqs.get_mut().push(a.seq)
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(SeqList::One(a.seq));
                    }
                }
                self.timers
                    .push(a.expires_at_ms.expect("a hold has a deadline"), a.seq);
                self.counts.pending += 1;
                self.next_seq = self.next_seq.max(a.seq + 1);
                self.appointments.push(a);
            }
            Event::AppointmentConfirmed { seq, at_ms } => {
                let a = self.appointments.get_mut(seq).expect("known appointment");
                assert_eq!(a.status, Status::Pending);
                a.status = Status::Confirmed;
                a.confirmed_at_ms = Some(*at_ms);
                a.expires_at_ms = None;
                let s = &mut self.clinics[a.clinic as usize].slots[a.slot as usize];
                s.pending -= 1;
                s.confirmed += 1;
                self.counts.pending -= 1;
                self.counts.confirmed += 1;
                self.after_hold_left();
            }
            Event::AppointmentReleased { seq } => self.end_active(*seq, Status::Released),
            Event::AppointmentExpired { seq } => self.end_active(*seq, Status::Expired),
            Event::AppointmentRejected { seq } => self.end_active(*seq, Status::Rejected),
            Event::AppointmentCancelled { seq } => self.end_active(*seq, Status::Cancelled),
            Event::AppointmentClinicCancelled { seq } => {
                self.end_active(*seq, Status::ClinicCancelled);
                self.appointments
                    .get_mut(seq)
                    .expect("known appointment")
                    .rebook_priority = true;
            }
            Event::AppointmentAtRisk { seq, at_risk } => {
                let a = self.appointments.get_mut(seq).expect("known appointment");
                a.at_risk = *at_risk;
            }
        }
    }

    /// An active appointment ends: its seat and its dose return exactly once.
    fn end_active(&mut self, seq: u64, status: Status) {
        let a = self.appointments.get_mut(&seq).expect("known appointment");
        let was = a.status;
        assert!(
            was.is_active(),
            "{} from final status {}",
            status.as_str(),
            was.as_str()
        );
        a.status = status;
        a.expires_at_ms = None;
        a.at_risk = false;
        let c = &mut self.clinics[a.clinic as usize];
        let s = &mut c.slots[a.slot as usize];
        match was {
            Status::Pending => {
                s.pending -= 1;
                self.counts.pending -= 1;
            }
            _ => {
                s.confirmed -= 1;
                self.counts.confirmed -= 1;
            }
        }
        if a.rebook_priority {
            s.priority_taken -= 1;
        }
        let stock = c
            .stock
            .get_mut(&a.vaccine)
            .expect("reserved against existing stock");
        stock.reserved -= 1;
        assert!(stock.reserved >= 0, "reserved went negative");
        if was == Status::Pending {
            self.after_hold_left();
        }
    }

    /// Keeps the deadline index's top live and its size bounded after a hold stops pending.
    fn after_hold_left(&mut self) {
        let appointments = &self.appointments;
        let live = |seq, deadline| is_live_deadline(appointments, seq, deadline);
        self.timers.drop_stale_top(live);
        self.timers
            .maybe_compact(self.counts.pending as usize, live);
    }

    /// After events that change a clinic's doses or reservations: when more doses are
    /// reserved than on hand, the newest active appointments beyond what is on hand are
    /// flagged at risk (API.md, "Catalogue"); the flags clear when stock covers them again.
    /// A derived decision, applied like any other.
    fn follow_up_at_risk(&mut self, first_new: usize, sink: &mut Vec<Event>) {
        let mut touched: Vec<(u32, VaccineIdx)> = Vec::new();
        for event in &sink[first_new..] {
            let pair = match event {
                Event::StockReceived {
                    clinic, vaccine, ..
                }
                | Event::StockAdjusted {
                    clinic, vaccine, ..
                } => Some((*clinic, *vaccine)),
                Event::AppointmentReleased { seq }
                | Event::AppointmentExpired { seq }
                | Event::AppointmentRejected { seq }
                | Event::AppointmentCancelled { seq }
                | Event::AppointmentClinicCancelled { seq } => {
                    self.appointments.get(seq).map(|a| (a.clinic, a.vaccine))
                }
                _ => None,
            };
            if let Some(pair) = pair {
                if !touched.contains(&pair) {
                    touched.push(pair);
                }
            }
        }
        for (clinic, vaccine) in touched {
            let c = &self.clinics[clinic as usize];
            let Some(stock) = c.stock.get(&vaccine) else {
                continue;
            };
            let mut uncovered = (stock.reserved - stock.on_hand).max(0);
            let mut events = Vec::new();
            for seq in c.appointments.iter().rev() {
                let a = &self.appointments[seq];
                if a.vaccine != vaccine || !a.status.is_active() {
                    continue;
                }
                let should = uncovered > 0;
                if should {
                    uncovered -= 1;
                }
                if a.at_risk != should {
                    events.push(Event::AppointmentAtRisk {
                        seq: *seq,
                        at_risk: should,
                    });
                }
            }
            for event in events {
                self.apply(&event);
                sink.push(event);
            }
        }
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
            .ok_or(DomainError::NotFound("appointment"))?;
        match citizen {
            Some(c) if *a.citizen != *c => Err(DomainError::NotYours),
            _ => Ok(a),
        }
    }

    fn hold_has_expired(&self, a: &Appointment, now_ms: UnixMs) -> bool {
        a.expires_at_ms.is_some_and(|deadline| now_ms >= deadline)
    }

    fn clinic_and_vaccine(
        &self,
        clinic_id: &str,
        vaccine: &str,
    ) -> Result<(u32, VaccineIdx), DomainError> {
        let clinic = *self
            .clinic_index
            .get(clinic_id)
            .ok_or(DomainError::NotFound("clinic"))?;
        let vaccine = *self
            .vaccine_index
            .get(vaccine)
            .ok_or(DomainError::NotFound("vaccine"))?;
        Ok((clinic, vaccine))
    }

    fn clinic_and_slot(&self, clinic_id: &str, slot_id: &str) -> Result<(u32, u32), DomainError> {
        let clinic = *self
            .clinic_index
            .get(clinic_id)
            .ok_or(DomainError::NotFound("clinic"))?;
        let slot = *self.clinics[clinic as usize]
            .slot_index
            .get(slot_id)
            .ok_or(DomainError::NotFound("slot"))?;
        Ok((clinic, slot))
    }

    fn slot_appointments(&self, clinic: u32, slot: u32) -> impl Iterator<Item = &Appointment> {
        self.clinics[clinic as usize]
            .appointments
            .iter()
            .map(|seq| &self.appointments[seq])
            .filter(move |a| a.slot == slot)
    }

    // ---- rendering and queries -------------------------------------------------------

    fn render(&self, reply: Reply) -> Output {
        match reply {
            Reply::Ack => Output::Ack,
            Reply::Appointment(seq) => {
                Output::Appointment(self.appointment_view(seq).expect("exists"))
            }
            Reply::Held(seq) => {
                let a = &self.appointments[&seq];
                let c = &self.clinics[a.clinic as usize];
                let context = HoldContext {
                    slot_start_ms: c.slots[a.slot as usize].start_ms,
                    clinic_region: c.info.region.clone(),
                    clinic_timezone: c.info.timezone.clone(),
                    rules: self.vaccines[a.vaccine as usize].rules.clone(),
                };
                Output::Held(self.appointment_view(seq).expect("exists"), context)
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
            Reply::SlotCancelled { clinic, slot } => {
                let affected = self
                    .slot_appointments(clinic, slot)
                    .filter(|a| a.status == Status::ClinicCancelled)
                    .map(|a| self.id_of(a.seq))
                    .collect();
                Output::SlotCancelled {
                    slot: self.slot_view(clinic, slot),
                    affected,
                }
            }
            Reply::Stock { clinic, vaccine } => Output::Stock(self.stock_view(clinic, vaccine)),
            Reply::Expired(count) => Output::Expired(count),
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
        })
    }

    pub fn slot_view(&self, clinic: u32, slot: u32) -> SlotView {
        let s = &self.clinics[clinic as usize].slots[slot as usize];
        SlotView {
            slot_id: s.id.clone(),
            start_ms: s.start_ms,
            end_ms: s.end_ms,
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

    pub fn get_appointment(&self, seq: u64) -> Option<AppointmentView> {
        self.appointment_view(seq)
    }

    /// Appointments of a clinic, optionally of one slot and one status, oldest first.
    pub fn clinic_appointments(
        &self,
        clinic_id: &str,
        slot_id: Option<&str>,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<AppointmentView>, DomainError> {
        let clinic = *self
            .clinic_index
            .get(clinic_id)
            .ok_or(DomainError::NotFound("clinic"))?;
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

    /// This shard's appointments of one citizen, oldest first.
    pub fn citizen_appointments(&self, citizen_id: &str) -> Vec<AppointmentView> {
        self.by_citizen
            .get(citizen_id)
            .map(|seqs| {
                seqs.as_slice()
                    .iter()
                    .filter_map(|&seq| self.appointment_view(seq))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn citizen(&self, citizen_id: &str) -> Option<Arc<CitizenRecord>> {
        self.citizens.get(citizen_id).cloned()
    }

    pub fn availability(
        &self,
        clinic_id: &str,
        vaccine: Option<&str>,
        from_ms: Option<UnixMs>,
        to_ms: Option<UnixMs>,
    ) -> Result<AvailabilityView, DomainError> {
        let clinic = *self
            .clinic_index
            .get(clinic_id)
            .ok_or(DomainError::NotFound("clinic"))?;
        let vaccine = match vaccine {
            Some(name) => Some(
                *self
                    .vaccine_index
                    .get(name)
                    .ok_or(DomainError::NotFound("vaccine"))?,
            ),
            None => None,
        };
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
        counts.timers = self.timers.len() as u64;
        counts.next_expiry_ms = self.timers.earliest();
        counts
    }

    pub fn next_deadline(&self) -> Option<UnixMs> {
        self.timers.earliest()
    }

    /// True when the clinic already stocks `batch` of `vaccine` (lets loaders skip a delivery
    /// they made before instead of adding it twice).
    pub fn has_batch(&self, clinic_id: &str, vaccine: &str, batch: &str) -> bool {
        self.clinic_and_vaccine(clinic_id, vaccine)
            .ok()
            .and_then(|(c, v)| self.clinics[c as usize].stock.get(&v))
            .is_some_and(|s| s.batches.contains_key(batch))
    }

    pub fn vaccine_known(&self, name: &str) -> bool {
        self.vaccine_index.contains_key(name)
    }

    /// Recomputes every counter from the appointments and checks invariants 1 and 2 of
    /// ARCHITECTURE.md and the shard totals. O(state): for tests and the replay check.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut pending = 0u64;
        let mut confirmed = 0u64;
        for (ci, c) in self.clinics.iter().enumerate() {
            let mut per_slot = vec![[0u32; 5]; c.slots.len()];
            let mut per_vaccine: FxHashMap<VaccineIdx, i64> = FxHashMap::default();
            for seq in &c.appointments {
                let a = &self.appointments[seq];
                if a.clinic as usize != ci {
                    return Err(format!("appointment {seq} listed under the wrong clinic"));
                }
                let counters = &mut per_slot[a.slot as usize];
                match a.status {
                    Status::Pending => counters[0] += 1,
                    Status::Confirmed => counters[1] += 1,
                    Status::Administered => counters[2] += 1,
                    Status::NoShow => counters[3] += 1,
                    _ => {}
                }
                if a.rebook_priority
                    && matches!(
                        a.status,
                        Status::Pending | Status::Confirmed | Status::Administered | Status::NoShow
                    )
                {
                    counters[4] += 1;
                }
                if a.status.is_active() {
                    *per_vaccine.entry(a.vaccine).or_default() += 1;
                }
                pending += u64::from(a.status == Status::Pending);
                confirmed += u64::from(a.status == Status::Confirmed);
            }
            for (s, counters) in c.slots.iter().zip(&per_slot) {
                let expect = [
                    s.pending,
                    s.confirmed,
                    s.administered,
                    s.no_show,
                    s.priority_taken,
                ];
                if *counters != expect {
                    return Err(format!(
                        "slot {}/{}: counters {expect:?}, appointments say {counters:?}",
                        c.id, s.id
                    ));
                }
                if s.cancelled && (s.pending != 0 || s.confirmed != 0) {
                    return Err(format!(
                        "cancelled slot {}/{} still holds seats",
                        c.id, s.id
                    ));
                }
                if !s.cancelled && s.remaining() + s.taken() != s.capacity {
                    return Err(format!(
                        "slot {}/{}: counters do not sum to capacity",
                        c.id, s.id
                    ));
                }
                if s.taken() > s.capacity {
                    return Err(format!("slot {}/{} oversold", c.id, s.id));
                }
            }
            for (v, stock) in &c.stock {
                let active = per_vaccine.get(v).copied().unwrap_or(0);
                if stock.reserved != active {
                    return Err(format!(
                        "clinic {} vaccine {v}: reserved {} but {active} active",
                        c.id, stock.reserved
                    ));
                }
                let batches: i64 = stock.batches.values().map(|b| b.on_hand).sum();
                if batches != stock.on_hand || stock.batches.values().any(|b| b.on_hand < 0) {
                    return Err(format!(
                        "clinic {} vaccine {v}: on_hand disagrees with batches",
                        c.id
                    ));
                }
            }
        }
        if pending != self.counts.pending || confirmed != self.counts.confirmed {
            return Err(format!(
                "shard totals pending {} confirmed {}, appointments say {pending} {confirmed}",
                self.counts.pending, self.counts.confirmed
            ));
        }
        if self.timers.len() < pending as usize {
            return Err("a pending hold has no deadline in the queue".into());
        }
        Ok(())
    }
}

fn is_live_deadline(appointments: &AppointmentTable, seq: u64, deadline: UnixMs) -> bool {
    appointments
        .get(&seq)
        .is_some_and(|a| a.status == Status::Pending && a.expires_at_ms == Some(deadline))
}
