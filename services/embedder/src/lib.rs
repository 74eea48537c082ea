//! Embedder: Markdown-aware chunking, embedding providers, and reuse of unchanged chunks
//! (DESIGN §6).
//!
//! - [`chunk`]: cuts a page's Markdown into chunks sized by the model's tokenizer.
//! - [`EmbeddingProvider`]: `local` (all-MiniLM-L6-v2 in-process with candle), `openai` (any
//!   OpenAI-compatible `/v1/embeddings` server) and `hash` (feature hashing, for tests and
//!   pipeline benchmarks only).
//! - [`reuse`]: which chunks of a new page version need embedding, given what the stream holds.

pub mod chunk;
mod config;
mod error;
pub mod hash;
pub mod local;
pub mod openai;
pub mod reuse;
pub mod service;
mod tokens;

use async_trait::async_trait;

pub use chunk::{Chunker, TextChunk, content_hash};
pub use config::{Config, ProviderKind, StartError};
pub use error::EmbedError;
pub use tokens::{EstimatedTokenCounter, TokenCounter};

/// Turns texts into vectors. Implementations do their CPU-heavy work off the async runtime.
#[async_trait]
pub trait EmbeddingProvider: Send + Sync {
    /// The model name stored with every vector (`chunks.ready` `model`).
    fn model(&self) -> &str;

    /// Length of every vector this provider returns.
    fn dimension(&self) -> usize;

    /// The model's tokenizer (or an estimate of it) and input limit, for sizing chunks.
    fn token_counter(&self) -> &dyn TokenCounter;

    /// One vector per text, in the order of `texts`.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// One vector per text, for work that must not wait behind a bulk call: search queries
    /// and the live lane's edits. A provider whose capacity a bulk [`embed`](Self::embed) can
    /// hold for seconds serves these from capacity of their own, so that neither a search nor
    /// an edit waits behind a sync.
    async fn embed_urgent(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed(texts).await
    }
}
