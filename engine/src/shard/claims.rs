//! The citizen side of a shard, decided and applied like the clinic side: records, the one
//! claim per citizen, the index of a citizen's appointments. The design (and why it
//! converges after a crash) is in [`crate::claims`].

use std::sync::Arc;

use super::decide::{Decision, Reply};
use super::ShardState;
use crate::claims::{
    CitizenEntry, Claim, ClaimOutcome, Settle, SettleOutcome, TakenClaim, SAGA_BUDGET_MS,
};
use crate::clock::UnixMs;
use crate::command::{PutCitizen, SettleClaims, TakeClaim};
use crate::error::DomainError;
use crate::event::Event;
use crate::ids::AppointmentId;
use crate::model::{CitizenRecord, DoseRecord};

impl ShardState {
    pub(super) fn decide_put_citizen(
        &self,
        PutCitizen { citizen_id, record }: &PutCitizen,
    ) -> Decision {
        match self.citizens.get(citizen_id.as_str()) {
            Some(existing) if existing.has_record(record, &self.regions) => {
                Decision::ok(vec![], Reply::Ack)
            }
            _ => Decision::ok(
                vec![Event::CitizenPut {
                    citizen_id: citizen_id.as_str().into(),
                    record: Arc::new(record.clone()),
                }],
                Reply::Ack,
            ),
        }
    }

    /// Claims the citizen for a new attempt, unless another attempt holds it (answered, not
    /// refused: the saga verifies that claim before saying `ALREADY_BOOKED`).
    pub(super) fn decide_take_claim(&self, c: &TakeClaim, now_ms: UnixMs) -> Decision {
        let Some(entry) = self.citizens.get(c.citizen_id.as_str()) else {
            return Decision::err(DomainError::NotEligible {
                reasons: vec!["unknown_citizen".to_string()],
            });
        };
        let mut priority = entry.rebook_priority;
        let previous = match entry.claim.as_deref() {
            None => None,
            Some(held)
                if c.replace
                    .as_ref()
                    .is_some_and(|stale| stale.attempt == held.attempt) =>
            {
                priority |= c
                    .replace
                    .as_ref()
                    .is_some_and(|stale| stale.clinic_cancelled);
                None
            }
            Some(held) if c.moving.is_some() && c.moving == held.appointment() => {
                if held.previous.is_some() {
                    // Another reschedule of the same appointment is under way.
                    return Decision::err(DomainError::AlreadyBooked);
                }
                Some(Box::new(held.clone()))
            }
            Some(held) => {
                let same_origin = c.origin != crate::claims::NO_ORIGIN && c.origin == held.origin;
                return Decision::ok(
                    vec![],
                    Reply::Claim(ClaimOutcome::Held {
                        claim: held.summary(),
                        same_origin,
                    }),
                );
            }
        };
        let claim = Claim {
            attempt: self.next_attempt,
            clinic_shard: c.clinic_shard,
            origin: c.origin,
            seq: None,
            expires_at_ms: Some(c.expires_at_ms),
            not_after_ms: now_ms + SAGA_BUDGET_MS,
            priority,
            // A reschedule's claim is journaled at once: it carries the moved appointment's
            // claim, which a crash must not lose. So is an offer's: its hold takes the
            // waitlist entry off, and a crash after the hold must find the claim to bind (a
            // lost tentative claim's hold would be rejected, and the entry lost with it).
            tentative: c.moving.is_none() && !c.offer,
            previous,
        };
        let mut record = entry.record(&self.regions);
        let mut events = Vec::with_capacity(2);
        events.extend(stale_dose(c, entry, &mut record));
        let taken = ClaimOutcome::Taken(TakenClaim {
            attempt: claim.attempt,
            record: Arc::new(record),
            rebook_priority: priority,
            not_after_ms: claim.not_after_ms,
        });
        events.push(Event::ClaimTaken {
            citizen_id: c.citizen_id.as_str().into(),
            claim: Box::new(claim),
        });
        Decision::ok(events, Reply::Claim(taken))
    }

    pub(super) fn decide_settle_claims(&self, SettleClaims { settles }: &SettleClaims) -> Decision {
        let events = settles
            .iter()
            .filter_map(|s| self.settle_event(s))
            .collect();
        Decision::ok(events, Reply::Ack)
    }

