//! Token buckets per key (a caller's `sub`, a client IP) with a bounded number of keys.
//!
//! The buckets are `governor`'s (GCRA: one timestamp per key, no timer). Its own keyed
//! stores (a `DashMap`, a `HashMap`) grow with every new key until someone calls
//! `retain_recent`, and even that keeps every key whose bucket is not yet full again: a flood
//! of distinct keys inside one refill period would grow them without bound. So the keys live
//! here, in [`LruStore`], a `governor` state store on an LRU table of at most
//! `--rate-limit-keys` entries: a new key beyond the bound evicts the key idle the longest.
//!
//! What eviction gives away: an evicted key comes back with a full bucket. Only a caller
//! whose key went unused while `--rate-limit-keys` other keys were used after it can gain
//! from that, and with the default bound (a million keys) that takes a flood of a million
//! distinct senders between two of its requests, which the per-IP limit is there to stop.
//!
//! Keys are hashed to 64 bits (SipHash with a key drawn at start-up) so an entry has a fixed
//! size whatever the length of a `sub`: about 80 bytes (measured: 83 bytes a key with a
//! million keys), so the default bound is about 80 MB per limiter at worst. Two keys colliding share a bucket; among a million keys that
//! happens with a probability of about 3 in 100 million.

use std::hash::{BuildHasher, Hash, RandomState};
use std::num::{NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use holdfast_engine::Clock;
use lru::LruCache;

/// Default of `--rate-limit-keys`: the most keys each limiter remembers.
pub const RATE_LIMIT_KEYS_DEFAULT: usize = 1_000_000;

/// A rate from the command line: `10/s`, `600/m`, `1000/h`. The bucket holds as many tokens
/// as the rate's count (a burst of one period's worth), refilled evenly over the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Per,
}

