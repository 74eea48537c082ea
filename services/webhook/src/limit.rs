//! Per-source rate limit: a token bucket per source key, refilled at a steady rate up to a burst.
//!
//! It runs before authentication, so callers choose the keys: the map holds at most
//! [`MAX_TRACKED_KEYS`] buckets. When it is full, buckets that have refilled (they carry no state)
//! are dropped; if none has, a new key waits like a limited one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pagestream_events::SourceKey;

/// Buckets kept at most.
pub const MAX_TRACKED_KEYS: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<SourceKey, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refreshed: Instant,
}

impl RateLimiter {
    /// `per_second` must be positive and `burst` at least 1 (the configuration checks both).
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `source`, or says how long until one is available.
    pub fn acquire(&self, source: &SourceKey) -> Result<(), Duration> {
        self.acquire_at(source, Instant::now())
    }

    fn acquire_at(&self, source: &SourceKey, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another request panicked mid-update; the buckets stay usable.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(source) {
            buckets.retain(|_, bucket| self.refilled(bucket, now) < self.burst);
            if buckets.len() >= MAX_TRACKED_KEYS {
                return Err(Duration::from_secs_f64(1.0 / self.per_second));
            }
        }
        let bucket = buckets.entry(source.clone()).or_insert(Bucket {
            tokens: self.burst,
            refreshed: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.refreshed = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now
            .saturating_duration_since(bucket.refreshed)
            .as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    /// Forgets a removed source's bucket.
    pub fn forget(&self, source: &SourceKey) {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = RateLimiter::new(2.0, 3);
        let eng = SourceKey::new("eng").expect("key");
        let ops = SourceKey::new("ops").expect("key");
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.acquire_at(&eng, start).is_ok());
        }
        let wait = limiter.acquire_at(&eng, start).expect_err("limited");
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Other sources have buckets of their own.
        assert!(limiter.acquire_at(&ops, start).is_ok());
        // Half a second refills one token at 2/s, and no more.
        let later = start + Duration::from_millis(500);
        assert!(limiter.acquire_at(&eng, later).is_ok());
        assert!(limiter.acquire_at(&eng, later).is_err());
        // A long pause refills up to the burst only.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.acquire_at(&eng, much_later).is_ok());
        }
        assert!(limiter.acquire_at(&eng, much_later).is_err());
    }

    #[test]
    fn callers_cannot_grow_the_map_without_bound() {
        let limiter = RateLimiter::new(1.0, 2);
        let start = Instant::now();
        let key = |i: usize| SourceKey::new(format!("k{i}")).expect("key");
        // Every key spends a token, so none has refilled yet.
        for i in 0..MAX_TRACKED_KEYS {
            assert!(limiter.acquire_at(&key(i), start).is_ok());
        }
        assert!(limiter.acquire_at(&key(MAX_TRACKED_KEYS), start).is_err());
        // Known keys keep their buckets meanwhile.
        assert!(limiter.acquire_at(&key(0), start).is_ok());
        assert!(limiter.acquire_at(&key(0), start).is_err());
        // Once buckets have refilled they are dropped to make room.
        let later = start + Duration::from_secs(5);
        assert!(limiter.acquire_at(&key(MAX_TRACKED_KEYS), later).is_ok());
        let tracked = limiter.buckets.lock().expect("buckets").len();
        assert_eq!(tracked, 1);
    }
}
