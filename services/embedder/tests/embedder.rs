//! Integration tests of the embedder: chunking, the providers, reuse, and the stage on the bus.

mod embedder {
    mod chunking;
    mod local_model;
    mod openai;
    mod reuse;
    mod service;
    pub mod support;
}
