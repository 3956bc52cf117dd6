//! The event store: the node's durable event feed and audit chain, a sled database of its own
//! (`<data-dir>/events`), written by one recorder thread from the publication point.
//!
//! Everything lives in one tree, in frames ([`super::frames`]): a batch of changes (what the
//! publishers handed over since the last write, up to [`RECORDER_WRITE_CHANGES_MAX`]) becomes
//! a few event frames, a few audit frames, one index frame ([`super::audit_index`]) and the shards'
//! cursor table (shard -> the highest `wal_seq` whose change is stored), all in one atomic
//! `apply_batch`; the batch is flushed and `fdatasync`ed before its events are readable
//! ([`EventFeed::head`] moves only then): a reader never sees an event a crash takes back.
//! A change the recorder had not stored when the node stopped is published again at the
//! next start (the shard's snapshot and log tail, [`holdfast_engine::publish::Recorder`]) and
//! gets the next sequence numbers then; one it had stored is skipped by its cursor.
//!
//! Readers that keep up read the newest events from memory ([`super::ring`], filled between
//! the `fdatasync` and the head's move); a resume from before the ring reads the frames.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use holdfast_engine::feed::{AuditRecord, AuditTrail, AuditVerdict, EventFeed, Gone, StoredEvent};
use holdfast_engine::node::SHARDS_MAX;
use holdfast_engine::publish::{Published, Recorder};
use holdfast_persistence::DiskSync;
use tokio::sync::watch;

use super::audit::{self, GENESIS_HASH};
use super::audit_index::{id_hash, AuditIndex};
use super::frames::{self, FramedEvent, FRAME_AUDIT_MAX, FRAME_EVENTS_MAX};
use super::mapping::{audit_of, body, events_of, rfc3339};
use super::open_db;
use super::ring::{Ring, RING_EVENTS_MAX};

/// Where the store lives inside the data directory.
pub const EVENTS_SUBDIR: &str = "events";
/// Events kept: a resume from before the oldest kept is `Gone` (SSE `event: gone`). At about
/// 250 bytes an event, 2 million events are about 500 MiB on disk, several hours of a launch
/// morning (two events per status change at 15-25 K changes/s peak, far less on average).
/// Whole frames are dropped, so up to [`FRAME_EVENTS_MAX`] - 1 more may be kept.
pub const EVENTS_RETAINED_MAX: u64 = 2_000_000;
/// Batches of changes queued for the recorder before a publisher waits: back-pressure on
/// the journal's completions (and so on new writes, through the journal's high-water mark)
/// rather than loss. A batch is one group commit's changes of one shard.
pub const RECORDER_QUEUE_BATCHES: usize = 4_096;
/// Changes written in one `apply_batch` and one flush by the recorder, at most.
pub const RECORDER_WRITE_CHANGES_MAX: usize = 8_192;
/// Shortest time between the starts of two writes of the recorder: a change that comes
/// after a quiet spell is written at once, and under load the changes of this interval go in
/// one write. Each write costs sled a rewrite of the tail nodes it touches and the disk an
/// `fdatasync`, whatever its size, so at a launch's rate this trades at most this much more
/// delay before an event is readable for several times fewer writes (the publishers never
/// wait for it: the recorder's queue is between them).
pub const RECORDER_WRITE_INTERVAL_MS: u64 = 10;
/// Longest wait between two attempts at storing a batch the store refused (a full disk): the
/// recorder retries the same batch until it is stored, never skipping it.
pub const RECORDER_RETRY_MAX_MS: u64 = 5_000;
/// While it waits to retry a batch, the recorder checks this often whether the node stopped.
const PUBLISHER_GONE_CHECK: std::time::Duration = std::time::Duration::from_millis(10);
/// Old event frames dropped in one write at most when the retention trims (the rest go
/// with the next writes): a lowered retention never stalls one write for long.
const TRIM_FRAMES_MAX: usize = 64;
/// Trees of the per-record layout before frames: a store that has them is refused rather
/// than misread.
const OLD_LAYOUT_TREES: [&str; 2] = ["events", "audit"];