    /// The event `settle` makes, if it names the citizen's claim and changes it. Binding a
    /// tentative claim journals the whole claim, bound (`ClaimTaken`), so recovery needs no
    /// earlier record of it; any other end of a tentative claim is not journaled.
    fn settle_event(&self, settle: &Settle) -> Option<Event> {
        if let SettleOutcome::Administered { .. } = settle.outcome {
            return self.dose_event(settle);
        }
        let claim = self
            .citizens
            .get(&*settle.citizen_id)
            .and_then(|e| e.claim.as_deref())
            .filter(|c| c.attempt == settle.attempt)?;
        if !claim.changed_by(&settle.outcome) {
            return None;
        }
        let citizen_id = settle.citizen_id.clone();
        Some(match &settle.outcome {
            SettleOutcome::Bound { seq, expires_at_ms } if claim.tentative => Event::ClaimTaken {
                citizen_id,
                claim: Box::new(Claim {
                    seq: Some(*seq),
                    expires_at_ms: *expires_at_ms,
                    previous: None,
                    tentative: false,
                    ..claim.clone()
                }),
            },
            outcome => Event::ClaimSettled {
                citizen_id,
                attempt: settle.attempt,
                outcome: outcome.clone(),
                tentative: claim.tentative,
            },
        })
    }

    /// The event an administration's notice makes: the dose joins the history even when the
    /// claim has moved on (a new booking replaced it first), so it is decided apart from the
    /// claim; a no-op once the dose is there and the claim is not the notice's.
    fn dose_event(&self, settle: &Settle) -> Option<Event> {
        let SettleOutcome::Administered { vaccine, date } = &settle.outcome else {
            return None;
        };
        let entry = self.citizens.get(&*settle.citizen_id)?;
        let claim = entry
            .claim
            .as_deref()
            .filter(|c| c.attempt == settle.attempt);
        let dose = DoseRecord {
            vaccine: vaccine.clone(),
            date: *date,
        };
        if claim.is_none() && entry.has_dose(&dose) {
            return None;
        }
        Some(Event::ClaimSettled {
            citizen_id: settle.citizen_id.clone(),
            attempt: settle.attempt,
            outcome: settle.outcome.clone(),
            // The dose must survive a restart: journaled even when it ends a tentative claim.
            tentative: false,
        })
    }

    /// The claim notice an applied event of this (clinic) shard sends once durable: the
    /// appointment's claim is confirmed or ended. A rejection sends none: it is only ever a
    /// saga's compensation, and the saga settles its claim itself (a notice could overtake
    /// a reschedule's restore of the old claim).
    pub fn notice_for(&self, event: &Event) -> Option<Settle> {
        let (seq, outcome) = match event {
            // A confirm changes a claim only when it spends a priority: the claim stays bound
            // to the same appointment either way.
            Event::AppointmentConfirmed { seq, .. }
                if self
                    .appointments
                    .get(seq)
                    .is_some_and(|a| a.rebook_priority) =>
            {
                (*seq, SettleOutcome::Confirmed)
            }
            Event::AppointmentConfirmed { .. } => return None,
            Event::AppointmentReleased { seq }
            | Event::AppointmentExpired { seq }
            | Event::AppointmentCancelled { seq }
            | Event::AppointmentMoved { seq, .. }
            // A no-show ends the claim like a cancel: the citizen may book again, without
            // a rebooking priority (the clinic did not cancel).
            | Event::AppointmentNoShow { seq } => (
                *seq,
                SettleOutcome::Lapsed {
                    clinic_cancelled: false,
                },
            ),
            Event::AppointmentClinicCancelled { seq } => (
                *seq,
                SettleOutcome::Lapsed {
                    clinic_cancelled: true,
                },
            ),
            // The claim ends and the dose joins the citizen's history.
            Event::AppointmentAdministered { seq, .. } => {
                let dose = self.dose_of(self.appointments.get(seq)?)?;
                (
                    *seq,
                    SettleOutcome::Administered {
                        vaccine: dose.vaccine,
                        date: dose.date,
                    },
                )
            }
            // Listed one by one, so a new kind of change must say whether it settles a claim.
            Event::AppointmentReserved(_)
            | Event::AppointmentRejected { .. }
            | Event::AppointmentAtRisk { .. }
            | Event::AppointmentNeedsReview { .. }
            | Event::VaccinePut { .. }
            | Event::ClinicPut { .. }
            | Event::StockReceived { .. }
            | Event::StockAdjusted { .. }
            | Event::SlotPut { .. }
            | Event::SlotCancelled { .. }
            | Event::CitizenPut { .. }
            | Event::ClaimTaken { .. }
            | Event::ClaimSettled { .. }
            | Event::WaitlistJoined { .. }
            | Event::WaitlistLeft { .. }
            | Event::WaitlistRestored { .. } => return None,
        };
        let a = self.appointments.get(&seq)?;
        (a.claim != 0).then(|| Settle {
            citizen_id: a.citizen.clone(),
            attempt: a.claim,
            outcome,
        })
    }

