//! The embedder stage: consumes `page.converted`, emits `chunks.ready`, and answers query-embedding
//! requests for the api.
//!
//! A batch of pages is chunked, the chunks whose text and model are unchanged take their vectors
//! from what the stream already holds for the page ([`crate::reuse`]), and the rest of the whole
//! batch is embedded in one call (the provider sorts by length and works off the async runtime).
//! A provider outage fails the batch transiently (the runner waits it out); if the provider
//! refuses the batch for good, its pages are embedded one by one so that only the bad page is
//! dead-lettered.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use pagestream_bus::consumer::Handler;
use pagestream_bus::{Bus, BusError, Delivery, HandlerError, Lane, Stage, StageConfig};
use pagestream_events::{
    ChunksReady, EmbedQueryReply, EmbedQueryRequest, Envelope, PageConverted, Retryable, Vector,
};
use tokio_util::sync::CancellationToken;

use crate::reuse::ReusePlan;
use crate::{Chunker, EmbedError, EmbeddingProvider};

/// The durable consumer shared by every embedder replica.
pub const STAGE_NAME: &str = "embedder";

pub struct EmbedderHandler {
    bus: Bus,
    provider: Arc<dyn EmbeddingProvider>,
}

impl EmbedderHandler {
    pub fn new(bus: Bus, provider: Arc<dyn EmbeddingProvider>) -> Self {
        Self { bus, provider }
    }

    /// Chunks a page and decides which chunks need embedding.
    async fn plan(&self, page: &PageConverted) -> Result<ReusePlan, HandlerError> {
        let provider = self.provider.clone();
        let title = page.page.title.clone();
        let markdown = page.markdown.clone();
        // Tokenizing a large page is CPU work: keep it off the async workers.
        let chunks = tokio::task::spawn_blocking(move || {
            Chunker::new(provider.token_counter()).chunk_page(&title, &markdown)
        })
        .await
        .map_err(|error| HandlerError::transient(format!("chunking task: {error}")))?;
        let previous = self
            .bus
            .last_for_page::<ChunksReady>(&page.page.source, &page.page.page_id)
            .await?;
        Ok(ReusePlan::new(
            previous.as_ref().map(|event| &event.data),
            self.provider.model(),
            self.provider.dimension(),
            chunks,
        ))
    }

    async fn publish(
        &self,
        delivery: &Delivery<PageConverted>,
        plan: ReusePlan,
        vectors: Vec<Vec<f32>>,
    ) -> Result<(), HandlerError> {
        let page = &delivery.event.data.page;
        let reused = plan.reused();
        let chunks = plan.complete(vectors)?;
        metrics::counter!("pagestream_embedder_chunks_reused_total").increment(reused as u64);
        let event = Envelope::new(ChunksReady {
            source: page.source.clone(),
            page_id: page.page_id.clone(),
            space_key: page.space_key.clone(),
            version: page.version,
            model: self.provider.model().to_owned(),
            dimension: self.provider.dimension() as u32,
            chunks,
            incarnation: page.incarnation,
            source_id: page.source_id,
        })
        .with_sync_run(delivery.event.extensions.syncrun);
        self.bus.publish_in(delivery.lane, &event).await?;
        Ok(())
    }
}

impl Handler<PageConverted> for EmbedderHandler {
    async fn handle(&self, delivery: &Delivery<PageConverted>) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(delivery))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    async fn handle_batch(
        &self,
        batch: &[Delivery<PageConverted>],
    ) -> Vec<Result<(), HandlerError>> {
        // A page's chunking (in the blocking pool), the read of its previous vectors and below its
        // publish (NATS round trips) mostly wait: a batch's pages go through them together.
        let plans =
            futures::future::join_all(batch.iter().map(|delivery| self.plan(&delivery.event.data)))
                .await;
        let texts: Vec<String> = plans
            .iter()
            .flatten()
            .flat_map(ReusePlan::texts_to_embed)
            .collect();
        // A batch of live edits only is urgent: it must not wait behind a sync's bulk calls.
        let urgent = batch.iter().all(|delivery| delivery.lane == Lane::Live);
        let embedded = match self.embed(texts, urgent).await {
            Ok(vectors) => Some(vectors),
            Err(error) if error.is_transient() => {
                let error = HandlerError::from(error);
                return batch.iter().map(|_| Err(error.clone())).collect();
            }
            Err(error) => {
                // One page may spoil the call for all: find it by embedding them one by one.
                if batch.len() > 1 {
                    tracing::warn!(%error, pages = batch.len(), "batch refused; embedding its pages one by one");
                }
                None
            }
        };
        let mut vectors = embedded.map(Vec::into_iter);
        let pages = batch.iter().zip(plans).map(|(delivery, plan)| {
            // This page's share of the batch's vectors (none: the batch call was refused).
            let share: Option<Vec<Vec<f32>>> = match (&plan, vectors.as_mut()) {
                (Ok(plan), Some(vectors)) => {
                    Some(vectors.by_ref().take(plan.texts_to_embed().len()).collect())
                }
                _ => None,
            };
            async move {
                let plan = plan?;
                let own = match share {
                    Some(own) => own,
                    None => self.embed(plan.texts_to_embed(), urgent).await?,
                };
                self.publish(delivery, plan, own).await
            }
        });
        futures::future::join_all(pages).await
    }
}

