//! Concurrency through the shard actors: many callers at once against one slot or one clinic's
//! doses must never oversell, and the counters must add up afterwards (docs/ARCHITECTURE.md
//! invariants 1 and 2). Also the booking saga's compensation under concurrency, and the
//! per-shard in-flight bound.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use holdfast_engine::command::{Hold, PutClinic, PutSlots, PutVaccine, ReceiveStock};
use holdfast_engine::model::{ClinicInfo, SlotSpec};
use holdfast_engine::ring::Ring;
use holdfast_engine::view::{AvailabilityView, Output};
use holdfast_engine::{
    BookRequest, Clock, Command, DomainError, EngineError, Node, NodeConfig, Query, Status,
    SystemClock,
};

mod common;
use common::{date, rules, GatedJournal};

const VACCINE: &str = "vx";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Long enough that no hold expires while a test runs.
const HOLD_MS: i64 = 10 * 60 * 1000;
/// Bound on any single await in these tests, so a lost reply fails instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn start(config: NodeConfig) -> Arc<Node> {
    Node::start(config, Ring::single("local"), Arc::new(SystemClock))
        .await
        .expect("node starts")
}

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .expect("step finished within its time bound")
}

/// The vaccine on every shard, one clinic with `doses` and the given slots (id, capacity),
/// all starting tomorrow.
async fn set_up_clinic(
    node: &Node,
    clinic: &str,
    min_age: Option<u32>,
    doses: i64,
    slots: &[(&str, u32)],
) -> u32 {
    bounded(node.broadcast(Command::PutVaccine(PutVaccine {
        name: VACCINE.to_string(),
        rules: rules(min_age),
    })))
    .await
    .expect("vaccine");
    let shard = node.clinic_shard(clinic);
    let put = Command::PutClinic(PutClinic {
        clinic_id: clinic.to_string(),
        info: ClinicInfo {
            name: "Race Clinic".to_string(),
            region: "north".to_string(),
            timezone: "Europe/Berlin".to_string(),
        },
    });
    bounded(node.exec(shard, put)).await.expect("clinic");
    let receive = Command::ReceiveStock(ReceiveStock {
        clinic_id: clinic.to_string(),
        vaccine: VACCINE.to_string(),
        batch: "b1".to_string(),
        quantity: doses,
        expires_on: date("2099-01-01"),
    });
    bounded(node.exec(shard, receive)).await.expect("stock");
    let start_ms = SystemClock.now_ms() + DAY_MS;
    let specs = slots
        .iter()
        .map(|(id, capacity)| {
            (
                id.to_string(),
                SlotSpec {
                    start_ms,
                    end_ms: start_ms + 15 * 60 * 1000,
                    capacity: *capacity,
                    vaccines: vec![VACCINE.to_string()],
                    priority_reserve: 0,
                },
            )
        })
        .collect();
    let put = Command::PutSlots(PutSlots {
        clinic_id: clinic.to_string(),
        slots: specs,
    });
    bounded(node.exec(shard, put)).await.expect("slots");
    shard
}

fn hold(clinic: &str, slot: &str, citizen: &str) -> Command {
    Command::Hold(Hold::new(clinic, slot, VACCINE, citizen, HOLD_MS))
}

async fn availability(node: &Node, clinic: &str) -> AvailabilityView {
    let shard = node.clinic_shard(clinic);
    bounded(node.check_invariants(shard))
        .await
        .expect("read")
        .expect("invariants hold");
    bounded(node.availability(clinic, Some(VACCINE.to_string()), None, None))
        .await
        .expect("clinic exists")
}

