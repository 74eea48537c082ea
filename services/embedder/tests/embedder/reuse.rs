use std::sync::Mutex;

use async_trait::async_trait;
use pagestream_embedder::hash::HashProvider;
use pagestream_embedder::reuse::ReusePlan;
use pagestream_embedder::{Chunker, EmbedError, EmbeddingProvider, TokenCounter};
use pagestream_events::{ChunksReady, PageId, SourceKey};

/// The hash provider, counting the texts it embeds.
struct Counting {
    inner: HashProvider,
    embedded: Mutex<Vec<String>>,
}

#[async_trait]
impl EmbeddingProvider for Counting {
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
        self.embedded
            .lock()
            .expect("lock")
            .extend(texts.iter().cloned());
        self.inner.embed(texts).await
    }
}

fn paragraph(section: usize, variant: &str) -> String {
    (0..8)
        .map(|s| {
            format!("Section {section} sentence {s} explains step {variant} of the procedure.")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn page(edited: Option<usize>) -> String {
    (0..20)
        .map(|i| {
            let variant = if Some(i) == edited { "EDITED" } else { "one" };
            format!("## Step {i}\n\n{}\n", paragraph(i, variant))
        })
        .collect()
}

/// What the service does for one page version: chunk, plan reuse, embed the rest.
async fn process(
    provider: &Counting,
    previous: Option<&ChunksReady>,
    markdown: &str,
) -> ChunksReady {
    let chunks = Chunker::new(provider.token_counter()).chunk("Procedure", markdown);
    let plan = ReusePlan::new(previous, provider.model(), provider.dimension(), chunks);
    let vectors = provider.embed(plan.texts_to_embed()).await.expect("embed");
    ChunksReady {
        source: SourceKey::new("test").expect("source"),
        page_id: PageId::new("42").expect("page"),
        space_key: "DOC".into(),
        version: previous.map_or(1, |p| p.version + 1),
        model: provider.model().into(),
        dimension: u32::try_from(provider.dimension()).expect("dimension"),
        chunks: plan.complete(vectors).expect("complete"),
        incarnation: 0,
        source_id: None,
    }
}

fn counting(dimension: usize) -> Counting {
    Counting {
        inner: HashProvider::new(dimension, 256).expect("provider"),
        embedded: Mutex::new(Vec::new()),
    }
}

#[tokio::test]
async fn one_paragraph_edit_embeds_only_the_changed_chunk() {
    let provider = counting(64);
    let first = process(&provider, None, &page(None)).await;
    assert_eq!(first.chunks.len(), 20);
    assert_eq!(provider.embedded.lock().expect("lock").len(), 20);
    provider.embedded.lock().expect("lock").clear();

    let second = process(&provider, Some(&first), &page(Some(7))).await;
    let embedded = provider.embedded.lock().expect("lock").clone();
    assert_eq!(embedded.len(), 1, "{embedded:#?}");
    assert!(embedded[0].contains("EDITED"));
    for (old, new) in first.chunks.iter().zip(&second.chunks) {
        if new.text.contains("EDITED") {
            assert_ne!(old.content_hash, new.content_hash);
        } else {
            assert_eq!(old, new);
        }
    }
    // Reused or not, every vector is the one its text gets.
    for chunk in &second.chunks {
        assert_eq!(chunk.vector.0, provider.inner.embed_one(&chunk.text));
    }
}

#[tokio::test]
async fn moved_chunks_are_reused_and_other_models_are_not() {
    let provider = counting(64);
    let first = process(&provider, None, &page(None)).await;
    provider.embedded.lock().expect("lock").clear();
    // A new section at the top shifts every index.
    let shifted = format!("## Preface\n\n{}\n\n{}", paragraph(99, "zero"), page(None));
    let second = process(&provider, Some(&first), &shifted).await;
    assert_eq!(second.chunks.len(), 21);
    assert_eq!(provider.embedded.lock().expect("lock").len(), 1);

    // Another model (here another dimension) reuses nothing.
    let other = counting(32);
    let third = process(&other, Some(&second), &shifted).await;
    assert_eq!(other.embedded.lock().expect("lock").len(), 21);
    assert!(third.chunks.iter().all(|c| c.vector.dimension() == 32));
}

#[test]
fn completing_with_the_wrong_number_of_vectors_fails() {
    let provider = counting(8);
    let chunks = Chunker::new(provider.token_counter()).chunk("T", "Some text.");
    let plan = ReusePlan::new(None, provider.model(), 8, chunks);
    let error = plan.complete(Vec::new()).expect_err("missing vector");
    assert!(matches!(
        error,
        EmbedError::VectorCount {
            expected: 1,
            got: 0
        }
    ));
}
