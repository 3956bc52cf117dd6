//! Administration, decided and applied by a shard alone: the order of its checks, the batch's
//! expiry on the slot's local date, what it takes from the counters, and that the invariants
//! and a replay of the log agree with the live shard.

use chrono::NaiveDate;
use holdfast_engine::command::{
    AdjustStock, Administer, Cancel, Confirm, Hold, PutClinic, PutSlots, PutVaccine, ReceiveStock,
};
use holdfast_engine::model::{ClinicInfo, SlotSpec, Status, VaccineRules};
use holdfast_engine::shard::ShardState;
use holdfast_engine::{Command, DomainError, Event, Output};

/// 2027-03-01T12:00:00Z: the commands' "now".
const NOW_MS: i64 = 1_803_902_400_000;
/// 2027-03-01T23:30:00Z: already 2 March in Berlin (UTC+1 in winter).
const SLOT_START_MS: i64 = 1_803_943_800_000;

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn rules() -> VaccineRules {
    VaccineRules {
        min_age: None,
        max_age: None,
        regions: vec![],
        series_doses: 2,
        min_interval_days: 21,
        contraindications: vec![],
    }
}

fn stock(vaccine: &str, batch: &str, quantity: i64, expires_on: &str) -> Command {
    Command::ReceiveStock(ReceiveStock {
        clinic_id: "k".into(),
        vaccine: vaccine.into(),
        batch: batch.into(),
        quantity,
        expires_on: date(expires_on),
    })
}

fn administer(seq: u64, clinic_id: &str, batch: &str) -> Command {
    Command::Administer(Administer {
        seq,
        clinic_id: clinic_id.into(),
        batch: batch.into(),
    })
}

/// A Berlin clinic `k` with one slot (late on 1 March UTC, 2 March locally), batches of `vx`
/// (`B-LAST` usable through 2 March, `B-OLD` through 1 March, `B-ZERO` emptied) and of `other`
/// (`O-1`); appointments 1 and 2 CONFIRMED, 3 CANCELLED.
fn shard(log: &mut Vec<Event>) -> ShardState {
    let mut state = ShardState::new(0);
    let mut commands = vec![];
    for name in ["vx", "other"] {
        commands.push(Command::PutVaccine(PutVaccine {
            name: name.into(),
            rules: rules(),
        }));
    }
    commands.push(Command::PutClinic(PutClinic {
        clinic_id: "k".into(),
        info: ClinicInfo {
            name: "k".into(),
            region: "r".into(),
            timezone: "Europe/Berlin".into(),
        },
    }));
    commands.push(Command::PutSlots(PutSlots {
        clinic_id: "k".into(),
        slots: vec![(
            "s".into(),
            SlotSpec {
                start_ms: SLOT_START_MS,
                end_ms: SLOT_START_MS + 900_000,
                capacity: 5,
                vaccines: vec!["vx".into()],
                priority_reserve: 0,
            },
        )],
    }));
    commands.push(stock("vx", "B-LAST", 5, "2027-03-02"));
    commands.push(stock("vx", "B-OLD", 5, "2027-03-01"));
    commands.push(stock("vx", "B-ZERO", 1, "2099-01-01"));
    commands.push(stock("other", "O-1", 5, "2099-01-01"));
    commands.push(Command::AdjustStock(AdjustStock {
        clinic_id: "k".into(),
        vaccine: "vx".into(),
        batch: "B-ZERO".into(),
        delta: -1,
        reason: "broken".into(),
    }));
    for (i, citizen) in ["p1", "p2", "p3"].into_iter().enumerate() {
        commands.push(Command::Hold(Hold::new("k", "s", "vx", citizen, 60_000)));
        commands.push(Command::Confirm(Confirm {
            seq: i as u64 + 1,
            citizen: None,
        }));
    }
    commands.push(Command::Cancel(Cancel {
        seq: 3,
        citizen: None,
    }));
    for command in commands {
        state
            .execute(command, NOW_MS, log)
            .expect("set-up succeeds");
    }
    state
}

