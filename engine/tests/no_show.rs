//! No-shows as typed deadlines, on one `ShardState` (pure: no actor, no clock): a CONFIRMED
//! appointment is timed exactly once, at slot end + grace; every way out of CONFIRMED
//! (cancel, clinic cancellation, a reschedule's move, its compensation) untimes it, leaving
//! no stale entry; the no-show itself returns the dose, keeps the seat counted and releases
//! the citizen's claim like a cancel; replay under another grace rebuilds the same instants.

use chrono::NaiveDate;
use holdfast_engine::claims::SettleOutcome;
use holdfast_engine::command::{
    Cancel, CancelSlot, Confirm, Hold, Move, PutClinic, PutSlots, PutVaccine, ReceiveStock, Reject,
};
use holdfast_engine::model::{ClinicInfo, SlotSpec};
use holdfast_engine::shard::{ShardConfig, ShardState};
use holdfast_engine::view::Output;
use holdfast_engine::{AppointmentId, Command, DomainError, Event, Status};

mod common;

const T0: i64 = 1_800_000_000_000;
const GRACE_MS: i64 = 60_000;
const CLINIC: &str = "clinic-ns";
const VACCINE: &str = "vx";
/// Slot `a` runs T0+1h..T0+1h15, slot `b` T0+2h..T0+2h15.
const HOUR_MS: i64 = 3_600_000;
const SLOT_MS: i64 = 15 * 60_000;

fn slot(start_ms: i64, end_ms: i64) -> SlotSpec {
    SlotSpec {
        start_ms,
        end_ms,
        capacity: 10,
        vaccines: vec![VACCINE.to_string()],
        priority_reserve: 0,
    }
}

/// A shard with one clinic, 10 doses, slots `a` and `b`; its log so far.
fn shard() -> (ShardState, Vec<Event>) {
    let mut state = ShardState::with_config(
        0,
        ShardConfig {
            no_show_grace_ms: GRACE_MS,
        },
    );
    let mut log = Vec::new();
    let setup = [
        Command::PutVaccine(PutVaccine {
            name: VACCINE.to_string(),
            rules: common::rules(None),
        }),
        Command::PutClinic(PutClinic {
            clinic_id: CLINIC.to_string(),
            info: ClinicInfo {
                name: "No-show clinic".to_string(),
                region: "north".to_string(),
                timezone: "Europe/Berlin".to_string(),
            },
        }),
        Command::ReceiveStock(ReceiveStock {
            clinic_id: CLINIC.to_string(),
            vaccine: VACCINE.to_string(),
            batch: "b1".to_string(),
            quantity: 10,
            expires_on: NaiveDate::from_ymd_opt(2099, 1, 1).unwrap(),
        }),
        Command::PutSlots(PutSlots {
            clinic_id: CLINIC.to_string(),
            slots: vec![
                ("a".to_string(), slot(T0 + HOUR_MS, T0 + HOUR_MS + SLOT_MS)),
                (
                    "b".to_string(),
                    slot(T0 + 2 * HOUR_MS, T0 + 2 * HOUR_MS + SLOT_MS),
                ),
            ],
        }),
    ];
    for command in setup {
        state.execute(command, T0, &mut log).expect("set-up");
    }
    (state, log)
}

fn run(state: &mut ShardState, log: &mut Vec<Event>, command: Command, now_ms: i64) -> Output {
    let output = state.execute(command, now_ms, log).expect("accepted");
    state.check_invariants().expect("invariants hold");
    output
}

/// A CONFIRMED appointment of `citizen` in `slot_id`; its seq.
fn confirmed(state: &mut ShardState, log: &mut Vec<Event>, slot_id: &str, citizen: &str) -> u64 {
    let hold = Hold::new(CLINIC, slot_id, VACCINE, citizen, 60_000);
    let Output::Appointment(a) = run(state, log, Command::Hold(hold), T0) else {
        panic!("a hold answers its appointment")
    };
    let confirm = Command::Confirm(Confirm {
        seq: a.id.seq,
        citizen: None,
    });
    run(state, log, confirm, T0);
    a.id.seq
}

fn expire_due(state: &mut ShardState, log: &mut Vec<Event>, now_ms: i64) -> usize {
    match run(state, log, Command::ExpireDue, now_ms) {
        Output::Expired(n) => n,
        other => panic!("ExpireDue answered {other:?}"),
    }
}

fn status(state: &ShardState, seq: u64) -> Status {
    state.get_appointment(seq).expect("known").status
}

