//! The booking saga: `POST /v1/appointments` (and a reschedule) touches the citizen's shard
//! and the clinic's shard, so it is a saga with explicit compensation, never a lock held
//! across shards. The design, and why a crash between any two steps converges, is in
//! [`crate::claims`]; this file is the steps:
//!
//! 1. the citizen's shard: begin the Idempotency-Key and take the claim, in one message (a
//!    claim in the way is verified, and replaced when stale, before `ALREADY_BOOKED`);
//! 2. the clinic's shard: hold seat and dose and run the rules on the citizen's record, in
//!    one message;
//! 3. the external check, when configured, while held (in this task, never in an actor);
//! 4. the answer: [`Booking::finish`] binds the claim and stores the key's answer in one
//!    message, then waits until every record the answer depends on is durable.
//!
//! A failure after the claim compensates in reverse before the answer: the hold is rejected
//! (seat and dose return), then the claim is released. Every step is idempotent by attempt
//! and appointment id, so a repeated compensation converges.

use std::sync::Arc;

use crate::actor::BeginAnswer;
use crate::claims::{
    origin_of, Claim, ClaimOutcome, Origin, Settle, SettleOutcome, Stale, TakenClaim, NO_ORIGIN,
};
use crate::command::{
    Command, Hold, MarkForReview, Move, Query, QueryAnswer, SettleClaims, TakeClaim,
};
use crate::error::{DomainError, EngineError};
use crate::external::{ExternalRequest, ExternalVerdict, OutagePolicy};
use crate::failpoint;
use crate::idempotency::{Begin, Fingerprint, IdemKey, IdemOutcome, StoredResponse};
use crate::journal::Durable;
use crate::model::Status;
use crate::node::{mismatch, Node};
use crate::view::{AppointmentView, Output};

/// A citizen's request for an appointment (`POST /v1/appointments`), validated.
#[derive(Debug, Clone)]
pub struct BookRequest {
    pub clinic_id: String,
    pub slot_id: String,
    pub vaccine: String,
    pub citizen_id: String,
    pub hold_ms: i64,
}

/// A reschedule (`POST /v1/appointments/{id}/reschedule`): the appointment to move, as read
/// (its citizen, vaccine and status), and where to.
#[derive(Debug, Clone)]
pub struct RescheduleRequest {
    pub from: AppointmentView,
    pub clinic_id: String,
    pub slot_id: String,
    pub hold_ms: i64,
    /// `--reschedule-notice`: refused (`TOO_LATE`) when the old slot starts within this
    /// (0: off).
    pub notice_ms: i64,
}

/// A request's Idempotency-Key, and `home`: the shard where the caller's keys live (the
/// citizen's own shard for a citizen, so the key and the claim share one message).
#[derive(Debug, Clone)]
pub struct IdemRequest {
    pub caller: Arc<str>,
    pub key: Arc<str>,
    pub fingerprint: Fingerprint,
    pub home: u32,
}

impl IdemRequest {
    fn key(&self) -> IdemKey {
        IdemKey {
            caller: self.caller.clone(),
            key: self.key.clone(),
        }
    }

    fn origin(&self) -> Origin {
        origin_of(&self.caller, &self.key, &self.fingerprint)
    }
}

/// How a booking began.
pub enum Booked {
    /// The key's stored answer (or, when it was running, its first request's answer).
    Replay(StoredResponse),
    /// The key was used with another request.
    KeyReused,
    /// A bound was reached, or the first request with the key did not reach a decision.
    Busy,
    /// The shard that keeps the caller's keys holds as many stored answers as it may
    /// (`NodeConfig::idempotency_records_per_shard_max`): nothing was decided.
    KeysFull,
    /// The saga ran: answer its outcome through [`Booking::finish`].
    Ran(Box<Booking>),
}

