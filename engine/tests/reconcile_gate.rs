//! Bookings wait for the claims' reconciliation after recovery. A claim taken while the
//! reconciliation runs could be judged an orphan by it (its appointment live, its claim not
//! read yet) and its booking rejected after the client was told 201: seen as a flaky
//! in-place restart test once the reconciliation read two shards at a time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clinic_c1;
use holdfast_engine::journal::NoJournal;
use holdfast_engine::ring::Ring;
use holdfast_engine::{EngineError, Node, NodeConfig, Query, SystemClock};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_before_the_reconciliation_is_refused_and_takes_nothing() {
    // Spawned, not started: every shard recovers on its own, but nobody reconciles yet.
    let node = Node::spawn_with_journal(
        NodeConfig::embedded(4),
        Ring::single("local"),
        Arc::new(SystemClock),
        Arc::new(NoJournal),
    )
    .await
    .expect("spawns");
    let started = Instant::now();
    for shard in 0..4 {
        while node.query(shard, Query::Status).await.is_err() {
            assert!(started.elapsed() < WAIT, "shard {shard} did not recover");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let clinic = clinic_c1(&node).await;
    let put = common::put_citizen("ada", "1980-05-05");
    node.exec(node.citizen_shard("ada"), put)
        .await
        .expect("citizen");

    match node.book_and_wait(common::book_c1("ada")).await {
        Err(EngineError::Recovering { shard }) => assert_eq!(shard, node.citizen_shard("ada")),
        other => panic!("booked before the reconciliation: {other:?}"),
    }
    assert!(!node.is_ready());
    let appointments = node
        .citizen_appointments("ada", 10)
        .await
        .expect("reads go on");
    assert!(appointments.is_empty(), "{appointments:?}");

    node.wait_recovered().await.expect("reconciles");
    assert!(node.is_ready());
    let booked = node
        .book_and_wait(common::book_c1("ada"))
        .await
        .expect("books");
    assert_eq!(booked.id.shard, clinic);
}