/// Spawns one task per command, all at once, and gathers the answers in order.
async fn exec_all(
    node: &Arc<Node>,
    shard: u32,
    commands: Vec<Command>,
) -> Vec<Result<Output, EngineError>> {
    let tasks: Vec<_> = commands
        .into_iter()
        .map(|command| {
            let node = node.clone();
            tokio::spawn(async move { node.exec(shard, command).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(bounded(task).await.expect("task did not panic"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_holds_on_fifty_seats_sell_exactly_fifty() {
    let node = start(NodeConfig::embedded(8)).await;
    let shard = set_up_clinic(&node, "clinic-race", None, 10_000, &[("s1", 50)]).await;

    let commands = (0..1000)
        .map(|i| hold("clinic-race", "s1", &format!("citizen-{i}")))
        .collect();
    let results = exec_all(&node, shard, commands).await;

    let mut seqs = BTreeSet::new();
    let mut citizens = BTreeSet::new();
    let mut sold_out = 0;
    for result in &results {
        match result {
            Ok(Output::Appointment(view)) => {
                assert_eq!(view.status, Status::Pending);
                seqs.insert(view.id.seq);
                citizens.insert(view.citizen_id.clone());
            }
            Err(EngineError::Domain(DomainError::SoldOut)) => sold_out += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(seqs.len(), 50, "exactly the capacity is held");
    assert_eq!(citizens.len(), 50, "each hold is a different citizen");
    assert_eq!(sold_out, 950);

    let view = availability(&node, "clinic-race").await;
    let slot = &view.slots[0];
    assert_eq!(
        (slot.remaining, slot.pending, slot.confirmed, slot.capacity),
        (0, 50, 0, 50)
    );
    let stock = &view.stock[0];
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (10_000, 50, 9_950)
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_doses_over_two_slots_sell_exactly_three() {
    let node = start(NodeConfig::embedded(8)).await;
    let shard = set_up_clinic(&node, "clinic-doses", None, 3, &[("a", 100), ("b", 100)]).await;

    let commands = (0..200)
        .map(|i| {
            let slot = if i % 2 == 0 { "a" } else { "b" };
            hold("clinic-doses", slot, &format!("citizen-{i}"))
        })
        .collect();
    let results = exec_all(&node, shard, commands).await;

    let mut held = 0;
    let mut out_of_stock = 0;
    for result in &results {
        match result {
            Ok(Output::Appointment(..)) => held += 1,
            Err(EngineError::Domain(DomainError::OutOfStock)) => out_of_stock += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(held, 3);
    assert_eq!(out_of_stock, 197);

    let view = availability(&node, "clinic-doses").await;
    let stock = &view.stock[0];
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (3, 3, 0));
    let pending: u32 = view.slots.iter().map(|s| s.pending).sum();
    let remaining: u32 = view.slots.iter().map(|s| s.remaining).sum();
    assert_eq!(pending, 3);
    assert_eq!(remaining, 197);
    node.stop().await;
}

async fn put_citizen(node: &Node, citizen: &str, birth_date: &str) {
    let put = common::put_citizen(citizen, birth_date);
    bounded(node.exec(node.citizen_shard(citizen), put))
        .await
        .expect("citizen");
}

fn book(clinic: &str, slot: &str, citizen: &str) -> BookRequest {
    BookRequest {
        clinic_id: clinic.to_string(),
        slot_id: slot.to_string(),
        vaccine: VACCINE.to_string(),
        citizen_id: citizen.to_string(),
        hold_ms: HOLD_MS,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saga_books_exactly_capacity_and_compensates_ineligible() {
    let node = start(NodeConfig::embedded(16)).await;
    set_up_clinic(
        &node,
        "clinic-saga",
        Some(18),
        1_000,
        &[("s10", 10), ("s5", 5)],
    )
    .await;
    for i in 0..100 {
        put_citizen(&node, &format!("adult-{i}"), "1990-05-01").await;
    }
    put_citizen(&node, "child", "2020-05-01").await;

    // 100 eligible citizens race for 10 seats through the saga.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move {
                node.book_and_wait(book("clinic-saga", "s10", &format!("adult-{i}")))
                    .await
            })
        })
        .collect();
    let mut booked = BTreeSet::new();
    let mut sold_out = 0;
    for task in tasks {
        match bounded(task).await.expect("task did not panic") {
            Ok(view) => {
                assert_eq!(view.status, Status::Pending);
                assert_eq!(&*view.slot_id, "s10");
                booked.insert(view.citizen_id.clone());
            }
            Err(EngineError::Domain(DomainError::SoldOut)) => sold_out += 1,
            Err(other) => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(booked.len(), 10);
    assert_eq!(sold_out, 90);

    // An ineligible citizen and an unknown one: refused, and no seat or dose is taken.
    let before = availability(&node, "clinic-saga").await;
    assert_eq!(before.stock[0].reserved, 10);
    for (citizen, reason) in [("child", "below_min_age"), ("nobody", "unknown_citizen")] {
        let answer = bounded(node.book_and_wait(book("clinic-saga", "s5", citizen))).await;
        assert_eq!(
            answer.expect_err("must be refused"),
            EngineError::Domain(DomainError::NotEligible {
                reasons: vec![reason.to_string()]
            }),
            "{citizen}"
        );
        let after = availability(&node, "clinic-saga").await;
        assert_eq!(after, before, "{citizen}: seat and dose returned");
        // The rules run in the clinic's shard in the same step as the hold: a refused
        // booking leaves no appointment behind, and no claim.
        let appointments = bounded(node.citizen_appointments(citizen, 100))
            .await
            .expect("listing");
        assert!(appointments.is_empty(), "{citizen}: {appointments:?}");
    }
    node.stop().await;
}

/// With a bound of one request in flight per shard, a request that is held inside the shard
/// (a command whose answer waits for the journal, which the test holds) makes every other
/// bounded request to that shard `Overloaded` — deterministically, since the in-flight count
/// is taken before sending and released only when the answer arrives. Other shards are
/// unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inflight_bound_refuses_with_overloaded() {
    let mut config = NodeConfig::embedded(4);
    config.inflight_per_shard_max = 1;
    let journal = Arc::new(GatedJournal::default());
    let node = Node::start_with_journal(
        config,
        Ring::single("local"),
        Arc::new(SystemClock),
        journal.clone(),
    )
    .await
    .expect("node starts");
    let shard = set_up_clinic(&node, "clinic-busy", None, 100, &[("s1", 100)]).await;
    let other_shard = (shard + 1) % 4;

    // A hold answers only once its record is stored, which the closed journal holds back.
    journal.close();
    let blocker = {
        let node = node.clone();
        tokio::spawn(async move {
            node.exec(shard, hold("clinic-busy", "s1", "citizen-blocker"))
                .await
        })
    };
    for _ in 0..1000 {
        if journal.held() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(journal.held(), 1, "the blocking command is in the shard");

    let commands = (0..50)
        .map(|i| hold("clinic-busy", "s1", &format!("citizen-{i}")))
        .collect();
    let results = exec_all(&node, shard, commands).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(EngineError::Overloaded { shard: s }) if *s == shard)),
        "{results:?}"
    );
    let read = bounded(node.query(shard, Query::Status)).await;
    assert_eq!(read.err(), Some(EngineError::Overloaded { shard }));
    // The bound is per shard: another shard answers meanwhile (a command that writes
    // nothing, on a shard with nothing waiting to be stored, needs no trip to the journal).
    let elsewhere = bounded(node.exec(other_shard, Command::ExpireDue)).await;
    assert!(matches!(elsewhere, Ok(Output::Expired(0))), "{elsewhere:?}");
    assert_eq!(journal.held(), 1, "only the blocker waits");

    journal.open();
    bounded(blocker)
        .await
        .expect("no panic")
        .expect("the blocking command was admitted");

    // Released: the shard serves again, and nothing of the refused holds was applied.
    let answer = bounded(node.exec(shard, hold("clinic-busy", "s1", "late"))).await;
    assert!(matches!(answer, Ok(Output::Appointment(..))), "{answer:?}");
    let view = availability(&node, "clinic-busy").await;
    assert_eq!(view.slots[0].pending, 2, "the blocker and the late hold");
    assert_eq!(view.stock[0].reserved, 2);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_bound_of_zero_refuses_everything_bounded() {
    let mut config = NodeConfig::embedded(2);
    config.inflight_per_shard_max = 0;
    let node = start(config).await;
    for shard in 0..2 {
        assert_eq!(
            bounded(node.exec(shard, Command::ExpireDue)).await.err(),
            Some(EngineError::Overloaded { shard })
        );
    }
    let citizen_shard = node.citizen_shard("someone");
    assert_eq!(
        bounded(node.book_and_wait(book("c", "s", "someone")))
            .await
            .err(),
        Some(EngineError::Overloaded {
            shard: citizen_shard
        })
    );
    node.stop().await;
}

/// `Node::stop` drains and joins the shards: an answer already on its way still leaves, every
/// shard lets go of the journal (so the log can be closed without polling), and later calls
/// are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_the_shards_and_lets_go_of_the_journal() {
    let journal = Arc::new(GatedJournal::default());
    let node = Node::start_with_journal(
        NodeConfig::embedded(4),
        Ring::single("local"),
        Arc::new(SystemClock),
        journal.clone(),
    )
    .await
    .expect("node starts");
    let shard = set_up_clinic(&node, "clinic-stop", None, 10, &[("s1", 10)]).await;
    // The test, the node and its 4 shards hold the journal.
    assert_eq!(Arc::strong_count(&journal), 6);

    journal.close();
    let in_flight = {
        let node = node.clone();
        tokio::spawn(async move { node.exec(shard, hold("clinic-stop", "s1", "ada")).await })
    };
    for _ in 0..1000 {
        if journal.held() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(journal.held(), 1, "the hold waits for its record");

    bounded(node.stop()).await;
    assert_eq!(
        Arc::strong_count(&journal),
        2,
        "only the test and the node hold it"
    );
    journal.open();
    let answer = bounded(in_flight).await.expect("no panic");
    assert!(matches!(answer, Ok(Output::Appointment(..))), "{answer:?}");
    let after = bounded(node.exec(shard, hold("clinic-stop", "s1", "bob"))).await;
    assert_eq!(after.err(), Some(EngineError::Unavailable { shard }));
}
