//! The indexer: projects the event streams into Postgres (DESIGN §3, §4). It is the only writer of
//! the projection tables.
//!
//! One durable consumer per fact stream (`page.changed`, `page.converted`, `chunks.ready`,
//! `page.deleted`) plus the sync-progress stream and the sources registry. Events are applied in
//! batches, one transaction per batch, and acknowledged only after the commit. Application is idempotent and version-guarded ([`projection`]), so replicas, redeliveries
//! and replays all converge on the same state. [`replay`] rebuilds a database from the streams.

pub mod bulk;
pub mod projection;
pub mod replay;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bulk::BulkConfig;
use futures::StreamExt;
use pagestream_bus::consumer::Handler;
use pagestream_bus::{Bus, Delivery, HandlerError, ProgressSnapshots, Stage, StageConfig};
use pagestream_events::{
    ChunksReady, Envelope, PageChanged, PageConverted, PageDeleted, Payload, Retryable, SourceKey,
};
use pagestream_retry::Backoff;
use pagestream_service::{CommonArgs, DatabaseArgs, Service, Shell};
use pagestream_sources::{SourceChange, SourceRegistry};
use pagestream_store::runs;
use projection::{Applied, ProjectionError, SourceIds};
use secrecy::ExposeSecret;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// An event the indexer projects.
pub trait Projected: Payload {
    /// The sync-run stage counters an applied event of this kind adds one to.
    const COUNTS: &'static [runs::Stage];

    fn apply<'a>(
        conn: &'a mut PgConnection,
        ids: &'a SourceIds,
        event: &'a Envelope<Self>,
    ) -> impl std::future::Future<Output = Result<Applied, ProjectionError>> + Send + 'a;
}

/// Each fact event applies through its own function of [`projection`].
macro_rules! projected {
    ($($payload:ty => $apply:path, counts $counts:expr),+ $(,)?) => {$(
        impl Projected for $payload {
            const COUNTS: &'static [runs::Stage] = $counts;

            fn apply<'a>(
                conn: &'a mut PgConnection,
                ids: &'a SourceIds,
                event: &'a Envelope<Self>,
            ) -> impl std::future::Future<Output = Result<Applied, ProjectionError>> + Send + 'a {
                $apply(conn, ids, event)
            }
        }
    )+};
}

projected! {
    PageChanged => projection::apply_changed, counts &[],
    PageConverted => projection::apply_converted, counts &[runs::Stage::Converted],
    ChunksReady => projection::apply_chunks, counts &[runs::Stage::Embedded, runs::Stage::Indexed],
    PageDeleted => projection::apply_deleted, counts &[],
}

/// Applies a batch of events in one transaction. If the batch fails, each event is applied on its
/// own, so that one bad event fails alone.
pub async fn apply_batch<T: Projected>(
    pool: &PgPool,
    ids: &SourceIds,
    events: &[&Envelope<T>],
) -> Vec<Result<(), ProjectionError>> {
    match apply_in_transaction(pool, ids, events).await {
        Ok(()) => return events.iter().map(|_| Ok(())).collect(),
        Err(error) if events.len() == 1 => return vec![Err(error)],
        Err(error) => {
            tracing::debug!(%error, "batch failed; applying its events one by one");
        }
    }
    let mut results = Vec::with_capacity(events.len());
    for event in events {
        results.push(apply_in_transaction(pool, ids, std::slice::from_ref(event)).await);
    }
    results
}

