//! The indexer against real Postgres and NATS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use pagestream_bus::Bus;
use pagestream_events::*;
use pagestream_indexer::projection::SourceIds;
use pagestream_indexer::{IndexerConfig, Projected, apply_batch};
use pagestream_sources::{AuthKind, SourceRecord, SourceRegistry, SourceSettings};
use sqlx::PgPool;

fn source() -> SourceKey {
    SourceKey::new("eng").expect("source")
}

fn info(id: u64, version: u64) -> PageInfo {
    PageInfo {
        source: source(),
        page_id: PageId::from(id),
        content_type: ContentType::Page,
        space_key: "ENG".into(),
        title: format!("Page {id} v{version}"),
        version,
        path: format!("/1/{id}"),
        url: format!("https://example.atlassian.net/wiki/spaces/ENG/pages/{id}"),
        ancestors: vec![],
        labels: vec!["ops".into()],
        author: None,
        created_at: None,
        last_modified: Utc::now(),
        incarnation: 0,
        source_id: None,
    }
}

fn changed(id: u64, version: u64) -> Envelope<PageChanged> {
    Envelope::new(PageChanged {
        page: info(id, version),
        body_storage: format!("<p>v{version}</p>"),
        comments: Vec::new(),
        attachments: Vec::new(),
        included: Vec::new(),
    })
}

fn chunks(id: u64, version: u64, count: u32) -> Envelope<ChunksReady> {
    Envelope::new(ChunksReady {
        source: source(),
        page_id: PageId::from(id),
        space_key: "ENG".into(),
        version,
        model: "all-MiniLM-L6-v2".into(),
        dimension: 384,
        chunks: (0..count)
            .map(|index| Chunk {
                index,
                text: format!("page {id} version {version} chunk {index}"),
                heading_path: vec![format!("Page {id}"), format!("Section {index}")],
                content_hash: format!("{id}-{version}-{index}"),
                token_count: 7,
                vector: Vector(
                    (0..384)
                        .map(|d| ((d + index as usize) % 7) as f32 / 7.0)
                        .collect(),
                ),
                code: None,
            })
            .collect(),
        incarnation: 0,
        source_id: None,
    })
}

fn deleted(id: u64, version: u64) -> Envelope<PageDeleted> {
    Envelope::new(PageDeleted {
        source: source(),
        page_id: PageId::from(id),
        version,
        space_key: Some("ENG".into()),
        deleted_at: Utc::now(),
        reason: None,
        incarnation: 0,
        source_id: None,
    })
}

