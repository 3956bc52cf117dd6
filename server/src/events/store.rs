//! The event store: the node's durable event feed and audit chain, a sled database of its own
//! (`<data-dir>/events`), written by one recorder thread from the publication point.
//!
//! Trees: `events` (node sequence, big endian -> `[type length][type][data JSON]`), `cursors`
//! (shard -> the highest `wal_seq` whose change is stored), `audit` and `audit_by_appointment`
//! ([`super::audit`]). One change's events, its audit record and its shard's cursor are written
//! in one sled transaction, and a batch is flushed (fsync) before its events are readable
//! ([`EventFeed::head`] moves only then): a reader never sees an event a crash takes back.
//! A change the recorder had not stored when the node stopped is published again at the
//! next start (the shard's snapshot and log tail, [`holdfast_engine::publish::Recorder`]) and
//! gets the next sequence numbers then; one it had stored is skipped by its cursor.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use holdfast_engine::feed::{AuditRecord, AuditTrail, AuditVerdict, EventFeed, Gone, StoredEvent};
use holdfast_engine::node::SHARDS_MAX;
use holdfast_engine::publish::{Published, Recorder};
use holdfast_persistence::DiskSync;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tokio::sync::watch;

use super::audit::{self, GENESIS_HASH};
use super::mapping::{audit_of, body, events_of, rfc3339};
use super::open_db;

/// Where the store lives inside the data directory.
pub const EVENTS_SUBDIR: &str = "events";
/// Events kept: a resume from before the oldest kept is `Gone` (SSE `event: gone`). At about
/// 250 bytes an event, 2 million events are about 500 MiB on disk, several hours of a launch
/// morning (two events per status change at 15-25 K changes/s peak, far less on average).
pub const EVENTS_RETAINED_MAX: u64 = 2_000_000;
/// Batches of changes queued for the recorder before a publisher waits: back-pressure on
/// the journal's completions (and so on new writes, through the journal's high-water mark)
/// rather than loss. A batch is one group commit's changes of one shard.
pub const RECORDER_QUEUE_BATCHES: usize = 4_096;
/// Changes written in one transaction and one flush by the recorder, at most.
pub const RECORDER_WRITE_CHANGES_MAX: usize = 8_192;
/// Longest wait between two attempts at storing a batch the store refused (a full disk): the
/// recorder retries the same batch until it is stored, never skipping it.
pub const RECORDER_RETRY_MAX_MS: u64 = 5_000;
/// Oldest events deleted per sled batch when the retention trims.
const TRIM_BATCH_EVENTS: u64 = 10_000;

struct Inner {
    db: sled::Db,
    events: sled::Tree,
    cursors: sled::Tree,
    audit: sled::Tree,
    audit_index: sled::Tree,
    /// Per shard: the highest `wal_seq` whose change is durably stored.
    recorded: Vec<AtomicU64>,
    head: watch::Sender<u64>,
    oldest: AtomicU64,
    retained_max: u64,
    /// `fdatasync`s of the store's data file so far (one per stored batch on disk).
    fdatasyncs: AtomicU64,
}

/// Reads: the feed and the audit trail. Writes go through the [`Recorder`] that
/// [`EventStore::open`] returns, on the store's own thread.
pub struct EventStore {
    inner: Arc<Inner>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl EventStore {
    /// `fdatasync`s of the store's data file so far: one per batch stored on disk, none for
    /// a temporary store.
    pub fn fdatasyncs(&self) -> u64 {
        self.inner.fdatasyncs.load(Ordering::Relaxed)
    }
}

/// The recorder thread's end of the node's publisher.
struct RecorderPort {
    tx: SyncSender<Vec<Published>>,
    inner: Arc<Inner>,
}

/// What the recorder thread numbers next.
struct Writer {
    inner: Arc<Inner>,
    /// `fdatasync` after sled's flush (which ends in `sync_file_range` only), as the WAL does;
    /// none for a temporary store.
    disk: Option<DiskSync>,
    next_seq: u64,
    audit_seq: u64,
    audit_prev: String,
}

fn be(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(key: &[u8]) -> u64 {
    <[u8; 8]>::try_from(key).map_or(0, u64::from_be_bytes)
}

fn encode_event(event_type: &str, data: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + event_type.len() + data.len());
    bytes.push(event_type.len() as u8);
    bytes.extend_from_slice(event_type.as_bytes());
    bytes.extend_from_slice(data.as_bytes());
    bytes
}

fn decode_event(seq: u64, bytes: &[u8]) -> StoredEvent {
    let (len, rest) = bytes.split_first().unwrap_or((&0, &[]));
    let (event_type, data) = rest.split_at((*len as usize).min(rest.len()));
    StoredEvent {
        seq,
        event_type: String::from_utf8_lossy(event_type).into_owned(),
        data: String::from_utf8_lossy(data).into_owned(),
    }
}

impl EventStore {
    /// Opens the store in `dir` (`None`: a temporary one, for a node that keeps nothing) and
    /// starts its recorder thread; the recorder goes to the node's publisher.
    pub fn open(dir: Option<&Path>) -> Result<(Arc<EventStore>, Arc<dyn Recorder>), String> {
        EventStore::open_retaining(dir, EVENTS_RETAINED_MAX)
    }

