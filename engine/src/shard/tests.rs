//! A populated shard's snapshot decodes to the state it was taken of (the sized decode of
//! its large collections, `crate::sized_decode`, included).

use chrono::NaiveDate;

use super::*;
use crate::command::{Confirm, Hold, JoinWaitlist, PutCitizen, PutClinic, PutSlots};
use crate::command::{PutVaccine, ReceiveStock, TakeClaim};
use crate::idempotency::{AnswerRecord, KeyId, StoredResponse, KEY_ID_BYTES};
use crate::journal::{decode, encode, Snapshot};
use crate::model::{CitizenRecord, ClinicInfo, SlotSpec, VaccineRules};

const NOW_MS: UnixMs = 1_800_000_000_000;
const SLOTS: usize = 20;
const SEATS_PER_SLOT: u32 = 3;

fn record(i: usize) -> CitizenRecord {
    CitizenRecord {
        birth_date: NaiveDate::from_ymd_opt(1950 + (i % 50) as i32, 1, 1).expect("valid"),
        region: format!("region-{}", i % 7),
        allergies: if i.is_multiple_of(10) {
            vec!["egg".into()]
        } else {
            vec![]
        },
        insurance_id: format!("ins-{i}"),
        doses: vec![],
    }
}

/// A shard with `citizens` citizens, every seat of its clinic held (half of them
/// confirmed), citizens waiting for the sold-out slots, and claims.
fn populated(citizens: usize) -> ShardState {
    let mut commands = vec![
        Command::PutVaccine(PutVaccine {
            name: "vx".into(),
            rules: VaccineRules {
                min_age: None,
                max_age: None,
                regions: vec![],
                series_doses: 2,
                min_interval_days: 0,
                contraindications: vec![],
            },
        }),
        Command::PutClinic(PutClinic {
            clinic_id: "k".into(),
            info: ClinicInfo {
                name: "k".into(),
                region: "region-0".into(),
                timezone: "UTC".into(),
            },
        }),
        Command::PutSlots(PutSlots {
            clinic_id: "k".into(),
            slots: (0..SLOTS as i64)
                .map(|i| {
                    let start_ms = NOW_MS + 86_400_000 + i * 900_000;
                    let spec = SlotSpec {
                        start_ms,
                        end_ms: start_ms + 900_000,
                        capacity: SEATS_PER_SLOT,
                        vaccines: vec!["vx".into()],
                        priority_reserve: 0,
                    };
                    (format!("s{i}"), spec)
                })
                .collect(),
        }),
        Command::ReceiveStock(ReceiveStock {
            clinic_id: "k".into(),
            vaccine: "vx".into(),
            batch: "B".into(),
            quantity: 1000,
            expires_on: NaiveDate::from_ymd_opt(2030, 1, 1).expect("valid"),
        }),
    ];
    commands.extend((0..citizens).map(|i| {
        Command::PutCitizen(PutCitizen {
            citizen_id: format!("c{i}"),
            record: record(i),
        })
    }));
    let seats = SLOTS * SEATS_PER_SLOT as usize;
    commands.extend((0..seats).map(|i| {
        let slot = format!("s{}", i % SLOTS);
        Command::Hold(Hold::new("k", &slot, "vx", &format!("c{i}"), 60_000))
    }));
    commands
        .extend((1..=seats as u64 / 2).map(|seq| Command::Confirm(Confirm { seq, citizen: None })));
    commands.extend((seats..seats + 30).map(|i| {
        Command::JoinWaitlist(JoinWaitlist {
            clinic_id: "k".into(),
            slot_id: format!("s{}", i % SLOTS),
            vaccine: "vx".into(),
            citizen_id: format!("c{i}"),
            citizen: Some(Arc::new(record(i))),
            per_slot_max: 1000,
        })
    }));
    commands.extend((seats + 30..seats + 80).map(|i| {
        Command::TakeClaim(TakeClaim {
            citizen_id: format!("c{i}"),
            clinic_shard: 0,
            origin: [i as u8; 16],
            expires_at_ms: NOW_MS + 60_000,
            replace: None,
            moving: None,
            offer: true,
        })
    }));

    let mut state = ShardState::new(0);
    let mut log = Vec::new();
    for command in commands {
        let described = format!("{command:?}");
        if let Err(error) = state.execute(command, NOW_MS, &mut log) {
            panic!("{described}: {error:?}");
        }
    }
    state.check_invariants().expect("invariants");
    state
}

/// Asserts that `back` holds what `state` holds (hash maps compared as maps: their
/// iteration order depends on the order their entries were inserted in).
fn assert_same_state(back: &ShardState, state: &ShardState) {
    back.check_invariants().expect("invariants after decoding");
    assert_eq!(back.counts(), state.counts());
    assert_eq!(back.citizens.len(), state.citizens.len());
    for (id, entry) in &state.citizens {
        let decoded = &back.citizens[id];
        assert_eq!(decoded.record(&back.regions), entry.record(&state.regions));
        assert_eq!(decoded.claim, entry.claim);
        assert_eq!(decoded.appointments(), entry.appointments());
        assert_eq!(
            back.waitlists.of_citizen(id),
            state.waitlists.of_citizen(id)
        );
    }
    for (decoded, clinic) in back.clinics.iter().zip(&state.clinics) {
        assert_eq!(decoded.slot_index, clinic.slot_index);
        assert_eq!(decoded.appointments, clinic.appointments);
        assert!(decoded
            .slots
            .iter()
            .map(|s| &s.id)
            .eq(clinic.slots.iter().map(|s| &s.id)));
    }
    for seq in 1..=state.appointments.len() as u64 {
        assert_eq!(back.get_appointment(seq), state.get_appointment(seq));
    }
    for slot in state.waitlists.slots() {
        assert!(back
            .waitlists
            .of_slot(slot)
            .eq(state.waitlists.of_slot(slot)));
    }
    assert!(back.deadlines.iter().eq(state.deadlines.iter()));
}

#[test]
fn a_snapshot_decodes_to_the_state_it_was_taken_of() {
    let state = populated(300);
    assert_eq!(state.citizens.len(), 300);
    assert_eq!(state.appointments.len(), SLOTS * SEATS_PER_SLOT as usize);
    assert!(!state.waitlists.is_empty());
    let snapshot = Snapshot {
        seq: 42,
        state: state.clone(),
        idempotency: (0..3)
            .map(|i| AnswerRecord {
                id: KeyId([i; KEY_ID_BYTES]),
                fingerprint: [i; 32],
                stored_at_ms: NOW_MS,
                // One in memory, the others on a journal's shelf.
                response: (i == 0).then(|| StoredResponse {
                    status: 201,
                    body: "{}".into(),
                }),
            })
            .collect(),
        unrecorded: vec![],
    };
    let bytes = encode(&snapshot);

    let back: Snapshot = decode(&bytes).expect("decodes");
    assert_eq!(back.seq, 42);
    assert_eq!(back.idempotency, snapshot.idempotency);
    assert_same_state(&back.state, &state);
    // Encoding it again writes the same entries (the maps' in another order, see
    // `assert_same_state`), which decode to the same state again.
    let again = encode(&back);
    assert_eq!(again.len(), bytes.len());
    let twice: Snapshot = decode(&again).expect("decodes again");
    assert_same_state(&twice.state, &state);
}