/// A saga that ran, before its last step: the claim's settlement and the key's answer.
pub struct Booking {
    outcome: Result<AppointmentView, EngineError>,
    durable: Vec<Durable>,
    citizen_shard: u32,
    settle: Option<Settle>,
    idem: Option<IdemRequest>,
    /// The key lives in the citizen's shard: one message settles and stores.
    merged: bool,
}

impl Booking {
    pub fn outcome(&self) -> &Result<AppointmentView, EngineError> {
        &self.outcome
    }

    /// Settles the claim and stores `stored` under the key (`None`: forget the key, the
    /// answer is not stored), then waits until everything the outcome depends on is durable.
    /// `Err`: something could not be stored; answer 503.
    pub async fn finish(
        self,
        node: &Node,
        stored: Option<StoredResponse>,
    ) -> Result<Result<AppointmentView, EngineError>, EngineError> {
        let Booking {
            outcome,
            mut durable,
            citizen_shard,
            settle,
            idem,
            merged,
        } = self;
        let settle = SettleClaims {
            settles: settle.into_iter().collect(),
        };
        match idem {
            Some(idem) if merged => {
                let key = Some((idem.key(), stored));
                durable.push(node.finish_booking(citizen_shard, settle, key).await?);
            }
            idem => {
                if !settle.settles.is_empty() {
                    durable.push(node.finish_booking(citizen_shard, settle, None).await?);
                }
                if let Some(idem) = idem {
                    let record = node
                        .idempotency_finish_at(idem.home, idem.key(), stored)
                        .await?;
                    durable.push(record);
                }
            }
        }
        for d in durable {
            d.wait().await?;
        }
        Ok(outcome)
    }
}

/// The step that takes the claim ended the saga early, or let it go on.
enum Claimed {
    Taken(TakenClaim),
    /// The answer, and the claim's settlement to send with it.
    Done(Box<Result<AppointmentView, EngineError>>, Option<Settle>),
}

impl Claimed {
    fn done(outcome: Result<AppointmentView, EngineError>, settle: Option<Settle>) -> Claimed {
        Claimed::Done(Box::new(outcome), settle)
    }
}

/// One run of the saga: who, where, and what must be durable before the answer.
struct Saga<'a> {
    node: &'a Node,
    citizen_id: Arc<str>,
    citizen_shard: u32,
    clinic_id: String,
    slot_id: String,
    vaccine: String,
    hold_ms: i64,
    origin: Origin,
    idem: Option<IdemRequest>,
    merged: bool,
    durable: Vec<Durable>,
    /// A compensation could not reach its shard: what it should have undone stays until its
    /// own deadline, and the claim stays with it.
    stuck: bool,
    /// A waitlist offer: the entry (its number in the clinic's shard) the hold serves.
    waitlist: Option<u64>,
}

impl Node {
    /// Books (see the module's documentation). With `idem`, the key is begun on its home
    /// shard first: a replay is answered before any clinic is touched.
    pub async fn book(&self, request: BookRequest, idem: Option<IdemRequest>) -> Booked {
        self.book_as(request, idem, None).await
    }

    /// Books for a waitlist offer (see [`crate::waitlist`]): the same saga, whose hold is
    /// made only while entry `waitlist` waits, and takes it off its list in the same step.
    pub(crate) async fn book_from_waitlist(&self, request: BookRequest, waitlist: u64) -> Booked {
        self.book_as(request, None, Some(waitlist)).await
    }

