//! The journal's disk fills while the node serves (`Journal::write_refusal`): new writes are
//! refused before they change anything, reads go on, a booking that took its seat before the
//! disk filled still finishes (the reserve is kept for such work), and writes resume once
//! space returns, with no restart.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::clinic_c1;
use holdfast_engine::client::BoxFuture;
use holdfast_engine::error::JournalError;
use holdfast_engine::external::{
    BreakerState, DependencyStatus, ExternalCheck, ExternalRequest, ExternalVerdict, OutagePolicy,
};
use holdfast_engine::journal::{Done, Journal, Recovered};
use holdfast_engine::ring::Ring;
use holdfast_engine::{EngineError, Node, NodeConfig, Query, SystemClock, WriteRefusal};

/// Stores at once, counts the appends, and refuses writes while `refusal` is set.
#[derive(Default)]
struct DiskJournal {
    refusal: Mutex<Option<WriteRefusal>>,
    appends: AtomicUsize,
}

impl DiskJournal {
    fn set(&self, refusal: Option<WriteRefusal>) {
        *self.refusal.lock().unwrap() = refusal;
    }
}

const FULL: WriteRefusal = WriteRefusal::DiskFull {
    available_bytes: 1024,
    reserve_bytes: 64 * 1024 * 1024,
};

impl Journal for DiskJournal {
    fn append(&self, _: u32, _: Vec<(u64, Vec<u8>)>, done: Done) -> Result<(), JournalError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        done(Ok(()));
        Ok(())
    }
    fn snapshot(&self, _: u32, _: u64, _: Vec<u8>, done: Done) -> Result<(), JournalError> {
        done(Ok(()));
        Ok(())
    }
    fn recover(&self, _: u32) -> Result<Recovered, JournalError> {
        Ok(Recovered::default())
    }
    fn failed(&self) -> Option<JournalError> {
        None
    }
    fn write_refusal(&self) -> Option<WriteRefusal> {
        self.refusal.lock().unwrap().clone()
    }
    fn busy(&self) -> bool {
        false
    }
}

/// An eligibility check that fills the disk the first time it is asked (while the booking
/// holds its seat), then passes.
struct FillsTheDisk {
    journal: Arc<DiskJournal>,
    filled: AtomicBool,
}

impl ExternalCheck for FillsTheDisk {
    fn check(&self, _: ExternalRequest) -> BoxFuture<'static, ExternalVerdict> {
        if !self.filled.swap(true, Ordering::SeqCst) {
            self.journal.set(Some(FULL));
        }
        Box::pin(async { ExternalVerdict::Eligible })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_writes_before_they_change_anything_and_finishes_admitted_ones() {
    let journal = Arc::new(DiskJournal::default());
    let node = Node::start_with_journal(
        NodeConfig::embedded(4),
        Ring::single("local"),
        Arc::new(SystemClock),
        journal.clone(),
    )
    .await
    .expect("starts");
    let shard = clinic_c1(&node).await;
    for citizen in ["ada", "bob"] {
        let put = common::put_citizen(citizen, "1980-05-05");
        node.exec(node.citizen_shard(citizen), put)
            .await
            .expect("citizen");
    }
    let checker = Arc::new(FillsTheDisk {
        journal: journal.clone(),
        filled: AtomicBool::new(false),
    });
    assert!(node.set_external_check(checker, OutagePolicy::Reject));

    // The disk fills while ada's booking holds its seat: it still finishes, answered.
    let ada = node
        .book_and_wait(common::book_c1("ada"))
        .await
        .expect("ada books");
    assert_eq!(node.write_refusal(), Some(FULL));
    assert!(!node.is_ready(), "a node that refuses writes is not ready");

    // bob's booking is refused before anything is written or changed.
    let appends = journal.appends.load(Ordering::SeqCst);
    match node.book_and_wait(common::book_c1("bob")).await {
        Err(EngineError::WritesRefused { refusal, .. }) => assert_eq!(refusal, FULL),
        other => panic!("{other:?}"),
    }
    assert_eq!(journal.appends.load(Ordering::SeqCst), appends);
    // Reads go on: ada's appointment is there.
    let answer = node
        .query(shard, Query::Appointment { seq: ada.id.seq })
        .await;
    assert!(answer.is_ok(), "{answer:?}");

    // Space returns: writes are taken again, without a restart.
    journal.set(None);
    assert!(node.is_ready());
    node.book_and_wait(common::book_c1("bob"))
        .await
        .expect("bob books");
    node.stop().await;
}
