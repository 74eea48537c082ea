//! Freshness (run by `ops/bench/freshness`): edit to searchable, through the whole pipeline with
//! the `local` model. Every service runs in-process over the dev stack, with the Confluence
//! simulator; PAGES pages (default 50) are synced, then EDITS edits (default 100) are made one
//! after another in the simulator, which posts the webhook; after each, `/api/search` is polled
//! every POLL_MS (default 100) for a word only the edit added, until the full-text leg finds the
//! edited page. Prints one JSON object: p50/p95/p99/max of edit-to-searchable.

#[allow(dead_code)]
#[path = "../tests/cli/stack.rs"]
mod stack;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use confluence_sim::EditPage;
use pagestream_testkit::bench::{env_number, loadavg, percentile, round};
use rand::Rng;
use serde_json::{Value, json};
use stack::{API_KEY, Provider, SOURCE, Stack};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pages = env_number("PAGES", 50)?;
    let edits = env_number("EDITS", 100)?;
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

    let http = reqwest::Client::new();
    let ids = stack.sim.handle.current_page_ids();
    let mut rng = rand::rng();
    let mut latencies = Vec::with_capacity(edits);
    let mut timeouts = 0;
    let mut polls = 0u64;
    eprintln!("bench/freshness: {edits} edits");
    for edit in 0..edits {
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
        let found = loop {
            polls += 1;
            let response: Value = http
                // The marker is [a-z0-9]: no escaping needed.
                .get(format!("{}/api/search?q={marker}&limit=3", stack.api_url))
                .bearer_auth(API_KEY)
                .send()
                .await?
                .json()
                .await?;
            // Found by the full-text leg (the marker is in no other page; the fused order of a
            // one-word query may still put a vector-only hit first).
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
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        } else {
            timeouts += 1;
            eprintln!(
                "bench/freshness: edit {edit} of page {page} not searchable within {TIMEOUT:?}"
            );
        }
    }
    if latencies.is_empty() {
        bail!("no edit became searchable");
    }
    latencies.sort_by(f64::total_cmp);
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    println!(
        "{}",
        json!({
            "benchmark": "freshness",
            "provider": "local",
            "pages": pages,
            "edits": edits,
            "searchable": latencies.len(),
            "timeouts": timeouts,
            "poll_interval_ms": poll.as_millis() as u64,
            "p50_ms": round(p50),
            "p95_ms": round(percentile(&latencies, 95.0)),
            "p99_ms": round(p99),
            "max_ms": round(latencies.last().copied().unwrap_or_default()),
            "mean_ms": round(latencies.iter().sum::<f64>() / latencies.len() as f64),
            "search_polls": polls,
            "goal_p50_ms": 2000,
            "goal_p99_ms": 5000,
            "goal_met": timeouts == 0 && p50 < 2000.0 && p99 < 5000.0,
            "initial_sync_seconds": round(sync_s),
            "loadavg": loadavg(),
        })
    );
    Ok(())
}
