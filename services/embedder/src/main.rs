//! `pagestream-embedder`: chunks converted pages and embeds them, as a pipeline stage; also answers
//! the api's query-embedding requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use pagestream_bus::{Bus, BusConfig};
use pagestream_embedder::EmbeddingProvider;
use pagestream_embedder::hash::HashProvider;
use pagestream_embedder::local::{LocalConfig, LocalProvider};
use pagestream_embedder::openai::{ApiKey, OpenAiConfig, OpenAiProvider};
use pagestream_embedder::service::{self, EmbedderConfig};
use pagestream_telemetry::{LogFormat, Supervisor};
use secrecy::{ExposeSecret, SecretString};

// Embedding allocates large temporaries; mimalloc reuses them far better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProviderKind {
    /// A sentence-transformers model in-process (PAGESTREAM_MODEL_DIR).
    Local,
    /// An OpenAI-compatible /v1/embeddings server.
    Openai,
    /// Feature hashing: for tests and pipeline benchmarks only, not semantic.
    Hash,
}

/// Embeds `page.converted` pages into `chunks.ready`.
#[derive(Debug, Parser)]
#[command(name = "pagestream-embedder", version)]
struct Config {
    /// NATS server with JetStream.
    #[arg(long, env = "PAGESTREAM_NATS_URL")]
    nats_url: SecretString,
    /// Subject root and stream-name prefix.
    #[arg(long, env = "PAGESTREAM_SUBJECT_ROOT", default_value = "pagestream")]
    subject_root: String,
    /// Embedding provider.
    #[arg(
        long,
        env = "PAGESTREAM_EMBEDDING_PROVIDER",
        value_enum,
        default_value = "local"
    )]
    provider: ProviderKind,
    /// Directory of the local model (config.json, tokenizer.json, model.safetensors).
    #[arg(
        long,
        env = "PAGESTREAM_MODEL_DIR",
        default_value = ".dev/models/all-MiniLM-L6-v2"
    )]
    model_dir: PathBuf,
    /// Dimension of hash vectors.
    #[arg(long, env = "PAGESTREAM_HASH_DIMENSION", default_value_t = 384)]
    hash_dimension: usize,
    /// Base URL of the OpenAI-compatible server (e.g. https://api.openai.com).
    #[arg(
        long,
        env = "PAGESTREAM_OPENAI_BASE_URL",
        default_value = "https://api.openai.com"
    )]
    openai_base_url: String,
    /// Model name on that server.
    #[arg(
        long,
        env = "PAGESTREAM_OPENAI_MODEL",
        default_value = "text-embedding-3-small"
    )]
    openai_model: String,
    /// Vector dimension of that model (sent as `dimensions`).
    #[arg(long, env = "PAGESTREAM_OPENAI_DIMENSION", default_value_t = 1536)]
    openai_dimension: usize,
    /// API key of that server.
    #[arg(long, env = "PAGESTREAM_OPENAI_API_KEY", hide_env_values = true)]
    openai_api_key: Option<SecretString>,
    /// Pages per embedding call.
    #[arg(long, env = "PAGESTREAM_EMBEDDER_BATCH_PAGES", default_value_t = 16)]
    batch_pages: usize,
    /// Batches in flight on this replica.
    #[arg(long, env = "PAGESTREAM_EMBEDDER_CONCURRENCY", default_value_t = 2)]
    concurrency: usize,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "PAGESTREAM_EMBEDDER_OPS_LISTEN",
        default_value = "127.0.0.1:9085"
    )]
    ops_listen: SocketAddr,
    /// human or json.
    #[arg(long, env = "PAGESTREAM_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,
}

async fn provider(config: &Config) -> anyhow::Result<Arc<dyn EmbeddingProvider>> {
    Ok(match config.provider {
        ProviderKind::Local => {
            let local = LocalConfig::new(config.model_dir.clone());
            let provider = tokio::task::spawn_blocking(move || LocalProvider::load(&local))
                .await?
                .with_context(|| {
                    format!(
                        "load the model from {} (run ops/fetch-model, or set PAGESTREAM_MODEL_DIR)",
                        config.model_dir.display()
                    )
                })?;
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = pagestream_telemetry::init("pagestream-embedder", config.log_format)?;
    let provider = provider(&config).await?;
    tracing::info!(
        model = provider.model(),
        dimension = provider.dimension(),
        "provider ready"
    );
    let bus = Bus::connect(
        BusConfig::new(config.nats_url.expose_secret()).with_root(&config.subject_root),
    )
    .await
    .context("connect to nats (PAGESTREAM_NATS_URL)")?;
    let supervisor = Supervisor::new();
    let readiness =
        pagestream_telemetry::spawn_ops_server(&supervisor, config.ops_listen, &telemetry);
    supervisor.spawn(
        "query-embedding",
        service::answer_queries(bus.clone(), provider.clone(), supervisor.token()),
    );
    supervisor.spawn(
        "embedder",
        service::run(
            bus,
            provider,
            EmbedderConfig {
                batch_pages: config.batch_pages,
                concurrency: config.concurrency,
            },
            supervisor.token(),
        ),
    );
    readiness.set(true);
    let result = supervisor.run(Duration::from_secs(30)).await;
    telemetry.shutdown();
    result.map_err(Into::into)
}
