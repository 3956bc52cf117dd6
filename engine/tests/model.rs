//! Property-based model tests.
//!
//! 1. One `ShardState` against a plain reference model: random sequences of holds, confirms,
//!    cancels, rejects, clock moves, expiry passes (holds expire, CONFIRMED appointments
//!    whose slot ended more than `GRACE_MS` ago become NO_SHOW), moves of a slot's end,
//!    stock adjustments and slot cancellations.
//!    After every step the command's outcome must agree with the model, the shard's own
//!    `check_invariants` must pass, every slot's and every stock's counters must equal the
//!    model's (docs/ARCHITECTURE.md invariants 1 and 2), and no appointment status may move
//!    backward (invariant 4). At the end of each case the collected events are replayed into
//!    a fresh state, which must equal the live one (a fresh state with the default no-show
//!    grace, not the live one's: replay must not read the configuration).
//! 2. The idempotency table against a plain model: random interleavings of begin / finish /
//!    purge never hand out a second `Proceed` for a key that is in flight or done
//!    (invariant 5).
//!
//! The models never call engine code to compute an expectation: they only use the engine's
//! data types (`Status`, `DomainError`) to compare.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::NaiveDate;
use holdfast_engine::command::{
    AdjustStock, Administer, Cancel, CancelSlot, Confirm, Hold, PutClinic, PutSlots, PutVaccine,
    ReceiveStock, Reject,
};
use holdfast_engine::idempotency::{
    no_shelf, Begin, IdemKey, IdempotencyTable, KeyId, ShelfRef, StoredResponse,
};
use holdfast_engine::model::{ClinicInfo, SlotSpec, VaccineRules};
use holdfast_engine::shard::{ShardConfig, ShardState};
use holdfast_engine::view::Output;
use holdfast_engine::{Command, DomainError, Event, Limit, Resource, Status};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const T0: i64 = 1_700_000_000_000;
const VACCINES: [&str; 2] = ["vx-a", "vx-b"];
const BATCH: &str = "b1";
/// The live shard's no-show grace: short, so clock moves pass slot ends plus grace.
const GRACE_MS: i64 = 500;

fn clinic_id(c: usize) -> String {
    format!("clinic-{c}")
}

fn slot_id(s: usize) -> String {
    format!("slot-{s}")
}

fn expiry_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2030, 1, 1).expect("valid date")
}

fn no_rules() -> VaccineRules {
    VaccineRules {
        min_age: None,
        max_age: None,
        regions: vec![],
        series_doses: 0,
        min_interval_days: 0,
        contraindications: vec![],
    }
}

// ---- generated input ------------------------------------------------------------------

#[derive(Debug, Clone)]
struct SlotSetup {
    capacity: u32,
    reserve: u32,
    offers: [bool; 2],
    start_offset_ms: i64,
    duration_ms: i64,
}

#[derive(Debug, Clone)]
struct ClinicSetup {
    slots: Vec<SlotSetup>,
    /// Initial doses per vaccine; `None`: never stocked (no stock record at all).
    stock: [Option<i64>; 2],
}

#[derive(Debug, Clone)]
enum Op {
    Hold {
        clinic: u8,
        slot: u8,
        vaccine: usize,
        citizen: u8,
        hold_ms: i64,
        priority: bool,
    },
    Confirm(u8),
    Cancel(u8),
    Reject(u8),
    Advance(i64),
    ExpireDue,
    Adjust {
        clinic: u8,
        vaccine: usize,
        delta: i64,
        unknown_batch: bool,
    },
    Receive {
        clinic: u8,
        vaccine: usize,
        quantity: i64,
    },
    CancelSlot {
        clinic: u8,
        slot: u8,
    },
    /// An authority moves a slot's end by `shift_ms` (the rest of the slot unchanged).
    MoveEnd {
        clinic: u8,
        slot: u8,
        shift_ms: i64,
    },
    /// Staff give the dose: from the one batch, or (`unknown_batch`) one the clinic does not
    /// hold; as staff of the appointment's clinic, or (`other_clinic`) of another.
    Administer {
        pick: u8,
        unknown_batch: bool,
        other_clinic: bool,
    },
}

fn slot_setup() -> impl Strategy<Value = SlotSetup> {
    (1u32..=4)
        .prop_flat_map(|capacity| {
            (
                Just(capacity),
                prop_oneof![2 => Just(0u32), 1 => 0..=capacity],
                prop_oneof![Just([true, true]), Just([true, false]), Just([false, true])],
                // Whole 100 ms steps, like the clock moves and most holds: `now` often lands
                // exactly on a start or a deadline, where `>=` and `>` differ.
                (3i64..=150).prop_map(|k| k * 100),
                (1i64..=30).prop_map(|k| k * 100),
            )
        })
        .prop_map(
            |(capacity, reserve, offers, start_offset_ms, duration_ms)| SlotSetup {
                capacity,
                reserve,
                offers,
                start_offset_ms,
                duration_ms,
            },
        )
}

fn clinic_setup() -> impl Strategy<Value = ClinicSetup> {
    (
        prop::collection::vec(slot_setup(), 1..=3),
        prop::option::weighted(0.85, 1i64..=4),
        prop::option::weighted(0.85, 1i64..=4),
    )
        .prop_map(|(slots, a, b)| ClinicSetup {
            slots,
            stock: [a, b],
        })
}

fn hold_ms() -> impl Strategy<Value = i64> {
    prop_oneof![3 => (1i64..=20).prop_map(|k| k * 100), 1 => 1i64..=2_000]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        16 => (any::<u8>(), any::<u8>(), 0usize..2, 0u8..8, hold_ms(), prop::bool::weighted(0.3))
            .prop_map(|(clinic, slot, vaccine, citizen, hold_ms, priority)| Op::Hold {
                clinic, slot, vaccine, citizen, hold_ms, priority
            }),
        8 => any::<u8>().prop_map(Op::Confirm),
        4 => any::<u8>().prop_map(Op::Cancel),
        2 => any::<u8>().prop_map(Op::Reject),
        6 => (0i64..=12).prop_map(|k| Op::Advance(k * 50)),
        // Now and then a jump of seconds, past slot starts and ends (no-shows).
        3 => (1i64..=20).prop_map(|k| Op::Advance(k * 500)),
        3 => Just(Op::ExpireDue),
        4 => (any::<u8>(), 0usize..2, -3i64..=3, prop::bool::weighted(0.1)).prop_map(
            |(clinic, vaccine, delta, unknown_batch)| Op::Adjust { clinic, vaccine, delta, unknown_batch }
        ),
        2 => (any::<u8>(), 0usize..2, 1i64..=3)
            .prop_map(|(clinic, vaccine, quantity)| Op::Receive { clinic, vaccine, quantity }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(clinic, slot)| Op::CancelSlot { clinic, slot }),
        1 => (any::<u8>(), any::<u8>(), -10i64..=10).prop_map(|(clinic, slot, k)| Op::MoveEnd {
            clinic, slot, shift_ms: k * 100
        }),
        4 => (any::<u8>(), prop::bool::weighted(0.1), prop::bool::weighted(0.1)).prop_map(
            |(pick, unknown_batch, other_clinic)| Op::Administer { pick, unknown_batch, other_clinic }
        ),
    ]
}