    async fn book_as(
        &self,
        request: BookRequest,
        idem: Option<IdemRequest>,
        waitlist: Option<u64>,
    ) -> Booked {
        let mut saga = Saga::new(
            self,
            &request.citizen_id,
            request.clinic_id,
            request.slot_id,
            request.vaccine,
            request.hold_ms,
            idem,
        );
        saga.waitlist = waitlist;
        let take = saga.take_claim(None);
        let taken = match saga.begin(take.clone()).await {
            Err(early) => return early,
            Ok(Claimed::Done(outcome, settle)) => return Booked::Ran(saga.done(*outcome, settle)),
            Ok(Claimed::Taken(taken)) => taken,
        };
        let offer = waitlist.is_some();
        failpoint::point(if offer {
            "offer.after_claim"
        } else {
            "book.after_claim"
        })
        .await;
        let hold = saga.hold(&taken, false, None);
        let outcome = saga.hold_and_check(hold, &taken).await;
        failpoint::point(if offer {
            "offer.after_hold"
        } else {
            "book.after_hold"
        })
        .await;
        let settle = saga.settle_for(
            &taken,
            &outcome,
            SettleOutcome::Ended {
                clinic_cancelled: false,
            },
        );
        Booked::Ran(saga.done(outcome, settle))
    }

    /// Books without an Idempotency-Key and waits for the answer (tools, tests, the demo).
    pub async fn book_and_wait(
        &self,
        request: BookRequest,
    ) -> Result<AppointmentView, EngineError> {
        match self.book(request, None).await {
            Booked::Ran(booking) => booking.finish(self, None).await?,
            Booked::Replay(_) | Booked::KeyReused | Booked::Busy | Booked::KeysFull => {
                unreachable!("a booking without a key is never replayed")
            }
        }
    }

    /// Moves an appointment (docs/API.md, reschedule): the new seat and dose are secured
    /// first, the old ones return only once the new appointment exists, and every failure
    /// leaves the old appointment as it was.
    pub async fn reschedule(
        &self,
        request: RescheduleRequest,
        idem: Option<IdemRequest>,
    ) -> Booked {
        let from = request.from;
        let mut saga = Saga::new(
            self,
            &from.citizen_id,
            request.clinic_id,
            request.slot_id,
            from.vaccine.to_string(),
            request.hold_ms,
            idem,
        );
        let take = saga.take_claim(Some(from.id));
        let claimed = match saga.begin(take).await {
            Err(early) => return early,
            Ok(claimed) => claimed,
        };
        if !from.status.is_active() {
            return Booked::Ran(saga.moved_already(claimed, from.status));
        }
        let taken = match claimed {
            Claimed::Done(outcome, settle) => return Booked::Ran(saga.done(*outcome, settle)),
            Claimed::Taken(taken) => taken,
        };
        // Checked once the key is looked up, so a replay is never answered TOO_LATE.
        if request.notice_ms > 0 && from.slot_start_ms - self.now_ms() < request.notice_ms {
            let refused = EngineError::Domain(DomainError::TooLate {
                notice_s: request.notice_ms / 1000,
            });
            let settle = saga.settle_of(&taken, SettleOutcome::Restore);
            return Booked::Ran(saga.done(Err(refused), Some(settle)));
        }
        let hold = saga.hold(&taken, from.status == Status::Confirmed, Some(from.id));
        let created = match saga.hold_and_check(hold, &taken).await {
            Ok(new) => new,
            Err(e) => {
                let settle = (!saga.stuck).then(|| saga.settle_of(&taken, SettleOutcome::Restore));
                return Booked::Ran(saga.done(Err(e), settle));
            }
        };
        failpoint::point("reschedule.after_hold").await;
        Booked::Ran(saga.release_old(&taken, from.id, created).await)
    }

    /// Asks the external check, when one is configured, and applies the outage policy.
    async fn ask_external(&self, request: ExternalRequest) -> External {
        let Some((check, policy)) = self.external_check() else {
            return External::Passed;
        };
        match check.check(request).await {
            ExternalVerdict::Eligible => External::Passed,
            ExternalVerdict::NotEligible { reason } => {
                External::Refused(format!("external:{reason}"))
            }
            ExternalVerdict::Unavailable { retry_after_s, why } => match policy {
                OutagePolicy::Provisional => External::Review,
                OutagePolicy::Reject => {
                    tracing::info!(%why, "eligibility check unavailable; booking refused");
                    External::Unavailable(EngineError::DependencyUnavailable {
                        dependency: "eligibility".to_string(),
                        retry_after_s,
                    })
                }
            },
        }
    }
}