    // ---- apply -----------------------------------------------------------------------

    pub(super) fn put_citizen(&mut self, citizen_id: &str, record: &CitizenRecord) {
        match self.citizens.get_mut(citizen_id) {
            Some(entry) => entry.set_record(record, &mut self.regions),
            None => {
                let entry = Box::new(CitizenEntry::new(record, &mut self.regions));
                self.citizens.insert(citizen_id.into(), entry);
            }
        }
    }

    pub(super) fn claim_taken(&mut self, citizen_id: &str, claim: &Claim) {
        self.next_attempt = self.next_attempt.max(claim.attempt + 1);
        let entry = self
            .citizens
            .get_mut(citizen_id)
            .expect("a claim is taken for a known citizen");
        // A priority the claim was taken with is the citizen's until spent (it may come
        // from the replaced claim's clinic cancellation, ahead of its notice).
        entry.rebook_priority |= claim.priority;
        // Binding a tentative claim journals it whole (`settle_event`): index its appointment.
        if let Some(id) = claim.appointment() {
            entry.index_appointment(id);
        }
        entry.claim = Some(Box::new(claim.clone()));
    }

    pub(super) fn claim_settled(
        &mut self,
        citizen_id: &str,
        attempt: u64,
        outcome: &SettleOutcome,
    ) {
        let entry = self
            .citizens
            .get_mut(citizen_id)
            .expect("a claim is settled for a known citizen");
        if let SettleOutcome::Administered { vaccine, date } = outcome {
            entry.add_dose(&DoseRecord {
                vaccine: vaccine.clone(),
                date: *date,
            });
            if entry.claim.as_ref().is_some_and(|c| c.attempt == attempt) {
                entry.claim = None;
            }
            return;
        }
        let claim = entry
            .claim
            .as_deref_mut()
            .filter(|c| c.attempt == attempt)
            .expect("a settle names the citizen's claim");
        match outcome {
            SettleOutcome::Bound { seq, expires_at_ms } => {
                claim.seq = Some(*seq);
                claim.expires_at_ms = *expires_at_ms;
                claim.previous = None;
                let id = AppointmentId {
                    shard: claim.clinic_shard,
                    seq: *seq,
                };
                entry.index_appointment(id);
            }
            SettleOutcome::Confirmed => {
                claim.priority = false;
                entry.rebook_priority = false;
            }
            // A reschedule's new appointment that ends before the move completed gives the
            // citizen back the claim of the old one.
            SettleOutcome::Lapsed { .. } if claim.previous.is_some() => {
                entry.claim = claim.previous.take();
            }
            SettleOutcome::Ended { clinic_cancelled }
            | SettleOutcome::Lapsed { clinic_cancelled } => {
                entry.claim = None;
                entry.rebook_priority |= *clinic_cancelled;
            }
            SettleOutcome::Restore => entry.claim = claim.previous.take(),
            // Applied before the claim is looked up (it need not be the claim's).
            SettleOutcome::Administered { .. } => {}
        }
    }

    // ---- queries ---------------------------------------------------------------------

    pub fn citizen(&self, citizen_id: &str) -> Option<Arc<CitizenRecord>> {
        self.citizens
            .get(citizen_id)
            .map(|e| Arc::new(e.record(&self.regions)))
    }

    /// The ids of the citizen's appointments, oldest first.
    pub fn citizen_appointment_ids(&self, citizen_id: &str) -> Vec<AppointmentId> {
        self.citizens
            .get(citizen_id)
            .map(|e| e.appointments().to_vec())
            .unwrap_or_default()
    }

    /// Every claim of this shard's citizens.
    pub fn claims(&self) -> Vec<(Arc<str>, Claim)> {
        self.citizens
            .iter()
            .filter_map(|(id, e)| e.claim.as_deref().map(|c| (Arc::from(&**id), c.clone())))
            .collect()
    }
}

/// The replaced claim's appointment was administered and its notice has not arrived: its
/// dose joins the history first (journaled, like the notice's), and the record the new
/// booking's rules read has it.
fn stale_dose(c: &TakeClaim, entry: &CitizenEntry, record: &mut CitizenRecord) -> Option<Event> {
    let stale = c.replace.as_ref()?;
    let dose = stale.administered.clone().filter(|d| !entry.has_dose(d))?;
    record.doses.push(dose.clone());
    Some(Event::ClaimSettled {
        citizen_id: c.citizen_id.as_str().into(),
        attempt: stale.attempt,
        outcome: SettleOutcome::Administered {
            vaccine: dose.vaccine,
            date: dose.date,
        },
        tentative: false,
    })
}
