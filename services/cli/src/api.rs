//! A small client of the api (`/api/...`), with the shapes of the answers the CLI reads.

use chrono::{DateTime, Utc};
use pagestream_events::RunPipeline;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{CliError, hint_for};

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

/// A path segment or query value, percent-encoded.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

impl ApiClient {
    pub fn new(base: &str, key: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key: key.filter(|key| !key.trim().is_empty()),
            http: reqwest::Client::new(),
        }
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        context: &'static str,
    ) -> Result<T, CliError> {
        self.call(Method::GET, path, query, None, context).await
    }

    /// One request; a non-2xx answer becomes [`CliError::Api`] with the api's code and message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
        context: &'static str,
    ) -> Result<T, CliError> {
        let key = self.key.as_deref().ok_or(CliError::MissingApiKey)?;
        let mut url = format!("{}{path}", self.base);
        for (index, (name, value)) in query.iter().enumerate() {
            url.push(if index == 0 { '?' } else { '&' });
            url.push_str(&format!("{name}={}", encode(value)));
        }
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(key)
            .timeout(std::time::Duration::from_secs(60));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| CliError::ApiUnreachable {
                url: self.base.clone(),
                // Without the url (it may carry the query) and its source chain: the kind suffices.
                reason: if error.is_connect() {
                    "connection refused".to_owned()
                } else if error.is_timeout() {
                    "timed out".to_owned()
                } else {
                    "request failed".to_owned()
                },
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|error| CliError::Protocol {
            context,
            reason: error.without_url().to_string(),
        })?;
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|error| CliError::Protocol {
            context,
            reason: error.to_string(),
        })
    }
}

impl ApiClient {
    /// A sync run of a source: the given one, or the current or last one.
    pub async fn run_status(
        &self,
        source: &str,
        run: Option<uuid::Uuid>,
    ) -> Result<SyncRun, CliError> {
        let query: Vec<(&str, String)> = run
            .map(|run| ("run", run.to_string()))
            .into_iter()
            .collect();
        self.get(
            &format!("/api/confluence/{}/status", encode(source)),
            &query,
            "sync status",
        )
        .await
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    #[serde(default)]
    field: Option<String>,
}

fn api_error(status: u16, body: &[u8]) -> CliError {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error }) => CliError::Api {
            status,
            hint: hint_for(&error.code).to_owned(),
            message: match error.field {
                Some(field) => format!("{} ({field})", error.message),
                None => error.message,
            },
            code: error.code,
        },
        Err(_) => CliError::Api {
            status,
            code: "unknown".to_owned(),
            message: format!("the api answered {status}"),
            hint: hint_for("").to_owned(),
        },
    }
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct StageCounts {
    pub seen: i64,
    pub changed: i64,
    pub deleted: i64,
    pub converted: i64,
    pub embedded: i64,
    pub indexed: i64,
    pub failed: i64,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct SyncRun {
    pub run_id: Uuid,
    pub source: String,
    pub mode: String,
    /// The fetch stage's status.
    pub status: String,
    /// Where the run stands in the whole pipeline (finished when its pages are indexed).
    pub pipeline: RunPipeline,
    pub counts: StageCounts,
    pub confluence_requests: i64,
    pub rate_limit_wait_ms: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

impl SyncRun {
    /// The run is over and every changed page is indexed (or the fetch failed).
    pub fn settled(&self) -> bool {
        self.pipeline.is_finished()
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Source {
    pub id: Uuid,
    pub key: String,
    pub site_url: String,
    pub space_key: String,
    pub auth_kind: String,
    pub pages: i64,
    pub chunks: i64,
    pub last_sync: Option<SyncRun>,
    /// When the next scheduled sync is due; none when scheduled syncs are off.
    #[serde(default)]
    pub next_sync_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Deserialize)]
pub struct SourceList {
    pub sources: Vec<Source>,
}

#[derive(Debug, Deserialize)]
pub struct SyncAccepted {
    pub run_id: Uuid,
    pub source: String,
    pub mode: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct PageSummary {
    pub page_id: String,
    pub title: String,
    pub version: i64,
    pub last_modified: Option<DateTime<Utc>>,
    pub path: String,
    pub url: String,
    pub labels: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct PageList {
    pub pages: Vec<PageSummary>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PageDetail {
    #[serde(flatten)]
    pub page: PageSummary,
    pub markdown: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SearchHit {
    pub source: String,
    pub page_id: String,
    pub title: String,
    pub url: String,
    pub heading_path: Vec<String>,
    pub snippet: String,
    pub score: f64,
    pub vector_rank: Option<i64>,
    pub text_rank: Option<i64>,
    /// `page` or `blogpost` (absent from an older api).
    #[serde(default)]
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    #[serde(default)]
    pub warnings: Vec<String>,
    pub took_ms: f64,
}
