//! Sending a request: client-side pacing and concurrency, retries of GETs with `Retry-After` or
//! backoff, one attempt for anything that changes the site, bounded body reads, error
//! classification and scrubbing of anything the server echoes back.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue,
};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use crate::stats::Counters;
use crate::{ClientConfig, ConfluenceError, RateLimits, RetryPolicy};

/// Longest server-provided message kept in an error.
const MAX_ERROR_MESSAGE: usize = 300;
/// Largest error body read to extract a message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Whether a request may wait for others: a webhook's page is urgent, a sync run's pages and the
/// pages a change sends through again are background work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    Urgent,
    Background,
}

/// Who sends a request: whose statistics count it, at which priority.
#[derive(Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub counters: &'a Counters,
    pub priority: Priority,
}

/// A successful response.
pub(crate) struct Fetched {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Where a download redirected to (only downloads follow redirects, see [`Transport::download`]).
    pub location: Option<Url>,
}

/// What a request is for: API calls carry the credentials and never follow a redirect; a file
/// download may be redirected (Cloud sends it to its media service, with a token in the URL).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Request {
    Api,
    Download { credentials: bool },
}

/// A request that changes the site: its method and JSON body, and strings besides the
/// credentials that must not survive in an error (a secret the body carries).
pub(crate) struct Change<'a> {
    pub method: Method,
    pub body: Option<Vec<u8>>,
    pub secrets: &'a [&'a str],
}

/// Shared by a client and all its clones (and fresh-stats views).
pub(crate) struct Transport {
    http: reqwest::Client,
    pub base: Url,
    authorization: HeaderValue,
    secret_forms: Vec<String>,
    retry: RetryPolicy,
    limits: RateLimits,
    pub max_response_bytes: usize,
    pub bulk_batch_size: usize,
    concurrency: Semaphore,
    pacing: Mutex<Pacing>,
}

struct Pacing {
    /// When the next request may start at the rate; none before the first.
    next_slot: Option<Instant>,
    slow_until: Option<Instant>,
}

impl Transport {
    pub fn new(config: &ClientConfig) -> Result<Self, ConfluenceError> {
        let base = config.validated_base_url()?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            // A redirect could carry the credentials elsewhere; Confluence APIs do not need them.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(base.scheme() == "https")
            .build()
            .map_err(|e| ConfluenceError::Config(format!("http client: {e}")))?;
        Ok(Self {
            http,
            base,
            authorization: config.auth.header_value()?,
            secret_forms: config.auth.secret_forms(),
            retry: config.retry.clone(),
            limits: config.limits.clone(),
            max_response_bytes: config.max_response_bytes,
            bulk_batch_size: config.bulk_batch_size,
            concurrency: Semaphore::new(config.limits.max_concurrent),
            pacing: Mutex::new(Pacing {
                next_slot: None,
                slow_until: None,
            }),
        })
    }

    /// Replaces every form of the credentials in text that came from the server.
    pub fn scrub(&self, text: &str) -> String {
        self.scrub_also(text, &[])
    }

    /// [`Self::scrub`], and `also` (secrets a request carried besides the credentials).
    pub fn scrub_also(&self, text: &str, also: &[&str]) -> String {
        let mut clean: String = text.chars().take(MAX_ERROR_MESSAGE).collect();
        let secrets = self
            .secret_forms
            .iter()
            .map(String::as_str)
            .chain(also.iter().copied().filter(|s| !s.is_empty()));
        // Scrub the untruncated text too: a secret cut in half by truncation must not survive.
        for secret in secrets {
            if text.contains(secret) {
                clean = clean.replace(secret, "[redacted]");
                for cut in (1..secret.len()).rev() {
                    if let Some(prefix) = secret.get(..cut)
                        && clean.ends_with(prefix)
                    {
                        clean.truncate(clean.len() - prefix.len());
                        clean.push_str("[redacted]");
                        break;
                    }
                }
            }
        }
        clean
    }

    /// `GET url`, with pacing, retries and a bounded body.
    pub async fn get(&self, url: &Url, caller: Caller<'_>) -> Result<Fetched, ConfluenceError> {
        self.send(url, caller, self.max_response_bytes, Request::Api)
            .await
    }

