//! Keeping the citizens' claims in step with their appointments (the design is in
//! [`crate::claims`]):
//!
//! - while running, a clinic's shard sends a [`Settle`] notice for every durable change of
//!   an appointment that ends it (or spends a priority); the settler
//!   ([`crate::notices`]) carries them to the citizens' shards in batches, off every shard's
//!   message path, through [`Node::settle`];
//! - after recovery, [`Node::reconcile_claims`] settles every claim against its clinic's
//!   shard once, so a crash between two steps of a booking, a confirm, a cancel or a
//!   reschedule leaves no claim without a live appointment and none of a reschedule's two
//!   appointments live beside the other;
//! - [`Node::check_claims`] recomputes the rule across shards (tests and the harness).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::join_all;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::claims::{Claim, Settle, SettleOutcome};
use crate::command::{Command, Query, QueryAnswer, Reject, SettleClaims};
use crate::error::EngineError;
use crate::ids::AppointmentId;
use crate::journal::Durable;
use crate::model::Status;
use crate::node::{mismatch, Node};
use crate::view::{AppointmentOutcome, AppointmentView};

/// Citizens' shards reconciled at once: while one shard's settlements are decided on this
/// task, the other's claims and outcomes are read on the shards' threads. Memory holds two
/// shards' claims (tens of thousands each).
const RECONCILE_SHARDS_AT_ONCE: usize = 2;

impl Node {
    /// Sends `settles` to their citizens' shards, one message per shard. Not bounded by the
    /// shards' in-flight bound: it ends work already done. A failure is logged; the claims
    /// are settled when next looked at.
    pub(crate) async fn settle(&self, settles: Vec<Settle>) {
        for settle in &settles {
            match settle.outcome {
                SettleOutcome::Confirmed => crate::failpoint::point("settle.confirmed").await,
                SettleOutcome::Lapsed { .. } => crate::failpoint::point("settle.lapsed").await,
                SettleOutcome::Administered { .. } => {
                    crate::failpoint::point("settle.administered").await
                }
                _ => {}
            }
        }
        for (shard, command) in self.settle_commands(settles) {
            if let Err(e) = self.exec_compensation_deferred(shard, command).await {
                tracing::warn!(shard, error = %e, "claim notices not delivered");
            }
        }
    }

    /// `settles` as one command per citizens' shard.
    fn settle_commands(&self, settles: Vec<Settle>) -> Vec<(u32, Command)> {
        let mut by_shard: BTreeMap<u32, Vec<Settle>> = BTreeMap::new();
        for settle in settles {
            by_shard
                .entry(self.citizen_shard(&settle.citizen_id))
                .or_default()
                .push(settle);
        }
        by_shard
            .into_iter()
            .map(|(shard, settles)| (shard, Command::SettleClaims(SettleClaims { settles })))
            .collect()
    }

    /// Every claim of every shard this node serves, with its citizen.
    async fn all_claims(&self) -> Result<Vec<(Arc<str>, Claim)>, EngineError> {
        let mut all = Vec::new();
        for shard in self.served_shards() {
            match self.query_exempt(shard, Query::Claims).await? {
                QueryAnswer::Claims(claims) => all.extend(claims),
                other => return Err(mismatch(shard, &other)),
            }
        }
        Ok(all)
    }

    /// What settling needs of appointments by id, one query per shard.
    async fn outcomes_by_id(
        &self,
        ids: impl IntoIterator<Item = AppointmentId>,
    ) -> Result<FxHashMap<AppointmentId, AppointmentOutcome>, EngineError> {
        let mut by_shard: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for id in ids {
            by_shard.entry(id.shard).or_default().push(id.seq);
        }
        // One query per clinic shard, all at once: each shard answers its part on its own
        // thread instead of waiting for the one before.
        let answers = join_all(by_shard.into_iter().map(|(shard, seqs)| async move {
            (
                shard,
                self.query_exempt(shard, Query::AppointmentOutcomes { seqs })
                    .await,
            )
        }))
        .await;
        let mut found = FxHashMap::default();
        for (shard, answer) in answers {
            match answer? {
                QueryAnswer::AppointmentOutcomes(outcomes) => {
                    found.reserve(outcomes.len());
                    found.extend(outcomes.into_iter().map(|a| (a.id, a)));
                }
                other => return Err(mismatch(shard, &other)),
            }
        }
        Ok(found)
    }