// ---- the reference model --------------------------------------------------------------

#[derive(Debug, Clone)]
struct MSlot {
    start_ms: i64,
    end_ms: i64,
    capacity: u32,
    reserve: u32,
    offers: [bool; 2],
    cancelled: bool,
}

#[derive(Debug, Clone, Default)]
struct MStock {
    /// The one batch (`BATCH`) exists: the pair has a stock record.
    batch_exists: bool,
    on_hand: i64,
}

#[derive(Debug, Clone)]
struct MAppt {
    clinic: usize,
    slot: usize,
    vaccine: usize,
    status: Status,
    /// Set while PENDING.
    deadline: Option<i64>,
    /// Set while CONFIRMED: slot end + `GRACE_MS` when confirmed, shifted with the end.
    no_show_at: Option<i64>,
    priority: bool,
}

#[derive(Debug, Clone)]
struct Model {
    now: i64,
    slots: Vec<Vec<MSlot>>,
    stock: Vec<[MStock; 2]>,
    appts: BTreeMap<u64, MAppt>,
    next_seq: u64,
}

/// What the engine must answer.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Held { seq: u64, expires_at: i64 },
    Appointment { seq: u64, status: Status },
    Expired(usize),
    Stock { on_hand: i64, reserved: i64 },
    SlotCancelled { affected: BTreeSet<u64> },
    Slots,
    Err(DomainError),
}

fn is_active(s: Status) -> bool {
    matches!(s, Status::Pending | Status::Confirmed)
}

/// The forward-only status graph (docs/API.md "Booking"); staying put is always allowed.
fn transition_allowed(from: Status, to: Status) -> bool {
    use Status::*;
    from == to
        || matches!(
            (from, to),
            (
                Pending,
                Confirmed | Expired | Released | Rejected | ClinicCancelled
            ) | (
                Confirmed,
                Cancelled | ClinicCancelled | Administered | NoShow
            )
        )
}

impl Model {
    fn clinics(&self) -> usize {
        self.slots.len()
    }

    fn count(&self, c: usize, s: usize, status: Status) -> u32 {
        self.appts
            .values()
            .filter(|a| a.clinic == c && a.slot == s && a.status == status)
            .count() as u32
    }

    fn priority_taken(&self, c: usize, s: usize) -> u32 {
        self.appts
            .values()
            .filter(|a| {
                a.clinic == c
                    && a.slot == s
                    && a.priority
                    && matches!(
                        a.status,
                        Status::Pending | Status::Confirmed | Status::Administered | Status::NoShow
                    )
            })
            .count() as u32
    }

    fn remaining(&self, c: usize, s: usize) -> u32 {
        let slot = &self.slots[c][s];
        if slot.cancelled {
            0
        } else {
            slot.capacity
                - self.count(c, s, Status::Pending)
                - self.count(c, s, Status::Confirmed)
                - self.count(c, s, Status::NoShow)
                - self.count(c, s, Status::Administered)
        }
    }

    fn reserved(&self, c: usize, v: usize) -> i64 {
        self.appts
            .values()
            .filter(|a| a.clinic == c && a.vaccine == v && is_active(a.status))
            .count() as i64
    }

    fn total(&self, status: Status) -> u64 {
        self.appts.values().filter(|a| a.status == status).count() as u64
    }

