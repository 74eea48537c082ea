//! Pipeline throughput (run by `ops/bench/pipeline`): full syncs through every stage, every
//! service in-process over the dev stack, with the Confluence simulator.
//!
//! (a) HASH_PAGES pages (default 4,000, with the simulator's share of bodies over 1 MB) with the
//!     `hash` provider, so that the figure is the pipeline's: wall time until every page is
//!     indexed and the vector index exists, pages/s, and when each stage finished: searchable
//!     (every chunk in Postgres and in the api's in-memory index, which ranks vectors exactly
//!     while bulk mode builds the vector index) with the latency of searches made then; then the
//!     same without the indexer's bulk mode, and the ratio.
//! (b) LOCAL_PAGES pages (default 400) with the `local` model: wall time next to the time the
//!     model alone needs to embed the same chunks (same batches), and their ratio.
//! (c) (b) again with two embedder replicas.
//!
//! Prints one JSON object.

#[allow(dead_code)]
#[path = "../tests/cli/stack.rs"]
mod stack;

use std::time::Instant;

use anyhow::{Context, bail};
use pagestream_testkit::bench::{env_number, loadavg, percentile, round};
use serde_json::{Value, json};
use stack::{API_KEY, Provider, SOURCE, Stack, StackOptions};

/// When the run settled and when each stage caught up with the pages that changed.
struct SyncTiming {
    pages: i64,
    chunks: i64,
    wall_s: f64,
    stage_done_s: serde_json::Map<String, Value>,
    /// Searches made as soon as everything was searchable (while the vector index was built).
    searches_when_searchable: Value,
    confluence_requests: i64,
}

/// Searches made one after another, each for other words: their latency (ms) and whether the
/// model's vector index existed meanwhile.
async fn probe_searches(stack: &Stack, http: &reqwest::Client) -> anyhow::Result<Value> {
    const WORDS: [&str; 10] = [
        "deploy",
        "rollback",
        "latency",
        "budget",
        "schema",
        "cache",
        "incident",
        "review",
        "release",
        "migration",
    ];
    let vector_index_missing = indexes_missing(stack).await? > 0;
    let mut took = Vec::new();
    for (i, word) in WORDS.iter().cycle().take(30).enumerate() {
        let query = format!("{word}+{}", WORDS[(i * 7 + 3) % WORDS.len()]);
        let started = Instant::now();
        let response = http
            .get(format!("{}/api/search?q={query}&limit=10", stack.api_url))
            .bearer_auth(API_KEY)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("search {query:?}: {}", response.status());
        }
        let body: Value = response.json().await?;
        if body["hits"].as_array().is_none_or(Vec::is_empty) {
            bail!("search {query:?} found nothing: {body}");
        }
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    Ok(json!({
        "searches": took.len(),
        "vector_index_missing": vector_index_missing && indexes_missing(stack).await? > 0,
        "p50_ms": round(percentile(&took, 50.0)),
        "max_ms": round(took.last().copied().unwrap_or_default()),
    }))
}

/// How many models' vector indexes are missing (bulk mode builds them after the load).
async fn indexes_missing(stack: &Stack) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM embedding_models WHERE to_regclass(index_name) IS NULL",
    )
    .fetch_one(&stack.pool)
    .await?)
}

/// Starts a full sync and polls its status until every changed page is indexed.
async fn timed_full_sync(stack: &Stack) -> anyhow::Result<SyncTiming> {
    let http = reqwest::Client::new();
    let api = |path: String| {
        http.request(reqwest::Method::GET, format!("{}{path}", stack.api_url))
            .bearer_auth(API_KEY)
    };
    let started = Instant::now();
    let accepted: Value = http
        .post(format!(
            "{}/api/confluence/{SOURCE}/sync?mode=full",
            stack.api_url
        ))
        .bearer_auth(API_KEY)
        .send()
        .await?
        .json()
        .await?;
    let run = accepted["run_id"].as_str().context("run id")?.to_owned();
    let mut stage_done_s = serde_json::Map::new();
    let mut searches_when_searchable = Value::Null;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let response = api(format!("/api/confluence/{SOURCE}/status?run={run}"))
            .send()
            .await?;
        if !response.status().is_success() {
            continue; // queued: not projected yet
        }
        let status: Value = response.json().await?;
        let counts = &status["counts"];
        let changed = counts["changed"].as_i64().unwrap_or_default();
        let at = round(started.elapsed().as_secs_f64());
        if status["status"] == "completed" {
            stage_done_s.entry("fetched").or_insert(json!(at));
        }
        if status["status"] == "failed" {
            bail!("the sync failed: {status}");
        }
        // Indexed: every page's chunks are in. Not the run's own count: a scheduled incremental
        // run that emits a page first counts it, and the full run's count then stops short.
        let pages_indexed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM confluence_pages WHERE chunks_version IS NOT NULL",
        )
        .fetch_one(&stack.pool)
        .await?;
        if stage_done_s.contains_key("fetched") {
            for stage in ["converted", "embedded"] {
                if counts[stage].as_i64().unwrap_or_default() >= changed {
                    stage_done_s.entry(stage).or_insert(json!(at));
                }
            }
            if pages_indexed >= changed {
                stage_done_s.entry("indexed").or_insert(json!(at));
            }
        }
        // Searchable: every chunk in Postgres and in the api's in-memory index, which ranks the
        // vector leg while the vector index is missing.
        if stage_done_s.contains_key("indexed") && !stage_done_s.contains_key("searchable") {
            if !stack
                .api
                .search_index_settled(std::time::Duration::from_secs(600))
                .await?
            {
                bail!("the api's search index did not catch up within 600 s");
            }
            stage_done_s.insert(
                "searchable".into(),
                json!(round(started.elapsed().as_secs_f64())),
            );
            searches_when_searchable = probe_searches(stack, &http).await?;
        }
        // The vector index exists (bulk mode builds it after the load).
        if stage_done_s.contains_key("searchable") && indexes_missing(stack).await? == 0 {
            stage_done_s.entry("vector_index").or_insert(json!(at));
            let wall_s = started.elapsed().as_secs_f64();
            let (pages, chunks): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM confluence_pages WHERE chunks_version IS NOT NULL), \
                 (SELECT count(*) FROM chunks)",
            )
            .fetch_one(&stack.pool)
            .await?;
            return Ok(SyncTiming {
                pages,
                chunks,
                wall_s,
                stage_done_s,
                searches_when_searchable,
                confluence_requests: status["confluence_requests"].as_i64().unwrap_or_default(),
            });
        }
    }
}

