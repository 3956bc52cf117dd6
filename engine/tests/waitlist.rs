//! A shard's waitlists as the state machine keeps them, without actors: who may join and
//! when, positions that close up, an offer's hold that takes its entry off in the same step,
//! which changes hand the slot to the offer task, a cancelled slot's list, and the same lists
//! after replaying the log and after a snapshot.

use std::sync::Arc;

use chrono::NaiveDate;
use holdfast_engine::command::{
    Cancel, CancelSlot, Hold, JoinWaitlist, LeaveWaitlist, PutClinic, PutSlots, PutVaccine,
    ReceiveStock,
};
use holdfast_engine::error::{Limit, Resource};
use holdfast_engine::journal::{decode, encode, Snapshot};
use holdfast_engine::model::{CitizenRecord, ClinicInfo, SlotSpec, VaccineRules};
use holdfast_engine::shard::ShardState;
use holdfast_engine::waitlist::{WaitlistExit, WaitlistView};
use holdfast_engine::{Command, DomainError, Event, Output, Query, QueryAnswer};

const NOW_MS: i64 = 1_800_000_000_000;

/// A shard and every event it applied (its log).
struct Shard {
    state: ShardState,
    log: Vec<Event>,
}

impl Shard {
    fn new() -> Shard {
        let mut shard = Shard {
            state: ShardState::new(0),
            log: Vec::new(),
        };
        for command in catalogue() {
            shard.run(command).expect("the catalogue is accepted");
        }
        shard
    }

    fn run(&mut self, command: Command) -> Result<Output, DomainError> {
        let result = self.state.execute(command, NOW_MS, &mut self.log);
        self.state.check_invariants().expect("invariants hold");
        result
    }

