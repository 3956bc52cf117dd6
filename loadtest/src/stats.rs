//! Per-operation latency (HDR histograms) and outcome counters, kept per connection and
//! merged at the end, plus a few shared atomic counters for the live progress bar.
//!
//! Each connection owns its [`Stats`] (no lock on the hot path); histograms of the same
//! bounds merge exactly, so the merged percentiles are those of every request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds from 1 µs to 60 s (longer ones are clamped to
/// 60 s and still counted), with 3 significant digits.
pub const LATENCY_MIN_US: u64 = 1;
pub const LATENCY_MAX_US: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// The operations a report distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `POST /v1/appointments`.
    Hold,
    /// `POST /v1/appointments/{id}/confirm`.
    Confirm,
    /// `POST /v1/appointments/{id}/cancel` of a PENDING hold.
    Release,
    /// `POST /v1/appointments/{id}/cancel` of a CONFIRMED appointment.
    Cancel,
    /// `GET /v1/clinics/{id}/availability`.
    Read,
    /// A deliberate replay of a successful create (same key, same body).
    Replay,
    /// `GET /healthz` (the ceiling).
    Noop,
    /// `GET /v1/clinics?vaccine=` polls of the expiry scenario.
    Poll,
    /// `POST /v1/appointments/{id}/administer` (staff).
    Administer,
    /// `POST /v1/queue` (the waiting room's ticket).
    Queue,
    /// `GET /v1/queue/{ticket}` (waiting for admission).
    QueuePoll,
    /// `POST /v1/clinics/{id}/slots/{slot}/waitlist` (a citizen joins a sold-out slot's list).
    Waitlist,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Hold => "hold",
            Op::Confirm => "confirm",
            Op::Release => "release",
            Op::Cancel => "cancel",
            Op::Read => "read",
            Op::Replay => "replay",
            Op::Noop => "noop",
            Op::Poll => "poll",
            Op::Administer => "administer",
            Op::Queue => "queue",
            Op::QueuePoll => "queue_poll",
            Op::Waitlist => "waitlist",
        }
    }

    /// Booking operations: the ones the "booking rate" counts.
    pub fn is_booking(self) -> bool {
        matches!(self, Op::Hold | Op::Confirm | Op::Release | Op::Cancel)
    }
}

/// An answer's status and error code, or a transport failure (status 0).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct OutcomeKey {
    pub op: Op,
    /// HTTP status; 0 when no answer came (timeout, refused, reset).
    pub status: u16,
    /// The error body's `code` (`SOLD_OUT`, ...), `TIMEOUT`/`TRANSPORT` for status 0, or
    /// empty for a success.
    pub code: String,
}

/// Is this outcome an error (as opposed to a success, an expected domain answer such as
/// SOLD_OUT, or a refusal)? Transport failures, 5xx, and 4xx answers the harness never
/// provokes on purpose (400, 401, 403, 404, 413, 415).
pub fn is_error(status: u16) -> bool {
    status == 0
        || status >= 500
        || (400..500).contains(&status) && ![409, 410, 422, 429].contains(&status)
}

/// Is this answer a refusal that decided nothing (`429` rate limit or waiting room, `503`
/// overload or a shard not ready), with `Retry-After`? Designed answers to a crowd: the
/// flood scenario reports them apart from the admitted requests, and a `429` is never an
/// error ([`is_error`]; a `503` still is, outside the flood).
pub fn is_refusal(status: u16) -> bool {
    status == 429 || status == 503
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_MIN_US, LATENCY_MAX_US, SIGNIFICANT_DIGITS)
        .expect("constant, valid histogram bounds")
}

