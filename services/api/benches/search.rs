//! Search latency (run by `ops/bench/search`): a fresh database with CHUNKS chunks (default
//! 100,000) of 384-dimensional random unit vectors and generated text, the api in-process, query
//! embeddings over NATS request/reply from a responder on its own connection, and CLIENTS
//! concurrent clients (default 8) sending mixed queries, with and without filters, over HTTP.
//! Each text leg (`postgres`: `ts_rank_cd`; `bm25`: the api's in-memory index) is measured on the
//! same database with the same queries, one after the other (LEGS picks). Prints one JSON object
//! with p50/p95/p99 of `/api/search` per leg, embedding included. The database is dropped at the
//! end; with KEEP_DATABASE it stays until the process is interrupted (to study query plans).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use pagestream_api::embed::answer_embed_queries;
use pagestream_api::{
    AppParts, AppState, HashEmbedder, NatsQueryEmbedder, SearchSettings, TextLeg,
};
use pagestream_bus::{Bus, BusConfig};
use pagestream_service::Readiness;
use pagestream_sources::{SecretKey, SourceRegistry};
use pagestream_testkit::bench::{
    Words, drop_database, env_number, loadavg, percentile, random_unit_vector, resident_mib, round,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DIMENSION: usize = 384;
const MODEL: &str = "all-MiniLM-L6-v2";
const CHUNKS_PER_PAGE: usize = 10;
const API_KEY: &str = "bench-api-key-0123456789";
const LABELS: [&str; 12] = [
    "runbook",
    "howto",
    "architecture",
    "decision",
    "onboarding",
    "postmortem",
    "api",
    "security",
    "release",
    "meeting-notes",
    "faq",
    "design",
];

struct Corpus {
    source_id: Uuid,
    page_paths: Vec<String>,
    jira_keys: Vec<String>,
}

async fn load(
    pool: &PgPool,
    words: &Words,
    chunks: usize,
    rng: &mut StdRng,
) -> anyhow::Result<Corpus> {
    let source_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO sources (id, key, site_url, space_key, auth_kind, credentials) \
         VALUES ($1, 'bench', 'https://bench.atlassian.net/wiki', 'BENCH', 'cloud', '\\x00')",
    )
    .bind(source_id)
    .execute(pool)
    .await?;
    let pages = chunks.div_ceil(CHUNKS_PER_PAGE);
    let mut page_paths: Vec<String> = Vec::with_capacity(pages);
    let mut jira_keys = Vec::new();
    let mut page_rows = String::new();
    let now = chrono::Utc::now();
    for page in 0..pages {
        let id = 1_000_000 + page;
        // A tree: each page hangs under one of the earlier pages (or the root), depth grows slowly.
        let path = if page < 10 {
            format!("/{id}")
        } else {
            format!("{}/{id}", page_paths[rng.random_range(0..page / 2)])
        };
        let labels: Vec<&str> = (0..rng.random_range(0..3))
            .map(|_| LABELS[rng.random_range(0..LABELS.len())])
            .collect();
        let jira: Vec<String> = (0..rng.random_range(0..3))
            .map(|_| format!("PROJ-{}", rng.random_range(1..5000)))
            .collect();
        jira_keys.extend(jira.iter().cloned());
        let mentions: Vec<String> = (0..rng.random_range(0..2))
            .map(|_| format!("user-{}", rng.random_range(0..50)))
            .collect();
        let metadata =
            json!({"labels": labels, "jira_issue_links": jira, "user_mentions": mentions});
        let modified = now - chrono::Duration::minutes(rng.random_range(0..525_600));
        let title = words.sentence(rng, 3);
        let array = |items: &[String]| format!("{{{}}}", items.join(","));
        let labels: Vec<String> = labels.iter().map(|label| label.to_string()).collect();
        page_rows.push_str(&format!(
            "{source_id}\t{id}\tBENCH\t{title}\t1\t{}\tf\t{path}\thttps://bench.atlassian.net/wiki/pages/{id}\t{metadata}\t{}\t{}\t{}\n",
            modified.to_rfc3339(),
            array(&labels),
            array(&jira),
            array(&mentions),
        ));
        page_paths.push(path);
    }
    let mut connection = pool.acquire().await?;
    let mut copy = connection
        .copy_in_raw(
            "COPY confluence_pages (source_id, page_id, space_key, title, version, last_modified, \
             is_deleted, path, url, metadata, labels, jira_keys, mentions) FROM STDIN",
        )
        .await?;
    copy.send(page_rows.into_bytes()).await?;
    copy.finish().await?;

    if std::env::var_os("EMBEDDING_STORAGE_MAIN").is_some() {
        // What-if: vectors kept inline in the heap rather than TOASTed out of line.
        sqlx::query("ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE MAIN")
            .execute(&mut *connection)
            .await?;
    }
    // Bulk-building the HNSW index after the load is much faster than inserting into it.
    sqlx::query("DROP INDEX chunks_embedding_all_minilm_l6_v2")
        .execute(&mut *connection)
        .await?;
    let mut copy = connection
        .copy_in_raw(
            "COPY chunks (source_id, page_id, embedding_model, chunk_index, page_version, text, \
             heading_path, content_hash, token_count, embedding_dim, embedding) FROM STDIN",
        )
        .await?;
    let mut batch = String::with_capacity(8 << 20);
    for chunk in 0..chunks {
        let page = chunk / CHUNKS_PER_PAGE;
        let length = rng.random_range(40..120);
        let text = words.sentence(rng, length);
        let heading = words.sentence(rng, 2);
        let vector = random_unit_vector(rng, DIMENSION);
        batch.push_str(&format!(
            "{source_id}\t{}\t{MODEL}\t{}\t1\t{text}\t{{\"{heading}\"}}\th{chunk}\t100\t{DIMENSION}\t[",
            1_000_000 + page,
            chunk % CHUNKS_PER_PAGE
        ));
        for (i, value) in vector.iter().enumerate() {
            if i > 0 {
                batch.push(',');
            }
            batch.push_str(&format!("{value:.5}"));
        }
        batch.push_str("]\n");
        if batch.len() > 4 << 20 {
            copy.send(std::mem::take(&mut batch).into_bytes()).await?;
        }
    }
    copy.send(batch.into_bytes()).await?;
    copy.finish().await?;
    Ok(Corpus {
        source_id,
        page_paths,
        jira_keys,
    })
}

