//! One retry policy for every outbound HTTP client (Confluence, the embedding provider): how
//! many attempts, how long to wait between them (what the server asked, or capped exponential
//! backoff with jitter) and how the server says it (`Retry-After` and the rate-limit headers).
//! [`Backoff`] is the one capped exponential backoff, also of the loops that wait out an outage
//! (the bus's start-up, the stages' retries, the indexer's and the api's followers).

use std::future::Future;
use std::time::Duration;

use rand::Rng as _;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Retries of one request after a transient failure (429, 5xx, timeouts, transport errors).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (default 4: the first try and 3 retries).
    pub max_attempts: u32,
    /// Backoff before the first retry when the server gave no wait; doubles per retry (default
    /// 1 s, so 1 s, 2 s, 4 s), with ±20 % jitter.
    pub initial_backoff: Duration,
    /// Cap of the exponential backoff (default 30 s).
    pub max_backoff: Duration,
    /// Cap of a server's `Retry-After` (default 60 s); an absurd value waits this long.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Capped exponential backoff: `initial`, doubling per failure, never over `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// The wait after failure number `failure` (from 1), without jitter.
    pub fn nth(&self, failure: u32) -> Duration {
        let exponent = failure.saturating_sub(1).min(20);
        self.initial.saturating_mul(1u32 << exponent).min(self.max)
    }

    /// The wait after one more failure of a loop that waits out an outage.
    pub fn next_wait(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.nth(self.failures)
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What one attempt gave.
pub enum Attempt<T, E> {
    /// An answer to keep, success or a failure that a retry cannot change.
    Done(T),
    /// A transient failure, with the wait the server asked for, if it did.
    Retry {
        error: E,
        server_wait: Option<Duration>,
    },
}

/// The last transient failure, once every attempt is spent.
#[derive(Debug)]
pub struct Exhausted<E> {
    pub error: E,
    pub attempts: u32,
}

impl RetryPolicy {
    /// Runs `attempt` (given its number, from 1) until it is done or the attempts are spent,
    /// sleeping [`RetryPolicy::wait_before_retry`] between attempts; `on_retry` sees each
    /// failure and the wait before it is retried (to log and count it).
    pub async fn run<T, E, F, Fut>(
        &self,
        mut attempt: F,
        mut on_retry: impl FnMut(u32, &E, Duration),
    ) -> Result<T, Exhausted<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let mut number: u32 = 0;
        loop {
            number += 1;
            let (error, server_wait) = match attempt(number).await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Retry { error, server_wait } => (error, server_wait),
            };
            if number >= self.max_attempts.max(1) {
                return Err(Exhausted {
                    error,
                    attempts: number,
                });
            }
            let wait = self.wait_before_retry(number, server_wait);
            on_retry(number, &error, wait);
            tokio::time::sleep(wait).await;
        }
    }

    /// The wait after failed attempt number `attempt` (from 1).
    pub fn wait_before_retry(&self, attempt: u32, server_wait: Option<Duration>) -> Duration {
        let mut rng = rand::rng();
        match server_wait {
            // Wait at least what the server asked, plus a little jitter so that clients released
            // together do not return together, never more than the cap.
            Some(asked) => {
                let jitter = asked.mul_f64(rng.random_range(0.0..0.1));
                asked.saturating_add(jitter).min(self.max_retry_after)
            }
            None => Backoff::new(self.initial_backoff, self.max_backoff)
                .nth(attempt)
                .mul_f64(rng.random_range(0.8..1.2)),
        }
    }
}

/// How long the server asks a client to wait, from the first header that says: `Retry-After`
/// (seconds or an HTTP date); `X-RateLimit-Reset` (an ISO 8601 instant; Atlassian's gateway sends
/// it on 429s that lack `Retry-After`); then the `t=` (seconds to reset) of the draft-standard
/// `Beta-RateLimit` / `RateLimit` headers of the points-based quotas, read loosely. None: back off.
pub fn server_wait(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers)
        .or_else(|| rate_limit_reset(headers))
        .or_else(|| rate_limit_t(headers))
}

fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("x-ratelimit-reset")?.to_str().ok()?.trim();
    let at = chrono::DateTime::parse_from_rfc3339(value).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn rate_limit_t(headers: &HeaderMap) -> Option<Duration> {
    ["beta-ratelimit", "ratelimit"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .flat_map(|value| value.split([';', ',']))
        .filter_map(|part| part.trim().strip_prefix("t="))
        .filter_map(|seconds| seconds.trim().parse::<u64>().ok())
        .max()
        .map(Duration::from_secs)
}

/// `Retry-After` as seconds (integer or decimal) or an HTTP date; anything else is ignored.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        // Beyond what a Duration holds is still "a very long time": the caller clamps it.
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_a_server_wait_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            max_retry_after: Duration::from_secs(2),
        };
        let within = |wait: Duration, nominal_ms: f64| {
            let ms = wait.as_secs_f64() * 1000.0;
            assert!(
                ms >= nominal_ms * 0.8 && ms <= nominal_ms * 1.2,
                "{ms} vs {nominal_ms}"
            );
        };
        within(policy.wait_before_retry(1, None), 100.0);
        within(policy.wait_before_retry(2, None), 200.0);
        within(policy.wait_before_retry(3, None), 350.0);
        within(policy.wait_before_retry(60, None), 350.0);
        let asked = policy.wait_before_retry(1, Some(Duration::from_secs(1)));
        assert!(asked >= Duration::from_secs(1) && asked <= Duration::from_millis(1100));
        assert_eq!(
            policy.wait_before_retry(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn an_outage_loop_s_backoff_doubles_to_its_cap_and_starts_over_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let waits: Vec<_> = (0..4).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(250));
        assert_eq!(backoff.nth(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn run_stops_when_done_or_when_the_attempts_are_spent() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_retry_after: Duration::from_millis(2),
        };
        let mut retried = Vec::new();
        let done = policy
            .run(
                |attempt| async move {
                    if attempt < 2 {
                        Attempt::Retry {
                            error: format!("failure {attempt}"),
                            server_wait: None,
                        }
                    } else {
                        Attempt::Done(attempt)
                    }
                },
                |attempt, error: &String, _| retried.push((attempt, error.clone())),
            )
            .await;
        assert_eq!(done.ok(), Some(2));
        assert_eq!(retried, [(1, "failure 1".to_owned())]);

        let spent = policy
            .run(
                |attempt| async move {
                    Attempt::<(), _>::Retry {
                        error: attempt,
                        server_wait: Some(Duration::from_millis(1)),
                    }
                },
                |_, _, _| {},
            )
            .await
            .expect_err("never done");
        assert_eq!((spent.error, spent.attempts), (3, 3));
    }

    #[test]
    fn without_retry_after_the_reset_instant_then_the_quota_reset_says_how_long() {
        let mut headers = HeaderMap::new();
        let reset = chrono::Utc::now() + chrono::Duration::seconds(30);
        headers.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&reset.to_rfc3339()).expect("header"),
        );
        headers.insert(
            "beta-ratelimit",
            HeaderValue::from_static("\"global\";r=0;t=5"),
        );
        let wait = server_wait(&headers).expect("a wait");
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.remove("x-ratelimit-reset");
        assert_eq!(server_wait(&headers), Some(Duration::from_secs(5)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(server_wait(&headers), Some(Duration::from_secs(2)));
        let mut junk = HeaderMap::new();
        junk.insert("x-ratelimit-reset", HeaderValue::from_static("soon"));
        junk.insert("beta-ratelimit", HeaderValue::from_static("r=0"));
        assert_eq!(server_wait(&junk), None, "backoff with jitter then");
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1e300"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::MAX));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(
            parse_retry_after(&headers),
            Some(Duration::from_millis(500))
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&headers), Some(Duration::ZERO));
        for junk in ["-3", "soon", "NaN", "inf"] {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(junk));
            assert_eq!(parse_retry_after(&headers), None, "{junk}");
        }
    }
}