/// One connection's (or one scenario's merged) figures.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub latency: BTreeMap<Op, Histogram<u64>>,
    pub outcomes: BTreeMap<OutcomeKey, u64>,
    /// Latency of every answered request that was not a refusal, whatever its operation.
    pub admitted: Option<Histogram<u64>>,
    /// Latency of every refusal ([`is_refusal`]): how quickly "come back later" came.
    pub refused: Option<Histogram<u64>>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats::default()
    }

    /// Records one request: its latency and its outcome.
    pub fn record(&mut self, op: Op, latency: Duration, status: u16, code: &str) {
        let micros = (latency.as_micros() as u64).clamp(LATENCY_MIN_US, LATENCY_MAX_US);
        self.latency
            .entry(op)
            .or_insert_with(histogram)
            .saturating_record(micros);
        let apart = if is_refusal(status) {
            Some(&mut self.refused)
        } else if status != 0 {
            Some(&mut self.admitted)
        } else {
            None
        };
        if let Some(h) = apart {
            h.get_or_insert_with(histogram).saturating_record(micros);
        }
        *self
            .outcomes
            .entry(OutcomeKey {
                op,
                status,
                code: code.to_string(),
            })
            .or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: &Stats) {
        for (op, h) in &other.latency {
            self.latency
                .entry(*op)
                .or_insert_with(histogram)
                .add(h)
                .expect("histograms of the same bounds merge");
        }
        for (key, n) in &other.outcomes {
            *self.outcomes.entry(key.clone()).or_insert(0) += n;
        }
        for (mine, theirs) in [
            (&mut self.admitted, &other.admitted),
            (&mut self.refused, &other.refused),
        ] {
            if let Some(theirs) = theirs {
                mine.get_or_insert_with(histogram)
                    .add(theirs)
                    .expect("histograms of the same bounds merge");
            }
        }
    }

    /// Requests of `op`.
    pub fn count(&self, op: Op) -> u64 {
        self.latency.get(&op).map_or(0, |h| h.len())
    }

    /// Answers of `op` with `status`.
    pub fn count_status(&self, op: Op, status: u16) -> u64 {
        self.outcomes
            .iter()
            .filter(|(k, _)| k.op == op && k.status == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request counted as an error by [`is_error`].
    pub fn errors(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(k, _)| is_error(k.status))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every 429 (see [`is_refusal`]).
    pub fn refusals(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(k, _)| is_refusal(k.status))
            .map(|(_, n)| n)
            .sum()
    }

    /// Answers with status 500..=599 except 503 (which is overload or recovery, and
    /// documented): each is a server bug by the contract.
    pub fn server_errors(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(k, _)| k.status >= 500 && k.status != 503)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Counters shared by every connection while a scenario runs, read by the progress bar.
#[derive(Debug, Default)]
pub struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Answers that were refusals ([`is_refusal`]).
    pub refused: AtomicU64,
    /// Seats still for sale, as far as the answers tell (sellable − held − confirmed +
    /// returned); -1 when the scenario does not track stock.
    pub remaining: AtomicI64,
}

impl Live {
    pub fn new(remaining: Option<i64>) -> Live {
        Live {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            remaining: AtomicI64::new(remaining.unwrap_or(-1)),
        }
    }

    pub fn count(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if is_error(status) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if is_refusal(status) {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn seats_taken(&self, n: i64) {
        if self.remaining.load(Ordering::Relaxed) >= 0 {
            self.remaining.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_histograms_and_outcomes() {
        let mut a = Stats::new();
        a.record(Op::Hold, Duration::from_micros(100), 201, "");
        a.record(Op::Hold, Duration::from_micros(300), 409, "SOLD_OUT");
        let mut b = Stats::new();
        b.record(Op::Hold, Duration::from_secs(120), 0, "TIMEOUT");
        b.record(Op::Confirm, Duration::ZERO, 200, "");
        a.merge(&b);
        assert_eq!(a.count(Op::Hold), 3);
        assert_eq!(a.count(Op::Confirm), 1);
        assert_eq!(a.count_status(Op::Hold, 409), 1);
        assert_eq!(a.errors(), 1);
        assert_eq!(a.server_errors(), 0);
        // Clamped, not lost.
        assert!(a.latency[&Op::Hold].max() >= LATENCY_MAX_US - LATENCY_MAX_US / 1000);
    }

    #[test]
    fn classifies_errors() {
        assert!(is_error(0));
        assert!(is_error(500));
        assert!(is_error(401));
        assert!(!is_error(429) && is_refusal(429));
        assert!(!is_error(409));
        assert!(!is_error(410));
        assert!(!is_error(201));
    }
}
