//! Recovery: one pass over the frames tree at `Wal::open`, before the writer starts, that
//! builds every shard's tail (handed out once each by `Wal::recover_shard`), cuts what cannot
//! be trusted, and seeds the writer's index of live frames.
//!
//! Rules, in the order frames were written:
//! - a record at or below its shard's snapshot seq is skipped silently (a truncation that a
//!   crash interrupted); its frame is deleted once no shard needs it;
//! - a shard's records must go on from its snapshot's seq + 1 by one: the first gap (or
//!   repeat) ends that shard's log. The record and the shard's later ones are dropped and
//!   reported, and the frames holding them are rewritten without them, so they never come
//!   back at a later recovery (the shard writes new records with those seqs);
//! - the first frame that fails its check (checksum, version, cut short, a body that does
//!   not parse) ends the log for every shard: it and every later frame are deleted. Records
//!   of later frames that still decode are reported as dropped on their shards, and so are
//!   the seqs missing between a shard's last good record and its first record after the bad
//!   frame (they were in it). The bad frame's own records cannot be read: a shard with no
//!   record after it is told once, by one dropped entry at its next seq, that the frame may
//!   have held its records from there on (so every shard is told, none is skipped wrongly);
//! - a shard whose snapshot is corrupt is left alone: its frames are kept, and
//!   `recover_shard` reports the snapshot as corrupt.
//!
//! Every change is made durable by one durable flush before `open` returns, in an order that
//! leaves the same answer if a crash interrupts it: rewrites, then the frames no shard needs,
//! then the frames from the bad one on, latest first, the bad one last.
//!
//! Memory: every shard's tail is held from `open` until its `recover_shard` takes it, which is
//! what the shards hold anyway when they recover in parallel; tails are bounded by the
//! snapshot interval.

use std::collections::{BTreeMap, BTreeSet};

use super::format::SnapshotFile;
use super::format::{
    decode_frame, decode_stored_snapshot, frame_key, parse_frame_key, FrameRecord, FrameValue,
    StoredSnapshot,
};
use super::index::LiveIndex;
use super::snapshot_files::SnapshotFiles;
use super::{io, Dropped, Shared, WalError, LEGACY_LOG_TREE, SLED_BATCH_FRAMES_MAX};

/// One shard's log as recovery found it.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    /// The next seq this shard's log should hold.
    pub(crate) expected: u64,
    pub(crate) records: Vec<(u64, Vec<u8>)>,
    pub(crate) dropped: Vec<Dropped>,
    /// The seq at which a gap ended this shard's log.
    ended_at: Option<u64>,
    /// It has records in frames after the bad frame.
    after_bad: bool,
}

impl Tail {
    pub(crate) fn new(snapshot_seq: u64) -> Tail {
        Tail {
            expected: snapshot_seq + 1,
            ..Tail::default()
        }
    }
}

/// The first frame that failed its check.
#[derive(Debug)]
struct BadFrame {
    what: String,
    why: String,
}

/// The tails found at open, until `recover_shard` hands each out.
#[derive(Debug, Default)]
pub(crate) struct Tails {
    shards: BTreeMap<u32, Tail>,
    bad: Option<BadFrame>,
    handed_out: BTreeSet<u32>,
}

impl Tails {
    /// `shard`'s tail (once; `None` on a second call), with the bad frame reported if it may
    /// have held records of it.
    pub(crate) fn take(&mut self, shard: u32, snapshot_seq: u64) -> Option<Tail> {
        if !self.handed_out.insert(shard) {
            return None;
        }
        let mut tail = self
            .shards
            .remove(&shard)
            .unwrap_or_else(|| Tail::new(snapshot_seq));
        if let Some(bad) = &self.bad {
            if tail.ended_at.is_none() && !tail.after_bad {
                tail.dropped.push(Dropped {
                    seq: tail.expected,
                    reason: format!(
                        "{} was unreadable ({}) and cut off: it may have held this shard's \
                         records from seq {} on",
                        bad.what, bad.why, tail.expected
                    ),
                });
            }
        }
        Some(tail)
    }
}

/// Shard -> its snapshot's seq (None: the snapshot cannot be trusted).
type SnapshotSeqs = BTreeMap<u32, Option<u64>>;

/// What the scan decided, before it is applied.
#[derive(Default)]
struct Scan {
    /// Shard -> its snapshot's seq (None: the snapshot is corrupt; the shard is left alone).
    snapshot_seqs: SnapshotSeqs,
    tails: Tails,
    index: LiveIndex,
    /// Frames before the bad one that keep records, in order.
    kept: Vec<u64>,
    /// Frames before the bad one that lose records: (number, new value; None if empty).
    rewrites: Vec<(u64, Option<Vec<u8>>)>,
    /// Keys of the bad frame and every later one, in order.
    cut: Vec<sled::IVec>,
    next_frame: u64,
}

