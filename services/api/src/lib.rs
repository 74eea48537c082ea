//! Api: sources, sync runs, pages and hybrid search over HTTP (DESIGN §4, §6, §7).
//!
//! The web UI ([`ui`]) is served at `/` with its own sign-in. Every `/api` route requires
//! `Authorization: Bearer <PAGESTREAM_API_KEY>`; `/healthz` and `/readyz` do not. `/metrics` is not
//! on this router: the main serves it on the ops listener. The api writes nothing to Postgres: sources go to the source registry
//! (NATS key-value), sync requests to the bus, and the indexer projects both. It reads Postgres for
//! pages, counts, sync runs and search.
//!
//! A source is addressed in paths (`{id}`, `{source}`) by its key (`eng`) or by its uuid; keys
//! that look like a uuid are refused at creation, so the two never collide.
//!
//! Errors have one shape, `{"error": {"code", "message", "field"}}`, with the codes of
//! [`error::ErrorCode`].

pub mod config;
pub mod embed;
pub mod error;
mod openapi;
mod pages;
mod params;
pub mod search;
pub mod search_index;
mod service;
mod sources;
pub mod ui;
mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use pagestream_bus::Bus;
use pagestream_service::Readiness;
use pagestream_sources::{SecretKey, SourceRegistry};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPool;

pub use config::{Config, QueryEmbedderKind, SearchSettings, TextLeg};
pub use embed::{CachedQueryEmbedder, HashEmbedder, NatsQueryEmbedder, QueryEmbedder};
use error::{ApiError, ErrorCode};
use search_index::{SearchIndex, SearchIndexError};
pub use service::StartError;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    bus: Bus,
    registry: SourceRegistry,
    secret_key: SecretKey,
    api_key_digest: [u8; 32],
    embedder: Arc<dyn QueryEmbedder>,
    search: SearchSettings,
    /// The in-process index: the text leg's BM25 ranking and the filtered vector leg's exact one
    /// (none: Postgres ranks both legs).
    search_index: Option<Arc<SearchIndex>>,
    confluence_timeout: Duration,
    /// Dimension of each embedding model that has stored vectors (`embedding_models`).
    model_dimensions: Mutex<HashMap<String, i32>>,
    /// Whether the search model's vector index existed, and when that was read (bulk mode drops
    /// it while a backlog loads; read at most once a second).
    vector_index_seen: Mutex<Option<(Instant, bool)>>,
    /// Where Confluence reaches the webhook service (the UI shows each source's webhook URL).
    webhook_base_url: OnceLock<String>,
}