impl EmbedderHandler {
    /// Embeds texts (as urgent work or not), checking that every text got its vector.
    async fn embed(&self, texts: Vec<String>, urgent: bool) -> Result<Vec<Vec<f32>>, EmbedError> {
        let total = texts.len();
        if total == 0 {
            return Ok(Vec::new());
        }
        let vectors = if urgent {
            self.provider.embed_urgent(texts).await?
        } else {
            self.provider.embed(texts).await?
        };
        if vectors.len() != total {
            return Err(EmbedError::VectorCount {
                expected: total,
                got: vectors.len(),
            });
        }
        metrics::counter!("pagestream_embedder_chunks_embedded_total").increment(total as u64);
        Ok(vectors)
    }
}

/// How the embedder stage consumes.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// Pages per embedding call.
    pub batch_pages: usize,
    /// Batches in flight on this replica.
    pub concurrency: usize,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            batch_pages: 16,
            concurrency: 2,
        }
    }
}

/// Runs the embedder stage until `cancel` fires.
pub async fn run(
    bus: Bus,
    provider: Arc<dyn EmbeddingProvider>,
    config: EmbedderConfig,
    cancel: CancellationToken,
) -> Result<(), BusError> {
    let stage = Stage::<PageConverted>::new(
        bus.clone(),
        StageConfig {
            max_batch: config.batch_pages.max(1),
            concurrency: config.concurrency.max(1),
            batch_linger: std::time::Duration::from_millis(20),
            // Embedding a batch takes seconds on CPU; back off longer than the default.
            retry_delay: std::time::Duration::from_secs(2),
            live_lane: true,
            ..StageConfig::new(STAGE_NAME)
        },
    );
    stage
        .run(Arc::new(EmbedderHandler::new(bus, provider)), cancel)
        .await
}

/// Query requests answered in one call to the provider at most: those that queued while the
/// previous call ran.
const MAX_QUERY_BATCH: usize = 32;

/// Answers query-embedding requests (one queue group across replicas) until `cancel` fires.
/// Requests that arrive while a call to the provider runs are embedded together in the next.
pub async fn answer_queries(
    bus: Bus,
    provider: Arc<dyn EmbeddingProvider>,
    cancel: CancellationToken,
) -> Result<(), BusError> {
    let mut requests = bus
        .client()
        .queue_subscribe(bus.embed_query_subject(), "embedder".to_owned())
        .await
        .map_err(|error| BusError::JetStream {
            operation: "subscribe to query requests",
            reason: error.to_string(),
        })?;
    loop {
        let request = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            request = requests.next() => request,
        };
        let Some(first) = request else {
            return Err(BusError::JetStream {
                operation: "query requests",
                reason: "subscription ended".into(),
            });
        };
        let mut batch = vec![first];
        while batch.len() < MAX_QUERY_BATCH {
            // Only what has already arrived: a subscription's next message is cancel-safe.
            match requests.next().now_or_never() {
                Some(Some(request)) => batch.push(request),
                _ => break,
            }
        }
        let asked: Vec<_> = batch
            .into_iter()
            .filter_map(|request| {
                let reply_to = request.reply?;
                let query = serde_json::from_slice::<EmbedQueryRequest>(&request.payload)
                    .map_err(|error| format!("invalid request: {error}"))
                    .and_then(|query| match query.model {
                        Some(model) if model != provider.model() => Err(format!(
                            "this embedder serves {}, not {model}",
                            provider.model()
                        )),
                        _ => Ok(query.text),
                    });
                Some((reply_to, query))
            })
            .collect();
        let texts: Vec<String> = asked
            .iter()
            .filter_map(|(_, query)| query.as_ref().ok().cloned())
            .collect();
        let mut vectors = embed_queries(provider.as_ref(), texts).await.into_iter();
        for (reply_to, query) in asked {
            let answer = query.and_then(|_| {
                vectors
                    .next()
                    .unwrap_or_else(|| Err("provider returned no vector".into()))
            });
            let reply = match answer {
                Err(error) => EmbedQueryReply::Failed { error },
                Ok(vector) => EmbedQueryReply::Embedded {
                    model: provider.model().to_owned(),
                    dimension: provider.dimension() as u32,
                    vector: Vector(vector),
                },
            };
            let body = serde_json::to_vec(&reply).unwrap_or_default();
            if let Err(error) = bus.client().publish(reply_to, body.into()).await {
                tracing::warn!(%error, "cannot answer a query request");
            }
        }
    }
}

/// A vector or an error per query, in order. When the provider refuses the whole call (one
/// query too long, say), each query is asked alone, so that one bad query fails only itself.
async fn embed_queries(
    provider: &dyn EmbeddingProvider,
    texts: Vec<String>,
) -> Vec<Result<Vec<f32>, String>> {
    if texts.is_empty() {
        return Vec::new();
    }
    match embed_each(provider, texts.clone()).await {
        Ok(vectors) => vectors.into_iter().map(Ok).collect(),
        Err(error) if texts.len() == 1 => vec![Err(error)],
        Err(_) => {
            let mut answers = Vec::with_capacity(texts.len());
            for text in texts {
                answers.push(embed_each(provider, vec![text]).await.and_then(|vectors| {
                    vectors
                        .into_iter()
                        .next()
                        .ok_or_else(|| "provider returned no vector".to_owned())
                }));
            }
            answers
        }
    }
}

/// Exactly one vector per query, or why not.
async fn embed_each(
    provider: &dyn EmbeddingProvider,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, String> {
    let count = texts.len();
    match provider.embed_urgent(texts).await {
        Ok(vectors) if vectors.len() == count => Ok(vectors),
        Ok(_) => Err("provider returned no vector".into()),
        Err(error) => Err(error.to_string()),
    }
}