/// Applies events in one transaction. Sync-run counters are added at the end,
/// one statement per run in run order, so that concurrent transactions hold a run's row only for
/// a moment and always lock rows in the same order.
async fn apply_in_transaction<T: Projected>(
    pool: &PgPool,
    ids: &SourceIds,
    events: &[&Envelope<T>],
) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    let mut counts: BTreeMap<(uuid::Uuid, SourceKey), i64> = BTreeMap::new();
    for event in events {
        let applied = T::apply(&mut tx, ids, event).await?;
        if let (true, Some(run)) = (applied, event.extensions.syncrun) {
            *counts
                .entry((run, event.data.source().clone()))
                .or_default() += 1;
        }
    }
    for ((run, source), count) in counts {
        let source_id = ids.resolve(&mut tx, &source).await?;
        runs::count_stages(&mut tx, source_id, run, T::COUNTS, count).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What to do with an event whose source is not in the database (`event_source`: the registry id
/// the event names, if any): wait for the registry's projection to bring a source that is
/// registered, drop the event of a source that is gone (its stream data was purged with it; the
/// event would otherwise be retried for as long as an outage), also of one removed and added again
/// under its key.
async fn unknown_source(
    registry: &SourceRegistry,
    key: &SourceKey,
    event_source: Option<uuid::Uuid>,
) -> Result<(), HandlerError> {
    match registry.get(key).await {
        Ok(Some(record)) if event_source.is_none_or(|id| id == record.id) => Err(
            HandlerError::transient(format!("source {key} is not projected yet")),
        ),
        Ok(_) => {
            tracing::debug!(source = %key, "event of a removed source dropped");
            metrics::counter!("pagestream_indexer_dropped_total", "reason" => "source_removed")
                .increment(1);
            Ok(())
        }
        Err(error) => Err(HandlerError::transient(error)),
    }
}

/// The outcome of projecting one event.
async fn outcome(
    registry: &SourceRegistry,
    result: Result<(), ProjectionError>,
) -> Result<(), HandlerError> {
    match result {
        Ok(()) => Ok(()),
        Err(ProjectionError::UnknownSource(key)) => unknown_source(registry, &key, None).await,
        Err(ProjectionError::OtherSource { key, event_source }) => {
            unknown_source(registry, &key, Some(event_source)).await
        }
        Err(error) => Err(error.into()),
    }
}

/// The stage handler of one fact stream.
struct ProjectionHandler<T> {
    pool: PgPool,
    ids: SourceIds,
    registry: SourceRegistry,
    _kind: std::marker::PhantomData<fn() -> T>,
}

impl<T: Projected> Handler<T> for ProjectionHandler<T> {
    async fn handle(&self, delivery: &Delivery<T>) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(delivery))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    async fn handle_batch(&self, batch: &[Delivery<T>]) -> Vec<Result<(), HandlerError>> {
        let events: Vec<&Envelope<T>> = batch.iter().map(|delivery| &delivery.event).collect();
        let results = apply_batch(&self.pool, &self.ids, &events).await;
        metrics::counter!("pagestream_indexer_events_total", "kind" => T::KIND.name())
            .increment(batch.len() as u64);
        let mut outcomes = Vec::with_capacity(results.len());
        for result in results {
            outcomes.push(outcome(&self.registry, result).await);
        }
        outcomes
    }
}

/// The stage handler of the sync-progress stream.
struct ProgressHandler {
    pool: PgPool,
    ids: SourceIds,
    registry: SourceRegistry,
}

impl Handler<ProgressSnapshots> for ProgressHandler {
    async fn handle(&self, delivery: &Delivery<ProgressSnapshots>) -> Result<(), HandlerError> {
        let applied: Result<_, ProjectionError> = async {
            let mut conn = self.pool.acquire().await?;
            projection::apply_progress(&mut conn, &self.ids, &delivery.event).await
        }
        .await;
        outcome(&self.registry, applied.map(|_| ())).await
    }
}

/// Projects Pagestream's event streams into Postgres.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pagestream-indexer", version)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "PAGESTREAM_INDEXER_OPS_LISTEN",
        default_value = "127.0.0.1:9083"
    )]
    pub ops_listen: SocketAddr,
    /// Events applied per transaction.
    #[arg(long, env = "PAGESTREAM_INDEXER_BATCH_SIZE", default_value_t = 64)]
    pub batch_size: usize,
    /// Transactions in flight per stream.
    #[arg(long, env = "PAGESTREAM_INDEXER_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
    /// Bulk mode starts when this many chunks.ready events wait (0: never): the vector indexes
    /// are dropped and built once the backlog is worked off.
    #[arg(long, env = "PAGESTREAM_INDEXER_BULK_ENTER_BACKLOG", default_value_t = BulkConfig::default().enter_backlog)]
    pub bulk_enter_backlog: u64,
    /// Bulk mode ends (the vector indexes are built) when at most this many wait.
    #[arg(long, env = "PAGESTREAM_INDEXER_BULK_LEAVE_BACKLOG", default_value_t = BulkConfig::default().leave_backlog)]
    pub bulk_leave_backlog: u64,
}

impl Service for Config {
    const NAME: &'static str = "pagestream-indexer";
    type Error = IndexerError;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn ops_listen(&self) -> SocketAddr {
        self.ops_listen
    }

    async fn start(self, shell: &Shell) -> Result<(), IndexerError> {
        let pool = pagestream_store::connect(
            self.database.database_url.expose_secret(),
            (self.concurrency as u32 * 4 + 4).max(8),
        )
        .await?;
        pagestream_store::migrate(&pool).await?;
        let bus = self.common.connect_bus().await?;
        let registry = SourceRegistry::open(&bus).await?;
        spawn_all(
            shell.supervisor(),
            &bus,
            registry,
            &pool,
            &IndexerConfig {
                batch_size: self.batch_size.max(1),
                concurrency: self.concurrency.max(1),
                bulk: BulkConfig {
                    enter_backlog: self.bulk_enter_backlog,
                    leave_backlog: self.bulk_leave_backlog,
                    ..BulkConfig::default()
                },
            },
        );
        Ok(())
    }
}

/// How the indexer consumes.
#[derive(Debug, Clone)]
pub struct IndexerConfig {
    /// Events per transaction.
    pub batch_size: usize,
    /// Transactions in flight per stream.
    pub concurrency: usize,
    /// When chunks load without the vector indexes.
    pub bulk: BulkConfig,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            concurrency: 2,
            bulk: BulkConfig::default(),
        }
    }
}