    /// The appointment made under `claim` of `citizen_id` (at its clinic's shard), whatever
    /// its status. A claim's appointment is made within the saga's budget after the claim
    /// was taken, so only appointments made since then are read.
    pub(crate) async fn find_by_claim(
        &self,
        citizen_id: &str,
        claim: &Claim,
    ) -> Result<Option<AppointmentView>, EngineError> {
        let query = Query::FindByClaim {
            citizen_id: citizen_id.to_string(),
            attempt: claim.attempt,
            since_ms: claim.taken_at_ms(),
        };
        let clinic_shard = claim.clinic_shard;
        match self.query_exempt(clinic_shard, query).await? {
            QueryAnswer::Appointment(found) => Ok(found),
            other => Err(mismatch(clinic_shard, &other)),
        }
    }

    /// Settles every claim against its clinic's shard (after recovery, before serving):
    /// see the module's documentation. Answers how many settlements it sent.
    ///
    /// One citizens' shard at a time: its claims, their appointments' outcomes, its
    /// settlements. A claim's settlement and a reschedule's rollback touch only its own
    /// citizen, so the order of the shards does not matter, and memory holds one shard's
    /// claims (tens of thousands) instead of every claim of the node (two million after a
    /// national launch, whose copies were most of a restart's page faults).
    pub async fn reconcile_claims(&self) -> Result<usize, EngineError> {
        let shards: Vec<u32> = self.served_shards().collect();
        let mut settled = 0;
        // Every appointment a claim names (or named before a reschedule, or finds): the
        // live ones among them are not orphans.
        let mut named: FxHashSet<AppointmentId> = FxHashSet::default();
        for group in shards.chunks(RECONCILE_SHARDS_AT_ONCE) {
            let results = join_all(group.iter().map(|&shard| self.reconcile_shard(shard))).await;
            for result in results {
                let (sent, names) = result?;
                settled += sent;
                named.extend(names);
            }
        }
        Ok(settled + self.reject_orphans(&named).await?)
    }

    /// Settles the claims of one citizens' shard: answers how many settlements it sent
    /// (those that change a claim; after a clean stop, about none), and the appointments
    /// its claims named or were found to have made.
    async fn reconcile_shard(
        &self,
        shard: u32,
    ) -> Result<(usize, Vec<AppointmentId>), EngineError> {
        let claims: Vec<(Arc<str>, Claim)> = match self.query_exempt(shard, Query::Claims).await? {
            QueryAnswer::Claims(claims) => claims,
            other => return Err(mismatch(shard, &other)),
        };
        let mut ids: Vec<AppointmentId> = Vec::with_capacity(claims.len());
        for (_, claim) in &claims {
            ids.extend(claim.appointment());
            ids.extend(claim.previous.as_deref().and_then(Claim::appointment));
        }
        let mut named = ids.clone();
        let mut known = self.outcomes_by_id(ids).await?;
        let mut settles = Vec::with_capacity(claims.len());
        for (citizen_id, claim) in claims {
            let current = match claim.appointment() {
                // A claim names its appointment once; the old one of a reschedule is read
                // below, by reference.
                Some(id) if claim.previous.is_some() => known.get(&id).cloned(),
                Some(id) => known.remove(&id),
                None => {
                    let found = self.find_by_claim(&citizen_id, &claim).await?;
                    named.extend(found.as_ref().map(|a| a.id));
                    found.as_ref().map(AppointmentOutcome::from)
                }
            };
            let old = claim
                .previous
                .as_deref()
                .and_then(Claim::appointment)
                .and_then(|id| known.get(&id));
            let outcome = match (claim.previous.is_some(), old) {
                // A reschedule cut before its old appointment was released: roll it back.
                (true, Some(old)) if old.status.is_active() => {
                    if let Some(new) = current.as_ref().filter(|a| a.status.is_active()) {
                        self.reject_quietly(new.id).await;
                    }
                    SettleOutcome::Restore
                }
                _ => settle_against(current.as_ref()),
            };
            // A confirm that spent a priority may not have reached the claim.
            let spent = claim.priority
                && current
                    .as_ref()
                    .is_some_and(|a| a.status == Status::Confirmed && a.rebook_priority);
            // A settlement that changes nothing is not sent: the shard would make no event
            // of it, and after a clean stop that is nearly every claim.
            if claim.changed_by(&outcome) {
                settles.push(Settle {
                    citizen_id: citizen_id.clone(),
                    attempt: claim.attempt,
                    outcome,
                });
            }
            if spent {
                settles.push(Settle {
                    citizen_id,
                    attempt: claim.attempt,
                    outcome: SettleOutcome::Confirmed,
                });
            }
        }
        let sent = settles.len();
        if !settles.is_empty() {
            let command = Command::SettleClaims(SettleClaims { settles });
            self.exec_compensation(shard, command).await?;
        }
        Ok((sent, named))
    }

