//! Replay throughput (run by `ops/bench/replay`): PAGES pages (default 4,000) of CHUNKS_PER_PAGE
//! chunks (default 10, so 40,000 chunks of 384 dimensions) are published as `page.changed`,
//! `page.converted` and `chunks.ready` facts under a fresh bus root; then `pagestream replay`
//! (in-process, as the binary runs it) rebuilds them into an empty database. Prints one JSON
//! object: chunks per second projected, and what the rebuilt database holds.

use std::time::Instant;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use pagestream_events::{
    Chunk, ChunksReady, ContentMetadata, ContentType, Envelope, PageChanged, PageConverted, PageId,
    PageInfo, SourceKey, Vector,
};
use pagestream_sources::{AuthKind, SourceRecord, SourceRegistry, SourceSettings};
use pagestream_testkit::bench::{
    Words, delete_streams, drop_database, env_number, loadavg, random_unit_vector, round,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

const DIMENSION: usize = 384;
const MODEL: &str = "all-MiniLM-L6-v2";
const GOAL_CHUNKS_PER_SECOND: f64 = 5000.0;

/// The three facts of one page, as the pipeline would have published them.
fn page_events(
    source: &SourceKey,
    id: u64,
    chunks: usize,
    words: &Words,
    rng: &mut StdRng,
) -> (
    Envelope<PageChanged>,
    Envelope<PageConverted>,
    Envelope<ChunksReady>,
) {
    let title = words.sentence(rng, 4);
    let page = PageInfo {
        source: source.clone(),
        page_id: PageId::from(id),
        content_type: ContentType::Page,
        space_key: "BENCH".into(),
        title: title.clone(),
        version: 1,
        path: format!("/1/{}/{id}", id % 50 + 2),
        url: format!("https://example.atlassian.net/wiki/spaces/BENCH/pages/{id}"),
        ancestors: vec![],
        labels: vec!["runbook".into()],
        author: None,
        created_at: None,
        last_modified: Utc::now(),
        incarnation: 0,
        source_id: None,
    };
    let texts: Vec<String> = (0..chunks).map(|_| words.sentence(rng, 120)).collect();
    let markdown = texts.join("\n\n");
    let changed = Envelope::new(PageChanged {
        page: page.clone(),
        body_storage: format!("<p>{markdown}</p>"),
        comments: Vec::new(),
        attachments: Vec::new(),
        included: Vec::new(),
    });
    let converted = Envelope::new(PageConverted {
        page,
        metadata: ContentMetadata {
            word_count: (chunks * 120) as u64,
            content_length: markdown.len() as u64,
            ..ContentMetadata::default()
        },
        markdown,
    });
    let ready = Envelope::new(ChunksReady {
        source: source.clone(),
        page_id: PageId::from(id),
        space_key: "BENCH".into(),
        version: 1,
        model: MODEL.into(),
        dimension: DIMENSION as u32,
        chunks: texts
            .into_iter()
            .enumerate()
            .map(|(index, text)| Chunk {
                index: index as u32,
                content_hash: format!("{id}-{index}"),
                heading_path: vec![title.clone(), format!("Section {index}")],
                token_count: 160,
                text,
                vector: Vector(random_unit_vector(rng, DIMENSION)),
                code: None,
            })
            .collect(),
        incarnation: 0,
        source_id: None,
    });
    (changed, converted, ready)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pages = env_number("PAGES", 4000)?;
    let chunks_per_page = env_number("CHUNKS_PER_PAGE", 10)?;
    let batch_size = env_number("BATCH_SIZE", 64)?;
    let mut rng = StdRng::seed_from_u64(11);
    let words = Words::new(&mut rng);

    let bus = pagestream_testkit::bus().await;
    let source = SourceKey::new("bench")?;
    SourceRegistry::open(&bus)
        .await?
        .put(&SourceRecord {
            id: uuid::Uuid::new_v4(),
            key: source.clone(),
            site_url: "https://example.atlassian.net/wiki".into(),
            spaces: pagestream_sources::Spaces::one("BENCH"),
            auth_kind: AuthKind::Cloud,
            sealed_credentials: "not used by a replay".into(),
            settings: SourceSettings::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        })
        .await?;

    eprintln!("bench/replay: publishing {pages} pages of {chunks_per_page} chunks");
    let published = Instant::now();
    let events: Vec<_> = (0..pages as u64)
        .map(|id| page_events(&source, 100_000 + id, chunks_per_page, &words, &mut rng))
        .collect();
    futures::stream::iter(events)
        .map(|(changed, converted, ready)| {
            let bus = bus.clone();
            async move {
                bus.publish(&changed).await?;
                bus.publish(&converted).await?;
                bus.publish(&ready).await
            }
        })
        .buffer_unordered(32)
        .try_for_each(|_| async { Ok(()) })
        .await
        .context("publish the facts")?;
    let publish_s = published.elapsed().as_secs_f64();

    let (pool, database_url) = pagestream_testkit::empty_database().await;
    eprintln!("bench/replay: replaying into an empty database");
    let cli = pagestream_cli::Cli::try_parse_from([
        "pagestream",
        "--nats-url",
        &bus.config().nats_url,
        "--subject-root",
        &bus.config().root,
        "--database-url",
        &database_url,
        "replay",
        "--json",
        "--batch-size",
        &batch_size.to_string(),
    ])?;
    let mut out = Vec::new();
    pagestream_cli::run(cli, &mut out).await?;
    let report: serde_json::Value = serde_json::from_slice(&out).context("replay report")?;
    let (stored_pages, stored_chunks): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM confluence_pages WHERE markdown IS NOT NULL), \
         (SELECT count(*) FROM chunks)",
    )
    .fetch_one(&pool)
    .await?;
    let expected = (pages * chunks_per_page) as i64;
    if stored_pages != pages as i64 || stored_chunks != expected {
        bail!(
            "the replay stored {stored_pages} pages and {stored_chunks} chunks, not {pages} and {expected}"
        );
    }
    drop_database(pool, &database_url).await?;
    delete_streams(&bus).await?;

    let seconds = report["seconds"].as_f64().unwrap_or_default();
    let index_seconds = report["index_seconds"].as_f64().unwrap_or_default();
    // Projected: the rows written (pages, Markdown, chunks with vectors and tsvector); the HNSW
    // index is built once after a bulk replay and reported on its own.
    let projection_seconds = (seconds - index_seconds).max(1e-9);
    let chunks_per_second = stored_chunks as f64 / projection_seconds;
    println!(
        "{}",
        json!({
            "benchmark": "replay",
            "pages": pages,
            "chunks": stored_chunks,
            "dimension": DIMENSION,
            "events": report["events"],
            "batch_size": batch_size,
            "chunks_per_second": round(chunks_per_second),
            "events_per_second": round(report["events"].as_f64().unwrap_or_default() / projection_seconds),
            "projection_seconds": round(projection_seconds),
            "index_build_seconds": round(index_seconds),
            "replay_seconds": round(seconds),
            "chunks_per_second_with_index_build": round(stored_chunks as f64 / seconds.max(1e-9)),
            "goal_chunks_per_second": GOAL_CHUNKS_PER_SECOND,
            "goal_met": chunks_per_second >= GOAL_CHUNKS_PER_SECOND,
            "publish_seconds": round(publish_s),
            "loadavg": loadavg(),
        })
    );
    Ok(())
}
