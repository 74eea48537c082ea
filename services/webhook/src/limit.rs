//! Per-source rate limit: a token bucket per source, refilled at a steady rate up to a burst.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pagestream_events::SourceKey;

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
        let bucket = buckets.entry(source.clone()).or_insert(Bucket {
            tokens: self.burst,
            refreshed: now,
        });
        let elapsed = now
            .saturating_duration_since(bucket.refreshed)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
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
}
