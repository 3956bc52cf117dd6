//! Every way the engine says no, typed: why a command was refused ([`DomainError`]), why a
//! shard did not answer ([`EngineError`]), and the seams an operator meets ([`JournalError`],
//! [`RecoveryError`], [`StartError`]), each of which says what to do next.
//!
//! All of them are plain serde values: an answer may one day cross a process.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::model::Status;

/// What was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    Clinic,
    Slot,
    Vaccine,
    Batch,
    Appointment,
    Citizen,
    WaitlistEntry,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Clinic => "clinic",
            Resource::Slot => "slot",
            Resource::Vaccine => "vaccine",
            Resource::Batch => "batch",
            Resource::Appointment => "appointment",
            Resource::Citizen => "citizen",
            Resource::WaitlistEntry => "waitlist_entry",
        }
    }
}

/// A named bound of a shard's tables or of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// `VACCINES_MAX`.
    VaccinesInCatalogue,
    /// `1..=STOCK_QUANTITY_MAX`.
    StockQuantity,
    /// A non-zero delta of at most `STOCK_QUANTITY_MAX`.
    StockAdjustment,
    /// `SLOTS_BULK_MAX`.
    SlotsInOneUpload,
    /// `SLOTS_PER_CLINIC_MAX`.
    SlotsPerClinic,
    /// Capacity, reserve and times of a slot.
    SlotFields,
    /// `--waitlist-max`: entries of one slot's waitlist.
    WaitlistPerSlot,
    /// `WAITLIST_PER_CITIZEN_PER_SHARD_MAX`.
    WaitlistPerCitizen,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::VaccinesInCatalogue => "vaccines in the catalogue",
            Limit::StockQuantity => "stock quantity",
            Limit::StockAdjustment => "stock adjustment",
            Limit::SlotsInOneUpload => "slots in one upload",
            Limit::SlotsPerClinic => "slots per clinic",
            Limit::SlotFields => "slot fields",
            Limit::WaitlistPerSlot => "entries of this slot's waitlist",
            Limit::WaitlistPerCitizen => "waitlist entries of this citizen",
        }
    }
}

/// Why a command was refused. Each maps to one API error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainError {
    NotFound(Resource),
    SlotCancelled,
    SlotStarted,
    VaccineNotOffered,
    AlreadyBooked,
    SoldOut,
    OutOfStock,
    NotEligible {
        reasons: Vec<String>,
    },
    HoldExpired,
    InvalidTransition {
        status: Status,
    },
    CapacityInUse {
        taken: u32,
    },
    InsufficientStock {
        on_hand: i64,
    },
    BatchMismatch {
        expires_on: NaiveDate,
    },
    /// A named bound was reached.
    LimitReached(Limit),
    /// The appointment belongs to another citizen.
    NotYours,
    /// A reschedule of an appointment whose slot starts within `--reschedule-notice`.
    TooLate {
        notice_s: i64,
    },
    /// A hold arrived after its claim's `not_after_ms` (the booking's steps took longer than
    /// the saga's budget): nothing was held; the client may retry.
    ClaimLapsed,
    /// Administration: the batch is of another vaccine than the appointment's.
    WrongBatch {
        vaccine: String,
    },
    /// Administration: the batch's last usable day (`expires_on`) is before the slot's
    /// local date.
    BatchExpired {
        expires_on: NaiveDate,
    },
    /// A waitlist join while the slot has a seat and a dose for the citizen: book instead
    /// (409).
    SeatsAvailable,
    /// The citizen already waits for this slot (409).
    AlreadyWaiting,
}

