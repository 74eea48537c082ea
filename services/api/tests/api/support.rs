//! A running api over the dev stack's NATS and a fresh database, a query-embedding responder, rows
//! seeded as the indexer would write them, and captured logs.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pagestream_api::embed::answer_embed_queries;
use pagestream_api::{AppParts, AppState, HashEmbedder, NatsQueryEmbedder, SearchSettings};
use pagestream_bus::Bus;
use pagestream_service::Readiness;
use pagestream_sources::{SecretKey, SourceRegistry};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const API_KEY: &str = "test-api-key-0123456789abcdef";
pub const MODEL: &str = "all-MiniLM-L6-v2";

pub fn embedder() -> HashEmbedder {
    HashEmbedder::new(MODEL, 384)
}

pub struct TestApi {
    pub base: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub bus: Bus,
    pub registry: SourceRegistry,
    pub secret_key: SecretKey,
    pub state: AppState,
}

/// Starts an api; with `responder`, something answers query-embedding requests (as the embedder
/// service would) with hash vectors.
pub async fn start(responder: bool) -> TestApi {
    start_with(
        responder,
        SearchSettings {
            embed_timeout: Duration::from_millis(500),
            ..SearchSettings::default()
        },
    )
    .await
}

pub async fn start_with(responder: bool, search: SearchSettings) -> TestApi {
    capture_logs();
    let bus = pagestream_testkit::bus().await;
    let (_, database_url) = pagestream_testkit::database().await;
    let pool = pagestream_store::connect_for_search(&database_url, 4, search.hnsw_ef_search)
        .await
        .expect("pool");
    let registry = SourceRegistry::open(&bus).await.expect("registry");
    let secret_key = SecretKey::parse(&SecretKey::generate()).expect("secret key");
    if responder {
        let serving = answer_embed_queries(&bus, embedder())
            .await
            .expect("responder");
        tokio::spawn(serving);
    }
    let state = AppState::new(AppParts {
        pool: pool.clone(),
        bus: bus.clone(),
        registry: registry.clone(),
        secret_key: secret_key.clone(),
        api_key: API_KEY.to_owned(),
        embedder: Arc::new(NatsQueryEmbedder::new(&bus, MODEL, search.embed_timeout)),
        search,
        confluence_timeout: Duration::from_secs(5),
    });
    tokio::spawn(state.maintain_search_index(CancellationToken::new()));
    let readiness = Readiness::default();
    readiness.set(true);
    let router = pagestream_api::router(state.clone(), readiness);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    TestApi {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        pool,
        bus,
        registry,
        secret_key,
        state,
    }
}

impl TestApi {
    /// Waits until the BM25 search index (when there is one) has applied every change so far.
    pub async fn search_index_settled(&self) {
        let settled = self
            .state
            .search_index_settled(Duration::from_secs(15))
            .await
            .expect("announce marker");
        assert!(
            settled,
            "the search index did not apply the changes within 15 s"
        );
    }

    /// A request with the api key; returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, body, Some(API_KEY)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// Sends a raw body (for malformed JSON).
    pub async fn post_raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.json().await.expect("json"))
    }
}

/// Asserts an error response: status, code, and the field named.
#[track_caller]
pub fn assert_error(response: &(StatusCode, Value), status: u16, code: &str, field: Option<&str>) {
    let (actual, body) = response;
    assert_eq!(actual.as_u16(), status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    match field {
        Some(field) => assert_eq!(body["error"]["field"], field, "{body}"),
        None => assert!(body["error"].get("field").is_none(), "{body}"),
    }
}

/// A `sources` row as the indexer projects it.
pub async fn seed_source(pool: &PgPool, id: Uuid, key: &str) {
    sqlx::query(
        "INSERT INTO sources (id, key, site_url, space_key, auth_kind, credentials) \
         VALUES ($1, $2, 'https://example.atlassian.net/wiki', 'DOCS', 'cloud', '\\x00')",
    )
    .bind(id)
    .bind(key)
    .execute(pool)
    .await
    .expect("seed source");
}

pub struct SeedPage<'a> {
    pub page_id: &'a str,
    pub title: &'a str,
    pub path: &'a str,
    pub labels: &'a [&'a str],
    pub jira: &'a [&'a str],
    pub mentions: &'a [&'a str],
    pub deleted: bool,
    pub last_modified: DateTime<Utc>,
    /// (heading, text) per chunk.
    pub chunks: &'a [(&'a str, &'a str)],
}

/// A page and its chunks as the indexer projects them, embedded with the hash embedder.
pub async fn seed_page(pool: &PgPool, source_id: Uuid, page: &SeedPage<'_>) {
    let metadata = serde_json::json!({
        "labels": page.labels,
        "jira_issue_links": page.jira,
        "user_mentions": page.mentions,
        "word_count": 42,
    });
    let markdown: String = page
        .chunks
        .iter()
        .map(|(_, text)| format!("{text}\n\n"))
        .collect();
    sqlx::query(
        "INSERT INTO confluence_pages (source_id, page_id, space_key, title, version, \
         last_modified, is_deleted, path, url, metadata, markdown, markdown_version, chunks_version, \
         labels, jira_keys, mentions) \
         VALUES ($1, $2, 'DOCS', $3, 3, $4, $5, $6, $7, $8, $9, 3, 3, $10, $11, $12)",
    )
    .bind(source_id)
    .bind(page.page_id)
    .bind(page.title)
    .bind(page.last_modified)
    .bind(page.deleted)
    .bind(page.path)
    .bind(format!(
        "https://example.atlassian.net/wiki/spaces/DOCS/pages/{}",
        page.page_id
    ))
    .bind(metadata)
    .bind(markdown)
    .bind(page.labels)
    .bind(page.jira)
    .bind(page.mentions)
    .execute(pool)
    .await
    .expect("seed page");
    for (index, (heading, text)) in page.chunks.iter().enumerate() {
        sqlx::query(
            "INSERT INTO chunks (source_id, page_id, embedding_model, chunk_index, page_version, \
             text, heading_path, content_hash, token_count, embedding_dim, embedding) \
             VALUES ($1, $2, $3, $4, 3, $5, $6, md5($5), 20, 384, $7::real[]::vector)",
        )
        .bind(source_id)
        .bind(page.page_id)
        .bind(MODEL)
        .bind(index as i32)
        .bind(*text)
        .bind(vec![page.title.to_owned(), (*heading).to_owned()])
        .bind(embedder().vector(text))
        .execute(pool)
        .await
        .expect("seed chunk");
    }
}

/// A blog post: seeded like a page (no parent: its path is `/<id>`), then marked as one.
pub async fn seed_blog_post(pool: &PgPool, source_id: Uuid, post: &SeedPage<'_>) {
    seed_page(pool, source_id, post).await;
    sqlx::query(
        "UPDATE confluence_pages SET content_type = 'blogpost' \
         WHERE source_id = $1 AND page_id = $2",
    )
    .bind(source_id)
    .bind(post.page_id)
    .execute(pool)
    .await
    .expect("mark blog post");
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<LogBuffer> = OnceLock::new();

/// Every log line of this test binary, at debug level, goes to one buffer.
fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buffer
    });
}

pub fn captured_logs() -> String {
    LOGS.get()
        .and_then(|buffer| {
            buffer
                .0
                .lock()
                .ok()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        })
        .unwrap_or_default()
}