fn refused(state: &mut ShardState, command: Command) -> DomainError {
    let mut log = Vec::new();
    let error = state.execute(command, NOW_MS, &mut log).unwrap_err();
    assert!(log.is_empty(), "a refusal changed the shard: {log:?}");
    error
}

#[test]
fn refusals_come_in_the_contracts_order_and_change_nothing() {
    let mut state = shard(&mut Vec::new());
    let before = format!("{:?}", state.availability("k", None, None, None));
    // Another clinic's staff, before anything about the batch.
    assert_eq!(
        refused(&mut state, administer(1, "elsewhere", "nope")),
        DomainError::NotYours
    );
    assert_eq!(
        refused(&mut state, administer(3, "k", "nope")),
        DomainError::InvalidTransition {
            status: Status::Cancelled
        }
    );
    assert!(matches!(
        refused(&mut state, administer(1, "k", "nope")),
        DomainError::NotFound(_)
    ));
    assert_eq!(
        refused(&mut state, administer(1, "k", "O-1")),
        DomainError::WrongBatch {
            vaccine: "other".into()
        }
    );
    assert_eq!(
        refused(&mut state, administer(1, "k", "B-ZERO")),
        DomainError::InsufficientStock { on_hand: 0 }
    );
    // 1 March is the batch's last day; the slot is on 2 March in Berlin (1 March in UTC).
    assert_eq!(
        refused(&mut state, administer(1, "k", "B-OLD")),
        DomainError::BatchExpired {
            expires_on: date("2027-03-01")
        }
    );
    assert!(matches!(
        refused(&mut state, administer(99, "k", "B-LAST")),
        DomainError::NotFound(_)
    ));
    assert_eq!(
        format!("{:?}", state.availability("k", None, None, None)),
        before
    );
    state.check_invariants().unwrap();
}

#[test]
fn a_dose_leaves_its_batch_on_its_last_day_and_a_replay_agrees() {
    let mut log = Vec::new();
    let mut state = shard(&mut log);
    let a = match state.execute(administer(1, "k", "B-LAST"), NOW_MS, &mut log) {
        Ok(Output::Appointment(a)) => a,
        other => panic!("not administered: {other:?}"),
    };
    assert_eq!(a.status, Status::Administered);
    assert_eq!(a.batch.as_deref(), Some("B-LAST"));
    assert_eq!(a.administered_at_ms, Some(NOW_MS));
    // The dose the citizen's history gains: on the slot's local date.
    let dose = a.dose.clone().expect("a dose");
    assert_eq!(
        (dose.vaccine.as_str(), dose.date),
        ("vx", date("2027-03-02"))
    );
    let event = log.last().expect("an event").clone();
    assert!(matches!(
        event,
        Event::AppointmentAdministered { seq: 1, .. }
    ));
    // It ends no claim here (made without one).
    assert_eq!(state.notice_for(&event), None);

    let view = state.availability("k", None, None, None).unwrap();
    let vx = view.stock.iter().find(|s| &*s.vaccine == "vx").unwrap();
    // 11 received, 1 broken, 1 given; 1 CONFIRMED left.
    assert_eq!((vx.on_hand, vx.reserved, vx.available), (9, 1, 8));
    let slot = &view.slots[0];
    assert_eq!(
        (slot.confirmed, slot.administered, slot.remaining),
        (1, 1, 3)
    );
    state.check_invariants().unwrap();

    // A repeat answers the same appointment and takes nothing more.
    let mut again = Vec::new();
    let Ok(Output::Appointment(b)) =
        state.execute(administer(1, "k", "B-OLD"), NOW_MS + 5, &mut again)
    else {
        panic!("answered");
    };
    assert!(again.is_empty());
    assert_eq!(b, a);

    let mut replayed = ShardState::new(0);
    for event in &log {
        replayed.apply(event);
    }
    replayed.check_invariants().unwrap();
    assert_eq!(
        format!("{:?}", replayed.availability("k", None, None, None)),
        format!("{:?}", state.availability("k", None, None, None))
    );
    assert_eq!(replayed.get_appointment(1), state.get_appointment(1));
}
