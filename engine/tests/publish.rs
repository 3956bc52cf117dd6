//! The publication point: a change is published once its log records are stored (never
//! before), once, with its names resolved; nobody subscribed costs the shards nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{clinic_c1, GatedJournal};
use holdfast_engine::command::{Confirm, Hold};
use holdfast_engine::ids::AppointmentId;
use holdfast_engine::publish::{Change, Published};
use holdfast_engine::ring::Ring;
use holdfast_engine::{Command, Node, NodeConfig, Output, Status, SystemClock};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::broadcast::Receiver;

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn node_with(journal: Arc<GatedJournal>) -> Arc<Node> {
    Node::start_with_journal(
        NodeConfig::embedded(4),
        Ring::single("local"),
        Arc::new(SystemClock),
        journal,
    )
    .await
    .expect("node starts")
}

fn hold() -> Command {
    Command::Hold(Hold::new("c1", "s1", "vx", "ada", 600_000))
}

async fn next(events: &mut Receiver<Arc<Published>>) -> Arc<Published> {
    tokio::time::timeout(STEP_TIMEOUT, events.recv())
        .await
        .expect("an event within the bound")
        .expect("not lagged")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_published_after_it_is_stored_with_its_names() {
    let journal = Arc::new(GatedJournal::default());
    let node = node_with(journal.clone()).await;
    let shard = clinic_c1(&node).await;
    let mut events = node.subscribe();

    journal.close();
    let booking = {
        let node = node.clone();
        tokio::spawn(async move { node.exec(shard, hold()).await })
    };
    for _ in 0..1000 {
        if journal.held() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(journal.held(), 1, "the hold waits for its record");
    // Applied in memory, not yet stored: nobody hears of it.
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));

    journal.open();
    let held = match tokio::time::timeout(STEP_TIMEOUT, booking).await {
        Ok(Ok(Ok(Output::Appointment(appointment)))) => appointment,
        other => panic!("the hold answers once stored: {other:?}"),
    };
    let published = next(&mut events).await;
    assert_eq!(published.shard, shard);
    assert_eq!(
        published.change,
        Change::AppointmentStatus {
            appointment_id: AppointmentId {
                shard,
                seq: held.id.seq
            },
            clinic_id: "c1".into(),
            slot_id: "s1".into(),
            vaccine: "vx".into(),
            citizen_id: "ada".into(),
            status: Status::Pending,
            offered_from_waitlist: false,
            rescheduled_from: None,
            rescheduled_to: None,
        }
    );

    // The next change of the shard follows it in log order, exactly once.
    let confirm = Command::Confirm(Confirm {
        seq: held.id.seq,
        citizen: None,
    });
    node.exec(shard, confirm).await.expect("confirmed");
    let confirmed = next(&mut events).await;
    assert_eq!(confirmed.wal_seq, published.wal_seq + 1);
    assert!(matches!(
        &confirmed.change,
        Change::AppointmentStatus {
            status: Status::Confirmed,
            ..
        }
    ));
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_record_fails_is_never_published() {
    let journal = Arc::new(GatedJournal::default());
    let node = node_with(journal.clone()).await;
    let shard = clinic_c1(&node).await;
    let mut events = node.subscribe();
    journal.fail_next();
    let answer = node.exec(shard, hold()).await;
    assert!(
        answer.is_err(),
        "a change that was not stored is not acknowledged"
    );
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    node.stop().await;
}