    /// A request that changes the site (`POST`, `DELETE`), paced but sent once: after a timeout
    /// or a 5xx it may have taken effect, so the caller lists what is there instead of sending it
    /// again.
    pub async fn send_once(
        &self,
        url: &Url,
        change: &Change<'_>,
        caller: Caller<'_>,
    ) -> Result<Fetched, ConfluenceError> {
        let endpoint = format!("{} {}", change.method, url.path());
        self.pace(caller).await;
        let counters = caller.counters;
        let Ok(_permit) = self.concurrency.acquire().await else {
            return Err(ConfluenceError::Config(
                "client concurrency limiter closed".into(),
            ));
        };
        Counters::bump(&counters.requests);
        tracing::debug!(endpoint = %endpoint, "confluence request");
        let sent = self
            .attempt(
                url,
                &endpoint,
                counters,
                self.max_response_bytes,
                (Request::Api, Some(change)),
            )
            .await;
        match sent {
            Attempt::Done(done) => done,
            Attempt::Retry { error, .. } => Err(error.into_error(endpoint, 1)),
        }
    }

    /// Downloads a file of at most `limit` bytes: a redirect is followed once, without the
    /// credentials (they must not leave the site; the media service's URL carries its own token).
    pub async fn download(
        &self,
        url: &Url,
        caller: Caller<'_>,
        limit: usize,
    ) -> Result<Vec<u8>, ConfluenceError> {
        let fetched = self
            .send(url, caller, limit, Request::Download { credentials: true })
            .await?;
        match fetched.location {
            None => Ok(fetched.body),
            Some(location) => Ok(self
                .send(
                    &location,
                    caller,
                    limit,
                    Request::Download { credentials: false },
                )
                .await?
                .body),
        }
    }

    async fn send(
        &self,
        url: &Url,
        caller: Caller<'_>,
        limit: usize,
        request: Request,
    ) -> Result<Fetched, ConfluenceError> {
        let counters = caller.counters;
        let endpoint = format!("GET {}", url.path());
        let endpoint_ref = &endpoint;
        let outcome = self
            .retry
            .run(
                |attempt| async move {
                    self.pace(caller).await;
                    let Ok(_permit) = self.concurrency.acquire().await else {
                        return Attempt::Done(Err(ConfluenceError::Config(
                            "client concurrency limiter closed".into(),
                        )));
                    };
                    Counters::bump(&counters.requests);
                    tracing::debug!(endpoint = %endpoint_ref, attempt, "confluence request");
                    self.attempt(url, endpoint_ref, counters, limit, (request, None))
                        .await
                },
                |attempt, retry: &Retry, wait| {
                    Counters::bump(&counters.retries);
                    counters.add_retry_wait(wait);
                    tracing::warn!(
                        endpoint = %endpoint_ref,
                        attempt,
                        reason = retry.reason(),
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "confluence request will be retried"
                    );
                },
            )
            .await;
        outcome.unwrap_or_else(|spent| Err(spent.error.into_error(endpoint, spent.attempts)))
    }

