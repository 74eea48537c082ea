//! `pagestream-api`: the REST api (see the library for what it serves).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pagestream_api::{
    ApiConfig, AppParts, AppState, CachedQueryEmbedder, HashEmbedder, NatsQueryEmbedder,
    QueryEmbedder, QueryEmbedderKind,
};
use pagestream_bus::{Bus, BusConfig};
use pagestream_sources::{SecretKey, SourceRegistry};
use pagestream_telemetry::{Readiness, Supervisor};
use secrecy::ExposeSecret;

/// Dimension of the in-process hash embedder (that of the default model).
const HASH_DIMENSION: usize = 384;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    config.validate().map_err(anyhow::Error::msg)?;
    let telemetry = pagestream_telemetry::init("pagestream-api", config.log_format)?;
    let secret_key =
        SecretKey::parse(config.secret_key.expose_secret()).context("PAGESTREAM_SECRET_KEY")?;
    let search = config.search_settings();
    let pool = pagestream_store::connect_for_search(
        config.database_url.expose_secret(),
        config.db_connections,
        search.hnsw_ef_search,
    )
    .await
    .context("DATABASE_URL: cannot connect to postgres")?;
    let bus = Bus::connect(
        BusConfig::new(config.nats_url.expose_secret()).with_root(&config.subject_root),
    )
    .await
    .context("PAGESTREAM_NATS_URL")?;
    let registry = SourceRegistry::open(&bus).await?;
    let uncached: Arc<dyn QueryEmbedder> = match config.query_embedder {
        QueryEmbedderKind::Nats => Arc::new(NatsQueryEmbedder::new(
            &bus,
            search.embedding_model.clone(),
            search.embed_timeout,
        )),
        QueryEmbedderKind::Hash => Arc::new(HashEmbedder::new(
            search.embedding_model.clone(),
            HASH_DIMENSION,
        )),
    };
    let embedder: Arc<dyn QueryEmbedder> = Arc::new(CachedQueryEmbedder::new(
        uncached,
        config.query_cache_entries,
    ));
    let state = AppState::new(AppParts {
        pool,
        bus,
        registry,
        secret_key,
        api_key: config.api_key.expose_secret().to_owned(),
        embedder,
        search,
        confluence_timeout: Duration::from_secs(config.confluence_timeout_secs.max(1)),
    });
    if let Some(url) = config
        .webhook_public_url
        .clone()
        .filter(|url| !url.trim().is_empty())
    {
        state.set_webhook_base_url(url);
    }
    let readiness = Readiness::default();
    let router = pagestream_api::router(state.clone(), readiness.clone());
    let ops = pagestream_telemetry::ops_router(Some(telemetry.metrics.clone()), readiness.clone());
    let supervisor = Supervisor::new();
    supervisor.spawn(
        "http",
        pagestream_telemetry::serve(config.listen, router, supervisor.token()),
    );
    // With the BM25 text leg, its index (search ranks the text leg in Postgres until it loaded).
    // A supervised task runs until shutdown: there is none to run without the index.
    if state.text_index().is_some() {
        supervisor.spawn("text-index", state.maintain_text_index(supervisor.token()));
    }
    supervisor.spawn(
        "ops",
        pagestream_telemetry::serve(config.ops_listen, ops, supervisor.token()),
    );
    readiness.set(true);
    let result = supervisor.run(Duration::from_secs(10)).await;
    telemetry.shutdown();
    result.map_err(Into::into)
}
