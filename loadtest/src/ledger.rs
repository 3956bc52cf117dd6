//! The ledger: every change the server acknowledged during a run, so the checker can prove
//! that nothing acknowledged was lost (across kills too) and that replays were faithful.
//!
//! Scenarios record each 2xx answer to a create, confirm, cancel or administration here, each
//! acknowledged slot cancellation (with the appointments it answered as affected), each
//! deliberate Idempotency-Key replay, the stock the campaign received, and the appointments
//! the harness confirmed and then left alone to fall due as no-shows. The ledger keeps, per
//! appointment, the furthest status an acknowledgement showed; the checker compares that
//! with what the server reports later.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use serde::Serialize;

/// The operations whose acknowledgements the ledger keeps, in the order an appointment can
/// go through them (the ledger keeps the furthest; a cancel and an administration exclude
/// each other). Clinic cancellations are kept per slot ([`SlotCancel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckKind {
    Create,
    Confirm,
    Cancel,
    /// `POST /v1/appointments/{id}/administer` answered 200 ADMINISTERED with a batch.
    Administer,
}

/// What the server acknowledged for one appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acked {
    pub appointment_id: String,
    pub clinic_id: String,
    pub slot_id: String,
    pub vaccine: String,
    pub citizen_id: String,
    /// The last acknowledged operation ([`AckKind::Create`] < `Confirm` < `Cancel` <
    /// `Administer` in a run).
    pub kind: AckKind,
    /// The status the acknowledging answer carried (`PENDING`, `CONFIRMED`, `RELEASED`,
    /// `CANCELLED`, `ADMINISTERED`, `CLINIC_CANCELLED`, ...).
    pub status: String,
    /// The batch an administration answered (`None` before one).
    pub batch: Option<String>,
}

/// One deliberate replay of a successful create with the same Idempotency-Key and body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replay {
    pub idempotency_key: String,
    pub citizen_id: String,
    pub first_status: u16,
    pub first_appointment_id: Option<String>,
    pub replay_status: u16,
    pub replay_appointment_id: Option<String>,
}

/// A slot cancellation the server acknowledged (`POST .../slots/{slot_id}/cancel`, 200):
/// the slot and the appointments its answer listed as turned CLINIC_CANCELLED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotCancel {
    pub clinic_id: String,
    pub slot_id: String,
    /// `affected_appointment_ids` of the answer.
    pub affected: Vec<String>,
    /// Sent with the clinic's staff token (else the authority's).
    pub by_staff: bool,
}

/// A waitlist join the server acknowledged (`POST .../slots/{slot_id}/waitlist`, 201). The
/// harness's citizen then waits (it books nothing else), so the entry can only be waiting,
/// served (an appointment offered from the waitlist in that slot), or dropped with its
/// cancelled slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitlistJoin {
    pub waitlist_id: String,
    pub citizen_id: String,
    pub clinic_id: String,
    pub slot_id: String,
}

#[derive(Debug, Default)]
struct Inner {
    appointments: HashMap<String, Acked>,
    replays: Vec<Replay>,
    slot_cancels: Vec<SlotCancel>,
    /// Doses received per (clinic, vaccine), summed over batches.
    received: BTreeMap<(String, String), i64>,
    /// Appointments confirmed and then left alone in a slot that ends during the run.
    no_show_expected: BTreeSet<String>,
    /// Acknowledged waitlist joins, by `waitlist_id`.
    waitlist: BTreeMap<String, WaitlistJoin>,
}