    /// Per clinic and vaccine, the newest active appointments beyond what is on hand.
    fn at_risk(&self) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        for c in 0..self.clinics() {
            for v in 0..2 {
                let uncovered = (self.reserved(c, v) - self.stock[c][v].on_hand).max(0) as usize;
                out.extend(
                    self.appts
                        .iter()
                        .rev()
                        .filter(|(_, a)| a.clinic == c && a.vaccine == v && is_active(a.status))
                        .take(uncovered)
                        .map(|(&seq, _)| seq),
                );
            }
        }
        out
    }

    fn set_status(&mut self, seq: u64, status: Status) {
        let a = self.appts.get_mut(&seq).expect("model knows the seq");
        a.status = status;
        if status != Status::Pending {
            a.deadline = None;
        }
        if status != Status::Confirmed {
            a.no_show_at = None;
        }
    }

    /// A seq to act on: usually a created one, sometimes one that does not exist.
    fn pick_seq(&self, pick: u8) -> u64 {
        if self.appts.is_empty() || pick % 10 == 9 {
            return if pick & 1 == 0 {
                0
            } else {
                self.next_seq + u64::from(pick % 3)
            };
        }
        let seqs: Vec<u64> = self.appts.keys().copied().collect();
        seqs[pick as usize % seqs.len()]
    }

    /// Slot index, or `None` for an id the clinic does not have.
    fn pick_slot(&self, c: usize, pick: u8) -> Option<usize> {
        if pick % 16 == 15 {
            None
        } else {
            Some(pick as usize % self.slots[c].len())
        }
    }

    fn is_expired(&self, a: &MAppt) -> bool {
        a.deadline.is_some_and(|d| self.now >= d)
    }

    /// Builds the command for `op`, updates the model as the engine should, and says what the
    /// engine must answer. `None` for a step that sends nothing (time passing).
    fn step(&mut self, op: &Op) -> Option<(Command, Expect)> {
        Some(match *op {
            Op::Hold {
                clinic,
                slot,
                vaccine,
                citizen,
                hold_ms,
                priority,
            } => {
                let c = clinic as usize % self.clinics();
                let s = self.pick_slot(c, slot);
                let command = Command::Hold(Hold {
                    rebook_priority: priority,
                    ..Hold::new(
                        &clinic_id(c),
                        &s.map_or_else(|| "no-such-slot".to_string(), slot_id),
                        VACCINES[vaccine],
                        &format!("citizen-{citizen}"),
                        hold_ms,
                    )
                });
                let Some(s) = s else {
                    return Some((command, Expect::Err(DomainError::NotFound(Resource::Slot))));
                };
                let ms = &self.slots[c][s];
                let expect = if ms.cancelled {
                    Expect::Err(DomainError::SlotCancelled)
                } else if self.now >= ms.start_ms {
                    Expect::Err(DomainError::SlotStarted)
                } else if !ms.offers[vaccine] {
                    Expect::Err(DomainError::VaccineNotOffered)
                } else {
                    let remaining = self.remaining(c, s);
                    let reserve_unused = ms.reserve.saturating_sub(self.priority_taken(c, s));
                    let seat = if priority {
                        remaining > 0
                    } else {
                        remaining > reserve_unused
                    };
                    let stock = &self.stock[c][vaccine];
                    let dose = stock.batch_exists && stock.on_hand - self.reserved(c, vaccine) > 0;
                    if !seat {
                        Expect::Err(DomainError::SoldOut)
                    } else if !dose {
                        Expect::Err(DomainError::OutOfStock)
                    } else {
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        let expires_at = self.now + hold_ms;
                        self.appts.insert(
                            seq,
                            MAppt {
                                clinic: c,
                                slot: s,
                                vaccine,
                                status: Status::Pending,
                                deadline: Some(expires_at),
                                no_show_at: None,
                                priority,
                            },
                        );
                        Expect::Held { seq, expires_at }
                    }
                };
                (command, expect)
            }
            Op::Confirm(pick) => {
                let seq = self.pick_seq(pick);
                let command = Command::Confirm(Confirm { seq, citizen: None });
                let Some(a) = self.appts.get(&seq).cloned() else {
                    return Some((
                        command,
                        Expect::Err(DomainError::NotFound(Resource::Appointment)),
                    ));
                };
                let expect = match a.status {
                    Status::Pending if self.is_expired(&a) => {
                        self.set_status(seq, Status::Expired);
                        Expect::Err(DomainError::HoldExpired)
                    }
                    Status::Pending => {
                        self.set_status(seq, Status::Confirmed);
                        let end_ms = self.slots[a.clinic][a.slot].end_ms;
                        self.appts.get_mut(&seq).expect("known").no_show_at =
                            Some(end_ms + GRACE_MS);
                        Expect::Appointment {
                            seq,
                            status: Status::Confirmed,
                        }
                    }
                    Status::Confirmed => Expect::Appointment {
                        seq,
                        status: Status::Confirmed,
                    },
                    Status::Expired => Expect::Err(DomainError::HoldExpired),
                    status => Expect::Err(DomainError::InvalidTransition { status }),
                };
                (command, expect)
            }
            Op::Cancel(pick) => {
                let seq = self.pick_seq(pick);
                let command = Command::Cancel(Cancel { seq, citizen: None });
                let Some(a) = self.appts.get(&seq).cloned() else {
                    return Some((
                        command,
                        Expect::Err(DomainError::NotFound(Resource::Appointment)),
                    ));
                };
                let expect = match a.status {
                    Status::Pending if self.is_expired(&a) => {
                        self.set_status(seq, Status::Expired);
                        Expect::Err(DomainError::InvalidTransition {
                            status: Status::Expired,
                        })
                    }
                    Status::Pending => {
                        self.set_status(seq, Status::Released);
                        Expect::Appointment {
                            seq,
                            status: Status::Released,
                        }
                    }
                    Status::Confirmed => {
                        self.set_status(seq, Status::Cancelled);
                        Expect::Appointment {
                            seq,
                            status: Status::Cancelled,
                        }
                    }
                    status @ (Status::Released | Status::Cancelled) => {
                        Expect::Appointment { seq, status }
                    }
                    status => Expect::Err(DomainError::InvalidTransition { status }),
                };
                (command, expect)
            }
            Op::Reject(pick) => {
                let seq = self.pick_seq(pick);
                let command = Command::Reject(Reject {
                    seq,
                    reasons: vec!["below_min_age".to_string()],
                });
                let Some(a) = self.appts.get(&seq).cloned() else {
                    return Some((
                        command,
                        Expect::Err(DomainError::NotFound(Resource::Appointment)),
                    ));
                };
                let expect = match a.status {
                    // Compensation returns the seat even after the deadline.
                    Status::Pending => {
                        self.set_status(seq, Status::Rejected);
                        Expect::Appointment {
                            seq,
                            status: Status::Rejected,
                        }
                    }
                    status @ (Status::Rejected | Status::Expired) => {
                        Expect::Appointment { seq, status }
                    }
                    status => Expect::Err(DomainError::InvalidTransition { status }),
                };
                (command, expect)
            }
            Op::Advance(ms) => {
                self.now += ms;
                return None;
            }
            Op::ExpireDue => {
                let due: Vec<u64> = self
                    .appts
                    .iter()
                    .filter(|(_, a)| a.status == Status::Pending && self.is_expired(a))
                    .map(|(&seq, _)| seq)
                    .collect();
                for &seq in &due {
                    self.set_status(seq, Status::Expired);
                }
                let no_shows: Vec<u64> = self
                    .appts
                    .iter()
                    .filter(|(_, a)| a.no_show_at.is_some_and(|at| self.now >= at))
                    .map(|(&seq, _)| seq)
                    .collect();
                for &seq in &no_shows {
                    self.set_status(seq, Status::NoShow);
                }
                let count = due.len() + no_shows.len();
                (Command::ExpireDue, Expect::Expired(count))
            }
            Op::Adjust {
                clinic,
                vaccine,
                delta,
                unknown_batch,
            } => {
                let c = clinic as usize % self.clinics();
                let command = Command::AdjustStock(AdjustStock {
                    clinic_id: clinic_id(c),
                    vaccine: VACCINES[vaccine].to_string(),
                    batch: if unknown_batch {
                        "no-such-batch"
                    } else {
                        BATCH
                    }
                    .to_string(),
                    delta,
                    reason: "count".to_string(),
                });
                let reserved = self.reserved(c, vaccine);
                let stock = &mut self.stock[c][vaccine];
                let expect = if delta == 0 {
                    Expect::Err(DomainError::LimitReached(Limit::StockAdjustment))
                } else if unknown_batch || !stock.batch_exists {
                    Expect::Err(DomainError::NotFound(Resource::Batch))
                } else if stock.on_hand + delta < 0 {
                    Expect::Err(DomainError::InsufficientStock {
                        on_hand: stock.on_hand,
                    })
                } else {
                    stock.on_hand += delta;
                    Expect::Stock {
                        on_hand: stock.on_hand,
                        reserved,
                    }
                };
                (command, expect)
            }
            Op::Receive {
                clinic,
                vaccine,
                quantity,
            } => {
                let c = clinic as usize % self.clinics();
                let command = Command::ReceiveStock(ReceiveStock {
                    clinic_id: clinic_id(c),
                    vaccine: VACCINES[vaccine].to_string(),
                    batch: BATCH.to_string(),
                    quantity,
                    expires_on: expiry_date(),
                });
                let reserved = self.reserved(c, vaccine);
                let stock = &mut self.stock[c][vaccine];
                stock.batch_exists = true;
                stock.on_hand += quantity;
                let expect = Expect::Stock {
                    on_hand: stock.on_hand,
                    reserved,
                };
                (command, expect)
            }
            Op::CancelSlot { clinic, slot } => {
                let c = clinic as usize % self.clinics();
                let s = self.pick_slot(c, slot);
                let command = Command::CancelSlot(CancelSlot {
                    clinic_id: clinic_id(c),
                    slot_id: s.map_or_else(|| "no-such-slot".to_string(), slot_id),
                    reason: "staff ill".to_string(),
                });
                let Some(s) = s else {
                    return Some((command, Expect::Err(DomainError::NotFound(Resource::Slot))));
                };
                if !self.slots[c][s].cancelled {
                    let live: Vec<u64> = self
                        .appts
                        .iter()
                        .filter(|(_, a)| a.clinic == c && a.slot == s && is_active(a.status))
                        .map(|(&seq, _)| seq)
                        .collect();
                    for seq in live {
                        self.set_status(seq, Status::ClinicCancelled);
                    }
                    self.slots[c][s].cancelled = true;
                }
                let affected = self
                    .appts
                    .iter()
                    .filter(|(_, a)| {
                        a.clinic == c && a.slot == s && a.status == Status::ClinicCancelled
                    })
                    .map(|(&seq, _)| seq)
                    .collect();
                (command, Expect::SlotCancelled { affected })
            }
            Op::Administer {
                pick,
                unknown_batch,
                other_clinic,
            } => self.administer(pick, unknown_batch, other_clinic),
            Op::MoveEnd {
                clinic,
                slot,
                shift_ms,
            } => return self.move_end(clinic, slot, shift_ms),
        })
    }

    /// `PutSlots` with one slot's end moved: its CONFIRMED appointments' no-shows move along.
    fn move_end(&mut self, clinic: u8, slot: u8, shift_ms: i64) -> Option<(Command, Expect)> {
        let c = clinic as usize % self.clinics();
        let s = slot as usize % self.slots[c].len();
        let ms = self.slots[c][s].clone();
        let end_ms = ms.end_ms + shift_ms;
        let command = Command::PutSlots(PutSlots {
            clinic_id: clinic_id(c),
            slots: vec![(
                slot_id(s),
                SlotSpec {
                    start_ms: ms.start_ms,
                    end_ms,
                    capacity: ms.capacity,
                    vaccines: VACCINES
                        .iter()
                        .zip(ms.offers)
                        .filter(|(_, offered)| *offered)
                        .map(|(v, _)| v.to_string())
                        .collect(),
                    priority_reserve: ms.reserve,
                },
            )],
        });
        let expect = if end_ms <= ms.start_ms {
            Expect::Err(DomainError::LimitReached(Limit::SlotFields))
        } else if ms.cancelled {
            Expect::Err(DomainError::SlotCancelled)
        } else {
            self.slots[c][s].end_ms = end_ms;
            for a in self.appts.values_mut() {
                if a.clinic == c && a.slot == s {
                    a.no_show_at = a.no_show_at.map(|at| at + shift_ms);
                }
            }
            Expect::Slots
        };
        Some((command, expect))
    }

    /// Administration: the clinic, then the status, then the batch (docs/API.md); the dose
    /// leaves the batch (`on_hand - 1`) and is no longer reserved.
    fn administer(
        &mut self,
        pick: u8,
        unknown_batch: bool,
        other_clinic: bool,
    ) -> (Command, Expect) {
        let seq = self.pick_seq(pick);
        let a = self.appts.get(&seq).cloned();
        let clinic = match (&a, other_clinic) {
            (Some(a), false) => clinic_id(a.clinic),
            _ => "no-such-clinic".to_string(),
        };
        let batch = if unknown_batch {
            "no-such-batch"
        } else {
            BATCH
        };
        let command = Command::Administer(Administer {
            seq,
            clinic_id: clinic,
            batch: batch.to_string(),
        });
        let Some(a) = a else {
            return (
                command,
                Expect::Err(DomainError::NotFound(Resource::Appointment)),
            );
        };
        let on_hand = self.stock[a.clinic][a.vaccine].on_hand;
        let expect = match a.status {
            _ if other_clinic => Expect::Err(DomainError::NotYours),
            Status::Administered => Expect::Appointment {
                seq,
                status: Status::Administered,
            },
            Status::Confirmed if unknown_batch => {
                Expect::Err(DomainError::NotFound(Resource::Batch))
            }
            Status::Confirmed if on_hand <= 0 => {
                Expect::Err(DomainError::InsufficientStock { on_hand })
            }
            Status::Confirmed => {
                self.set_status(seq, Status::Administered);
                self.stock[a.clinic][a.vaccine].on_hand -= 1;
                Expect::Appointment {
                    seq,
                    status: Status::Administered,
                }
            }
            status => Expect::Err(DomainError::InvalidTransition { status }),
        };
        (command, expect)
    }
}