/// Reads the log, cuts what cannot be trusted (durably), and returns the tails and the
/// writer's index.
pub(crate) fn recover_log(
    db: &sled::Db,
    frames: &sled::Tree,
    snapshots: &sled::Tree,
    files: &SnapshotFiles,
    shared: &Shared,
) -> Result<Recovered, WalError> {
    refuse_legacy_log(db)?;
    let (snapshot_seqs, snapshot_files) = read_snapshot_pointers(snapshots, files)?;
    let mut scan = Scan {
        snapshot_seqs,
        ..Scan::default()
    };
    for entry in frames.iter() {
        let (key, value) = entry.map_err(io("cannot read the log"))?;
        scan.frame(key, &value);
    }
    let mut index = std::mem::take(&mut scan.index);
    index.seed(scan.next_frame, scan.kept.len() as u64);
    let first_live = index.span().first_live_frame;
    let changed = scan
        .apply(frames, first_live)
        .map_err(io("cannot cut the log"))?;
    if changed.any {
        shared.durable_flush(db).map_err(WalError::Io)?;
    }
    index.deleted(first_live, changed.deleted_kept);
    Ok(Recovered {
        tails: scan.tails,
        index,
        snapshot_files,
    })
}

/// What `recover_log` found.
pub(crate) struct Recovered {
    pub(crate) tails: Tails,
    pub(crate) index: LiveIndex,
    /// Shard -> the snapshot file its pointer names (whether or not the file is whole).
    pub(crate) snapshot_files: BTreeMap<u32, SnapshotFile>,
}

/// The data directory of a build that stored one sled key per record is not read: refuse it.
fn refuse_legacy_log(db: &sled::Db) -> Result<(), WalError> {
    let names = db.tree_names();
    if !names.iter().any(|name| name == LEGACY_LOG_TREE.as_bytes()) {
        return Ok(());
    }
    let legacy = db
        .open_tree(LEGACY_LOG_TREE)
        .map_err(io("cannot open the legacy tree log"))?;
    if legacy.is_empty() {
        return Ok(());
    }
    Err(WalError::Corrupt(format!(
        "this log was written by an older build, in the older format (tree `{LEGACY_LOG_TREE}`, \
         one key per record), which this build does not read; such a data directory is refused \
         anyway, as its records use the engine's previous encoding version: start from an \
         empty data directory"
    )))
}

/// Every shard's snapshot seq (None when its snapshot cannot be trusted: a damaged pointer
/// or inline snapshot, or a file that is missing or of another length than its pointer says;
/// reading a file's checksum waits for `recover_shard`), and the files the pointers name.
/// Only the pointers are read here, not the snapshots themselves.
fn read_snapshot_pointers(
    snapshots: &sled::Tree,
    files: &SnapshotFiles,
) -> Result<(SnapshotSeqs, BTreeMap<u32, SnapshotFile>), WalError> {
    let mut seqs = BTreeMap::new();
    let mut named = BTreeMap::new();
    for entry in snapshots.iter() {
        let (key, value) = entry.map_err(io("cannot read snapshots"))?;
        let Ok(shard) = <[u8; 4]>::try_from(&key[..]) else {
            continue;
        };
        let seq = match decode_stored_snapshot(&key, &value) {
            Ok(StoredSnapshot::File { file, len }) => {
                named.insert(file.shard, file);
                files.looks_whole(&file, len).then_some(file.seq)
            }
            Ok(inline) => Some(inline.seq()),
            Err(_) => None,
        };
        seqs.insert(u32::from_be_bytes(shard), seq);
    }
    Ok((seqs, named))
}

/// What `Scan::apply` did.
struct Changed {
    any: bool,
    /// Kept frames it deleted (no shard needed them).
    deleted_kept: u64,
}

impl Scan {
    fn frame(&mut self, key: sled::IVec, value: &[u8]) {
        if let Some(number) = parse_frame_key(&key) {
            self.next_frame = self.next_frame.max(number + 1);
        }
        if self.tails.bad.is_some() {
            if let Ok(records) = decode_frame(&key, value) {
                for record in records {
                    self.after_bad(record);
                }
            }
            self.cut.push(key);
            return;
        }
        match decode_frame(&key, value) {
            Ok(records) => {
                let number = parse_frame_key(&key).expect("decode_frame checked the key");
                self.good_frame(number, records);
            }
            Err(why) => {
                let what = match parse_frame_key(&key) {
                    Some(number) => format!("frame {number}"),
                    None => format!("a frame with a key of {} bytes", key.len()),
                };
                self.tails.bad = Some(BadFrame { what, why });
                self.cut.push(key);
            }
        }
    }

    fn good_frame(&mut self, number: u64, records: Vec<FrameRecord<'_>>) {
        let total = records.len();
        let kept: Vec<FrameRecord<'_>> = records
            .into_iter()
            .filter(|record| self.accept(number, record))
            .collect();
        if kept.len() < total {
            let value = (!kept.is_empty()).then(|| {
                let mut value = FrameValue::with_capacity(0);
                for record in &kept {
                    value.push(record.shard, record.seq, record.payload);
                }
                value.finish(&frame_key(number))
            });
            self.rewrites.push((number, value));
        }
        if !kept.is_empty() {
            self.kept.push(number);
        }
    }

