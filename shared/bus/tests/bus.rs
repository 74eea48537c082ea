//! The bus against a real nats-server with JetStream (started by ops/dev-up).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use pagestream_bus::consumer::Handler;
use pagestream_bus::{Bus, Delivery, HandlerError, Stage, StageConfig, dead_letter};
use pagestream_events::*;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn source() -> SourceKey {
    SourceKey::new("eng").expect("source")
}

fn page(id: u64) -> PageId {
    PageId::from(id)
}

fn info(id: u64, version: u64) -> PageInfo {
    PageInfo {
        source: source(),
        page_id: page(id),
        space_key: "ENG".into(),
        title: format!("Page {id}"),
        version,
        path: format!("/1/{id}"),
        url: format!("https://example.atlassian.net/wiki/spaces/ENG/pages/{id}"),
        ancestors: vec![],
        labels: vec!["ops".into()],
        author: None,
        created_at: None,
        last_modified: Utc::now(),
    }
}

fn changed(id: u64, version: u64, body: String) -> Envelope<PageChanged> {
    Envelope::new(PageChanged {
        page: info(id, version),
        body_storage: body,
    })
}

/// Waits until `check` holds, failing the test after 15 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn stream_messages(bus: &Bus, kind: EventKind) -> u64 {
    let mut stream = bus
        .jetstream()
        .get_stream(bus.streams().for_kind(kind))
        .await
        .expect("stream");
    stream.info().await.expect("info").state.messages
}

/// Records deliveries and answers with a scripted outcome per page id and delivery count.
struct Scripted {
    seen: Mutex<Vec<(String, u64)>>,
    outcome: fn(&str, u64) -> Result<(), HandlerError>,
}

impl Scripted {
    fn new(outcome: fn(&str, u64) -> Result<(), HandlerError>) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Vec::new()),
            outcome,
        })
    }

    fn seen(&self) -> Vec<(String, u64)> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Handler<PageChanged> for Scripted {
    async fn handle(&self, delivery: &Delivery<PageChanged>) -> Result<(), HandlerError> {
        let id = delivery.event.data.page.page_id.to_string();
        self.seen
            .lock()
            .expect("lock")
            .push((id.clone(), delivery.delivered));
        (self.outcome)(&id, delivery.delivered)
    }
}

fn fast_stage(name: &str) -> StageConfig {
    StageConfig {
        retry_delay: Duration::from_millis(200),
        max_retry_delay: Duration::from_millis(400),
        max_deliveries: 3,
        ..StageConfig::new(name)
    }
}

fn start<H: Handler<PageChanged>>(
    bus: &Bus,
    config: StageConfig,
    handler: Arc<H>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let stage = Stage::<PageChanged>::new(bus.clone(), config);
    let token = cancel.clone();
    let task = tokio::spawn(async move {
        stage.run(handler, token).await.expect("stage runs");
    });
    (cancel, task)
}

