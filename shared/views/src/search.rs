//! Hybrid search answers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchHit {
    pub source: String,
    pub page_id: String,
    pub chunk_index: i32,
    pub title: String,
    /// The page in Confluence.
    pub url: String,
    pub space_key: String,
    pub path: String,
    /// Page title, then each heading above the chunk.
    pub heading_path: Vec<String>,
    /// The chunk's Markdown.
    pub text: String,
    /// HTML: the best fragments of the chunk, escaped, with the matched terms in `<mark>`.
    pub snippet: String,
    /// Reciprocal rank fusion score.
    pub score: f64,
    /// 1-based rank in the vector leg, if the chunk made its cut.
    pub vector_rank: Option<i64>,
    /// 1-based rank in the full-text leg, if the chunk made its cut.
    pub text_rank: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
    /// `section` (a part of the page) or `code` (one code block of it).
    pub kind: String,
    /// What the chunk's page is: `page` or `blogpost`.
    pub content_type: String,
    /// A code block's language and title, when it has them.
    pub language: Option<String>,
    pub code_title: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchResponse {
    pub query: String,
    /// The embedding model the vector leg searched.
    pub model: String,
    pub hits: Vec<SearchHit>,
    /// Why a leg was left out (the embedder did not answer, no vectors of the model are stored).
    pub warnings: Vec<String>,
    pub took_ms: f64,
}