async fn build_index(pool: &PgPool) -> anyhow::Result<()> {
    let mut connection = pool.acquire().await?;
    sqlx::raw_sql(
        "SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 2; \
         CREATE INDEX chunks_embedding_all_minilm_l6_v2 ON chunks \
         USING hnsw ((embedding::vector(384)) vector_cosine_ops) \
         WHERE embedding_model = 'all-MiniLM-L6-v2'; ANALYZE;",
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// One query of the mix: its kind (for the per-kind figures) and its query string.
fn query(words: &Words, corpus: &Corpus, rng: &mut StdRng) -> (&'static str, String) {
    let q = match rng.random_range(0..10) {
        0 => format!("%22{}%22", words.sentence(rng, 2).replace(' ', "+")),
        n => words.sentence(rng, 1 + n % 4).replace(' ', "+"),
    };
    let (kind, filter) = match rng.random_range(0..20) {
        0..=9 => ("unfiltered", String::new()),
        10..=12 => (
            "label",
            format!("&label={}", LABELS[rng.random_range(0..LABELS.len())]),
        ),
        13..=14 => ("subtree", {
            // A subtree under one of the first hundred pages: from large to small.
            let page = rng.random_range(0..corpus.page_paths.len().min(100));
            format!("&path={}", corpus.page_paths[page])
        }),
        15 => (
            "jira",
            format!(
                "&jira={}",
                corpus.jira_keys[rng.random_range(0..corpus.jira_keys.len())]
            ),
        ),
        16 => (
            "space+source",
            format!("&space=BENCH&source={}", corpus.source_id),
        ),
        17 => (
            "mention",
            format!("&mention=user-{}", rng.random_range(0..50)),
        ),
        _ => ("updated_after", {
            let days = rng.random_range(1..200);
            format!(
                "&updated_after={}",
                (chrono::Utc::now() - chrono::Duration::days(days)).format("%Y-%m-%d")
            )
        }),
    };
    (kind, format!("q={q}{filter}&limit=10"))
}

/// Which text legs to measure: `LEGS`, a comma-separated list of `postgres` and `bm25` (default
/// both).
fn legs() -> anyhow::Result<Vec<TextLeg>> {
    let names = std::env::var("LEGS").unwrap_or_else(|_| "postgres,bm25".into());
    names
        .split(',')
        .map(|name| match name.trim() {
            "postgres" => Ok(TextLeg::Postgres),
            "bm25" => Ok(TextLeg::Bm25),
            other => bail!("LEGS: unknown text leg {other:?} (postgres, bm25)"),
        })
        .collect()
}

/// Warms up, then sends `queries` from `clients` concurrent clients; the latency figures.
async fn measure(
    base: &str,
    warmup: &[(&'static str, String)],
    queries: &Arc<Vec<(&'static str, String)>>,
    clients: usize,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let http = reqwest::Client::new();
    for (_, query) in warmup {
        http.get(format!("{base}/api/search?{query}"))
            .bearer_auth(API_KEY)
            .send()
            .await?;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let measuring = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (queries, next, http, base) =
            (queries.clone(), next.clone(), http.clone(), base.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut samples: Vec<(&'static str, f64, usize, bool, f64)> = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((kind, query)) = queries.get(i) else {
                    break;
                };
                let sent = Instant::now();
                let response = http
                    .get(format!("{base}/api/search?{query}"))
                    .bearer_auth(API_KEY)
                    .send()
                    .await;
                let (ok, hits, server_ms) = match response {
                    Ok(response) if response.status().is_success() => {
                        let body: serde_json::Value = response.json().await.unwrap_or_default();
                        let warned = body["warnings"].as_array().is_some_and(|w| !w.is_empty());
                        (
                            !warned,
                            body["hits"].as_array().map_or(0, Vec::len),
                            body["took_ms"].as_f64().unwrap_or_default(),
                        )
                    }
                    _ => (false, 0, 0.0),
                };
                let elapsed = sent.elapsed().as_secs_f64() * 1000.0;
                samples.push((kind, elapsed, hits, ok, server_ms));
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await?);
    }
    let wall = measuring.elapsed().as_secs_f64();
    let errors = samples.iter().filter(|sample| !sample.3).count();
    if errors * 10 > samples.len() {
        bail!(
            "{errors} of {} searches failed or lost their vector leg",
            samples.len()
        );
    }
    let mut all: Vec<f64> = samples.iter().map(|sample| sample.1).collect();
    all.sort_by(f64::total_cmp);
    let mut by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut server: Vec<f64> = samples.iter().map(|sample| sample.4).collect();
    server.sort_by(f64::total_cmp);
    for (kind, ms, _, _, _) in &samples {
        by_kind.entry(kind).or_default().push(*ms);
    }
    let kinds: serde_json::Map<String, serde_json::Value> = by_kind
        .into_iter()
        .map(|(kind, mut values)| {
            values.sort_by(f64::total_cmp);
            (
                kind.to_owned(),
                json!({"requests": values.len(), "p50_ms": round(percentile(&values, 50.0)),
                       "p95_ms": round(percentile(&values, 95.0)),
                       "p99_ms": round(percentile(&values, 99.0))}),
            )
        })
        .collect();
    let empty = samples.iter().filter(|sample| sample.2 == 0).count();
    let figures = json!({
        "requests": samples.len(),
        "errors_or_degraded": errors,
        "empty_results": empty,
        "p50_ms": round(percentile(&all, 50.0)),
        "p95_ms": round(percentile(&all, 95.0)),
        "p99_ms": round(percentile(&all, 99.0)),
        "max_ms": round(all.last().copied().unwrap_or_default()),
        "server_took_p50_ms": round(percentile(&server, 50.0)),
        "server_took_p95_ms": round(percentile(&server, 95.0)),
        "throughput_rps": round(samples.len() as f64 / wall),
        "by_kind": kinds,
    });
    Ok(figures.as_object().cloned().unwrap_or_default())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let chunks = env_number("CHUNKS", 100_000)?;
    let clients = env_number("CLIENTS", 8)?;
    let requests = env_number("REQUESTS", 4000)?;
    let mut rng = StdRng::seed_from_u64(7);
    let words = Words::new(&mut rng);

    let started = Instant::now();
    let (_, database_url) = pagestream_testkit::database().await;
    let search = SearchSettings {
        hnsw_ef_search: env_number(
            "EF_SEARCH",
            SearchSettings::default().hnsw_ef_search as usize,
        )? as u32,
        exact_filter_pages: env_number(
            "EXACT_FILTER_PAGES",
            SearchSettings::default().exact_filter_pages as usize,
        )? as u32,
        memory_vectors: env_number("MEMORY_VECTORS", 1)? != 0,
        memory_exact_filter_pages: env_number(
            "MEMORY_EXACT_FILTER_PAGES",
            SearchSettings::default().memory_exact_filter_pages as usize,
        )? as u32,
        ..SearchSettings::default()
    };
    let db_connections = env_number(
        "DB_CONNECTIONS",
        pagestream_api::config::default_db_connections() as usize,
    )? as u32;
    let pool =
        pagestream_store::connect_for_search(&database_url, db_connections, search.hnsw_ef_search)
            .await?;
    let corpus = load(&pool, &words, chunks, &mut rng).await?;
    let load_s = started.elapsed().as_secs_f64();
    let indexing = Instant::now();
    build_index(&pool).await?;
    let index_s = indexing.elapsed().as_secs_f64();
    eprintln!("bench/search: loaded {chunks} chunks in {load_s:.1} s, indexed in {index_s:.1} s");

    let bus = pagestream_testkit::bus().await;
    // The responder stands in for the embedder service, on a connection of its own.
    let responder_bus = Bus::connect(
        BusConfig::new(pagestream_testkit::nats_url()).with_root(bus.config().root.clone()),
    )
    .await?;
    tokio::spawn(answer_embed_queries(&responder_bus, HashEmbedder::new(MODEL, DIMENSION)).await?);
    let mut queries: Vec<(&'static str, String)> = (0..requests + 200)
        .map(|_| query(&words, &corpus, &mut rng))
        .collect();
    let warmup: Vec<_> = queries.drain(..200).collect();
    let queries = Arc::new(queries);

    // Each text leg on the same database and the same queries, one after the other.
    let mut figures = serde_json::Map::new();
    for leg in legs()? {
        let state = AppState::new(AppParts {
            pool: pool.clone(),
            bus: bus.clone(),
            registry: SourceRegistry::open(&bus).await?,
            secret_key: SecretKey::parse(&SecretKey::generate())?,
            api_key: API_KEY.to_owned(),
            embedder: Arc::new(NatsQueryEmbedder::new(&bus, MODEL, search.embed_timeout)),
            search: SearchSettings {
                text_leg: leg,
                ..search.clone()
            },
            confluence_timeout: Duration::from_secs(5),
        });
        let stop = CancellationToken::new();
        let resident_before = resident_mib();
        let loading = Instant::now();
        let maintaining = tokio::spawn(state.maintain_search_index(stop.clone()));
        let search_index_load_s = match state.search_index() {
            Some(index) => {
                while !index.is_ready() {
                    if maintaining.is_finished() {
                        bail!("the search index stopped before it loaded");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some(round(loading.elapsed().as_secs_f64()))
            }
            None => None,
        };
        // What loading the index added to this process (an upper bound: freed load buffers may
        // stay resident).
        let search_index_resident_mib = round(resident_mib() - resident_before);
        let router = pagestream_api::router(state, Readiness::default());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let serving = tokio::spawn(async move { axum::serve(listener, router).await });
        let mut measured = measure(&base, &warmup, &queries, clients).await?;
        measured.insert(
            "search_index_load_seconds".into(),
            json!(search_index_load_s),
        );
        measured.insert(
            "search_index_resident_mib".into(),
            json!(search_index_resident_mib),
        );
        serving.abort();
        stop.cancel();
        figures.insert(
            match leg {
                TextLeg::Bm25 => "bm25",
                TextLeg::Postgres => "postgres",
            }
            .into(),
            measured.into(),
        );
    }
    let keep = std::env::var_os("KEEP_DATABASE").is_some();
    if !keep {
        drop_database(pool, &database_url).await?;
    }
    println!(
        "{}",
        json!({
            "benchmark": "search",
            "chunks": chunks,
            "dimension": DIMENSION,
            "clients": clients,
            "goal_p95_ms": 50,
            "hnsw_ef_search": search.hnsw_ef_search,
            "exact_filter_pages": search.exact_filter_pages,
            "memory_vectors": search.memory_vectors,
            "memory_exact_filter_pages": search.memory_exact_filter_pages,
            "db_connections": db_connections,
            "embedding_storage": if std::env::var_os("EMBEDDING_STORAGE_MAIN").is_some() { "main" } else { "as migrated" },
            "text_legs": figures,
            "load_seconds": round(load_s),
            "index_build_seconds": round(index_s),
            "loadavg": loadavg(),
        })
    );
    if keep {
        // The test database goes with this runtime: keep both until told to stop.
        eprintln!(
            "bench/search: the database {database_url} stays until this process is interrupted"
        );
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
