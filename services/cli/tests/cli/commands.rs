//! Replay, re-embedding, dead letters and error messages, with the `hash` provider.

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use pagestream_cli::CliError;
use serde_json::Value;
use sqlx::PgPool;

use super::stack::{
    API_KEY, Provider, SIM_TOKEN, SOURCE, Stack, eventually, provider, spawn_embedder,
};

/// A digest of everything the projection holds, but row timestamps.
async fn digest(pool: &PgPool) -> (i64, i64, String) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM confluence_pages), (SELECT count(*) FROM chunks), \
         md5(coalesce(string_agg(r, '|' ORDER BY r), '')) FROM ( \
           SELECT concat_ws(',', s.key, p.page_id, p.space_key, p.title, p.version, \
             p.incarnation, p.last_modified, p.is_deleted, p.path, p.url, p.metadata::text, p.labels::text, p.jira_keys::text, p.mentions::text, md5(p.markdown), \
             p.markdown_version, p.chunks_version) AS r \
           FROM confluence_pages p JOIN sources s ON s.id = p.source_id \
           UNION ALL \
           SELECT concat_ws(',', s.key, c.page_id, c.embedding_model, c.chunk_index, \
             c.page_version, md5(c.text), c.heading_path::text, c.content_hash, c.token_count, \
             c.metadata::text, c.embedding_dim, md5(c.embedding::text)) \
           FROM chunks c JOIN sources s ON s.id = c.source_id) rows",
    )
    .fetch_one(pool)
    .await
    .expect("digest")
}

