//! The shard's side of idempotency, in one room: per caller and key, the first response and
//! the request's fingerprint ([`IdempotencyTable`]), the record written to the log for each
//! ([`AnswerRecord`]), and what a waiting request is finally told ([`IdemOutcome`]). The
//! gateway's side (the header, the fingerprint of a request, replays) is in the gateway.
//!
//! A record is `InFlight` while the first request runs (later requests with the same key wait
//! for it rather than getting a 409), then `Done` with the stored response, replayed for
//! `retention_ms`. The table is bounded in records: completed records older than the
//! retention are purged first, and when the table is still full a new key is refused (the
//! caller answers 503), never silently forgotten. Generic over the waiter type so the rules
//! are testable without actors.
//!
//! Memory: the table keys a record by a 16-byte digest of the caller and the key ([`KeyId`]),
//! not by the strings. When the journal keeps answers on a shelf of its own
//! ([`crate::journal::Journal::shelves_answers`]: the write-ahead log's `answers` tree), a
//! response stays in memory only until the group commit that shelves it is stored
//! ([`IdempotencyTable::shelve`], [`IdempotencyTable::release_shelved`]); a replay then reads
//! it from the shelf. A shelved record costs about 90 bytes of memory instead of about 700
//! (docs/PERFORMANCE.md), and its log record and snapshot entry carry no body.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::UnixMs;

/// The contract promises replays for at least 24 h.
pub const RETENTION_MS_DEFAULT: i64 = 24 * 60 * 60 * 1000;
/// Records per shard; with 64 shards about 4.2 million keys, about 90 bytes of memory each
/// once their answers are on the journal's shelf. The table's hash map grows in powers of
/// two: up to 57,344 records it is the one of 65,536 buckets either way.
pub const RECORDS_PER_SHARD_MAX_DEFAULT: usize = 65_536;
/// Requests that may wait on one in-flight key; more are refused (503) rather than queued.
pub const WAITERS_PER_KEY_MAX: usize = 1024;

/// Who asked (`sub` of the token) and their key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdemKey {
    pub caller: Arc<str>,
    pub key: Arc<str>,
}

/// Bytes of a [`KeyId`].
pub const KEY_ID_BYTES: usize = 16;

/// What the table knows a key by: the first 16 bytes of SHA-256 over the caller's length, the
/// caller and the key. A cryptographic digest, so no client can make its key collide with
/// another caller's (a second preimage of 128 bits); the caller's length first, so `("ab",
/// "c")` and `("a", "bc")` differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyId(pub [u8; KEY_ID_BYTES]);

impl KeyId {
    pub fn of(key: &IdemKey) -> KeyId {
        let mut hasher = Sha256::new();
        hasher.update((key.caller.len() as u64).to_be_bytes());
        hasher.update(key.caller.as_bytes());
        hasher.update(key.key.as_bytes());
        let digest = hasher.finalize();
        let mut id = [0u8; KEY_ID_BYTES];
        id.copy_from_slice(&digest[..KEY_ID_BYTES]);
        KeyId(id)
    }
}

/// SHA-256 of the canonical request body.
pub type Fingerprint = [u8; 32];

/// A response as first sent: status and body bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Arc<str>,
}

/// Version byte of a shelved answer's bytes ([`StoredResponse::to_shelf`]).
pub const SHELF_FORMAT_VERSION: u8 = 1;

impl StoredResponse {
    /// The bytes kept on the journal's shelf: `[SHELF_FORMAT_VERSION][status u16 LE][body]`.
    /// A format of its own, not the log's encoding version: an answer outlives builds for a
    /// day, and a new log encoding must not make it unreadable.
    pub fn to_shelf(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(3 + self.body.len());
        bytes.push(SHELF_FORMAT_VERSION);
        bytes.extend_from_slice(&self.status.to_le_bytes());
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }

    /// Reads what [`StoredResponse::to_shelf`] wrote; `Err` says why not.
    pub fn from_shelf(bytes: &[u8]) -> Result<StoredResponse, String> {
        match bytes {
            [SHELF_FORMAT_VERSION, lo, hi, body @ ..] => Ok(StoredResponse {
                status: u16::from_le_bytes([*lo, *hi]),
                body: std::str::from_utf8(body)
                    .map_err(|e| format!("the body is not UTF-8: {e}"))?
                    .into(),
            }),
            [version, ..] => Err(format!("shelf format version {version} is unknown")),
            [] => Err("empty".to_string()),
        }
    }
}