/// What the external check means for one booking.
enum External {
    Passed,
    /// Unavailable, and the policy is to book for review.
    Review,
    Refused(String),
    Unavailable(EngineError),
}

impl<'a> Saga<'a> {
    fn new(
        node: &'a Node,
        citizen_id: &str,
        clinic_id: String,
        slot_id: String,
        vaccine: String,
        hold_ms: i64,
        idem: Option<IdemRequest>,
    ) -> Self {
        let citizen_shard = node.citizen_shard(citizen_id);
        let merged = idem.as_ref().is_some_and(|i| i.home == citizen_shard);
        Saga {
            node,
            citizen_id: citizen_id.into(),
            citizen_shard,
            clinic_id,
            slot_id,
            vaccine,
            hold_ms,
            origin: idem.as_ref().map_or(NO_ORIGIN, IdemRequest::origin),
            idem,
            merged,
            durable: Vec::with_capacity(4),
            stuck: false,
            waitlist: None,
        }
    }

    fn clinic_shard(&self) -> u32 {
        self.node.clinic_shard(&self.clinic_id)
    }

    fn take_claim(&self, moving: Option<crate::ids::AppointmentId>) -> TakeClaim {
        TakeClaim {
            citizen_id: self.citizen_id.to_string(),
            clinic_shard: self.clinic_shard(),
            origin: self.origin,
            expires_at_ms: self.node.now_ms() + self.hold_ms,
            replace: None,
            moving,
            offer: self.waitlist.is_some(),
        }
    }

    fn hold(
        &self,
        taken: &TakenClaim,
        confirmed: bool,
        from: Option<crate::ids::AppointmentId>,
    ) -> Hold {
        Hold {
            rebook_priority: taken.rebook_priority,
            citizen: Some(taken.record.clone()),
            claim: taken.attempt,
            not_after_ms: Some(taken.not_after_ms),
            confirmed,
            rescheduled_from: from,
            waitlist: self.waitlist,
            ..Hold::new(
                &self.clinic_id,
                &self.slot_id,
                &self.vaccine,
                &self.citizen_id,
                self.hold_ms,
            )
        }
    }

    fn done(
        self,
        outcome: Result<AppointmentView, EngineError>,
        settle: Option<Settle>,
    ) -> Box<Booking> {
        Box::new(Booking {
            outcome,
            durable: self.durable,
            citizen_shard: self.citizen_shard,
            settle,
            idem: self.idem,
            merged: self.merged,
        })
    }

    fn settle_of(&self, taken: &TakenClaim, outcome: SettleOutcome) -> Settle {
        Settle {
            citizen_id: self.citizen_id.clone(),
            attempt: taken.attempt,
            outcome,
        }
    }

    /// The claim's settlement for a create's outcome: bound to the appointment, or
    /// `on_failure` (unless the hold could not be undone: then its own end settles it).
    fn settle_for(
        &self,
        taken: &TakenClaim,
        outcome: &Result<AppointmentView, EngineError>,
        on_failure: SettleOutcome,
    ) -> Option<Settle> {
        match outcome {
            Ok(a) => Some(self.settle_of(
                taken,
                SettleOutcome::Bound {
                    seq: a.id.seq,
                    expires_at_ms: a.expires_at_ms,
                },
            )),
            // The hold could not be undone: it ends at its deadline, and that settles it.
            Err(_) if self.stuck => None,
            Err(_) => Some(self.settle_of(taken, on_failure)),
        }
    }

    // ---- a reschedule's own steps ------------------------------------------------------

