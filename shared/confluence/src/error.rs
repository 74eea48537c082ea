//! The client's errors. Messages name the endpoint (method and path, never the query or the
//! credentials) and are split into permanent and transient by their [`Retryable`] impl.

use std::time::Duration;

use pagestream_events::Retryable;

#[derive(Debug, thiserror::Error)]
pub enum ConfluenceError {
    /// The client was configured with something unusable (plain-http base URL, bad credentials).
    #[error("invalid confluence configuration: {0}")]
    Config(String),
    /// A space key that Confluence would not accept (also guards the CQL and URLs built from it).
    #[error("invalid space key {0:?}")]
    InvalidSpaceKey(String),
    /// A time zone that is not an IANA zone name.
    #[error("unknown time zone {0:?} (an IANA name such as Europe/Berlin is expected)")]
    InvalidTimeZone(String),
    /// Status 401: wrong or expired credentials.
    #[error("confluence rejected the credentials (401) on {endpoint}")]
    Unauthorized { endpoint: String },
    /// Status 403: the credentials are valid but lack a permission.
    #[error("confluence denied access (403) on {endpoint}")]
    Forbidden { endpoint: String },
    /// Not found (404). On Cloud this may also mean "no permission to view": confirm before
    /// treating a page as deleted.
    #[error("not found (404) on {endpoint}")]
    NotFound { endpoint: String },
    /// Another 4xx, e.g. 400 for CQL that Confluence cannot parse.
    #[error("confluence rejected the request ({status}) on {endpoint}: {message}")]
    Rejected {
        endpoint: String,
        status: u16,
        message: String,
    },
    /// Status 429 (or 503 with `Retry-After`) still returned after every attempt.
    #[error("rate limited by confluence on {endpoint} after {attempts} attempts")]
    RateLimited {
        endpoint: String,
        attempts: u32,
        retry_after: Option<Duration>,
    },
    /// Status 5xx still returned after every attempt.
    #[error("confluence server error ({status}) on {endpoint} after {attempts} attempts")]
    Server {
        endpoint: String,
        status: u16,
        attempts: u32,
    },
    /// Connection, TLS or timeout failure after every attempt.
    #[error("transport error on {endpoint} after {attempts} attempts: {source}")]
    Transport {
        endpoint: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// The body exceeded the configured bound.
    #[error("response from {endpoint} exceeds {limit} bytes")]
    ResponseTooLarge { endpoint: String, limit: usize },
    /// The body could not be decoded, or the response broke the protocol (foreign next link,
    /// pagination loop).
    #[error("invalid response from {endpoint}: {reason}")]
    InvalidResponse { endpoint: String, reason: String },
}

impl Retryable for ConfluenceError {
    /// Whether trying again later may succeed: rate limits, server errors, transport failures, and
    /// refused credentials or permissions (401/403), an outage of configuration that an operator
    /// fixes without touching the event. Everything else fails the same way again.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Transport { .. }
                | Self::Unauthorized { .. }
                | Self::Forbidden { .. }
        )
    }
}

impl ConfluenceError {
    /// Whether the error is a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_and_permanent_are_split() {
        let endpoint = || "GET /wiki/api/v2/pages".to_owned();
        assert!(
            ConfluenceError::RateLimited {
                endpoint: endpoint(),
                attempts: 3,
                retry_after: None
            }
            .is_transient()
        );
        assert!(
            ConfluenceError::Server {
                endpoint: endpoint(),
                status: 502,
                attempts: 3
            }
            .is_transient()
        );
        // Credentials an operator must fix: an outage of configuration, not a bad page.
        assert!(
            ConfluenceError::Unauthorized {
                endpoint: endpoint(),
            }
            .is_transient()
        );
        assert!(
            ConfluenceError::Forbidden {
                endpoint: endpoint(),
            }
            .is_transient()
        );
        for permanent in [
            ConfluenceError::NotFound {
                endpoint: endpoint(),
            },
            ConfluenceError::InvalidResponse {
                endpoint: endpoint(),
                reason: "x".into(),
            },
            ConfluenceError::Config("x".into()),
        ] {
            assert!(!permanent.is_transient(), "{permanent}");
        }
    }
}