/// A stored idempotent answer as the log and snapshots keep it (encoding version 7 on): the
/// response itself when the journal has no shelf for it, or `None` when it is on the shelf,
/// at (`id`, `stored_at_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub id: KeyId,
    pub fingerprint: Fingerprint,
    pub stored_at_ms: UnixMs,
    pub response: Option<StoredResponse>,
}

/// A stored idempotent answer as logs and snapshots of encoding version 6 and before kept
/// it, the response always inside; read at recovery only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub caller: Arc<str>,
    pub key: Arc<str>,
    pub fingerprint: Fingerprint,
    pub status: u16,
    pub body: Arc<str>,
    pub stored_at_ms: UnixMs,
}

impl From<IdempotencyRecord> for AnswerRecord {
    fn from(record: IdempotencyRecord) -> AnswerRecord {
        AnswerRecord {
            id: KeyId::of(&IdemKey {
                caller: record.caller,
                key: record.key,
            }),
            fingerprint: record.fingerprint,
            stored_at_ms: record.stored_at_ms,
            response: Some(StoredResponse {
                status: record.status,
                body: record.body,
            }),
        }
    }
}

/// Where a shelved answer is, within its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShelfRef {
    pub id: KeyId,
    pub stored_at_ms: UnixMs,
}

/// An answer handed to the journal's shelf with the append of its [`AnswerRecord`]: the
/// bytes are [`StoredResponse::to_shelf`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShelvedAnswer {
    pub at: ShelfRef,
    pub value: Vec<u8>,
}

/// What an idempotency waiter is finally told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdemOutcome {
    Begin(Begin),
    /// The first request finished: its stored response (or `None`: it never reached a
    /// decision, retry).
    Finished(Option<StoredResponse>),
}

/// What the first look at a key says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Begin {
    /// New key: the caller runs the request and then calls `finish`.
    Proceed,
    Replay(StoredResponse),
    /// Same key, different body.
    Mismatch,
    /// Same key and body still running: the waiter was queued.
    Queued,
    /// A bound was reached; answer 503 and let the client retry.
    Full,
    /// The stored answer could not be read from the journal's shelf (a storage fault, logged
    /// where it happened); answer 503 and let the client retry. Never `Proceed`: running the
    /// request again could do twice what the first did.
    Unreadable,
}

enum Entry<W> {
    InFlight {
        fingerprint: Fingerprint,
        waiters: Vec<W>,
    },
    Done {
        fingerprint: Fingerprint,
        stored_at_ms: UnixMs,
        /// `None` once on the journal's shelf. Boxed: most records are shelved, and an
        /// inline response would make every entry 16 bytes larger.
        response: Option<Box<StoredResponse>>,
    },
}

pub struct IdempotencyTable<W> {
    entries: FxHashMap<KeyId, Entry<W>>,
    /// Completed keys in completion order, for purging by age.
    completed: VecDeque<(UnixMs, KeyId)>,
    /// Responses kept in memory until the append that shelves them is stored: (the sequence
    /// number of their record, key), in order. As long as the journal's lag.
    shelving: VecDeque<(u64, KeyId)>,
    /// The newest `stored_at_ms` purged since [`IdempotencyTable::take_purged`] last asked.
    purged_through_ms: Option<UnixMs>,
    records_max: usize,
    retention_ms: i64,
}