// ---- comparing engine and model -------------------------------------------------------

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

fn check_outcome(
    actual: &Result<Output, DomainError>,
    expect: &Expect,
    model: &Model,
) -> Result<(), TestCaseError> {
    match (expect, actual) {
        (Expect::Err(want), Err(got)) => prop_assert_eq!(want, got),
        (Expect::Held { seq, expires_at }, Ok(Output::Appointment(view))) => {
            prop_assert_eq!(view.id.seq, *seq);
            prop_assert_eq!(view.status, Status::Pending);
            prop_assert_eq!(view.expires_at_ms, Some(*expires_at));
            prop_assert_eq!(view.created_at_ms, model.now);
        }
        (Expect::Appointment { seq, status }, Ok(Output::Appointment(view))) => {
            prop_assert_eq!(view.id.seq, *seq);
            prop_assert_eq!(view.status, *status);
        }
        (Expect::Expired(count), Ok(Output::Expired(got))) => prop_assert_eq!(count, got),
        (Expect::Stock { on_hand, reserved }, Ok(Output::Stock(view))) => {
            prop_assert_eq!(view.on_hand, *on_hand);
            prop_assert_eq!(view.reserved, *reserved);
            prop_assert_eq!(view.available, on_hand - reserved);
        }
        (
            Expect::SlotCancelled { affected },
            Ok(Output::SlotCancelled {
                slot,
                affected: got,
            }),
        ) => {
            prop_assert!(slot.cancelled);
            let got: BTreeSet<u64> = got.iter().map(|id| id.seq).collect();
            prop_assert_eq!(affected, &got);
        }
        (Expect::Slots, Ok(Output::Slots(views))) => prop_assert_eq!(views.len(), 1),
        (expect, actual) => {
            return Err(fail(format!(
                "model expects {expect:?}, engine answered {actual:?}"
            )))
        }
    }
    Ok(())
}

