use axum::http::StatusCode;
use pagestream_events::{ContentType, EventKind, HintReason};

use crate::harness::{
    CLOUD_SECRET, DC_SECRET, Options, automation_request, cloud_request, dc_request, fixture, start,
};

/// What a delivery must become.
enum Expect {
    Hint {
        source: &'static str,
        page: &'static str,
        reason: HintReason,
        version: Option<u64>,
        space: Option<&'static str>,
        event: &'static str,
    },
    Ignored(&'static str),
}

#[tokio::test]
async fn every_payload_shape_maps_to_the_right_event() {
    let harness = start(Options::default()).await;
    let cloud = |event: &'static str, file: &str| {
        cloud_request("cloud", event, fixture(file), CLOUD_SECRET)
    };
    let hint = |source, page, reason, version, space, event| Expect::Hint {
        source,
        page,
        reason,
        version,
        space,
        event,
    };
    use HintReason::{Changed, Removed};
    let cases = vec![
        (
            cloud("page_created", "cloud_page_created.json"),
            hint(
                "cloud",
                "2210000001",
                Changed,
                Some(1),
                Some("ENG"),
                "page_created",
            ),
        ),
        (
            cloud("page_updated", "cloud_page_updated.json"),
            hint(
                "cloud",
                "2210000002",
                Changed,
                Some(4),
                Some("ENG"),
                "page_updated",
            ),
        ),
        (
            cloud("page_updated", "cloud_page_updated_string_ids.json"),
            hint(
                "cloud",
                "30000007",
                Changed,
                Some(3),
                Some("OPS"),
                "page_updated",
            ),
        ),
        (
            cloud("page_restored", "cloud_page_restored.json"),
            hint(
                "cloud",
                "2210000003",
                Changed,
                Some(6),
                Some("~557058d0f6a7b8c"),
                "page_restored",
            ),
        ),
        (
            cloud("page_moved", "cloud_page_moved.json"),
            hint(
                "cloud",
                "2210000004",
                Changed,
                Some(9),
                Some("ENG"),
                "page_moved",
            ),
        ),
        (
            cloud("page_trashed", "cloud_page_trashed.json"),
            hint(
                "cloud",
                "2210000005",
                Removed,
                Some(2),
                Some("ENG"),
                "page_trashed",
            ),
        ),
        (
            cloud("page_removed", "cloud_page_removed.json"),
            hint(
                "cloud",
                "2210000006",
                Removed,
                Some(1),
                Some("ENG"),
                "page_removed",
            ),
        ),
        (
            cloud("blog_updated", "cloud_blog_updated.json"),
            hint(
                "cloud",
                "2210000040",
                Changed,
                Some(3),
                Some("ENG"),
                "blog_updated",
            ),
        ),
        (
            cloud("blog_removed", "cloud_blog_removed.json"),
            hint(
                "cloud",
                "2210000041",
                Removed,
                Some(2),
                Some("ENG"),
                "blog_removed",
            ),
        ),
        (
            cloud("comment_created", "cloud_comment_created.json"),
            // The commented page, without its version: a comment creates none.
            hint(
                "cloud",
                "30000007",
                Changed,
                None,
                Some("OPS"),
                "comment_created",
            ),
        ),
        (
            cloud("content_created", "cloud_content_created_property.json"),
            Expect::Ignored("content_created"),
        ),
        (
            dc_request("dc", None, fixture("dc_page_updated.json"), DC_SECRET),
            hint(
                "dc",
                "98305",
                Changed,
                Some(12),
                Some("DOCS"),
                "page_updated",
            ),
        ),
        (
            dc_request("dc", None, fixture("dc_page_removed.json"), DC_SECRET),
            hint(
                "dc",
                "98306",
                Removed,
                Some(2),
                Some("DOCS"),
                "page_removed",
            ),
        ),
        (
            dc_request("dc", None, fixture("dc_label_added.json"), DC_SECRET),
            // A label creates no version: the hint makes the fetcher read the page's labels.
            hint("dc", "98305", Changed, None, Some("DOCS"), "label_added"),
        ),
        (
            automation_request(
                "cloud",
                Some("page_updated"),
                fixture("automation_page_published.json"),
                CLOUD_SECRET,
            ),
            hint(
                "cloud",
                "51200044",
                Changed,
                Some(7),
                Some("SUP"),
                "page_updated",
            ),
        ),
        (
            automation_request(
                "dc",
                None,
                fixture("automation_page_created_named.json"),
                DC_SECRET,
            ),
            hint("dc", "51200045", Changed, None, None, "page_created"),
        ),
    ];
    let mut hints = 0;
    for (request, expect) in cases {
        let uri = request.uri().to_string();
        let (status, answer) = harness.send(request).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{uri}: {answer}");
        match expect {
            Expect::Hint {
                source,
                page,
                reason,
                version,
                space,
                event,
            } => {
                hints += 1;
                assert_eq!(answer["status"], "hinted", "{uri}");
                assert_eq!(answer["duplicate"], false, "{uri}");
                let stored = harness
                    .last_hint(source, page)
                    .await
                    .unwrap_or_else(|| panic!("{uri}: no hint"));
                assert_eq!(answer["event_id"], stored.id.to_string(), "{uri}");
                assert_eq!(stored.data.reason, reason, "{uri}");
                assert_eq!(stored.data.version, version, "{uri}");
                assert_eq!(stored.data.space_key.as_deref(), space, "{uri}");
                assert_eq!(stored.data.webhook_event.as_deref(), Some(event), "{uri}");
                let content_type = if event.starts_with("blog_") {
                    ContentType::Blogpost
                } else {
                    ContentType::Page
                };
                assert_eq!(stored.data.content_type, content_type, "{uri}");
                assert_eq!(stored.data.source.as_str(), source, "{uri}");
            }
            Expect::Ignored(event) => {
                assert_eq!(answer["status"], "ignored", "{uri}");
                assert_eq!(answer["event"], event, "{uri}");
            }
        }
        assert_eq!(harness.hinted_count().await, hints, "{uri}");
    }
}

