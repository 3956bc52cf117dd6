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
        unrecorded: vec![],
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

#[test]
fn a_started_slot_closes_its_list_at_the_next_tick_and_frees_the_citizens_places() {
    let mut shard = Shard::new();
    shard.hold("x", None).unwrap();
    shard.hold("y", None).unwrap();
    for citizen in ["a", "b", "c"] {
        shard.join(citizen, 10).unwrap();
    }
    let start_ms = NOW_MS + 86_400_000;
    let tick = |shard: &mut Shard, now_ms: i64| {
        let before = shard.log.len();
        let out = shard
            .state
            .execute(Command::ExpireDue, now_ms, &mut shard.log)
            .expect("a tick is never refused");
        shard.state.check_invariants().expect("invariants hold");
        (out, shard.log[before..].to_vec())
    };

    // Before the start nothing leaves (the holds of x and y are not due either: 60 s TTL).
    let (out, events) = tick(&mut shard, NOW_MS + 1_000);
    assert!(
        matches!(out, Output::Expired(0)) && events.is_empty(),
        "{events:?}"
    );
    assert_eq!(shard.position("c"), Some(3));

    // At the start the list closes, front first, with its own reason; the holds that fell
    // due meanwhile are what the reply counts.
    let (out, events) = tick(&mut shard, start_ms);
    assert!(matches!(out, Output::Expired(2)), "{out:?}");
    let closed: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::WaitlistLeft { seq, why } => {
                assert_eq!(*why, WaitlistExit::Closed);
                Some(*seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![1, 2, 3]);
    for citizen in ["a", "b", "c"] {
        assert!(shard.listing(citizen).is_empty(), "{citizen}");
    }
    let query = Query::WaitlistSlots;
    assert!(matches!(shard.state.query(&query), Ok(QueryAnswer::WaitlistSlots(s)) if s.is_empty()));

    // The next tick has nothing left to close, and a replay of the log agrees.
    let (_, events) = tick(&mut shard, start_ms + 1_000);
    assert!(events.is_empty(), "{events:?}");
    let mut replayed = ShardState::new(0);
    for event in &shard.log {
        replayed.apply(event);
    }
    replayed.check_invariants().expect("replayed invariants");
    let query = Query::CitizenWaitlist {
        citizen_id: "a".into(),
    };
    assert!(matches!(replayed.query(&query), Ok(QueryAnswer::Waitlist(e)) if e.is_empty()));
}

mod offers_against_an_outage {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use holdfast_engine::client::BoxFuture;
    use holdfast_engine::command::{Cancel, PutCitizen};
    use holdfast_engine::external::{
        BreakerState, DependencyStatus, ExternalCheck, ExternalRequest, ExternalVerdict,
        OutagePolicy,
    };
    use holdfast_engine::ring::Ring;
    use holdfast_engine::waitlist::JoinRequest;
    use holdfast_engine::{BookRequest, Command, Node, NodeConfig, SystemClock};

    use super::{catalogue, record, NOW_MS};

    /// An eligibility checker that is always down, and counts its calls.
    #[derive(Default)]
    struct Down(AtomicUsize);

    impl ExternalCheck for Down {
        fn check(&self, _: ExternalRequest) -> BoxFuture<'static, ExternalVerdict> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                ExternalVerdict::Unavailable {
                    retry_after_s: 1,
                    why: "down".into(),
                }
            })
        }

        fn status(&self) -> DependencyStatus {
            DependencyStatus {
                name: "eligibility".into(),
                breaker: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at_ms: None,
                calls_total: 0,
                failures_total: 0,
                short_circuited_total: 0,
            }
        }
    }

    /// An offer rolled back because the external check is down is not the citizen's doing:
    /// the entry goes back to the front, and the pass does not loop against the outage.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_offer_undone_by_the_outage_policy_puts_the_entry_back() {
        let node = Node::start(
            NodeConfig::embedded(1),
            Ring::single("local"),
            Arc::new(SystemClock),
        )
        .await
        .expect("starts");
        // The catalogue's slot starts a day after NOW_MS, which is in the future.
        assert!(node.now_ms() < NOW_MS);
        for command in catalogue() {
            node.exec(0, command).await.expect("catalogue");
        }
        for citizen in ["x", "y", "a", "b"] {
            let put = Command::PutCitizen(PutCitizen {
                citizen_id: citizen.into(),
                record: record(),
            });
            node.exec(0, put).await.expect("citizen");
        }
        let book = |citizen: &str| BookRequest {
            clinic_id: "k".into(),
            slot_id: "s".into(),
            vaccine: "vx".into(),
            citizen_id: citizen.into(),
            hold_ms: 60_000,
        };
        let x = node.book_and_wait(book("x")).await.expect("x holds");
        node.book_and_wait(book("y")).await.expect("y holds");
        for citizen in ["a", "b"] {
            let joined = node
                .join_waitlist(JoinRequest {
                    clinic_id: "k".into(),
                    slot_id: "s".into(),
                    vaccine: "vx".into(),
                    citizen_id: citizen.into(),
                })
                .await;
            joined.outcome.expect("joined");
            for d in joined.durable {
                d.wait().await.expect("stored");
            }
        }
        let down = Arc::new(Down::default());
        assert!(node.set_external_check(down.clone(), OutagePolicy::Reject));

        let cancel = Command::Cancel(Cancel {
            seq: x.id.seq,
            citizen: None,
        });
        node.exec(0, cancel).await.expect("cancelled");
        // The offer reaches the checker once, then the entry is back at the front.
        for _ in 0..400 {
            if down.0.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(down.0.load(Ordering::SeqCst), 1, "one offer was tried");
        let mut front = None;
        for _ in 0..400 {
            let listed = node.citizen_waitlist("a").await.expect("listed");
            if let Some(entry) = listed.first() {
                front = Some(entry.position);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(front, Some(1), "A is back at the front");
        let b = node.citizen_waitlist("b").await.expect("listed");
        assert_eq!(b[0].position, 2);
        // No loop against the outage: the checker is not asked again by itself.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(down.0.load(Ordering::SeqCst), 1);
        // A holds nothing: the rolled-back hold was never bound to A's claim.
        assert!(node.citizen_appointments("a", 10).await.unwrap().is_empty());
        assert_eq!(node.check_claims().await.expect("answered"), Ok(()));
        node.stop().await;
    }
}
