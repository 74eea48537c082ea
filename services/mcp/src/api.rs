//! The api's answers as the tools read them, and the requests they make.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::backend::{Backend, BackendError};

#[derive(Debug, Clone, Deserialize)]
pub struct SearchHit {
    pub source: String,
    pub page_id: String,
    pub title: String,
    pub url: String,
    pub space_key: String,
    #[serde(default)]
    pub heading_path: Vec<String>,
    pub text: String,
    pub score: f64,
    #[serde(default)]
    pub last_modified: Option<DateTime<Utc>>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub code_title: Option<String>,
    /// `page` or `blogpost`.
    #[serde(default)]
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PageSummary {
    pub source: String,
    pub page_id: String,
    pub space_key: String,
    pub title: String,
    pub version: i64,
    #[serde(default)]
    pub last_modified: Option<DateTime<Utc>>,
    pub path: String,
    pub url: String,
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PageList {
    pub pages: Vec<PageSummary>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PageDetail {
    #[serde(flatten)]
    pub page: PageSummary,
    #[serde(default)]
    pub markdown: Option<String>,
    #[serde(default)]
    pub metadata: PageMetadata,
    pub updated_at: DateTime<Utc>,
}

/// The parts of a page's metadata the tools show.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PageMetadata {
    pub ancestors: Vec<Ancestor>,
    pub author: Option<Author>,
    pub jira_issue_links: Vec<String>,
    pub user_mentions: Vec<String>,
    pub internal_links: Vec<InternalLink>,
    pub word_count: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ancestor {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Author {
    pub display_name: Option<String>,
    pub account_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InternalLink {
    pub title: String,
    #[serde(default)]
    pub space_key: Option<String>,
    #[serde(default)]
    pub page_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SourceList {
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    pub key: String,
    pub site_url: String,
    pub space_key: String,
    pub pages: i64,
    pub chunks: i64,
    pub projected: bool,
    #[serde(default)]
    pub last_sync: Option<SyncRun>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SyncRun {
    pub mode: String,
    pub status: String,
    pub counts: StageCounts,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StageCounts {
    pub changed: i64,
    pub deleted: i64,
    pub indexed: i64,
    pub failed: i64,
}

/// The api, through a backend.
#[derive(Clone)]
pub struct Api {
    backend: Arc<dyn Backend>,
}

/// A path segment or query value, percent-encoded.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

impl Api {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, BackendError> {
        let mut url = path.to_owned();
        for (index, (name, value)) in query.iter().enumerate() {
            url.push(if index == 0 { '?' } else { '&' });
            url.push_str(name);
            url.push('=');
            url.push_str(&encode(value));
        }
        let body = self.backend.get(&url).await?;
        serde_json::from_slice(&body).map_err(|error| BackendError::Decode(error.to_string()))
    }

    /// `GET /api/search` with its parameters (`q`, `limit`, filters, `kind`, `language`).
    pub async fn search(&self, query: &[(&str, String)]) -> Result<SearchResponse, BackendError> {
        self.get("/api/search", query).await
    }

    pub async fn sources(&self) -> Result<SourceList, BackendError> {
        self.get("/api/confluence/sources", &[]).await
    }

    pub async fn page(&self, source: &str, page_id: &str) -> Result<PageDetail, BackendError> {
        self.get(
            &format!("/api/pages/{}/{}", encode(source), encode(page_id)),
            &[],
        )
        .await
    }

    /// `GET /api/confluence/{source}/pages` with its filters (`title`, `parent`, `top_level`,
    /// `links_to`, `jira`, `mention`, `limit`, `cursor`, ...).
    pub async fn pages(
        &self,
        source: &str,
        query: &[(&str, String)],
    ) -> Result<PageList, BackendError> {
        self.get(&format!("/api/confluence/{}/pages", encode(source)), query)
            .await
    }
}
