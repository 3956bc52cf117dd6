//! Waitlist offers (the design is in [`crate::waitlist`]): a clinic's shard hands the slots
//! a durable change made room in to its [`Offerer`] from the journal's completion (never
//! waiting, like claim notices in [`crate::notices`]); one task per node drains the
//! [`OfferInbox`] and runs one offer pass per slot, at most [`OFFERS_IN_FLIGHT_MAX`] at a
//! time. A pass books the first waiting citizen through the booking saga, skips (and
//! removes) those who cannot be served, and stops at `SOLD_OUT`/`OUT_OF_STOCK`.
//!
//! The task starts offering only once the node has reconciled its claims after recovery
//! (an offer's tentative claim must not meet the reconciliation half way); the node then
//! hands it every slot with a free seat and waiting citizens ([`Node::offer_everywhere`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, Semaphore};

use crate::command::{Command, LeaveWaitlist, Query, QueryAnswer, RestoreWaitlist};
use crate::error::{DomainError, EngineError, Resource};
use crate::node::{mismatch, Node};
use crate::saga::{BookRequest, Booked};
use crate::view::AppointmentView;
use crate::waitlist::{OfferCandidate, SlotRef, WaitlistExit};

/// Offer passes running at once on a node, each one booking at a time: a bound on the
/// saga traffic offers add to a rush (a pass is a few shard messages per citizen it books or
/// skips), far below the per-shard in-flight bound.
pub const OFFERS_IN_FLIGHT_MAX: usize = 64;
/// Slots waiting for the offer task, across the node. Only changes that made room in a slot
/// with citizens waiting send one; past the bound they are dropped with an error in the
/// log, and those slots get their offers at the next change that makes room there or at
/// the next start (the sweep after recovery).
pub const OFFER_BACKLOG_MAX: usize = 100_000;
/// Most citizens one pass books or skips before it lets the slot go (another notice or the
/// next change runs it again): a pass ends by itself well before, each step takes a seat
/// or removes an entry, so this only guards against a bug turning it into a loop.
pub const OFFERS_PER_PASS_MAX: usize = 4096;

/// The shards' side of the offer channel.
#[derive(Clone)]
pub struct Offerer {
    tx: mpsc::UnboundedSender<Vec<SlotRef>>,
    backlog: Arc<AtomicUsize>,
}

impl Offerer {
    /// The sender shards (and the node) hold, and the receiver [`OfferInbox::run`] drains.
    pub fn channel() -> (Offerer, OfferInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        (
            Offerer {
                tx,
                backlog: backlog.clone(),
            },
            OfferInbox { rx, backlog },
        )
    }

    /// Queues slots; never waits (it is called from a journal completion).
    pub fn send(&self, slots: Vec<SlotRef>) {
        let n = slots.len();
        if n == 0 {
            return;
        }
        if self.backlog.fetch_add(n, Ordering::AcqRel) + n > OFFER_BACKLOG_MAX {
            self.backlog.fetch_sub(n, Ordering::AcqRel);
            tracing::error!(
                slots = n,
                bound = OFFER_BACKLOG_MAX,
                "waitlist offers dropped: the backlog is full"
            );
            return;
        }
        if self.tx.send(slots).is_err() {
            self.backlog.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

pub struct OfferInbox {
    rx: mpsc::UnboundedReceiver<Vec<SlotRef>>,
    backlog: Arc<AtomicUsize>,
}

/// The passes of one node: which slots have one running (and whether another change made
/// room there meanwhile), and the permits that bound them.
pub(crate) struct Passes {
    running: Mutex<FxHashMap<SlotRef, bool>>,
    permits: Arc<Semaphore>,
}

impl Default for Passes {
    fn default() -> Self {
        Passes {
            running: Mutex::new(FxHashMap::default()),
            permits: Arc::new(Semaphore::new(OFFERS_IN_FLIGHT_MAX)),
        }
    }
}

impl OfferInbox {
    /// Starts a pass for every slot it receives (once the node is reconciled), until every
    /// sender is gone or the node is.
    pub async fn run(mut self, node: Weak<Node>) {
        match node.upgrade() {
            Some(n) => n.wait_reconciled().await,
            None => return,
        }
        while let Some(slots) = self.rx.recv().await {
            self.backlog.fetch_sub(slots.len(), Ordering::AcqRel);
            let Some(node) = node.upgrade() else { return };
            for slot in slots {
                node.start_pass(slot).await;
            }
        }
    }
}

/// What one offer did.
enum Step {
    /// Booked or skipped: try the next waiting citizen.
    Next,
    /// Nobody more can be served now.
    Stop,
}

impl Node {
    /// Runs a pass for `slot`, unless one runs already (it then runs once more after).
    /// Waits for a permit: the bound on passes in flight.
    async fn start_pass(self: &Arc<Self>, slot: SlotRef) {
        {
            let mut running = self.passes.running.lock().expect("not poisoned");
            if let Some(again) = running.get_mut(&slot) {
                *again = true;
                return;
            }
            running.insert(slot.clone(), false);
        }
        let permit = self
            .passes
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                node.offer_pass(&slot).await;
                let mut running = node.passes.running.lock().expect("not poisoned");
                match running.get_mut(&slot) {
                    Some(again) if *again => *again = false,
                    _ => {
                        running.remove(&slot);
                        break;
                    }
                }
            }
            drop(permit);
        });
    }

