//! Integration tests of the embedder library: chunking, the providers, and reuse.

mod embedder {
    mod chunking;
    mod local_model;
    mod openai;
    mod reuse;
    pub mod support;
}
