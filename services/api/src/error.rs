//! One error shape for every route: `{"error": {"code", "message", "field"}}`, with the codes of
//! [`ErrorCode`] (both defined in `pagestream-views`, where the clients read them).

use axum::Json;
use axum::response::{IntoResponse, Response};
pub use pagestream_views::{ErrorBody, ErrorCode, ErrorDetail};

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
        let body = ErrorBody::new(self.code.as_str(), self.message, self.field);
        (self.code.status(), Json(body)).into_response()
    }
}

/// User input echoed in a message is cut short.
pub(crate) fn truncated(value: &str) -> String {
    value.chars().take(80).collect()
}
