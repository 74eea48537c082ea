//! The demo's path with the real `local` model: add a source, sync it, search by meaning, by
//! phrase and by Jira key, edit a page (the simulator posts the webhook) and find the new text,
//! trash a page and see it disappear; the same for a blog post, found with `--content-type`; a
//! comment (its webhook) makes its page findable by its text and shows with the page, a resolved
//! inline comment is marked, a removed comment leaves search; an attached PDF (its webhook) is
//! found by its text, the hit naming the file, and leaves search when the file is removed.

use std::time::Duration;

use confluence_sim::{CommentLocation, CreateAttachment, CreateComment, CreatePage, EditPage};
use pagestream_cli::CliError;

use super::stack::{Provider, SOURCE, Stack, eventually};

const ROLLBACK: &str = "<p>When a release goes wrong, undo it: run <code>kubectl rollout undo deployment/web</code> \
and watch <code>kubectl rollout status</code> until the previous version serves again.</p>\
<h2>Tracking</h2><p>Every rollback is recorded in \
<ac:structured-macro ac:name=\"jira\" ac:schema-version=\"1\"><ac:parameter ac:name=\"key\">OPS-4711</ac:parameter></ac:structured-macro>.</p>";
const BACKUPS: &str = "<p>The primary database takes a base backup every night with pg_basebackup. \
Continuous write-ahead log archiving to object storage allows point-in-time recovery: restore \
the base backup, then replay the archived WAL up to the moment before the incident.</p>";
const RELEASE_NOTES: &str = "<p>Release 7.3 ships canary deployments: a new version first \
takes five percent of the traffic, and the rollout stops on its own when the error rate rises.</p>";
const ONBOARDING: &str = "<p>Welcome to the team! In your first week, pick up your laptop, \
get your accounts from IT, meet your buddy, and shadow an on-call shift. By Friday you should \
have merged a small change.</p>";

/// The (page id, content type) of a search's hits with `--content-type`.
async fn typed_hits(stack: &Stack, query: &str, content_type: &str) -> Vec<(String, String)> {
    let output = stack
        .cli(&[
            "search",
            query,
            "--json",
            "--limit",
            "5",
            "--content-type",
            content_type,
        ])
        .await
        .expect("search --content-type");
    let body: serde_json::Value = serde_json::from_str(&output).expect("search json");
    body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| {
            (
                hit["page_id"].as_str().expect("page id").to_owned(),
                hit["content_type"]
                    .as_str()
                    .expect("content type")
                    .to_owned(),
            )
        })
        .collect()
}

