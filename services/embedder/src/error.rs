//! Embedding errors, split by what the caller should do: a transient one (server overloaded or
//! unreachable) is worth retrying later; a permanent one will fail the same way again.

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Back off and retry (429, 5xx, timeouts, connection failures).
    Transient,
    /// Retrying gives the same answer (bad configuration, bad input, a model that cannot load).
    Permanent,
}

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
    #[error("embedding server unavailable: {0}")]
    Unavailable(String),
    #[error("embedding server answered with something unusable: {0}")]
    Protocol(String),
    #[error("expected {expected} vectors, got {got}")]
    VectorCount { expected: usize, got: usize },
    #[error("invalid provider configuration: {0}")]
    Config(String),
}

impl EmbedError {
    pub fn class(&self) -> ErrorClass {
        match self {
            EmbedError::Unavailable(_) => ErrorClass::Transient,
            EmbedError::Model(_)
            | EmbedError::InputTooLong { .. }
            | EmbedError::Inference(_)
            | EmbedError::Rejected { .. }
            | EmbedError::Protocol(_)
            | EmbedError::VectorCount { .. }
            | EmbedError::Config(_) => ErrorClass::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}
