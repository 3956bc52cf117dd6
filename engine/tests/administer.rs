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

// ---- the citizen's side: the claim settled with the dose -------------------------------

mod citizen_side {
    use std::sync::Arc;

    use holdfast_engine::claims::{ClaimOutcome, Settle, SettleOutcome, Stale, NO_ORIGIN};
    use holdfast_engine::command::{PutCitizen, SettleClaims, TakeClaim};
    use holdfast_engine::model::{CitizenRecord, DoseRecord};
    use holdfast_engine::shard::ShardState;
    use holdfast_engine::{Command, Event, Output};

    use super::{date, NOW_MS};

    fn exec(state: &mut ShardState, command: Command) -> (Output, Vec<Event>) {
        let mut log = Vec::new();
        let output = state.execute(command, NOW_MS, &mut log).expect("accepted");
        (output, log)
    }

    fn take(replace: Option<Stale>) -> Command {
        Command::TakeClaim(TakeClaim {
            citizen_id: "ann".into(),
            clinic_shard: 1,
            origin: NO_ORIGIN,
            expires_at_ms: NOW_MS + 60_000,
            replace,
            moving: None,
        })
    }

    fn settle(attempt: u64, outcome: SettleOutcome) -> Command {
        Command::SettleClaims(SettleClaims {
            settles: vec![Settle {
                citizen_id: Arc::from("ann"),
                attempt,
                outcome,
            }],
        })
    }

    fn dose() -> DoseRecord {
        DoseRecord {
            vaccine: "vx".into(),
            date: date("2027-03-02"),
        }
    }

    fn administered() -> SettleOutcome {
        SettleOutcome::Administered {
            vaccine: "vx".into(),
            date: date("2027-03-02"),
        }
    }

    /// A citizen whose claim (attempt 1) is bound to appointment 7 of shard 1.
    fn citizen() -> ShardState {
        let mut state = ShardState::new(0);
        exec(
            &mut state,
            Command::PutCitizen(PutCitizen {
                citizen_id: "ann".into(),
                record: CitizenRecord {
                    birth_date: date("1980-01-01"),
                    region: "r".into(),
                    allergies: vec![],
                    insurance_id: "I-1".into(),
                    doses: vec![],
                },
            }),
        );
        exec(&mut state, take(None));
        exec(
            &mut state,
            settle(
                1,
                SettleOutcome::Bound {
                    seq: 7,
                    expires_at_ms: None,
                },
            ),
        );
        assert_eq!(state.claims().len(), 1);
        state
    }

    #[test]
    fn the_notice_ends_the_claim_and_adds_the_dose_once_durably() {
        let mut state = citizen();
        let (_, log) = exec(&mut state, settle(1, administered()));
        assert_eq!(log.len(), 1);
        assert!(log[0].is_journaled(), "the dose must survive a restart");
        assert!(state.claims().is_empty());
        assert_eq!(state.citizen("ann").unwrap().doses, vec![dose()]);
        // A repeated or late notice changes nothing.
        let (_, again) = exec(&mut state, settle(1, administered()));
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(state.citizen("ann").unwrap().doses, vec![dose()]);
    }

    #[test]
    fn a_notice_after_the_claim_moved_on_still_adds_the_dose_and_leaves_the_new_claim() {
        let mut state = citizen();
        // A new booking found the administered claim in its way and replaced it (without
        // the dose: an older saga's view), before the notice arrived.
        exec(
            &mut state,
            take(Some(Stale {
                attempt: 1,
                clinic_cancelled: false,
                administered: None,
            })),
        );
        let new_attempt = state.claims()[0].1.attempt;
        assert_ne!(new_attempt, 1);
        let (_, log) = exec(&mut state, settle(1, administered()));
        assert_eq!(log.len(), 1);
        assert_eq!(state.citizen("ann").unwrap().doses, vec![dose()]);
        assert_eq!(
            state.claims()[0].1.attempt,
            new_attempt,
            "the new claim stays"
        );
    }

    #[test]
    fn a_booking_that_replaces_the_administered_claim_sees_the_dose_at_once() {
        let mut full_log = Vec::new();
        let mut state = citizen();
        let (output, log) = exec(
            &mut state,
            take(Some(Stale {
                attempt: 1,
                clinic_cancelled: false,
                administered: Some(dose()),
            })),
        );
        full_log.extend(log.iter().cloned());
        // The rules of this booking read the record the claim answered: the dose is in it.
        let Output::Claim(ClaimOutcome::Taken(taken)) = output else {
            panic!("claim taken: {output:?}");
        };
        assert_eq!(taken.record.doses, vec![dose()]);
        assert_eq!(state.citizen("ann").unwrap().doses, vec![dose()]);
        // The notice that arrives later is a no-op.
        let (_, late) = exec(&mut state, settle(1, administered()));
        assert!(late.is_empty(), "{late:?}");
        // The dose was journaled (the new claim, tentative, was not).
        let mut rebuilt = citizen();
        for event in full_log.iter().filter(|e| e.is_journaled()) {
            rebuilt.apply(event);
        }
        assert_eq!(rebuilt.citizen("ann").unwrap().doses, vec![dose()]);
        assert!(rebuilt.claims().is_empty());
    }
}
