//! The circuit breaker in front of the external eligibility check (docs/API.md, "External
//! eligibility check").
//!
//! A small state machine behind a `std::sync::Mutex`, driven by an injected [`Clock`]: the
//! lock is held only to read or change a few numbers, never across an await.
//!
//! - **Closed**: every call goes through. Each failed call counts; a success resets the count.
//!   At `failures` failures in a row the breaker opens.
//! - **Open**: calls are refused at once (short-circuited) until `cooldown` has passed since
//!   it opened; then the next caller becomes the one trial and the breaker is half-open.
//! - **Half-open**: the trial is in flight; every other caller is short-circuited. The trial's
//!   success closes the breaker, its failure opens it again for another cooldown.
//!
//! A caller is admitted with a [`Call`], which it settles with [`Call::succeeded`] or
//! [`Call::failed`]; a call dropped unsettled (its future was cancelled) counts as a failure,
//! so an abandoned trial reopens the breaker instead of leaving it half-open for ever.
//!
//! Outcomes of calls admitted while closed that arrive after the breaker opened count in the
//! totals and the failure count but change no state: only the trial decides how an open
//! breaker ends.

use std::sync::{Arc, Mutex, MutexGuard};

use holdfast_engine::external::{BreakerState, DependencyStatus};
use holdfast_engine::{Clock, UnixMs};

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failed calls in a row that open the breaker (at least 1).
    pub failures: u32,
    /// How long an open breaker refuses calls before it lets one trial through.
    pub cooldown_ms: i64,
}

/// A circuit breaker for one dependency.
pub struct Breaker {
    name: String,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

/// What [`Breaker::admit`] decides.
pub enum Admission<'a> {
    /// Make the call and settle it.
    Go(Call<'a>),
    /// The breaker is open (or its trial is in flight): do not call; tell the client to come
    /// back in `retry_after_s` seconds.
    ShortCircuited { retry_after_s: u32 },
}

/// An admitted call. Settle it with [`Call::succeeded`] or [`Call::failed`]; dropping it
/// unsettled counts as a failure.
#[must_use = "settle the call with succeeded() or failed()"]
pub struct Call<'a> {
    breaker: &'a Breaker,
    trial: bool,
    settled: bool,
}

impl Call<'_> {
    /// Whether this call is the half-open trial.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    pub fn succeeded(mut self) {
        self.settle(true);
    }

    pub fn failed(mut self) {
        self.settle(false);
    }

    fn settle(&mut self, ok: bool) {
        if !self.settled {
            self.settled = true;
            let now = self.breaker.clock.now_ms();
            let (before, after, failures) = {
                let mut inner = self.breaker.lock();
                let before = inner.state;
                inner.settle(now, self.trial, ok, &self.breaker.config);
                (before, inner.state, inner.consecutive_failures)
            };
            self.breaker.log_change(before, after, failures);
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.settle(false);
    }
}

impl Breaker {
    pub fn new(name: impl Into<String>, config: BreakerConfig, clock: Arc<dyn Clock>) -> Breaker {
        Breaker {
            name: name.into(),
            config,
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Asks to make the first call of a request now (a refusal counts as short-circuited).
    pub fn admit(&self) -> Admission<'_> {
        self.admit_counted(true)
    }

    /// Asks to retry a request's failed call now (a refusal ends the request but is not
    /// counted again as short-circuited).
    pub fn admit_retry(&self) -> Admission<'_> {
        self.admit_counted(false)
    }

    fn admit_counted(&self, first: bool) -> Admission<'_> {
        let now = self.clock.now_ms();
        let admitted = self.lock().admit(now, first, &self.config);
        match admitted {
            Ok(trial) => {
                if trial {
                    self.log_change(BreakerState::Open, BreakerState::HalfOpen, 0);
                }
                Admission::Go(Call {
                    breaker: self,
                    trial,
                    settled: false,
                })
            }
            Err(retry_after_s) => Admission::ShortCircuited { retry_after_s },
        }
    }

    /// Logs a change of state (outside the lock).
    fn log_change(&self, before: BreakerState, after: BreakerState, failures: u32) {
        let name = self.name.as_str();
        match (before, after) {
            (BreakerState::Open, BreakerState::Open) => {}
            (_, BreakerState::Open) => tracing::warn!(
                dependency = name,
                consecutive_failures = failures,
                cooldown_ms = self.config.cooldown_ms,
                "circuit breaker opened: calls are short-circuited until the cooldown ends"
            ),
            (BreakerState::Open, BreakerState::HalfOpen) => tracing::info!(
                dependency = name,
                "circuit breaker half-open: one trial call goes through"
            ),
            (BreakerState::HalfOpen, BreakerState::Closed) => {
                tracing::info!(
                    dependency = name,
                    "circuit breaker closed: the trial succeeded"
                )
            }
            _ => {}
        }
    }

    /// What a client refused now should wait: the rest of the cooldown while open (rounded up
    /// to whole seconds, at least 1), else 1.
    pub fn retry_after_s(&self) -> u32 {
        let now = self.clock.now_ms();
        self.lock().retry_after_s(now, &self.config)
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// The breaker as operators see it.
    pub fn status(&self) -> DependencyStatus {
        let inner = self.lock();
        DependencyStatus {
            name: self.name.clone(),
            breaker: inner.state,
            consecutive_failures: inner.consecutive_failures,
            opened_at_ms: inner.opened_at_ms,
            calls_total: inner.calls_total,
            failures_total: inner.failures_total,
            short_circuited_total: inner.short_circuited_total,
        }
    }

    /// The state; a poisoned lock is still usable (every change below is a few plain
    /// assignments that leave the state consistent).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The breaker's numbers: a pure state machine of `now`.
#[derive(Debug)]
struct Inner {
    /// `HalfOpen` exactly while the trial is in flight.
    state: BreakerState,
    consecutive_failures: u32,
    opened_at_ms: Option<UnixMs>,
    calls_total: u64,
    failures_total: u64,
    /// Requests refused at their first call (not their retries).
    short_circuited_total: u64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            opened_at_ms: None,
            calls_total: 0,
            failures_total: 0,
            short_circuited_total: 0,
        }
    }
}