fn record() -> SourceRecord {
    SourceRecord {
        id: uuid::Uuid::new_v4(),
        key: source(),
        site_url: "https://example.atlassian.net".into(),
        spaces: pagestream_sources::Spaces::one("ENG"),
        auth_kind: AuthKind::Cloud,
        sealed_credentials: "sealed".into(),
        settings: SourceSettings::default(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

async fn database_with_source() -> PgPool {
    let (pool, _) = pagestream_testkit::database().await;
    pagestream_indexer::projection::upsert_source(&pool, &record())
        .await
        .expect("source");
    pool
}

async fn apply<T: Projected>(pool: &PgPool, event: &Envelope<T>) {
    let results = apply_batch(pool, &SourceIds::default(), &[event]).await;
    for result in results {
        result.expect("applied");
    }
}

async fn page_state(pool: &PgPool, id: u64) -> (i64, bool, String, i64) {
    let (version, is_deleted, title): (i64, bool, String) = sqlx::query_as(
        "SELECT version, is_deleted, title FROM confluence_pages WHERE page_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(pool)
    .await
    .expect("page row");
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE page_id = $1")
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .expect("count");
    (version, is_deleted, title, chunks)
}

#[tokio::test]
async fn versions_only_move_forward_and_duplicates_change_nothing() {
    let pool = database_with_source().await;
    apply(&pool, &changed(1, 3)).await;
    apply(&pool, &chunks(1, 3, 4)).await;
    // An older version arriving late, and the same events again.
    apply(&pool, &changed(1, 2)).await;
    apply(&pool, &chunks(1, 2, 9)).await;
    apply(&pool, &changed(1, 3)).await;
    apply(&pool, &chunks(1, 3, 4)).await;
    assert_eq!(
        page_state(&pool, 1).await,
        (3, false, "Page 1 v3".into(), 4)
    );
    // A newer version replaces the chunks.
    apply(&pool, &chunks(1, 4, 2)).await;
    apply(&pool, &changed(1, 4)).await;
    assert_eq!(
        page_state(&pool, 1).await,
        (4, false, "Page 1 v4".into(), 2)
    );
}

/// The same chunk set twice (a redelivery, or a live event taken by the live lane and then by the
/// stage's consumer) counts once in its sync run: the run's figures say how many pages it brought.
#[tokio::test]
async fn the_same_chunks_applied_twice_count_once_in_their_sync_run() {
    let pool = database_with_source().await;
    let run = uuid::Uuid::new_v4();
    apply(&pool, &changed(1, 3)).await;
    for _ in 0..2 {
        apply(&pool, &chunks(1, 3, 4).with_sync_run(Some(run))).await;
    }
    // Another incarnation of the version with the same chunks (a label change) is a page again.
    let mut relabelled = chunks(1, 3, 4);
    relabelled.data.incarnation = 1;
    apply(
        &pool,
        &Envelope::new(relabelled.data).with_sync_run(Some(run)),
    )
    .await;
    let (embedded, indexed): (i64, i64) =
        sqlx::query_as("SELECT pages_embedded, pages_indexed FROM sync_runs WHERE id = $1")
            .bind(run)
            .fetch_one(&pool)
            .await
            .expect("run");
    assert_eq!((embedded, indexed), (2, 2));
    assert_eq!(page_state(&pool, 1).await.3, 4);
}

#[tokio::test]
async fn an_edit_rewrites_only_the_chunks_it_changed() {
    let pool = database_with_source().await;
    // Chunks as of version 2: 20 chunks, the same as version 1's but chunk 7, and chunk 19 gone.
    let edited = |version: u64, count: u32| {
        let mut event = chunks(1, version, count);
        for chunk in &mut event.data.chunks {
            if !(version == 2 && chunk.index == 7) {
                chunk.text = format!("page 1 chunk {}", chunk.index);
                chunk.content_hash = format!("1-{}", chunk.index);
            }
        }
        event
    };
    apply(&pool, &changed(1, 1)).await;
    apply(&pool, &edited(1, 20)).await;
    // A row's xmin is the transaction that wrote it: a rewritten row (and its HNSW entry) has a
    // new one.
    let rows = |pool: PgPool| async move {
        sqlx::query_as::<_, (i32, String, i64, String)>(
            "SELECT chunk_index, xmin::text, page_version, text FROM chunks \
             WHERE page_id = '1' ORDER BY chunk_index",
        )
        .fetch_all(&pool)
        .await
        .expect("rows")
    };
    let before = rows(pool.clone()).await;
    apply(&pool, &changed(1, 2)).await;
    apply(&pool, &edited(2, 19)).await;
    let after = rows(pool.clone()).await;
    assert_eq!(after.len(), 19);
    let rewritten: Vec<i32> = after
        .iter()
        .zip(&before)
        .filter(|(new, old)| new.1 != old.1)
        .map(|(new, _)| new.0)
        .collect();
    assert_eq!(rewritten, vec![7], "only the edited chunk is written again");
    assert_eq!(after[7].2, 2);
    assert_eq!(after[7].3, "page 1 version 2 chunk 7");
    assert_eq!(
        after[6].2, 1,
        "an unchanged chunk keeps the version it was written at"
    );

    // Version 3 only drops the last chunk: no row is written, none is of version 3.
    apply(&pool, &changed(1, 3)).await;
    let mut dropped = edited(2, 18);
    dropped.data.version = 3;
    apply(&pool, &dropped).await;
    let latest = rows(pool.clone()).await;
    assert_eq!(latest[..], after[..18]);
    // Version 2's chunks arriving late change nothing: the page says which version its chunks
    // are, the rows cannot.
    apply(&pool, &edited(2, 19)).await;
    apply(&pool, &edited(1, 20)).await;
    assert_eq!(rows(pool.clone()).await, latest);
}

#[tokio::test]
async fn a_deleted_page_stays_deleted_until_a_newer_version() {
    let pool = database_with_source().await;
    apply(&pool, &changed(2, 5)).await;
    apply(&pool, &chunks(2, 5, 3)).await;
    apply(&pool, &deleted(2, 5)).await;
    assert!(page_state(&pool, 2).await.1);
    assert_eq!(page_state(&pool, 2).await.3, 0);
    // Late events of the deleted version or older do not bring it back.
    apply(&pool, &changed(2, 5)).await;
    apply(&pool, &chunks(2, 4, 3)).await;
    apply(&pool, &chunks(2, 5, 3)).await;
    let (version, is_deleted, _, chunk_count) = page_state(&pool, 2).await;
    assert_eq!((version, is_deleted, chunk_count), (5, true, 0));
    // A restore is a newer version.
    apply(&pool, &changed(2, 6)).await;
    apply(&pool, &chunks(2, 6, 1)).await;
    let (version, is_deleted, _, chunk_count) = page_state(&pool, 2).await;
    assert_eq!((version, is_deleted, chunk_count), (6, false, 1));
    // A deletion event for a page never seen leaves a tombstone.
    apply(&pool, &deleted(3, 1)).await;
    apply(&pool, &changed(3, 1)).await;
    assert!(page_state(&pool, 3).await.1);
}

fn restored(
    id: u64,
    version: u64,
    incarnation: u64,
) -> (Envelope<PageChanged>, Envelope<ChunksReady>) {
    let changed = Envelope::new(PageChanged {
        page: PageInfo {
            incarnation,
            ..info(id, version)
        },
        body_storage: format!("<p>v{version}</p>"),
        comments: Vec::new(),
        attachments: Vec::new(),
        included: Vec::new(),
    });
    let mut ready = chunks(id, version, 2).data;
    ready.incarnation = incarnation;
    (changed, Envelope::new(ready))
}

#[tokio::test]
async fn a_page_restored_with_its_version_comes_back_and_a_stale_tombstone_keeps_it() {
    let pool = database_with_source().await;
    apply(&pool, &changed(7, 4)).await;
    apply(&pool, &chunks(7, 4, 3)).await;
    apply(&pool, &deleted(7, 4)).await;
    // Confluence keeps the version on restore: the fetcher emits the next incarnation.
    let (changed_again, chunks_again) = restored(7, 4, 1);
    apply(&pool, &chunks_again).await;
    apply(&pool, &changed_again).await;
    let (version, is_deleted, _, chunk_count) = page_state(&pool, 7).await;
    assert_eq!((version, is_deleted, chunk_count), (4, false, 2));
    // The first tombstone again (a redelivery, a replay) changes nothing; the second trash does.
    apply(&pool, &deleted(7, 4)).await;
    assert!(!page_state(&pool, 7).await.1);
    assert_eq!(page_state(&pool, 7).await.3, 2);
    let mut second = deleted(7, 4).data;
    second.incarnation = 1;
    apply(&pool, &Envelope::new(second)).await;
    assert!(page_state(&pool, 7).await.1);
}

#[tokio::test]
async fn a_move_or_a_label_change_of_the_same_version_is_applied() {
    let pool = database_with_source().await;
    apply(&pool, &changed(8, 2)).await;
    let mut moved = changed(8, 2).data;
    moved.page.path = "/1/5/8".into();
    moved.page.labels = vec!["runbook".into()];
    apply(&pool, &Envelope::new(moved)).await;
    let (path, labels): (String, serde_json::Value) = sqlx::query_as(
        "SELECT path, metadata -> 'labels' FROM confluence_pages WHERE page_id = '8'",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(path, "/1/5/8");
    assert_eq!(labels, serde_json::json!(["runbook"]));
}

#[tokio::test]
async fn a_comment_change_s_new_incarnation_replaces_the_markdown_of_the_same_version() {
    let pool = database_with_source().await;
    let converted = |incarnation: u64, markdown: &str| {
        let mut page = info(9, 3);
        page.incarnation = incarnation;
        Envelope::new(PageConverted {
            page,
            markdown: markdown.to_owned(),
            metadata: ContentMetadata::default(),
        })
    };
    let markdown = || async {
        sqlx::query_scalar::<_, String>("SELECT markdown FROM confluence_pages WHERE page_id = '9'")
            .fetch_one(&pool)
            .await
            .expect("row")
    };
    apply(&pool, &converted(0, "Body.\n")).await;
    // The fetcher's page.changed of the next incarnation arrives first, then its conversion.
    let mut recommented = changed(9, 3).data;
    recommented.page.incarnation = 1;
    apply(&pool, &Envelope::new(recommented)).await;
    apply(
        &pool,
        &converted(1, "Body.\n\n## Comments\n\n### Comment by a\n\nShip it.\n"),
    )
    .await;
    assert!(markdown().await.contains("Ship it."));
    // A late conversion of the earlier incarnation changes nothing.
    apply(&pool, &converted(0, "Body.\n")).await;
    assert!(markdown().await.contains("Ship it."));
}

#[tokio::test]
async fn a_late_chunk_set_of_an_earlier_incarnation_does_not_replace_the_newer_one() {
    let pool = database_with_source().await;
    // An includer re-emitted after its included page changed: same version, new incarnation,
    // other chunks. Two embedder replicas may finish them in either order.
    let chunks_of = |incarnation: u64, count: u32| {
        let mut event = chunks(12, 4, count).data;
        event.incarnation = incarnation;
        for chunk in &mut event.chunks {
            chunk.text = format!("incarnation {incarnation} {}", chunk.text);
            chunk.content_hash = format!("i{incarnation}-{}", chunk.content_hash);
        }
        Envelope::new(event)
    };
    let stored = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT string_agg(text, '|' ORDER BY chunk_index) FROM chunks WHERE page_id = '12'",
        )
        .fetch_one(&pool)
        .await
        .expect("chunks")
    };
    apply(&pool, &chunks_of(1, 3)).await;
    apply(&pool, &chunks_of(0, 2)).await;
    let texts = stored().await;
    assert_eq!(texts.matches("incarnation 1 ").count(), 3, "{texts}");
    assert!(!texts.contains("incarnation 0 "), "{texts}");
    // A later incarnation still replaces them.
    apply(&pool, &chunks_of(2, 2)).await;
    let texts = stored().await;
    assert_eq!(texts.matches("incarnation 2 ").count(), 2, "{texts}");
    assert!(!texts.contains("incarnation 1 "), "{texts}");
}

#[tokio::test]
async fn a_blog_post_is_projected_as_one_and_deleted_like_a_page() {
    let pool = database_with_source().await;
    let mut post = changed(12, 3).data;
    post.page.content_type = ContentType::Blogpost;
    post.page.path = "/12".into();
    apply(&pool, &Envelope::new(post)).await;
    apply(&pool, &chunks(12, 3, 2)).await;
    apply(&pool, &changed(13, 1)).await;
    let kinds: Vec<(String, String)> =
        sqlx::query_as("SELECT page_id, content_type FROM confluence_pages ORDER BY page_id")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert_eq!(
        kinds,
        [
            ("12".to_owned(), "blogpost".to_owned()),
            ("13".to_owned(), "page".to_owned())
        ]
    );
    apply(&pool, &deleted(12, 3)).await;
    let (_, is_deleted, _, chunk_count) = page_state(&pool, 12).await;
    assert_eq!((is_deleted, chunk_count), (true, 0));
}

#[tokio::test]
async fn a_deletion_whose_version_the_fetcher_never_knew_still_deletes() {
    let pool = database_with_source().await;
    apply(&pool, &changed(9, 6)).await;
    apply(&pool, &chunks(9, 6, 2)).await;
    apply(&pool, &deleted(9, 0)).await;
    let (version, is_deleted, _, chunk_count) = page_state(&pool, 9).await;
    assert_eq!((version, is_deleted, chunk_count), (6, true, 0));
    // Late events of the known version stay deleted.
    apply(&pool, &changed(9, 6)).await;
    assert!(page_state(&pool, 9).await.1);
}

#[tokio::test]
async fn readers_never_see_a_page_without_chunks_while_it_is_replaced() {
    let pool = database_with_source().await;
    apply(&pool, &changed(4, 1)).await;
    apply(&pool, &chunks(4, 1, 10)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let pool = pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let counts: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT count(*), count(DISTINCT page_version) FROM chunks WHERE page_id = '4'",
                )
                .fetch_all(&pool)
                .await
                .expect("read");
                let (count, versions) = counts[0];
                assert!(count > 0, "a reader saw the page with no chunks");
                assert_eq!(versions, 1, "a reader saw a mix of two versions");
                reads += 1;
            }
            reads
        })
    };
    for version in 2..40 {
        apply(&pool, &chunks(4, version, 5 + (version as u32 % 7))).await;
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.await.expect("reader");
    assert!(reads > 10, "reader made only {reads} reads");
}