#[tokio::test]
async fn every_event_type_round_trips_and_duplicates_are_stored_once() {
    let bus = pagestream_testkit::bus().await;
    let run = Uuid::new_v4();
    let now = Utc::now();
    let id = page(65601);

    let sync = Envelope::new(SyncRequested {
        source: source(),
        run_id: run,
        mode: SyncMode::Full,
        reconcile_deletions: true,
        requested_at: now,
    });
    let hinted = Envelope::new(PageHinted {
        source: source(),
        page_id: id.clone(),
        reason: HintReason::Changed,
        version: Some(4),
        space_key: Some("ENG".into()),
        webhook_event: Some("page_updated".into()),
        received_at: now,
    });
    let page_changed = changed(65601, 4, "<p>hello</p>".into()).with_sync_run(Some(run));
    let converted = Envelope::new(PageConverted {
        page: info(65601, 4),
        markdown: "hello".into(),
        metadata: ContentMetadata {
            jira_issue_links: vec!["OPS-1".into()],
            word_count: 1,
            ..Default::default()
        },
    });
    let chunks = Envelope::new(ChunksReady {
        source: source(),
        page_id: id.clone(),
        space_key: "ENG".into(),
        version: 4,
        model: "hash".into(),
        dimension: 2,
        chunks: vec![Chunk {
            index: 0,
            text: "hello".into(),
            heading_path: vec!["Page 65601".into()],
            content_hash: "h".into(),
            token_count: 1,
            vector: Vector(vec![0.6, 0.8]),
            code: None,
        }],
    });
    let deleted = Envelope::new(PageDeleted {
        source: source(),
        page_id: page(77),
        version: 2,
        space_key: None,
        deleted_at: now,
        reason: Some("trashed".into()),
    });

    assert!(!bus.publish(&sync).await.expect("publish").duplicate);
    assert!(!bus.publish(&hinted).await.expect("publish").duplicate);
    assert!(!bus.publish(&page_changed).await.expect("publish").duplicate);
    assert!(!bus.publish(&converted).await.expect("publish").duplicate);
    assert!(!bus.publish(&chunks).await.expect("publish").duplicate);
    assert!(!bus.publish(&deleted).await.expect("publish").duplicate);

    // The same fact again is recognised by its id and stored once.
    let again = bus.publish(&page_changed).await.expect("publish again");
    assert!(again.duplicate);
    assert_eq!(stream_messages(&bus, EventKind::PageChanged).await, 1);

    let back: Envelope<PageChanged> = bus
        .last_for_page(&source(), &id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(back.data, page_changed.data);
    assert_eq!(back.extensions.syncrun, Some(run));
    let back: Envelope<PageConverted> = bus
        .last_for_page(&source(), &id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(back.data, converted.data);
    let back: Envelope<ChunksReady> = bus
        .last_for_page(&source(), &id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(back.data, chunks.data);
    let back: Envelope<PageDeleted> = bus
        .last_for_page(&source(), &page(77))
        .await
        .expect("read")
        .expect("present");
    assert_eq!(back.data, deleted.data);
    let back: Envelope<PageHinted> = bus
        .last_for_page(&source(), &id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(back.data, hinted.data);
    assert_eq!(stream_messages(&bus, EventKind::SyncRequested).await, 1);
}

#[tokio::test]
async fn transient_failures_are_redelivered_after_the_delay() {
    let bus = pagestream_testkit::bus().await;
    let handler = Scripted::new(|_, delivered| {
        if delivered < 2 {
            Err(HandlerError::transient("dependency down"))
        } else {
            Ok(())
        }
    });
    let (cancel, task) = start(&bus, fast_stage("flaky"), handler.clone());
    bus.publish(&changed(1, 1, "<p>x</p>".into()))
        .await
        .expect("publish");
    eventually("the redelivery", || handler.seen().len() == 2).await;
    assert_eq!(handler.seen(), vec![("1".into(), 1), ("1".into(), 2)]);
    cancel.cancel();
    task.await.expect("stage stops");
    assert!(dead_letter::list(&bus, 10).await.expect("list").is_empty());
}

#[tokio::test]
async fn failures_end_in_the_dead_letter_stream_and_the_stage_goes_on() {
    let bus = pagestream_testkit::bus().await;
    // Page 1 is poison (permanent), page 2 always fails transiently, page 3 is fine.
    let handler = Scripted::new(|id, _| match id {
        "1" => Err(HandlerError::permanent("cannot parse body")),
        "2" => Err(HandlerError::transient("timeout")),
        _ => Ok(()),
    });
    let (cancel, task) = start(&bus, fast_stage("conv"), handler.clone());
    for id in 1..=3 {
        bus.publish(&changed(id, 1, "<p>x</p>".into()))
            .await
            .expect("publish");
    }
    let mut letters = Vec::new();
    for _ in 0..300 {
        letters = dead_letter::list(&bus, 10).await.expect("list");
        if letters.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(letters.len(), 2, "dead letters: {letters:?}");
    let by_page: HashMap<String, &dead_letter::DeadLetter> = letters
        .iter()
        .map(|(_, letter)| {
            (
                letter.subject.rsplit('.').next().unwrap_or("").to_owned(),
                letter,
            )
        })
        .collect();
    let poison = by_page["1"];
    assert_eq!(poison.stage, "conv");
    assert_eq!(poison.deliveries, 1);
    assert!(poison.reason.contains("cannot parse body"));
    let flaky = by_page["2"];
    assert_eq!(flaky.deliveries, 3, "dead-lettered after max deliveries");
    assert!(flaky.reason.contains("gave up after 3 deliveries"));
    // The body is the original event, so it can be inspected and retried.
    let event = RawEvent::from_json(&flaky.body_bytes().expect("body")).expect("event");
    assert_eq!(event.kind, EventKind::PageChanged);

    let seen = handler.seen();
    assert_eq!(seen.iter().filter(|(id, _)| id == "1").count(), 1);
    assert_eq!(seen.iter().filter(|(id, _)| id == "2").count(), 3);
    assert_eq!(seen.iter().filter(|(id, _)| id == "3").count(), 1);

    // A poison message that is not even an event goes to the dead-letter stream too.
    bus.jetstream()
        .publish(
            bus.subjects()
                .page(EventKind::PageChanged, &source(), &page(4)),
            "not a cloudevent".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    bus.publish(&changed(5, 1, "<p>x</p>".into()))
        .await
        .expect("publish");
    eventually("the event after the poison one", || {
        handler.seen().iter().any(|(id, _)| id == "5")
    })
    .await;
    let letters = dead_letter::list(&bus, 10).await.expect("list");
    assert_eq!(letters.len(), 3);
    assert!(letters[2].1.reason.contains("malformed cloudevent"));

    // Retrying a dead letter publishes it again and removes the letter.
    let (sequence, _) = letters
        .iter()
        .find(|(_, letter)| letter.subject.ends_with(".1"))
        .expect("poison letter");
    dead_letter::retry(&bus, *sequence).await.expect("retry");
    eventually("the retried event", || {
        handler.seen().iter().filter(|(id, _)| id == "1").count() == 2
    })
    .await;
    cancel.cancel();
    task.await.expect("stage stops");
}

#[tokio::test]
async fn large_payloads_travel_by_claim_check_byte_identical() {
    let bus = pagestream_testkit::bus().await;
    // 5 MiB of varied text (not compressible to nothing, not trivially equal).
    let body: String = (0..5 * 1024 * 1024 / 16)
        .map(|i| format!("<p>{i:012}</p>"))
        .collect::<String>()[..5 * 1024 * 1024 - 7]
        .to_owned();
    let event = changed(9, 1, body.clone());
    bus.publish(&event).await.expect("publish large");

    // The stream holds only a small reference.
    let stream = bus
        .jetstream()
        .get_stream(bus.streams().for_kind(EventKind::PageChanged))
        .await
        .expect("stream");
    let subject = bus
        .subjects()
        .page(EventKind::PageChanged, &source(), &page(9));
    let raw = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .expect("raw");
    assert!(raw.payload.len() < 1024);

    struct Capture(Mutex<Option<String>>);
    impl Handler<PageChanged> for Capture {
        async fn handle(&self, delivery: &Delivery<PageChanged>) -> Result<(), HandlerError> {
            *self.0.lock().expect("lock") = Some(delivery.event.data.body_storage.clone());
            Ok(())
        }
    }
    let capture = Arc::new(Capture(Mutex::new(None)));
    let cancel = CancellationToken::new();
    let stage = Stage::<PageChanged>::new(bus.clone(), StageConfig::new("big"));
    let runner = tokio::spawn({
        let capture = capture.clone();
        let cancel = cancel.clone();
        async move { stage.run(capture, cancel).await }
    });
    eventually("the large event", || {
        capture.0.lock().expect("lock").is_some()
    })
    .await;
    let received = capture.0.lock().expect("lock").take().expect("body");
    assert_eq!(received.len(), body.len());
    assert!(received == body, "claim-checked body differs");
    cancel.cancel();
    runner.await.expect("join").expect("run");

    // Deleting the page removes its object too.
    bus.purge_page(&source(), &page(9)).await.expect("purge");
    let store = bus
        .jetstream()
        .get_object_store(bus.streams().claim_check_bucket())
        .await
        .expect("bucket");
    let removed = store
        .info(&subject)
        .await
        .map(|info| info.deleted)
        .unwrap_or(true);
    assert!(removed, "object survived the purge");
    assert!(store.get(&subject).await.is_err());
}

#[tokio::test]
async fn a_page_keeps_one_message_and_deletion_leaves_nothing_to_resurrect() {
    let bus = pagestream_testkit::bus().await;
    for version in 1..=100 {
        bus.publish(&changed(42, version, format!("<p>v{version}</p>")))
            .await
            .expect("publish");
    }
    bus.publish(&changed(43, 1, "<p>other</p>".into()))
        .await
        .expect("publish");
    assert_eq!(stream_messages(&bus, EventKind::PageChanged).await, 2);
    let latest: Envelope<PageChanged> = bus
        .last_for_page(&source(), &page(42))
        .await
        .expect("read")
        .expect("present");
    assert_eq!(latest.data.page.version, 100);

    bus.publish(&Envelope::new(PageConverted {
        page: info(42, 100),
        markdown: "v100".into(),
        metadata: ContentMetadata::default(),
    }))
    .await
    .expect("publish converted");
    bus.publish(&Envelope::new(PageDeleted {
        source: source(),
        page_id: page(42),
        version: 100,
        space_key: None,
        deleted_at: Utc::now(),
        reason: None,
    }))
    .await
    .expect("publish deleted");
    bus.purge_page(&source(), &page(42)).await.expect("purge");

    let gone: Option<Envelope<PageChanged>> =
        bus.last_for_page(&source(), &page(42)).await.expect("read");
    assert!(gone.is_none());
    let gone: Option<Envelope<PageConverted>> =
        bus.last_for_page(&source(), &page(42)).await.expect("read");
    assert!(gone.is_none());
    // The tombstone stays, and the other page is untouched.
    let tombstone: Option<Envelope<PageDeleted>> =
        bus.last_for_page(&source(), &page(42)).await.expect("read");
    assert_eq!(tombstone.expect("tombstone").data.version, 100);
    assert_eq!(stream_messages(&bus, EventKind::PageChanged).await, 1);
}

#[tokio::test]
async fn the_consumer_span_is_a_child_of_the_publisher_span() {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // Global, not scoped: with a scoped subscriber, the `handle` callsite first hit by tests on
    // other threads can cache "not interested". Only this test installs one.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");

    let bus = pagestream_testkit::bus().await;
    bus.publish(&changed(7, 1, "<p>x</p>".into()))
        .instrument(tracing::info_span!("publisher"))
        .await
        .expect("publish");

    let handler = Scripted::new(|_, _| Ok(()));
    let (cancel, task) = start(&bus, fast_stage("traced"), handler.clone());
    eventually("the delivery", || handler.seen().len() == 1).await;
    cancel.cancel();
    task.await.expect("stage stops");

    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let publisher = spans
        .iter()
        .find(|span| span.name == "publisher")
        .expect("publisher span");
    // Other tests' spans are recorded too: the consumer span is the one in the publisher's trace.
    let consumer = spans
        .iter()
        .find(|span| {
            span.name == "handle"
                && span.span_context.trace_id() == publisher.span_context.trace_id()
        })
        .expect("a consumer span in the publisher's trace");
    assert_eq!(consumer.parent_span_id, publisher.span_context.span_id());
}
