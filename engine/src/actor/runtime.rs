//! What a message does to a shard: execute commands and hand their events to the journal,
//! answer queries, keep idempotency records, act on due deadlines, snapshot. Each answer that
//! reports a change leaves through the journal's completion, after the change is stored; the
//! same completion publishes the change (names resolved) to the node's [`Publisher`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ractor::RpcReplyPort;
use serde::Serialize;
use tokio::sync::watch;

use super::{Applied, BeginAnswer, ExecResult, ShardArgs, ShardPhase};
use crate::claims::Settle;
use crate::clock::{Clock, UnixMs};
use crate::command::TakeClaim;
use crate::command::{Command, Query, QueryAnswer, SettleClaims};
use crate::error::{DomainError, EngineError, JournalError};
use crate::event::Event;
use crate::idempotency::{
    AnswerRecord, Begin, Fingerprint, IdemKey, IdemOutcome, IdempotencyTable, KeyId, ShelfRef,
    ShelvedAnswer, StoredResponse,
};
use crate::journal::{encode, Done, Durable, Journal, LogRecord};
use crate::notices::Settler;
use crate::publish::{Published, Publisher};
use crate::shard::ShardState;
use crate::view::{Output, RuntimeCounts};
use crate::waitlist::{Offerer, SlotRef};

/// Log records of one message, and what to tell once they are stored: the changes to
/// publish, the claim notices to send and the slots to offer to waiting citizens.
struct Taken {
    records: Vec<(u64, Vec<u8>)>,
    /// Idempotent answers for the journal's shelf, stored with `records`.
    answers: Vec<ShelvedAnswer>,
    published: Vec<Published>,
    notices: Vec<Settle>,
    offers: Vec<SlotRef>,
}

pub struct ShardRuntime {
    pub(super) shard: u32,
    pub(super) state: ShardState,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) idempotency: IdempotencyTable<RpcReplyPort<IdemOutcome>>,
    pub(super) earliest_tx: watch::Sender<Option<UnixMs>>,
    pub(super) journal: Arc<dyn Journal>,
    publisher: Arc<Publisher>,
    settler: Option<Settler>,
    offerer: Option<Offerer>,
    /// Events applied by the current message, on their way to the journal.
    events: Vec<Event>,
    events_applied: u64,
    /// Live expiries and no-shows (see [`RuntimeCounts`]), counted as their records are
    /// numbered: a match per event, nothing on the way of a booking.
    expiries: u64,
    no_shows: u64,
    /// Sequence number of the last record handed to the journal.
    pub(super) wal_seq: u64,
    /// The highest sequence number the journal has said is stored (set by the completions,
    /// on the journal's thread). While it equals `wal_seq`, a barrier has nothing to wait for
    /// and completes at once, without a trip through the journal's queue.
    stored_seq: Arc<AtomicU64>,
    pub(super) snapshot_seq: u64,
    last_snapshot_at_ms: Option<UnixMs>,
    pub(super) records_since_snapshot: u64,
    snapshot_every_records: u64,
    /// Records after which the next snapshot is taken: `snapshot_every_records`, except for
    /// the first one after start ([`first_snapshot_after`]).
    snapshot_after_records: u64,
    /// Set when the shard must take no writes: while it recovers, when its log could not be
    /// replayed, or when a record could not be handed to the journal after its change was
    /// applied in memory (memory and log may differ; a restart recovers from the log).
    pub(super) poisoned: Option<String>,
    pub(super) recovered_dropped: usize,
    pub(super) phase: Arc<watch::Sender<ShardPhase>>,
    /// Published changes the node's recorder has not stored yet, in `wal_seq` order (only
    /// with a recorder). A snapshot carries them, so cutting the log never cuts one out of
    /// the durable feed; trimmed as the recorder advances, so as long as its lag.
    pub(super) unrecorded: std::collections::VecDeque<Published>,
}