/// The stage of one fact stream, named after it (the durable consumer every replica shares).
fn stage<T: Projected>(bus: Bus, config: &IndexerConfig) -> Stage<T> {
    Stage::<T>::new(
        bus,
        StageConfig {
            max_batch: config.batch_size,
            concurrency: config.concurrency,
            batch_linger: Duration::from_millis(10),
            live_lane: true,
            ..StageConfig::new(format!("indexer-{}", T::KIND.name().replace('.', "-")))
        },
    )
}

async fn run_stage<T: Projected>(
    bus: Bus,
    pool: PgPool,
    ids: SourceIds,
    registry: SourceRegistry,
    config: IndexerConfig,
    cancel: CancellationToken,
) -> Result<(), pagestream_bus::BusError> {
    let stage = stage::<T>(bus, &config);
    let handler = Arc::new(ProjectionHandler::<T> {
        pool,
        ids,
        registry,
        _kind: std::marker::PhantomData,
    });
    stage.run(handler, cancel).await
}

#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    #[error("bus: {0}")]
    Bus(#[from] pagestream_bus::BusError),
    #[error("sources: {0}")]
    Sources(#[from] pagestream_sources::SourceError),
    #[error("projection: {0}")]
    Projection(#[from] ProjectionError),
    #[error("store: {0}")]
    Store(#[from] pagestream_store::StoreError),
}

/// Projects the sources registry into `sources` until cancelled.
pub async fn project_sources(
    registry: SourceRegistry,
    pool: PgPool,
    ids: SourceIds,
    cancel: CancellationToken,
) -> Result<(), IndexerError> {
    let mut changes = registry.watch().await?;
    loop {
        let change = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            change = changes.next() => change,
        };
        let Some(change) = change else {
            return Err(pagestream_sources::SourceError::Registry("watch ended".into()).into());
        };
        let change = match change {
            Ok(change) => change,
            Err(error) => {
                tracing::warn!(%error, "unreadable registry entry skipped");
                continue;
            }
        };
        // The watch cannot redeliver: a Postgres outage is waited out here, with capped backoff.
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        loop {
            let applied = match &change {
                SourceChange::Upserted(record) => {
                    // The key may now stand for a new id.
                    ids.forget(&record.key);
                    projection::upsert_source(&pool, record).await
                }
                SourceChange::Removed(key) => projection::remove_source(&pool, &ids, key).await,
            };
            match applied {
                Ok(()) => break,
                Err(error) if error.is_transient() => {
                    let wait = backoff.next_wait();
                    tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "cannot project a source change; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// Projects sync progress snapshots into `sync_runs` until cancelled.
pub async fn project_progress(
    bus: Bus,
    pool: PgPool,
    ids: SourceIds,
    registry: SourceRegistry,
    cancel: CancellationToken,
) -> Result<(), pagestream_bus::BusError> {
    let stage = Stage::<ProgressSnapshots>::new(bus, StageConfig::new("indexer-sync-progress"));
    let handler = Arc::new(ProgressHandler {
        pool,
        ids,
        registry,
    });
    stage.run(handler, cancel).await
}

/// Spawns every projection task of the indexer on `supervisor`.
pub fn spawn_all(
    supervisor: &pagestream_service::Supervisor,
    bus: &Bus,
    registry: SourceRegistry,
    pool: &PgPool,
    config: &IndexerConfig,
) {
    let ids = SourceIds::default();
    let cancel = supervisor.token();
    supervisor.spawn(
        "sources",
        project_sources(registry.clone(), pool.clone(), ids.clone(), cancel.clone()),
    );
    supervisor.spawn(
        "sync-progress",
        project_progress(
            bus.clone(),
            pool.clone(),
            ids.clone(),
            registry.clone(),
            cancel.clone(),
        ),
    );
    supervisor.spawn(
        "page.changed",
        run_stage::<PageChanged>(
            bus.clone(),
            pool.clone(),
            ids.clone(),
            registry.clone(),
            config.clone(),
            cancel.clone(),
        ),
    );
    supervisor.spawn(
        "page.converted",
        run_stage::<PageConverted>(
            bus.clone(),
            pool.clone(),
            ids.clone(),
            registry.clone(),
            config.clone(),
            cancel.clone(),
        ),
    );
    supervisor.spawn(
        "chunks.ready",
        run_stage::<ChunksReady>(
            bus.clone(),
            pool.clone(),
            ids.clone(),
            registry.clone(),
            config.clone(),
            cancel.clone(),
        ),
    );
    supervisor.spawn(
        "bulk-mode",
        bulk::run(
            stage::<ChunksReady>(bus.clone(), config),
            pool.clone(),
            config.bulk,
            cancel.clone(),
        ),
    );
    supervisor.spawn(
        "page.deleted",
        run_stage::<PageDeleted>(
            bus.clone(),
            pool.clone(),
            ids,
            registry,
            config.clone(),
            cancel,
        ),
    );
}