#[tokio::test]
async fn replicas_project_a_new_source_at_once_and_a_recreated_key_replaces_the_old() {
    let (pool, _) = pagestream_testkit::database().await;
    for _ in 0..20 {
        let source = record();
        let (a, b) = tokio::join!(
            pagestream_indexer::projection::upsert_source(&pool, &source),
            pagestream_indexer::projection::upsert_source(&pool, &source),
        );
        a.expect("first replica");
        b.expect("second replica");
    }
    let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT id, key FROM sources")
        .fetch_all(&pool)
        .await
        .expect("sources");
    assert_eq!(rows.len(), 1, "one row per key: {rows:?}");
}

#[tokio::test]
async fn a_late_event_of_a_source_removed_and_added_again_is_not_projected_into_the_new_one() {
    let (pool, _) = pagestream_testkit::database().await;
    let ids = SourceIds::default();
    let removed = record();
    pagestream_indexer::projection::upsert_source(&pool, &removed)
        .await
        .expect("source");
    let of = |source: &SourceRecord, id: u64, version: u64| {
        let mut event = changed(id, version).data;
        event.page.source_id = Some(source.id);
        Envelope::new(event)
    };
    let applied = apply_batch(&pool, &ids, &[&of(&removed, 1, 1)]).await;
    assert!(applied.iter().all(Result::is_ok), "{applied:?}");
    pagestream_indexer::projection::remove_source(&pool, &ids, &source())
        .await
        .expect("remove");
    let added_again = record();
    pagestream_indexer::projection::upsert_source(&pool, &added_again)
        .await
        .expect("source added again");
    // A converter or embedder that held the removed source's event publishes it late.
    let late = apply_batch(&pool, &ids, &[&of(&removed, 2, 5)]).await;
    assert!(
        matches!(
            late.as_slice(),
            [Err(
                pagestream_indexer::projection::ProjectionError::OtherSource { .. }
            )]
        ),
        "{late:?}"
    );
    let fresh = apply_batch(&pool, &ids, &[&of(&added_again, 2, 1)]).await;
    assert!(fresh.iter().all(Result::is_ok), "{fresh:?}");
    let pages: Vec<(String, i64)> =
        sqlx::query_as("SELECT page_id, version FROM confluence_pages ORDER BY page_id")
            .fetch_all(&pool)
            .await
            .expect("pages");
    assert_eq!(pages, [("2".to_owned(), 1)]);
}

