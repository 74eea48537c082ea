//! The api as a service: what it connects to at start and the tasks it runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pagestream_bus::BusError;
use pagestream_service::{CommonArgs, Service, Shell};
use pagestream_sources::{SecretKey, SourceError, SourceRegistry};
use pagestream_store::StoreError;
use secrecy::ExposeSecret;

use crate::{
    AppParts, AppState, CachedQueryEmbedder, Config, HashEmbedder, NatsQueryEmbedder,
    QueryEmbedder, QueryEmbedderKind,
};

/// Dimension of the in-process hash embedder (that of the default model).
const HASH_DIMENSION: usize = 384;

/// Why the api could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Invalid(String),
    #[error("PAGESTREAM_SECRET_KEY: {0}")]
    SecretKey(SourceError),
    #[error("DATABASE_URL: {0}")]
    Store(#[from] StoreError),
    #[error("PAGESTREAM_NATS_URL: {0}")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Sources(#[from] SourceError),
}

impl Service for Config {
    const NAME: &'static str = "pagestream-api";
    const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);
    type Error = StartError;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn ops_listen(&self) -> SocketAddr {
        self.ops_listen
    }

    async fn start(self, shell: &Shell) -> Result<(), StartError> {
        self.validate().map_err(StartError::Invalid)?;
        let secret_key =
            SecretKey::parse(self.secret_key.expose_secret()).map_err(StartError::SecretKey)?;
        let search = self.search_settings();
        let pool = pagestream_store::connect_for_search(
            self.database.database_url.expose_secret(),
            self.db_connections,
            search.hnsw_ef_search,
        )
        .await?;
        let bus = self.common.connect_bus().await?;
        let registry = SourceRegistry::open(&bus).await?;
        let uncached: Arc<dyn QueryEmbedder> = match self.query_embedder {
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
        let embedder: Arc<dyn QueryEmbedder> =
            Arc::new(CachedQueryEmbedder::new(uncached, self.query_cache_entries));
        let state = AppState::new(AppParts {
            pool,
            bus,
            registry,
            secret_key,
            api_key: self.api_key.expose_secret().to_owned(),
            embedder,
            search,
            confluence_timeout: Duration::from_secs(self.confluence_timeout_secs.max(1)),
        });
        if let Some(url) = self.webhook_public_url.filter(|url| !url.trim().is_empty()) {
            state.set_webhook_base_url(url);
        }
        let supervisor = shell.supervisor();
        let router = crate::router(state.clone(), shell.readiness().clone());
        supervisor.spawn(
            "http",
            pagestream_service::serve(self.listen, router, shell.token()),
        );
        // The in-memory search index (Postgres ranks both legs until it has loaded). A supervised
        // task runs until shutdown: there is none to run without the index.
        if state.search_index().is_some() {
            supervisor.spawn("search-index", state.maintain_search_index(shell.token()));
        }
        Ok(())
    }
}