async fn synced(pages: usize) -> Stack {
    let stack = Stack::start(pages, Provider::Hash(384)).await;
    stack.add_source().await;
    let output = stack
        .cli(&["sync", SOURCE, "--full", "--wait"])
        .await
        .expect("sync --wait");
    assert!(output.contains("sync done (fetch completed"), "{output}");
    stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_rebuilds_an_equal_database_and_refuses_a_full_one() {
    let stack = synced(60).await;
    // Some history: an edit and a trashed page.
    let ids = stack.sim.handle.current_page_ids();
    stack
        .sim
        .handle
        .edit(ids[3], confluence_sim::EditPage::default())
        .await
        .expect("edit");
    stack.sim.handle.trash(ids[5]).await.expect("trash");
    stack
        .cli(&["sync", SOURCE, "--wait"])
        .await
        .expect("incremental sync");
    let live = digest(&stack.pool).await;
    assert!(live.0 >= 60 && live.1 > 60, "{live:?}");

    let (rebuilt_pool, rebuilt_url) = pagestream_testkit::empty_database().await;
    let output = stack
        .cli_with(API_KEY, &rebuilt_url, &["replay", "--batch-size", "16"])
        .await
        .expect("replay");
    assert!(output.contains(&format!("{} chunks", live.1)), "{output}");
    assert!(output.contains("0 skipped"), "{output}");
    assert_eq!(digest(&rebuilt_pool).await, live);

    match stack.cli_with(API_KEY, &rebuilt_url, &["replay"]).await {
        Err(error @ CliError::DatabaseNotEmpty { .. }) => {
            assert!(error.to_string().contains("--allow-existing"), "{error}");
        }
        other => panic!("a replay into a full database went ahead: {other:?}"),
    }
    let again = stack
        .cli_with(
            API_KEY,
            &rebuilt_url,
            &["replay", "--allow-existing", "--json"],
        )
        .await
        .expect("replay --allow-existing");
    let report: Value = serde_json::from_str(&again).expect("json report");
    assert_eq!(report["chunks"], live.1);
    assert_eq!(digest(&rebuilt_pool).await, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reembed_gives_every_page_vectors_of_the_new_model() {
    let stack = synced(20).await;
    let live_pages: i64 =
        sqlx::query_scalar("SELECT count(*) FROM confluence_pages WHERE NOT is_deleted")
            .fetch_one(&stack.pool)
            .await
            .expect("count");
    // The embedders are restarted with another model, then told to start over.
    stack.embedder_cancel.cancel();
    let cancel = tokio_util::sync::CancellationToken::new();
    spawn_embedder(&stack.bus, provider(&Provider::Hash(256)), cancel.clone());
    let output = stack.cli(&["replay", "--reembed"]).await.expect("reembed");
    assert!(output.contains("re-embed every converted page"), "{output}");
    eventually(
        "every page has hash-256 chunks",
        Duration::from_secs(60),
        || async {
            let pages: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT page_id) FROM chunks WHERE embedding_model = 'hash-256'",
            )
            .fetch_one(&stack.pool)
            .await
            .expect("count");
            pages == live_pages
        },
    )
    .await;
    let dimensions: Vec<i32> = sqlx::query_scalar(
        "SELECT DISTINCT embedding_dim FROM chunks WHERE embedding_model = 'hash-256'",
    )
    .fetch_all(&stack.pool)
    .await
    .expect("dimensions");
    assert_eq!(dimensions, vec![256]);
    cancel.cancel();
}

async fn dead_letters(stack: &Stack) -> Vec<Value> {
    let output = stack
        .cli(&["dlq", "list", "--json"])
        .await
        .expect("dlq list");
    serde_json::from_str::<Vec<Value>>(&output).expect("dlq json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_and_retried() {
    let stack = Stack::start(3, Provider::Hash(384)).await;
    assert_eq!(
        stack.cli(&["dlq", "list"]).await.expect("dlq list"),
        "no dead letters\n"
    );
    let subject = format!("{}.page.changed.{SOURCE}.999", stack.bus.config().root);
    stack
        .bus
        .jetstream()
        .publish(subject.clone(), Bytes::from_static(b"{not an event"))
        .await
        .expect("publish")
        .await
        .expect("ack");
    // Both stages that consume page.changed give up on it.
    eventually(
        "the poison event is dead-lettered",
        Duration::from_secs(30),
        || async { dead_letters(&stack).await.len() == 2 },
    )
    .await;
    let letters = dead_letters(&stack).await;
    let mut stages: Vec<&str> = letters
        .iter()
        .map(|letter| letter["stage"].as_str().expect("stage"))
        .collect();
    stages.sort_unstable();
    assert_eq!(stages, ["converter", "indexer-page-changed"], "{letters:?}");
    for letter in &letters {
        assert_eq!(letter["subject"], subject.as_str());
        assert!(
            letter["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("malformed cloudevent")),
            "{letter}"
        );
    }
    let last = letters
        .iter()
        .filter_map(|letter| letter["sequence"].as_u64())
        .max()
        .expect("sequence");
    let table = stack.cli(&["dlq", "list"]).await.expect("dlq table");
    assert!(
        table.contains("converter") && table.contains(&subject),
        "{table}"
    );

    let retried = stack.cli(&["dlq", "retry", "--all"]).await.expect("retry");
    assert_eq!(retried.matches("retried ").count(), 2, "{retried}");
    // Still poison: the letters are gone, and the event, delivered again, comes back as new ones.
    eventually(
        "the retried event is dead-lettered again",
        Duration::from_secs(30),
        || async {
            let letters = dead_letters(&stack).await;
            !letters.is_empty()
                && letters.iter().all(|letter| {
                    letter["sequence"]
                        .as_u64()
                        .is_some_and(|sequence| sequence > last)
                })
        },
    )
    .await;
    match stack.cli(&["dlq", "retry"]).await {
        Err(CliError::Usage(message)) => assert!(message.contains("--all"), "{message}"),
        other => panic!("retry without letters: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_say_what_to_do_next_and_tokens_stay_hidden() {
    let stack = Stack::start(3, Provider::Hash(384)).await;
    match stack
        .cli_with("wrong-key", &stack.database_url, &["sources", "list"])
        .await
    {
        Err(error @ CliError::Api { .. }) => {
            assert!(error.to_string().contains("PAGESTREAM_API_KEY"), "{error}");
        }
        other => panic!("a wrong key was accepted: {other:?}"),
    }
    let listed = stack.cli(&["sources", "list"]).await.expect("list");
    assert!(listed.contains("pagestream sources add"), "{listed}");
    match stack.cli(&["sync", "nosuch"]).await {
        Err(error @ CliError::Api { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains("nosuch") && text.contains("pagestream sources list"),
                "{text}"
            );
        }
        other => panic!("synced an unknown source: {other:?}"),
    }
    match stack
        .cli(&["sources", "add", "--site-url", "http://x", "--space", "ENG"])
        .await
    {
        Err(CliError::Usage(message)) => assert!(message.contains("--api-token"), "{message}"),
        other => panic!("added a source without a token: {other:?}"),
    }

    stack.add_source().await;
    match stack.cli(&["sources", "list", "--bogus"]).await {
        Err(CliError::Usage(message)) => assert!(message.contains("--bogus"), "{message}"),
        other => panic!("an unknown flag was accepted: {other:?}"),
    }
    let queued = stack.cli(&["sync", SOURCE]).await.expect("sync");
    assert!(
        queued.contains("incremental sync of docs queued"),
        "{queued}"
    );
    assert!(queued.contains("pagestream status docs"), "{queued}");
    for args in [
        &["sources", "list", "--json"][..],
        &["sources", "list"],
        &["status", "--json"],
        &["status"],
    ] {
        let output = stack.cli(args).await.expect("output");
        assert!(output.contains(SOURCE), "{args:?}: {output}");
        assert!(
            !output.contains(SIM_TOKEN),
            "{args:?} shows the token: {output}"
        );
    }

    let unreachable = pagestream_cli::Cli::try_parse_from([
        "pagestream",
        "--api-url",
        "http://127.0.0.1:9",
        "--api-key",
        API_KEY,
        "status",
    ])
    .expect("parse");
    match pagestream_cli::run(unreachable, &mut Vec::new()).await {
        Err(error @ CliError::ApiUnreachable { .. }) => {
            assert!(error.to_string().contains("PAGESTREAM_API_URL"), "{error}");
        }
        other => panic!("an unreachable api: {other:?}"),
    }
}