#[tokio::test]
async fn an_event_applied_while_its_source_is_removed_is_not_a_poison_event() {
    let pool = database_with_source().await;
    // This replica resolved the source's id before another one projected its removal.
    let ids = SourceIds::default();
    let applied = apply_batch(&pool, &ids, &[&changed(1, 1)]).await;
    assert!(applied.iter().all(Result::is_ok), "{applied:?}");
    // And the progress projection resolved it too.
    let progress_ids = SourceIds::default();
    let mut conn = pool.acquire().await.expect("connection");
    pagestream_indexer::projection::apply_progress(
        &mut conn,
        &progress_ids,
        &progress(uuid::Uuid::new_v4()),
    )
    .await
    .expect("progress");
    pagestream_indexer::projection::remove_source(&pool, &SourceIds::default(), &source())
        .await
        .expect("remove");
    // Unknown source, not a failed write: the registry then decides (drop, or wait for a re-add).
    for late in [
        apply_batch(&pool, &ids, &[&chunks(2, 1, 2)]).await,
        apply_batch(&pool, &ids, &[&changed(3, 1)]).await,
    ] {
        assert!(
            matches!(
                late.as_slice(),
                [Err(
                    pagestream_indexer::projection::ProjectionError::UnknownSource(_)
                )]
            ),
            "{late:?}"
        );
    }
    // A sync run's progress alike (a source removed and added again under its key while its
    // first sync starts: the progress of the new run must wait for the new row, not dead-letter).
    let late = pagestream_indexer::projection::apply_progress(
        &mut conn,
        &progress_ids,
        &progress(uuid::Uuid::new_v4()),
    )
    .await;
    assert!(
        matches!(
            late,
            Err(pagestream_indexer::projection::ProjectionError::UnknownSource(_))
        ),
        "{late:?}"
    );
}

