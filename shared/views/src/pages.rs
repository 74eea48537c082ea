//! Pages as the projection holds them.

use chrono::{DateTime, Utc};
use pagestream_events::{Ancestor, Author, ContentMetadata};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PageSummary {
    pub source: String,
    pub page_id: String,
    pub space_key: String,
    pub title: String,
    pub version: i64,
    pub last_modified: Option<DateTime<Utc>>,
    /// Ancestor ids and the page itself: `/root/parent/page`.
    pub path: String,
    pub url: String,
    pub labels: Vec<String>,
    /// `page` or `blogpost`.
    pub content_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PageList {
    pub pages: Vec<PageSummary>,
    /// Pass as `cursor` to get the next page of results; absent on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PageDetail {
    #[serde(flatten)]
    pub page: PageSummary,
    pub markdown: Option<String>,
    /// Ancestors, labels, author, jira_issue_links, user_mentions, links, attachments, word_count.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

impl PageDetail {
    /// The metadata document, typed. The api passes on what the projection stored, so a part of
    /// it that does not read as expected is left at its default rather than failing the page.
    pub fn metadata(&self) -> PageMetadata {
        serde_json::from_value(self.metadata.clone()).unwrap_or_default()
    }
}

/// A page's `metadata` document: what the page event says, plus the converter's content
/// metadata once the page is converted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PageMetadata {
    pub ancestors: Vec<Ancestor>,
    pub labels: Vec<String>,
    pub author: Option<Author>,
    pub created_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub content: ContentMetadata,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_reads_what_the_projection_stores() {
        let detail: PageDetail = serde_json::from_value(serde_json::json!({
            "source": "eng", "page_id": "42", "space_key": "ENG", "title": "Runbook",
            "version": 3, "last_modified": null, "path": "/7/42", "url": "https://x/42",
            "labels": ["ops"], "content_type": "page", "markdown": "# Runbook",
            "metadata": {
                "ancestors": [{"id": "7", "title": "Ops"}],
                "labels": ["ops"],
                "author": {"display_name": "Ada", "account_id": "a1"},
                "created_at": null,
                "jira_issue_links": ["OPS-1"],
                "internal_links": [{"title": "Other", "page_id": "43"}],
                "word_count": 120
            },
            "updated_at": "2026-01-01T00:00:00Z"
        }))
        .expect("a page detail");
        let metadata = detail.metadata();
        assert_eq!(metadata.ancestors[0].id.as_str(), "7");
        assert_eq!(
            metadata.author.and_then(|author| author.display_name),
            Some("Ada".to_owned())
        );
        assert_eq!(metadata.content.jira_issue_links, ["OPS-1"]);
        assert_eq!(metadata.content.internal_links[0].title, "Other");
        assert_eq!(metadata.content.word_count, 120);

        // Before conversion the document has no content metadata: defaults.
        let bare = PageDetail {
            metadata: serde_json::json!({"ancestors": [], "labels": [], "author": null}),
            ..detail
        };
        assert_eq!(bare.metadata(), PageMetadata::default());
    }
}