    async fn attempt(
        &self,
        url: &Url,
        endpoint: &str,
        counters: &Counters,
        limit: usize,
        (request, change): (Request, Option<&Change<'_>>),
    ) -> Attempt {
        let mut builder = match change {
            None => self.http.get(url.clone()),
            Some(change) => {
                let builder = self.http.request(change.method.clone(), url.clone());
                match &change.body {
                    Some(body) => builder
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone()),
                    None => builder,
                }
            }
        };
        builder = match request {
            Request::Api => builder
                .header(AUTHORIZATION, self.authorization.clone())
                .header(ACCEPT, "application/json"),
            Request::Download { credentials: true } => {
                builder.header(AUTHORIZATION, self.authorization.clone())
            }
            Request::Download { credentials: false } => builder,
        };
        let sent = builder.send().await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                Counters::bump(&counters.transport_errors);
                return again(Retry::Transport(error.without_url()));
            }
        };
        if near_limit(response.headers()) {
            Counters::bump(&counters.near_limit_signals);
            self.slow_down().await;
        }
        let status = response.status();
        if status.is_success() {
            let headers = response.headers().clone();
            return match self.read_body(response, limit, endpoint).await {
                Ok(body) => {
                    counters
                        .bytes_received
                        .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    Attempt::Done(Ok(Fetched {
                        headers,
                        body,
                        location: None,
                    }))
                }
                Err(BodyError::TooLarge(error)) => Attempt::Done(Err(error)),
                Err(BodyError::Transport(error)) => {
                    Counters::bump(&counters.transport_errors);
                    again(Retry::Transport(error))
                }
            };
        }
        let endpoint = endpoint.to_owned();
        match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Counters::bump(&counters.rate_limited);
                let retry_after = pagestream_retry::server_wait(response.headers());
                if let Some(reason) = response
                    .headers()
                    .get("ratelimit-reason")
                    .and_then(|v| v.to_str().ok())
                {
                    tracing::info!(endpoint = %endpoint, reason = %reason.chars().take(100).collect::<String>(), "confluence rate limit");
                }
                again(Retry::RateLimited {
                    status: status.as_u16(),
                    retry_after,
                })
            }
            s if s.is_server_error() => {
                Counters::bump(&counters.server_errors);
                let retry_after = pagestream_retry::server_wait(response.headers());
                again(Retry::Server {
                    status: s.as_u16(),
                    retry_after,
                })
            }
            StatusCode::UNAUTHORIZED => {
                Attempt::Done(Err(ConfluenceError::Unauthorized { endpoint }))
            }
            StatusCode::FORBIDDEN => Attempt::Done(Err(ConfluenceError::Forbidden { endpoint })),
            StatusCode::NOT_FOUND => Attempt::Done(Err(ConfluenceError::NotFound { endpoint })),
            s if s.is_redirection() && request == (Request::Download { credentials: true }) => {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| url.join(v).ok());
                match location {
                    Some(location) => Attempt::Done(Ok(Fetched {
                        headers: response.headers().clone(),
                        body: Vec::new(),
                        location: Some(location),
                    })),
                    None => Attempt::Done(Err(ConfluenceError::InvalidResponse {
                        endpoint,
                        reason: "redirect without a location".into(),
                    })),
                }
            }
            s if s.is_redirection() => Attempt::Done(Err(ConfluenceError::InvalidResponse {
                endpoint,
                reason: format!("unexpected redirect ({})", s.as_u16()),
            })),
            s => {
                let body = self
                    .read_body(response, MAX_ERROR_BODY, &endpoint)
                    .await
                    .unwrap_or_default();
                let secrets = change.map_or(&[][..], |change| change.secrets);
                Attempt::Done(Err(ConfluenceError::Rejected {
                    endpoint,
                    status: s.as_u16(),
                    message: self.scrub_also(&error_message(&body), secrets),
                }))
            }
        }
    }

    async fn read_body(
        &self,
        mut response: reqwest::Response,
        limit: usize,
        endpoint: &str,
    ) -> Result<Vec<u8>, BodyError> {
        let too_large = || {
            BodyError::TooLarge(ConfluenceError::ResponseTooLarge {
                endpoint: endpoint.to_owned(),
                limit,
            })
        };
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(declared.map_or(8 * 1024, |l| l as usize));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(error) => return Err(BodyError::Transport(error.without_url())),
            }
        }
    }

    /// Waits for this request's slot under the client's rate limit.
    async fn pace(&self, caller: Caller<'_>) {
        let (spacing, slowed) = {
            let pacing = self.pacing.lock().await;
            let slowed = pacing
                .slow_until
                .is_some_and(|until| Instant::now() < until);
            (self.spacing(slowed), slowed)
        };
        let Some(spacing) = spacing else { return };
        // A client that kept under its rate may start up to `burst` requests at once (a hint's
        // handful: the page, its comments, attachments and includes); on average the rate holds
        // (the generic cell rate algorithm). Slowed down, every request waits its turn.
        let burst = if slowed { 1 } else { self.limits.burst.max(1) };
        let mut waited = Duration::ZERO;
        loop {
            let (start, taken) = {
                let mut pacing = self.pacing.lock().await;
                let now = Instant::now();
                let earliest = now.checked_sub(spacing * (burst - 1)).unwrap_or(now);
                let slot = pacing.next_slot.map_or(earliest, |next| next.max(earliest));
                // Background work never reserves a slot ahead, and goes only when it leaves the
                // whole burst to urgent work: an urgent request that comes meanwhile starts at
                // once (a webhook's page with its comments and includes, under a backlog of
                // sync or re-read requests), and the rate still holds for both together.
                let start = match caller.priority {
                    Priority::Urgent => slot,
                    Priority::Background => slot + spacing * (burst - 1),
                };
                let taken = caller.priority == Priority::Urgent || start <= now;
                if taken {
                    pacing.next_slot = Some(slot + spacing);
                }
                (start, taken)
            };
            let wait = start.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                waited += wait;
                tokio::time::sleep(wait).await;
            }
            if taken {
                break;
            }
        }
        if !waited.is_zero() {
            caller.counters.add_throttle_wait(waited);
        }
    }

    fn spacing(&self, slowed: bool) -> Option<Duration> {
        let base = self
            .limits
            .requests_per_second
            .filter(|rps| rps.is_finite() && *rps > 0.0)
            .map(|rps| Duration::from_secs_f64(1.0 / rps));
        if !slowed {
            return base;
        }
        Some(match base {
            Some(base) => base.mul_f64(self.limits.near_limit_slowdown.max(1.0)),
            None => self.limits.near_limit_spacing,
        })
    }

    async fn slow_down(&self) {
        let mut pacing = self.pacing.lock().await;
        pacing.slow_until = Some(Instant::now() + self.limits.near_limit_cooldown);
        tracing::info!(
            cooldown_ms =
                u64::try_from(self.limits.near_limit_cooldown.as_millis()).unwrap_or(u64::MAX),
            "confluence signalled near rate limit, slowing down"
        );
    }
}