fn check_state(
    state: &ShardState,
    model: &Model,
    previous: &mut BTreeMap<u64, Status>,
) -> Result<(), TestCaseError> {
    state
        .check_invariants()
        .map_err(|e| fail(format!("check_invariants: {e}")))?;

    for (c, slots) in model.slots.iter().enumerate() {
        let view = state
            .availability(&clinic_id(c), None, None, None)
            .map_err(|e| fail(format!("availability of clinic {c}: {e}")))?;
        prop_assert_eq!(view.slots.len(), slots.len());
        for (s, ms) in slots.iter().enumerate() {
            let id = slot_id(s);
            let sv = view
                .slots
                .iter()
                .find(|v| *v.slot_id == *id)
                .ok_or_else(|| fail(format!("slot {id} missing from availability")))?;
            let pending = model.count(c, s, Status::Pending);
            let confirmed = model.count(c, s, Status::Confirmed);
            prop_assert_eq!(sv.capacity, ms.capacity);
            prop_assert_eq!(sv.priority_reserve, ms.reserve);
            prop_assert_eq!(sv.cancelled, ms.cancelled, "slot {}/{} cancelled", c, s);
            prop_assert_eq!(sv.pending, pending, "slot {}/{} pending", c, s);
            prop_assert_eq!(sv.confirmed, confirmed, "slot {}/{} confirmed", c, s);
            let administered = model.count(c, s, Status::Administered);
            prop_assert_eq!(
                sv.administered,
                administered,
                "slot {}/{} administered",
                c,
                s
            );
            prop_assert_eq!(sv.no_show, model.count(c, s, Status::NoShow));
            prop_assert_eq!(
                sv.remaining,
                model.remaining(c, s),
                "slot {}/{} remaining",
                c,
                s
            );
            // Invariant 1, straight from the view.
            let sum = u64::from(sv.remaining)
                + u64::from(sv.pending)
                + u64::from(sv.confirmed)
                + u64::from(sv.administered)
                + u64::from(sv.no_show);
            if sv.cancelled {
                prop_assert_eq!((sv.remaining, sv.pending, sv.confirmed), (0, 0, 0));
            } else {
                prop_assert_eq!(sum, u64::from(sv.capacity), "slot {}/{} sum", c, s);
            }
        }
        for (v, vaccine) in VACCINES.iter().enumerate() {
            let ms = &model.stock[c][v];
            let sv = view.stock.iter().find(|x| *x.vaccine == **vaccine);
            if !ms.batch_exists {
                prop_assert!(
                    sv.is_none(),
                    "clinic {} has no stock record for {}",
                    c,
                    vaccine
                );
                continue;
            }
            let sv = sv.ok_or_else(|| fail(format!("clinic {c}: no stock view for {vaccine}")))?;
            // Invariant 2: reserved == PENDING + CONFIRMED of this clinic and vaccine.
            let reserved = model.reserved(c, v);
            prop_assert_eq!(sv.on_hand, ms.on_hand, "clinic {} {} on_hand", c, vaccine);
            prop_assert_eq!(sv.reserved, reserved, "clinic {} {} reserved", c, vaccine);
            prop_assert_eq!(sv.available, ms.on_hand - reserved);
        }
    }

    let at_risk = model.at_risk();
    for (&seq, a) in &model.appts {
        let view = state
            .get_appointment(seq)
            .ok_or_else(|| fail(format!("appointment {seq} unknown to the engine")))?;
        prop_assert_eq!(view.status, a.status, "appointment {} status", seq);
        prop_assert_eq!(
            view.expires_at_ms,
            a.deadline,
            "appointment {} deadline",
            seq
        );
        prop_assert_eq!(
            view.at_risk,
            at_risk.contains(&seq),
            "appointment {} at_risk",
            seq
        );
        let (want_clinic, want_slot) = (clinic_id(a.clinic), slot_id(a.slot));
        prop_assert_eq!(&*view.clinic_id, want_clinic.as_str());
        prop_assert_eq!(&*view.slot_id, want_slot.as_str());
        prop_assert_eq!(&*view.vaccine, VACCINES[a.vaccine]);
        // A clinic cancellation grants rebooking priority.
        prop_assert_eq!(
            view.rebook_priority,
            a.priority || a.status == Status::ClinicCancelled
        );
        // Invariant 4, judged on the engine's own answers, not the model's.
        if let Some(&before) = previous.get(&seq) {
            prop_assert!(
                transition_allowed(before, view.status),
                "appointment {} moved from {:?} to {:?}",
                seq,
                before,
                view.status
            );
        }
        previous.insert(seq, view.status);
    }
    prop_assert!(state.get_appointment(model.next_seq).is_none());
    prop_assert!(state.get_appointment(0).is_none());

    let counts = state.counts();
    prop_assert_eq!(counts.pending, model.total(Status::Pending));
    prop_assert_eq!(counts.confirmed, model.total(Status::Confirmed));
    // Every PENDING hold and every CONFIRMED no-show is timed, and nothing else.
    prop_assert_eq!(counts.timers, counts.pending + counts.confirmed);
    Ok(())
}

