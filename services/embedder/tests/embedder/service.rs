//! The embedder stage over real JetStream, with a counting and failing provider around `hash`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use pagestream_bus::{Bus, Lane, dead_letter};
use pagestream_embedder::hash::HashProvider;
use pagestream_embedder::service::{self, EmbedderConfig};
use pagestream_embedder::{EmbedError, EmbeddingProvider, TokenCounter};
use pagestream_events::{
    ChunksReady, ContentMetadata, ContentType, EmbedQueryReply, EmbedQueryRequest, Envelope,
    PageConverted, PageId, PageInfo, SourceKey,
};
use tokio_util::sync::CancellationToken;

/// Counts embedded texts (and those embedded as urgent work), fails every other call when asked
/// to, and refuses any call with a text that contains `refuse` (as a server refuses an input it
/// cannot take).
struct Flaky {
    inner: HashProvider,
    calls: AtomicUsize,
    texts: AtomicUsize,
    urgent_texts: AtomicUsize,
    fail_every_other: bool,
    refuse: Option<&'static str>,
}

#[async_trait]
impl EmbeddingProvider for Flaky {
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    fn token_counter(&self) -> &dyn TokenCounter {
        self.inner.token_counter()
    }
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_every_other && call.is_multiple_of(2) {
            return Err(EmbedError::Unavailable("provider overloaded".into()));
        }
        if let Some(marker) = self.refuse
            && texts.iter().any(|text| text.contains(marker))
        {
            return Err(EmbedError::Rejected {
                status: 400,
                message: "input refused".into(),
            });
        }
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        self.inner.embed(texts).await
    }
    async fn embed_urgent(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let count = texts.len();
        let vectors = self.embed(texts).await?;
        self.urgent_texts.fetch_add(count, Ordering::SeqCst);
        Ok(vectors)
    }
}

fn flaky(fail_every_other: bool) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: HashProvider::new(64, 256).expect("hash"),
        calls: AtomicUsize::new(0),
        texts: AtomicUsize::new(0),
        urgent_texts: AtomicUsize::new(0),
        fail_every_other,
        refuse: None,
    })
}

fn page(id: u64, version: u64, markdown: String) -> Envelope<PageConverted> {
    Envelope::new(PageConverted {
        page: PageInfo {
            source: SourceKey::new("eng").expect("source"),
            page_id: PageId::from(id),
            content_type: ContentType::Page,
            space_key: "ENG".into(),
            title: format!("Page {id}"),
            version,
            path: format!("/{id}"),
            url: String::new(),
            ancestors: vec![],
            labels: vec![],
            author: None,
            created_at: None,
            last_modified: Utc::now(),
            incarnation: 0,
            source_id: None,
        },
        markdown,
        metadata: ContentMetadata::default(),
    })
}

/// Twenty sections of a few sentences each.
fn sections(edited: Option<usize>) -> String {
    (0..20)
        .map(|section| {
            let extra = if edited == Some(section) { " This sentence is new." } else { "" };
            format!(
                "## Section {section}\n\nThe deployment of service {section} needs care. Check the queue depth, the error budget and the rollout plan before you start.{extra}\n\n"
            )
        })
        .collect()
}

async fn chunks_of(bus: &Bus, id: u64, version: u64) -> ChunksReady {
    let source = SourceKey::new("eng").expect("source");
    for _ in 0..400 {
        if let Some(event) = bus
            .last_for_page::<ChunksReady>(&source, &PageId::from(id))
            .await
            .expect("read")
            && event.data.version == version
        {
            return event.data;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no chunks.ready for page {id} v{version}");
}

fn start(bus: &Bus, provider: Arc<Flaky>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let bus = bus.clone();
        let cancel = cancel.clone();
        async move {
            service::run(bus, provider, EmbedderConfig::default(), cancel)
                .await
                .expect("stage");
        }
    });
    (cancel, task)
}

#[tokio::test]
async fn a_live_edit_is_urgent_work_and_a_full_sync_page_is_not() {
    let bus = pagestream_testkit::bus().await;
    let provider = flaky(false);
    let (cancel, task) = start(&bus, provider.clone());
    bus.publish_in(Lane::Bulk, &page(1, 1, sections(None)))
        .await
        .expect("publish");
    let bulk = chunks_of(&bus, 1, 1).await.chunks.len();
    assert_eq!(provider.urgent_texts.load(Ordering::SeqCst), 0);
    bus.publish(&page(2, 1, sections(Some(3))))
        .await
        .expect("publish");
    let live = chunks_of(&bus, 2, 1).await.chunks.len();
    assert_eq!(provider.urgent_texts.load(Ordering::SeqCst), live);
    assert_eq!(provider.texts.load(Ordering::SeqCst), bulk + live);
    cancel.cancel();
    task.await.expect("join");
}

#[tokio::test]
async fn an_edit_embeds_only_the_chunks_that_changed() {
    let bus = pagestream_testkit::bus().await;
    let provider = flaky(false);
    let (cancel, task) = start(&bus, provider.clone());

    bus.publish(&page(1, 1, sections(None)))
        .await
        .expect("publish");
    let first = chunks_of(&bus, 1, 1).await;
    assert!(first.chunks.len() >= 2, "expected several chunks");
    assert_eq!(provider.texts.load(Ordering::SeqCst), first.chunks.len());
    assert_eq!(first.dimension, 64);
    assert!(
        first
            .chunks
            .iter()
            .all(|chunk| chunk.vector.dimension() == 64)
    );

    bus.publish(&page(1, 2, sections(Some(7))))
        .await
        .expect("publish");
    let second = chunks_of(&bus, 1, 2).await;
    let embedded_again = provider.texts.load(Ordering::SeqCst) - first.chunks.len();
    let changed = second
        .chunks
        .iter()
        .filter(|chunk| {
            !first
                .chunks
                .iter()
                .any(|old| old.content_hash == chunk.content_hash)
        })
        .count();
    assert!(changed >= 1);
    assert_eq!(embedded_again, changed, "only changed chunks are embedded");
    cancel.cancel();
    task.await.expect("join");
}

