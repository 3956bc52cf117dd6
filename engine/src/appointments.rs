//! A shard's appointments, stored by sequence number.
//!
//! Sequence numbers of a shard are dense (1, 2, 3, ...: every hold takes the next one and an
//! appointment is never removed), so the table is an array indexed by `seq - 1`, not a hash
//! map: no key stored, no hashing, no load-factor slack. It is kept in fixed-size pages so
//! growing never copies the whole table and never leaves more than one page unused (a single
//! `Vec` doubling would copy a million appointments at once and could leave half its
//! capacity empty). At a million holds this is about half the memory of a hash map.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Appointment;
use crate::sized_decode::preallocated_entries;

/// Appointments per page. 4,096 × ~136 bytes ≈ 0.5 MiB: large enough that the page list is
/// short, small enough that a new shard's first page is cheap.
const PAGE: usize = 4096;

#[derive(Debug, Clone, Default)]
pub struct AppointmentTable {
    pages: Vec<Vec<Appointment>>,
    len: usize,
}

impl AppointmentTable {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sequence number the next appointment must have.
    pub fn next_seq(&self) -> u64 {
        self.len as u64 + 1
    }

    fn slot(seq: u64) -> Option<(usize, usize)> {
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        Some((index / PAGE, index % PAGE))
    }

    pub fn get(&self, seq: &u64) -> Option<&Appointment> {
        let (page, offset) = Self::slot(*seq)?;
        self.pages.get(page)?.get(offset)
    }

    pub fn get_mut(&mut self, seq: &u64) -> Option<&mut Appointment> {
        let (page, offset) = Self::slot(*seq)?;
        self.pages.get_mut(page)?.get_mut(offset)
    }

    /// Appends `appointment`, whose `seq` must be [`AppointmentTable::next_seq`]: the log is
    /// applied in order, so anything else is a broken log, not a case to handle.
    pub fn push(&mut self, appointment: Appointment) {
        assert_eq!(
            appointment.seq,
            self.next_seq(),
            "appointment sequence numbers must be dense"
        );
        match self.pages.last_mut() {
            Some(page) if page.len() < PAGE => page.push(appointment),
            _ => {
                let mut page = Vec::with_capacity(PAGE);
                page.push(appointment);
                self.pages.push(page);
            }
        }
        self.len += 1;
    }

    /// Every appointment, by sequence number (either way).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Appointment> {
        self.pages.iter().flatten()
    }
}

impl std::ops::Index<&u64> for AppointmentTable {
    type Output = Appointment;

    fn index(&self, seq: &u64) -> &Appointment {
        self.get(seq).expect("known appointment")
    }
}

/// Snapshots hold the appointments as one flat sequence, its length first (bincode needs
/// it, and a flattened iterator does not know it).
impl Serialize for AppointmentTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for appointment in self.iter() {
            seq.serialize_element(appointment)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for AppointmentTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(TableVisitor)
    }
}

/// Decodes the flat sequence straight into pages: no flat `Vec` of every appointment beside
/// the table (serde's own would also grow it by doubling, see [`crate::sized_decode`]), and
/// the page list allocated once at the announced length.
struct TableVisitor;

impl<'de> Visitor<'de> for TableVisitor {
    type Value = AppointmentTable;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("appointments by sequence number")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<AppointmentTable, A::Error> {
        let appointments = preallocated_entries::<Appointment>(access.size_hint());
        let mut table = AppointmentTable {
            pages: Vec::with_capacity(appointments.div_ceil(PAGE)),
            len: 0,
        };
        while let Some(appointment) = access.next_element::<Appointment>()? {
            if appointment.seq != table.next_seq() {
                return Err(serde::de::Error::custom(format!(
                    "appointment {} where {} was expected",
                    appointment.seq,
                    table.next_seq()
                )));
            }
            table.push(appointment);
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use std::sync::Arc;

    fn appointment(seq: u64) -> Appointment {
        Appointment {
            seq,
            status: Status::Pending,
            clinic: 0,
            slot: 0,
            vaccine: 0,
            citizen: Arc::from("c"),
            created_at_ms: 0,
            expires_at_ms: Some(1),
            confirmed_at_ms: None,
            administered_at_ms: None,
            batch: None,
            needs_review: false,
            at_risk: false,
            rebook_priority: false,
            claim: 0,
            offered_from_waitlist: false,
            rescheduled_from: None,
            rescheduled_to: None,
            no_show_at_ms: None,
        }
    }

    #[test]
    fn pages_fill_in_order_and_lookups_cross_page_boundaries() {
        let mut table = AppointmentTable::default();
        for seq in 1..=(2 * PAGE as u64 + 3) {
            table.push(appointment(seq));
        }
        assert_eq!(table.len(), 2 * PAGE + 3);
        assert_eq!(table.pages.len(), 3);
        for seq in [1, PAGE as u64, PAGE as u64 + 1, 2 * PAGE as u64 + 3] {
            assert_eq!(table[&seq].seq, seq);
        }
        assert!(table.get(&0).is_none());
        assert!(table.get(&(2 * PAGE as u64 + 4)).is_none());
        table.get_mut(&5).unwrap().status = Status::Confirmed;
        assert_eq!(table[&5].status, Status::Confirmed);
        assert!(table.iter().map(|a| a.seq).eq(1..=(2 * PAGE as u64 + 3)));
    }

    #[test]
    #[should_panic(expected = "dense")]
    fn a_gap_in_sequence_numbers_is_refused() {
        let mut table = AppointmentTable::default();
        table.push(appointment(2));
    }

    #[test]
    fn round_trips_through_bincode_and_refuses_a_gap() {
        let mut table = AppointmentTable::default();
        for seq in 1..=5 {
            table.push(appointment(seq));
        }
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&table, config).unwrap();
        let (back, _): (AppointmentTable, _) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert!(back.iter().map(|a| a.seq).eq(1..=5));

        let gap: Vec<Appointment> = vec![appointment(1), appointment(3)];
        let bytes = bincode::serde::encode_to_vec(&gap, config).unwrap();
        let err = bincode::serde::decode_from_slice::<AppointmentTable, _>(&bytes, config)
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("expected"), "{err}");
    }
}
