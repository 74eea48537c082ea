//! Query embedding. In production the api asks the embedder service over NATS request/reply, so
//! that no api replica loads a model of its own; [`HashEmbedder`] embeds in-process by feature
//! hashing, for demos and benchmarks without a model and as the responder in tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use pagestream_bus::Bus;
use pagestream_events::{EmbedQueryReply, EmbedQueryRequest, Vector};

#[derive(Debug, Clone, PartialEq)]
pub struct QueryEmbedding {
    pub model: String,
    pub vector: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// Nobody answers on the subject, or the answer came too late: try again later.
    #[error("embedder unavailable: {0}")]
    Unavailable(String),
    /// The embedder answered but refused (another model, bad input).
    #[error("embedder refused: {0}")]
    Refused(String),
    /// The reply could not be decoded.
    #[error("malformed embedder reply: {0}")]
    Malformed(String),
}

impl EmbedError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

#[async_trait]
pub trait QueryEmbedder: Send + Sync + 'static {
    async fn embed(&self, text: &str) -> Result<QueryEmbedding, EmbedError>;
}

/// Asks the embedder service on `<root>.embed.query`.
pub struct NatsQueryEmbedder {
    client: async_nats::Client,
    subject: String,
    model: String,
    timeout: Duration,
}

impl NatsQueryEmbedder {
    pub fn new(bus: &Bus, model: impl Into<String>, timeout: Duration) -> Self {
        Self {
            client: bus.client().clone(),
            subject: bus.embed_query_subject(),
            model: model.into(),
            timeout,
        }
    }
}

#[async_trait]
impl QueryEmbedder for NatsQueryEmbedder {
    async fn embed(&self, text: &str) -> Result<QueryEmbedding, EmbedError> {
        let request = EmbedQueryRequest {
            text: text.to_owned(),
            model: Some(self.model.clone()),
        };
        let body =
            serde_json::to_vec(&request).map_err(|e| EmbedError::Malformed(e.to_string()))?;
        let reply = tokio::time::timeout(
            self.timeout,
            self.client.request(self.subject.clone(), body.into()),
        )
        .await
        .map_err(|_| EmbedError::Unavailable(format!("no reply within {:?}", self.timeout)))?
        .map_err(|error| EmbedError::Unavailable(error.to_string()))?;
        match serde_json::from_slice::<EmbedQueryReply>(&reply.payload)
            .map_err(|error| EmbedError::Malformed(error.to_string()))?
        {
            EmbedQueryReply::Embedded {
                model,
                dimension,
                vector,
            } => {
                if vector.dimension() != dimension as usize || dimension == 0 {
                    return Err(EmbedError::Malformed(format!(
                        "vector has {} values, reply says {dimension}",
                        vector.dimension()
                    )));
                }
                if model != self.model {
                    return Err(EmbedError::Refused(format!(
                        "embedder serves {model:?}, search expects {:?}",
                        self.model
                    )));
                }
                Ok(QueryEmbedding {
                    model,
                    vector: vector.0,
                })
            }
            EmbedQueryReply::Failed { error } => Err(EmbedError::Refused(error)),
        }
    }
}

/// Remembers the vectors of recent queries: a repeated query (paging, a refresh, a popular
/// question) skips the embedding, the largest cost of a search on a real model. Two generations
/// of at most `capacity / 2` entries each: a hit in the older one moves to the newer, and when
/// the newer fills up the older is dropped, so memory stays bounded without per-entry bookkeeping.
pub struct CachedQueryEmbedder {
    inner: Arc<dyn QueryEmbedder>,
    generation_size: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    newer: HashMap<String, QueryEmbedding>,
    older: HashMap<String, QueryEmbedding>,
}

impl Generations {
    fn insert(&mut self, text: String, embedding: QueryEmbedding, generation_size: usize) {
        if self.newer.len() >= generation_size {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(text, embedding);
    }
}

impl CachedQueryEmbedder {
    /// Keeps at most `capacity` vectors (0: none, every query is embedded).
    pub fn new(inner: Arc<dyn QueryEmbedder>, capacity: usize) -> Self {
        Self {
            inner,
            generation_size: capacity / 2,
            generations: Mutex::new(Generations::default()),
        }
    }
}

#[async_trait]
impl QueryEmbedder for CachedQueryEmbedder {
    async fn embed(&self, text: &str) -> Result<QueryEmbedding, EmbedError> {
        if self.generation_size == 0 {
            return self.inner.embed(text).await;
        }
        if let Ok(mut generations) = self.generations.lock() {
            if let Some(embedding) = generations.newer.get(text) {
                return Ok(embedding.clone());
            }
            if let Some(embedding) = generations.older.remove(text) {
                generations.insert(text.to_owned(), embedding.clone(), self.generation_size);
                return Ok(embedding);
            }
        }
        // Failures are not cached: the embedder may be back for the next query.
        let embedding = self.inner.embed(text).await?;
        if let Ok(mut generations) = self.generations.lock() {
            generations.insert(text.to_owned(), embedding.clone(), self.generation_size);
        }
        Ok(embedding)
    }
}

/// The `hash-<dimension>` model in process ([`pagestream_events::hash_embedding`], the same function
/// the embedder stores chunk vectors with): for demos and benchmarks without a model.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    pub model: String,
    pub dimension: usize,
}