/// When everything was searchable (fetched to searchable: the goal).
fn searchable_s(timing: &SyncTiming) -> f64 {
    timing
        .stage_done_s
        .get("searchable")
        .and_then(Value::as_f64)
        .unwrap_or(timing.wall_s)
}

async fn synced_stack(options: StackOptions) -> anyhow::Result<(Stack, SyncTiming)> {
    let stack = Stack::start_with(options).await;
    stack.add_source().await;
    let timing = timed_full_sync(&stack).await?;
    Ok((stack, timing))
}

/// The model alone on the chunks the pipeline embedded, in the embedder's batches (16 pages).
async fn embedding_alone(stack: &Stack) -> anyhow::Result<f64> {
    let pages: Vec<Vec<String>> = sqlx::query_scalar(
        "SELECT array_agg(text ORDER BY chunk_index) FROM chunks GROUP BY page_id ORDER BY page_id",
    )
    .fetch_all(&stack.pool)
    .await?;
    let provider = stack::local_provider();
    let started = Instant::now();
    for batch in pages.chunks(16) {
        provider.embed(batch.concat()).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// (b) and (c): the local model, one embedder then two.
async fn local_figures(pages: usize) -> anyhow::Result<Value> {
    eprintln!("bench/pipeline: (b) {pages} pages, local model, one embedder");
    let (stack, one) = synced_stack(StackOptions::new(pages, Provider::Local)).await?;
    eprintln!("bench/pipeline: (b) the model alone on the same chunks");
    let embed_s = embedding_alone(&stack).await?;
    drop(stack);

    eprintln!("bench/pipeline: (c) {pages} pages, local model, two embedders");
    let mut options = StackOptions::new(pages, Provider::Local);
    options.embedders = 2;
    let (stack, two) = synced_stack(options).await?;
    drop(stack);

    let ratio = one.wall_s / embed_s;
    Ok(json!({
        "one_embedder": {
            "pages": one.pages,
            "chunks": one.chunks,
            "wall_seconds": round(one.wall_s),
            "stage_done_seconds": one.stage_done_s,
            "embedding_alone_seconds": round(embed_s),
            "wall_to_embedding_ratio": round(ratio),
            "goal_ratio": 1.1,
            "goal_met": ratio <= 1.1,
        },
        "two_embedders": {
            "pages": two.pages,
            "wall_seconds": round(two.wall_s),
            "stage_done_seconds": two.stage_done_s,
            "speedup_over_one": round(one.wall_s / two.wall_s),
        },
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let hash_pages = env_number("HASH_PAGES", 4000)?;
    let local_pages = env_number("LOCAL_PAGES", 400)?;

    eprintln!("bench/pipeline: (a) {hash_pages} pages, hash provider");
    let hash_options = || {
        let mut options = StackOptions::new(hash_pages, Provider::Hash(384));
        options.large_pages = (hash_pages / 500).max(1);
        options
    };
    let (stack, hash) = synced_stack(hash_options()).await?;
    drop(stack);
    // The same without bulk mode: every vector inserted into the HNSW graph as it comes
    // (BULK_COMPARISON=0 leaves it out).
    let row_by_row = if env_number("BULK_COMPARISON", 1)? == 0 {
        None
    } else {
        eprintln!("bench/pipeline: (a) again without bulk mode");
        let mut options = hash_options();
        options.indexer.bulk.enter_backlog = 0;
        let (stack, row_by_row) = synced_stack(options).await?;
        drop(stack);
        Some(row_by_row)
    };

    // LOCAL_PAGES=0 measures (a) alone.
    let local = if local_pages == 0 {
        Value::Null
    } else {
        local_figures(local_pages).await?
    };

    println!(
        "{}",
        json!({
            "benchmark": "pipeline",
            "hash": {
                "pages": hash.pages,
                "chunks": hash.chunks,
                "wall_seconds": round(hash.wall_s),
                "pages_per_second": round(hash.pages as f64 / hash.wall_s),
                "stage_done_seconds": hash.stage_done_s,
                "searches_when_searchable": hash.searches_when_searchable,
                "confluence_requests": hash.confluence_requests,
                "goal_seconds": 30,
                "goal_met": searchable_s(&hash) <= 30.0,
                "without_bulk_mode": row_by_row.as_ref().map(|row_by_row| json!({
                    "wall_seconds": round(row_by_row.wall_s),
                    "stage_done_seconds": row_by_row.stage_done_s,
                    "searches_when_searchable": row_by_row.searches_when_searchable,
                })),
                "bulk_mode_speedup": row_by_row.as_ref().map(|row_by_row| round(row_by_row.wall_s / hash.wall_s)),
            },
            "local": local,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "loadavg": loadavg(),
        })
    );
    Ok(())
}
