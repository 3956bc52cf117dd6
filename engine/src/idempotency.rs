//! The shard's side of idempotency, in one room: per caller and key, the first response and
//! the request's fingerprint ([`IdempotencyTable`]), the record written to the log for each
//! ([`IdempotencyRecord`]), and what a waiting request is finally told ([`IdemOutcome`]). The
//! gateway's side (the header, the fingerprint of a request, replays) is in the gateway.
//!
//! A record is `InFlight` while the first request runs (later requests with the same key wait
//! for it rather than getting a 409), then `Done` with the stored response, replayed for
//! `retention_ms`. The table is bounded in records: completed records older than the
//! retention are purged first, and when the table is still full a new key is refused (the
//! caller answers 503), never silently forgotten. Generic over the waiter type so the rules
//! are testable without actors.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMs;

/// The contract promises replays for at least 24 h.
pub const RETENTION_MS_DEFAULT: i64 = 24 * 60 * 60 * 1000;
/// Records per shard; with 64 shards about 2 million keys, roughly 1 GiB at ~500-byte bodies.
pub const RECORDS_PER_SHARD_MAX_DEFAULT: usize = 32_768;
/// Requests that may wait on one in-flight key; more are refused (503) rather than queued.
pub const WAITERS_PER_KEY_MAX: usize = 1024;

/// Who asked (`sub` of the token) and their key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdemKey {
    pub caller: Arc<str>,
    pub key: Arc<str>,
}

/// SHA-256 of the canonical request body.
pub type Fingerprint = [u8; 32];

/// A response as first sent: status and body bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Arc<str>,
}

/// A stored idempotent answer as the log and snapshots keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub caller: Arc<str>,
    pub key: Arc<str>,
    pub fingerprint: Fingerprint,
    pub status: u16,
    pub body: Arc<str>,
    pub stored_at_ms: UnixMs,
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
}

enum Entry<W> {
    InFlight {
        fingerprint: Fingerprint,
        waiters: Vec<W>,
    },
    Done {
        fingerprint: Fingerprint,
        response: StoredResponse,
    },
}

pub struct IdempotencyTable<W> {
    entries: FxHashMap<IdemKey, Entry<W>>,
    /// Completed keys in completion order, for purging by age.
    completed: VecDeque<(UnixMs, IdemKey)>,
    records_max: usize,
    retention_ms: i64,
}