impl DomainError {
    /// The API error code (docs/API.md).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::NotFound(_) => "NOT_FOUND",
            DomainError::SlotCancelled => "SLOT_CANCELLED",
            DomainError::SlotStarted => "SLOT_STARTED",
            DomainError::VaccineNotOffered => "VACCINE_NOT_OFFERED",
            DomainError::AlreadyBooked => "ALREADY_BOOKED",
            DomainError::SoldOut => "SOLD_OUT",
            DomainError::OutOfStock => "OUT_OF_STOCK",
            DomainError::NotEligible { .. } => "NOT_ELIGIBLE",
            DomainError::HoldExpired => "HOLD_EXPIRED",
            DomainError::InvalidTransition { .. } => "INVALID_TRANSITION",
            DomainError::CapacityInUse { .. } => "CAPACITY_IN_USE",
            DomainError::InsufficientStock { .. } => "INSUFFICIENT_STOCK",
            DomainError::BatchMismatch { .. } => "BATCH_MISMATCH",
            DomainError::LimitReached(_) => "LIMIT_REACHED",
            DomainError::NotYours => "FORBIDDEN",
            DomainError::ClaimLapsed => "UNAVAILABLE",
            DomainError::TooLate { .. } => "TOO_LATE",
            DomainError::WrongBatch { .. } => "WRONG_BATCH",
            DomainError::BatchExpired { .. } => "BATCH_EXPIRED",
            DomainError::SeatsAvailable => "SEATS_AVAILABLE",
            DomainError::AlreadyWaiting => "ALREADY_WAITING",
        }
    }
}

impl std::fmt::Display for DomainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainError::NotFound(what) => write!(f, "{} not found", what.as_str()),
            DomainError::SlotCancelled => f.write_str("the slot was cancelled by the clinic"),
            DomainError::SlotStarted => f.write_str("the slot has already started"),
            DomainError::VaccineNotOffered => f.write_str("the slot does not offer this vaccine"),
            DomainError::AlreadyBooked => {
                f.write_str("the citizen already has a pending or confirmed appointment")
            }
            DomainError::SoldOut => f.write_str("no seat is left in this slot"),
            DomainError::OutOfStock => f.write_str("no dose of this vaccine is left at the clinic"),
            DomainError::NotEligible { reasons } => {
                write!(f, "the citizen is not eligible: {}", reasons.join(", "))
            }
            DomainError::HoldExpired => f.write_str("the hold expired before it was confirmed"),
            DomainError::InvalidTransition { status } => {
                write!(f, "not allowed from status {}", status.as_str())
            }
            DomainError::CapacityInUse { taken } => write!(
                f,
                "{taken} seats are already taken; capacity cannot go below that"
            ),
            DomainError::InsufficientStock { on_hand } => write!(
                f,
                "the batch has {on_hand} doses on hand; it cannot go negative"
            ),
            DomainError::BatchMismatch { expires_on } => {
                write!(f, "this batch is already stocked with expiry {expires_on}")
            }
            DomainError::LimitReached(what) => write!(f, "limit reached: {}", what.as_str()),
            DomainError::NotYours => f.write_str("this appointment belongs to someone else"),
            DomainError::TooLate { .. } => {
                f.write_str("the appointment starts too soon to be rescheduled")
            }
            DomainError::ClaimLapsed => {
                f.write_str("the booking took longer than its budget; nothing was held, retry")
            }
            DomainError::WrongBatch { vaccine } => write!(
                f,
                "this batch holds {vaccine}, not the appointment's vaccine; use one of its batches"
            ),
            DomainError::BatchExpired { expires_on } => write!(
                f,
                "this batch expired after {expires_on}; use a batch valid on the slot's date"
            ),
            DomainError::SeatsAvailable => {
                f.write_str("the slot has a free seat and a dose for this vaccine: book it instead")
            }
            DomainError::AlreadyWaiting => f.write_str("the citizen already waits for this slot"),
        }
    }
}

impl std::error::Error for DomainError {}

/// Why the engine did not answer with a domain outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineError {
    Domain(DomainError),
    /// The shard's in-flight bound was reached, or its journal's queue is near its bound.
    Overloaded {
        shard: u32,
    },
    /// The shard is not served here (owned by another node, its actor is gone, it stopped
    /// after a write of it could not be stored, or its log could not be recovered).
    Unavailable {
        shard: u32,
    },
    /// The shard is loading its snapshot and log; it serves once that is done.
    Recovering {
        shard: u32,
    },
    /// An external dependency (the eligibility check) did not answer within its budget, or
    /// its circuit is open, and the outage policy is to refuse.
    DependencyUnavailable {
        dependency: String,
        retry_after_s: u32,
    },
    /// The journal cannot store new writes (its disk is full or read-only, or it failed): the
    /// write was refused before it changed anything, or (`LogFailed` only) its change was
    /// applied and could not be stored, and its shard stopped. Reads of the other shards are
    /// still served.
    WritesRefused {
        shard: u32,
        refusal: WriteRefusal,
    },
}