    /// Whether the record stays in its frame; takes it into its shard's tail if it is next.
    fn accept(&mut self, frame: u64, record: &FrameRecord<'_>) -> bool {
        let snapshot_seq = match self.snapshot_seqs.get(&record.shard) {
            // A corrupt snapshot: the shard is not recovered here; keep its frames.
            Some(None) => {
                self.index.note(record.shard, frame, record.seq);
                return true;
            }
            Some(Some(seq)) => *seq,
            None => 0,
        };
        if record.seq <= snapshot_seq {
            return true;
        }
        let tail = self
            .tails
            .shards
            .entry(record.shard)
            .or_insert_with(|| Tail::new(snapshot_seq));
        let reason = match tail.ended_at {
            Some(gap) => format!("after the end of the shard's log (the gap at seq {gap})"),
            None if record.seq != tail.expected => {
                tail.ended_at = Some(record.seq);
                format!("gap: expected seq {}, found {}", tail.expected, record.seq)
            }
            None => {
                tail.records.push((record.seq, record.payload.to_vec()));
                tail.expected += 1;
                self.index.note(record.shard, frame, record.seq);
                return true;
            }
        };
        tail.dropped.push(Dropped {
            seq: record.seq,
            reason,
        });
        false
    }

    /// A record of a frame after the bad one: reported, with the seqs the bad frame held.
    fn after_bad(&mut self, record: FrameRecord<'_>) {
        let snapshot_seq = match self.snapshot_seqs.get(&record.shard) {
            Some(None) => return,
            Some(Some(seq)) => *seq,
            None => 0,
        };
        if record.seq <= snapshot_seq {
            return;
        }
        let bad = self.tails.bad.as_ref().expect("after the bad frame");
        let tail = self
            .tails
            .shards
            .entry(record.shard)
            .or_insert_with(|| Tail::new(snapshot_seq));
        if tail.ended_at.is_none() && !tail.after_bad {
            tail.after_bad = true;
            for seq in tail.expected..record.seq {
                tail.dropped.push(Dropped {
                    seq,
                    reason: format!("in {}, which was unreadable: {}", bad.what, bad.why),
                });
            }
        }
        tail.dropped.push(Dropped {
            seq: record.seq,
            reason: format!(
                "after the end of the log ({} was unreadable: {})",
                bad.what, bad.why
            ),
        });
    }

    /// Rewrites, deletes the frames no shard needs (below `first_live`), then cuts from the
    /// bad frame on, latest first (see the module comment for why this order).
    fn apply(&mut self, frames: &sled::Tree, first_live: u64) -> sled::Result<Changed> {
        let mut any = false;
        let mut batch = Chunked::new(frames);
        for (number, value) in self.rewrites.drain(..) {
            match value {
                Some(value) if number >= first_live => batch.insert(number, value)?,
                _ => batch.remove(frame_key(number).as_slice().into())?,
            }
        }
        any |= batch.finish()?;
        let mut batch = Chunked::new(frames);
        let mut below = 0u64;
        for number in self.kept.iter().filter(|n| **n < first_live) {
            batch.remove(frame_key(*number).as_slice().into())?;
            below += 1;
        }
        any |= batch.finish()?;
        let mut batch = Chunked::new(frames);
        for key in self.cut.drain(..).rev() {
            batch.remove(key)?;
        }
        any |= batch.finish()?;
        Ok(Changed {
            any,
            deleted_kept: below,
        })
    }
}

/// Writes to one tree in sled batches of at most `SLED_BATCH_FRAMES_MAX` operations.
struct Chunked<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    in_batch: usize,
    any: bool,
}

impl<'a> Chunked<'a> {
    fn new(tree: &'a sled::Tree) -> Chunked<'a> {
        Chunked {
            tree,
            batch: sled::Batch::default(),
            in_batch: 0,
            any: false,
        }
    }

    fn insert(&mut self, number: u64, value: Vec<u8>) -> sled::Result<()> {
        self.batch.insert(&frame_key(number)[..], value);
        self.counted()
    }

    fn remove(&mut self, key: sled::IVec) -> sled::Result<()> {
        self.batch.remove(key);
        self.counted()
    }

    fn counted(&mut self) -> sled::Result<()> {
        self.in_batch += 1;
        self.any = true;
        if self.in_batch == SLED_BATCH_FRAMES_MAX {
            self.tree.apply_batch(std::mem::take(&mut self.batch))?;
            self.in_batch = 0;
        }
        Ok(())
    }

    /// Applies what is left; whether anything was written at all.
    fn finish(self) -> sled::Result<bool> {
        if self.in_batch > 0 {
            self.tree.apply_batch(self.batch)?;
        }
        Ok(self.any)
    }
}
