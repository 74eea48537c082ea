use std::path::PathBuf;
use std::sync::OnceLock;

use pagestream_embedder::local::{LocalConfig, LocalProvider};

pub const FIXTURE: &str = include_str!("../fixtures/cloud-logs.md");

/// The model `ops/fetch-model` installs, or `PAGESTREAM_MODEL_DIR`.
pub fn model_dir() -> PathBuf {
    std::env::var_os("PAGESTREAM_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.dev/models/all-MiniLM-L6-v2")
        })
}

/// The local provider, loaded once for all tests. A missing model fails the test: `ops/test`
/// fetches it (`ops/fetch-model`).
pub fn local_provider() -> &'static LocalProvider {
    static PROVIDER: OnceLock<LocalProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let dir = model_dir();
        assert!(
            dir.join("model.safetensors").exists(),
            "model directory {} is missing: run ops/fetch-model (ops/test does)",
            dir.display()
        );
        LocalProvider::load(&LocalConfig::new(dir)).expect("model loads")
    })
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}