impl Inner {
    /// `Ok(is_trial)` to call, `Err(retry_after_s)` to refuse; a refused first call counts as
    /// short-circuited.
    fn admit(&mut self, now: UnixMs, first: bool, config: &BreakerConfig) -> Result<bool, u32> {
        let trial = match self.state {
            BreakerState::Closed => false,
            BreakerState::Open if self.cooldown_left_ms(now, config) == 0 => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open | BreakerState::HalfOpen => {
                if first {
                    self.short_circuited_total += 1;
                }
                return Err(self.retry_after_s(now, config));
            }
        };
        self.calls_total += 1;
        Ok(trial)
    }

    fn settle(&mut self, now: UnixMs, trial: bool, ok: bool, config: &BreakerConfig) {
        if !ok {
            self.failures_total += 1;
        }
        match (trial, ok, self.state) {
            (true, true, _) => {
                self.state = BreakerState::Closed;
                self.consecutive_failures = 0;
            }
            (true, false, _) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.open(now);
            }
            (false, true, BreakerState::Closed) => self.consecutive_failures = 0,
            (false, false, BreakerState::Closed) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= config.failures.max(1) {
                    self.open(now);
                }
            }
            // A late outcome of a call admitted before the breaker opened: counted, but only
            // the trial decides how an open breaker ends.
            (false, true, _) => {}
            (false, false, _) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1)
            }
        }
    }

    fn open(&mut self, now: UnixMs) {
        self.state = BreakerState::Open;
        self.opened_at_ms = Some(now);
    }

    fn cooldown_left_ms(&self, now: UnixMs, config: &BreakerConfig) -> i64 {
        match self.opened_at_ms {
            Some(opened) => opened
                .saturating_add(config.cooldown_ms)
                .saturating_sub(now)
                .max(0),
            None => 0,
        }
    }

    fn retry_after_s(&self, now: UnixMs, config: &BreakerConfig) -> u32 {
        if self.state != BreakerState::Open {
            return 1;
        }
        let left_ms = self.cooldown_left_ms(now, config);
        let seconds = left_ms.saturating_add(999) / 1000;
        u32::try_from(seconds).unwrap_or(u32::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use holdfast_engine::ManualClock;

    use super::*;

    const T0: UnixMs = 1_800_000_000_000;

    fn breaker(failures: u32, cooldown_ms: i64) -> (Breaker, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        let b = Breaker::new(
            "eligibility",
            BreakerConfig {
                failures,
                cooldown_ms,
            },
            clock.clone(),
        );
        (b, clock)
    }

    fn go(b: &Breaker) -> Call<'_> {
        match b.admit() {
            Admission::Go(call) => call,
            Admission::ShortCircuited { retry_after_s } => {
                panic!(
                    "short-circuited (retry after {retry_after_s} s): {:?}",
                    b.status()
                )
            }
        }
    }

    /// The Retry-After of a refused admission; panics when admitted.
    fn refused(b: &Breaker) -> u32 {
        match b.admit() {
            Admission::Go(call) => {
                let trial = call.is_trial();
                call.succeeded();
                panic!("admitted (trial: {trial}): {:?}", b.status())
            }
            Admission::ShortCircuited { retry_after_s } => retry_after_s,
        }
    }

    fn fail_times(b: &Breaker, n: u32) {
        for _ in 0..n {
            go(b).failed();
        }
    }

    #[test]
    fn opens_after_n_failures_in_a_row() {
        let (b, _) = breaker(3, 30_000);
        fail_times(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.status().consecutive_failures, 2);
        assert_eq!(b.retry_after_s(), 1);
        fail_times(&b, 1);
        let s = b.status();
        assert_eq!(s.breaker, BreakerState::Open);
        assert_eq!(s.consecutive_failures, 3);
        assert_eq!(s.opened_at_ms, Some(T0));
        assert_eq!((s.calls_total, s.failures_total), (3, 3));
    }

    #[test]
    fn a_success_resets_the_count() {
        let (b, _) = breaker(3, 30_000);
        fail_times(&b, 2);
        go(&b).succeeded();
        assert_eq!(b.status().consecutive_failures, 0);
        fail_times(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed, "2 in a row, not 4");
        fail_times(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        let s = b.status();
        assert_eq!((s.calls_total, s.failures_total), (6, 5));
    }

    #[test]
    fn short_circuits_while_open_with_the_rest_of_the_cooldown() {
        let (b, clock) = breaker(1, 30_000);
        fail_times(&b, 1);
        assert_eq!(refused(&b), 30);
        clock.advance(10_500);
        assert_eq!(refused(&b), 20, "19.5 s left, rounded up");
        assert_eq!(b.retry_after_s(), 20);
        clock.advance(19_499);
        assert_eq!(refused(&b), 1, "1 ms left is still at least 1 s");
        let s = b.status();
        assert_eq!(s.breaker, BreakerState::Open);
        assert_eq!((s.calls_total, s.short_circuited_total), (1, 3));
    }

    #[test]
    fn a_refused_retry_is_not_counted_as_short_circuited() {
        let (b, _) = breaker(1, 30_000);
        go(&b).failed();
        match b.admit_retry() {
            Admission::Go(_) => panic!("admitted while open"),
            Admission::ShortCircuited { retry_after_s } => assert_eq!(retry_after_s, 30),
        }
        assert_eq!(b.status().short_circuited_total, 0);
        refused(&b);
        assert_eq!(b.status().short_circuited_total, 1);
    }

    #[test]
    fn one_trial_after_the_cooldown_and_others_are_short_circuited() {
        let (b, clock) = breaker(2, 1_000);
        fail_times(&b, 2);
        clock.advance(1_000);
        let trial = go(&b);
        assert!(trial.is_trial());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A second caller while the trial is in flight.
        assert_eq!(refused(&b), 1);
        assert_eq!(refused(&b), 1);
        trial.succeeded();
        let s = b.status();
        assert_eq!(s.breaker, BreakerState::Closed);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.short_circuited_total, 2);
        // Closed again: calls go through and are not trials.
        let call = go(&b);
        assert!(!call.is_trial());
        call.succeeded();
    }

    #[test]
    fn a_failed_trial_reopens_for_another_cooldown() {
        let (b, clock) = breaker(2, 1_000);
        fail_times(&b, 2);
        clock.advance(1_500);
        let trial = go(&b);
        assert!(trial.is_trial());
        trial.failed();
        let s = b.status();
        assert_eq!(s.breaker, BreakerState::Open);
        assert_eq!(s.opened_at_ms, Some(T0 + 1_500), "opened again now");
        assert_eq!(s.consecutive_failures, 3);
        assert_eq!(refused(&b), 1);
        clock.advance(999);
        refused(&b);
        clock.advance(1);
        let trial = go(&b);
        assert!(trial.is_trial());
        trial.succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn an_abandoned_trial_counts_as_a_failure() {
        let (b, clock) = breaker(1, 1_000);
        fail_times(&b, 1);
        clock.advance(1_000);
        drop(go(&b));
        assert_eq!(b.state(), BreakerState::Open, "not stuck half-open");
        assert_eq!(b.status().failures_total, 2);
        clock.advance(1_000);
        go(&b).succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn late_outcomes_do_not_decide_an_open_breaker() {
        let (b, clock) = breaker(1, 1_000);
        let slow_ok = go(&b);
        let slow_failed = go(&b);
        fail_times(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        slow_ok.succeeded();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "a late success does not close it"
        );
        slow_failed.failed();
        let s = b.status();
        assert_eq!(s.breaker, BreakerState::Open);
        assert_eq!(
            s.opened_at_ms,
            Some(T0),
            "a late failure does not extend the cooldown"
        );
        assert_eq!(s.consecutive_failures, 2);
        clock.advance(1_000);
        let trial = go(&b);
        assert!(trial.is_trial());
        trial.succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn concurrent_callers_get_exactly_one_trial() {
        let (b, clock) = breaker(1, 1_000);
        fail_times(&b, 1);
        clock.advance(1_000);
        let b = Arc::new(b);
        let admitted = std::sync::atomic::AtomicU32::new(0);
        let gate = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    gate.wait();
                    if let Admission::Go(call) = b.admit() {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Keep the trial in flight until every thread has asked.
                        std::mem::forget(call);
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 1);
        let s = b.status();
        assert_eq!(s.breaker, BreakerState::HalfOpen);
        assert_eq!(s.short_circuited_total, 7);
    }
}
