//! The booking saga: `POST /v1/appointments` touches the citizen's shard and the clinic's
//! shard, so it is a saga with explicit compensation, never a lock held across shards.
//!
//! 1. citizen step (citizen shard): today it reads the citizen's record; the citizen-saga
//!    work turns it into the claim that enforces one active appointment per citizen, with its
//!    own compensation (release the claim).
//! 2. hold (clinic shard): seat and dose in one single-writer step, with a deadline.
//! 3. checks while held: the eligibility rules.
//! 4. answer. On a failure after the hold, compensate in reverse: reject the hold, which
//!    returns the seat and the dose.
//!
//! Every step is idempotent by appointment id, so a retried compensation converges.

use crate::command::Command;
use crate::command::{Hold, MarkForReview, Reject};
use crate::error::{DomainError, EngineError};
use crate::external::{ExternalRequest, ExternalVerdict, OutagePolicy};
use crate::journal::Durable;
use crate::model::CitizenRecord;
use crate::node::Node;
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

impl Node {
    /// Books an appointment (see the module's documentation) and answers once everything it
    /// depends on is durable.
    pub async fn book(&self, request: BookRequest) -> Result<AppointmentView, EngineError> {
        let (outcome, durable) = self.book_deferred(request).await;
        for d in durable {
            d.wait().await?;
        }
        outcome
    }

    /// [`Node::book`] without waiting for the log: the outcome, and what must be durable
    /// before it may be told (the hold, a refusal's barrier, a compensation).
    pub async fn book_deferred(
        &self,
        request: BookRequest,
    ) -> (Result<AppointmentView, EngineError>, Vec<Durable>) {
        let clinic_shard = self.clinic_shard(&request.clinic_id);
        let mut durable = Vec::with_capacity(2);

        // Step 1: the citizen.
        let citizen = match self.citizen(&request.citizen_id).await {
            Ok(citizen) => citizen,
            Err(e) => return (Err(e), durable),
        };

        // Step 2: the hold.
        let hold = Command::Hold(Hold {
            clinic_id: request.clinic_id,
            slot_id: request.slot_id,
            vaccine: request.vaccine.clone(),
            citizen_id: request.citizen_id,
            hold_ms: request.hold_ms,
            rebook_priority: false,
        });
        let (appointment, context) = match self.exec_deferred(clinic_shard, hold).await {
            Err(e) => return (Err(e), durable),
            Ok((outcome, stored)) => {
                durable.push(stored);
                match outcome {
                    Ok(Output::Held(appointment, context)) => (appointment, context),
                    Ok(other) => unreachable!("a hold answers Held, got {other:?}"),
                    Err(refused) => return (Err(EngineError::Domain(refused)), durable),
                }
            }
        };

        // Step 3: checks while the seat and the dose are held.
        let mut reasons = crate::eligibility::check(&request.vaccine, citizen.as_deref(), &context);
        let mut refusal = None;
        if let (true, Some(citizen)) = (reasons.is_empty(), citizen.as_deref()) {
            match self.ask_external(&request_for(&appointment, citizen)).await {
                External::Passed => return (Ok(appointment), durable),
                External::Review => {
                    let mark = Command::MarkForReview(MarkForReview {
                        seq: appointment.id.seq,
                    });
                    return match self.exec_compensation_deferred(clinic_shard, mark).await {
                        Ok((Ok(Output::Appointment(marked)), stored)) => {
                            durable.push(stored);
                            (Ok(marked), durable)
                        }
                        Ok((other, stored)) => {
                            durable.push(stored);
                            tracing::warn!(
                                ?other,
                                "marking a provisional booking answered otherwise"
                            );
                            (Ok(appointment), durable)
                        }
                        Err(e) => (Err(e), durable),
                    };
                }
                External::Refused(reason) => reasons.push(reason),
                External::Unavailable(e) => refusal = Some(e),
            }
        }
        if reasons.is_empty() && refusal.is_none() {
            return (Ok(appointment), durable);
        }

        // Compensation, in reverse.
        let reject = Command::Reject(Reject {
            seq: appointment.id.seq,
            reasons: reasons.clone(),
        });
        match self.exec_compensation_deferred(clinic_shard, reject).await {
            Ok((_, stored)) => durable.push(stored),
            // The hold still expires at its deadline, which returns the seat and the dose.
            Err(e) => {
                tracing::warn!(appointment = %appointment.id, error = %e, "rejecting an ineligible hold failed; it will expire")
            }
        }
        let error = refusal.unwrap_or(EngineError::Domain(DomainError::NotEligible { reasons }));
        (Err(error), durable)
    }

    /// Asks the external check, when one is configured, and applies the outage policy.
    async fn ask_external(&self, request: &ExternalRequest) -> External {
        let Some((check, policy)) = self.external_check() else {
            return External::Passed;
        };
        match check.check(request.clone()).await {
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

fn request_for(a: &AppointmentView, citizen: &CitizenRecord) -> ExternalRequest {
    ExternalRequest {
        citizen_id: a.citizen_id.to_string(),
        insurance_id: citizen.insurance_id.clone(),
        vaccine: a.vaccine.to_string(),
        clinic_id: a.clinic_id.to_string(),
    }
}