fn build(setup: &[ClinicSetup]) -> (ShardState, Model, Vec<Event>) {
    let mut state = ShardState::with_config(
        0,
        ShardConfig {
            no_show_grace_ms: GRACE_MS,
        },
    );
    let mut log = Vec::new();
    let now = T0;
    for vaccine in VACCINES {
        let put = Command::PutVaccine(PutVaccine {
            name: vaccine.to_string(),
            rules: no_rules(),
        });
        state.execute(put, now, &mut log).expect("vaccine");
    }
    let mut model = Model {
        now,
        slots: Vec::new(),
        stock: Vec::new(),
        appts: BTreeMap::new(),
        next_seq: 1,
    };
    for (c, clinic) in setup.iter().enumerate() {
        let put = Command::PutClinic(PutClinic {
            clinic_id: clinic_id(c),
            info: ClinicInfo {
                name: format!("Clinic {c}"),
                region: "north".to_string(),
                timezone: "UTC".to_string(),
            },
        });
        state.execute(put, now, &mut log).expect("clinic");
        let mut stock: [MStock; 2] = Default::default();
        for (v, quantity) in clinic.stock.iter().enumerate() {
            if let Some(quantity) = *quantity {
                let receive = Command::ReceiveStock(ReceiveStock {
                    clinic_id: clinic_id(c),
                    vaccine: VACCINES[v].to_string(),
                    batch: BATCH.to_string(),
                    quantity,
                    expires_on: expiry_date(),
                });
                state.execute(receive, now, &mut log).expect("stock");
                stock[v] = MStock {
                    batch_exists: true,
                    on_hand: quantity,
                };
            }
        }
        let specs = clinic
            .slots
            .iter()
            .enumerate()
            .map(|(s, spec)| {
                (
                    slot_id(s),
                    SlotSpec {
                        start_ms: now + spec.start_offset_ms,
                        end_ms: now + spec.start_offset_ms + spec.duration_ms,
                        capacity: spec.capacity,
                        vaccines: VACCINES
                            .iter()
                            .zip(spec.offers)
                            .filter(|(_, offered)| *offered)
                            .map(|(v, _)| v.to_string())
                            .collect(),
                        priority_reserve: spec.reserve,
                    },
                )
            })
            .collect();
        let put = Command::PutSlots(PutSlots {
            clinic_id: clinic_id(c),
            slots: specs,
        });
        state.execute(put, now, &mut log).expect("slots");
        model.stock.push(stock);
        model.slots.push(
            clinic
                .slots
                .iter()
                .map(|spec| MSlot {
                    start_ms: now + spec.start_offset_ms,
                    end_ms: now + spec.start_offset_ms + spec.duration_ms,
                    capacity: spec.capacity,
                    reserve: spec.reserve,
                    offers: spec.offers,
                    cancelled: false,
                })
                .collect(),
        );
    }
    (state, model, log)
}

fn run(setup: &[ClinicSetup], ops: &[Op]) -> Result<(), TestCaseError> {
    let (mut state, mut model, mut log) = build(setup);
    let mut previous = BTreeMap::new();
    check_state(&state, &model, &mut previous)?;
    for (i, op) in ops.iter().enumerate() {
        let Some((command, expect)) = model.step(op) else {
            // Time passing is not a command: nothing is sent, and nothing may change until
            // a command observes the new time.
            check_state(&state, &model, &mut previous)
                .map_err(|e| fail(format!("after step {i} {op:?}: {e}")))?;
            continue;
        };
        let mut events = Vec::new();
        let actual = state.execute(command.clone(), model.now, &mut events);
        check_outcome(&actual, &expect, &model)
            .map_err(|e| fail(format!("step {i} {op:?} ({command:?}): {e}")))?;
        if let Expect::Err(e) = &expect {
            // A refusal changes nothing, except the two that expire a hold on the way.
            let expires = matches!(e, DomainError::HoldExpired)
                || matches!(
                    (op, e),
                    (
                        Op::Cancel(_),
                        DomainError::InvalidTransition {
                            status: Status::Expired
                        }
                    )
                );
            if !expires {
                prop_assert!(
                    events.is_empty(),
                    "step {} refused but emitted {:?}",
                    i,
                    events
                );
            }
        }
        if let (
            Expect::Held { .. },
            Op::Hold {
                clinic, vaccine, ..
            },
        ) = (&expect, op)
        {
            // Invariant 2: a booking never takes `available` below 0.
            let c = *clinic as usize % model.clinics();
            let view = state
                .availability(&clinic_id(c), Some(VACCINES[*vaccine]), None, None)
                .map_err(|e| fail(format!("availability: {e}")))?;
            prop_assert!(
                view.stock.iter().all(|s| s.available >= 0),
                "{:?}",
                view.stock
            );
        }
        log.extend(events);
        check_state(&state, &model, &mut previous)
            .map_err(|e| fail(format!("after step {i} {op:?}: {e}")))?;
    }

    // The state is a pure function of its events: a replay reproduces it exactly.
    let mut replica = ShardState::new(0);
    for event in &log {
        replica.apply(event);
    }
    replica
        .check_invariants()
        .map_err(|e| fail(format!("replica: {e}")))?;
    for c in 0..model.clinics() {
        prop_assert_eq!(
            replica.availability(&clinic_id(c), None, None, None),
            state.availability(&clinic_id(c), None, None, None)
        );
    }
    for seq in 0..=model.next_seq {
        prop_assert_eq!(replica.get_appointment(seq), state.get_appointment(seq));
    }
    prop_assert_eq!(replica.counts(), state.counts());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn shard_state_agrees_with_the_model(
        setup in prop::collection::vec(clinic_setup(), 1..=2),
        ops in prop::collection::vec(op(), 1..=60),
    ) {
        run(&setup, &ops)?;
    }
}

