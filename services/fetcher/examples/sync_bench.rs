//! Full sync of a simulated space (pages, blog posts, comments and attachments on both, folders
//! holding a quarter of the pages, the generated include macros) into JetStream, then a no-change
//! full re-sync and a no-change incremental one. Prints one JSON object: pages, blog posts,
//! comments, attachments, folders and pages with includes, wall time, items/s, Confluence requests
//! (and per item) of each run, attachment downloads, events of the re-syncs.
//!
//! `cargo run --release -p pagestream-fetcher --example sync_bench -- [PAGES] [BLOG_POSTS]
//! [COMMENTS] [ATTACHMENTS] [FOLDERS]` with the
//! dev stack up (`PAGESTREAM_NATS_URL`). Everything lives under a fresh subject root, deleted at the
//! end.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use confluence_sim::{CreatePage, MovePage, SimConfig};
use pagestream_events::{EventKind, SourceKey, SyncMode, SyncRequested};
use pagestream_fetcher::{Fetcher, FetcherOptions};
use pagestream_sources::{
    AuthKind, Credentials, Secret, SecretKey, SourceRecord, SourceRegistry, SourceSettings,
};
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pages: usize = match std::env::args().nth(1) {
        Some(value) => value.parse().context("PAGES must be a number")?,
        None => 4000,
    };
    let blog_posts: usize = match std::env::args().nth(2) {
        Some(value) => value.parse().context("BLOG_POSTS must be a number")?,
        None => 2000,
    };
    let comments: usize = match std::env::args().nth(3) {
        Some(value) => value.parse().context("COMMENTS must be a number")?,
        None => 10_000,
    };
    let attachments: usize = match std::env::args().nth(4) {
        Some(value) => value.parse().context("ATTACHMENTS must be a number")?,
        None => 1000,
    };
    let folders: usize = match std::env::args().nth(5) {
        Some(value) => value.parse().context("FOLDERS must be a number")?,
        None => 100,
    };
    let config = SimConfig {
        blog_post_count: blog_posts,
        comment_count: comments,
        attachment_count: attachments,
        ..SimConfig::new(42, pages)
    };
    let items = pages + blog_posts;
    let sim = confluence_sim::start(config, "127.0.0.1:0".parse()?).await?;
    // Folders in two levels under the homepage (a fifth at the top), every fourth page (with its
    // subtree) moved under one, round robin so that every folder holds pages: each folder a full
    // sync reads costs a request. The moves date the pages now, inside the incremental run's
    // window overlap.
    let homepage = sim
        .handle
        .homepage(sim.handle.space_id())
        .context("the space has a homepage")?;
    let top = folders.div_ceil(5);
    let mut folder_ids: Vec<u64> = Vec::with_capacity(folders);
    for n in 0..folders {
        let parent = if n < top {
            homepage
        } else {
            folder_ids[n % top]
        };
        let (folder, _) = sim
            .handle
            .create_folder(CreatePage {
                title: format!("Folder {n}"),
                parent_id: Some(parent),
                ..CreatePage::default()
            })
            .await?;
        folder_ids.push(folder.id);
    }
    if !folder_ids.is_empty() {
        let page_ids = sim.handle.current_page_ids();
        // The homepage holds the folders: it cannot move under one.
        let movable = page_ids
            .iter()
            .enumerate()
            .filter(|(n, page)| n % 4 == 1 && **page != homepage);
        for (n, page) in movable {
            let parent = folder_ids[(n / 4) % folder_ids.len()];
            sim.handle
                .move_page(
                    *page,
                    MovePage {
                        parent_id: Some(parent),
                    },
                )
                .await?;
        }
    }
    let with_includes = sim
        .handle
        .current_page_ids()
        .into_iter()
        .filter(|id| {
            sim.handle
                .body(*id)
                .is_some_and(|body| body.contains("ac:name=\"include\""))
        })
        .count();
    let bus = pagestream_testkit::bus().await;
    let registry = SourceRegistry::open(&bus).await?;
    let secret_key = SecretKey::parse(&SecretKey::generate())?;
    let source = SourceKey::new("bench")?;
    let credentials = Credentials {
        email: Some("sim@example.com".into()),
        token: Secret::new("sim-api-token"),
        webhook_secret: None,
        connect_client_key: None,
        webhook_path_secret: None,
    };
    registry
        .put(&SourceRecord {
            id: Uuid::new_v4(),
            key: source.clone(),
            site_url: sim.base_url(),
            spaces: pagestream_sources::Spaces::one(sim.handle.space_key()),
            auth_kind: AuthKind::Cloud,
            sealed_credentials: SourceRecord::seal_credentials(&secret_key, &credentials),
            settings: SourceSettings::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        })
        .await?;
    let fetcher =
        Arc::new(Fetcher::new(bus.clone(), registry, secret_key, FetcherOptions::default()).await?);
    let request = |mode| SyncRequested {
        source: source.clone(),
        run_id: Uuid::new_v4(),
        mode,
        reconcile_deletions: false,
        requested_at: Utc::now(),
    };

    let downloads = || sim.handle.stats().endpoint("download");
    let started = Instant::now();
    let full = fetcher.sync(&request(SyncMode::Full)).await?;
    let full_secs = started.elapsed().as_secs_f64();
    let full_downloads = downloads();
    let started = Instant::now();
    let resync = fetcher.sync(&request(SyncMode::Full)).await?;
    let resync_secs = started.elapsed().as_secs_f64();
    let resync_downloads = downloads() - full_downloads;
    let started = Instant::now();
    let incremental = fetcher.sync(&request(SyncMode::Incremental)).await?;
    let incremental_secs = started.elapsed().as_secs_f64();
    let incremental_downloads = downloads() - full_downloads - resync_downloads;
    let stored = bus
        .jetstream()
        .get_stream(bus.streams().for_kind(EventKind::PageChanged))
        .await?
        .get_info()
        .await?
        .state
        .messages;

    for kind in EventKind::ALL {
        let _ = bus
            .jetstream()
            .delete_stream(bus.streams().for_kind(kind))
            .await;
    }
    let prefix = bus.streams().prefix().to_owned();
    for stream in [
        bus.streams().dead_letters(),
        bus.streams().sync_progress(),
        format!("KV_{prefix}_SOURCES"),
        format!("KV_{prefix}_FETCHER_STATE"),
        format!("OBJ_{}", bus.streams().claim_check_bucket()),
    ] {
        let _ = bus.jetstream().delete_stream(stream).await;
    }

    let report = serde_json::json!({
        "pages": pages,
        "blog_posts": blog_posts,
        "comments": comments,
        "attachments": attachments,
        "folders": folders,
        "pages_with_includes": with_includes,
        "full_sync_wall_s": full_secs,
        "full_sync_items_per_s": items as f64 / full_secs,
        "full_sync_requests": full.requests,
        "full_sync_requests_per_item": full.requests as f64 / items as f64,
        "full_sync_events": full.pages_changed,
        "full_sync_attachment_downloads": full_downloads,
        "full_sync_requests_per_attachment": full_downloads as f64 / attachments.max(1) as f64,
        "page_changed_stored": stored,
        "resync_wall_s": resync_secs,
        "resync_requests": resync.requests,
        "resync_events": resync.pages_changed + resync.pages_deleted,
        "resync_attachment_downloads": resync_downloads,
        "incremental_resync_wall_s": incremental_secs,
        "incremental_resync_requests": incremental.requests,
        "incremental_resync_events": incremental.pages_changed + incremental.pages_deleted,
        "incremental_resync_attachment_downloads": incremental_downloads,
    });
    println!("{report}");
    Ok(())
}
