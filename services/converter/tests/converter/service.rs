//! The converter stage over real JetStream: page.changed in, page.converted out; a page that cannot
//! be converted goes to the dead-letter stream and the next page is still converted.

use std::time::Duration;

use chrono::Utc;
use pagestream_bus::{Lane, dead_letter};
use pagestream_events::{
    ContentType, Envelope, EventKind, PageChanged, PageConverted, PageId, PageInfo, SourceKey,
};
use tokio_util::sync::CancellationToken;

fn changed(id: u64, body: String) -> Envelope<PageChanged> {
    Envelope::new(PageChanged {
        page: PageInfo {
            source: SourceKey::new("eng").expect("source"),
            page_id: PageId::from(id),
            content_type: ContentType::Page,
            space_key: "ENG".into(),
            title: "Runbook".into(),
            version: 2,
            path: format!("/1/{id}"),
            url: format!("https://example.atlassian.net/wiki/spaces/ENG/pages/{id}"),
            ancestors: vec![],
            labels: vec![],
            author: None,
            created_at: None,
            last_modified: Utc::now(),
            incarnation: 0,
            source_id: None,
        },
        body_storage: body,
        comments: Vec::new(),
        attachments: Vec::new(),
        included: Vec::new(),
    })
    .with_sync_run(Some(uuid_run()))
}

fn uuid_run() -> uuid::Uuid {
    uuid::Uuid::from_u128(42)
}

#[tokio::test]
async fn converts_pages_and_dead_letters_the_unconvertible() {
    let bus = pagestream_testkit::bus().await;
    let cancel = CancellationToken::new();
    let runner = tokio::spawn(pagestream_converter::service::run(
        bus.clone(),
        2,
        cancel.clone(),
    ));

    // Larger than the converter's input limit: a permanent failure.
    let oversized = format!("<p>{}</p>", "x".repeat(17 * 1024 * 1024));
    bus.publish(&changed(1, oversized)).await.expect("publish");
    bus.publish(&changed(
        2,
        r#"<p>See OPS-12.</p><ac:structured-macro ac:name="code"><ac:parameter ac:name="language">bash</ac:parameter><ac:plain-text-body><![CDATA[echo "hi" && exit 0]]></ac:plain-text-body></ac:structured-macro>"#.into(),
    ))
    .await
    .expect("publish");
    // A full sync's page: its conversion stays in the bulk lane.
    bus.publish_in(Lane::Bulk, &changed(3, "<p>bulk</p>".into()))
        .await
        .expect("publish");

    let source = SourceKey::new("eng").expect("source");
    let mut converted = None;
    for _ in 0..300 {
        converted = bus
            .last_for_page::<PageConverted>(&source, &PageId::from(2))
            .await
            .expect("read");
        if converted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converted = converted.expect("page 2 converted");
    assert!(
        converted
            .data
            .markdown
            .contains("```bash\necho \"hi\" && exit 0\n```")
    );
    assert_eq!(
        converted.data.metadata.jira_issue_links,
        vec!["OPS-12".to_owned()]
    );
    assert_eq!(converted.extensions.syncrun, Some(uuid_run()));
    assert_eq!(converted.data.page.version, 2);
    let stream = bus
        .jetstream()
        .get_stream(bus.streams().for_kind(EventKind::PageConverted))
        .await
        .expect("stream");
    let mut lanes = Vec::new();
    for page in [2, 3] {
        let subject = bus
            .subjects()
            .page(EventKind::PageConverted, &source, &PageId::from(page));
        let mut message = None;
        for _ in 0..300 {
            message = stream.get_last_raw_message_by_subject(&subject).await.ok();
            if message.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let message = message.expect("converted");
        lanes.push(Lane::of(Some(&message.headers)));
    }
    assert_eq!(
        lanes,
        [Lane::Live, Lane::Bulk],
        "each conversion in its page's lane"
    );

    let mut letters = Vec::new();
    for _ in 0..300 {
        letters = dead_letter::list(&bus, 10).await.expect("list");
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(letters.len(), 1);
    assert!(letters[0].1.subject.ends_with(".1"));
    assert_eq!(letters[0].1.stage, "converter");
    assert!(
        bus.last_for_page::<PageConverted>(&source, &PageId::from(1))
            .await
            .expect("read")
            .is_none()
    );
    cancel.cancel();
    runner.await.expect("join").expect("stage");
}