async fn create(stack: &Stack, title: &str, body: &str) -> String {
    let (page, _) = stack
        .sim
        .handle
        .create(CreatePage {
            title: title.to_owned(),
            body: Some(body.to_owned()),
            ..CreatePage::default()
        })
        .await
        .expect("create page");
    page.id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_search_edit_and_trash_with_the_local_model() {
    let stack = Stack::start(12, Provider::Local).await;
    let rollback = create(&stack, "Rolling back a deployment", ROLLBACK).await;
    let backups = create(&stack, "Database backups", BACKUPS).await;
    let onboarding = create(&stack, "New hire onboarding", ONBOARDING).await;
    let (post, _) = stack
        .sim
        .handle
        .create_blog_post(CreatePage {
            title: "Release 7.3 notes".to_owned(),
            body: Some(RELEASE_NOTES.to_owned()),
            ..CreatePage::default()
        })
        .await
        .expect("publish a blog post");
    let post = post.id.to_string();

    let added = stack.add_source().await;
    assert!(added.contains("added source docs"), "{added}");
    let synced = stack
        .cli(&["sync", SOURCE, "--full", "--wait", "--timeout-secs", "600"])
        .await
        .expect("sync --wait");
    assert!(
        synced.contains("full sync done (fetch completed"),
        "{synced}"
    );
    assert!(synced.contains("changed 16"), "{synced}");
    assert!(synced.contains("indexed 16"), "{synced}");
    assert!(synced.contains("failed 0"), "{synced}");
    // The api's search index followed the indexer's commits: it holds every stored chunk.
    assert!(
        stack
            .api
            .search_index_settled(Duration::from_secs(30))
            .await
            .expect("marker")
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks")
        .fetch_one(&stack.pool)
        .await
        .expect("count chunks");
    let indexed = stack.api.search_index().expect("bm25 index").chunk_count();
    assert_eq!(indexed, u64::try_from(stored).expect("count"));

    // By meaning (no word in common with the title), by Jira key, by phrase.
    for (query, page, within) in [
        ("how can I revert a broken release", &rollback, 3),
        ("restore the database to an earlier moment", &backups, 3),
        (
            "what does a new employee do in the first days",
            &onboarding,
            3,
        ),
        // Within 2, not 1: since includes are resolved, the generated homepage carries the text of
        // the pages it includes and can outrank the key's page (a Jira-key ranking gap, #17).
        ("OPS-4711", &rollback, 2),
        ("\"write-ahead log archiving\"", &backups, 1),
    ] {
        let pages = stack.search_pages(query).await;
        assert!(
            pages.iter().take(within).any(|found| found == page),
            "{query:?}: expected page {page} in the first {within}, got {pages:?}"
        );
    }
    let table = stack
        .cli(&["search", "how can I revert a broken release"])
        .await
        .expect("search table");
    assert!(table.contains("Rolling back a deployment"), "{table}");
    assert!(table.contains(&format!("/pages/{rollback}")), "{table}");

    // The blog post: found among blog posts only, marked as one in the table.
    let canary = "roll out a new version to a small share of traffic first";
    let blog_posts = typed_hits(&stack, canary, "blogpost").await;
    assert_eq!(
        blog_posts.first(),
        Some(&(post.clone(), "blogpost".to_owned())),
        "{blog_posts:?}"
    );
    assert!(
        blog_posts.iter().all(|(id, _)| *id == post),
        "{blog_posts:?}"
    );
    let pages = typed_hits(&stack, canary, "page").await;
    assert!(
        pages.iter().all(|(id, kind)| *id != post && kind == "page"),
        "{pages:?}"
    );
    let table = stack.cli(&["search", canary]).await.expect("search table");
    assert!(table.contains("[blog] Release 7.3 notes"), "{table}");

    // An edit reaches search through the webhook, without a sync.
    stack
        .sim
        .handle
        .set_webhook_target(Some(stack.webhook_url.clone()));
    stack
        .sim
        .handle
        .edit(
            rollback.parse().expect("id"),
            EditPage {
                body: Some(
                    "<p>Rollbacks now flip the blue-green router back to the previous colour.</p>"
                        .to_owned(),
                ),
                ..EditPage::default()
            },
        )
        .await
        .expect("edit");
    eventually(
        "the edit is searchable",
        Duration::from_secs(120),
        || async {
            stack.search_pages("blue-green router colour").await.first() == Some(&rollback)
        },
    )
    .await;
    let page = stack
        .cli(&["pages", SOURCE, &rollback])
        .await
        .expect("pages <id>");
    assert!(page.contains("blue-green router"), "{page}");
    assert!(!page.contains("kubectl rollout undo"), "{page}");

    // A comment reaches search and the page view through its webhook (the page keeps its
    // version); a resolved inline comment is marked; a removed one leaves search.
    let backups_id: u64 = backups.parse().expect("id");
    let comment = |body: &str, location, selection: Option<&str>| CreateComment {
        body: body.to_owned(),
        location,
        reply_to: None,
        selection: selection.map(str::to_owned),
    };
    let (footer, _) = stack
        .sim
        .handle
        .add_comment(
            backups_id,
            comment(
                "<p>Restores from the nightly snapshot need the quokka passphrase from the vault.</p>",
                CommentLocation::Footer,
                None,
            ),
        )
        .await
        .expect("comment");
    let (inline, _) = stack
        .sim
        .handle
        .add_comment(
            backups_id,
            comment(
                "<p>Say how long archived segments are kept.</p>",
                CommentLocation::Inline,
                Some("write-ahead log archiving"),
            ),
        )
        .await
        .expect("inline comment");
    stack
        .sim
        .handle
        .resolve_comment(inline.id, true)
        .await
        .expect("resolve");
    // The page's chunks that hold the comment's words, with their full-text rank.
    let comment_hits = || async {
        let body = stack.search("\"quokka passphrase\"").await;
        body["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .filter(|hit| hit["text"].as_str().is_some_and(|t| t.contains("quokka")))
            .map(|hit| {
                (
                    hit["page_id"].as_str().unwrap_or_default().to_owned(),
                    hit["text_rank"].as_i64(),
                )
            })
            .collect::<Vec<_>>()
    };
    eventually(
        "the comment is searchable",
        Duration::from_secs(120),
        || async { comment_hits().await.first() == Some(&(backups.clone(), Some(1))) },
    )
    .await;
    eventually(
        "the resolved comment is marked",
        Duration::from_secs(120),
        || async {
            stack
                .cli(&["pages", SOURCE, &backups])
                .await
                .is_ok_and(|page| page.contains("(resolved)"))
        },
    )
    .await;
    let page = stack
        .cli(&["pages", SOURCE, &backups])
        .await
        .expect("pages <id>");
    assert!(page.contains("## Comments"), "{page}");
    assert!(page.contains("quokka passphrase"), "{page}");
    assert!(page.contains("archived segments are kept"), "{page}");
    stack
        .sim
        .handle
        .remove_comment(footer.id)
        .await
        .expect("remove comment");
    eventually(
        "the removed comment left search",
        Duration::from_secs(120),
        || async { comment_hits().await.is_empty() },
    )
    .await;

    // An attached PDF reaches search through its webhook: the hit names the file under the
    // page's `Attachments`; removing the file takes it out of search.
    let report = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fetcher/tests/fixtures/attachments/report.pdf"
    ))
    .expect("pdf fixture");
    let (attachment, _) = stack
        .sim
        .handle
        .attach(
            backups_id,
            CreateAttachment {
                file_name: "report.pdf".into(),
                media_type: "application/pdf".into(),
                data: report,
            },
        )
        .await
        .expect("attach");
    let attachment_hits = || async {
        let body = stack.search("\"zephyr forecast\"").await;
        body["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .filter(|hit| hit["text"].as_str().is_some_and(|t| t.contains("zephyr")))
            .map(|hit| {
                (
                    hit["page_id"].as_str().unwrap_or_default().to_owned(),
                    hit["text"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    eventually(
        "the attachment is searchable",
        Duration::from_secs(120),
        || async { !attachment_hits().await.is_empty() },
    )
    .await;
    // A small page's sections share a chunk: the file's heading travels in the hit's text.
    let (page_id, text) = attachment_hits().await.remove(0);
    assert_eq!(page_id, backups);
    assert!(text.contains("### report.pdf"), "{text}");
    let page = stack
        .cli(&["pages", SOURCE, &backups])
        .await
        .expect("pages <id>");
    assert!(page.contains("### report.pdf"), "{page}");
    stack
        .sim
        .handle
        .remove_attachment(attachment.id)
        .await
        .expect("remove attachment");
    eventually(
        "the removed attachment left search",
        Duration::from_secs(120),
        || async { attachment_hits().await.is_empty() },
    )
    .await;

    // A trashed page disappears from search and from the pages.
    stack
        .sim
        .handle
        .trash(onboarding.parse().expect("id"))
        .await
        .expect("trash");
    eventually(
        "the trashed page is gone",
        Duration::from_secs(120),
        || async {
            !stack
                .search_pages("what does a new employee do in the first days")
                .await
                .contains(&onboarding)
        },
    )
    .await;
    match stack.cli(&["pages", SOURCE, &onboarding]).await {
        Err(CliError::Api { code, .. }) => assert_eq!(code, "page_not_found"),
        other => panic!("a trashed page is still shown: {other:?}"),
    }

    // The blog post's `blog_updated` and `blog_trashed` webhooks reach search without a sync.
    let post_id: u64 = post.parse().expect("id");
    stack
        .sim
        .handle
        .edit(
            post_id,
            EditPage {
                body: Some(
                    "<p>Release 7.3 also brings dark mode to the billing dashboard.</p>".to_owned(),
                ),
                ..EditPage::default()
            },
        )
        .await
        .expect("edit the blog post");
    eventually(
        "the edited blog post is searchable",
        Duration::from_secs(120),
        || async {
            typed_hits(&stack, "dark mode billing dashboard", "blogpost")
                .await
                .first()
                .is_some_and(|(id, _)| *id == post)
        },
    )
    .await;
    stack
        .sim
        .handle
        .trash(post_id)
        .await
        .expect("trash the blog post");
    eventually(
        "the trashed blog post is gone",
        Duration::from_secs(120),
        || async {
            typed_hits(&stack, "dark mode billing dashboard", "blogpost")
                .await
                .is_empty()
        },
    )
    .await;

    let status = stack.cli(&["status", SOURCE]).await.expect("status");
    assert!(
        status.contains("docs: full sync done (fetch completed"),
        "{status}"
    );
    let sources = stack.cli(&["sources", "list"]).await.expect("sources list");
    let row = sources
        .lines()
        .find(|line| line.starts_with("docs "))
        .unwrap_or_else(|| panic!("no docs row: {sources}"));
    assert!(row.contains(" 14 "), "14 live pages expected: {row}");
}
