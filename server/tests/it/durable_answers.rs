//! An answer leaves only after every record it depends on is stored, and a booking's hold
//! and its idempotency record are written together (one group commit), not one after the
//! other.
//!
//! The journal here stores nothing until the test says so: appends queue up, and the test
//! completes them in order, one by one. So the test sees exactly which records exist when
//! the client gets its answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_engine::journal::{decode, Done, Journal, LogRecord, Recovered};
use holdfast_engine::JournalError;
use holdfast_server::Storage;

use crate::common::*;

/// How long the test waits for something that should happen (bounded loops).
const WAIT: Duration = Duration::from_secs(10);
/// How long the test watches for something that must not happen.
const HOLD_BACK: Duration = Duration::from_millis(150);

struct Pending {
    shard: u32,
    records: Vec<LogRecord>,
    done: Done,
}

/// Completes appends at once while `auto`; afterwards queues them until [`complete`].
#[derive(Default)]
struct ManualJournal {
    auto: Mutex<bool>,
    pending: Mutex<Vec<Pending>>,
}

impl ManualJournal {
    fn hold_back(&self) {
        *self.auto.lock().unwrap() = false;
    }

    /// What is queued: (shard, record kinds).
    fn queued(&self) -> Vec<(u32, Vec<&'static str>)> {
        self.pending
            .lock()
            .unwrap()
            .iter()
            .map(|p| {
                let kinds = p
                    .records
                    .iter()
                    .map(|r| match r {
                        LogRecord::Event(_) => "event",
                        LogRecord::Idempotency(_) | LogRecord::Answer(_) => "idempotency",
                    })
                    .collect();
                (p.shard, kinds)
            })
            .collect()
    }

    /// Stores the first `n` queued appends (in submission order).
    fn complete(&self, n: usize) {
        let done: Vec<Pending> = {
            let mut pending = self.pending.lock().unwrap();
            let n = n.min(pending.len());
            pending.drain(..n).collect()
        };
        for p in done {
            (p.done)(Ok(()));
        }
    }
}