/// The same fields as [`crate::journal::Snapshot`], borrowed, so a snapshot does not clone
/// the state.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    seq: u64,
    state: &'a ShardState,
    idempotency: Vec<AnswerRecord>,
    unrecorded: Vec<&'a Published>,
}

impl ShardRuntime {
    pub(super) fn new(args: ShardArgs) -> Self {
        let (earliest_tx, _) = watch::channel(None);
        ShardRuntime {
            shard: args.shard,
            state: ShardState::with_config(args.shard, args.config),
            clock: args.clock,
            idempotency: IdempotencyTable::new(
                args.idempotency_records_max,
                args.idempotency_retention_ms,
            ),
            earliest_tx,
            journal: args.journal,
            publisher: args.publisher,
            settler: args.settler,
            offerer: args.offerer,
            events: Vec::new(),
            events_applied: 0,
            expiries: 0,
            no_shows: 0,
            wal_seq: 0,
            stored_seq: Arc::new(AtomicU64::new(0)),
            snapshot_seq: 0,
            last_snapshot_at_ms: None,
            records_since_snapshot: 0,
            snapshot_every_records: args.snapshot_every_records.max(1),
            snapshot_after_records: first_snapshot_after(args.snapshot_every_records, args.shard),
            poisoned: Some("recovering".to_string()),
            recovered_dropped: 0,
            phase: args.phase,
            unrecorded: std::collections::VecDeque::new(),
        }
    }

    /// Records up to `seq` are stored (recovery read them back from the journal).
    pub(super) fn mark_stored(&self, seq: u64) {
        self.stored_seq.fetch_max(seq, Ordering::AcqRel);
    }

    pub fn runtime_counts(&self) -> RuntimeCounts {
        RuntimeCounts {
            as_of_ms: self.clock.now_ms(),
            events_applied: self.events_applied,
            idempotency_records: self.idempotency.len(),
            wal_seq: self.wal_seq,
            snapshot_seq: self.snapshot_seq,
            last_snapshot_at_ms: self.last_snapshot_at_ms,
            writable: self.poisoned.is_none()
                && self.is_serving()
                && self.journal.write_refusal().is_none(),
            recovered_dropped: self.recovered_dropped,
            expiries: self.expiries,
            no_shows: self.no_shows,
        }
    }

    /// Tells the timer the earliest deadline, when it moved.
    pub(super) fn publish_earliest(&self) {
        let earliest = self.state.next_deadline();
        self.earliest_tx.send_if_modified(|current| {
            let changed = *current != earliest;
            *current = earliest;
            changed
        });
    }

    // ---- commands ------------------------------------------------------------------

    pub(super) fn exec(&mut self, command: Command, reply: RpcReplyPort<ExecResult>) {
        if let Err(e) = self.admit_write() {
            let _ = reply.send(Err(e));
            return;
        }
        let result = self.run(command).map_err(EngineError::Domain);
        let shard = self.shard;
        self.submit_applied(Box::new(move |stored| {
            // A caller that gave up is not an error of the shard.
            let _ = reply.send(
                stored
                    .map_err(|e| EngineError::not_stored(shard, e))
                    .and(result),
            );
        }));
    }

    pub(super) fn exec_batch(
        &mut self,
        commands: Vec<Command>,
        reply: RpcReplyPort<Result<Vec<Result<Output, DomainError>>, EngineError>>,
    ) {
        if let Err(e) = self.admit_write() {
            let _ = reply.send(Err(e));
            return;
        }
        let results: Vec<_> = commands.into_iter().map(|c| self.run(c)).collect();
        let shard = self.shard;
        self.submit_applied(Box::new(move |stored| {
            let _ = reply.send(
                stored
                    .map_err(|e| EngineError::not_stored(shard, e))
                    .map(|()| results),
            );
        }));
    }

    pub(super) fn exec_deferred(
        &mut self,
        command: Command,
        reply: RpcReplyPort<Result<Applied, EngineError>>,
    ) {
        if let Err(e) = self.admit_write() {
            let _ = reply.send(Err(e));
            return;
        }
        let result = self.run(command);
        let (durable, done) = Durable::new(self.shard);
        // Submitted before the answer leaves, so anything the caller writes next is queued
        // behind these records.
        self.submit_applied(done);
        let _ = reply.send(Ok((result, durable)));
    }