type Attempt = pagestream_retry::Attempt<Result<Fetched, ConfluenceError>, Retry>;

/// A transient failure to retry, with the wait the server asked for.
fn again(retry: Retry) -> Attempt {
    let server_wait = retry.retry_after();
    Attempt::Retry {
        error: retry,
        server_wait,
    }
}

enum BodyError {
    TooLarge(ConfluenceError),
    Transport(reqwest::Error),
}

enum Retry {
    RateLimited {
        status: u16,
        retry_after: Option<Duration>,
    },
    Server {
        status: u16,
        retry_after: Option<Duration>,
    },
    Transport(reqwest::Error),
}

impl Retry {
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Server { retry_after, .. } => {
                *retry_after
            }
            Self::Transport(_) => None,
        }
    }

    fn reason(&self) -> String {
        match self {
            Self::RateLimited { status, .. } | Self::Server { status, .. } => {
                format!("status {status}")
            }
            Self::Transport(e) if e.is_timeout() => "timeout".to_owned(),
            Self::Transport(_) => "transport".to_owned(),
        }
    }

    fn into_error(self, endpoint: String, attempts: u32) -> ConfluenceError {
        match self {
            Self::RateLimited { retry_after, .. } => ConfluenceError::RateLimited {
                endpoint,
                attempts,
                retry_after,
            },
            Self::Server { status, .. } => ConfluenceError::Server {
                endpoint,
                status,
                attempts,
            },
            Self::Transport(source) => ConfluenceError::Transport {
                endpoint,
                attempts,
                source,
            },
        }
    }
}

fn near_limit(headers: &HeaderMap) -> bool {
    headers
        .get("x-ratelimit-nearlimit")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The message of a v1 (`{"message": …}`) or v2 (`{"errors": [{"title", "detail"}]}`) error body.
fn error_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::from_utf8_lossy(body).trim().to_owned();
    };
    if let Some(message) = value.get("message").and_then(|m| m.as_str()) {
        return message.to_owned();
    }
    if let Some(first) = value
        .get("errors")
        .and_then(|e| e.as_array())
        .and_then(|e| e.first())
    {
        let title = first.get("title").and_then(|t| t.as_str()).unwrap_or("");
        let detail = first.get("detail").and_then(|d| d.as_str()).unwrap_or("");
        return [title, detail]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(": ");
    }
    String::new()
}

pub(crate) type SharedTransport = Arc<Transport>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_of_both_shapes() {
        assert_eq!(
            error_message(
                br#"{"statusCode":400,"message":"Could not parse cql","reason":"Bad Request"}"#
            ),
            "Could not parse cql"
        );
        assert_eq!(
            error_message(br#"{"errors":[{"status":400,"code":"INVALID_REQUEST","title":"Invalid request","detail":"bad id"}]}"#),
            "Invalid request: bad id"
        );
        assert_eq!(error_message(b"plain text"), "plain text");
    }

    #[test]
    fn scrub_removes_whole_and_truncated_secrets() {
        let config = ClientConfig::new(
            "http://127.0.0.1:1/wiki",
            crate::Auth::cloud("me@x.io", "sekrit-token-value"),
        );
        let transport = Transport::new(&config).expect("transport");
        assert_eq!(
            transport.scrub("echo sekrit-token-value back"),
            "echo [redacted] back"
        );
        let long = format!("{}sekrit-token-value", "x".repeat(MAX_ERROR_MESSAGE - 6));
        let scrubbed = transport.scrub(&long);
        assert!(!scrubbed.contains("sekrit"), "{scrubbed}");
        assert!(scrubbed.ends_with("[redacted]"));
        assert_eq!(
            transport.scrub_also(
                "bad url https://h/p/path-secret-1/x",
                &["path-secret-1", ""]
            ),
            "bad url https://h/p/[redacted]/x"
        );
    }
}