    /// A reschedule of an appointment that has ended: only a retry of the reschedule that
    /// moved it may go on, and it is answered the new appointment (found by its claim).
    /// Anything else is `INVALID_TRANSITION`, and a claim taken for it is let go.
    fn moved_already(self, claimed: Claimed, status: Status) -> Box<Booking> {
        let refused = EngineError::Domain(DomainError::InvalidTransition { status });
        match claimed {
            Claimed::Done(outcome, settle) if outcome.is_ok() => self.done(*outcome, settle),
            Claimed::Done(_, settle) => self.done(Err(refused), settle),
            Claimed::Taken(taken) => {
                let ended = SettleOutcome::Ended {
                    clinic_cancelled: false,
                };
                let settle = self.settle_of(&taken, ended);
                self.done(Err(refused), Some(settle))
            }
        }
    }

    /// The new appointment exists: now the old one goes (`Move`), and the claim is bound to
    /// the new one. When the old one cannot go, the new one is undone.
    async fn release_old(
        mut self,
        taken: &TakenClaim,
        old: crate::ids::AppointmentId,
        created: AppointmentView,
    ) -> Box<Booking> {
        let moved = Command::Move(Move {
            seq: old.seq,
            to: created.id,
        });
        let outcome = match self.node.exec_compensation_deferred(old.shard, moved).await {
            Ok((Ok(_), stored)) => {
                self.durable.push(stored);
                failpoint::point("reschedule.after_move").await;
                let bound = SettleOutcome::Bound {
                    seq: created.id.seq,
                    expires_at_ms: created.expires_at_ms,
                };
                let settle = self.settle_of(taken, bound);
                return self.done(Ok(created), Some(settle));
            }
            Ok((Err(refused), stored)) => {
                self.durable.push(stored);
                EngineError::Domain(refused)
            }
            Err(e) => e,
        };
        let rejected = self.reject(created.id).await;
        self.durable.extend(rejected);
        let settle = match &outcome {
            // It ended meanwhile (a cancel won the race): the citizen has nothing left.
            EngineError::Domain(DomainError::InvalidTransition { .. }) => SettleOutcome::Ended {
                clinic_cancelled: false,
            },
            _ => SettleOutcome::Restore,
        };
        let settle = (!self.stuck).then(|| self.settle_of(taken, settle));
        self.done(Err(outcome), settle)
    }

    // ---- step 1: the claim -------------------------------------------------------------

    /// Begins the key (on its home shard, or with the claim when that is the same shard)
    /// and takes the claim. `Err` ends the saga before it began (replays, refusals).
    async fn begin(&mut self, take: TakeClaim) -> Result<Claimed, Booked> {
        if !self.node.is_reconciled() {
            // Claims are being reconciled after recovery: a claim taken now could be judged
            // an orphan by it (its appointment live, its claim not yet read), and its booking
            // rejected. Nothing is begun; the client retries once the node is ready.
            self.idem = None;
            let recovering = EngineError::Recovering {
                shard: self.citizen_shard,
            };
            return Ok(Claimed::done(Err(recovering), None));
        }
        let key = match (&self.idem, self.merged) {
            (Some(idem), true) => Some((idem.key(), idem.fingerprint)),
            (Some(idem), false) => {
                let outcome = self
                    .node
                    .idempotency_begin_at(idem.home, idem.key(), idem.fingerprint)
                    .await;
                match outcome {
                    Ok(IdemOutcome::Begin(Begin::Proceed)) => None,
                    Ok(other) => return Err(from_key(other)),
                    Err(e) => return Ok(Claimed::done(Err(e), None)),
                }
            }
            (None, _) => None,
        };
        let answer = self
            .node
            .begin_booking(self.citizen_shard, key, take.clone())
            .await;
        let (decided, stored) = match answer {
            Ok(BeginAnswer::Claim(applied)) => *applied,
            Ok(BeginAnswer::Key(outcome)) => return Err(from_key(outcome)),
            Ok(BeginAnswer::Wait(first)) => {
                return Err(first.await.map_or(Booked::Busy, from_key));
            }
            Ok(BeginAnswer::Refused(e)) | Err(e) => {
                // The key was not begun (the message was refused before it), unless it
                // lives elsewhere: then it is forgotten by `finish(None)`.
                if self.merged {
                    self.idem = None;
                }
                return Ok(Claimed::done(Err(e), None));
            }
        };
        self.durable.push(stored);
        match decided {
            Ok(Output::Claim(outcome)) => Ok(self.claimed(outcome, take).await),
            Ok(other) => Ok(Claimed::done(
                Err(unexpected(self.citizen_shard, other)),
                None,
            )),
            Err(refused) => Ok(Claimed::done(Err(refused.into()), None)),
        }
    }

