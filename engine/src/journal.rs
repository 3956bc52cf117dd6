//! The journal seam: what a shard writes so that it can come back after a crash.
//!
//! Every event a shard applies, and every idempotency record it stores, becomes a
//! [`LogRecord`] with the shard's next sequence number; a [`Snapshot`] is the whole shard at
//! one sequence number. The engine encodes them (bincode 2, plain types, behind a format
//! byte) and hands bytes to a [`Journal`]; the persistence crate stores them (sled, group
//! commit) without knowing what they mean. A shard answers a caller only when the journal says
//! the records the answer depends on are stored.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::clock::UnixMs;
use crate::error::{EngineError, JournalError, WriteRefusal};
use crate::event::Event;
use crate::idempotency::{AnswerRecord, IdempotencyRecord, ShelfRef, ShelvedAnswer};
use crate::shard::ShardState;

/// Version of the encoding of log records and snapshots. A different byte is refused at
/// recovery rather than misread.
/// Version 2: the deadline queue became an exact, typed index (snapshots of version 1 stored
/// a heap of bare holds).
/// Version 3: the citizen side (claims, the citizen's appointment index, claim events) and
/// appointments that record their claim and their rescheduling links.
/// Version 4: tentative claims (a create's claim is journaled only once bound).
/// Version 5: administration (`AppointmentAdministered`, and the dose a settled claim adds to
/// the citizen's history, `SettleOutcome::Administered`); waitlists (their events and table in
/// snapshots) with appointments that say whether a waitlist offer made them; no-shows (a
/// confirm logs its no-show instant, appointments keep it, the deadline queue times `NoShow`,
/// `AppointmentNoShow` events).
/// Version 6: snapshots carry the published changes the event recorder had not stored yet
/// (`Snapshot::unrecorded`), so a snapshot never cuts an event out of the durable feed.
/// Version 7: idempotent answers as [`AnswerRecord`]s (the key's digest, and the response only
/// when it is not on the journal's shelf): `LogRecord::Answer`, and snapshots of them. Records
/// of version 6 are read as they are (`LogRecord` only gained a variant), its snapshots through
/// their own layout ([`decode_snapshot`]).
pub const ENCODING_VERSION: u8 = 7;
/// The oldest version recovery still reads ([`decode_record`], [`decode_snapshot`]).
pub const ENCODING_VERSION_OLDEST: u8 = 6;
/// Largest record or snapshot accepted when decoding (bincode's size limit), so a corrupt
/// length prefix cannot make recovery allocate without bound.
pub const DECODE_BYTES_MAX: usize = 1 << 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LogRecord {
    Event(Event),
    /// Version 6 and before: an answer with its caller, key and body. Read, never written.
    Idempotency(IdempotencyRecord),
    Answer(AnswerRecord),
}

/// A whole shard at sequence number `seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub seq: u64,
    pub state: ShardState,
    #[serde(deserialize_with = "crate::sized_decode::vec")]
    pub idempotency: Vec<AnswerRecord>,
    /// Changes up to `seq` published but not yet stored by the node's recorder
    /// ([`crate::publish::Recorder`]): re-published at recovery.
    #[serde(deserialize_with = "crate::sized_decode::vec")]
    pub unrecorded: Vec<crate::publish::Published>,
}

/// A snapshot as encoding version 6 wrote it: the answers with their bodies.
#[derive(Deserialize)]
struct SnapshotV6 {
    seq: u64,
    state: ShardState,
    #[serde(deserialize_with = "crate::sized_decode::vec")]
    idempotency: Vec<IdempotencyRecord>,
    #[serde(deserialize_with = "crate::sized_decode::vec")]
    unrecorded: Vec<crate::publish::Published>,
}

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_BYTES_MAX>,
> {
    bincode::config::standard().with_limit::<DECODE_BYTES_MAX>()
}

/// `[ENCODING_VERSION][bincode(value)]`
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![ENCODING_VERSION];
    bytes.extend(bincode::serde::encode_to_vec(value, config()).expect("log types always encode"));
    bytes
}

/// Decodes what [`encode`] wrote; `Err` says why not (the caller names the record).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&ENCODING_VERSION, body)) => decode_body(body),
        Some((version, _)) => Err(other_version(*version)),
        None => Err("empty record".into()),
    }
}

/// Decodes a log record of this version or an older one still read.
pub fn decode_record(bytes: &[u8]) -> Result<LogRecord, String> {
    match bytes.split_first() {
        Some((&version, body))
            if (ENCODING_VERSION_OLDEST..=ENCODING_VERSION).contains(&version) =>
        {
            decode_body(body)
        }
        Some((version, _)) => Err(other_version(*version)),
        None => Err("empty record".into()),
    }
}

