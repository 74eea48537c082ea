//! Every service of the pipeline in this process, over a fresh bus root and a fresh database,
//! and a way to run `pagestream` commands against them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use confluence_sim::{RunningSim, SimConfig};
use pagestream_api::{AppParts, AppState, NatsQueryEmbedder, SearchSettings, TextLeg};
use pagestream_bus::Bus;
use pagestream_cli::{Cli, CliError};
use pagestream_embedder::EmbeddingProvider;
use pagestream_embedder::hash::HashProvider;
use pagestream_embedder::local::{LocalConfig, LocalProvider};
use pagestream_embedder::service::{self as embedder, EmbedderConfig};
use pagestream_service::{Readiness, Supervisor};
use pagestream_sources::{SecretKey, SourceRegistry};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const API_KEY: &str = "cli-test-api-key-7f3a";
pub const WEBHOOK_SECRET: &str = "cli-test-webhook-secret-19bd";
pub const SIM_TOKEN: &str = "sim-api-token";
/// The simulator also takes Data Center's bearer personal access token.
pub const SIM_PAT: &str = "sim-personal-access-token";
pub const SOURCE: &str = "docs";

pub enum Provider {
    /// all-MiniLM-L6-v2 from `.dev/models` (ops/fetch-model).
    Local,
    Hash(usize),
}

pub struct Stack {
    pub api_url: String,
    pub bus: Bus,
    pub pool: PgPool,
    pub database_url: String,
    pub sim: RunningSim,
    pub webhook_url: String,
    pub embedder_cancel: CancellationToken,
    /// The in-process api's state (its search index).
    pub api: AppState,
    cancel: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.embedder_cancel.cancel();
        self.cancel.cancel();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

pub fn local_provider() -> Arc<dyn EmbeddingProvider> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dev/models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "the local model is missing from {}: run ops/fetch-model (ops/test does)",
        dir.display()
    );
    Arc::new(LocalProvider::load(&LocalConfig::new(dir)).expect("load the local model"))
}

pub fn provider(kind: &Provider) -> Arc<dyn EmbeddingProvider> {
    match kind {
        Provider::Local => local_provider(),
        Provider::Hash(dimension) => {
            Arc::new(HashProvider::new(*dimension, 256).expect("hash provider"))
        }
    }
}

/// What a stack is made of.
pub struct StackOptions {
    pub pages: usize,
    /// Simulated pages with bodies over 1 MB.
    pub large_pages: usize,
    pub provider: Provider,
    /// Embedder replicas (each with its own provider).
    pub embedders: usize,
    pub indexer: pagestream_indexer::IndexerConfig,
}

impl StackOptions {
    pub fn new(pages: usize, provider: Provider) -> Self {
        Self {
            pages,
            large_pages: 0,
            provider,
            embedders: 1,
            indexer: pagestream_indexer::IndexerConfig::default(),
        }
    }
}

/// Stderr through `eprint!`, which libtest captures (a test's output shows when it fails).
struct CapturedStderr;