#[tokio::test]
async fn deleting_a_source_removes_its_pages_and_chunks() {
    let pool = database_with_source().await;
    apply(&pool, &changed(5, 1)).await;
    apply(&pool, &chunks(5, 1, 3)).await;
    pagestream_indexer::projection::remove_source(&pool, &SourceIds::default(), &source())
        .await
        .expect("remove");
    for table in ["confluence_pages", "chunks", "sources"] {
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .expect("count");
        assert_eq!(count, 0, "{table} not empty");
    }
}

async fn snapshot(pool: &PgPool) -> Vec<String> {
    let mut rows: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', page_id, title, version, is_deleted, path, metadata::text, labels::text, jira_keys::text, mentions::text, markdown, markdown_version, chunks_version) FROM confluence_pages ORDER BY page_id",
    )
    .fetch_all(pool)
    .await
    .expect("pages");
    let chunk_rows: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', page_id, embedding_model, chunk_index, page_version, text, heading_path::text, content_hash, embedding::text) FROM chunks ORDER BY page_id, chunk_index",
    )
    .fetch_all(pool)
    .await
    .expect("chunks");
    rows.extend(chunk_rows);
    rows
}

/// Waits until the live database holds `expected` chunks, no live page waits for its Markdown and
/// `deleted` pages are tombstones: a page's last event may be its deletion, so the chunk count
/// alone can match while a page's deletion is still on its way.
async fn wait_for_projection(pool: &PgPool, expected: i64, deleted: i64) {
    let mut last = (0, 0, 0);
    for _ in 0..600 {
        let counts: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM chunks), \
             (SELECT count(*) FROM confluence_pages WHERE markdown IS NULL AND NOT is_deleted), \
             (SELECT count(*) FROM confluence_pages WHERE is_deleted)",
        )
        .fetch_one(pool)
        .await
        .expect("count");
        if counts == (expected, 0, deleted) {
            return;
        }
        last = counts;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "live indexer did not reach {expected} chunks and {deleted} tombstones: \
         (chunks, pages without markdown, tombstones) = {last:?}"
    );
}