/// Decodes a snapshot of this version or an older one still read; an older one's answers
/// come back with their responses (they stay in memory until they expire).
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    match bytes.split_first() {
        Some((&ENCODING_VERSION, body)) => decode_body(body),
        Some((6, body)) => {
            let old: SnapshotV6 = decode_body(body)?;
            Ok(Snapshot {
                seq: old.seq,
                state: old.state,
                idempotency: old.idempotency.into_iter().map(Into::into).collect(),
                unrecorded: old.unrecorded,
            })
        }
        Some((version, _)) => Err(other_version(*version)),
        None => Err("empty snapshot".into()),
    }
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let (value, read) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| e.to_string())?;
    if read != body.len() {
        return Err(format!("{} trailing bytes", body.len() - read));
    }
    Ok(value)
}

fn other_version(version: u8) -> String {
    format!(
        "encoding version {version} was written by another build (this build reads versions \
         {ENCODING_VERSION_OLDEST} to {ENCODING_VERSION})"
    )
}

/// Called once the journal has stored (or failed to store) what was handed to it.
pub type Done = Box<dyn FnOnce(Result<(), JournalError>) + Send + 'static>;

/// Resolves once the records a command produced (and everything its shard submitted before
/// them) are stored by the journal. A caller may do more work first, then wait: answers
/// leave only after their events are durable, but two writes of one request can share a
/// group commit instead of waiting for one flush each.
#[must_use = "an answer may leave only after its events are durable: wait for it"]
pub struct Durable {
    shard: u32,
    stored: tokio::sync::oneshot::Receiver<Result<(), JournalError>>,
}

impl Durable {
    /// A `Durable` and the completion that resolves it.
    pub fn new(shard: u32) -> (Durable, Done) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: Done = Box::new(move |stored| {
            let _ = tx.send(stored);
        });
        (Durable { shard, stored: rx }, done)
    }

    /// A `Durable` with nothing to wait for.
    pub fn stored(shard: u32) -> Durable {
        let (durable, done) = Durable::new(shard);
        done(Ok(()));
        durable
    }

    /// Waits until stored; `WritesRefused` when the journal failed, `Unavailable` when the
    /// shard is gone.
    pub async fn wait(self) -> Result<(), EngineError> {
        match self.stored.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(EngineError::not_stored(self.shard, error)),
            Err(_) => Err(EngineError::Unavailable { shard: self.shard }),
        }
    }
}

/// What a shard finds at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<(u64, Vec<u8>)>,
    pub records: Vec<(u64, Vec<u8>)>,
    /// Records cut off (a torn or corrupt tail): sequence number and why.
    pub dropped: Vec<(u64, String)>,
}

/// Where shards write. Implementations call `done` exactly once, in submission order per
/// shard.
pub trait Journal: Send + Sync + 'static {
    /// Stores `records` (sequence number, bytes) of `shard`; an empty list is a barrier that
    /// completes once everything submitted before it is stored.
    fn append(
        &self,
        shard: u32,
        records: Vec<(u64, Vec<u8>)>,
        done: Done,
    ) -> Result<(), JournalError>;
    /// Stores a snapshot at `seq` and drops the shard's records up to it.
    fn snapshot(
        &self,
        shard: u32,
        seq: u64,
        bytes: Vec<u8>,
        done: Done,
    ) -> Result<(), JournalError>;
    fn recover(&self, shard: u32) -> Result<Recovered, JournalError>;
    /// Set once a write failed; the shards then refuse writes.
    fn failed(&self) -> Option<JournalError>;
    /// Why new writes are refused now, if they are: the disk is below its reserve or
    /// read-only (clears by itself), or the journal failed (until the node restarts). Asked before a
    /// write is decided, so a refused write changes nothing; reads go on.
    fn write_refusal(&self) -> Option<WriteRefusal> {
        self.failed().map(|e| {
            WriteRefusal::LogFailed(match e {
                JournalError::Failed(why) => why,
                other => other.to_string(),
            })
        })
    }
    /// After a failure: true when every write the journal acknowledged is stored (it
    /// acknowledges only after a durable flush), so a shard that has no write in flight
    /// holds exactly what the log holds and may still serve reads. False when acknowledged
    /// writes may be lost with the failure (acknowledged before their flush): then no shard
    /// serves anything until a restart.
    fn acknowledged_are_durable(&self) -> bool {
        true
    }
    /// True while the journal's queue is above its high-water mark: new writes are refused
    /// with 503 before they change anything.
    fn busy(&self) -> bool;
    /// True when `shard`'s oldest record not covered by a snapshot holds back the deletion
    /// of a long log (a quiet shard in a shared log): the shard then snapshots at its next
    /// housekeeping tick, so the log, and the replay at the next start, stay bounded.
    fn holds_back(&self, _shard: u32) -> bool {
        false
    }
    /// True when the journal keeps stored idempotent answers on a shelf of its own, out of
    /// memory (`idempotency.rs`): the shard then hands them over with
    /// [`Journal::append_shelving`] and reads them back with [`Journal::shelved`]. Without
    /// one (the default), responses stay in memory and in the records.
    fn shelves_answers(&self) -> bool {
        false
    }
    /// [`Journal::append`], and puts `answers` on the shelf in the same group commit: when
    /// `done` says the records are stored, the answers are too. Only called when
    /// [`Journal::shelves_answers`]; a journal without a shelf is never handed answers.
    fn append_shelving(
        &self,
        shard: u32,
        records: Vec<(u64, Vec<u8>)>,
        answers: Vec<ShelvedAnswer>,
        done: Done,
    ) -> Result<(), JournalError> {
        debug_assert!(answers.is_empty(), "this journal keeps no shelf");
        self.append(shard, records, done)
    }
    /// A shelved answer's bytes, read on the caller's thread; `None` when the shelf has none
    /// there.
    fn shelved(&self, _shard: u32, _at: &ShelfRef) -> Result<Option<Vec<u8>>, JournalError> {
        Ok(None)
    }
    /// Forgets `shard`'s shelved answers stored before `before_ms` (past the retention), in
    /// order with the appends. Best effort: an answer that stays is forgotten by a later call.
    fn forget_shelved(&self, _shard: u32, _before_ms: UnixMs) {}
}