struct Inner {
    db: sled::Db,
    frames: sled::Tree,
    /// Per shard: the highest `wal_seq` whose change is durably stored.
    recorded: Vec<AtomicU64>,
    head: watch::Sender<u64>,
    oldest: AtomicU64,
    retained_max: u64,
    /// `fdatasync`s of the store's data file so far (one per stored batch on disk).
    fdatasyncs: AtomicU64,
    /// Set when the node's publisher dropped the recorder (the node stopped): a batch that
    /// cannot be stored is then given up instead of retried (see `Writer::run`).
    publisher_gone: AtomicBool,
    /// The newest durable events, shared by the readers that keep up.
    ring: Ring,
    /// Which stretches of the audit chain may hold an appointment's records.
    audit_index: AuditIndex,
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
    /// The stored cursor table, sorted by shard (rewritten whole in every batch).
    cursors: Vec<(u32, u64)>,
}

/// Where a reopened store stands: its newest and oldest event, its last audit record.
struct Tail {
    head: u64,
    oldest: u64,
    audit_seq: u64,
    audit_prev: String,
}

fn tail_of(tree: &sled::Tree) -> Tail {
    let frame = |entry: Option<(sled::IVec, sled::IVec)>| {
        entry.and_then(|(key, value)| Some((frames::first_of(&key)?, value)))
    };
    let last_events = frame(
        tree.range(frames::events_range())
            .next_back()
            .and_then(Result::ok),
    );
    let head = last_events.map_or(0, |(first, value)| first + frames::event_count(&value) - 1);
    let oldest = frame(
        tree.range(frames::events_range())
            .next()
            .and_then(Result::ok),
    )
    .map_or(head + 1, |(first, _)| first);
    let last_audit = tree
        .range(frames::audit_range())
        .next_back()
        .and_then(Result::ok);
    let (audit_seq, audit_prev) =
        match last_audit.and_then(|(_, value)| frames::decode_audit(&value).last()) {
            Some(Ok(record)) => (record.seq, record.hash),
            Some(Err(e)) => (0, format!("unreadable: {e}")),
            None => (0, GENESIS_HASH.to_string()),
        };
    Tail {
        head,
        oldest,
        audit_seq,
        audit_prev,
    }
}

fn refuse_old_layout(db: &sled::Db) -> Result<(), String> {
    for name in OLD_LAYOUT_TREES {
        let old = db
            .tree_names()
            .iter()
            .any(|tree| tree.as_ref() == name.as_bytes());
        if old && !db.open_tree(name).map_or(true, |tree| tree.is_empty()) {
            return Err(format!(
                "the event store was written by an older holdfast (tree `{name}`, one record \
                 per key); this version keeps frames and cannot read it: move the `{EVENTS_SUBDIR}` \
                 directory away to start a new feed and audit chain"
            ));
        }
    }
    Ok(())
}

fn refuse_old_index(tree: &sled::Tree) -> Result<(), String> {
    if tree.scan_prefix(frames::OLD_INDEX_PREFIX).next().is_some() {
        return Err(format!(
            "the event store was written by an older holdfast (one audit index entry per \
             status change); this version keeps one index frame per batch and cannot read it: \
             move the `{EVENTS_SUBDIR}` directory away to start a new feed and audit chain"
        ));
    }
    Ok(())
}