    /// Rejects every live appointment made under a claim that its citizen's claim does not
    /// name: the hold of a create whose tentative claim was lost in a crash before it was
    /// bound (the claim is journaled only once bound, see `crate::claims`). Its client was
    /// never answered; a retry books afresh. A hold made without a claim (tools, benches)
    /// is left alone. Answers how many it rejected.
    ///
    /// `named`: every appointment the claims named before their settlement (a reschedule's
    /// old one included) or were found to have made. A settlement only takes a name from an
    /// appointment that is no longer live (ended, or rejected by the rollback before this
    /// runs), so among live appointments these are exactly the ones the settled claims name.
    async fn reject_orphans(&self, named: &FxHashSet<AppointmentId>) -> Result<usize, EngineError> {
        let mut orphans = Vec::new();
        for shard in self.served_shards() {
            let live = match self.query_exempt(shard, Query::ActiveClaimed).await? {
                QueryAnswer::ActiveClaimed(live) => live,
                other => return Err(mismatch(shard, &other)),
            };
            orphans.extend(
                live.into_iter()
                    .map(|(id, _)| id)
                    .filter(|id| !named.contains(id)),
            );
        }
        let mut rejected = 0;
        for id in orphans {
            self.reject_quietly(id).await;
            rejected += 1;
        }
        Ok(rejected)
    }

    /// Rejects an appointment a failed saga made (its seat and dose return), outside the
    /// in-flight bound: it ends work already admitted. Answers what to wait for.
    pub(crate) async fn reject(&self, id: AppointmentId) -> Result<Durable, EngineError> {
        let reject = Command::Reject(Reject {
            seq: id.seq,
            reasons: vec![],
        });
        let (_, stored) = self.exec_compensation_deferred(id.shard, reject).await?;
        Ok(stored)
    }

    /// [`Node::reject`], waited for; a failure is logged (the appointment then stays as it
    /// is, and the next start reconciles it again).
    async fn reject_quietly(&self, id: AppointmentId) {
        let stored = match self.reject(id).await {
            Ok(stored) => stored.wait().await,
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            tracing::warn!(appointment = %id, error = %e, "a compensation failed");
        }
    }

    /// Checks the citizen rule across every shard this node serves: at most one PENDING or
    /// CONFIRMED appointment per citizen, every one of them bound to its citizen's claim, and
    /// every claim bound to one of them. `Err` names the first break. Reads every appointment
    /// (tests, the harness, operators); a booking in flight shows as a claim not yet bound.
    pub async fn check_claims(&self) -> Result<Result<(), String>, EngineError> {
        let claims: FxHashMap<Arc<str>, Claim> = self.all_claims().await?.into_iter().collect();
        let mut active: FxHashMap<Arc<str>, AppointmentId> = FxHashMap::default();
        for shard in self.served_shards() {
            let views = match self.query_exempt(shard, Query::ActiveAppointments).await? {
                QueryAnswer::Appointments(views) => views,
                other => return Err(mismatch(shard, &other)),
            };
            for a in views {
                if let Some(other) = active.insert(a.citizen_id.clone(), a.id) {
                    return Ok(Err(format!(
                        "citizen {} has two active appointments: {other} and {}",
                        a.citizen_id, a.id
                    )));
                }
                let claim = claims.get(&a.citizen_id);
                if claim.and_then(Claim::appointment) != Some(a.id) {
                    return Ok(Err(format!(
                        "appointment {} ({}) of citizen {} is not its claim ({claim:?})",
                        a.id,
                        a.status.as_str(),
                        a.citizen_id
                    )));
                }
            }
        }
        for (citizen_id, claim) in &claims {
            if active.get(citizen_id).copied() != claim.appointment() {
                return Ok(Err(format!(
                    "citizen {citizen_id} has a claim without a live appointment: {claim:?}"
                )));
            }
        }
        Ok(Ok(()))
    }
}

/// What a claim becomes, given its appointment as the clinic's shard has it now.
fn settle_against(current: Option<&AppointmentOutcome>) -> SettleOutcome {
    match current {
        Some(a) if a.status.is_active() => SettleOutcome::Bound {
            seq: a.id.seq,
            expires_at_ms: a.expires_at_ms,
        },
        // An administration whose notice a crash lost: the dose still joins the history.
        Some(AppointmentOutcome {
            dose: Some(dose), ..
        }) => SettleOutcome::Administered {
            vaccine: dose.vaccine.clone(),
            date: dose.date,
        },
        Some(a) => SettleOutcome::Ended {
            clinic_cancelled: a.status == Status::ClinicCancelled,
        },
        None => SettleOutcome::Ended {
            clinic_cancelled: false,
        },
    }
}
