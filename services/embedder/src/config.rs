//! The embedder service's configuration and start: which provider, how many batches at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::ValueEnum;
use pagestream_bus::BusError;
use pagestream_service::{CommonArgs, Service, Shell};
use secrecy::{ExposeSecret, SecretString};

use crate::hash::HashProvider;
use crate::local::{LocalConfig, LocalProvider};
use crate::openai::{ApiKey, OpenAiConfig, OpenAiProvider};
use crate::service::{self, EmbedderConfig};
use crate::{EmbedError, EmbeddingProvider};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProviderKind {
    /// A sentence-transformers model in-process (PAGESTREAM_MODEL_DIR).
    Local,
    /// An OpenAI-compatible /v1/embeddings server.
    Openai,
    /// Feature hashing: for tests and pipeline benchmarks only, not semantic.
    Hash,
}

/// Embeds `page.converted` pages into `chunks.ready`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pagestream-embedder", version)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Embedding provider.
    #[arg(
        long,
        env = "PAGESTREAM_EMBEDDING_PROVIDER",
        value_enum,
        default_value = "local"
    )]
    pub provider: ProviderKind,
    /// Directory of the local model (config.json, tokenizer.json, model.safetensors).
    #[arg(
        long,
        env = "PAGESTREAM_MODEL_DIR",
        default_value = ".dev/models/all-MiniLM-L6-v2"
    )]
    pub model_dir: PathBuf,
    /// Dimension of hash vectors.
    #[arg(long, env = "PAGESTREAM_HASH_DIMENSION", default_value_t = 384)]
    pub hash_dimension: usize,
    /// Base URL of the OpenAI-compatible server (e.g. https://api.openai.com).
    #[arg(
        long,
        env = "PAGESTREAM_OPENAI_BASE_URL",
        default_value = "https://api.openai.com"
    )]
    pub openai_base_url: String,
    /// Model name on that server.
    #[arg(
        long,
        env = "PAGESTREAM_OPENAI_MODEL",
        default_value = "text-embedding-3-small"
    )]
    pub openai_model: String,
    /// Vector dimension of that model (sent as `dimensions`).
    #[arg(long, env = "PAGESTREAM_OPENAI_DIMENSION", default_value_t = 1536)]
    pub openai_dimension: usize,
    /// API key of that server.
    #[arg(long, env = "PAGESTREAM_OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<SecretString>,
    /// Pages per embedding call.
    #[arg(long, env = "PAGESTREAM_EMBEDDER_BATCH_PAGES", default_value_t = 16)]
    pub batch_pages: usize,
    /// Batches in flight on this replica.
    #[arg(long, env = "PAGESTREAM_EMBEDDER_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "PAGESTREAM_EMBEDDER_OPS_LISTEN",
        default_value = "127.0.0.1:9085"
    )]
    pub ops_listen: SocketAddr,
}

/// Why the embedder could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot load the model from {dir} (run ops/fetch-model, or set PAGESTREAM_MODEL_DIR): {reason}"
    )]
    Model { dir: PathBuf, reason: String },
    #[error("embedding provider: {0}")]
    Provider(#[from] EmbedError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

async fn provider(config: &Config) -> Result<Arc<dyn EmbeddingProvider>, StartError> {
    Ok(match config.provider {
        ProviderKind::Local => {
            let local = LocalConfig::new(config.model_dir.clone());
            let failed = |reason: String| StartError::Model {
                dir: config.model_dir.clone(),
                reason,
            };
            let provider = tokio::task::spawn_blocking(move || LocalProvider::load(&local))
                .await
                .map_err(|error| failed(error.to_string()))?
                .map_err(|error| failed(error.to_string()))?;
            Arc::new(provider)
        }
        ProviderKind::Hash => Arc::new(HashProvider::new(config.hash_dimension, 256)?),
        ProviderKind::Openai => {
            let mut openai = OpenAiConfig::new(
                config.openai_base_url.clone(),
                config.openai_model.clone(),
                config.openai_dimension,
            );
            openai.api_key = config
                .openai_api_key
                .as_ref()
                .map(|key| ApiKey::new(key.expose_secret()));
            Arc::new(OpenAiProvider::new(openai)?)
        }
    })
}

impl Service for Config {
    const NAME: &'static str = "pagestream-embedder";
    type Error = StartError;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn ops_listen(&self) -> SocketAddr {
        self.ops_listen
    }

    async fn start(self, shell: &Shell) -> Result<(), StartError> {
        let provider = provider(&self).await?;
        tracing::info!(
            model = provider.model(),
            dimension = provider.dimension(),
            "provider ready"
        );
        let bus = self.common.connect_bus().await?;
        let supervisor = shell.supervisor();
        supervisor.spawn(
            "query-embedding",
            service::answer_queries(bus.clone(), provider.clone(), shell.token()),
        );
        supervisor.spawn(
            "embedder",
            service::run(
                bus,
                provider,
                EmbedderConfig {
                    batch_pages: self.batch_pages,
                    concurrency: self.concurrency,
                },
                shell.token(),
            ),
        );
        Ok(())
    }
}