    async fn claimed(&mut self, outcome: ClaimOutcome, take: TakeClaim) -> Claimed {
        match outcome {
            ClaimOutcome::Taken(taken) => Claimed::Taken(taken),
            ClaimOutcome::Held { claim, same_origin } => {
                self.held_by(claim, same_origin, take).await
            }
        }
    }

    /// Another claim holds the citizen: verify it. The retried booking's own appointment is
    /// answered again; a stale claim is replaced; a live one is `ALREADY_BOOKED` (after the
    /// clinic's checks that come before it).
    async fn held_by(&mut self, claim: Claim, same_origin: bool, take: TakeClaim) -> Claimed {
        let holder = match claim.appointment() {
            Some(id) => self.node.get_appointment(id).await,
            None if same_origin || self.node.now_ms() > claim.not_after_ms => {
                self.node.find_by_claim(&self.citizen_id, &claim).await
            }
            // A booking in flight for this citizen.
            None => return self.already_booked(None).await,
        };
        let holder = match holder {
            Ok(holder) => holder,
            Err(e) => return Claimed::done(Err(e), None),
        };
        let clinic_cancelled = holder
            .as_ref()
            .is_some_and(|a| a.status == Status::ClinicCancelled);
        let administered = holder.as_ref().and_then(|a| a.dose.clone());
        if let Some(a) = holder.filter(|a| a.status.is_active()) {
            let bound = Settle {
                citizen_id: self.citizen_id.clone(),
                attempt: claim.attempt,
                outcome: SettleOutcome::Bound {
                    seq: a.id.seq,
                    expires_at_ms: a.expires_at_ms,
                },
            };
            if same_origin && a.rescheduled_from == take.moving {
                // A retry (after a crash) of the request that made it.
                return Claimed::done(Ok(a), Some(bound));
            }
            let repair = claim.seq.is_none().then_some(bound);
            return self.already_booked(repair).await;
        }
        // Stale: its appointment ended (or was never made). Replace it in one step.
        let take = TakeClaim {
            replace: Some(Stale {
                attempt: claim.attempt,
                clinic_cancelled,
                administered,
            }),
            ..take
        };
        let command = Command::TakeClaim(take);
        match self.node.exec_deferred(self.citizen_shard, command).await {
            Ok((decided, stored)) => {
                self.durable.push(stored);
                match decided {
                    Ok(Output::Claim(ClaimOutcome::Taken(taken))) => Claimed::Taken(taken),
                    // Another booking replaced it first.
                    Ok(Output::Claim(ClaimOutcome::Held { .. })) => self.already_booked(None).await,
                    Ok(other) => Claimed::done(Err(unexpected(self.citizen_shard, other)), None),
                    Err(refused) => Claimed::done(Err(refused.into()), None),
                }
            }
            Err(e) => Claimed::done(Err(e), None),
        }
    }

    /// `ALREADY_BOOKED`, unless a check the contract puts before it fails.
    async fn already_booked(&self, repair: Option<Settle>) -> Claimed {
        let shard = self.clinic_shard();
        let query = Query::Bookable {
            clinic_id: self.clinic_id.clone(),
            slot_id: self.slot_id.clone(),
            vaccine: self.vaccine.clone(),
            now_ms: self.node.now_ms(),
        };
        let error = match self.node.query(shard, query).await {
            Ok(QueryAnswer::Bookable(Err(refused))) => refused.into(),
            Ok(QueryAnswer::Bookable(Ok(()))) => DomainError::AlreadyBooked.into(),
            Ok(other) => mismatch(shard, &other),
            Err(e) => e,
        };
        Claimed::done(Err(error), repair)
    }

