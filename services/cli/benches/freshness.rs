//! Freshness (run by `ops/bench/freshness`): edit to searchable, through the whole pipeline with
//! the `local` model. Every service runs in-process over the dev stack, with the Confluence
//! simulator; PAGES pages (default 50) are synced, then EDITS edits (default 100) are made one
//! after another in the simulator, which posts the webhook; after each, `/api/search` is polled
//! every POLL_MS (default 100) for a word only the edit added, until the full-text leg finds the
//! edited page. Then the same again (LOADED_EDITS edits, default 30) while a full sync of another
//! source of LOAD_PAGES pages (default 2,000; a second simulator) is in flight: edits travel in
//! the live lane, ahead of the sync's bulk backlog. Prints one JSON object: p50/p95/p99/max of
//! edit-to-searchable, unloaded and under the load.

#[allow(dead_code)]
#[path = "../tests/cli/stack.rs"]
mod stack;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use confluence_sim::{EditPage, SimConfig};
use pagestream_testkit::bench::{env_number, loadavg, percentile, round};
use rand::Rng;
use serde_json::{Value, json};
use stack::{API_KEY, Provider, SOURCE, Stack};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pages = env_number("PAGES", 50)?;
    let edits = env_number("EDITS", 100)?;
    let loaded_edits = env_number("LOADED_EDITS", 30)?;
    let load_pages = env_number("LOAD_PAGES", 2000)?;
    let poll = Duration::from_millis(env_number("POLL_MS", 100)? as u64);

    let stack = Stack::start(pages, Provider::Local).await;
    stack.add_source().await;
    eprintln!("bench/freshness: syncing {pages} pages with the local model");
    let synced = Instant::now();
    stack
        .cli(&["sync", SOURCE, "--full", "--wait"])
        .await
        .context("initial sync")?;
    let sync_s = synced.elapsed().as_secs_f64();
    stack
        .sim
        .handle
        .set_webhook_target(Some(stack.webhook_url.clone()));

    eprintln!("bench/freshness: {edits} edits");
    let unloaded = measure(&stack, edits, 0, poll).await?;

    // The load: another source's first full sync, from a simulator of its own.
    let load_sim = confluence_sim::start(
        SimConfig::new(12, load_pages),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .context("load simulator")?;
    let load_site = load_sim.base_url();
    stack
        .add_simulator_source("load", &load_site, &[])
        .await
        .context("add the load source")?;
    stack
        .cli(&["sync", "load", "--full"])
        .await
        .context("start the load sync")?;
    // Under way: its first pages converted, most of it still to embed.
    let started = Instant::now();
    while load_progress(&stack).await?.0 < 50 {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the load sync did not start within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = load_progress(&stack).await?;
    eprintln!("bench/freshness: {loaded_edits} edits during a {load_pages}-page full sync");
    let loaded = measure(&stack, loaded_edits, edits, poll).await?;
    let after = load_progress(&stack).await?;

    let goal = |figures: &Measured| {
        figures.timeouts == 0
            && figures.percentile(50.0) < 2000.0
            && figures.percentile(99.0) < 5000.0
    };
    println!(
        "{}",
        json!({
            "benchmark": "freshness",
            "provider": "local",
            "pages": pages,
            "poll_interval_ms": poll.as_millis() as u64,
            "unloaded": unloaded.figures(),
            "under_full_sync": loaded.figures(),
            "load": {
                "pages": load_pages,
                "converted_at_start": before.0,
                "embedded_at_start": before.1,
                "converted_at_end": after.0,
                "embedded_at_end": after.1,
                "still_in_flight_at_end": after.1 < load_pages as i64,
            },
            "goal_p50_ms": 2000,
            "goal_p99_ms": 5000,
            "goal_met_unloaded": goal(&unloaded),
            "goal_met_under_full_sync": goal(&loaded),
            "initial_sync_seconds": round(sync_s),
            "loadavg": loadavg(),
        })
    );
    Ok(())
}

/// Edit-to-searchable latencies of a run of edits.
struct Measured {
    latencies_ms: Vec<f64>,
    timeouts: usize,
    polls: u64,
    /// Searches that answered with a warning (no query vector: full text only).
    degraded: u64,
}

impl Measured {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::INFINITY;
        }
        percentile(&self.latencies_ms, p)
    }

    fn figures(&self) -> Value {
        let count = self.latencies_ms.len().max(1) as f64;
        json!({
            "edits": self.latencies_ms.len() + self.timeouts,
            "searchable": self.latencies_ms.len(),
            "timeouts": self.timeouts,
            "p50_ms": round(self.percentile(50.0)),
            "p95_ms": round(self.percentile(95.0)),
            "p99_ms": round(self.percentile(99.0)),
            "max_ms": round(self.latencies_ms.last().copied().unwrap_or_default()),
            "mean_ms": round(self.latencies_ms.iter().sum::<f64>() / count),
            "search_polls": self.polls,
            "searches_without_query_vector": self.degraded,
        })
    }
}