/// Why the journal takes no new writes now. Asked before a write is decided, so a refused
/// write changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteRefusal {
    /// Less than the reserve is free on the log's filesystem. Clears by itself once space
    /// returns.
    DiskFull {
        available_bytes: u64,
        reserve_bytes: u64,
    },
    /// The log's filesystem is read-only. Clears by itself once it is writable again.
    ReadOnly,
    /// A write or flush of the log failed: no more writes until the node restarts (in place,
    /// once the disk has room: the server's `reopen.rs`), which recovers from the log.
    LogFailed(String),
}

impl WriteRefusal {
    /// The machine-readable reason (`details.reason` of the 503): `disk_full`, `read_only`,
    /// `log_failed`.
    pub fn reason(&self) -> &'static str {
        match self {
            WriteRefusal::DiskFull { .. } => "disk_full",
            WriteRefusal::ReadOnly => "read_only",
            WriteRefusal::LogFailed(_) => "log_failed",
        }
    }

    /// True when it clears by itself (space returns, the filesystem turns writable).
    pub fn clears_by_itself(&self) -> bool {
        !matches!(self, WriteRefusal::LogFailed(_))
    }
}

impl std::fmt::Display for WriteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteRefusal::DiskFull {
                available_bytes,
                reserve_bytes,
            } => write!(
                f,
                "the data directory's disk has {available_bytes} bytes free, below the reserve \
                 of {reserve_bytes}: writes are refused and reads served; free space (writes \
                 resume by themselves)"
            ),
            WriteRefusal::ReadOnly => f.write_str(
                "the data directory's filesystem is read-only: writes are refused and reads \
                 served; make it writable (writes resume by themselves)",
            ),
            WriteRefusal::LogFailed(why) => write!(
                f,
                "the write-ahead log failed ({why}): writes are refused until the node restarts \
                 in place, by itself once the data directory's disk has room, and recovers \
                 from the log"
            ),
        }
    }
}

impl EngineError {
    /// What a caller is told when `shard` cannot serve it: when the journal failed (the
    /// shard stopped because of it), a `log_failed` refusal that says so; else unavailable.
    pub fn not_serving(shard: u32, journal_refusal: Option<WriteRefusal>) -> EngineError {
        match journal_refusal {
            Some(refusal @ WriteRefusal::LogFailed(_)) => {
                EngineError::WritesRefused { shard, refusal }
            }
            _ => EngineError::Unavailable { shard },
        }
    }

    /// What a caller is told when `shard`'s records were not stored: a failed journal is a
    /// `log_failed` refusal (the shard stopped; no restart-less retry can succeed), a full
    /// queue an overload.
    pub fn not_stored(shard: u32, error: JournalError) -> EngineError {
        match error {
            JournalError::Failed(why) => EngineError::WritesRefused {
                shard,
                refusal: WriteRefusal::LogFailed(why),
            },
            JournalError::Full => EngineError::Overloaded { shard },
            JournalError::Read(_) => EngineError::Unavailable { shard },
        }
    }
}

impl From<DomainError> for EngineError {
    fn from(e: DomainError) -> Self {
        EngineError::Domain(e)
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Domain(e) => e.fmt(f),
            EngineError::Overloaded { shard } => {
                write!(f, "shard {shard} is overloaded; retry shortly")
            }
            EngineError::Unavailable { shard } => {
                write!(f, "shard {shard} is not available on this node")
            }
            EngineError::Recovering { shard } => {
                write!(f, "shard {shard} is recovering its log; retry shortly")
            }
            EngineError::DependencyUnavailable { dependency, .. } => {
                write!(f, "the {dependency} check is unavailable; retry later")
            }
            EngineError::WritesRefused { refusal, .. } => refusal.fmt(f),
        }
    }
}

impl std::error::Error for EngineError {}