/// Keeps nothing: for tests and benchmarks of the engine alone. Every write completes at once
/// and a restart finds nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoJournal;

impl Journal for NoJournal {
    fn append(
        &self,
        _shard: u32,
        _records: Vec<(u64, Vec<u8>)>,
        done: Done,
    ) -> Result<(), JournalError> {
        done(Ok(()));
        Ok(())
    }
    fn snapshot(
        &self,
        _shard: u32,
        _seq: u64,
        _bytes: Vec<u8>,
        done: Done,
    ) -> Result<(), JournalError> {
        done(Ok(()));
        Ok(())
    }
    fn recover(&self, _shard: u32) -> Result<Recovered, JournalError> {
        Ok(Recovered::default())
    }
    fn failed(&self) -> Option<JournalError> {
        None
    }
    fn busy(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_versions_are_refused() {
        let record = LogRecord::Event(Event::AppointmentConfirmed {
            seq: 7,
            at_ms: 1234,
            no_show_at_ms: 5678,
        });
        let bytes = encode(&record);
        assert_eq!(bytes[0], ENCODING_VERSION);
        match decode::<LogRecord>(&bytes).unwrap() {
            LogRecord::Event(Event::AppointmentConfirmed {
                seq,
                at_ms,
                no_show_at_ms,
            }) => assert_eq!((seq, at_ms, no_show_at_ms), (7, 1234, 5678)),
            other => panic!("decoded {other:?}"),
        }
        let mut wrong = bytes.clone();
        wrong[0] = 99;
        assert!(decode::<LogRecord>(&wrong)
            .unwrap_err()
            .contains("version 99"));
        assert!(decode::<LogRecord>(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode::<LogRecord>(&[]).is_err());
    }

    #[test]
    fn version_6_records_and_snapshots_are_still_read() {
        let legacy = IdempotencyRecord {
            caller: "alice".into(),
            key: "k-1".into(),
            fingerprint: [7; 32],
            status: 201,
            body: "{\"id\":1}".into(),
            stored_at_ms: 99,
        };
        let answer: AnswerRecord = legacy.clone().into();
        let mut record = encode(&LogRecord::Idempotency(legacy.clone()));
        record[0] = 6;
        match decode_record(&record).unwrap() {
            LogRecord::Idempotency(back) => assert_eq!(back, legacy),
            other => panic!("decoded {other:?}"),
        }
        // The layout version 6 wrote its snapshots in.
        #[derive(Serialize)]
        struct V6<'a> {
            seq: u64,
            state: &'a ShardState,
            idempotency: Vec<IdempotencyRecord>,
            unrecorded: Vec<crate::publish::Published>,
        }
        let state = ShardState::new(3);
        let mut bytes = encode(&V6 {
            seq: 12,
            state: &state,
            idempotency: vec![legacy],
            unrecorded: Vec::new(),
        });
        bytes[0] = 6;
        let snapshot = decode_snapshot(&bytes).unwrap();
        assert_eq!((snapshot.seq, snapshot.state.shard()), (12, 3));
        assert_eq!(snapshot.idempotency, vec![answer.clone()]);
        assert!(answer.response.is_some());
        bytes[0] = 5;
        assert!(decode_snapshot(&bytes).unwrap_err().contains("version 5"));
        record[0] = 5;
        assert!(decode_record(&record).is_err());
    }
}