/// The load source's pages converted and embedded (indexed with chunks) so far.
async fn load_progress(stack: &Stack) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE p.markdown IS NOT NULL), \
                count(*) FILTER (WHERE p.chunks_version IS NOT NULL) \
         FROM confluence_pages p JOIN sources s ON s.id = p.source_id WHERE s.key = 'load'",
    )
    .fetch_one(&stack.pool)
    .await?)
}

/// Makes `edits` edits of the stack's pages one after another, each through the simulator's
/// webhook, and waits after each until the full-text leg finds the edited page by a word only the
/// edit added. `first` numbers the edits on from an earlier run.
async fn measure(
    stack: &Stack,
    edits: usize,
    first: usize,
    poll: Duration,
) -> anyhow::Result<Measured> {
    let http = reqwest::Client::new();
    let ids = stack.sim.handle.current_page_ids();
    let mut rng = rand::rng();
    let mut measured = Measured {
        latencies_ms: Vec::with_capacity(edits),
        timeouts: 0,
        polls: 0,
        degraded: 0,
    };
    for edit in first..first + edits {
        let page = ids[edit % ids.len()];
        let marker = format!("fresh{edit}x{:08x}", rng.random::<u32>());
        let body = stack.sim.handle.body(page).context("page body")?;
        let started = Instant::now();
        stack
            .sim
            .handle
            .edit(
                page,
                EditPage {
                    body: Some(format!(
                        "{body}<p>Release note: the deploy gate now checks {marker} before promoting.</p>"
                    )),
                    ..EditPage::default()
                },
            )
            .await
            .context("edit")?;
        let (mut searches, mut slowest_ms) = (0u32, 0f64);
        let found = loop {
            measured.polls += 1;
            searches += 1;
            let response: Value = http
                // The marker is [a-z0-9]: no escaping needed.
                .get(format!("{}/api/search?q={marker}&limit=50", stack.api_url))
                .bearer_auth(API_KEY)
                .send()
                .await?
                .json()
                .await?;
            slowest_ms = slowest_ms.max(response["took_ms"].as_f64().unwrap_or_default());
            if response["warnings"]
                .as_array()
                .is_some_and(|warnings| !warnings.is_empty())
            {
                measured.degraded += 1;
            }
            // Found by the full-text leg. The pages that include the edited one show the marker
            // too and may rank above it, so the limit leaves room for them.
            let page_id = page.to_string();
            let found = response["hits"].as_array().is_some_and(|hits| {
                hits.iter().any(|hit| {
                    hit["page_id"].as_str() == Some(page_id.as_str())
                        && hit["text_rank"].as_i64().is_some()
                })
            });
            if found {
                break true;
            }
            if started.elapsed() > TIMEOUT {
                break false;
            }
            tokio::time::sleep(poll).await;
        };
        if found {
            let took_ms = started.elapsed().as_secs_f64() * 1000.0;
            eprintln!(
                "bench/freshness: edit {edit} of page {page} searchable in {took_ms:.0} ms \
                 ({searches} searches, the slowest {slowest_ms:.0} ms)"
            );
            measured.latencies_ms.push(took_ms);
        } else {
            measured.timeouts += 1;
            eprintln!(
                "bench/freshness: edit {edit} of page {page} not searchable within {TIMEOUT:?}"
            );
        }
    }
    measured.latencies_ms.sort_by(f64::total_cmp);
    Ok(measured)
}
