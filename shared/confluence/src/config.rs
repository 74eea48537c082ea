//! Client configuration with the defaults the issue asks for: 30 s timeouts, three retries at
//! 1 s, 2 s, 4 s (with jitter), `Retry-After` clamped to 60 s, a client-side request rate and
//! concurrency limit, and a bound on response sizes.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;

use crate::{Auth, ConfluenceError, RetryPolicy};

/// Everything a [`crate::ConfluenceClient`] needs. Build it with [`ClientConfig::new`] and adjust
/// the public fields.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The site's wiki root: `https://example.atlassian.net/wiki` for Cloud (a bare site URL gets
    /// `/wiki` appended for Cloud auth), the server's context root for Data Center. Must be https;
    /// plain http is accepted only for loopback hosts (tests, the simulator).
    pub base_url: String,
    pub auth: Auth,
    /// Whole-request timeout (default 30 s).
    pub timeout: Duration,
    /// Connection timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Largest response body accepted (default 64 MiB). Bulk page fetches that exceed it are split
    /// down to the page that exceeds it alone.
    pub max_response_bytes: usize,
    /// Ids per v2 bulk request (1 to 250, default 250).
    pub bulk_batch_size: usize,
    pub retry: RetryPolicy,
    pub limits: RateLimits,
    pub user_agent: String,
}

impl ClientConfig {
    /// The default bound on a response body: 64 MiB.
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

    pub fn new(base_url: impl Into<String>, auth: Auth) -> Self {
        Self {
            base_url: base_url.into(),
            auth,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
            bulk_batch_size: 250,
            retry: RetryPolicy::default(),
            limits: RateLimits::default(),
            user_agent: concat!("pagestream-confluence/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// Validates the base URL (scheme, host, no credentials or query) and normalises its path.
    pub(crate) fn validated_base_url(&self) -> Result<Url, ConfluenceError> {
        let mut url = Url::parse(self.base_url.trim())
            .map_err(|e| ConfluenceError::Config(format!("base url is not a url: {e}")))?;
        let Some(host) = url.host_str() else {
            return Err(ConfluenceError::Config("base url has no host".into()));
        };
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare_host.eq_ignore_ascii_case("localhost")
            || bare_host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(ConfluenceError::Config(
                    "base url must use https (plain http only for loopback hosts)".into(),
                ));
            }
            other => {
                return Err(ConfluenceError::Config(format!(
                    "base url scheme {other:?} is not https"
                )));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfluenceError::Config(
                "base url must not carry credentials".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfluenceError::Config(
                "base url must not have a query or fragment".into(),
            ));
        }
        let mut path = url.path().trim_end_matches('/').to_owned();
        if path.is_empty() && matches!(self.auth, Auth::Cloud { .. }) {
            path = "/wiki".to_owned();
        }
        url.set_path(&path);
        if !(1..=250).contains(&self.bulk_batch_size) {
            return Err(ConfluenceError::Config(
                "bulk batch size must be between 1 and 250".into(),
            ));
        }
        if self.retry.max_attempts == 0 || self.limits.max_concurrent == 0 {
            return Err(ConfluenceError::Config(
                "max attempts and max concurrent requests must be at least 1".into(),
            ));
        }
        Ok(url)
    }
}

/// Client-side pacing, shared by every request of one client (and its clones).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// Requests started per second; `None` for no pacing (default 10).
    pub requests_per_second: Option<f64>,
    /// Requests that may start at once, within the rate, after the client kept under it
    /// (default 5: what one hint asks for); 1 spaces every request.
    pub burst: u32,
    /// Requests in flight at once (default 4).
    pub max_concurrent: usize,
    /// While Confluence signals `X-RateLimit-NearLimit: true`, the rate is divided by this factor
    /// (default 4); without a configured rate, requests are spaced by `near_limit_spacing`.
    pub near_limit_slowdown: f64,
    /// Spacing used when slowed down without a configured rate (default 250 ms).
    pub near_limit_spacing: Duration,
    /// How long a near-limit signal slows the client down (default 30 s).
    pub near_limit_cooldown: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            requests_per_second: Some(10.0),
            burst: 5,
            max_concurrent: 4,
            near_limit_slowdown: 4.0,
            near_limit_spacing: Duration::from_millis(250),
            near_limit_cooldown: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(url: &str, auth: Auth) -> Result<String, ConfluenceError> {
        ClientConfig::new(url, auth)
            .validated_base_url()
            .map(|u| u.to_string())
    }

    #[test]
    fn https_is_required_except_on_loopback() {
        let cloud = || Auth::cloud("a@b.c", "t");
        assert_eq!(
            base("https://x.atlassian.net", cloud()).expect("cloud"),
            "https://x.atlassian.net/wiki"
        );
        assert_eq!(
            base("https://x.atlassian.net/wiki/", cloud()).expect("cloud"),
            "https://x.atlassian.net/wiki"
        );
        assert_eq!(
            base("https://confluence.corp/", Auth::data_center("p")).expect("dc"),
            "https://confluence.corp/"
        );
        assert!(base("http://127.0.0.1:8090/wiki", cloud()).is_ok());
        assert!(base("http://localhost:8090/wiki", cloud()).is_ok());
        assert!(base("http://[::1]:8090/wiki", cloud()).is_ok());
        for bad in [
            "http://x.atlassian.net/wiki",
            "http://10.0.0.1/wiki",
            "ftp://x.atlassian.net",
            "https://user:pw@x.atlassian.net",
            "https://x.atlassian.net/wiki?a=b",
            "not a url",
        ] {
            let err = base(bad, cloud()).expect_err(bad);
            assert!(matches!(err, ConfluenceError::Config(_)), "{bad}: {err}");
        }
    }
}