impl<W> IdempotencyTable<W> {
    pub fn new(records_max: usize, retention_ms: i64) -> Self {
        IdempotencyTable {
            entries: FxHashMap::default(),
            completed: VecDeque::new(),
            shelving: VecDeque::new(),
            purged_through_ms: None,
            records_max,
            retention_ms,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks a key up; a new key becomes in-flight, a running one queues `waiter`. A stored
    /// answer on the shelf is read with `shelf` (called only when the fingerprints match).
    /// A completed record past the retention counts as absent.
    pub fn begin(
        &mut self,
        key: &IdemKey,
        fingerprint: Fingerprint,
        waiter: W,
        now_ms: UnixMs,
        shelf: impl FnOnce(ShelfRef) -> Begin,
    ) -> (Begin, Option<W>) {
        let id = KeyId::of(key);
        if let Some(Entry::Done { stored_at_ms, .. }) = self.entries.get(&id) {
            if now_ms - stored_at_ms >= self.retention_ms {
                // Expired, though the purge has not reached it (it comes after a younger
                // record in completion order); its answer may be forgotten on the shelf.
                self.entries.remove(&id);
            }
        }
        match self.entries.get_mut(&id) {
            Some(Entry::Done {
                fingerprint: stored,
                stored_at_ms,
                response,
            }) => {
                if *stored != fingerprint {
                    (Begin::Mismatch, Some(waiter))
                } else if let Some(response) = response {
                    (Begin::Replay((**response).clone()), Some(waiter))
                } else {
                    let at = ShelfRef {
                        id,
                        stored_at_ms: *stored_at_ms,
                    };
                    (shelf(at), Some(waiter))
                }
            }
            Some(Entry::InFlight {
                fingerprint: stored,
                waiters,
            }) => {
                if *stored != fingerprint {
                    (Begin::Mismatch, Some(waiter))
                } else if waiters.len() >= WAITERS_PER_KEY_MAX {
                    (Begin::Full, Some(waiter))
                } else {
                    waiters.push(waiter);
                    (Begin::Queued, None)
                }
            }
            None => {
                if self.entries.len() >= self.records_max {
                    self.purge(now_ms);
                }
                if self.entries.len() >= self.records_max {
                    return (Begin::Full, Some(waiter));
                }
                self.entries.insert(
                    id,
                    Entry::InFlight {
                        fingerprint,
                        waiters: Vec::new(),
                    },
                );
                (Begin::Proceed, Some(waiter))
            }
        }
    }

    /// Ends an in-flight key. With a response it is stored and every waiter gets it; without
    /// one (the request never reached a decision) the key is forgotten and the waiters are
    /// handed back to be told to retry.
    pub fn finish(
        &mut self,
        key: &IdemKey,
        response: Option<StoredResponse>,
        now_ms: UnixMs,
    ) -> Vec<W> {
        let id = KeyId::of(key);
        // Only an in-flight key ends here: a stray finish must not drop a stored response
        // (the next replay would run the request again).
        if !matches!(self.entries.get(&id), Some(Entry::InFlight { .. })) {
            return Vec::new();
        }
        let Some(Entry::InFlight {
            fingerprint,
            waiters,
        }) = self.entries.remove(&id)
        else {
            return Vec::new();
        };
        if let Some(response) = response {
            self.entries.insert(
                id,
                Entry::Done {
                    fingerprint,
                    stored_at_ms: now_ms,
                    response: Some(Box::new(response)),
                },
            );
            self.completed.push_back((now_ms, id));
        }
        waiters
    }

    /// The key's response goes to the journal's shelf with record `seq`: it leaves memory
    /// once [`IdempotencyTable::release_shelved`] hears that `seq` is stored.
    pub fn shelve(&mut self, key: &IdemKey, seq: u64) {
        self.shelving.push_back((seq, KeyId::of(key)));
    }

    /// Drops from memory the responses whose records up to `stored_seq` are stored (their
    /// answers are on the shelf); returns how many.
    pub fn release_shelved(&mut self, stored_seq: u64) -> usize {
        let mut released = 0;
        while let Some(&(seq, id)) = self.shelving.front() {
            if seq > stored_seq {
                break;
            }
            self.shelving.pop_front();
            if let Some(Entry::Done { response, .. }) = self.entries.get_mut(&id) {
                if response.take().is_some() {
                    released += 1;
                }
            }
        }
        released
    }

    /// The fingerprint of a key in flight or done.
    pub fn fingerprint_of(&self, key: &IdemKey) -> Option<Fingerprint> {
        match self.entries.get(&KeyId::of(key))? {
            Entry::InFlight { fingerprint, .. } | Entry::Done { fingerprint, .. } => {
                Some(*fingerprint)
            }
        }
    }

    /// Every completed record, oldest first, for a snapshot: with its response while that
    /// is in memory.
    pub fn records(&self) -> Vec<AnswerRecord> {
        self.completed
            .iter()
            .filter_map(|(at, id)| match self.entries.get(id) {
                Some(Entry::Done {
                    fingerprint,
                    stored_at_ms,
                    response,
                }) if stored_at_ms == at => Some(AnswerRecord {
                    id: *id,
                    fingerprint: *fingerprint,
                    stored_at_ms: *at,
                    response: response.as_deref().cloned(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Puts back a completed record found at recovery (oldest first).
    pub fn restore_record(&mut self, record: AnswerRecord) {
        self.entries.insert(
            record.id,
            Entry::Done {
                fingerprint: record.fingerprint,
                stored_at_ms: record.stored_at_ms,
                response: record.response.map(Box::new),
            },
        );
        self.completed.push_back((record.stored_at_ms, record.id));
    }

    /// Drops completed records older than the retention.
    pub fn purge(&mut self, now_ms: UnixMs) -> usize {
        let mut purged = 0;
        while let Some((stored_at, _)) = self.completed.front() {
            if now_ms - stored_at < self.retention_ms {
                break;
            }
            let (stored_at, id) = self.completed.pop_front().expect("front exists");
            // The entry may be a later record of the same key (stored again after this one
            // expired): only the record this queue entry stands for goes.
            if matches!(self.entries.get(&id), Some(Entry::Done { stored_at_ms, .. }) if *stored_at_ms == stored_at)
            {
                self.entries.remove(&id);
                purged += 1;
            }
            self.purged_through_ms = Some(
                self.purged_through_ms
                    .map_or(stored_at, |t| t.max(stored_at)),
            );
        }
        purged
    }

    /// The newest `stored_at_ms` purged since the last call: every answer stored at or
    /// before it is past the retention, so the shelf may forget them all.
    pub fn take_purged(&mut self) -> Option<UnixMs> {
        self.purged_through_ms.take()
    }
}

/// A `shelf` for tables whose journal keeps no shelf: every response stays in memory, so it
/// is never called; when it is, the answer is unreadable.
pub fn no_shelf(_: ShelfRef) -> Begin {
    Begin::Unreadable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> IdemKey {
        IdemKey {
            caller: "alice".into(),
            key: k.into(),
        }
    }

    fn response(status: u16) -> StoredResponse {
        StoredResponse {
            status,
            body: "{}".into(),
        }
    }

    #[test]
    fn replay_mismatch_and_waiters() {
        let mut t: IdempotencyTable<u32> = IdempotencyTable::new(10, 1000);
        assert_eq!(
            t.begin(&key("k"), [1; 32], 0, 0, no_shelf).0,
            Begin::Proceed
        );
        assert_eq!(t.begin(&key("k"), [1; 32], 1, 0, no_shelf).0, Begin::Queued);
        assert_eq!(
            t.begin(&key("k"), [2; 32], 2, 0, no_shelf).0,
            Begin::Mismatch
        );
        assert_eq!(t.finish(&key("k"), Some(response(201)), 5), vec![1]);
        assert_eq!(
            t.begin(&key("k"), [1; 32], 3, 6, no_shelf).0,
            Begin::Replay(response(201))
        );
        assert_eq!(
            t.begin(&key("k"), [2; 32], 4, 6, no_shelf).0,
            Begin::Mismatch
        );
        // Another caller's same key is another record.
        let other = IdemKey {
            caller: "bob".into(),
            key: "k".into(),
        };
        assert_eq!(t.begin(&other, [2; 32], 5, 6, no_shelf).0, Begin::Proceed);
    }

    #[test]
    fn aborted_key_is_forgotten() {
        let mut t: IdempotencyTable<u32> = IdempotencyTable::new(10, 1000);
        t.begin(&key("k"), [1; 32], 0, 0, no_shelf);
        t.begin(&key("k"), [1; 32], 1, 0, no_shelf);
        assert_eq!(t.finish(&key("k"), None, 0), vec![1]);
        assert_eq!(
            t.begin(&key("k"), [1; 32], 2, 0, no_shelf).0,
            Begin::Proceed
        );
    }

    #[test]
    fn bounded_and_purged_by_age() {
        let mut t: IdempotencyTable<u32> = IdempotencyTable::new(2, 1000);
        for (i, k) in ["a", "b"].iter().enumerate() {
            assert_eq!(
                t.begin(&key(k), [0; 32], 0, i as i64, no_shelf).0,
                Begin::Proceed
            );
            t.finish(&key(k), Some(response(201)), i as i64);
        }
        assert_eq!(t.begin(&key("c"), [0; 32], 0, 500, no_shelf).0, Begin::Full);
        // After the retention the oldest record makes room.
        assert_eq!(
            t.begin(&key("c"), [0; 32], 0, 1000, no_shelf).0,
            Begin::Proceed
        );
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.begin(&key("a"), [0; 32], 0, 1000, no_shelf).0,
            Begin::Full
        );
    }

    #[test]
    fn a_shelved_response_leaves_memory_once_stored_and_is_read_from_the_shelf() {
        let mut t: IdempotencyTable<u32> = IdempotencyTable::new(10, 1000);
        t.begin(&key("k"), [1; 32], 0, 0, no_shelf);
        t.finish(&key("k"), Some(response(201)), 5);
        t.shelve(&key("k"), 7);
        // Not stored yet: still answered from memory, the shelf is not asked.
        assert_eq!(t.release_shelved(6), 0);
        assert_eq!(
            t.begin(&key("k"), [1; 32], 1, 6, no_shelf).0,
            Begin::Replay(response(201))
        );
        assert_eq!(t.release_shelved(7), 1);
        let mut asked = None;
        let shelf = |at: ShelfRef| {
            asked = Some(at);
            Begin::Replay(response(201))
        };
        assert_eq!(
            t.begin(&key("k"), [1; 32], 2, 6, shelf).0,
            Begin::Replay(response(201))
        );
        assert_eq!(
            asked,
            Some(ShelfRef {
                id: KeyId::of(&key("k")),
                stored_at_ms: 5
            })
        );
        // Another body under the key is refused without reading the shelf.
        assert_eq!(
            t.begin(&key("k"), [2; 32], 3, 6, no_shelf).0,
            Begin::Mismatch
        );
        // A snapshot keeps where it is, not the body.
        assert_eq!(t.records()[0].response, None);
        assert_eq!(t.records()[0].stored_at_ms, 5);
    }

    #[test]
    fn an_expired_record_counts_as_absent_and_its_purge_is_reported_once() {
        let mut t: IdempotencyTable<u32> = IdempotencyTable::new(10, 1000);
        t.begin(&key("a"), [1; 32], 0, 0, no_shelf);
        t.finish(&key("a"), Some(response(201)), 10);
        t.begin(&key("b"), [1; 32], 0, 0, no_shelf);
        t.finish(&key("b"), Some(response(201)), 500);
        // At 1010 "a" is past the retention: a new request runs, with another body too.
        assert_eq!(
            t.begin(&key("a"), [2; 32], 1, 1010, no_shelf).0,
            Begin::Proceed
        );
        t.finish(&key("a"), Some(response(200)), 1020);
        // The old queue entry of "a" must not purge its new record.
        assert_eq!(t.purge(1100), 0);
        assert_eq!(t.take_purged(), Some(10));
        assert_eq!(t.take_purged(), None);
        assert_eq!(
            t.begin(&key("a"), [2; 32], 2, 1100, no_shelf).0,
            Begin::Replay(response(200))
        );
        assert_eq!(t.records().len(), 2);
        assert_eq!(t.purge(1600), 1);
        assert_eq!(t.take_purged(), Some(500));
    }

    #[test]
    fn shelved_bytes_round_trip_and_damage_is_refused() {
        let r = StoredResponse {
            status: 409,
            body: "{\"code\":\"SOLD_OUT\"}".into(),
        };
        let bytes = r.to_shelf();
        assert_eq!(StoredResponse::from_shelf(&bytes), Ok(r));
        assert!(StoredResponse::from_shelf(&[]).is_err());
        assert!(StoredResponse::from_shelf(&[9, 1, 0])
            .unwrap_err()
            .contains("version 9"));
        assert!(StoredResponse::from_shelf(&[SHELF_FORMAT_VERSION, 1, 0, 0xff]).is_err());
    }

    #[test]
    fn key_ids_tell_caller_and_key_apart() {
        let id = |caller: &str, k: &str| {
            KeyId::of(&IdemKey {
                caller: caller.into(),
                key: k.into(),
            })
        };
        assert_ne!(id("ab", "c"), id("a", "bc"));
        assert_ne!(id("alice", "k"), id("bob", "k"));
        assert_eq!(id("alice", "k"), KeyId::of(&key("k")));
    }

    #[test]
    fn legacy_records_keep_their_response_in_memory() {
        let legacy = IdempotencyRecord {
            caller: "alice".into(),
            key: "k".into(),
            fingerprint: [3; 32],
            status: 201,
            body: "{}".into(),
            stored_at_ms: 9,
        };
        let mut t: IdempotencyTable<u32> = IdempotencyTable::new(10, 1000);
        t.restore_record(legacy.into());
        assert_eq!(
            t.begin(&key("k"), [3; 32], 0, 10, no_shelf).0,
            Begin::Replay(response(201))
        );
    }
}