#[test]
fn a_cancel_untimes_the_no_show() {
    let (mut state, mut log) = shard();
    let seq = confirmed(&mut state, &mut log, "a", "c1");
    assert_eq!(state.counts().timers, 1);
    assert_eq!(
        state.next_deadline(),
        Some(T0 + HOUR_MS + SLOT_MS + GRACE_MS)
    );
    let cancel = Command::Cancel(Cancel { seq, citizen: None });
    run(&mut state, &mut log, cancel, T0);
    assert_eq!(state.counts().timers, 0, "no stale no-show entry");
    assert_eq!(state.next_deadline(), None);
    assert_eq!(expire_due(&mut state, &mut log, T0 + 10 * HOUR_MS), 0);
    assert_eq!(status(&state, seq), Status::Cancelled);
}

#[test]
fn a_clinic_cancellation_untimes_the_no_show() {
    let (mut state, mut log) = shard();
    let in_a = confirmed(&mut state, &mut log, "a", "c1");
    let in_b = confirmed(&mut state, &mut log, "b", "c2");
    assert_eq!(state.counts().timers, 2);
    let cancel = Command::CancelSlot(CancelSlot {
        clinic_id: CLINIC.to_string(),
        slot_id: "a".to_string(),
        reason: "flood".to_string(),
    });
    run(&mut state, &mut log, cancel, T0);
    assert_eq!(status(&state, in_a), Status::ClinicCancelled);
    assert_eq!(
        state.counts().timers,
        1,
        "only slot b's appointment is timed"
    );
    assert_eq!(
        state.next_deadline(),
        Some(T0 + 2 * HOUR_MS + SLOT_MS + GRACE_MS)
    );
    assert_eq!(expire_due(&mut state, &mut log, T0 + 10 * HOUR_MS), 1);
    assert_eq!(status(&state, in_b), Status::NoShow);
    assert_eq!(status(&state, in_a), Status::ClinicCancelled);
}

#[test]
fn a_reschedule_times_the_new_appointment_and_untimes_the_old_one() {
    let (mut state, mut log) = shard();
    let old = confirmed(&mut state, &mut log, "a", "c1");
    // The reschedule's two steps on the clinic's shard: the new appointment, CONFIRMED at
    // once, then the move of the old one.
    let hold = Hold {
        confirmed: true,
        rescheduled_from: Some(AppointmentId { shard: 0, seq: old }),
        ..Hold::new(CLINIC, "b", VACCINE, "c1", 60_000)
    };
    let Output::Appointment(new) = run(&mut state, &mut log, Command::Hold(hold), T0) else {
        panic!("the new appointment")
    };
    assert_eq!(new.status, Status::Confirmed);
    assert_eq!(state.counts().timers, 2, "both CONFIRMED until the move");
    let moved = Command::Move(Move {
        seq: old,
        to: new.id,
    });
    run(&mut state, &mut log, moved, T0);
    assert_eq!(status(&state, old), Status::Cancelled);
    assert_eq!(state.counts().timers, 1);
    assert_eq!(
        state.next_deadline(),
        Some(T0 + 2 * HOUR_MS + SLOT_MS + GRACE_MS),
        "timed at the new slot's end + grace"
    );
    // Past the old slot's no-show instant: nothing; past the new one's: the new appointment.
    assert_eq!(
        expire_due(&mut state, &mut log, T0 + HOUR_MS + SLOT_MS + GRACE_MS),
        0
    );
    assert_eq!(
        expire_due(&mut state, &mut log, T0 + 2 * HOUR_MS + SLOT_MS + GRACE_MS),
        1
    );
    assert_eq!(status(&state, new.id.seq), Status::NoShow);
    assert_eq!(status(&state, old), Status::Cancelled);
}

#[test]
fn a_reschedules_compensation_untimes_its_new_confirmed_appointment() {
    let (mut state, mut log) = shard();
    let old = confirmed(&mut state, &mut log, "a", "c1");
    let hold = Hold {
        confirmed: true,
        rescheduled_from: Some(AppointmentId { shard: 0, seq: old }),
        ..Hold::new(CLINIC, "b", VACCINE, "c1", 60_000)
    };
    let Output::Appointment(new) = run(&mut state, &mut log, Command::Hold(hold), T0) else {
        panic!("the new appointment")
    };
    let reject = Command::Reject(Reject {
        seq: new.id.seq,
        reasons: vec!["move failed".to_string()],
    });
    run(&mut state, &mut log, reject, T0);
    assert_eq!(status(&state, new.id.seq), Status::Rejected);
    assert_eq!(
        state.counts().timers,
        1,
        "only the old appointment is timed"
    );
    assert_eq!(
        state.next_deadline(),
        Some(T0 + HOUR_MS + SLOT_MS + GRACE_MS)
    );
}

