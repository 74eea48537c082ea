//! Embedding errors, split by what the caller should do ([`Retryable`]): a transient one (server
//! overloaded or unreachable, or refusing the credentials until an operator fixes them) is worth
//! retrying later; a permanent one will fail the same way again.

use pagestream_events::Retryable;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model files unusable: {0}")]
    Model(String),
    #[error("input {index} has {tokens} tokens, over the model's limit of {max}")]
    InputTooLong {
        index: usize,
        tokens: usize,
        max: usize,
    },
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("embedding server rejected the request with status {status}: {message}")]
    Rejected { status: u16, message: String },
    /// 401/403: the key is wrong, expired or lacks a permission.
    #[error("embedding server refused the credentials with status {status}: {message}")]
    Credentials { status: u16, message: String },
    #[error("embedding server unavailable: {0}")]
    Unavailable(String),
    #[error("embedding server answered with something unusable: {0}")]
    Protocol(String),
    #[error("expected {expected} vectors, got {got}")]
    VectorCount { expected: usize, got: usize },
    #[error("invalid provider configuration: {0}")]
    Config(String),
}

impl Retryable for EmbedError {
    /// 429, 5xx, timeouts and connection failures pass; so do refused credentials (an outage of
    /// configuration). Bad input, a bad answer or a model that cannot load do not.
    fn is_transient(&self) -> bool {
        match self {
            EmbedError::Unavailable(_) | EmbedError::Credentials { .. } => true,
            EmbedError::Model(_)
            | EmbedError::InputTooLong { .. }
            | EmbedError::Inference(_)
            | EmbedError::Rejected { .. }
            | EmbedError::Protocol(_)
            | EmbedError::VectorCount { .. }
            | EmbedError::Config(_) => false,
        }
    }
}
