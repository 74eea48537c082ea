//! Embedder: Markdown-aware chunking and embedding providers.
