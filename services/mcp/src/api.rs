//! The api's routes the tools call, through a backend; the answers are the api's own view types.

use std::sync::Arc;

pub use pagestream_views::encode;
use pagestream_views::{PageDetail, PageList, SearchResponse, SourceList, with_query};
use serde::de::DeserializeOwned;

use crate::backend::{Backend, BackendError};

/// The api, through a backend.
#[derive(Clone)]
pub struct Api {
    backend: Arc<dyn Backend>,
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
        let body = self.backend.get(&with_query(path, query)).await?;
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