    /// [`EventStore::open`] keeping at most `retained_max` events (tests set it low).
    pub fn open_retaining(
        dir: Option<&Path>,
        retained_max: u64,
    ) -> Result<(Arc<EventStore>, Arc<dyn Recorder>), String> {
        let db = open_db(dir)?;
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| format!("cannot open the event store's {name} tree: {e}"))
        };
        let (events, cursors, audit_tree, audit_index) = (
            tree("events")?,
            tree("cursors")?,
            tree("audit")?,
            tree("audit_by_appointment")?,
        );
        let recorded: Vec<AtomicU64> = (0..SHARDS_MAX).map(|_| AtomicU64::new(0)).collect();
        for entry in cursors.iter() {
            let (key, value) = entry.map_err(|e| format!("cannot read the event cursors: {e}"))?;
            let shard = <[u8; 4]>::try_from(key.as_ref()).map_or(u32::MAX, u32::from_be_bytes);
            if let Some(cursor) = recorded.get(shard as usize) {
                cursor.store(seq_of(&value), Ordering::Release);
            }
        }
        let last = |tree: &sled::Tree| tree.last().ok().flatten();
        let head = last(&events).map_or(0, |(key, _)| seq_of(&key));
        let oldest = events
            .first()
            .ok()
            .flatten()
            .map_or(head + 1, |(key, _)| seq_of(&key));
        let (audit_seq, audit_prev) = match last(&audit_tree) {
            Some((key, value)) => (
                seq_of(&key),
                serde_json::from_slice::<AuditRecord>(&value)
                    .map_or_else(|e| format!("unreadable: {e}"), |record| record.hash),
            ),
            None => (0, GENESIS_HASH.to_string()),
        };
        let inner = Arc::new(Inner {
            db,
            events,
            cursors,
            audit: audit_tree,
            audit_index,
            recorded,
            head: watch::channel(head).0,
            oldest: AtomicU64::new(oldest),
            fdatasyncs: AtomicU64::new(0),
            retained_max: retained_max.max(1),
        });
        let (tx, rx) = sync_channel(RECORDER_QUEUE_BATCHES);
        let disk = dir
            .map(|dir| DiskSync::open(&dir.join(EVENTS_SUBDIR)))
            .transpose()?;
        let writer = Writer {
            inner: inner.clone(),
            disk,
            next_seq: head + 1,
            audit_seq,
            audit_prev,
        };
        let thread = std::thread::Builder::new()
            .name("event-recorder".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the event recorder: {e}"))?;
        let store = Arc::new(EventStore {
            inner: inner.clone(),
            thread: std::sync::Mutex::new(Some(thread)),
        });
        Ok((store, Arc::new(RecorderPort { tx, inner })))
    }

    /// Waits (at most `wait`) for the recorder thread to store what it was handed and stop:
    /// it stops once the node (the publisher holding the recorder) is gone.
    pub fn join_recorder(&self, wait: std::time::Duration) {
        let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        let deadline = std::time::Instant::now() + wait;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!("the event recorder outlives the server (a handle on the node remains)");
        }
    }

    /// The oldest sequence still kept.
    pub fn oldest(&self) -> u64 {
        self.inner.oldest.load(Ordering::Acquire)
    }
}

impl EventFeed for EventStore {
    fn read_after(&self, after: u64, max: usize) -> Result<Vec<StoredEvent>, Gone> {
        let oldest = self.oldest();
        if after.saturating_add(1) < oldest {
            return Err(Gone {
                after,
                oldest_seq: oldest,
            });
        }
        // Only what is flushed: entries above the head may be a batch not yet durable.
        let head = *self.inner.head.borrow();
        if after >= head {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(max.min((head - after) as usize));
        for entry in self.inner.events.range(be(after + 1)..=be(head)).take(max) {
            let Ok((key, value)) = entry else { break };
            out.push(decode_event(seq_of(&key), &value));
        }
        // A trim may have run between the check and the read: never hand out a gap.
        match out.first() {
            Some(first) if first.seq != after + 1 => Err(Gone {
                after,
                oldest_seq: self.oldest(),
            }),
            _ => Ok(out),
        }
    }

    fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }
}

