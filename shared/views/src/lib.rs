//! The api's answers, defined once: the api serialises them (and, with the `openapi` feature,
//! documents them), the CLI and the MCP server read them (with the `client` feature, through one
//! HTTP client). Nothing here pulls in axum or utoipa unless asked.

#[cfg(feature = "client")]
pub mod client;
pub mod error;
pub mod pages;
pub mod search;
pub mod sources;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use pages::{PageDetail, PageList, PageMetadata, PageSummary};
/// What a sync run view holds, from the events.
pub use pagestream_events::{RunPipeline, SyncMode, SyncStatus};
pub use search::{SearchHit, SearchResponse};
pub use sources::{
    RegisteredStatus, RegisteredWebhook, SourceList, SourceRemoved, SourceView, StageCounts,
    SyncAccepted, SyncRunView, WebhookEventCheck, WebhookEventStatus, WebhookPath, WebhookReport,
};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// A path segment or query value, percent-encoded.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

/// `path?name=value&...`, each value percent-encoded.
pub fn with_query(path: &str, query: &[(&str, String)]) -> String {
    let mut url = path.to_owned();
    for (index, (name, value)) in query.iter().enumerate() {
        url.push(if index == 0 { '?' } else { '&' });
        url.push_str(name);
        url.push('=');
        url.push_str(&encode(value));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        let url = with_query(
            "/api/search",
            &[("q", "a b&c".to_owned()), ("limit", "5".to_owned())],
        );
        assert_eq!(url, "/api/search?q=a%20b%26c&limit=5");
        assert_eq!(with_query("/api/x", &[]), "/api/x");
    }
}