    fn join(&mut self, citizen: &str, per_slot_max: usize) -> Result<(u64, u32), DomainError> {
        match self.run(Command::JoinWaitlist(JoinWaitlist {
            clinic_id: "k".into(),
            slot_id: "s".into(),
            vaccine: "vx".into(),
            citizen_id: citizen.into(),
            citizen: Some(Arc::new(record())),
            per_slot_max,
        }))? {
            Output::Waitlisted { id, position } => Ok((id.seq, position)),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn hold(&mut self, citizen: &str, waitlist: Option<u64>) -> Result<Output, DomainError> {
        self.run(Command::Hold(Hold {
            waitlist,
            ..Hold::new("k", "s", "vx", citizen, 60_000)
        }))
    }

    fn listing(&self, citizen: &str) -> Vec<WaitlistView> {
        let query = Query::CitizenWaitlist {
            citizen_id: citizen.into(),
        };
        match self.state.query(&query).expect("answered") {
            QueryAnswer::Waitlist(entries) => entries,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn position(&self, citizen: &str) -> Option<u32> {
        self.listing(citizen).first().map(|e| e.position)
    }
}

fn record() -> CitizenRecord {
    CitizenRecord {
        birth_date: NaiveDate::from_ymd_opt(1980, 5, 5).unwrap(),
        region: "r".into(),
        allergies: vec![],
        insurance_id: "I-1".into(),
        doses: vec![],
    }
}

/// Vaccine `vx`, clinic `k` with slot `s` of 2 seats tomorrow, 10 doses.
fn catalogue() -> Vec<Command> {
    let start_ms = NOW_MS + 86_400_000;
    vec![
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
                region: "r".into(),
                timezone: "UTC".into(),
            },
        }),
        Command::PutSlots(PutSlots {
            clinic_id: "k".into(),
            slots: vec![(
                "s".into(),
                SlotSpec {
                    start_ms,
                    end_ms: start_ms + 900_000,
                    capacity: 2,
                    vaccines: vec!["vx".into()],
                    priority_reserve: 0,
                },
            )],
        }),
        Command::ReceiveStock(ReceiveStock {
            clinic_id: "k".into(),
            vaccine: "vx".into(),
            batch: "B".into(),
            quantity: 10,
            expires_on: NaiveDate::from_ymd_opt(2030, 1, 1).unwrap(),
        }),
    ]
}

#[test]
fn joins_are_refused_while_seats_remain_and_beyond_the_bounds() {
    let mut shard = Shard::new();
    assert_eq!(shard.join("a", 10), Err(DomainError::SeatsAvailable));
    shard.hold("x", None).expect("a seat");
    shard.hold("y", None).expect("the last seat");
    assert_eq!(shard.join("a", 10), Ok((1, 1)));
    assert_eq!(shard.join("a", 10), Err(DomainError::AlreadyWaiting));
    assert_eq!(shard.join("b", 10), Ok((2, 2)));
    assert_eq!(
        shard.join("c", 2),
        Err(DomainError::LimitReached(Limit::WaitlistPerSlot))
    );
    let unknown = shard.run(Command::JoinWaitlist(JoinWaitlist {
        clinic_id: "k".into(),
        slot_id: "s".into(),
        vaccine: "vx".into(),
        citizen_id: "ghost".into(),
        citizen: None,
        per_slot_max: 10,
    }));
    assert!(matches!(unknown, Err(DomainError::NotEligible { .. })));
}

#[test]
fn an_offer_takes_its_entry_off_in_the_same_step_and_positions_close_up() {
    let mut shard = Shard::new();
    let x = match shard.hold("x", None).expect("a seat") {
        Output::Appointment(a) => a.id.seq,
        other => panic!("{other:?}"),
    };
    shard.hold("y", None).expect("the last seat");
    let (a, _) = shard.join("a", 10).unwrap();
    let (b, _) = shard.join("b", 10).unwrap();
    shard.join("c", 10).unwrap();

    // B leaves: C moves up. Another citizen may not take A's entry off.
    let not_yours = shard.run(Command::LeaveWaitlist(LeaveWaitlist {
        seq: a,
        citizen: Some("c".into()),
        why: WaitlistExit::Left,
    }));
    assert_eq!(not_yours.err(), Some(DomainError::NotYours));
    shard
        .run(Command::LeaveWaitlist(LeaveWaitlist {
            seq: b,
            citizen: Some("b".into()),
            why: WaitlistExit::Left,
        }))
        .expect("left");
    assert_eq!(shard.position("c"), Some(2));

    // X cancels: the change hands the slot to the offer task.
    let before = shard.log.len();
    shard
        .run(Command::Cancel(Cancel {
            seq: x,
            citizen: None,
        }))
        .expect("cancelled");
    let notices: Vec<_> = shard.log[before..]
        .iter()
        .flat_map(|e| shard.state.waitlist_notice_for(e))
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(&*notices[0].slot_id, "s");

    // An offer for an entry that is not the citizen's (or gone) holds nothing.
    assert_eq!(
        shard.hold("c", Some(a)).err(),
        Some(DomainError::NotFound(Resource::WaitlistEntry))
    );
    let before = shard.log.len();
    let held = shard.hold("a", Some(a)).expect("held for A");
    let Output::Appointment(held) = held else {
        panic!("{held:?}")
    };
    assert!(held.offered_from_waitlist);
    assert!(matches!(
        &shard.log[before..],
        [
            Event::AppointmentReserved(_),
            Event::WaitlistLeft {
                why: WaitlistExit::Served,
                ..
            }
        ]
    ));
    assert!(shard.listing("a").is_empty());
    assert_eq!(shard.position("c"), Some(1));
    // A hold without an entry makes no waitlist change and no offer notice.
    assert!(shard.log[before..]
        .iter()
        .all(|e| shard.state.waitlist_notice_for(e).is_empty()));
}

#[test]
fn a_cancelled_slot_drops_its_list_and_lists_come_back_from_the_log_and_a_snapshot() {
    let mut shard = Shard::new();
    shard.hold("x", None).unwrap();
    shard.hold("y", None).unwrap();
    for citizen in ["a", "b", "c"] {
        shard.join(citizen, 10).unwrap();
    }
    shard
        .run(Command::LeaveWaitlist(LeaveWaitlist {
            seq: 1,
            citizen: None,
            why: WaitlistExit::Skipped,
        }))
        .unwrap();

    // Replaying the log rebuilds the same lists.
    let mut replayed = ShardState::new(0);
    for event in &shard.log {
        replayed.apply(event);
    }
    replayed.check_invariants().expect("replayed invariants");
    let mut from_snapshot: Snapshot = decode(&encode(&Snapshot {
        seq: 1,
        state: shard.state.clone(),
        idempotency: vec![],
    }))
    .expect("decodes");
    for rebuilt in [&replayed, &from_snapshot.state] {
        for (citizen, position) in [("b", 1), ("c", 2)] {
            let query = Query::CitizenWaitlist {
                citizen_id: citizen.into(),
            };
            match rebuilt.query(&query).unwrap() {
                QueryAnswer::Waitlist(entries) => {
                    assert_eq!(entries.len(), 1);
                    assert_eq!(entries[0].position, position, "{citizen}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // The counter survives too: a new entry after a restart gets a new number.
    let mut events = Vec::new();
    let joined = from_snapshot.state.execute(
        Command::JoinWaitlist(JoinWaitlist {
            clinic_id: "k".into(),
            slot_id: "s".into(),
            vaccine: "vx".into(),
            citizen_id: "d".into(),
            citizen: Some(Arc::new(record())),
            per_slot_max: 10,
        }),
        NOW_MS,
        &mut events,
    );
    assert!(matches!(joined, Ok(Output::Waitlisted { id, position: 3 }) if id.seq == 4));

    shard
        .run(Command::CancelSlot(CancelSlot {
            clinic_id: "k".into(),
            slot_id: "s".into(),
            reason: "flood".into(),
        }))
        .unwrap();
    assert!(shard.listing("b").is_empty() && shard.listing("c").is_empty());
    assert_eq!(shard.join("d", 10), Err(DomainError::SlotCancelled));
    let query = Query::WaitlistSlots;
    assert!(matches!(shard.state.query(&query), Ok(QueryAnswer::WaitlistSlots(s)) if s.is_empty()));
}