impl Journal for ManualJournal {
    fn append(
        &self,
        shard: u32,
        records: Vec<(u64, Vec<u8>)>,
        done: Done,
    ) -> Result<(), JournalError> {
        if *self.auto.lock().unwrap() {
            done(Ok(()));
            return Ok(());
        }
        let records = records
            .iter()
            .map(|(_, bytes)| decode::<LogRecord>(bytes).expect("a record the engine wrote"))
            .collect();
        self.pending.lock().unwrap().push(Pending {
            shard,
            records,
            done,
        });
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
    fn busy(&self) -> bool {
        false
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A server on a [`ManualJournal`] that stores at once until held back, with clinic `c1`
/// (slot `s1` of `seats` seats, 10 doses) and the adult citizen `p1`.
async fn start(seats: u32) -> (Harness, Arc<ManualJournal>) {
    let journal = Arc::new(ManualJournal {
        auto: Mutex::new(true),
        ..Default::default()
    });
    let h = Harness::start_storage(SHARDS, Storage::Journal(journal.clone()))
        .await
        .expect("starts");
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c1", "s1", seats, 10).await;
    h.put_adult("p1").await;
    (h, journal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_is_answered_only_once_its_hold_and_its_idempotency_record_are_stored() {
    let (h, journal) = start(10).await;

    journal.hold_back();
    let api = h.api.clone();
    let booking = tokio::spawn(async move { api.book("p1", "c1", "s1").await });

    // Every write of the booking is queued before any is stored, so they can share one group
    // commit: on the citizen's shard nothing (the claim is tentative: memory only; and with
    // nothing of that shard waiting to be stored, not even a barrier), the hold on the
    // clinic's shard, then the claim, bound, and the idempotency record in one append on the
    // citizen's shard (where a citizen's keys live).
    wait_until(
        "the claim, the hold and the idempotency record to be queued",
        || {
            journal
                .queued()
                .iter()
                .any(|(_, kinds)| kinds.contains(&"idempotency"))
        },
    )
    .await;
    let queued = journal.queued();
    let clinic_shard = h.node().clinic_shard("c1");
    let citizen_shard = h.node().citizen_shard("p1");
    assert_ne!(clinic_shard, citizen_shard, "the test needs two shards");
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert_eq!(queued[0].0, clinic_shard, "the hold first: {queued:?}");
    assert_eq!(queued[0].1, vec!["event"], "{queued:?}");
    let last = queued.last().unwrap();
    assert_eq!(last.0, citizen_shard, "{queued:?}");
    assert_eq!(last.1, vec!["event", "idempotency"], "{queued:?}");
    tokio::time::sleep(HOLD_BACK).await;
    assert!(
        !booking.is_finished(),
        "answered before anything was stored"
    );

    // The hold alone is not enough.
    journal.complete(1);
    tokio::time::sleep(HOLD_BACK).await;
    assert!(
        !booking.is_finished(),
        "answered before its idempotency record was stored"
    );
    journal.complete(usize::MAX);
    let answer = tokio::time::timeout(WAIT, booking)
        .await
        .expect("answered once everything is stored")
        .unwrap();
    let body = answer.expect(201);
    assert_eq!(body["status"], "PENDING");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_waits_for_what_its_shard_applied_before_it() {
    let (h, journal) = start(1).await;
    h.put_adult("p2").await;

    journal.hold_back();
    let api = h.api.clone();
    let first = tokio::spawn(async move { api.book("p1", "c1", "s1").await });
    wait_until("the first hold to be queued", || {
        !journal.queued().is_empty()
    })
    .await;
    // The last seat is taken in memory but not stored: the second booking is refused with
    // SOLD_OUT, and that refusal must not leave before the hold it depends on is stored.
    let api = h.api.clone();
    let second = tokio::spawn(async move { api.book("p2", "c1", "s1").await });
    wait_until("the refusal's barrier to be queued", || {
        journal.queued().len() >= 3
    })
    .await;
    tokio::time::sleep(HOLD_BACK).await;
    assert!(
        !second.is_finished(),
        "a refusal left before its cause was stored"
    );
    journal.complete(usize::MAX);
    // Completing may queue more (the second request's idempotency record): keep storing.
    let started = Instant::now();
    while !(first.is_finished() && second.is_finished()) {
        assert!(started.elapsed() < WAIT, "the answers never came");
        journal.complete(usize::MAX);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.await.unwrap().expect(201);
    let refused = second.await.unwrap();
    assert_eq!(refused.expect(409)["error"]["code"], "SOLD_OUT");
    h.shutdown().await;
}

/// A create refused for want of a seat changes nothing but its key: its tentative claim is
/// dropped without a record, and the one record it journals is the key's stored answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_booking_journals_only_its_idempotency_record() {
    let (h, journal) = start(1).await;
    h.put_adult("p2").await;
    h.api.book("p1", "c1", "s1").await.expect(201);

    journal.hold_back();
    let api = h.api.clone();
    let refused = tokio::spawn(async move { api.book("p2", "c1", "s1").await });
    wait_until("the refusal's idempotency record to be queued", || {
        journal
            .queued()
            .iter()
            .any(|(_, kinds)| kinds.contains(&"idempotency"))
    })
    .await;
    let records: Vec<&str> = journal
        .queued()
        .into_iter()
        .flat_map(|(_, kinds)| kinds)
        .collect();
    assert_eq!(records, vec!["idempotency"]);
    journal.complete(usize::MAX);
    let answer = tokio::time::timeout(WAIT, refused)
        .await
        .expect("answered once stored")
        .unwrap();
    let body = answer.expect(409);
    assert_eq!(body["error"]["code"], "SOLD_OUT", "{body}");
    h.shutdown().await;
}