/// Runs the live indexer (two replicas) over a few hundred pages, then replays the streams into an
/// empty database: both must be equal.
#[tokio::test]
async fn replay_rebuilds_what_two_live_replicas_built() {
    let bus: Bus = pagestream_testkit::bus().await;
    let registry = SourceRegistry::open(&bus).await.expect("registry");
    registry.put(&record()).await.expect("put source");
    let (live, _) = pagestream_testkit::database().await;

    let supervisors: Vec<_> = (0..2)
        .map(|_| {
            let supervisor = pagestream_service::Supervisor::new();
            pagestream_indexer::spawn_all(
                &supervisor,
                &bus,
                registry.clone(),
                &live,
                &IndexerConfig::default(),
            );
            supervisor
        })
        .collect();

    let pages = 300u64;
    let mut expected_chunks = 0;
    for id in 1..=pages {
        let version = 1 + id % 3;
        bus.publish(&changed(id, version)).await.expect("publish");
        bus.publish(&Envelope::new(PageConverted {
            page: info(id, version),
            markdown: format!("# Page {id}\n\nversion {version}"),
            metadata: ContentMetadata {
                jira_issue_links: vec![format!("OPS-{id}")],
                word_count: 3,
                ..Default::default()
            },
        }))
        .await
        .expect("publish");
        let count = 1 + (id % 4) as u32;
        bus.publish(&chunks(id, version, count))
            .await
            .expect("publish");
        if id % 10 == 0 {
            bus.publish(&deleted(id, version)).await.expect("publish");
            bus.purge_page(&source(), &PageId::from(id))
                .await
                .expect("purge");
        } else {
            expected_chunks += count as i64;
        }
    }
    wait_for_projection(&live, expected_chunks, (pages / 10) as i64).await;
    for supervisor in &supervisors {
        supervisor.token().cancel();
    }
    for supervisor in supervisors {
        supervisor
            .run(Duration::from_secs(10))
            .await
            .expect("stops");
    }

    let (rebuilt, _) = pagestream_testkit::database().await;
    let mut last = None;
    let report = pagestream_indexer::replay::replay(&bus, &registry, &rebuilt, 128, |progress| {
        last = Some(progress)
    })
    .await
    .expect("replay");
    assert_eq!(report.skipped, 0);
    assert!(last.is_some(), "no progress reported");
    assert_eq!(report.chunks as i64, expected_chunks);
    let live_rows = snapshot(&live).await;
    let rebuilt_rows = snapshot(&rebuilt).await;
    assert_eq!(live_rows.len(), rebuilt_rows.len());
    if let Some((live_row, rebuilt_row)) = live_rows
        .iter()
        .zip(&rebuilt_rows)
        .find(|(live_row, rebuilt_row)| live_row != rebuilt_row)
    {
        panic!(
            "replayed database differs from the live one:\nlive:    {live_row}\nrebuilt: {rebuilt_row}"
        );
    }
    // Purged pages are only tombstones in the rebuilt database too.
    let deleted_pages: i64 =
        sqlx::query_scalar("SELECT count(*) FROM confluence_pages WHERE is_deleted")
            .fetch_one(&rebuilt)
            .await
            .expect("count");
    assert_eq!(deleted_pages, (pages / 10) as i64);
}