    pub(super) fn query(&self, query: &Query) -> Result<QueryAnswer, DomainError> {
        match query {
            Query::Status => Ok(QueryAnswer::Status {
                counts: self.state.counts(),
                runtime: self.runtime_counts(),
            }),
            query => self.state.query(query),
        }
    }

    /// The timer's wake-up: due deadlines, then housekeeping.
    pub(super) fn tick(&mut self) {
        self.expire_due();
        self.purge_answers();
        self.maybe_snapshot();
        self.snapshot_if_holding_back();
    }

    /// Acts on due deadlines and journals what that changed.
    pub(super) fn expire_due(&mut self) {
        if self.admit_write().is_err() {
            return; // the next tick tries again
        }
        let _ = self.run(Command::ExpireDue);
        if !self.events.is_empty() {
            let taken = self.take_events();
            self.submit(taken, Box::new(|_| {}));
        }
    }

    /// Refuses a write before it changes anything when the journal cannot take it: a shard
    /// that is not serving, a disk below its reserve or read-only, a failed journal, a
    /// journal queue near its bound.
    fn admit_write(&self) -> Result<(), EngineError> {
        self.admit(true)
    }

    /// [`Self::admit_write`] for the last write of a request already admitted (its claim's
    /// settlement, its idempotency answer): the disk's reserve is kept for such work, so a
    /// booking that took its seat before the disk filled is still told, and its answer
    /// stored. A failed journal or a stopped shard still refuses it.
    fn admit_ending(&self) -> Result<(), EngineError> {
        self.admit(false)
    }

    /// This shard cannot take the call: `log_failed` when its journal failed, else
    /// unavailable.
    fn not_serving(&self) -> EngineError {
        EngineError::not_serving(self.shard, self.journal.write_refusal())
    }

    fn admit(&self, mind_headroom: bool) -> Result<(), EngineError> {
        if self.poisoned.is_some() || !self.is_serving() {
            return Err(self.not_serving());
        }
        if let Some(refusal) = self.journal.write_refusal() {
            if mind_headroom || !refusal.clears_by_itself() {
                return Err(EngineError::WritesRefused {
                    shard: self.shard,
                    refusal,
                });
            }
        }
        if self.journal.busy() {
            return Err(EngineError::Overloaded { shard: self.shard });
        }
        Ok(())
    }

    /// False once the shard stopped ([`ShardPhase::Stopped`]): a completion on the journal's
    /// thread may stop it between two messages.
    fn is_serving(&self) -> bool {
        !matches!(*self.phase.borrow(), ShardPhase::Stopped(_))
    }

    /// Memory may be ahead of the log: answer nothing until a restart (the node routes no
    /// request to a stopped shard). Reads of the other shards go on.
    fn stop(phase: &watch::Sender<ShardPhase>, shard: u32, reason: String) {
        tracing::error!(shard, %reason, "a write of this shard was not stored; it answers nothing until a restart");
        phase.send_replace(ShardPhase::Stopped(reason));
    }

    fn run(&mut self, command: Command) -> Result<Output, DomainError> {
        let now_ms = self.clock.now_ms();
        self.state.execute(command, now_ms, &mut self.events)
    }

    /// Journals the events applied since the last call; `done` runs once they are stored.
    fn submit_applied(&mut self, done: Done) {
        let taken = self.take_events();
        self.submit(taken, done);
        self.maybe_snapshot();
    }

