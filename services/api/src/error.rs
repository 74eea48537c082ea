//! One error shape for every route: `{"error": {"code", "message", "field"}}`. Codes are stable
//! (clients match on them); messages are for people and may change.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The error-code table: every code the api answers with, and its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
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
            | Self::ConfluenceSpaceNotFound => StatusCode::BAD_REQUEST,
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
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The query parameter or body field at fault (dotted for nested fields: `auth.email`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Bad input in one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidParameter,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn source_not_found(id: &str) -> Self {
        Self::new(
            ErrorCode::SourceNotFound,
            format!("no source with key or id {:?}", truncated(id)),
        )
    }

    /// A failure of Postgres or NATS: logged in full, answered briefly.
    pub fn dependency(what: &'static str, error: impl std::fmt::Display) -> Self {
        tracing::error!(dependency = what, %error, "dependency failed");
        Self::new(
            ErrorCode::DependencyUnavailable,
            format!("{what} is unavailable"),
        )
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl From<pagestream_store::StoreError> for ApiError {
    fn from(error: pagestream_store::StoreError) -> Self {
        Self::dependency("postgres", error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        (self.code.status(), Json(body)).into_response()
    }
}

/// User input echoed in a message is cut short.
pub(crate) fn truncated(value: &str) -> String {
    value.chars().take(80).collect()
}