/// Why the journal did not take or keep a write, or could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalError {
    /// Its queue is at its bound: nothing was changed; answer 503 and let the client retry.
    Full,
    /// A write or flush failed (or the log was closed): the node takes no more writes, since
    /// its memory may be ahead of its log.
    Failed(String),
    /// The shard's stored log could not be read.
    Read(String),
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::Full => f.write_str(
                "the write-ahead log's queue is full; the change was refused, retry shortly",
            ),
            JournalError::Failed(why) => write!(
                f,
                "the write-ahead log failed ({why}); this node takes no more writes: check the \
                 disk of the data directory, then restart, which recovers from the log"
            ),
            JournalError::Read(why) => write!(
                f,
                "the write-ahead log cannot be read ({why}); check the data directory's disk \
                 and permissions, or restore it from a backup"
            ),
        }
    }
}

impl std::error::Error for JournalError {}

/// Why a shard could not be rebuilt from its snapshot and log. The shard stays unavailable
/// (503) and the others serve; nothing in the log is changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecoveryError {
    Journal {
        shard: u32,
        error: JournalError,
    },
    /// The snapshot does not decode: damaged, or written by an incompatible build.
    Snapshot {
        shard: u32,
        seq: u64,
        reason: String,
    },
    /// The snapshot names another shard or sequence number than where it was stored.
    ForeignSnapshot {
        shard: u32,
        seq: u64,
    },
    /// The log skips sequence numbers: records in between are missing.
    Gap {
        shard: u32,
        after: u64,
        found: u64,
    },
    /// A record inside the log (not its torn tail) does not decode.
    Record {
        shard: u32,
        seq: u64,
        reason: String,
    },
    /// The replayed state breaks an invariant the live shard kept.
    Invariant {
        shard: u32,
        reason: String,
    },
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const ACT: &str = "the shard stays unavailable; keep the data directory as it is and \
                           restore it from a backup, or run the build that wrote it";
        match self {
            RecoveryError::Journal { shard, error } => write!(f, "shard {shard}: {error}"),
            RecoveryError::Snapshot { shard, seq, reason } => write!(
                f,
                "shard {shard}: snapshot at {seq} cannot be read ({reason}); {ACT}"
            ),
            RecoveryError::ForeignSnapshot { shard, seq } => write!(
                f,
                "shard {shard}: the snapshot stored at {seq} belongs to another shard or \
                 position; {ACT}"
            ),
            RecoveryError::Gap {
                shard,
                after,
                found,
            } => write!(
                f,
                "shard {shard}: the log jumps from {after} to {found}; {ACT}"
            ),
            RecoveryError::Record { shard, seq, reason } => write!(
                f,
                "shard {shard}: log record {seq} cannot be read ({reason}); {ACT}"
            ),
            RecoveryError::Invariant { shard, reason } => write!(
                f,
                "shard {shard}: the replayed state is inconsistent ({reason}); {ACT}"
            ),
        }
    }
}

impl std::error::Error for RecoveryError {}

/// Why a node did not start, or not every shard came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    ShardCount {
        shards: u32,
        max: u32,
    },
    NotInRing {
        node: String,
    },
    Spawn {
        shard: u32,
        reason: String,
    },
    /// These shards could not recover; the others serve.
    Recovery(Vec<RecoveryError>),
    /// A shard's actor stopped before it finished recovering.
    Stopped {
        shard: u32,
    },
    /// The claims could not be settled against their appointments after recovery.
    Reconcile(String),
    /// `--no-show-grace` beyond its bound.
    NoShowGrace {
        grace_ms: i64,
        max_ms: i64,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::ShardCount { shards, max } => {
                write!(f, "--shards must be 1..={max}, got {shards}")
            }
            StartError::NotInRing { node } => write!(
                f,
                "node {node} is not in the ring; start it with a name the ring lists"
            ),
            StartError::Spawn { shard, reason } => {
                write!(f, "shard {shard} failed to start: {reason}")
            }
            StartError::Recovery(failures) => {
                let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
                f.write_str(&all.join("; "))
            }
            StartError::Stopped { shard } => {
                write!(
                    f,
                    "shard {shard} stopped while recovering; see the log above"
                )
            }
            StartError::Reconcile(reason) => {
                write!(f, "claims could not be reconciled after recovery: {reason}")
            }
            StartError::NoShowGrace { grace_ms, max_ms } => write!(
                f,
                "--no-show-grace must be 0s..={}h, got {grace_ms} ms",
                max_ms / 3_600_000
            ),
        }
    }
}

impl std::error::Error for StartError {}
