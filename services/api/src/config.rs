//! The api's configuration: flags or environment variables (DESIGN §7). A missing or malformed
//! setting stops the service at start-up with a message that names it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use pagestream_service::{CommonArgs, DatabaseArgs};
use secrecy::{ExposeSecret, SecretString};

/// See [`Config::db_connections`]: twice the cores, and one, the usual size of a pool in front of a
/// database on a machine like this one (the api cannot see the database's cores). With 8 clients
/// on 2 cores, 5 connections instead of 16 took the p95 from 175 ms to 123 ms and the p99 from
/// 224 ms to 145 ms at the same throughput (`ops/bench/search`, `DB_CONNECTIONS`): the requests
/// past the pool wait their turn instead of slowing every statement in flight.
pub fn default_db_connections() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    u32::try_from(2 * cores + 1).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "pagestream-api",
    about = "Pagestream's REST api: sources, sync runs, pages and hybrid search"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address the api listens on (also serves /healthz and /readyz).
    #[arg(long, env = "PAGESTREAM_API_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of /healthz, /readyz and /metrics, kept off the public port.
    #[arg(
        long,
        env = "PAGESTREAM_API_OPS_LISTEN",
        default_value = "127.0.0.1:9080"
    )]
    pub ops_listen: SocketAddr,

    /// The key every `/api` request must present as `Authorization: Bearer <key>` (at least 16
    /// characters).
    #[arg(long, env = "PAGESTREAM_API_KEY", hide_env_values = true)]
    pub api_key: SecretString,

    /// 32-byte key (base64 or 64 hex digits) that seals Confluence credentials at rest.
    #[arg(long, env = "PAGESTREAM_SECRET_KEY", hide_env_values = true)]
    pub secret_key: SecretString,

    /// Postgres connections in the api's pool (default: twice the cores, and one).
    #[arg(long, env = "PAGESTREAM_API_DB_CONNECTIONS", default_value_t = default_db_connections())]
    pub db_connections: u32,

    /// The embedding model whose vectors search uses (queries are embedded with it).
    #[arg(
        long,
        env = "PAGESTREAM_EMBEDDING_MODEL",
        default_value = "all-MiniLM-L6-v2"
    )]
    pub embedding_model: String,

    /// How queries are embedded: `nats` (request/reply to the embedder service) or `hash`
    /// (in-process feature hashing, for demos and benchmarks without a model).
    #[arg(long, env = "PAGESTREAM_QUERY_EMBEDDER", default_value = "nats")]
    pub query_embedder: QueryEmbedderKind,

    /// How long to wait for the embedder's reply, in milliseconds; past it search answers from the
    /// full-text leg alone, with a warning.
    #[arg(
        long,
        env = "PAGESTREAM_QUERY_EMBED_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub query_embed_timeout_ms: u64,

    /// How many recent query vectors the api keeps, so that a repeated query is not embedded
    /// again (0: none).
    #[arg(long, env = "PAGESTREAM_QUERY_CACHE_ENTRIES", default_value_t = 4096)]
    pub query_cache_entries: usize,

    /// The reciprocal rank fusion constant k (score = Σ 1 / (k + rank)).
    #[arg(long, env = "PAGESTREAM_SEARCH_RRF_K", default_value_t = 60)]
    pub rrf_k: u32,

    /// How many candidates each search leg contributes to the fusion (at least the limit).
    #[arg(long, env = "PAGESTREAM_SEARCH_LEG_DEPTH", default_value_t = 50)]
    pub leg_depth: u32,

    /// How many matching chunks the `postgres` full-text leg ranks at most (0: all). Bounds the
    /// cost of queries made of very common terms.
    #[arg(
        long,
        env = "PAGESTREAM_SEARCH_TEXT_CANDIDATES",
        default_value_t = 1000
    )]
    pub text_candidates: u32,

    /// What ranks the full-text leg: `bm25`, an in-memory index of this process loaded from
    /// Postgres and kept in step with it (faster under load, and better fused on the relevance
    /// bench: README), or `postgres`, `ts_rank_cd` over the chunks that hold every query word
    /// (also what `bm25` uses while its index loads).
    #[arg(long, env = "PAGESTREAM_SEARCH_TEXT_LEG", default_value = "bm25")]
    pub text_leg: TextLeg,

    /// When filters leave at most this many pages, Postgres ranks their chunks exactly instead of
    /// walking the HNSW index (0: always the index); with the vectors in memory
    /// (`memory_vectors`), `memory_exact_filter_pages` decides instead, once the index has loaded.
    #[arg(
        long,
        env = "PAGESTREAM_SEARCH_EXACT_FILTER_PAGES",
        default_value_t = 1000
    )]
    pub exact_filter_pages: u32,

    /// Whether the in-process search index also holds every chunk's vector (of the search model),
    /// so that a filtered query's exact vector ranking runs here rather than in Postgres: about
    /// 1.5 KB a chunk at 384 dimensions (150 MB for 100,000 chunks) in each api process.
    #[arg(
        long,
        env = "PAGESTREAM_SEARCH_MEMORY_VECTORS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub memory_vectors: bool,

    /// When filters leave at most this many pages, the vector leg ranks their chunks exactly in
    /// this process (with `memory_vectors`) instead of walking the HNSW index in Postgres (0:
    /// always the index). An exact ranking costs more with each chunk it ranks, a filtered HNSW
    /// walk more as the filter narrows: on the search bench (10 chunks a page) the p95 was 60 ms
    /// at 1,000 pages, 51 ms at 3,000 and 63 ms at 10,000 (every page).
    #[arg(
        long,
        env = "PAGESTREAM_SEARCH_MEMORY_EXACT_FILTER_PAGES",
        default_value_t = 3000
    )]
    pub memory_exact_filter_pages: u32,

    /// HNSW candidate list size per vector query (pgvector `hnsw.ef_search`). Above the leg depth
    /// one pass of the graph fills the leg (below it an iterative scan goes on); the cost grows
    /// with it (100,000 chunks: 14.7 ms at 100, 8.7 ms at 60).
    #[arg(long, env = "PAGESTREAM_HNSW_EF_SEARCH", default_value_t = 60)]
    pub hnsw_ef_search: u32,

    /// Timeout of the Confluence requests that validate a new source's credentials, in seconds.
    #[arg(long, env = "PAGESTREAM_CONFLUENCE_TIMEOUT_SECS", default_value_t = 15)]
    pub confluence_timeout_secs: u64,

    /// Where Confluence reaches the webhook service (`https://hooks.example.com`); the web UI shows
    /// each source's webhook URL under it.
    #[arg(long, env = "PAGESTREAM_WEBHOOK_PUBLIC_URL")]
    pub webhook_public_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TextLeg {
    Bm25,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryEmbedderKind {
    Nats,
    Hash,
}

/// How search behaves; part of [`Config`], separate so that tests and benchmarks can set it.
#[derive(Debug, Clone)]
pub struct SearchSettings {
    pub embedding_model: String,
    pub rrf_k: u32,
    pub leg_depth: u32,
    pub text_candidates: u32,
    pub text_leg: TextLeg,
    pub exact_filter_pages: u32,
    pub memory_vectors: bool,
    pub memory_exact_filter_pages: u32,
    pub hnsw_ef_search: u32,
    pub embed_timeout: Duration,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            embedding_model: "all-MiniLM-L6-v2".into(),
            rrf_k: 60,
            leg_depth: 50,
            text_candidates: 1000,
            text_leg: TextLeg::Bm25,
            exact_filter_pages: 1000,
            memory_vectors: true,
            memory_exact_filter_pages: 3000,
            hnsw_ef_search: 60,
            embed_timeout: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// Checks what clap cannot without echoing a secret in its message.
    pub fn validate(&self) -> Result<(), String> {
        if self.api_key.expose_secret().trim().len() < 16 {
            return Err("PAGESTREAM_API_KEY must be at least 16 characters".into());
        }
        Ok(())
    }

    pub fn search_settings(&self) -> SearchSettings {
        SearchSettings {
            embedding_model: self.embedding_model.clone(),
            rrf_k: self.rrf_k,
            leg_depth: self.leg_depth.max(1),
            text_candidates: self.text_candidates,
            text_leg: self.text_leg,
            exact_filter_pages: self.exact_filter_pages,
            memory_vectors: self.memory_vectors,
            memory_exact_filter_pages: self.memory_exact_filter_pages,
            hnsw_ef_search: self.hnsw_ef_search.clamp(1, 1000),
            embed_timeout: Duration::from_millis(self.query_embed_timeout_ms.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_every_secret() {
        let config = Config::try_parse_from([
            "pagestream-api",
            "--api-key",
            "canary-api-key-0123456789",
            "--secret-key",
            "canary-secret-key-base64",
            "--nats-url",
            "nats://app:canary-nats-password@127.0.0.1:4222",
            "--database-url",
            "postgres://app:canary-db-password@127.0.0.1/pagestream",
        ])
        .expect("config");
        let debug = format!("{config:?}");
        assert!(debug.contains("listen"), "{debug}");
        assert!(!debug.contains("canary"), "{debug}");
        assert_eq!(config.api_key.expose_secret(), "canary-api-key-0123456789");
    }
}