impl<W> IdempotencyTable<W> {
    pub fn new(records_max: usize, retention_ms: i64) -> Self {
        IdempotencyTable {
            entries: FxHashMap::default(),
            completed: VecDeque::new(),
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

    /// Looks a key up; a new key becomes in-flight, a running one queues `waiter`.
    pub fn begin(
        &mut self,
        key: IdemKey,
        fingerprint: Fingerprint,
        waiter: W,
        now_ms: UnixMs,
    ) -> (Begin, Option<W>) {
        match self.entries.get_mut(&key) {
            Some(Entry::Done {
                fingerprint: stored,
                response,
            }) => {
                if *stored == fingerprint {
                    (Begin::Replay(response.clone()), Some(waiter))
                } else {
                    (Begin::Mismatch, Some(waiter))
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
                    key,
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
        // Only an in-flight key ends here: a stray finish must not drop a stored response
        // (the next replay would run the request again).
        if !matches!(self.entries.get(key), Some(Entry::InFlight { .. })) {
            return Vec::new();
        }
        let Some(Entry::InFlight {
            fingerprint,
            waiters,
        }) = self.entries.remove(key)
        else {
            return Vec::new();
        };
        if let Some(response) = response {
            self.entries.insert(
                key.clone(),
                Entry::Done {
                    fingerprint,
                    response,
                },
            );
            self.completed.push_back((now_ms, key.clone()));
        }
        waiters
    }

    /// The fingerprint of a key in flight or done.
    pub fn fingerprint_of(&self, key: &IdemKey) -> Option<Fingerprint> {
        match self.entries.get(key)? {
            Entry::InFlight { fingerprint, .. } | Entry::Done { fingerprint, .. } => {
                Some(*fingerprint)
            }
        }
    }

    /// Puts back a completed record found at recovery (oldest first).
    pub fn restore(
        &mut self,
        key: IdemKey,
        fingerprint: Fingerprint,
        response: StoredResponse,
        stored_at_ms: UnixMs,
    ) {
        self.entries.insert(
            key.clone(),
            Entry::Done {
                fingerprint,
                response,
            },
        );
        self.completed.push_back((stored_at_ms, key));
    }

    /// Every completed record, oldest first, for a snapshot.
    pub fn records(&self) -> Vec<IdempotencyRecord> {
        self.completed
            .iter()
            .filter_map(|(at, key)| match self.entries.get(key) {
                Some(Entry::Done {
                    fingerprint,
                    response,
                }) => Some(IdempotencyRecord {
                    caller: key.caller.clone(),
                    key: key.key.clone(),
                    fingerprint: *fingerprint,
                    status: response.status,
                    body: response.body.clone(),
                    stored_at_ms: *at,
                }),
                _ => None,
            })
            .collect()
    }

    /// Puts back a completed record found at recovery (oldest first).
    pub fn restore_record(&mut self, record: IdempotencyRecord) {
        let key = IdemKey {
            caller: record.caller,
            key: record.key,
        };
        let response = StoredResponse {
            status: record.status,
            body: record.body,
        };
        self.restore(key, record.fingerprint, response, record.stored_at_ms);
    }

    /// Drops completed records older than the retention.
    pub fn purge(&mut self, now_ms: UnixMs) -> usize {
        let mut purged = 0;
        while let Some((stored_at, _)) = self.completed.front() {
            if now_ms - stored_at < self.retention_ms {
                break;
            }
            let (_, key) = self.completed.pop_front().expect("front exists");
            if matches!(self.entries.get(&key), Some(Entry::Done { .. })) {
                self.entries.remove(&key);
                purged += 1;
            }
        }
        purged
    }
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
        assert_eq!(t.begin(key("k"), [1; 32], 0, 0).0, Begin::Proceed);
        assert_eq!(t.begin(key("k"), [1; 32], 1, 0).0, Begin::Queued);
        assert_eq!(t.begin(key("k"), [2; 32], 2, 0).0, Begin::Mismatch);
        assert_eq!(t.finish(&key("k"), Some(response(201)), 5), vec![1]);
        assert_eq!(
            t.begin(key("k"), [1; 32], 3, 6).0,
            Begin::Replay(response(201))
        );
        assert_eq!(t.begin(key("k"), [2; 32], 4, 6).0, Begin::Mismatch);
        // Another caller's same key is another record.
        let other = IdemKey {
            caller: "bob".into(),
            key: "k".into(),
        };
        assert_eq!(t.begin(other, [2; 32], 5, 6).0, Begin::Proceed);
    }

    #[test]
    fn aborted_key_is_forgotten() {
        let mut t: IdempotencyTable<u32> = IdempotencyTable::new(10, 1000);
        t.begin(key("k"), [1; 32], 0, 0);
        t.begin(key("k"), [1; 32], 1, 0);
        assert_eq!(t.finish(&key("k"), None, 0), vec![1]);
        assert_eq!(t.begin(key("k"), [1; 32], 2, 0).0, Begin::Proceed);
    }

    #[test]
    fn bounded_and_purged_by_age() {
        let mut t: IdempotencyTable<u32> = IdempotencyTable::new(2, 1000);
        for (i, k) in ["a", "b"].iter().enumerate() {
            assert_eq!(t.begin(key(k), [0; 32], 0, i as i64).0, Begin::Proceed);
            t.finish(&key(k), Some(response(201)), i as i64);
        }
        assert_eq!(t.begin(key("c"), [0; 32], 0, 500).0, Begin::Full);
        // After the retention the oldest record makes room.
        assert_eq!(t.begin(key("c"), [0; 32], 0, 1000).0, Begin::Proceed);
        assert_eq!(t.len(), 2);
        assert_eq!(t.begin(key("a"), [0; 32], 0, 1000).0, Begin::Full);
    }
}
