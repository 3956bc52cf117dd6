//! The recorder's tail across a restart: changes a shard published that the recorder had not
//! stored survive a snapshot that cut the log (the snapshot carries them) and are published
//! again at recovery, with the replayed log tail; changes the recorder had stored are not.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::clinic_c1;
use holdfast_engine::command::Hold;
use holdfast_engine::error::JournalError;
use holdfast_engine::journal::{Done, Journal, Recovered};
use holdfast_engine::publish::{Published, Recorder};
use holdfast_engine::ring::Ring;
use holdfast_engine::{Command, Node, NodeConfig, SystemClock};

/// A journal in memory that survives the node: per shard, the snapshot and the records after
/// it (a snapshot drops the records it covers, as the WAL's truncation does).
#[derive(Default)]
struct MemJournal {
    shards: Mutex<BTreeMap<u32, Kept>>,
}

/// One shard's snapshot (sequence, bytes) and records after it.
type Kept = (Option<(u64, Vec<u8>)>, Vec<(u64, Vec<u8>)>);

impl Journal for MemJournal {
    fn append(
        &self,
        shard: u32,
        records: Vec<(u64, Vec<u8>)>,
        done: Done,
    ) -> Result<(), JournalError> {
        self.shards
            .lock()
            .unwrap()
            .entry(shard)
            .or_default()
            .1
            .extend(records);
        done(Ok(()));
        Ok(())
    }
    fn snapshot(
        &self,
        shard: u32,
        seq: u64,
        bytes: Vec<u8>,
        done: Done,
    ) -> Result<(), JournalError> {
        let mut shards = self.shards.lock().unwrap();
        let entry = shards.entry(shard).or_default();
        entry.0 = Some((seq, bytes));
        entry.1.retain(|(s, _)| *s > seq);
        done(Ok(()));
        Ok(())
    }
    fn recover(&self, shard: u32) -> Result<Recovered, JournalError> {
        let shards = self.shards.lock().unwrap();
        let (snapshot, records) = shards.get(&shard).cloned().unwrap_or_default();
        Ok(Recovered {
            snapshot,
            records,
            dropped: Vec::new(),
        })
    }
    fn failed(&self) -> Option<JournalError> {
        None
    }
    fn busy(&self) -> bool {
        false
    }
}

/// Collects what it is handed; says it stored, of each shard, up to `stored_up_to` (`None`:
/// everything it was handed, above `floor`, what a previous life stored).
struct Collecting {
    seen: Mutex<Vec<Published>>,
    stored_up_to: Option<u64>,
    floor: u64,
}

impl Recorder for Collecting {
    fn record(&self, changes: Vec<Published>) {
        self.seen.lock().unwrap().extend(changes);
    }
    fn recorded(&self, shard: u32) -> u64 {
        match self.stored_up_to {
            Some(seq) => seq,
            None => self
                .seen
                .lock()
                .unwrap()
                .iter()
                .filter(|p| p.shard == shard)
                .map(|p| p.wal_seq)
                .max()
                .unwrap_or(0)
                .max(self.floor),
        }
    }
}

async fn node(journal: Arc<MemJournal>, recorder: Arc<Collecting>) -> Arc<Node> {
    let node = Node::spawn_recorded(
        NodeConfig::embedded(2),
        Ring::single("local"),
        Arc::new(SystemClock),
        journal,
        Some(recorder),
    )
    .await
    .expect("node starts");
    node.wait_recovered().await.expect("recovered");
    node
}

fn of_shard(seen: &Mutex<Vec<Published>>, shard: u32) -> Vec<Published> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|p| p.shard == shard)
        .cloned()
        .collect()
}

/// Runs a first life whose recorder stored up to `stored_up_to`, snapshotting in the middle;
/// returns what that life published for the clinic's shard and what the second life's
/// recovery published.
async fn two_lives(stored_up_to: u64) -> (Vec<Published>, Vec<Published>) {
    let journal = Arc::new(MemJournal::default());
    let first = Arc::new(Collecting {
        seen: Mutex::default(),
        stored_up_to: Some(stored_up_to),
        floor: 0,
    });
    let node1 = node(journal.clone(), first.clone()).await;
    let shard = clinic_c1(&node1).await;
    node1.snapshot_all().await.expect("snapshots");
    node1
        .exec(
            shard,
            Command::Hold(Hold::new("c1", "s1", "vx", "ada", 600_000)),
        )
        .await
        .expect("held");
    node1.stop().await;
    drop(node1);
    let second = Arc::new(Collecting {
        seen: Mutex::default(),
        stored_up_to: None,
        floor: stored_up_to,
    });
    let node2 = node(journal, second.clone()).await;
    node2.stop().await;
    (of_shard(&first.seen, shard), of_shard(&second.seen, shard))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecorded_changes_survive_a_snapshot_and_are_published_again() {
    let (first, again) = two_lives(0).await;
    assert!(first.len() >= 4, "set-up and hold: {first:?}");
    // Everything, the snapshot-covered part included, in log order and with the same names.
    assert_eq!(
        again
            .iter()
            .map(|p| (p.wal_seq, &p.change))
            .collect::<Vec<_>>(),
        first
            .iter()
            .map(|p| (p.wal_seq, &p.change))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_the_recorder_stored_are_not_its_business_at_recovery() {
    let (first, again) = two_lives(2).await;
    let expected: Vec<_> = first
        .iter()
        .filter(|p| p.wal_seq > 2)
        .map(|p| (p.wal_seq, &p.change))
        .collect();
    assert_eq!(
        again
            .iter()
            .map(|p| (p.wal_seq, &p.change))
            .collect::<Vec<_>>(),
        expected
    );
    assert!(!expected.is_empty());
}
