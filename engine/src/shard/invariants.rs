//! The invariants of a shard, recomputed from its appointments: checked after every step of
//! the property model, after every recovery (a replayed shard must satisfy what the live one
//! did) and by the races tests. O(state): never on the hot path.
//!
//! 1. Per slot that is not cancelled: `remaining + pending + confirmed + administered +
//!    no_show == capacity`, none negative; a cancelled slot holds no live seat.
//! 2. Per clinic and vaccine: `reserved` equals the PENDING + CONFIRMED appointments, and the
//!    batches sum to `on_hand`.
//! 3. The shard totals match, and the deadline queue times exactly the PENDING holds, each at
//!    its `expires_at`, and the CONFIRMED appointments' no-shows, each at its
//!    `no_show_at_ms` (set exactly while CONFIRMED, never before its slot's end): every
//!    appointment timed is timed once and nothing else is.
//! 3. An ADMINISTERED appointment names its instant and a batch its clinic holds for its
//!    vaccine; no other appointment names either.
//! 4. The shard totals match, and the deadline queue times exactly the PENDING holds, each at
//!    its `expires_at`.

use rustc_hash::FxHashMap;

use super::ShardState;
use crate::deadlines::Deadline;
use crate::model::{Appointment, Clinic, Status, VaccineIdx};

impl ShardState {
    /// `Err` names the first broken invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut pending = 0u64;
        let mut confirmed = 0u64;
        for (ci, c) in self.clinics.iter().enumerate() {
            let (p, cf) = self.check_clinic(ci, c)?;
            pending += p;
            confirmed += cf;
        }
        if pending != self.counts.pending || confirmed != self.counts.confirmed {
            return Err(format!(
                "shard totals pending {} confirmed {}, appointments say {pending} {confirmed}",
                self.counts.pending, self.counts.confirmed
            ));
        }
        self.check_deadlines(pending, confirmed)
    }

    /// Invariants 1 to 3 for one clinic; answers its (pending, confirmed) counts.
    fn check_clinic(&self, ci: usize, c: &Clinic) -> Result<(u64, u64), String> {
        let mut per_slot = vec![[0u32; 5]; c.slots.len()];
        let mut per_vaccine: FxHashMap<VaccineIdx, i64> = FxHashMap::default();
        let (mut pending, mut confirmed) = (0u64, 0u64);
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
            let holds_seat = matches!(
                a.status,
                Status::Pending | Status::Confirmed | Status::Administered | Status::NoShow
            );
            if a.rebook_priority && holds_seat {
                counters[4] += 1;
            }
            if a.status.is_active() {
                *per_vaccine.entry(a.vaccine).or_default() += 1;
            }
            check_administered(c, a)?;
            pending += u64::from(a.status == Status::Pending);
            confirmed += u64::from(a.status == Status::Confirmed);
            let end_ms = c.slots[a.slot as usize].end_ms;
            let timed_right = match a.no_show_at_ms {
                Some(at_ms) => a.status == Status::Confirmed && at_ms >= end_ms,
                None => a.status != Status::Confirmed,
            };
            if !timed_right {
                return Err(format!(
                    "appointment {seq} is {} with no-show instant {:?} (slot ends {end_ms})",
                    a.status.as_str(),
                    a.no_show_at_ms
                ));
            }
        }
        check_slots(c, &per_slot)?;
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
        Ok((pending, confirmed))
    }

    /// The deadline queue times exactly the `pending` holds, each at its deadline, and the
    /// `confirmed` appointments' no-shows, each at its instant. Entries are distinct and each
    /// names a different appointment in the state it times, so equal counts mean each is
    /// timed exactly once.
    fn check_deadlines(&self, pending: u64, confirmed: u64) -> Result<(), String> {
        for (at_ms, deadline) in self.deadlines.iter() {
            let (seq, live) = match deadline {
                Deadline::Hold { seq } => (
                    seq,
                    self.appointments.get(&seq).is_some_and(|a| {
                        a.status == Status::Pending && a.expires_at_ms == Some(at_ms)
                    }),
                ),
                Deadline::NoShow { seq } => (
                    seq,
                    self.appointments.get(&seq).is_some_and(|a| {
                        a.status == Status::Confirmed && a.no_show_at_ms == Some(at_ms)
                    }),
                ),
            };
            if !live {
                return Err(format!(
                    "{deadline:?} is timed at {at_ms} but appointment {seq} is not in that state then"
                ));
            }
        }
        if self.deadlines.len() as u64 != pending + confirmed {
            return Err(format!(
                "{} deadlines timed for {pending} pending holds and {confirmed} confirmed",
                self.deadlines.len()
            ));
        }
        Ok(())
    }
}

/// Invariant 3 for one appointment of `c`.
fn check_administered(c: &Clinic, a: &Appointment) -> Result<(), String> {
    let administered = a.status == Status::Administered;
    let batch_held = a.batch.as_ref().is_some_and(|b| {
        c.stock
            .get(&a.vaccine)
            .is_some_and(|s| s.batches.contains_key(b))
    });
    let consistent = if administered {
        batch_held && a.administered_at_ms.is_some() && !a.at_risk
    } else {
        a.batch.is_none() && a.administered_at_ms.is_none()
    };
    if consistent {
        Ok(())
    } else {
        Err(format!(
            "appointment {} ({}): batch {:?} administered at {:?}",
            a.seq,
            a.status.as_str(),
            a.batch,
            a.administered_at_ms
        ))
    }
}

/// Invariant 1 for each slot of `c`, against what its appointments say (`per_slot`:
/// pending, confirmed, administered, no-show and priority seats).
fn check_slots(c: &Clinic, per_slot: &[[u32; 5]]) -> Result<(), String> {
    for (s, counters) in c.slots.iter().zip(per_slot) {
        let expect = [
            s.pending,
            s.confirmed,
            s.administered,
            s.no_show,
            s.priority_taken,
        ];
        let at = || format!("{}/{}", c.id, s.id);
        if *counters != expect {
            return Err(format!(
                "slot {}: counters {expect:?}, appointments say {counters:?}",
                at()
            ));
        }
        if s.cancelled && (s.pending != 0 || s.confirmed != 0) {
            return Err(format!("cancelled slot {} still holds seats", at()));
        }
        if !s.cancelled && s.remaining() + s.taken() != s.capacity {
            return Err(format!("slot {}: counters do not sum to capacity", at()));
        }
        if s.taken() > s.capacity {
            return Err(format!("slot {} oversold", at()));
        }
    }
    Ok(())
}