    /// The events applied since the last call, as numbered log records, and (when someone
    /// watches) as changes to publish.
    fn take_events(&mut self) -> Taken {
        self.events_applied += self.events.len() as u64;
        let watched = self.publisher.is_watched();
        let at_ms = if watched { self.clock.now_ms() } else { 0 };
        let mut records = Vec::with_capacity(self.events.len());
        let mut published = Vec::new();
        let mut notices = Vec::new();
        let mut offers: Vec<SlotRef> = Vec::new();
        for event in self.events.drain(..) {
            if !event.is_journaled() {
                // A tentative claim's change: memory only (`Event::is_journaled`).
                continue;
            }
            self.wal_seq += 1;
            match event {
                Event::AppointmentExpired { .. } => self.expiries += 1,
                Event::AppointmentNoShow { .. } => self.no_shows += 1,
                _ => {}
            }
            if self.settler.is_some() {
                notices.extend(self.state.notice_for(&event));
            }
            if self.offerer.is_some() {
                for slot in self.state.waitlist_notice_for(&event) {
                    if !offers.contains(&slot) {
                        offers.push(slot);
                    }
                }
            }
            if watched {
                published.push(Published {
                    shard: self.shard,
                    wal_seq: self.wal_seq,
                    at_ms,
                    change: self.state.describe(&event),
                });
            }
            records.push((self.wal_seq, encode(&LogRecord::Event(event))));
        }
        self.keep_unrecorded(&published);
        Taken {
            records,
            answers: Vec::new(),
            published,
            notices,
            offers,
        }
    }

    /// Hands records to the journal; once stored, their changes are published and `done`
    /// runs.
    fn submit(&mut self, taken: Taken, done: Done) {
        let Taken {
            records,
            answers,
            published,
            notices,
            offers,
        } = taken;
        if records.is_empty() && self.stored_seq.load(Ordering::Acquire) >= self.wal_seq {
            // A barrier behind nothing: everything this shard wrote is stored already.
            done(Ok(()));
            return;
        }
        // One completion per append: it marks the records stored, then publishes their
        // changes and sends their claim notices (changes and notices come only with records).
        let done: Done = if records.is_empty() {
            done
        } else {
            let (stored_seq, last) = (self.stored_seq.clone(), self.wal_seq);
            let publisher = (!published.is_empty()).then(|| self.publisher.clone());
            let settler = self.settler.clone().filter(|_| !notices.is_empty());
            let offerer = self.offerer.clone().filter(|_| !offers.is_empty());
            let (phase, shard) = (self.phase.clone(), self.shard);
            Box::new(move |stored| {
                if let Err(e) = &stored {
                    // These records were applied in memory and will never be stored.
                    Self::stop(&phase, shard, e.to_string());
                }
                if stored.is_ok() {
                    stored_seq.fetch_max(last, Ordering::AcqRel);
                    if let Some(publisher) = publisher {
                        publisher.publish(published);
                    }
                    if let Some(settler) = settler {
                        settler.send(notices);
                    }
                    if let Some(offerer) = offerer {
                        offerer.send(offers);
                    }
                }
                done(stored);
            })
        };
        self.records_since_snapshot += records.len() as u64;
        let appended = if answers.is_empty() {
            self.journal.append(self.shard, records, done)
        } else {
            self.journal
                .append_shelving(self.shard, records, answers, done)
        };
        if let Err(refusal) = appended {
            let reason = match refusal {
                JournalError::Full => {
                    "the journal queue was full after the change was applied".to_string()
                }
                other => other.to_string(),
            };
            Self::stop(&self.phase, self.shard, reason.clone());
            self.poisoned = Some(reason);
        }
    }

    // ---- idempotency ---------------------------------------------------------------

    pub(super) fn idempotency_begin(
        &mut self,
        key: IdemKey,
        fingerprint: Fingerprint,
        reply: RpcReplyPort<IdemOutcome>,
    ) {
        let (begin, waiter) = self.look_up_key(&key, fingerprint, reply);
        if let Some(reply) = waiter {
            let _ = reply.send(IdemOutcome::Begin(begin));
        }
    }