    // ---- steps 2 and 3: the hold and the checks while held -------------------------------

    /// Holds, then asks the external check. `Ok((appointment, _))`: held and eligible;
    /// `Err`: nothing is held any more (or its own deadline will end it).
    async fn hold_and_check(
        &mut self,
        hold: Hold,
        taken: &TakenClaim,
    ) -> Result<AppointmentView, EngineError> {
        let shard = self.clinic_shard();
        let (decided, stored) = self.node.exec_deferred(shard, Command::Hold(hold)).await?;
        self.durable.push(stored);
        let appointment = match decided {
            Ok(Output::Appointment(a)) => a,
            Ok(other) => return Err(unexpected(shard, other)),
            Err(DomainError::ClaimLapsed) => return Err(EngineError::Overloaded { shard }),
            Err(refused) => return Err(refused.into()),
        };
        let request = ExternalRequest {
            citizen_id: self.citizen_id.to_string(),
            insurance_id: taken.record.insurance_id.clone(),
            vaccine: self.vaccine.clone(),
            clinic_id: self.clinic_id.clone(),
        };
        let error = match self.node.ask_external(request).await {
            External::Passed => return Ok(appointment),
            External::Review => return self.mark_for_review(appointment).await,
            External::Refused(reason) => EngineError::Domain(DomainError::NotEligible {
                reasons: vec![reason],
            }),
            External::Unavailable(e) => e,
        };
        let rejected = self.reject(appointment.id).await;
        self.durable.extend(rejected);
        Err(error)
    }

    async fn mark_for_review(
        &mut self,
        appointment: AppointmentView,
    ) -> Result<AppointmentView, EngineError> {
        let mark = Command::MarkForReview(MarkForReview {
            seq: appointment.id.seq,
        });
        let (decided, stored) = self
            .node
            .exec_compensation_deferred(appointment.id.shard, mark)
            .await?;
        self.durable.push(stored);
        match decided {
            Ok(Output::Appointment(marked)) => Ok(marked),
            _ => Ok(appointment),
        }
    }

    /// Compensation: the hold goes (seat and dose return). Answers what to wait for; when
    /// the shard cannot be reached the hold ends at its deadline instead.
    async fn reject(&mut self, id: crate::ids::AppointmentId) -> Option<Durable> {
        match self.node.reject(id).await {
            Ok(stored) => Some(stored),
            Err(e) => {
                tracing::warn!(appointment = %id, error = %e, "a compensation failed; the hold ends at its deadline");
                self.stuck = true;
                None
            }
        }
    }
}

/// What a key that was not new answers.
fn from_key(outcome: IdemOutcome) -> Booked {
    match outcome {
        IdemOutcome::Begin(Begin::Replay(stored)) | IdemOutcome::Finished(Some(stored)) => {
            Booked::Replay(stored)
        }
        IdemOutcome::Begin(Begin::Mismatch) => Booked::KeyReused,
        IdemOutcome::Begin(Begin::Proceed) => {
            tracing::error!("a key began twice");
            Booked::Busy
        }
        IdemOutcome::Begin(Begin::Full) => Booked::KeysFull,
        // Unreadable: the stored answer is there but could not be read; retrying is safe,
        // running the booking again is not.
        IdemOutcome::Begin(Begin::Queued | Begin::Unreadable) | IdemOutcome::Finished(None) => {
            Booked::Busy
        }
    }
}

fn unexpected(shard: u32, output: Output) -> EngineError {
    tracing::error!(
        shard,
        ?output,
        "a shard answered a saga step with the wrong kind of answer"
    );
    EngineError::Unavailable { shard }
}