#[tokio::test]
async fn a_provider_failing_half_its_calls_loses_no_page() {
    let bus = pagestream_testkit::bus().await;
    let provider = flaky(true);
    let (cancel, task) = start(&bus, provider.clone());
    for id in 1..=12 {
        bus.publish(&page(
            id,
            1,
            format!("# Page {id}\n\nSome text about topic {id}."),
        ))
        .await
        .expect("publish");
    }
    for id in 1..=12 {
        let chunks = chunks_of(&bus, id, 1).await;
        assert!(!chunks.chunks.is_empty());
    }
    assert!(provider.calls.load(Ordering::SeqCst) >= 2);
    assert!(dead_letter::list(&bus, 10).await.expect("list").is_empty());
    cancel.cancel();
    task.await.expect("join");
}

#[tokio::test]
async fn one_bad_page_in_a_batch_is_dead_lettered_alone() {
    let bus = pagestream_testkit::bus().await;
    // Published before the stage starts, so that one batch holds them all.
    for id in 1..=6 {
        let text = if id == 3 { "POISON" } else { "fine" };
        bus.publish(&page(id, 1, format!("# Page {id}\n\nSome {text} text.")))
            .await
            .expect("publish");
    }
    let provider = Arc::new(Flaky {
        refuse: Some("POISON"),
        ..Arc::into_inner(flaky(false)).expect("sole owner")
    });
    let (cancel, task) = start(&bus, provider.clone());
    for id in [1, 2, 4, 5, 6] {
        assert!(!chunks_of(&bus, id, 1).await.chunks.is_empty());
    }
    let mut letters = Vec::new();
    for _ in 0..100 {
        letters = dead_letter::list(&bus, 10).await.expect("list");
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].1.subject.ends_with(".3"), "{letters:?}");
    assert!(letters[0].1.reason.contains("input refused"), "{letters:?}");
    cancel.cancel();
    task.await.expect("join");
}

#[tokio::test]
async fn answers_query_embedding_requests() {
    let bus = pagestream_testkit::bus().await;
    let provider = flaky(false);
    let cancel = CancellationToken::new();
    let responder = tokio::spawn(service::answer_queries(
        bus.clone(),
        provider.clone(),
        cancel.clone(),
    ));
    let ask = |model: Option<&str>| {
        let request = EmbedQueryRequest {
            text: "rollout plan".into(),
            model: model.map(str::to_owned),
        };
        let bus = bus.clone();
        async move {
            let mut reply = None;
            // The subscription may not be registered yet on the first try.
            for _ in 0..50 {
                if let Ok(message) = bus
                    .client()
                    .request(
                        bus.embed_query_subject(),
                        serde_json::to_vec(&request).expect("json").into(),
                    )
                    .await
                {
                    reply = Some(
                        serde_json::from_slice::<EmbedQueryReply>(&message.payload).expect("reply"),
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            reply.expect("a reply")
        }
    };
    match ask(None).await {
        EmbedQueryReply::Embedded {
            model,
            dimension,
            vector,
        } => {
            assert_eq!(model, "hash-64");
            assert_eq!(dimension, 64);
            assert_eq!(
                vector.0,
                HashProvider::new(64, 256)
                    .expect("hash")
                    .embed_one("rollout plan")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        ask(Some("other-model")).await,
        EmbedQueryReply::Failed { .. }
    ));
    cancel.cancel();
    responder.await.expect("join").expect("responder");
}

#[tokio::test]
async fn queries_asked_at_once_each_get_their_own_answer() {
    let bus = pagestream_testkit::bus().await;
    let provider = Arc::new(Flaky {
        refuse: Some("refuse"),
        ..Arc::into_inner(flaky(false)).expect("sole owner")
    });
    let cancel = CancellationToken::new();
    let responder = tokio::spawn(service::answer_queries(
        bus.clone(),
        provider.clone(),
        cancel.clone(),
    ));
    let ask = |text: String| {
        let bus = bus.clone();
        async move {
            let request =
                serde_json::to_vec(&EmbedQueryRequest { text, model: None }).expect("json");
            for _ in 0..50 {
                if let Ok(message) = bus
                    .client()
                    .request(bus.embed_query_subject(), request.clone().into())
                    .await
                {
                    return serde_json::from_slice::<EmbedQueryReply>(&message.payload)
                        .expect("reply");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no reply")
        }
    };
    // The responder is subscribed once one query has been answered.
    ask("warm up".into()).await;
    let texts: Vec<String> = (0..24)
        .map(|i| {
            if i == 7 {
                "please refuse this one".to_owned()
            } else {
                format!("query number {i}")
            }
        })
        .collect();
    let replies = futures::future::join_all(texts.iter().cloned().map(ask)).await;
    let hash = HashProvider::new(64, 256).expect("hash");
    for (text, reply) in texts.iter().zip(replies) {
        match reply {
            EmbedQueryReply::Embedded { vector, .. } => {
                assert!(!text.contains("refuse"), "{text} was embedded");
                assert_eq!(
                    vector.0,
                    hash.embed_one(text),
                    "{text} got another's vector"
                );
            }
            EmbedQueryReply::Failed { error } => {
                assert!(text.contains("refuse"), "{text} failed: {error}");
                assert!(error.contains("input refused"), "{error}");
            }
        }
    }
    cancel.cancel();
    responder.await.expect("join").expect("responder");
}