#[test]
fn a_no_show_returns_the_dose_keeps_the_seat_and_releases_the_claim_like_a_cancel() {
    let (mut state, mut log) = shard();
    let seq = confirmed(&mut state, &mut log, "a", "c1");
    let due_ms = T0 + HOUR_MS + SLOT_MS + GRACE_MS;
    assert_eq!(
        expire_due(&mut state, &mut log, due_ms - 1),
        0,
        "not before"
    );
    let before = log.len();
    assert_eq!(expire_due(&mut state, &mut log, due_ms), 1);
    let events = &log[before..];
    assert!(
        matches!(events, [Event::AppointmentNoShow { seq: s }] if *s == seq),
        "{events:?}"
    );
    assert_eq!(status(&state, seq), Status::NoShow);
    let view = state.availability(CLINIC, None, None, None).unwrap();
    let a = view.slots.iter().find(|s| &*s.slot_id == "a").unwrap();
    assert_eq!((a.confirmed, a.no_show, a.remaining), (0, 1, 9));
    assert_eq!(
        (view.stock[0].on_hand, view.stock[0].reserved),
        (10, 0),
        "the dose returns, none leaves the batch"
    );
    assert_eq!(state.counts().timers, 0);
    // No claim here (`claim` 0): a claimed appointment sends the cancel's notice.
    assert!(state.notice_for(&events[0]).is_none());
    // NO_SHOW is final.
    let cancel = Command::Cancel(Cancel { seq, citizen: None });
    assert_eq!(
        state.execute(cancel, due_ms, &mut Vec::new()).unwrap_err(),
        DomainError::InvalidTransition {
            status: Status::NoShow
        }
    );
}

#[test]
fn a_no_show_of_a_claimed_appointment_releases_the_claim_without_priority() {
    let (mut state, mut log) = shard();
    let hold = Hold {
        claim: 7,
        ..Hold::new(CLINIC, "a", VACCINE, "c1", 60_000)
    };
    let Output::Appointment(a) = run(&mut state, &mut log, Command::Hold(hold), T0) else {
        panic!("the hold")
    };
    let confirm = Command::Confirm(Confirm {
        seq: a.id.seq,
        citizen: None,
    });
    run(&mut state, &mut log, confirm, T0);
    let before = log.len();
    expire_due(&mut state, &mut log, T0 + 10 * HOUR_MS);
    let notice = state.notice_for(&log[before]).expect("a claim notice");
    assert_eq!(notice.attempt, 7);
    assert_eq!(&*notice.citizen_id, "c1");
    assert!(matches!(
        notice.outcome,
        SettleOutcome::Lapsed {
            clinic_cancelled: false
        }
    ));
}

#[test]
fn moving_a_slots_end_moves_its_no_shows_and_replay_ignores_the_configured_grace() {
    let (mut state, mut log) = shard();
    let seq = confirmed(&mut state, &mut log, "a", "c1");
    let later_end = T0 + HOUR_MS + 2 * SLOT_MS;
    let put = Command::PutSlots(PutSlots {
        clinic_id: CLINIC.to_string(),
        slots: vec![("a".to_string(), slot(T0 + HOUR_MS, later_end))],
    });
    run(&mut state, &mut log, put, T0);
    assert_eq!(state.next_deadline(), Some(later_end + GRACE_MS));
    assert_eq!(
        expire_due(&mut state, &mut log, later_end + GRACE_MS - 1),
        0
    );

    // A restart under another grace replays the same instants (the log carries them).
    let mut replica = ShardState::with_config(
        0,
        ShardConfig {
            no_show_grace_ms: 5 * GRACE_MS,
        },
    );
    for event in &log {
        replica.apply(event);
    }
    replica.check_invariants().expect("replica invariants");
    assert_eq!(replica.next_deadline(), Some(later_end + GRACE_MS));
    assert_eq!(replica.counts(), state.counts());
    assert_eq!(
        expire_due(&mut replica, &mut Vec::new(), later_end + GRACE_MS),
        1
    );
    assert_eq!(status(&replica, seq), Status::NoShow);
    // The new grace applies to what is confirmed from then on.
    let mut log2 = Vec::new();
    let next = confirmed(&mut replica, &mut log2, "b", "c2");
    assert_eq!(
        replica.next_deadline(),
        Some(T0 + 2 * HOUR_MS + SLOT_MS + 5 * GRACE_MS)
    );
    assert_eq!(status(&replica, next), Status::Confirmed);
}
