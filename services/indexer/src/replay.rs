//! Replay: rebuild the projection from the streams alone, without Confluence or an embedding
//! provider. Sources come from the registry, then each fact stream is read from its first message
//! to the last one it held when the replay started, in batches through the same version-guarded
//! projection as the live indexer, so the result equals the live database.
//!
//! Into a database without chunks the search indexes (vector and full text) are dropped first and
//! built once at the end (bulk load): an HNSW index built over all the vectors at once costs a
//! fraction of inserting them one by one.

use std::time::Instant;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use pagestream_bus::Bus;
use pagestream_events::{
    ChunksReady, Envelope, EventKind, PageChanged, PageConverted, PageDeleted,
};
use pagestream_sources::SourceRegistry;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::projection::{self, SourceIds};
use crate::{IndexerError, Projected};

/// Where a replay stands, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct ReplayProgress {
    pub kind: EventKind,
    pub applied: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    pub sources: u64,
    pub events: u64,
    pub chunks: u64,
    /// Events that could not be decoded or applied (logged).
    pub skipped: u64,
    /// The whole replay, index build included.
    pub seconds: f64,
    /// Building the search indexes after a bulk load (0 when they were kept).
    pub index_seconds: f64,
}

/// Rebuilds the projection in `pool` (a migrated database, normally empty).
pub async fn replay(
    bus: &Bus,
    registry: &SourceRegistry,
    pool: &PgPool,
    batch_size: usize,
    mut progress: impl FnMut(ReplayProgress),
) -> Result<ReplayReport, IndexerError> {
    let started = Instant::now();
    let bulk = pagestream_store::chunks::none_stored(pool).await?;
    if bulk {
        pagestream_store::drop_search_indexes(pool).await?;
    }
    let mut report = ReplayReport::default();
    let projected = project_all(bus, registry, pool, batch_size, &mut report, &mut progress).await;
    // The indexes come back even when the replay failed half-way.
    if bulk {
        let building = Instant::now();
        pagestream_store::build_search_indexes(pool).await?;
        report.index_seconds = building.elapsed().as_secs_f64();
    }
    projected?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn project_all(
    bus: &Bus,
    registry: &SourceRegistry,
    pool: &PgPool,
    batch_size: usize,
    report: &mut ReplayReport,
    progress: &mut impl FnMut(ReplayProgress),
) -> Result<(), IndexerError> {
    for record in registry.list().await? {
        projection::upsert_source(pool, &record).await?;
        report.sources += 1;
    }
    let ids = SourceIds::default();
    replay_kind::<PageChanged>(bus, pool, &ids, batch_size, report, progress, |_| 0).await?;
    replay_kind::<PageConverted>(bus, pool, &ids, batch_size, report, progress, |_| 0).await?;
    replay_kind::<ChunksReady>(bus, pool, &ids, batch_size, report, progress, |event| {
        event.data.chunks.len() as u64
    })
    .await?;
    replay_kind::<PageDeleted>(bus, pool, &ids, batch_size, report, progress, |_| 0).await
}

fn jetstream_error(operation: &'static str, error: impl std::fmt::Display) -> IndexerError {
    IndexerError::Bus(pagestream_bus::BusError::JetStream {
        operation,
        reason: error.to_string(),
    })
}

/// Transactions in flight while replaying one stream: a stream holds one message per page, so
/// its batches touch disjoint pages and may be applied in any order.
const APPLY_CONCURRENCY: usize = 4;

async fn replay_kind<T: Projected>(
    bus: &Bus,
    pool: &PgPool,
    ids: &SourceIds,
    batch_size: usize,
    report: &mut ReplayReport,
    progress: &mut impl FnMut(ReplayProgress),
    chunks_of: impl Fn(&Envelope<T>) -> u64,
) -> Result<(), IndexerError> {
    let name = bus.streams().for_kind(T::KIND);
    let mut stream = bus
        .jetstream()
        .get_stream(&name)
        .await
        .map_err(|error| jetstream_error("get stream", error))?;
    let state = stream
        .info()
        .await
        .map_err(|error| jetstream_error("stream info", error))?
        .state
        .clone();
    if state.messages == 0 {
        return Ok(());
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|error| jetstream_error("create consumer", error))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|error| jetstream_error("pull", error))?;
    // Reading and decoding (CPU: vectors are JSON) runs on its own task, ahead of the writes.
    let (sender, receiver) = mpsc::channel(APPLY_CONCURRENCY);
    let reader = tokio::spawn(read_batches::<T>(
        bus.clone(),
        messages,
        state.last_sequence,
        batch_size,
        sender,
    ));
    let batches = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|batch| (batch, receiver))
    });
    let applied_batches = batches
        .map(|batch: Vec<(Envelope<T>, u64)>| async {
            let events: Vec<&Envelope<T>> = batch.iter().map(|(event, _)| event).collect();
            let results = crate::apply_batch(pool, ids, &events).await;
            (batch, results)
        })
        .buffer_unordered(APPLY_CONCURRENCY);
    let mut applied_batches = std::pin::pin!(applied_batches);
    let total = state.messages;
    let mut applied = 0u64;
    while let Some((batch, results)) = applied_batches.next().await {
        for ((event, sequence), result) in batch.iter().zip(results) {
            match result {
                Ok(()) => {
                    report.events += 1;
                    report.chunks += chunks_of(event);
                }
                Err(error) => {
                    tracing::warn!(stream = %name, sequence, %error, "event not applied by replay");
                    report.skipped += 1;
                }
            }
        }
        applied += batch.len() as u64;
        progress(ReplayProgress {
            kind: T::KIND,
            applied,
            total,
        });
    }
    report.skipped += reader
        .await
        .map_err(|error| jetstream_error("replay reader", error))??;
    Ok(())
}

/// Reads a stream up to `last_sequence`, decodes its events and sends them in batches; returns
/// how many it skipped as undecodable (logged).
async fn read_batches<T: Projected>(
    bus: Bus,
    mut messages: pull::Ordered,
    last_sequence: u64,
    batch_size: usize,
    sender: mpsc::Sender<Vec<(Envelope<T>, u64)>>,
) -> Result<u64, IndexerError> {
    let mut skipped = 0;
    let mut batch = Vec::with_capacity(batch_size);
    let mut done = false;
    while !done {
        let Some(message) = messages.next().await else {
            break;
        };
        let message = message.map_err(|error| jetstream_error("pull", error))?;
        let (sequence, pending) = message
            .info()
            .map(|info| (info.stream_sequence, info.pending))
            .map_err(|error| jetstream_error("message info", error))?;
        // Purges leave gaps, so the last sequence may never come: stop when nothing is pending.
        done = sequence >= last_sequence || pending == 0;
        match bus
            .read::<T>(
                &message.subject,
                message.headers.as_ref(),
                message.payload.clone(),
            )
            .await
        {
            Ok(event) => batch.push((event, sequence)),
            Err(error) => {
                tracing::warn!(subject = %message.subject, sequence, %error, "event skipped by replay");
                skipped += 1;
            }
        }
        if batch.len() >= batch_size || (done && !batch.is_empty()) {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            if sender.send(full).await.is_err() {
                // The writer stopped; its error is the one to report.
                break;
            }
        }
    }
    Ok(skipped)
}