    /// Begins `key` in the table: a stored answer comes from memory, or from the journal's
    /// shelf (read here, on the shard's thread: a replay is rare, and the read is one sled
    /// lookup).
    fn look_up_key(
        &mut self,
        key: &IdemKey,
        fingerprint: Fingerprint,
        waiter: RpcReplyPort<IdemOutcome>,
    ) -> (Begin, Option<RpcReplyPort<IdemOutcome>>) {
        self.release_shelved();
        let now_ms = self.clock.now_ms();
        let (journal, shard) = (&self.journal, self.shard);
        self.idempotency
            .begin(key, fingerprint, waiter, now_ms, |at| {
                read_shelved(journal.as_ref(), shard, &at)
            })
    }

    /// Responses whose shelving is stored leave memory.
    fn release_shelved(&mut self) {
        self.idempotency
            .release_shelved(self.stored_seq.load(Ordering::Acquire));
    }

    /// Purges the records past the retention, and has the shelf forget their answers.
    pub(super) fn purge_answers(&mut self) {
        self.idempotency.purge(self.clock.now_ms());
        if let Some(through_ms) = self.idempotency.take_purged() {
            if self.journal.shelves_answers() {
                self.journal.forget_shelved(self.shard, through_ms + 1);
            }
        }
    }

    /// Ends an in-flight key: with a response, the record is journaled and the waiters are
    /// answered once it is stored; without one (or when the journal cannot take it), the
    /// waiters are answered at once and nothing is stored.
    pub(super) fn idempotency_finish(
        &mut self,
        key: IdemKey,
        response: Option<StoredResponse>,
        reply: RpcReplyPort<Result<Durable, EngineError>>,
    ) {
        self.release_shelved();
        let now_ms = self.clock.now_ms();
        let fingerprint = self.idempotency.fingerprint_of(&key);
        let waiters = self.idempotency.finish(&key, response.clone(), now_ms);
        let writable = self.admit_ending().is_ok();
        // Events this message applied before (a booking's claim settlement) go in the same
        // append as the record: one submission, one completion.
        let mut taken = self.take_events();
        let (Some(response), Some(fingerprint), true) = (response.clone(), fingerprint, writable)
        else {
            // Nothing to store (no decision was reached), or the journal cannot take it: the
            // record stays in memory only, and the answer says so.
            for waiter in waiters {
                let _ = waiter.send(IdemOutcome::Finished(response.clone()));
            }
            let answer = if !writable && response.is_some() {
                Err(self.not_serving())
            } else if taken.records.is_empty() {
                Ok(Durable::stored(self.shard))
            } else {
                let (durable, done) = Durable::new(self.shard);
                self.submit(taken, done);
                Ok(durable)
            };
            let _ = reply.send(answer);
            return;
        };
        self.wal_seq += 1;
        let id = KeyId::of(&key);
        let record = if self.journal.shelves_answers() {
            taken.answers.push(ShelvedAnswer {
                at: ShelfRef {
                    id,
                    stored_at_ms: now_ms,
                },
                value: response.to_shelf(),
            });
            self.idempotency.shelve(&key, self.wal_seq);
            AnswerRecord {
                id,
                fingerprint,
                stored_at_ms: now_ms,
                response: None,
            }
        } else {
            AnswerRecord {
                id,
                fingerprint,
                stored_at_ms: now_ms,
                response: Some(response.clone()),
            }
        };
        taken
            .records
            .push((self.wal_seq, encode(&LogRecord::Answer(record))));
        let (durable, stored) = Durable::new(self.shard);
        let done: Done = Box::new(move |result| {
            // Waiters answer with the response only once it is stored.
            if result.is_ok() {
                for waiter in waiters {
                    let _ = waiter.send(IdemOutcome::Finished(Some(response.clone())));
                }
            }
            stored(result);
        });
        self.submit(taken, done);
        let _ = reply.send(Ok(durable));
        self.maybe_snapshot();
    }

    // ---- the citizen side of a booking ---------------------------------------------

