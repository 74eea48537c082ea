//! The api over HTTP, as the CLI and `pagestream mcp` call it: a bearer key, a 60 s limit, and
//! the api's error JSON read back. Failures name their kind, never the url's query (it may carry
//! what was searched) nor the key.

use std::time::Duration;

use reqwest::Method;

use crate::{ErrorBody, ErrorDetail};

const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for ApiClient {
    // The key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Why no answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Nothing listens there.
    Connect,
    /// No answer within the limit.
    Timeout,
    /// The request failed otherwise.
    Failed,
    /// The answer was cut off.
    CutOff,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the api at {url} cannot be reached ({kind:?})")]
    Unreachable { url: String, kind: Unreachable },
    /// A non-2xx answer, with the api's error if the body has its shape.
    #[error("the api answered {status}")]
    Refused {
        status: u16,
        error: Option<ErrorDetail>,
    },
}

impl ApiClient {
    /// A blank key counts as none: requests then go without one.
    pub fn new(base: &str, key: Option<&str>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key: key
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .map(str::to_owned),
            http: reqwest::Client::new(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// One request to `path_and_query` (see [`crate::with_query`]); the body of a 2xx answer.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, ClientError> {
        let unreachable = |kind| ClientError::Unreachable {
            url: self.base.clone(),
            kind,
        };
        let mut request = self
            .http
            .request(method, format!("{}{path_and_query}", self.base))
            .timeout(TIMEOUT);
        // Without a key the api answers `missing_api_key`, which callers turn into advice.
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|error| {
            unreachable(if error.is_connect() {
                Unreachable::Connect
            } else if error.is_timeout() {
                Unreachable::Timeout
            } else {
                Unreachable::Failed
            })
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|_| unreachable(Unreachable::CutOff))?;
        if !status.is_success() {
            return Err(ClientError::Refused {
                status: status.as_u16(),
                error: ErrorBody::parse(&body),
            });
        }
        Ok(body.to_vec())
    }
}