/// The period of a [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Rate {
    /// `count` per second.
    pub fn per_second(count: NonZeroU32) -> Rate {
        Rate {
            count,
            per: Per::Second,
        }
    }

    pub fn quota(self) -> Quota {
        match self.per {
            Per::Second => Quota::per_second(self.count),
            Per::Minute => Quota::per_minute(self.count),
            Per::Hour => Quota::per_hour(self.count),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?}: expected a rate such as 10/s, 600/m or 1000/h");
        let (count, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let count =
            NonZeroU32::new(count).ok_or_else(|| format!("{s:?}: the rate must be 1 or more"))?;
        let per = match per.trim() {
            "s" => Per::Second,
            "m" => Per::Minute,
            "h" => Per::Hour,
            _ => return Err(bad()),
        };
        Ok(Rate { count, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = match self.per {
            Per::Second => "s",
            Per::Minute => "m",
            Per::Hour => "h",
        };
        write!(f, "{}/{per}", self.count)
    }
}

/// The node's clock as `governor` reads time: milliseconds since the epoch as a `Duration`.
/// One clock for the whole node, so a test that drives a `ManualClock` drives the buckets
/// too.
#[derive(Clone)]
pub struct NodeTime(pub Arc<dyn Clock>);

impl GovernorClock for NodeTime {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

/// A `governor` state store keeping at most `capacity` keys, the least recently used
/// evicted first. One mutex: an update is a hash lookup and a list splice (well under a
/// microsecond), against a booking's millisecond fsync.
pub struct LruStore {
    keys: Mutex<LruCache<u64, u64>>,
    capacity: NonZeroUsize,
}

impl LruStore {
    pub fn new(capacity: NonZeroUsize) -> LruStore {
        // Unbounded table, bounded by hand below: `LruCache::new` would allocate room for
        // every key up front (tens of MB for the default bound) on a node that may never
        // see a flood.
        LruStore {
            keys: Mutex::new(LruCache::unbounded()),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StateStore for LruStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        // `get` marks the key used, refused or not: a caller hammering its limit is not idle.
        let previous = keys.get(key).map(|&nanos| Nanos::from(nanos));
        let (result, next) = f(previous)?;
        if previous.is_none() && keys.len() >= self.capacity.get() {
            keys.pop_lru();
        }
        keys.put(*key, next.as_u64());
        Ok(result)
    }
}

/// A refusal: retry after this many whole seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u32);

impl RetryAfter {
    /// Whole seconds, rounded up, at least 1: a client told `0` would retry at once and be
    /// refused again.
    pub fn from_wait(wait: Duration) -> RetryAfter {
        let seconds = wait.as_millis().div_ceil(1000).max(1);
        RetryAfter(u32::try_from(seconds).unwrap_or(u32::MAX))
    }
}

/// Token buckets of one [`Rate`], one per key, at most `keys` of them.
pub struct KeyedLimiter {
    limiter: RateLimiter<u64, LruStore, NodeTime, NoOpMiddleware<Duration>>,
    hasher: RandomState,
    rate: Rate,
}

impl KeyedLimiter {
    pub fn new(rate: Rate, keys: NonZeroUsize, clock: Arc<dyn Clock>) -> KeyedLimiter {
        KeyedLimiter {
            limiter: RateLimiter::new(rate.quota(), LruStore::new(keys), NodeTime(clock)),
            hasher: RandomState::new(),
            rate,
        }
    }

    /// Takes a token from `key`'s bucket, or says when the next one will be there.
    pub fn check<K: Hash + ?Sized>(&self, key: &K) -> Result<(), RetryAfter> {
        let hashed = self.hasher.hash_one(key);
        self.limiter.check_key(&hashed).map_err(|not_until| {
            let now = self.limiter.clock().now();
            RetryAfter::from_wait(not_until.wait_time_from(now))
        })
    }

    /// Keys remembered now (at most the bound).
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }
}

/// What `governor` needs to count the keys (`RateLimiter::len`) and to drop the keys whose
/// bucket is full again (`RateLimiter::retain_recent`).
impl ShrinkableKeyedStateStore<u64> for LruStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let stale: Vec<u64> = keys
            .iter()
            .filter(|(_, &tat)| tat <= drop_below.as_u64())
            .map(|(&key, _)| key)
            .collect();
        for key in stale {
            keys.pop(&key);
        }
    }

    fn len(&self) -> usize {
        LruStore::len(self)
    }

    fn is_empty(&self) -> bool {
        LruStore::is_empty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_engine::clock::ManualClock;

    fn limiter(rate: &str, keys: usize) -> (KeyedLimiter, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let limiter = KeyedLimiter::new(
            rate.parse().unwrap(),
            NonZeroUsize::new(keys).unwrap(),
            clock.clone(),
        );
        (limiter, clock)
    }

    #[test]
    fn rates_parse() {
        assert_eq!("10/s".parse::<Rate>().unwrap().to_string(), "10/s");
        assert_eq!("600/m".parse::<Rate>().unwrap().per, Per::Minute);
        assert_eq!("3/h".parse::<Rate>().unwrap().count.get(), 3);
        for bad in ["", "10", "0/s", "-1/s", "10/d", "x/s", "10/"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_burst_of_the_rate_then_refusals_with_the_wait() {
        let (limiter, clock) = limiter("4/s", 100);
        for _ in 0..4 {
            assert_eq!(limiter.check("alice"), Ok(()));
        }
        // The next token comes 250 ms later: Retry-After rounds up to 1 s.
        assert_eq!(limiter.check("alice"), Err(RetryAfter(1)));
        assert_eq!(
            limiter.check("bob"),
            Ok(()),
            "another key has its own bucket"
        );
        clock.advance(250);
        assert_eq!(limiter.check("alice"), Ok(()));
        assert_eq!(limiter.check("alice"), Err(RetryAfter(1)));
    }

    #[test]
    fn a_slow_rate_says_how_many_seconds() {
        let (limiter, _clock) = limiter("2/m", 100);
        assert_eq!(limiter.check("k"), Ok(()));
        assert_eq!(limiter.check("k"), Ok(()));
        // One token every 30 s.
        assert_eq!(limiter.check("k"), Err(RetryAfter(30)));
    }

    #[test]
    fn keys_stay_within_the_bound_oldest_idle_evicted() {
        let (limiter, _clock) = limiter("1/s", 3);
        for key in ["a", "b", "c"] {
            assert_eq!(limiter.check(key), Ok(()));
        }
        assert_eq!(limiter.check("a"), Err(RetryAfter(1)), "a is used again");
        // d evicts b, the key idle the longest.
        assert_eq!(limiter.check("d"), Ok(()));
        assert_eq!(limiter.keys(), 3);
        assert_eq!(limiter.check("a"), Err(RetryAfter(1)), "a was kept");
        assert_eq!(limiter.check("b"), Ok(()), "b came back with a full bucket");
        for n in 0..10_000 {
            let _ = limiter.check(&n);
        }
        assert_eq!(limiter.keys(), 3);
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(RetryAfter::from_wait(Duration::ZERO), RetryAfter(1));
        assert_eq!(
            RetryAfter::from_wait(Duration::from_millis(1)),
            RetryAfter(1)
        );
        assert_eq!(
            RetryAfter::from_wait(Duration::from_millis(1001)),
            RetryAfter(2)
        );
    }
}