impl AuditTrail for EventStore {
    fn verify(&self) -> AuditVerdict {
        audit::verify(&self.inner.audit)
    }

    fn history(&self, appointment_id: &str, max: usize) -> Vec<AuditRecord> {
        let mut prefix = appointment_id.as_bytes().to_vec();
        prefix.push(0);
        self.inner
            .audit_index
            .scan_prefix(prefix)
            .take(max)
            .filter_map(|entry| {
                let (key, _) = entry.ok()?;
                let seq = seq_of(&key[key.len().saturating_sub(8)..]);
                let value = self.inner.audit.get(be(seq)).ok()??;
                serde_json::from_slice(&value).ok()
            })
            .collect()
    }
}

impl Recorder for RecorderPort {
    fn record(&self, changes: Vec<Published>) {
        if self.tx.send(changes).is_err() {
            tracing::error!("the event recorder stopped; changes are not recorded until a restart re-derives them");
        }
    }

    fn recorded(&self, shard: u32) -> u64 {
        self.inner
            .recorded
            .get(shard as usize)
            .map_or(0, |cursor| cursor.load(Ordering::Acquire))
    }
}

/// A batch numbered and ready for one transaction.
#[derive(Default)]
struct Prepared {
    events: Vec<(u64, Vec<u8>)>,
    audit: Vec<AuditRecord>,
    cursors: Vec<(u32, u64)>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Vec<Published>>) {
        while let Ok(mut batch) = rx.recv() {
            while batch.len() < RECORDER_WRITE_CHANGES_MAX {
                match rx.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            // Never skip a batch: a later one would move the cursors past it, and its events
            // would be lost for good. Retry it (the same numbers, so a write that reached sled
            // but not its flush is rewritten identically); meanwhile the queue fills and the
            // publishers wait, as they would for a stuck journal.
            let mut backoff_ms = 10;
            while let Err(error) = self.write(&batch) {
                tracing::error!(%error, retry_in_ms = backoff_ms, "the event store could not store a batch");
                std::thread::sleep(std::time::Duration::from_millis(backoff_ms));
                backoff_ms = (backoff_ms * 2).min(RECORDER_RETRY_MAX_MS);
            }
        }
    }

    /// Numbers the changes above each shard's cursor, without moving anything yet.
    fn prepare(&self, batch: &[Published]) -> Prepared {
        let mut prepared = Prepared::default();
        let (mut seq, mut audit_seq) = (self.next_seq, self.audit_seq);
        let mut prev = self.audit_prev.clone();
        for change in batch {
            let cursor = match prepared
                .cursors
                .iter_mut()
                .find(|(s, _)| *s == change.shard)
            {
                Some(cursor) => cursor,
                None => {
                    let stored = self.inner.recorded.get(change.shard as usize);
                    let stored = stored.map_or(0, |c| c.load(Ordering::Acquire));
                    prepared.cursors.push((change.shard, stored));
                    prepared.cursors.last_mut().expect("just pushed")
                }
            };
            if change.wal_seq <= cursor.1 {
                continue; // stored before a restart, published again at recovery
            }
            cursor.1 = change.wal_seq;
            for draft in events_of(&change.change) {
                let data = body(seq, change, &draft);
                prepared
                    .events
                    .push((seq, encode_event(draft.event_type, &data)));
                seq += 1;
            }
            if let Some(entry) = audit_of(&change.change) {
                audit_seq += 1;
                let record = audit::seal(
                    audit_seq,
                    rfc3339(change.at_ms),
                    entry.appointment_id,
                    entry.status.to_string(),
                    &prev,
                );
                prev = record.hash.clone();
                prepared.audit.push(record);
            }
        }
        prepared
    }

    fn write(&mut self, batch: &[Published]) -> Result<(), String> {
        let prepared = self.prepare(batch);
        let inner = &self.inner;
        let trees = (
            &inner.events,
            &inner.cursors,
            &inner.audit,
            &inner.audit_index,
        );
        trees
            .transaction(|(events, cursors, audit_tree, index)| {
                for (seq, bytes) in &prepared.events {
                    events.insert(&be(*seq), bytes.as_slice())?;
                }
                for (shard, wal_seq) in &prepared.cursors {
                    cursors.insert(&shard.to_be_bytes(), &be(*wal_seq))?;
                }
                for record in &prepared.audit {
                    let json = serde_json::to_vec(record).expect("audit records encode");
                    audit_tree.insert(&audit::record_key(record.seq), json)?;
                    index.insert(audit::index_key(&record.appointment_id, record.seq), &[])?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| format!("{e:?}"))?;
        let synced = match &mut self.disk {
            Some(disk) => disk.flush(&inner.db),
            None => inner
                .db
                .flush()
                .map(|_| 0)
                .map_err(|e| (true, e.to_string())),
        }
        .map_err(|(_, why)| format!("flushing the event store failed: {why}"))?;
        inner.fdatasyncs.fetch_add(synced, Ordering::Relaxed);
        for (shard, wal_seq) in &prepared.cursors {
            if let Some(cursor) = inner.recorded.get(*shard as usize) {
                cursor.fetch_max(*wal_seq, Ordering::AcqRel);
            }
        }
        if let Some(last) = prepared.audit.last() {
            self.audit_seq = last.seq;
            self.audit_prev = last.hash.clone();
        }
        if let Some((seq, _)) = prepared.events.last() {
            self.next_seq = seq + 1;
            inner.head.send_replace(*seq);
            self.trim(*seq);
        }
        Ok(())
    }

    /// Drops the oldest events past the retention; readers are told `Gone` first.
    fn trim(&self, head: u64) {
        let inner = &self.inner;
        let keep_from = head.saturating_sub(inner.retained_max) + 1;
        let oldest = inner.oldest.load(Ordering::Acquire);
        if keep_from <= oldest {
            return;
        }
        inner.oldest.store(keep_from, Ordering::Release);
        let mut from = oldest;
        while from < keep_from {
            let to = (from + TRIM_BATCH_EVENTS).min(keep_from);
            let mut batch = sled::Batch::default();
            for seq in from..to {
                batch.remove(&be(seq));
            }
            if let Err(e) = inner.events.apply_batch(batch) {
                tracing::warn!(error = %e, "trimming old events failed; they stay on disk");
                return;
            }
            from = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use holdfast_engine::publish::Change;

    use super::*;

    fn stock(shard: u32, wal_seq: u64) -> Published {
        Published {
            shard,
            wal_seq,
            at_ms: 1_700_000_000_000,
            change: Change::StockChanged {
                clinic_id: "k1".into(),
                vaccine: "pfz".into(),
                batch: "B".into(),
                delta: wal_seq as i64,
            },
        }
    }

    fn wait_for_head(store: &EventStore, head: u64) {
        for _ in 0..1_000 {
            if store.head() >= head {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("the head stayed at {} (wanted {head})", store.head());
    }

    #[test]
    fn changes_are_numbered_gap_free_once_each_and_old_ones_are_gone_past_the_retention() {
        let (store, recorder) = EventStore::open_retaining(None, 5).unwrap();
        recorder.record((1..=4).map(|s| stock(0, s)).collect());
        // A restart publishes stored changes again: skipped by the shard's cursor.
        recorder.record(vec![stock(0, 3), stock(0, 4), stock(1, 1)]);
        recorder.record((5..=7).map(|s| stock(0, s)).collect());
        wait_for_head(&store, 8);
        assert_eq!(recorder.recorded(0), 7);
        assert_eq!(recorder.recorded(1), 1);
        let gone = store.read_after(0, 100).unwrap_err();
        assert_eq!(gone.oldest_seq, 4);
        let kept = store.read_after(3, 100).unwrap();
        let seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [4, 5, 6, 7, 8]);
        let deltas: Vec<i64> = kept
            .iter()
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["delta"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            deltas,
            [4, 1, 5, 6, 7],
            "shard 0's 1-4, shard 1's 1, shard 0's 5-7"
        );
        assert_eq!(kept[0].event_type, "StockChanged");
        assert!(store.read_after(8, 100).unwrap().is_empty());
        assert_eq!(store.read_after(6, 1).unwrap().len(), 1);
        assert_eq!(
            store.fdatasyncs(),
            0,
            "a temporary store has no file to sync"
        );
    }

    /// sled's flush ends in `sync_file_range`: a stored batch on disk is also `fdatasync`ed
    /// before its events are readable.
    #[test]
    fn a_stored_batch_on_disk_is_fdatasynced_before_it_is_readable() {
        let dir = std::env::temp_dir().join(format!(
            "holdfast-event-store-sync-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let (store, recorder) = EventStore::open(Some(&dir)).unwrap();
            recorder.record((1..=3).map(|s| stock(0, s)).collect());
            wait_for_head(&store, 3);
            assert!(store.fdatasyncs() >= 1, "{}", store.fdatasyncs());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