/// The migration's vector index of the test model, as an oid (none: it does not exist).
async fn vector_index_oid(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar("SELECT to_regclass('chunks_embedding_all_minilm_l6_v2')::oid::bigint")
        .fetch_one(pool)
        .await
        .expect("index oid")
}

/// Whether the full-text index exists.
async fn text_index_exists(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT to_regclass('chunks_tsv') IS NOT NULL")
        .fetch_one(pool)
        .await
        .expect("text index")
}

/// The bulk-mode rule: the search indexes (vector and full text) go at the entry backlog, stay gone in between (an exact
/// scan still ranks vectors), and are built again at the exit backlog once the load has ended;
/// each step only once.
#[tokio::test]
async fn bulk_mode_drops_the_vector_index_at_a_backlog_and_builds_it_when_worked_off() {
    use pagestream_indexer::bulk::{BulkConfig, Transition, adjust};
    let pool = database_with_source().await;
    apply(&pool, &changed(1, 1)).await;
    apply(&pool, &chunks(1, 1, 3)).await;
    let config = BulkConfig {
        enter_backlog: 100,
        leave_backlog: 10,
        ..BulkConfig::default()
    };
    let before = vector_index_oid(&pool)
        .await
        .expect("the migration's index");
    assert_eq!(
        adjust(&pool, &config, 50, 0).await.expect("adjust"),
        Transition::Unchanged
    );
    assert_eq!(
        adjust(&pool, &config, 5, 0).await.expect("adjust"),
        Transition::Unchanged
    );
    assert_eq!(vector_index_oid(&pool).await, Some(before));

    assert_eq!(
        adjust(&pool, &config, 100, 0).await.expect("adjust"),
        Transition::Entered(2)
    );
    assert_eq!(vector_index_oid(&pool).await, None);
    assert!(!text_index_exists(&pool).await);
    assert_eq!(
        adjust(&pool, &config, 5000, 0).await.expect("adjust"),
        Transition::Unchanged
    );
    assert_eq!(
        adjust(&pool, &config, 11, 0).await.expect("adjust"),
        Transition::Unchanged
    );
    assert_eq!(
        vector_index_oid(&pool).await,
        None,
        "between the bounds nothing changes"
    );
    // Chunks still load, and the nearest ones are still found, by an exact scan.
    apply(&pool, &chunks(2, 1, 2)).await;
    let nearest: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM chunks WHERE embedding_model = 'all-MiniLM-L6-v2' \
         ORDER BY embedding::vector(384) <=> (SELECT embedding FROM chunks LIMIT 1) LIMIT 4) n",
    )
    .fetch_one(&pool)
    .await
    .expect("nearest");
    assert_eq!(nearest, 4);

    // Worked off, but events still pour in: the load goes on, the index waits for its end.
    assert_eq!(
        adjust(&pool, &config, 10, 500).await.expect("adjust"),
        Transition::Unchanged
    );
    assert_eq!(vector_index_oid(&pool).await, None);
    assert_eq!(
        adjust(&pool, &config, 10, 0).await.expect("adjust"),
        Transition::Left(2)
    );
    let after = vector_index_oid(&pool).await.expect("built again");
    assert!(
        text_index_exists(&pool).await,
        "the text index is built again"
    );
    // Read through the index (five rows would otherwise be scanned).
    let mut conn = pool.begin().await.expect("transaction");
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .expect("set");
    let matching: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM chunks WHERE tsv @@ plainto_tsquery('english', 'chunk')",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("text match");
    drop(conn);
    assert_eq!(matching, 5, "every chunk is in the rebuilt text index");
    assert_ne!(after, before);
    assert_eq!(
        adjust(&pool, &config, 0, 0).await.expect("adjust"),
        Transition::Unchanged
    );
    // Off (an entry backlog of 0) never drops, however long the backlog.
    let off = BulkConfig {
        enter_backlog: 0,
        ..config
    };
    assert_eq!(
        adjust(&pool, &off, 1_000_000, 0).await.expect("adjust"),
        Transition::Unchanged
    );
    assert_eq!(vector_index_oid(&pool).await, Some(after));
    // A backlog under a quarter of the pages stored is not worth rebuilding the whole index for.
    for id in 3..=10 {
        apply(&pool, &changed(id, 1)).await;
        apply(&pool, &chunks(id, 1, 1)).await;
    }
    let small = BulkConfig {
        enter_backlog: 1,
        ..config
    };
    assert_eq!(
        adjust(&pool, &small, 2, 0).await.expect("adjust"),
        Transition::Unchanged
    );
    assert_eq!(
        adjust(&pool, &small, 3, 0).await.expect("adjust"),
        Transition::Entered(2)
    );
}

