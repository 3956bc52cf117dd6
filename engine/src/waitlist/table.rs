//! The waitlists of one shard's slots: the lists in joining order and their indices by
//! entry and by citizen (part of the shard's state, so in its snapshots).

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::WaitEntry;

/// A slot of a shard, by index: (clinic, slot).
pub type SlotAt = (u32, u32);

/// The waitlists of one shard's slots, with their indices. Changed only by
/// `ShardState::apply` (through [`Waitlists::join`], [`Waitlists::leave`] and
/// [`Waitlists::drop_slot`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Waitlists {
    /// Per slot, its entries in the order they joined (the front is position 1).
    #[serde(deserialize_with = "crate::sized_decode::map")]
    slots: FxHashMap<SlotAt, VecDeque<WaitEntry>>,
    /// Entry number -> its slot.
    #[serde(deserialize_with = "crate::sized_decode::map")]
    by_seq: FxHashMap<u64, SlotAt>,
    /// Citizen -> the numbers of its entries in this shard.
    #[serde(deserialize_with = "crate::sized_decode::map")]
    by_citizen: FxHashMap<Arc<str>, Vec<u64>>,
    next_seq: u64,
}

impl Waitlists {
    /// Whether no slot of the shard has anyone waiting.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The number the next entry gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.max(1)
    }

    /// The entries of `slot`, front first.
    pub fn of_slot(&self, slot: SlotAt) -> impl Iterator<Item = &WaitEntry> {
        self.slots.get(&slot).into_iter().flatten()
    }

    pub fn len_of_slot(&self, slot: SlotAt) -> usize {
        self.slots.get(&slot).map_or(0, VecDeque::len)
    }

    /// Slots with at least one entry.
    pub fn slots(&self) -> impl Iterator<Item = SlotAt> + '_ {
        self.slots.keys().copied()
    }

    /// The slot of entry `seq` and its position there (from 1).
    pub fn find(&self, seq: u64) -> Option<(SlotAt, usize, &WaitEntry)> {
        let slot = *self.by_seq.get(&seq)?;
        let (i, entry) = self.slots[&slot]
            .iter()
            .enumerate()
            .find(|(_, e)| e.seq == seq)?;
        Some((slot, i + 1, entry))
    }

    /// The numbers of `citizen`'s entries in this shard.
    pub fn of_citizen(&self, citizen: &str) -> &[u64] {
        self.by_citizen.get(citizen).map_or(&[], Vec::as_slice)
    }

    /// Whether `citizen` waits for `slot`.
    pub fn is_waiting(&self, citizen: &str, slot: SlotAt) -> bool {
        self.of_citizen(citizen)
            .iter()
            .any(|seq| self.by_seq.get(seq) == Some(&slot))
    }

    pub fn join(&mut self, slot: SlotAt, entry: WaitEntry) {
        let at = self.len_of_slot(slot);
        self.restore(slot, entry, at);
    }

    /// Puts `entry` at `index` of `slot`'s list (its end when the list is shorter).
    pub fn restore(&mut self, slot: SlotAt, entry: WaitEntry, index: usize) {
        self.next_seq = self.next_seq().max(entry.seq + 1);
        let previous = self.by_seq.insert(entry.seq, slot);
        assert!(
            previous.is_none(),
            "waitlist entry {} joined twice",
            entry.seq
        );
        self.by_citizen
            .entry(entry.citizen.clone())
            .or_default()
            .push(entry.seq);
        let list = self.slots.entry(slot).or_default();
        list.insert(index.min(list.len()), entry);
    }

    /// Takes entry `seq` off its list (the ones behind it move up).
    pub fn leave(&mut self, seq: u64) -> WaitEntry {
        let slot = self.by_seq.remove(&seq).expect("a known waitlist entry");
        let list = self.slots.get_mut(&slot).expect("its slot's list");
        let i = list
            .iter()
            .position(|e| e.seq == seq)
            .expect("the entry is on its slot's list");
        let entry = list.remove(i).expect("in range");
        if list.is_empty() {
            self.slots.remove(&slot);
        }
        self.unindex_citizen(&entry);
        entry
    }

    /// Drops `slot`'s whole list (the slot was cancelled).
    pub fn drop_slot(&mut self, slot: SlotAt) {
        for entry in self.slots.remove(&slot).unwrap_or_default() {
            self.by_seq.remove(&entry.seq);
            self.unindex_citizen(&entry);
        }
    }

    fn unindex_citizen(&mut self, entry: &WaitEntry) {
        if let Some(seqs) = self.by_citizen.get_mut(&entry.citizen) {
            seqs.retain(|s| *s != entry.seq);
            if seqs.is_empty() {
                self.by_citizen.remove(&entry.citizen);
            }
        }
    }

    /// The indices agree with the lists, and no citizen waits twice for one slot.
    pub fn check(&self) -> Result<(), String> {
        let mut entries = 0usize;
        for (slot, list) in &self.slots {
            if list.is_empty() {
                return Err(format!("empty waitlist kept for slot {slot:?}"));
            }
            for (i, e) in list.iter().enumerate() {
                entries += 1;
                if self.by_seq.get(&e.seq) != Some(slot) {
                    return Err(format!("waitlist entry {} not indexed by id", e.seq));
                }
                if !self.of_citizen(&e.citizen).contains(&e.seq) {
                    return Err(format!("waitlist entry {} not indexed by citizen", e.seq));
                }
                if list.iter().skip(i + 1).any(|o| o.citizen == e.citizen) {
                    return Err(format!("citizen {} waits twice for {slot:?}", e.citizen));
                }
                if e.seq >= self.next_seq() {
                    return Err(format!("waitlist entry {} beyond the counter", e.seq));
                }
            }
        }
        let by_citizen: usize = self.by_citizen.values().map(Vec::len).sum();
        if self.by_seq.len() != entries || by_citizen != entries {
            return Err(format!(
                "waitlist indices hold {} and {by_citizen} entries, the lists {entries}",
                self.by_seq.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waitlist::WaitEntry;

    fn entry(seq: u64, citizen: &str) -> WaitEntry {
        WaitEntry {
            seq,
            citizen: citizen.into(),
            vaccine: 0,
            joined_at_ms: 0,
        }
    }

    #[test]
    fn positions_close_up_and_indices_follow() {
        let mut w = Waitlists::default();
        w.join((0, 1), entry(1, "a"));
        w.join((0, 1), entry(2, "b"));
        w.join((0, 1), entry(3, "c"));
        w.join((0, 2), entry(4, "a"));
        assert_eq!(w.find(3).map(|(_, p, _)| p), Some(3));
        assert!(w.is_waiting("a", (0, 2)) && !w.is_waiting("b", (0, 2)));
        assert_eq!(w.leave(2).citizen.as_ref(), "b");
        assert_eq!(w.find(3).map(|(_, p, _)| p), Some(2));
        assert_eq!(w.of_citizen("b"), &[] as &[u64]);
        w.check().expect("consistent");
        w.drop_slot((0, 1));
        assert_eq!(w.of_citizen("a"), &[4]);
        assert_eq!(w.len_of_slot((0, 1)), 0);
        assert_eq!(w.next_seq(), 5);
        w.check().expect("consistent after a drop");
    }
}
