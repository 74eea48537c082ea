//! Where the tools get their answers: the api's `/api` routes, over HTTP (`pagestream mcp`, a
//! process an assistant spawns) or in the api's own process (its `/mcp` route). The tools are
//! written once over [`Backend`]; both kinds see the same routes and the same error JSON.

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use pagestream_views::client::{ApiClient, ClientError, Unreachable};
use pagestream_views::{ErrorBody, ErrorDetail};
use reqwest::Method;
use tower::ServiceExt;

/// The most an answer of the api may weigh (a page's Markdown is bounded well below this).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why the api gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The api answered with its error JSON (`{"error": {"code", "message", "field"}}`).
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    #[error("the pagestream api at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the api's answer was not understood: {0}")]
    Decode(String),
}

/// GETs of `/api/...` paths.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The body of a successful answer to `GET path_and_query`.
    async fn get(&self, path_and_query: &str) -> Result<Vec<u8>, BackendError>;
}

/// The api over HTTP, with its key: the client the CLI uses too.
#[derive(Debug)]
pub struct HttpBackend {
    client: ApiClient,
}

impl HttpBackend {
    pub fn new(base: &str, key: &str) -> Self {
        Self {
            client: ApiClient::new(base, Some(key)),
        }
    }
}

#[async_trait]
impl Backend for HttpBackend {
    async fn get(&self, path_and_query: &str) -> Result<Vec<u8>, BackendError> {
        match self.client.send(Method::GET, path_and_query, None).await {
            Ok(body) => Ok(body),
            Err(ClientError::Unreachable { url, kind }) => Err(BackendError::Unreachable {
                url,
                reason: match kind {
                    Unreachable::Connect => {
                        "connection refused (is it running? check PAGESTREAM_API_URL)"
                    }
                    Unreachable::Timeout => "no answer within 60 s",
                    Unreachable::Failed => "the request failed",
                    Unreachable::CutOff => "the answer was cut off",
                }
                .to_owned(),
            }),
            Err(ClientError::Refused { status, error }) => Err(refused(status, error)),
        }
    }
}

/// The api's routes in this process: what its `/mcp` route answers from. The routes are called
/// without the key check, which the request to `/mcp` has passed already.
#[derive(Clone)]
pub struct RouterBackend {
    routes: axum::Router,
}

impl RouterBackend {
    pub fn new(routes: axum::Router) -> Self {
        Self { routes }
    }
}

#[async_trait]
impl Backend for RouterBackend {
    async fn get(&self, path_and_query: &str) -> Result<Vec<u8>, BackendError> {
        let unreachable = |reason: String| BackendError::Unreachable {
            url: "(in process)".to_owned(),
            reason,
        };
        let request = Request::get(path_and_query)
            .body(Body::empty())
            .map_err(|error| unreachable(error.to_string()))?;
        let response = match self.routes.clone().oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        answer(status, body.to_vec())
    }
}

/// A 2xx body, or the api's error.
fn answer(status: StatusCode, body: Vec<u8>) -> Result<Vec<u8>, BackendError> {
    if status.is_success() {
        return Ok(body);
    }
    Err(refused(status.as_u16(), ErrorBody::parse(&body)))
}

fn refused(status: u16, error: Option<ErrorDetail>) -> BackendError {
    match error {
        Some(error) => BackendError::Api {
            status,
            code: error.code,
            message: error.message,
            field: error.field,
        },
        None => BackendError::Api {
            status,
            code: "http_error".to_owned(),
            message: format!("the api answered {status}"),
            field: None,
        },
    }
}