impl HashEmbedder {
    pub fn new(model: impl Into<String>, dimension: usize) -> Self {
        Self {
            model: model.into(),
            dimension: dimension.max(1),
        }
    }

    pub fn vector(&self, text: &str) -> Vec<f32> {
        pagestream_events::hash_embedding(text, self.dimension)
    }
}

#[async_trait]
impl QueryEmbedder for HashEmbedder {
    async fn embed(&self, text: &str) -> Result<QueryEmbedding, EmbedError> {
        Ok(QueryEmbedding {
            model: self.model.clone(),
            vector: self.vector(text),
        })
    }
}

/// Answers query-embedding requests on the bus with `embedder`: the embedder service's side of
/// the protocol, for setups (tests, benchmarks, demos) that run without it. Subscribes first, then
/// returns the future that serves until the subscription ends.
pub async fn answer_embed_queries(
    bus: &Bus,
    embedder: impl QueryEmbedder,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, EmbedError> {
    let client = bus.client().clone();
    let mut requests = client
        .subscribe(bus.embed_query_subject())
        .await
        .map_err(|error| EmbedError::Unavailable(error.to_string()))?;
    client
        .flush()
        .await
        .map_err(|error| EmbedError::Unavailable(error.to_string()))?;
    Ok(async move {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply else {
                continue;
            };
            let reply = match serde_json::from_slice::<EmbedQueryRequest>(&message.payload) {
                Ok(request) => match embedder.embed(&request.text).await {
                    Ok(embedding) => EmbedQueryReply::Embedded {
                        model: embedding.model,
                        dimension: embedding.vector.len() as u32,
                        vector: Vector(embedding.vector),
                    },
                    Err(error) => EmbedQueryReply::Failed {
                        error: error.to_string(),
                    },
                },
                Err(error) => EmbedQueryReply::Failed {
                    error: format!("malformed request: {error}"),
                },
            };
            match serde_json::to_vec(&reply) {
                Ok(body) => {
                    if let Err(error) = client.publish(reply_to, body.into()).await {
                        tracing::warn!(%error, "cannot answer an embed query");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot encode an embed reply"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn hash_vectors_are_unit_length_and_reflect_shared_words() {
        let embedder = HashEmbedder::new("hash", 384);
        let a = embedder.vector("rotate the database credentials weekly");
        let b = embedder.vector("credentials rotation for the database");
        let c = embedder.vector("quarterly marketing offsite agenda");
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        assert!(cosine(&a, &b) > cosine(&a, &c) + 0.2);
        assert_eq!(embedder.vector("Same words"), embedder.vector("same WORDS"));
        assert_eq!(embedder.vector("").len(), 384);
    }

    /// Counts the queries that reach it.
    struct Counting(std::sync::atomic::AtomicUsize, HashEmbedder);

    #[async_trait]
    impl QueryEmbedder for Counting {
        async fn embed(&self, text: &str) -> Result<QueryEmbedding, EmbedError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.1.embed(text).await
        }
    }

    #[tokio::test]
    async fn the_cache_answers_repeated_queries_and_stays_bounded() {
        let counting = Arc::new(Counting(Default::default(), HashEmbedder::new("hash", 8)));
        let calls = || counting.0.load(std::sync::atomic::Ordering::SeqCst);
        let cached = CachedQueryEmbedder::new(counting.clone(), 4);
        let first = cached.embed("alpha").await.expect("embed");
        assert_eq!(cached.embed("alpha").await.expect("embed"), first);
        assert_eq!(calls(), 1, "a repeated query is answered from the cache");
        for text in ["beta", "gamma", "delta", "epsilon", "zeta"] {
            cached.embed(text).await.expect("embed");
        }
        assert_eq!(calls(), 6);
        {
            let generations = cached.generations.lock().expect("lock");
            assert!(generations.newer.len() + generations.older.len() <= 4);
        }
        cached.embed("alpha").await.expect("embed");
        assert_eq!(calls(), 7, "an evicted query is embedded again");
    }
}