    /// Begins the key (when it lives here), then decides the claim: one message, one step.
    pub(super) fn begin_booking(
        &mut self,
        key: Option<(IdemKey, Fingerprint)>,
        take: TakeClaim,
        reply: RpcReplyPort<BeginAnswer>,
    ) {
        if let Err(e) = self.admit_write() {
            let _ = reply.send(BeginAnswer::Refused(e));
            return;
        }
        if let Some((key, fingerprint)) = key {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let waiter = RpcReplyPort::from(tx);
            match self.look_up_key(&key, fingerprint, waiter).0 {
                Begin::Proceed => {}
                Begin::Queued => {
                    let _ = reply.send(BeginAnswer::Wait(rx));
                    return;
                }
                other => {
                    let _ = reply.send(BeginAnswer::Key(IdemOutcome::Begin(other)));
                    return;
                }
            }
        }
        let result = self.run(Command::TakeClaim(take));
        let (durable, done) = Durable::new(self.shard);
        self.submit_applied(done);
        let _ = reply.send(BeginAnswer::Claim(Box::new((result, durable))));
    }

    /// Settles the claim, then stores the key's answer (when it lives here): one append, so
    /// the record's [`Durable`] covers both.
    pub(super) fn finish_booking(
        &mut self,
        settle: SettleClaims,
        key: Option<(IdemKey, Option<StoredResponse>)>,
        reply: RpcReplyPort<Result<Durable, EngineError>>,
    ) {
        let settled = self.admit_ending().is_ok();
        if settled {
            let _ = self.run(Command::SettleClaims(settle));
        }
        match key {
            Some((key, response)) => self.idempotency_finish(key, response, reply),
            None if settled => {
                let (durable, done) = Durable::new(self.shard);
                self.submit_applied(done);
                let _ = reply.send(Ok(durable));
            }
            None => {
                let _ = reply.send(Err(self.not_serving()));
            }
        }
    }

    // ---- the recorder's tail ----------------------------------------------------------

    /// Keeps `published` until the recorder has stored it, and forgets what it has.
    pub(super) fn keep_unrecorded(&mut self, published: &[Published]) {
        let Some(recorder) = self.publisher.recorder() else {
            return;
        };
        self.unrecorded.extend(published.iter().cloned());
        let recorded = recorder.recorded(self.shard);
        while self
            .unrecorded
            .front()
            .is_some_and(|change| change.wal_seq <= recorded)
        {
            self.unrecorded.pop_front();
        }
    }

    /// Publishes changes found at recovery (the snapshot's unrecorded ones and the replayed
    /// tail's); the recorder skips those it stored already.
    pub(super) fn publish_recovered(&mut self, changes: Vec<Published>) {
        self.keep_unrecorded(&changes);
        let recorded = self
            .publisher
            .recorder()
            .map_or(0, |recorder| recorder.recorded(self.shard));
        let fresh: Vec<Published> = changes
            .into_iter()
            .filter(|change| change.wal_seq > recorded)
            .collect();
        self.publisher.publish(fresh);
    }

    /// With a recorder: the last of `shard`'s changes it has stored.
    pub(super) fn publisher_recorded(&self, shard: u32) -> Option<u64> {
        self.publisher
            .recorder()
            .map(|recorder| recorder.recorded(shard))
    }

    // ---- snapshots -----------------------------------------------------------------

    /// Snapshots only while writes are taken: a snapshot is as large as the shard and would
    /// eat the disk's reserve (the log keeps everything it needs meanwhile).
    fn may_snapshot(&self) -> bool {
        self.poisoned.is_none() && self.is_serving() && self.journal.write_refusal().is_none()
    }

    fn maybe_snapshot(&mut self) {
        if self.records_since_snapshot >= self.snapshot_after_records && self.may_snapshot() {
            self.snapshot(Box::new(|_| {}));
        }
    }

    /// At a housekeeping tick: a snapshot when this shard holds back the log's truncation
    /// ([`Journal::holds_back`]), however few records it wrote since its last one.
    fn snapshot_if_holding_back(&mut self) {
        if self.records_since_snapshot > 0
            && self.may_snapshot()
            && self.journal.holds_back(self.shard)
        {
            tracing::debug!(
                shard = self.shard,
                "snapshot: this shard holds back the log"
            );
            self.snapshot(Box::new(|_| {}));
        }
    }

