//! One error shape for every HTTP answer of Pagestream: `{"error": {"code", "message", "field"}}`.
//! Codes are stable (clients match on them); messages are for people and may change. The api's
//! codes are [`ErrorCode`]; the webhook ingester has its own table in the same style.

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// The error-code table: every code the api answers with, and its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 401: no `Authorization: Bearer` header.
    MissingApiKey,
    /// 401: the bearer key is not the configured one.
    InvalidApiKey,
    /// 400: a query parameter or body field is missing, malformed or out of range (see `field`).
    InvalidParameter,
    /// 400: the body is not a JSON object.
    MalformedBody,
    /// 400: Confluence refused the credentials (401/403) when the source was created.
    ConfluenceCredentialsRejected,
    /// 400: Confluence has no space with that key, or the credentials cannot see it.
    ConfluenceSpaceNotFound,
    /// 400: Confluence refused to list, create or delete webhooks (the token's user is no
    /// administrator), or the site has no webhook resource.
    ConfluenceWebhooksRefused,
    /// 404: no source with that key or id.
    SourceNotFound,
    /// 404: no such page (or it was deleted).
    PageNotFound,
    /// 404: no such sync run.
    SyncRunNotFound,
    /// 404: no such route.
    RouteNotFound,
    /// 409: a source with that key already exists.
    SourceAlreadyExists,
    /// 502: Confluence could not be reached or kept failing.
    ConfluenceUnavailable,
    /// 503: Postgres or NATS could not be reached.
    DependencyUnavailable,
    /// 500: a bug or a corrupt record; the log has the details.
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingApiKey | Self::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Self::InvalidParameter
            | Self::MalformedBody
            | Self::ConfluenceCredentialsRejected
            | Self::ConfluenceSpaceNotFound
            | Self::ConfluenceWebhooksRefused => StatusCode::BAD_REQUEST,
            Self::SourceNotFound
            | Self::PageNotFound
            | Self::SyncRunNotFound
            | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::SourceAlreadyExists => StatusCode::CONFLICT,
            Self::ConfluenceUnavailable => StatusCode::BAD_GATEWAY,
            Self::DependencyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as it is spelled in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidApiKey => "invalid_api_key",
            Self::InvalidParameter => "invalid_parameter",
            Self::MalformedBody => "malformed_body",
            Self::ConfluenceCredentialsRejected => "confluence_credentials_rejected",
            Self::ConfluenceSpaceNotFound => "confluence_space_not_found",
            Self::ConfluenceWebhooksRefused => "confluence_webhooks_refused",
            Self::SourceNotFound => "source_not_found",
            Self::PageNotFound => "page_not_found",
            Self::SyncRunNotFound => "sync_run_not_found",
            Self::RouteNotFound => "route_not_found",
            Self::SourceAlreadyExists => "source_already_exists",
            Self::ConfluenceUnavailable => "confluence_unavailable",
            Self::DependencyUnavailable => "dependency_unavailable",
            Self::Internal => "internal",
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    // A code of the answering service's table (the api's is `ErrorCode`); documented as the
    // api's (a doc comment here would change the OpenAPI document).
    #[cfg_attr(feature = "openapi", schema(value_type = ErrorCode))]
    pub code: String,
    pub message: String,
    /// The query parameter or body field at fault (dotted for nested fields: `auth.email`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>, field: Option<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                field,
            },
        }
    }

    /// The error in the body of a failed answer, if it has this shape.
    pub fn parse(body: &[u8]) -> Option<ErrorDetail> {
        serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|body| body.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spelled_as_serialised() {
        use ErrorCode::*;
        for code in [
            MissingApiKey,
            InvalidApiKey,
            InvalidParameter,
            MalformedBody,
            ConfluenceCredentialsRejected,
            ConfluenceSpaceNotFound,
            SourceNotFound,
            PageNotFound,
            SyncRunNotFound,
            RouteNotFound,
            SourceAlreadyExists,
            ConfluenceUnavailable,
            DependencyUnavailable,
            Internal,
        ] {
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(serde_json::Value::from(code.as_str()))
            );
        }
    }

    #[test]
    fn an_error_body_reads_back_and_a_field_is_left_out_when_absent() {
        let body = ErrorBody::new("page_not_found", "no page 42", None);
        let json = serde_json::to_vec(&body).expect("serialises");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json).ok(),
            Some(serde_json::json!({"error": {"code": "page_not_found", "message": "no page 42"}}))
        );
        assert_eq!(ErrorBody::parse(&json), Some(body.error));
        assert_eq!(ErrorBody::parse(b"{\"error\": \"unauthorized\"}"), None);
    }
}
