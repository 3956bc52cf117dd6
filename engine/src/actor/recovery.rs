//! A shard's first message: rebuild it from its latest snapshot and its log tail, through the
//! same `apply` the live path uses, check its invariants, and only then serve. The holds whose
//! deadline passed while the node was down expire at once. On an error nothing is kept: the
//! shard stays unavailable (`Failed`) and says why.

use ractor::ActorRef;
use tokio::sync::watch;

use super::{timer, ShardMsg, ShardPhase, ShardRuntime};
use crate::error::RecoveryError;
use crate::journal::{decode_record, decode_snapshot, LogRecord};
use crate::publish::Published;
use crate::shard::ShardState;

impl ShardRuntime {
    /// Recovers, then starts the timer and turns `Ready`; or turns `Failed`.
    pub(super) fn recover_and_serve(&mut self, myself: ActorRef<ShardMsg>) {
        let phase = match self.recover() {
            Ok(()) => {
                let (earliest_tx, earliest_rx) = watch::channel(None);
                self.earliest_tx = earliest_tx;
                tokio::spawn(timer::run(myself, self.clock.clone(), earliest_rx));
                // Holds whose deadline passed while the node was down expire now.
                self.expire_due();
                self.purge_answers();
                ShardPhase::Ready
            }
            Err(error) => {
                tracing::error!(shard = self.shard, %error, "shard recovery failed; it stays unavailable");
                self.poisoned = Some(error.to_string());
                ShardPhase::Failed(error)
            }
        };
        self.phase.send_replace(phase);
    }

    fn recover(&mut self) -> Result<(), RecoveryError> {
        let shard = self.shard;
        let started = std::time::Instant::now();
        let recovered = self
            .journal
            .recover(shard)
            .map_err(|error| RecoveryError::Journal { shard, error })?;
        for (seq, reason) in &recovered.dropped {
            tracing::warn!(shard, seq, %reason, "log record dropped at recovery (torn or corrupt tail)");
        }
        // Changes are described for the recorder only past what it has stored already: a
        // restart after a launch replays millions of records the recorder stored long ago,
        // and describing each (names resolved) cost as much as applying it.
        let recorded_through = self.publisher_recorded(shard).unwrap_or(u64::MAX);
        let mut changes = Vec::new();
        let snapshot_bytes = recovered.snapshot.as_ref().map_or(0, |(_, b)| b.len());
        let tail_records = recovered.records.len();
        let read_ms = started.elapsed().as_millis() as u64;
        let (mut state, mut idempotency, snapshot_seq) = match recovered.snapshot {
            Some((seq, bytes)) => {
                let snapshot = decode_snapshot(&bytes)
                    .map_err(|reason| RecoveryError::Snapshot { shard, seq, reason })?;
                if snapshot.state.shard() != shard || snapshot.seq != seq {
                    return Err(RecoveryError::ForeignSnapshot { shard, seq });
                }
                changes = snapshot.unrecorded;
                (snapshot.state, snapshot.idempotency, seq)
            }
            None => (ShardState::new(shard), Vec::new(), 0),
        };
        let decoded_ms = started.elapsed().as_millis() as u64;
        let mut wal_seq = snapshot_seq;
        for (seq, bytes) in recovered.records {
            if seq != wal_seq + 1 {
                return Err(RecoveryError::Gap {
                    shard,
                    after: wal_seq,
                    found: seq,
                });
            }
            match decode_record(&bytes).map_err(|reason| RecoveryError::Record {
                shard,
                seq,
                reason,
            })? {
                LogRecord::Event(event) => {
                    state.apply(&event);
                    if seq > recorded_through {
                        changes.push(Published {
                            shard,
                            wal_seq: seq,
                            at_ms: self.clock.now_ms(),
                            change: state.describe(&event),
                        });
                    }
                }
                LogRecord::Idempotency(record) => idempotency.push(record.into()),
                LogRecord::Answer(record) => idempotency.push(record),
            }
            wal_seq = seq;
        }
        // A replayed shard must satisfy what the live one did; refuse to serve a broken one.
        state
            .check_invariants()
            .map_err(|reason| RecoveryError::Invariant { shard, reason })?;
        for record in idempotency {
            self.idempotency.restore_record(record);
        }
        // The configuration is the node's, not the log's (`ShardConfig`): keep this run's.
        state.set_config(self.state.config());
        self.state = state;
        self.wal_seq = wal_seq;
        self.mark_stored(wal_seq);
        self.snapshot_seq = snapshot_seq;
        self.records_since_snapshot = wal_seq - snapshot_seq;
        self.recovered_dropped = recovered.dropped.len();
        self.poisoned = None;
        self.publish_recovered(changes);
        // Where a restart's time goes, shard by shard (RUST_LOG=holdfast_engine=debug).
        tracing::debug!(
            shard,
            snapshot_bytes,
            tail_records,
            read_ms,
            decoded_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "shard recovered"
        );
        Ok(())
    }
}