#[tokio::test]
async fn deliveries_without_a_page_or_an_event_are_refused() {
    let harness = start(Options::default()).await;
    let cases = [
        // A page event whose body carries no page.
        dc_request(
            "dc",
            Some("page_updated"),
            br#"{"timestamp":1}"#.to_vec(),
            DC_SECRET,
        ),
        // No event in the path nor in the body (a Connect body posted to the short path).
        dc_request("dc", None, fixture("cloud_page_updated.json"), DC_SECRET),
        // Not JSON.
        dc_request(
            "dc",
            Some("page_updated"),
            b"page_updated 42".to_vec(),
            DC_SECRET,
        ),
        // Not a Confluence page id.
        dc_request(
            "dc",
            Some("page_updated"),
            br#"{"page":{"id":"../42"}}"#.to_vec(),
            DC_SECRET,
        ),
    ];
    for request in cases {
        let (status, answer) = harness.send(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_payload", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|error| error.starts_with("invalid payload"))
        );
    }
    assert_eq!(harness.hinted_count().await, 0);
}

#[tokio::test]
async fn unknown_sources_are_refused_like_bad_credentials() {
    let harness = start(Options::default()).await;
    for source in ["nope", "Not-A-Key", "dc.x"] {
        let (status, _) = harness
            .send(dc_request(
                source,
                Some("page_updated"),
                fixture("dc_page_updated.json"),
                DC_SECRET,
            ))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{source}");
    }
    assert_eq!(harness.hinted_count().await, 0);
}

#[tokio::test]
async fn a_hint_jetstream_did_not_store_is_answered_503() {
    let harness = start(Options::default()).await;
    let stream = harness.bus.streams().for_kind(EventKind::PageHinted);
    harness
        .bus
        .jetstream()
        .delete_stream(&stream)
        .await
        .expect("delete stream");
    let (status, answer) = harness
        .send(dc_request(
            "dc",
            None,
            fixture("dc_page_updated.json"),
            DC_SECRET,
        ))
        .await;
    // Not 202: a sender that retries (Data Center) tries again, and nothing claims success.
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "dependency_unavailable");
    assert_eq!(
        answer["error"]["message"],
        "cannot queue the hint; try again"
    );
}