impl std::io::Write for CapturedStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        eprint!("{}", String::from_utf8_lossy(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Stack {
    /// The simulator with `pages` generated pages and every service.
    pub async fn start(pages: usize, kind: Provider) -> Self {
        Self::start_with(StackOptions::new(pages, kind)).await
    }

    pub async fn start_with(options: StackOptions) -> Self {
        // Warnings of every service show in a failing test's output, and on a bench's stderr
        // (its stdout carries its figures).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(|| CapturedStderr)
            .try_init();
        let bus = pagestream_testkit::bus().await;
        let root = bus.config().root.clone();
        let nats_url = pagestream_testkit::nats_url();
        let (pool, database_url) = pagestream_testkit::database().await;
        let secret_key = SecretKey::generate();
        let cancel = CancellationToken::new();

        let mut sim_config = SimConfig::new(11, options.pages);
        sim_config.large_pages = options.large_pages;
        sim_config.webhook_secret = Some(WEBHOOK_SECRET.to_owned());
        sim_config.personal_access_token = Some(SIM_PAT.to_owned());
        let sim = confluence_sim::start(sim_config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("simulator");

        let common = [
            "--nats-url".to_owned(),
            nats_url.clone(),
            "--subject-root".to_owned(),
            root.clone(),
            "--secret-key".to_owned(),
            secret_key.clone(),
        ];
        let webhook_port = free_port();
        let webhook = pagestream_webhook::Config::try_parse_from(
            ["pagestream-webhook".to_owned()]
                .into_iter()
                .chain(common.clone())
                .chain([
                    "--listen".to_owned(),
                    format!("127.0.0.1:{webhook_port}"),
                    "--ops-listen".to_owned(),
                    "127.0.0.1:0".to_owned(),
                ]),
        )
        .expect("webhook config");
        tokio::spawn(pagestream_service::run(webhook, None));
        let fetcher = pagestream_fetcher::Config::try_parse_from(
            ["pagestream-fetcher".to_owned()]
                .into_iter()
                .chain(common)
                .chain(["--ops-listen".to_owned(), "127.0.0.1:0".to_owned()]),
        )
        .expect("fetcher config");
        tokio::spawn(pagestream_service::run(fetcher, None));
        tokio::spawn(pagestream_converter::service::run(
            bus.clone(),
            2,
            cancel.clone(),
        ));

        let supervisor = Supervisor::new();
        let registry = SourceRegistry::open(&bus).await.expect("registry");
        pagestream_indexer::spawn_all(&supervisor, &bus, registry.clone(), &pool, &options.indexer);
        let indexer_cancel = supervisor.token();
        tokio::spawn(supervisor.run(Duration::from_secs(5)));
        let stop_indexer = cancel.clone();
        tokio::spawn(async move {
            stop_indexer.cancelled().await;
            indexer_cancel.cancel();
        });

        let embedder_cancel = CancellationToken::new();
        let mut model = String::new();
        for _ in 0..options.embedders.max(1) {
            let provider = provider(&options.provider);
            model = provider.model().to_owned();
            spawn_embedder(&bus, provider, embedder_cancel.clone());
        }

        // Search the model the embedders write (the hash provider's too).
        // The BM25 text leg: the end-to-end test and the relevance bench exercise it.
        let search = SearchSettings {
            embed_timeout: Duration::from_secs(10),
            embedding_model: model.clone(),
            text_leg: TextLeg::Bm25,
            ..SearchSettings::default()
        };
        let api_pool =
            pagestream_store::connect_for_search(&database_url, 4, search.hnsw_ef_search)
                .await
                .expect("api pool");
        let state = AppState::new(AppParts {
            pool: api_pool,
            bus: bus.clone(),
            registry,
            secret_key: SecretKey::parse(&secret_key).expect("secret key"),
            api_key: API_KEY.to_owned(),
            embedder: Arc::new(NatsQueryEmbedder::new(&bus, &model, search.embed_timeout)),
            search,
            confluence_timeout: Duration::from_secs(5),
        });
        state.set_webhook_base_url(format!("http://127.0.0.1:{webhook_port}"));
        tokio::spawn(state.maintain_search_index(cancel.clone()));
        let readiness = Readiness::default();
        readiness.set(true);
        let router = pagestream_api::router(state.clone(), readiness);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind api");
        let api_addr = listener.local_addr().expect("api addr");
        let stop_api = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop_api.cancelled().await })
                .await
        });

        Self {
            api_url: format!("http://{api_addr}"),
            bus,
            pool,
            database_url,
            webhook_url: format!("http://127.0.0.1:{webhook_port}/webhooks/confluence/{SOURCE}"),
            sim,
            embedder_cancel,
            api: state,
            cancel,
        }
    }

    /// Runs `pagestream <args>` against this stack; returns what it printed.
    pub async fn cli(&self, args: &[&str]) -> Result<String, CliError> {
        self.cli_with(API_KEY, &self.database_url, args).await
    }

    pub async fn cli_with(
        &self,
        api_key: &str,
        database_url: &str,
        args: &[&str],
    ) -> Result<String, CliError> {
        let mut argv = vec![
            "pagestream",
            "--api-url",
            &self.api_url,
            "--api-key",
            api_key,
            "--nats-url",
            &self.bus.config().nats_url,
            "--subject-root",
            &self.bus.config().root,
            "--database-url",
            database_url,
        ];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|error| CliError::Usage(error.to_string()))?;
        let mut out = Vec::new();
        pagestream_cli::run(cli, &mut out).await?;
        Ok(String::from_utf8(out).expect("utf-8 output"))
    }

    /// `pagestream sources add` for the simulator's space, webhooks signed with the shared secret.
    pub async fn add_source(&self) -> String {
        self.add_source_with(&["--webhook-secret", WEBHOOK_SECRET])
            .await
            .expect("sources add")
    }

    /// `pagestream sources add` for the simulator's space, with these flags for its webhooks.
    pub async fn add_source_with(&self, webhook_flags: &[&str]) -> Result<String, CliError> {
        self.add_simulator_source(SOURCE, &self.sim.base_url(), webhook_flags)
            .await
    }

    /// `pagestream sources add` of `key` for the space of a simulator at `site` (this stack's or
    /// another), with these flags for its webhooks.
    pub async fn add_simulator_source(
        &self,
        key: &str,
        site: &str,
        webhook_flags: &[&str],
    ) -> Result<String, CliError> {
        let mut args = vec![
            "sources",
            "add",
            "--key",
            key,
            "--site-url",
            site,
            "--space",
            "ENG",
            "--email",
            "sim@example.com",
            "--api-token",
            SIM_TOKEN,
        ];
        args.extend_from_slice(webhook_flags);
        self.cli(&args).await
    }

    /// The JSON answer of `pagestream search --json`.
    pub async fn search(&self, query: &str) -> serde_json::Value {
        let output = self
            .cli(&["search", query, "--json", "--limit", "5"])
            .await
            .expect("search");
        serde_json::from_str(&output).expect("search json")
    }

    /// Page ids of a search's hits, best first (a page once).
    pub async fn search_pages(&self, query: &str) -> Vec<String> {
        let body = self.search(query).await;
        let mut pages: Vec<String> = Vec::new();
        for hit in body["hits"].as_array().expect("hits") {
            let page = hit["page_id"].as_str().expect("page id").to_owned();
            if !pages.contains(&page) {
                pages.push(page);
            }
        }
        pages
    }
}

pub fn spawn_embedder(bus: &Bus, provider: Arc<dyn EmbeddingProvider>, cancel: CancellationToken) {
    tokio::spawn(embedder::answer_queries(
        bus.clone(),
        provider.clone(),
        cancel.clone(),
    ));
    tokio::spawn(embedder::run(
        bus.clone(),
        provider,
        EmbedderConfig::default(),
        cancel,
    ));
}

/// Polls `check` until it holds, for at most `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what}: not within {timeout:?}");
}