/// The in-memory audit index, from the index frames (8 bytes a record read).
fn load_audit_index(tree: &sled::Tree) -> Result<AuditIndex, String> {
    let index = AuditIndex::default();
    for entry in tree.range(frames::index_range()) {
        let (key, frame) = entry.map_err(|e| format!("cannot read the audit index: {e}"))?;
        if let Some(first) = frames::first_of(&key) {
            let hashes: Vec<u64> = frames::decode_index(&frame).collect();
            index.add(first, hashes.into_iter());
        }
    }
    Ok(index)
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
        EventStore::open_bounded(dir, retained_max, RING_EVENTS_MAX)
    }

    /// [`EventStore::open_retaining`] keeping at most `ring_events` in memory (tests set it
    /// low to cross the seam between the frames and the ring).
    pub fn open_bounded(
        dir: Option<&Path>,
        retained_max: u64,
        ring_events: usize,
    ) -> Result<(Arc<EventStore>, Arc<dyn Recorder>), String> {
        let db = open_db(dir)?;
        refuse_old_layout(&db)?;
        let tree = db
            .open_tree(frames::TREE)
            .map_err(|e| format!("cannot open the event store's tree: {e}"))?;
        let cursors = tree
            .get(frames::CURSORS_KEY)
            .map_err(|e| format!("cannot read the event cursors: {e}"))?
            .map_or_else(Vec::new, |value| frames::decode_cursors(&value));
        let recorded: Vec<AtomicU64> = (0..SHARDS_MAX).map(|_| AtomicU64::new(0)).collect();
        for (shard, wal_seq) in &cursors {
            if let Some(cursor) = recorded.get(*shard as usize) {
                cursor.store(*wal_seq, Ordering::Release);
            }
        }
        refuse_old_index(&tree)?;
        let tail = tail_of(&tree);
        let tree_for_index = tree.clone();
        let inner = Arc::new(Inner {
            db,
            frames: tree,
            recorded,
            head: watch::channel(tail.head).0,
            oldest: AtomicU64::new(tail.oldest),
            fdatasyncs: AtomicU64::new(0),
            publisher_gone: AtomicBool::new(false),
            retained_max: retained_max.max(1),
            ring: Ring::new(ring_events),
            audit_index: load_audit_index(&tree_for_index)?,
        });
        let (tx, rx) = sync_channel(RECORDER_QUEUE_BATCHES);
        let disk = dir
            .map(|dir| DiskSync::open(&dir.join(EVENTS_SUBDIR)))
            .transpose()?;
        let writer = Writer {
            inner: inner.clone(),
            disk,
            next_seq: tail.head + 1,
            audit_seq: tail.audit_seq,
            audit_prev: tail.audit_prev,
            cursors,
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

    /// The first sequence of the frame holding `seq` (or of the first frame after it).
    fn frame_start(&self, seq: u64) -> u64 {
        self.inner
            .frames
            .range(frames::event_key(0)..=frames::event_key(seq))
            .next_back()
            .and_then(Result::ok)
            .and_then(|(key, _)| frames::first_of(&key))
            .unwrap_or(seq)
    }
}

impl EventStore {
    /// Up to `max` events after `after` from the sled frames, at most up to `head`.
    fn read_stored(&self, after: u64, head: u64, max: usize) -> Vec<Arc<StoredEvent>> {
        let max = max.min((head - after) as usize);
        let mut out = Vec::with_capacity(max);
        let from = self.frame_start(after + 1);
        let range = frames::event_key(from)..=frames::event_key(head);
        for entry in self.inner.frames.range(range) {
            let Ok((key, frame)) = entry else { break };
            let Some(first) = frames::first_of(&key) else {
                break;
            };
            if out.len() >= max {
                break;
            }
            if let Err(error) = frames::decode_events(first, &frame, after + 1, max, &mut out) {
                tracing::error!(%error, "an event frame does not decode; the feed stops before it");
                break;
            }
        }
        out.into_iter().map(Arc::new).collect()
    }
}

impl EventFeed for EventStore {
    fn read_after(&self, after: u64, max: usize) -> Result<Vec<StoredEvent>, Gone> {
        self.read_shared(after, max)
            .map(|events| events.iter().map(|event| (**event).clone()).collect())
    }

    /// From the ring while `after + 1` is in it, from the frames before (a resume from
    /// older sequences, or across a restart): the next read after the last frame's event
    /// finds the ring's first, so the seam has no gap and no duplicate.
    fn read_shared(&self, after: u64, max: usize) -> Result<Vec<Arc<StoredEvent>>, Gone> {
        let oldest = self.oldest();
        if after.saturating_add(1) < oldest {
            return Err(Gone {
                after,
                oldest_seq: oldest,
            });
        }
        // Only what is durable: the ring and the frames may hold a batch the head has not
        // reached yet.
        let head = *self.inner.head.borrow();
        if after >= head {
            return Ok(Vec::new());
        }
        let out = match self.inner.ring.read_after(after, head, max) {
            Some(events) => events,
            None => self.read_stored(after, head, max),
        };
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
        audit::verify(&self.inner.frames)
    }

    fn history(&self, appointment_id: &str, max: usize) -> Vec<AuditRecord> {
        let tree = &self.inner.frames;
        let hash = id_hash(appointment_id);
        let mut frame: Option<(u64, Vec<AuditRecord>)> = None;
        let mut out = Vec::new();
        for stretch in self.inner.audit_index.candidates(hash) {
            let range = frames::index_key(stretch.start)..frames::index_key(stretch.end);
            for entry in tree.range(range) {
                let Ok((key, index)) = entry else { break };
                let Some(first) = frames::first_of(&key) else {
                    break;
                };
                let seqs = frames::decode_index(&index)
                    .zip(first..)
                    .filter(|(h, _)| *h == hash)
                    .map(|(_, seq)| seq);
                for seq in seqs {
                    if let Some(record) = audit_record(tree, &mut frame, seq) {
                        if record.appointment_id == appointment_id {
                            out.push(record);
                        }
                    }
                    if out.len() >= max {
                        return out;
                    }
                }
            }
        }
        out
    }
}

/// Audit record `seq`, through `frame` (the last audit frame read, kept for the next record).
fn audit_record(
    tree: &sled::Tree,
    frame: &mut Option<(u64, Vec<AuditRecord>)>,
    seq: u64,
) -> Option<AuditRecord> {
    let held = frame
        .as_ref()
        .is_some_and(|(first, records)| (*first..*first + records.len() as u64).contains(&seq));
    if !held {
        *frame = audit_frame_holding(tree, seq);
    }
    let (first, records) = frame.as_ref()?;
    records.get((seq - first) as usize).cloned()
}

/// The audit frame holding record `seq`: its first sequence and its readable records.
fn audit_frame_holding(tree: &sled::Tree, seq: u64) -> Option<(u64, Vec<AuditRecord>)> {
    let (key, value) = tree
        .range(frames::audit_key(0)..=frames::audit_key(seq))
        .next_back()?
        .ok()?;
    let first = frames::first_of(&key)?;
    let records = frames::decode_audit(&value).map_while(Result::ok).collect();
    Some((first, records))
}

impl Drop for RecorderPort {
    /// The node's publisher let go of the recorder: the node stopped.
    fn drop(&mut self) {
        self.inner.publisher_gone.store(true, Ordering::Release);
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

/// A batch numbered and ready for one `apply_batch`.
#[derive(Default)]
struct Prepared {
    /// `(seq, type, data JSON)`, consecutive sequences.
    events: Vec<(u64, &'static str, String)>,
    audit: Vec<AuditRecord>,
    /// The whole cursor table after the batch, sorted by shard.
    cursors: Vec<(u32, u64)>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Vec<Published>>) {
        let interval = std::time::Duration::from_millis(RECORDER_WRITE_INTERVAL_MS);
        let mut last_write: Option<std::time::Instant> = None;
        while let Ok(mut batch) = rx.recv() {
            // Under load, gather what comes in the rest of the interval: fewer, larger writes.
            if let Some(rest) = last_write.and_then(|at| interval.checked_sub(at.elapsed())) {
                std::thread::sleep(rest);
            }
            last_write = Some(std::time::Instant::now());
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
            // Once the node has stopped, though, nothing new comes, and sled does not write
            // again after an I/O error (a full disk): the batch is given up, as a crash would
            // leave it, and the thread ends so the store can close (and open again in this
            // process, `reopen.rs`). The cursors did not move past it, and the log keeps every
            // change above them (`Recorder::recorded`), so the next start derives it again.
            let mut backoff_ms = 10;
            while let Err(error) = self.write(&batch) {
                if self.inner.publisher_gone.load(Ordering::Acquire) {
                    tracing::error!(%error, "the event store cannot store a batch and the node has stopped: the next start derives it again from the log");
                    return;
                }
                tracing::error!(%error, retry_in_ms = backoff_ms, "the event store could not store a batch");
                self.sleep_unless_publisher_gone(std::time::Duration::from_millis(backoff_ms));
                backoff_ms = (backoff_ms * 2).min(RECORDER_RETRY_MAX_MS);
            }
        }
    }

    /// Sleeps `wait`, or less once the node's publisher is gone.
    fn sleep_unless_publisher_gone(&self, wait: std::time::Duration) {
        let deadline = std::time::Instant::now() + wait;
        while !self.inner.publisher_gone.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(PUBLISHER_GONE_CHECK));
        }
    }

    /// Numbers the changes above each shard's cursor, without moving anything yet.
    fn prepare(&self, batch: &[Published]) -> Prepared {
        let mut prepared = Prepared {
            cursors: self.cursors.clone(),
            ..Prepared::default()
        };
        let (mut seq, mut audit_seq) = (self.next_seq, self.audit_seq);
        let mut prev = self.audit_prev.clone();
        for change in batch {
            let cursor = match prepared
                .cursors
                .binary_search_by_key(&change.shard, |(shard, _)| *shard)
            {
                Ok(at) => &mut prepared.cursors[at].1,
                Err(at) => {
                    prepared.cursors.insert(at, (change.shard, 0));
                    &mut prepared.cursors[at].1
                }
            };
            if change.wal_seq <= *cursor {
                continue; // stored before a restart, published again at recovery
            }
            *cursor = change.wal_seq;
            let at = rfc3339(change.at_ms);
            for draft in events_of(&change.change) {
                let data = body(seq, change.shard, &at, &draft);
                prepared.events.push((seq, draft.event_type, data));
                seq += 1;
            }
            if let Some(entry) = audit_of(&change.change) {
                audit_seq += 1;
                let record = audit::seal(
                    audit_seq,
                    at,
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

    /// The batch's frames, index frame and cursor table as one sled batch.
    fn frame(prepared: &Prepared) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for chunk in prepared.events.chunks(FRAME_EVENTS_MAX) {
            let events = chunk
                .iter()
                .map(|(_, event_type, data)| FramedEvent { event_type, data });
            batch.insert(
                &frames::event_key(chunk[0].0),
                frames::encode_events(events),
            );
        }
        for chunk in prepared.audit.chunks(FRAME_AUDIT_MAX) {
            batch.insert(
                &frames::audit_key(chunk[0].seq),
                frames::encode_audit(chunk),
            );
        }
        if let Some(first) = prepared.audit.first() {
            let hashes = prepared
                .audit
                .iter()
                .map(|record| id_hash(&record.appointment_id));
            batch.insert(&frames::index_key(first.seq), frames::encode_index(hashes));
        }
        batch.insert(
            frames::CURSORS_KEY,
            frames::encode_cursors(&prepared.cursors),
        );
        batch
    }

    fn write(&mut self, batch: &[Published]) -> Result<(), String> {
        let prepared = self.prepare(batch);
        let mut framed = Writer::frame(&prepared);
        let head = prepared.events.last().map(|(seq, _, _)| *seq);
        if let Some(head) = head {
            self.trim(head, &mut framed);
        }
        let inner = &self.inner;
        inner
            .frames
            .apply_batch(framed)
            .map_err(|e| format!("storing a batch failed: {e}"))?;
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
        self.cursors = prepared.cursors;
        if let Some(first) = prepared.audit.first() {
            let hashes = prepared
                .audit
                .iter()
                .map(|record| id_hash(&record.appointment_id));
            inner.audit_index.add(first.seq, hashes);
        }
        if let Some(last) = prepared.audit.last() {
            self.audit_seq = last.seq;
            self.audit_prev = last.hash.clone();
        }
        if let Some(head) = head {
            self.next_seq = head + 1;
            // Durable now: into the ring first, then readable (the head moves).
            inner
                .ring
                .push(prepared.events.into_iter().map(|(seq, event_type, data)| {
                    Arc::new(StoredEvent {
                        seq,
                        event_type: event_type.to_string(),
                        data,
                    })
                }));
            inner.head.send_replace(head);
        }
        Ok(())
    }

    /// Adds to `batch` the removal of the oldest frames past the retention (at most
    /// [`TRIM_FRAMES_MAX`]); readers are told `Gone` first: the oldest kept sequence moves
    /// before the frames go.
    fn trim(&self, head: u64, batch: &mut sled::Batch) {
        let inner = &self.inner;
        let keep_from = head.saturating_sub(inner.retained_max) + 1;
        if keep_from <= inner.oldest.load(Ordering::Acquire) {
            return;
        }
        let mut oldest = None;
        for entry in inner
            .frames
            .range(frames::events_range())
            .take(TRIM_FRAMES_MAX + 1)
        {
            let Ok((key, frame)) = entry else { return };
            let Some(first) = frames::first_of(&key) else {
                return;
            };
            if first + frames::event_count(&frame) > keep_from {
                oldest = Some(first);
                break;
            }
            batch.remove(key);
            oldest = Some(first + frames::event_count(&frame));
        }
        if let Some(oldest) = oldest {
            inner.oldest.fetch_max(oldest, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use holdfast_engine::publish::Change;

    use super::*;

    /// A fresh directory under the system's temporary one, unique to this process and call.
    fn scratch_dir(what: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "holdfast-event-store-{what}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

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
    fn changes_are_numbered_gap_free_once_each_and_old_frames_are_gone_past_the_retention() {
        let (store, recorder) = EventStore::open_retaining(None, 5).unwrap();
        // One write each (waiting in between), so the frames are [1-4], [5], [6-8].
        recorder.record((1..=4).map(|s| stock(0, s)).collect());
        wait_for_head(&store, 4);
        // A restart publishes stored changes again: skipped by the shard's cursor.
        recorder.record(vec![stock(0, 3), stock(0, 4), stock(1, 1)]);
        wait_for_head(&store, 5);
        recorder.record((5..=7).map(|s| stock(0, s)).collect());
        wait_for_head(&store, 8);
        assert_eq!(recorder.recorded(0), 7);
        assert_eq!(recorder.recorded(1), 1);
        // Keeping 5 of 8 would start at 4: whole frames go, so [1-4] stays for now.
        assert_eq!(store.oldest(), 1);
        let all = store.read_after(0, 100).unwrap();
        let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7, 8]);
        let deltas: Vec<i64> = all
            .iter()
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["delta"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            deltas,
            [1, 2, 3, 4, 1, 5, 6, 7],
            "shard 0's 1-4, shard 1's 1, shard 0's 5-7"
        );
        assert_eq!(all[0].event_type, "StockChanged");
        // Resuming in the middle of a frame, and pages smaller than a frame.
        let middle: Vec<u64> = store
            .read_after(2, 3)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(middle, [3, 4, 5]);
        recorder.record((8..=10).map(|s| stock(0, s)).collect());
        wait_for_head(&store, 11);
        // Keeping 5 of 11 starts at 7: [1-4] and [5] go, [6-8] stays.
        assert_eq!(store.oldest(), 6);
        assert_eq!(store.read_after(0, 100).unwrap_err().oldest_seq, 6);
        assert!(store.read_after(4, 100).is_err(), "5 is gone");
        let kept: Vec<u64> = store
            .read_after(5, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(kept, [6, 7, 8, 9, 10, 11]);
        assert!(store.read_after(11, 100).unwrap().is_empty());
        assert_eq!(store.read_after(6, 1).unwrap().len(), 1);
        assert_eq!(
            store.fdatasyncs(),
            0,
            "a temporary store has no file to sync"
        );
    }

    fn status(shard: u32, wal_seq: u64, appointment: u64) -> Published {
        use holdfast_engine::ids::AppointmentId;
        Published {
            shard,
            wal_seq,
            at_ms: 1_700_000_000_000,
            change: Change::AppointmentStatus {
                appointment_id: AppointmentId {
                    shard,
                    seq: appointment,
                },
                clinic_id: "k1".into(),
                slot_id: "s1".into(),
                vaccine: "pfz".into(),
                citizen_id: "c1".into(),
                status: holdfast_engine::model::Status::Pending,
                offered_from_waitlist: false,
                rescheduled_from: None,
                rescheduled_to: None,
            },
        }
    }

    fn seqs(events: Vec<Arc<StoredEvent>>) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    /// A resume from before the ring's oldest event reads the frames up to it, and the next
    /// read continues in the ring: every event once, in order, across the seam.
    #[test]
    fn a_resume_just_before_the_rings_oldest_event_crosses_the_seam_without_gap_or_duplicate() {
        let (store, recorder) = EventStore::open_bounded(None, 1_000, 4).unwrap();
        for s in 1..=10 {
            recorder.record(vec![stock(0, s)]);
            wait_for_head(&store, s);
        }
        assert_eq!(store.inner.ring.oldest(), Some(7), "the ring keeps 7-10");
        // Just before the ring: 6 from the frames, then the ring.
        assert_eq!(seqs(store.read_shared(5, 1).unwrap()), [6]);
        assert_eq!(seqs(store.read_shared(6, 100).unwrap()), [7, 8, 9, 10]);
        assert_eq!(seqs(store.read_shared(5, 100).unwrap()), [6, 7, 8, 9, 10]);
        // Every page size, from the start: each event once, in order.
        for page in 1..=4 {
            let (mut last, mut got) = (0, Vec::new());
            for _ in 0..20 {
                let batch = store.read_shared(last, page).unwrap();
                let Some(event) = batch.last() else { break };
                last = event.seq;
                got.extend(seqs(batch));
            }
            assert_eq!(got, (1..=10).collect::<Vec<_>>(), "pages of {page}");
        }
        let data = |events: Vec<StoredEvent>| events[0].data.clone();
        assert_eq!(
            data(store.read_after(6, 1).unwrap()),
            store.read_stored(6, 10, 1)[0].data,
            "the ring and the frames hold the same event"
        );
    }

    /// One index frame per batch, not one entry per change: an appointment's records are
    /// found, in order, in every batch that holds them, before and after a reopen.
    #[test]
    fn an_appointments_audit_records_are_found_through_the_index_frames_across_a_reopen() {
        let dir = scratch_dir("index");
        let ids = |records: Vec<AuditRecord>| -> Vec<(u64, String)> {
            records
                .into_iter()
                .map(|r| (r.seq, r.appointment_id))
                .collect()
        };
        {
            let (store, recorder) = EventStore::open(Some(&dir)).unwrap();
            recorder.record((1..=40).map(|s| status(0, s, s % 3)).collect());
            wait_for_head(&store, 40);
            let first = store.head();
            recorder.record(vec![status(0, 41, 1), stock(0, 42), status(1, 1, 1)]);
            wait_for_head(&store, first + 3);
            let index_frames = store.inner.frames.range(frames::index_range()).count();
            assert_eq!(index_frames, 2, "one index frame a batch");
            drop(recorder);
            store.join_recorder(std::time::Duration::from_secs(10));
        }
        let (store, recorder) = EventStore::open(Some(&dir)).unwrap();
        let one = store.history("ap-0-1", 100);
        let expected: Vec<u64> = (1..=40).filter(|s| s % 3 == 1).chain([41]).collect();
        assert_eq!(
            ids(one.clone()).iter().map(|r| r.0).collect::<Vec<_>>(),
            expected
        );
        assert!(one.iter().all(|r| r.appointment_id == "ap-0-1"), "{one:?}");
        assert_eq!(
            ids(store.history("ap-1-1", 100)),
            [(42, "ap-1-1".to_string())]
        );
        assert_eq!(store.history("ap-0-1", 2).len(), 2, "at most max");
        assert!(store.history("ap-0-99", 100).is_empty());
        drop(recorder);
        store.join_recorder(std::time::Duration::from_secs(10));
        drop(store);
        // The layout before index frames (an `i` entry per change) is refused, not misread.
        {
            let db = crate::events::open_db(Some(&dir)).unwrap();
            let tree = db.open_tree(frames::TREE).unwrap();
            tree.insert(b"i0-1\0\0\0\0\0\0\0\0\x01", &[]).unwrap();
            db.flush().unwrap();
        }
        let refused = EventStore::open(Some(&dir)).err().expect("refused");
        assert!(refused.contains("older holdfast"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// sled's flush ends in `sync_file_range`: a stored batch on disk is also `fdatasync`ed
    /// before its events are readable.
    #[test]
    fn a_stored_batch_on_disk_is_fdatasynced_before_it_is_readable_and_found_again_on_reopen() {
        let dir = scratch_dir("sync");
        {
            let (store, recorder) = EventStore::open(Some(&dir)).unwrap();
            recorder.record((1..=3).map(|s| stock(0, s)).collect());
            wait_for_head(&store, 3);
            assert!(store.fdatasyncs() >= 1, "{}", store.fdatasyncs());
            drop(recorder);
            store.join_recorder(std::time::Duration::from_secs(10));
        }
        // Reopened: the head, the oldest event and the cursors are where they were.
        let (store, recorder) = EventStore::open(Some(&dir)).unwrap();
        assert_eq!((store.head(), store.oldest()), (3, 1));
        assert_eq!(recorder.recorded(0), 3);
        recorder.record((2..=5).map(|s| stock(0, s)).collect());
        wait_for_head(&store, 5);
        let seqs: Vec<u64> = store
            .read_after(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5], "2 and 3 were stored before: skipped");
        drop(recorder);
        store.join_recorder(std::time::Duration::from_secs(10));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
