//! Counters of everything the client did, readable as a [`ClientStats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a client has done so far. Take one snapshot before a sync run and one after, and report
/// `after.since(&before)` (or use [`crate::ConfluenceClient::with_fresh_stats`] per run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (every attempt counts).
    pub requests: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// 429 and 503 responses received.
    pub rate_limited: u64,
    /// Other 5xx responses received.
    pub server_errors: u64,
    /// Connection, TLS and timeout failures.
    pub transport_errors: u64,
    /// Responses that carried `X-RateLimit-NearLimit: true`.
    pub near_limit_signals: u64,
    /// Time slept before retries (`Retry-After` or backoff).
    pub retry_wait: Duration,
    /// Time spent waiting for the client's own rate limit.
    pub throttle_wait: Duration,
    /// Response body bytes received.
    pub bytes_received: u64,
}

impl ClientStats {
    /// Every wait, retries and pacing together: what a sync run reports as time waited.
    pub fn waited(&self) -> Duration {
        self.retry_wait + self.throttle_wait
    }

    /// The difference to an earlier snapshot of the same client.
    pub fn since(&self, earlier: &ClientStats) -> ClientStats {
        ClientStats {
            requests: self.requests.saturating_sub(earlier.requests),
            retries: self.retries.saturating_sub(earlier.retries),
            rate_limited: self.rate_limited.saturating_sub(earlier.rate_limited),
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            transport_errors: self
                .transport_errors
                .saturating_sub(earlier.transport_errors),
            near_limit_signals: self
                .near_limit_signals
                .saturating_sub(earlier.near_limit_signals),
            retry_wait: self.retry_wait.saturating_sub(earlier.retry_wait),
            throttle_wait: self.throttle_wait.saturating_sub(earlier.throttle_wait),
            bytes_received: self.bytes_received.saturating_sub(earlier.bytes_received),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub server_errors: AtomicU64,
    pub transport_errors: AtomicU64,
    pub near_limit_signals: AtomicU64,
    retry_wait_us: AtomicU64,
    throttle_wait_us: AtomicU64,
    pub bytes_received: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_retry_wait(&self, wait: Duration) {
        self.retry_wait_us
            .fetch_add(micros(wait), Ordering::Relaxed);
    }

    pub fn add_throttle_wait(&self, wait: Duration) {
        self.throttle_wait_us
            .fetch_add(micros(wait), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ClientStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            requests: load(&self.requests),
            retries: load(&self.retries),
            rate_limited: load(&self.rate_limited),
            server_errors: load(&self.server_errors),
            transport_errors: load(&self.transport_errors),
            near_limit_signals: load(&self.near_limit_signals),
            retry_wait: Duration::from_micros(load(&self.retry_wait_us)),
            throttle_wait: Duration::from_micros(load(&self.throttle_wait_us)),
            bytes_received: load(&self.bytes_received),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