/// The live indexer started on a backlog over the entry bound loads it without the vector index
/// and ends with the index built again over every chunk.
#[tokio::test]
async fn the_live_indexer_loads_a_backlog_in_bulk_mode_and_ends_with_its_vector_index() {
    let bus: Bus = pagestream_testkit::bus().await;
    let registry = SourceRegistry::open(&bus).await.expect("registry");
    registry.put(&record()).await.expect("put source");
    let (live, _) = pagestream_testkit::database().await;
    let before = vector_index_oid(&live)
        .await
        .expect("the migration's index");
    let pages = 600u64;
    let mut expected_chunks = 0;
    for id in 1..=pages {
        bus.publish(&changed(id, 1)).await.expect("publish");
        bus.publish(&Envelope::new(PageConverted {
            page: info(id, 1),
            markdown: format!("# Page {id}"),
            metadata: ContentMetadata::default(),
        }))
        .await
        .expect("publish");
        let count = 1 + (id % 3) as u32;
        bus.publish(&chunks(id, 1, count)).await.expect("publish");
        expected_chunks += count as i64;
    }
    let supervisor = pagestream_service::Supervisor::new();
    let mut config = IndexerConfig::default();
    config.bulk.enter_backlog = 100;
    config.bulk.leave_backlog = 0;
    config.bulk.check_every = Duration::from_millis(20);
    config.bulk.settle = Duration::from_millis(200);
    pagestream_indexer::spawn_all(&supervisor, &bus, registry.clone(), &live, &config);
    wait_for_projection(&live, expected_chunks, 0).await;
    let mut after = None;
    for _ in 0..300 {
        after = vector_index_oid(&live).await;
        if after.is_some_and(|after| after != before) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    supervisor.token().cancel();
    supervisor
        .run(Duration::from_secs(10))
        .await
        .expect("stops");
    assert!(
        after.is_some_and(|after| after != before),
        "the vector index was not dropped and built again: {before} then {after:?}"
    );
    let indexed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM chunks WHERE embedding_model = 'all-MiniLM-L6-v2'",
    )
    .fetch_one(&live)
    .await
    .expect("count");
    assert_eq!(indexed, expected_chunks);
}

fn progress(run_id: uuid::Uuid) -> SyncProgress {
    SyncProgress {
        pages_seen: 3,
        pages_changed: 2,
        requests: 4,
        ..SyncProgress::new(
            source(),
            run_id,
            SyncMode::Full,
            SyncStatus::Running,
            Utc::now(),
        )
    }
}

/// The progress projection runs on the stage runner: a snapshot of a removed source is settled
/// (dropped), not nak'd for the stream's 30 days.
#[tokio::test]
async fn progress_of_a_removed_source_is_dropped_not_retried() {
    let bus: Bus = pagestream_testkit::bus().await;
    let registry = SourceRegistry::open(&bus).await.expect("registry");
    registry.put(&record()).await.expect("put source");
    let (pool, _) = pagestream_testkit::database().await;
    let supervisor = pagestream_service::Supervisor::new();
    pagestream_indexer::spawn_all(
        &supervisor,
        &bus,
        registry.clone(),
        &pool,
        &IndexerConfig::default(),
    );
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    let eventually = |what: &'static str, sql: &'static str, expected: i64| async move {
        for _ in 0..300 {
            if count(sql).await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    };

    bus.publish_progress(&progress(uuid::Uuid::new_v4()))
        .await
        .expect("publish");
    eventually("the first run", "SELECT count(*) FROM sync_runs", 1).await;
    registry.remove(&source()).await.expect("remove source");
    eventually("the source's removal", "SELECT count(*) FROM sources", 0).await;

    bus.publish_progress(&progress(uuid::Uuid::new_v4()))
        .await
        .expect("publish");
    let stream = bus
        .jetstream()
        .get_stream(bus.streams().sync_progress())
        .await
        .expect("stream");
    let mut settled = false;
    for _ in 0..100 {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer("indexer-sync-progress")
            .await
            .expect("consumer");
        let info = consumer.info().await.expect("info");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        settled,
        "the snapshot of the removed source is still pending"
    );
    assert_eq!(count("SELECT count(*) FROM sync_runs").await, 0);
    assert!(
        pagestream_bus::dead_letter::list(&bus, 10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    supervisor.token().cancel();
    supervisor
        .run(Duration::from_secs(10))
        .await
        .expect("stops");
}
