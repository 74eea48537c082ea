//! The `local` provider against sentence-transformers' own vectors. The model is part of the test
//! setup (`ops/fetch-model`, run by `ops/test`): without it these tests fail.

use pagestream_embedder::{Chunker, EmbedError, EmbeddingProvider};
use pagestream_events::Retryable;
use serde::Deserialize;

use super::support::{FIXTURE, cosine, local_provider};

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    token_count: usize,
    vector: Vec<f32>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("../reference/all-MiniLM-L6-v2.json")).expect("reference")
}

#[tokio::test]
async fn vectors_agree_with_sentence_transformers() {
    let provider = local_provider();
    let reference = reference();
    assert_eq!(provider.dimension(), 384);
    let texts: Vec<String> = reference.cases.iter().map(|c| c.text.clone()).collect();
    let vectors = provider.embed(texts).await.expect("embed");
    for (case, vector) in reference.cases.iter().zip(&vectors) {
        assert_eq!(
            provider.token_counter().count_tokens(&case.text),
            case.token_count,
            "token count of {:?}",
            case.text
        );
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
        let similarity = cosine(vector, &case.vector);
        assert!(
            similarity > 0.999,
            "cosine {similarity} for {:?}",
            case.text
        );
    }
}

#[tokio::test]
async fn padding_in_a_batch_does_not_change_a_vector() {
    let provider = local_provider();
    let short = "Rollback with kubectl rollout undo.".to_owned();
    let long = "The ingestion pipeline reads every page of the space. ".repeat(20);
    let alone = provider.embed(vec![short.clone()]).await.expect("embed");
    let batched = provider
        .embed(vec![long, short.clone(), "x".into()])
        .await
        .expect("embed");
    assert!(cosine(&alone[0], &batched[1]) > 0.99999);
}

#[tokio::test]
async fn fixture_chunks_fit_the_real_tokenizer_and_embed() {
    let provider = local_provider();
    let counter = provider.token_counter();
    assert_eq!(counter.max_tokens(), 256);
    let chunks = Chunker::new(counter).chunk("Using REST for cloud logs", FIXTURE);
    assert!(chunks.len() > 5);
    for chunk in &chunks {
        assert!(chunk.token_count <= 256, "{}", chunk.token_count);
        assert_eq!(
            chunk.token_count as usize,
            counter.count_tokens(&chunk.text)
        );
    }
    // The longest chunk is the one that could be refused; embedding it shows none is. (Only
    // that one: dev builds run the model slowly.)
    let longest = chunks.iter().max_by_key(|c| c.token_count).expect("chunks");
    assert!(longest.token_count > 200, "{}", longest.token_count);
    let vectors = provider
        .embed(vec![longest.text.clone()])
        .await
        .expect("embed");
    assert_eq!(vectors[0].len(), 384);
}

#[tokio::test]
async fn too_long_input_is_refused_not_truncated() {
    let provider = local_provider();
    let long = "word ".repeat(400);
    let error = provider
        .embed(vec!["fine".into(), long])
        .await
        .expect_err("too long");
    assert!(
        matches!(
            error,
            EmbedError::InputTooLong {
                index: 1,
                max: 256,
                ..
            }
        ),
        "{error}"
    );
    assert!(!error.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_work_is_embedded_while_a_bulk_call_holds_every_worker() {
    let provider = local_provider();
    let bulk_texts: Vec<String> = (0..400)
        .map(|i| format!("page {i}: {}", "rollout of the search service ".repeat(40)))
        .collect();
    let bulk = tokio::spawn(provider.embed(bulk_texts));
    // Give the bulk call time to take its workers.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !bulk.is_finished(),
        "the bulk call is long enough to overlap"
    );
    let query = provider
        .embed_urgent(vec!["how do we roll out search".into()])
        .await
        .expect("query");
    assert!(
        !bulk.is_finished(),
        "the query was answered only after the whole bulk call"
    );
    let alone = provider
        .embed(vec!["how do we roll out search".into()])
        .await
        .expect("embed");
    assert_eq!(query, alone, "the urgent worker runs the same model");
    assert_eq!(bulk.await.expect("join").expect("bulk").len(), 400);
}