/// Thread-safe; one per run, shared by every connection (an `Arc<Ledger>`).
impl Inner {
    /// Answers can arrive out of order (a slow create answer after its confirm): keep the
    /// furthest operation.
    fn keep_furthest(&mut self, acked: Acked) {
        match self.appointments.get_mut(&acked.appointment_id) {
            Some(existing) if existing.kind as u8 > acked.kind as u8 => {}
            Some(existing) => *existing = acked,
            None => {
                self.appointments
                    .insert(acked.appointment_id.clone(), acked);
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

fn field(body: &serde_json::Value, name: &str) -> Option<String> {
    body.get(name).and_then(|v| v.as_str()).map(str::to_owned)
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Records a 2xx answer whose body is an appointment. A body without an
    /// `appointment_id` is ignored and reported as `false`.
    pub fn record(&self, kind: AckKind, appointment: &serde_json::Value) -> bool {
        let (Some(id), Some(status)) = (
            field(appointment, "appointment_id"),
            field(appointment, "status"),
        ) else {
            return false;
        };
        let acked = Acked {
            appointment_id: id.clone(),
            clinic_id: field(appointment, "clinic_id").unwrap_or_default(),
            slot_id: field(appointment, "slot_id").unwrap_or_default(),
            vaccine: field(appointment, "vaccine").unwrap_or_default(),
            citizen_id: field(appointment, "citizen_id").unwrap_or_default(),
            kind,
            status,
            batch: field(appointment, "batch"),
        };
        self.inner.lock().expect("ledger lock").keep_furthest(acked);
        true
    }

    /// Records doses of `vaccine` received by `clinic_id` (a stock call answered 200).
    pub fn record_received(&self, clinic_id: &str, vaccine: &str, quantity: i64) {
        let mut inner = self.inner.lock().expect("ledger lock");
        *inner
            .received
            .entry((clinic_id.to_string(), vaccine.to_string()))
            .or_insert(0) += quantity;
    }

    /// Records an appointment the harness confirmed (acknowledged) and will leave alone
    /// (no cancel) in a slot that ends during the run: once the slot ended more than the
    /// no-show grace ago it must be NO_SHOW, or ADMINISTERED if staff administered it.
    pub fn record_no_show_expected(&self, appointment_id: &str) {
        self.inner
            .lock()
            .expect("ledger lock")
            .no_show_expected
            .insert(appointment_id.to_string());
    }

    pub fn record_waitlist_join(&self, join: WaitlistJoin) {
        self.inner
            .lock()
            .expect("ledger lock")
            .waitlist
            .insert(join.waitlist_id.clone(), join);
    }

    /// Every acknowledged waitlist join, sorted by id.
    pub fn waitlist_joins(&self) -> Vec<WaitlistJoin> {
        let inner = self.inner.lock().expect("ledger lock");
        inner.waitlist.values().cloned().collect()
    }

    /// The citizens with an acknowledged waitlist join, sorted, once each.
    pub fn waitlist_citizens(&self) -> Vec<String> {
        let inner = self.inner.lock().expect("ledger lock");
        let citizens: BTreeSet<&String> = inner.waitlist.values().map(|j| &j.citizen_id).collect();
        citizens.into_iter().cloned().collect()
    }

    pub fn record_replay(&self, replay: Replay) {
        self.inner.lock().expect("ledger lock").replays.push(replay);
    }

    /// Every acknowledged appointment, sorted by id (stable reports).
    pub fn acked(&self) -> Vec<Acked> {
        let inner = self.inner.lock().expect("ledger lock");
        let mut all: Vec<Acked> = inner.appointments.values().cloned().collect();
        all.sort_by(|a, b| a.appointment_id.cmp(&b.appointment_id));
        all
    }

    pub fn replays(&self) -> Vec<Replay> {
        self.inner.lock().expect("ledger lock").replays.clone()
    }

    pub fn record_slot_cancel(&self, cancel: SlotCancel) {
        self.inner
            .lock()
            .expect("ledger lock")
            .slot_cancels
            .push(cancel);
    }

    /// Every acknowledged slot cancellation, in the order recorded.
    pub fn slot_cancels(&self) -> Vec<SlotCancel> {
        self.inner.lock().expect("ledger lock").slot_cancels.clone()
    }

    /// Doses received per (clinic, vaccine).
    pub fn received(&self) -> BTreeMap<(String, String), i64> {
        self.inner.lock().expect("ledger lock").received.clone()
    }

    /// The appointments left to fall due as no-shows, sorted.
    pub fn no_show_expected(&self) -> Vec<String> {
        let inner = self.inner.lock().expect("ledger lock");
        inner.no_show_expected.iter().cloned().collect()
    }

    /// Acknowledged appointments whose last acknowledged operation is `kind`.
    pub fn count_kind(&self, kind: AckKind) -> usize {
        let inner = self.inner.lock().expect("ledger lock");
        inner
            .appointments
            .values()
            .filter(|a| a.kind == kind)
            .count()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("ledger lock").appointments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(id: &str, status: &str) -> serde_json::Value {
        json!({"appointment_id": id, "status": status, "clinic_id": "c", "slot_id": "s",
               "vaccine": "v", "citizen_id": "p"})
    }

    #[test]
    fn keeps_the_furthest_acknowledgement_whatever_the_arrival_order() {
        let ledger = Ledger::new();
        assert!(ledger.record(AckKind::Confirm, &body("a1", "CONFIRMED")));
        assert!(ledger.record(AckKind::Create, &body("a1", "PENDING")));
        let acked = ledger.acked();
        assert_eq!(acked.len(), 1);
        assert_eq!(acked[0].kind, AckKind::Confirm);
        assert_eq!(acked[0].status, "CONFIRMED");
        assert!(ledger.record(AckKind::Cancel, &body("a1", "CANCELLED")));
        assert_eq!(ledger.acked()[0].status, "CANCELLED");
    }

    #[test]
    fn an_administration_keeps_its_batch_and_receipts_add_up() {
        let ledger = Ledger::new();
        let mut administered = body("a1", "ADMINISTERED");
        administered["batch"] = json!("B1");
        assert!(ledger.record(AckKind::Administer, &administered));
        assert!(ledger.record(AckKind::Confirm, &body("a1", "CONFIRMED")));
        let acked = ledger.acked();
        assert_eq!(acked[0].kind, AckKind::Administer);
        assert_eq!(acked[0].batch.as_deref(), Some("B1"));

        assert_eq!(ledger.count_kind(AckKind::Administer), 1);

        ledger.record_received("c", "v", 10);
        ledger.record_received("c", "v", 5);
        assert_eq!(ledger.received()[&("c".to_string(), "v".to_string())], 15);
    }

    #[test]
    fn a_body_without_an_appointment_is_not_recorded() {
        let ledger = Ledger::new();
        assert!(!ledger.record(AckKind::Create, &json!({"error": {"code": "SOLD_OUT"}})));
        assert!(ledger.is_empty());
    }
}