/// A fixed scenario through the same checker, so the model itself is known to bite: the
/// reserve rule, OUT_OF_STOCK, a deficit that marks the newest hold at risk, a late confirm.
#[test]
fn fixed_scenario_through_the_model() {
    let setup = vec![ClinicSetup {
        slots: vec![SlotSetup {
            capacity: 3,
            reserve: 1,
            offers: [true, false],
            start_offset_ms: 10_000,
            duration_ms: 900_000,
        }],
        stock: [Some(3), None],
    }];
    let hold = |priority| Op::Hold {
        clinic: 0,
        slot: 0,
        vaccine: 0,
        citizen: 1,
        hold_ms: 1_000,
        priority,
    };
    let ops = vec![
        hold(false),
        hold(false),
        hold(false), // SOLD_OUT: the last seat is the unused priority reserve
        hold(true),  // a priority hold may take it
        Op::Hold {
            clinic: 0,
            slot: 0,
            vaccine: 1,
            citizen: 2,
            hold_ms: 1_000,
            priority: false,
        }, // VACCINE_NOT_OFFERED
        Op::Adjust {
            clinic: 0,
            vaccine: 0,
            delta: -1,
            unknown_batch: false,
        }, // deficit: the newest hold is at risk
        Op::Confirm(0),
        Op::Advance(1_000),
        Op::Confirm(1), // HOLD_EXPIRED, and it becomes EXPIRED
        Op::Confirm(1), // still HOLD_EXPIRED
        Op::Cancel(0),
        Op::Cancel(0), // repeat: OK, same status
        Op::ExpireDue,
        Op::Reject(2), // already expired: OK, no change
        Op::CancelSlot { clinic: 0, slot: 0 },
        Op::Hold {
            clinic: 0,
            slot: 0,
            vaccine: 0,
            citizen: 3,
            hold_ms: 10,
            priority: true,
        }, // SLOT_CANCELLED
    ];
    let (_, mut model, _) = build(&setup);
    let expects: Vec<Expect> = ops
        .iter()
        .map(|op| model.step(op).map_or(Expect::Expired(0), |(_, e)| e))
        .collect();
    assert_eq!(
        expects[0],
        Expect::Held {
            seq: 1,
            expires_at: T0 + 1_000
        }
    );
    assert_eq!(expects[2], Expect::Err(DomainError::SoldOut));
    assert!(matches!(expects[3], Expect::Held { seq: 3, .. }));
    assert_eq!(expects[4], Expect::Err(DomainError::VaccineNotOffered));
    assert_eq!(expects[8], Expect::Err(DomainError::HoldExpired));
    assert_eq!(expects[9], Expect::Err(DomainError::HoldExpired));
    assert_eq!(expects[15], Expect::Err(DomainError::SlotCancelled));
    run(&setup, &ops).expect("the engine agrees with the model");
}

/// No-shows through the same checker, at their exact instants: a CONFIRMED appointment
/// becomes NO_SHOW at slot end + grace and not a millisecond before, a move of the slot's
/// end moves it along, a cancelled one never does, and the seat stays counted.
#[test]
fn no_shows_through_the_model() {
    let setup = vec![ClinicSetup {
        slots: vec![SlotSetup {
            capacity: 3,
            reserve: 0,
            offers: [true, false],
            start_offset_ms: 1_000,
            duration_ms: 1_000,
        }],
        stock: [Some(3), None],
    }];
    let hold = |citizen| Op::Hold {
        clinic: 0,
        slot: 0,
        vaccine: 0,
        citizen,
        hold_ms: 900,
        priority: false,
    };
    // The slot runs T0+1000..T0+2000: no-shows fall due at T0+2500, T0+3000 after the move.
    let ops = vec![
        hold(1),
        hold(2),
        hold(3),
        Op::Confirm(0),
        Op::Confirm(1),
        Op::Confirm(2),
        Op::Cancel(2), // CANCELLED: never a no-show
        Op::Advance(2_450),
        Op::ExpireDue, // T0+2450: nothing due
        Op::MoveEnd {
            clinic: 0,
            slot: 0,
            shift_ms: 500,
        }, // the end moves to T0+2500: no-shows at T0+3000
        Op::Advance(50),
        Op::ExpireDue, // T0+2500: still nothing (the old instant)
        Op::Advance(499),
        Op::ExpireDue, // T0+2999: nothing
        Op::Advance(1),
        Op::ExpireDue, // T0+3000: two no-shows
        Op::Cancel(0), // NO_SHOW is final
        Op::ExpireDue, // nothing left to time
    ];
    let (_, mut model, _) = build(&setup);
    let expects: Vec<Expect> = ops
        .iter()
        .map(|op| model.step(op).map_or(Expect::Expired(0), |(_, e)| e))
        .collect();
    assert_eq!(expects[8], Expect::Expired(0));
    assert_eq!(expects[9], Expect::Slots);
    assert_eq!(expects[11], Expect::Expired(0));
    assert_eq!(expects[13], Expect::Expired(0));
    assert_eq!(expects[15], Expect::Expired(2));
    assert_eq!(
        expects[16],
        Expect::Err(DomainError::InvalidTransition {
            status: Status::NoShow
        })
    );
    assert_eq!(model.count(0, 0, Status::NoShow), 2);
    assert_eq!(model.remaining(0, 0), 1);
    run(&setup, &ops).expect("the engine agrees with the model");
}

// ---- invariant 5: the idempotency table -------------------------------------------------

const IDEM_KEYS: u8 = 4;
const IDEM_RECORDS_MAX: usize = 3;
const IDEM_RETENTION_MS: i64 = 100;

#[derive(Debug, Clone)]
enum IdemOp {
    Begin {
        key: u8,
        fingerprint: u8,
    },
    Finish {
        key: u8,
        status: Option<u16>,
    },
    Advance(i64),
    Purge,
    /// The journal stores everything shelved so far: those responses leave memory.
    Store,
}

fn idem_op() -> impl Strategy<Value = IdemOp> {
    prop_oneof![
        4 => (0..IDEM_KEYS, 0u8..2).prop_map(|(key, fingerprint)| IdemOp::Begin { key, fingerprint }),
        3 => (0..IDEM_KEYS, prop::option::weighted(0.8, prop::sample::select(vec![201u16, 409, 422])))
            .prop_map(|(key, status)| IdemOp::Finish { key, status }),
        2 => (0i64..=60).prop_map(IdemOp::Advance),
        1 => Just(IdemOp::Purge),
        2 => Just(IdemOp::Store),
    ]
}