/// The parts an [`AppState`] is made of.
pub struct AppParts {
    pub pool: PgPool,
    pub bus: Bus,
    pub registry: SourceRegistry,
    pub secret_key: SecretKey,
    pub api_key: String,
    pub embedder: Arc<dyn QueryEmbedder>,
    pub search: SearchSettings,
    pub confluence_timeout: Duration,
}

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        let search = &parts.search;
        let search_index = if search.text_leg == TextLeg::Bm25 || search.memory_vectors {
            match SearchIndex::new(&search.embedding_model, search.memory_vectors) {
                Ok(index) => Some(Arc::new(index)),
                Err(error) => {
                    tracing::warn!(%error, "no search index: Postgres ranks both legs");
                    None
                }
            }
        } else {
            None
        };
        Self {
            inner: Arc::new(Inner {
                pool: parts.pool,
                bus: parts.bus,
                registry: parts.registry,
                secret_key: parts.secret_key,
                api_key_digest: Sha256::digest(parts.api_key.trim().as_bytes()).into(),
                embedder: parts.embedder,
                search: parts.search,
                search_index,
                confluence_timeout: parts.confluence_timeout,
                model_dimensions: Mutex::new(HashMap::new()),
                vector_index_seen: Mutex::new(None),
                webhook_base_url: OnceLock::new(),
            }),
        }
    }

    /// The task that loads the in-process search index and keeps it in step with Postgres until
    /// `token` is cancelled (done at once when there is none). Search uses the index once it has
    /// loaded.
    pub fn maintain_search_index(
        &self,
        token: CancellationToken,
    ) -> impl Future<Output = Result<(), SearchIndexError>> + Send + 'static {
        let index = self.inner.search_index.clone();
        let pool = self.inner.pool.clone();
        async move {
            match index {
                Some(index) => search_index::maintain(index, pool, token).await,
                None => Ok(()),
            }
        }
    }

    /// Waits until the in-process search index (when there is one) has loaded and applied every
    /// change committed so far, at most `timeout`; whether it has. For tests and benchmarks that
    /// search what they have just written.
    pub async fn search_index_settled(&self, timeout: Duration) -> Result<bool, SearchIndexError> {
        let Some(index) = self.search_index() else {
            return Ok(true);
        };
        let marker = uuid::Uuid::new_v4().to_string();
        let deadline = Instant::now() + timeout;
        let mut announced: Option<Instant> = None;
        while !(index.is_ready() && index.has_applied(&marker)) {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            // Announced again each second: one sent before the follower listened (it starts
            // with the api, and under load it may not listen yet) is never seen.
            if announced.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                pagestream_store::search::announce_search_marker(&self.inner.pool, &marker).await?;
                announced = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(true)
    }

    /// The in-process search index (none when Postgres ranks both legs).
    pub fn search_index(&self) -> Option<&Arc<SearchIndex>> {
        self.inner.search_index.as_ref()
    }

    /// The in-process search index, once it has loaded.
    pub(crate) fn ready_search_index(&self) -> Option<&Arc<SearchIndex>> {
        self.search_index().filter(|index| index.is_ready())
    }

    /// Sets the webhook service's public base URL, once.
    pub fn set_webhook_base_url(&self, url: String) {
        let _ = self.inner.webhook_base_url.set(url);
    }

    pub(crate) fn webhook_base_url(&self) -> Option<&str> {
        self.inner.webhook_base_url.get().map(String::as_str)
    }

    /// Whether `presented` is the api key. Digests are compared, in constant time, so neither the
    /// key's bytes nor its length leak through timing.
    pub(crate) fn key_matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let difference = digest
            .iter()
            .zip(self.inner.api_key_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        difference == 0
    }
}

/// The public HTTP surface: `/api/...` and the MCP endpoint `/mcp` behind the key, plus `/healthz`
/// and `/readyz`.
pub fn router(state: AppState, readiness: Readiness) -> Router {
    let api = Router::new()
        .route(
            "/api/confluence/sources",
            post(sources::create).get(sources::list),
        )
        .route("/api/confluence/{id}/sync", post(sources::sync))
        .route("/api/confluence/{id}/status", get(sources::status))
        .route(
            "/api/confluence/{id}/webhook-path",
            post(sources::rotate_webhook_path),
        )
        .route(
            "/api/confluence/{id}/webhooks",
            get(webhooks::check)
                .put(webhooks::register)
                .delete(webhooks::remove),
        )
        .route(
            "/api/confluence/{id}",
            delete(sources::remove).patch(sources::update),
        )
        .route("/api/confluence/{id}/pages", get(pages::list))
        .route("/api/pages/{source}/{page}", get(pages::detail))
        .route("/api/search", get(search::handler))
        .route("/api/openapi.json", get(openapi::document))
        .fallback(|| async {
            ApiError::new(ErrorCode::RouteNotFound, "no such route").into_response()
        });
    // MCP answers from the `/api` routes in process; a request reaching it has shown the key.
    let mcp = pagestream_mcp::http_service(Arc::new(pagestream_mcp::RouterBackend::new(
        api.clone().with_state(state.clone()),
    )));
    let api = api
        .route_service("/mcp", mcp)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .route_layer(middleware::from_fn(observe))
        .with_state(state.clone());
    api.merge(ui::router(state))
        .merge(pagestream_service::health_router(readiness))
}

/// Refuses `/api` requests without the right bearer key.
async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::new(
            ErrorCode::MissingApiKey,
            "send the api key as `Authorization: Bearer <key>`",
        )
        .into_response();
    };
    if !state.key_matches(presented) {
        return ApiError::new(ErrorCode::InvalidApiKey, "the api key is not valid").into_response();
    }
    next.run(request).await
}

/// Logs and measures every request by route (never the query string or the body).
pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(String::new, |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics::histogram!(
        "pagestream_api_request_duration_seconds",
        "route" => route.clone(),
        "method" => method.to_string(),
        "status" => status.to_string()
    )
    .record(elapsed.as_secs_f64());
    tracing::info!(
        %method,
        route,
        status,
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}