    /// Offers the slot's free seats to its waiting citizens, in order.
    async fn offer_pass(&self, slot: &SlotRef) {
        for _ in 0..OFFERS_PER_PASS_MAX {
            let candidate = match self.offer_candidate(slot).await {
                Ok(Some(candidate)) => candidate,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(clinic = %slot.clinic_id, slot = %slot.slot_id, error = %e, "waitlist offer not made");
                    return;
                }
            };
            match self.offer(slot, &candidate).await {
                Step::Next => {}
                Step::Stop => return,
            }
        }
        tracing::error!(clinic = %slot.clinic_id, slot = %slot.slot_id, bound = OFFERS_PER_PASS_MAX, "a waitlist pass reached its bound");
    }

    async fn offer_candidate(&self, slot: &SlotRef) -> Result<Option<OfferCandidate>, EngineError> {
        let shard = self.clinic_shard(&slot.clinic_id);
        let query = Query::WaitlistOffer {
            clinic_id: slot.clinic_id.to_string(),
            slot_id: slot.slot_id.to_string(),
        };
        match self.query_exempt(shard, query).await? {
            QueryAnswer::WaitlistOffer(candidate) => Ok(candidate),
            other => Err(mismatch(shard, &other)),
        }
    }

    /// One offer: a hold for the candidate through the booking saga, or a skip.
    async fn offer(&self, slot: &SlotRef, candidate: &OfferCandidate) -> Step {
        let booked = self.book_offer(slot, candidate).await;
        let refused = match booked {
            Ok(a) => {
                tracing::info!(appointment = %a.id, waitlist = %candidate.id, "waitlist offer held");
                return Step::Next;
            }
            Err(EngineError::Domain(refused)) => refused,
            Err(e @ EngineError::DependencyUnavailable { .. }) => {
                // Held, then rolled back by the outage policy: not the citizen's doing.
                tracing::warn!(waitlist = %candidate.id, error = %e, "waitlist offer undone; the entry is put back");
                self.restore(slot, candidate).await;
                return Step::Stop;
            }
            Err(e) => {
                tracing::warn!(waitlist = %candidate.id, error = %e, "waitlist offer failed; the entry keeps its place");
                return Step::Stop;
            }
        };
        match refused {
            // Someone else took the seat (or the dose) first, or the slot can serve nobody
            // any more: the list stays as it is.
            DomainError::SoldOut
            | DomainError::OutOfStock
            | DomainError::SlotStarted
            | DomainError::SlotCancelled
            | DomainError::NotFound(Resource::Slot | Resource::Clinic) => Step::Stop,
            // The entry left meanwhile.
            DomainError::NotFound(Resource::WaitlistEntry) => Step::Next,
            // Booked elsewhere, not eligible, or the slot stopped offering the vaccine:
            // passed over, in one journaled step.
            DomainError::AlreadyBooked
            | DomainError::NotEligible { .. }
            | DomainError::VaccineNotOffered
            | DomainError::NotFound(_) => self.skip(candidate, &refused).await,
            other => {
                tracing::warn!(waitlist = %candidate.id, refused = %other, "waitlist offer refused; the entry keeps its place");
                Step::Stop
            }
        }
    }

    async fn book_offer(
        &self,
        slot: &SlotRef,
        candidate: &OfferCandidate,
    ) -> Result<AppointmentView, EngineError> {
        let request = BookRequest {
            clinic_id: slot.clinic_id.to_string(),
            slot_id: slot.slot_id.to_string(),
            vaccine: candidate.vaccine.to_string(),
            citizen_id: candidate.citizen_id.to_string(),
            hold_ms: self.config().waitlist_hold_ms,
        };
        match self.book_from_waitlist(request, candidate.id.seq).await {
            Booked::Ran(booking) => booking.finish(self, None).await?,
            Booked::Replay(_) | Booked::KeyReused | Booked::Busy | Booked::KeysFull => {
                unreachable!("an offer has no Idempotency-Key")
            }
        }
    }

    async fn restore(&self, slot: &SlotRef, candidate: &OfferCandidate) {
        let restore = Command::RestoreWaitlist(RestoreWaitlist {
            clinic_id: slot.clinic_id.to_string(),
            slot_id: slot.slot_id.to_string(),
            entry: candidate.entry.clone(),
            index: candidate.index,
        });
        if let Err(e) = self.exec_compensation(candidate.id.shard, restore).await {
            tracing::warn!(waitlist = %candidate.id, error = %e, "waitlist entry not put back");
        }
    }

    async fn skip(&self, candidate: &OfferCandidate, why: &DomainError) -> Step {
        let leave = Command::LeaveWaitlist(LeaveWaitlist {
            seq: candidate.id.seq,
            citizen: None,
            why: WaitlistExit::Skipped,
        });
        match self.exec_compensation(candidate.id.shard, leave).await {
            Ok(_) | Err(EngineError::Domain(DomainError::NotFound(_))) => {
                tracing::info!(waitlist = %candidate.id, reason = %why, "waitlist entry skipped");
                Step::Next
            }
            Err(e) => {
                tracing::warn!(waitlist = %candidate.id, error = %e, "waitlist entry not skipped");
                Step::Stop
            }
        }
    }

    /// Hands the offer task every slot of this node's shards with a free seat and waiting
    /// citizens (after recovery: offers are not journaled, so none is lost to a crash).
    pub(crate) async fn offer_everywhere(&self) -> Result<(), EngineError> {
        for shard in self.served_shards() {
            match self.query_exempt(shard, Query::WaitlistSlots).await? {
                QueryAnswer::WaitlistSlots(slots) => self.offerer().send(slots),
                other => return Err(mismatch(shard, &other)),
            }
        }
        Ok(())
    }
}
