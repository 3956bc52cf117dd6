//! The bodies of the operator routes (API.md, Operators).

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShardJson {
    pub shard: u32,
    pub node: String,
    /// ready | recovering | unavailable
    pub status: String,
    pub clinics: u64,
    pub slots: u64,
    pub pending: u64,
    pub confirmed: u64,
    pub administered: u64,
    /// Entries in the shard's deadline queue (live holds plus not yet compacted ones).
    pub timers: u64,
    pub next_expiry: Option<String>,
    /// Requests admitted to the shard and not yet answered (the bound is `mailbox_max`).
    pub mailbox: u32,
    pub mailbox_max: u32,
    /// Events applied since start.
    pub events_applied: u64,
    /// Sequence number of the shard's last log record, of its last snapshot, and when that
    /// snapshot was taken (null until one is, since start).
    pub wal_seq: Option<u64>,
    pub snapshot_seq: Option<u64>,
    pub last_snapshot_at: Option<String>,
    pub idempotency_records: usize,
    /// Log records recovery found torn or corrupt at the tail of this shard's log and cut
    /// off (they were never acknowledged: an answer waits for its record's flush).
    pub recovery_dropped_records: usize,
    /// Why the shard is unavailable (null when it is not).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RingJson {
    pub nodes: Vec<String>,
    pub vnodes_per_node: u32,
    pub shards: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShardsJson {
    pub node: String,
    pub ring: RingJson,
    pub shards: Vec<ShardJson>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthJson {
    pub status: String,
    /// The server's version (`holdfast --version`), so load reports can name what they ran against.
    pub version: String,
}