#[derive(Debug, Clone)]
enum MEntry {
    InFlight {
        fingerprint: u8,
        waiters: Vec<u32>,
    },
    Done {
        fingerprint: u8,
        status: u16,
        at: i64,
    },
}

fn idem_key(k: u8) -> IdemKey {
    IdemKey {
        caller: "caller".into(),
        key: format!("key-{k}").into(),
    }
}

fn stored(status: u16) -> StoredResponse {
    StoredResponse {
        status,
        body: Arc::from(format!("{{\"status\":{status}}}")),
    }
}

fn model_purge(entries: &mut BTreeMap<u8, MEntry>, now: i64) -> usize {
    let old: Vec<u8> = entries
        .iter()
        .filter(|(_, e)| matches!(e, MEntry::Done { at, .. } if now - at >= IDEM_RETENTION_MS))
        .map(|(&k, _)| k)
        .collect();
    for k in &old {
        entries.remove(k);
    }
    old.len()
}

fn run_idempotency(ops: &[IdemOp]) -> Result<(), TestCaseError> {
    let mut table: IdempotencyTable<u32> =
        IdempotencyTable::new(IDEM_RECORDS_MAX, IDEM_RETENTION_MS);
    let mut entries: BTreeMap<u8, MEntry> = BTreeMap::new();
    // Every response is also shelved, as with the write-ahead log: (digest, stored at) ->
    // response, and the sequence number of its record.
    let mut shelf: BTreeMap<([u8; 16], i64), StoredResponse> = BTreeMap::new();
    let mut seq = 0u64;
    let mut now = 0i64;
    let mut next_waiter = 0u32;
    for (i, op) in ops.iter().enumerate() {
        match *op {
            IdemOp::Begin { key, fingerprint } => {
                let waiter = next_waiter;
                next_waiter += 1;
                // A completed record past the retention counts as gone.
                if matches!(entries.get(&key), Some(MEntry::Done { at, .. }) if now - at >= IDEM_RETENTION_MS)
                {
                    entries.remove(&key);
                }
                let read = |at: ShelfRef| {
                    shelf
                        .get(&(at.id.0, at.stored_at_ms))
                        .map_or(Begin::Unreadable, |r| Begin::Replay(r.clone()))
                };
                let (begin, handed_back) =
                    table.begin(&idem_key(key), [fingerprint; 32], waiter, now, read);
                if begin == Begin::Proceed {
                    // The invariant itself: one key, one runner, until the record is gone.
                    prop_assert!(
                        !entries.contains_key(&key),
                        "step {}: second Proceed for key {} while it is {:?}",
                        i,
                        key,
                        entries.get(&key)
                    );
                }
                let expect = match entries.get_mut(&key) {
                    Some(MEntry::Done {
                        fingerprint: f,
                        status,
                        ..
                    }) => {
                        if *f == fingerprint {
                            Begin::Replay(stored(*status))
                        } else {
                            Begin::Mismatch
                        }
                    }
                    Some(MEntry::InFlight {
                        fingerprint: f,
                        waiters,
                    }) => {
                        if *f == fingerprint {
                            waiters.push(waiter);
                            Begin::Queued
                        } else {
                            Begin::Mismatch
                        }
                    }
                    None => {
                        if entries.len() >= IDEM_RECORDS_MAX {
                            model_purge(&mut entries, now);
                        }
                        if entries.len() >= IDEM_RECORDS_MAX {
                            Begin::Full
                        } else {
                            entries.insert(
                                key,
                                MEntry::InFlight {
                                    fingerprint,
                                    waiters: Vec::new(),
                                },
                            );
                            Begin::Proceed
                        }
                    }
                };
                prop_assert_eq!(&begin, &expect, "step {} begin key {}", i, key);
                if begin == Begin::Queued {
                    prop_assert_eq!(handed_back, None);
                } else {
                    prop_assert_eq!(handed_back, Some(waiter));
                }
            }
            IdemOp::Finish { key, status } => {
                let waiters = table.finish(&idem_key(key), status.map(stored), now);
                if let (Some(status), Some(MEntry::InFlight { .. })) = (status, entries.get(&key)) {
                    seq += 1;
                    table.shelve(&idem_key(key), seq);
                    shelf.insert((KeyId::of(&idem_key(key)).0, now), stored(status));
                }
                let expect = match entries.get(&key) {
                    Some(MEntry::InFlight {
                        fingerprint,
                        waiters,
                    }) => {
                        let (fingerprint, waiters) = (*fingerprint, waiters.clone());
                        match status {
                            Some(status) => {
                                entries.insert(
                                    key,
                                    MEntry::Done {
                                        fingerprint,
                                        status,
                                        at: now,
                                    },
                                );
                            }
                            None => {
                                entries.remove(&key);
                            }
                        }
                        waiters
                    }
                    // Not in flight: nothing to end, and a stored response stays stored.
                    _ => Vec::new(),
                };
                prop_assert_eq!(waiters, expect, "step {} finish key {}", i, key);
            }
            IdemOp::Advance(ms) => now += ms,
            IdemOp::Purge => {
                let purged = table.purge(now);
                prop_assert_eq!(purged, model_purge(&mut entries, now), "step {} purge", i);
            }
            IdemOp::Store => {
                table.release_shelved(seq);
            }
        }
        prop_assert_eq!(table.len(), entries.len(), "step {} record count", i);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn idempotency_never_proceeds_twice(ops in prop::collection::vec(idem_op(), 1..=80)) {
        run_idempotency(&ops)?;
    }
}

/// A stray `finish` for a key whose response is already stored must not forget it: the next
/// replay would otherwise run the request a second time.
#[test]
fn finish_of_a_completed_key_keeps_its_record() {
    let mut table: IdempotencyTable<u32> = IdempotencyTable::new(10, 1_000);
    let k = idem_key(0);
    assert_eq!(table.begin(&k, [1; 32], 0, 0, no_shelf).0, Begin::Proceed);
    assert!(table.finish(&k, Some(stored(201)), 0).is_empty());
    // A second finish (a retried cast, a double call on an error path).
    assert!(table.finish(&k, Some(stored(201)), 1).is_empty());
    assert!(table.finish(&k, None, 2).is_empty());
    assert_eq!(
        table.begin(&k, [1; 32], 1, 3, no_shelf).0,
        Begin::Replay(stored(201))
    );
    assert_eq!(table.len(), 1);
}