    pub(super) fn snapshot_now(&mut self, reply: RpcReplyPort<Result<u64, EngineError>>) {
        let shard = self.shard;
        if !self.may_snapshot() {
            tracing::warn!(
                shard,
                "no snapshot while the shard takes no writes; its log is kept"
            );
            let _ = reply.send(Err(EngineError::Unavailable { shard }));
            return;
        }
        let seq = self.wal_seq;
        self.snapshot(Box::new(move |stored| {
            let _ = reply.send(
                stored
                    .map(|()| seq)
                    .map_err(|_| EngineError::Unavailable { shard }),
            );
        }));
    }

    fn snapshot(&mut self, done: Done) -> u64 {
        // Responses already on the shelf leave memory first, so the snapshot carries only
        // where they are.
        self.release_shelved();
        let snapshot = SnapshotRef {
            seq: self.wal_seq,
            state: &self.state,
            idempotency: self.idempotency.records(),
            unrecorded: self.unrecorded.iter().collect(),
        };
        let bytes = encode(&snapshot);
        let seq = self.wal_seq;
        self.records_since_snapshot = 0;
        self.snapshot_after_records = self.snapshot_every_records;
        self.snapshot_seq = seq;
        self.last_snapshot_at_ms = Some(self.clock.now_ms());
        if let Err(refusal) = self.journal.snapshot(self.shard, seq, bytes, done) {
            tracing::warn!(
                shard = self.shard,
                %refusal,
                "snapshot not taken; the log is kept"
            );
        }
        seq
    }
}

/// A shelved answer, read from the journal: `Replay` with it, or `Unreadable` (logged) when
/// the journal cannot read it or has none where the table says it is.
fn read_shelved(journal: &dyn Journal, shard: u32, at: &ShelfRef) -> Begin {
    let why = match journal.shelved(shard, at) {
        Ok(Some(bytes)) => match StoredResponse::from_shelf(&bytes) {
            Ok(response) => return Begin::Replay(response),
            Err(why) => format!("it does not decode: {why}"),
        },
        Ok(None) => "the journal has none there".to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(
        shard,
        stored_at_ms = at.stored_at_ms,
        %why,
        "a stored idempotent answer could not be read; its retries get 503"
    );
    Begin::Unreadable
}

/// The records after which a shard takes its first snapshot after start: spread by shard
/// over `[every / 2, every)`. A node's shards see about the same traffic, so with one
/// threshold they all reach it within seconds of each other and snapshot together: at 10 M
/// citizens, a launch's 64 snapshots of 30 MB each all came within the same minute, each
/// serialised on one of the runtime's two threads, which pauses everything else on it. Each
/// shard then keeps its own phase, snapshotting every `every` records.
pub(super) fn first_snapshot_after(every: u64, shard: u32) -> u64 {
    let every = every.max(1);
    let half = every / 2;
    // 37 is odd, so `shard * 37 % 64` visits every 64th of the range once per 64 shards.
    let spread = u64::from(shard.wrapping_mul(37) % 64);
    (half + (every - half) * spread / 64).max(1)
}

#[cfg(test)]
mod tests {
    use super::first_snapshot_after;

    #[test]
    fn first_snapshots_are_spread_over_the_second_half_of_the_interval() {
        let every = 100_000;
        let mut firsts: Vec<u64> = (0..64)
            .map(|shard| first_snapshot_after(every, shard))
            .collect();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 64, "every shard its own threshold");
        assert!(
            firsts[0] >= every / 2 && *firsts.last().unwrap() < every,
            "{firsts:?}"
        );
        // Evenly: neighbours 1/64 of the half-interval apart (rounding aside).
        assert!(firsts
            .windows(2)
            .all(|w| w[1] - w[0] >= (every / 2) / 64 - 1));
        assert_eq!(first_snapshot_after(1, 5), 1);
        assert_eq!(first_snapshot_after(0, 5), 1);
    }
}
