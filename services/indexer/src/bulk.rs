//! Bulk mode: when chunks arrive faster than the HNSW index takes them (a first full sync, a
//! re-embed), the vector indexes are dropped, the rows load without them, and each index is built
//! once when the backlog is worked off: one build costs a fraction of inserting every vector into
//! the graph one by one. Meanwhile search ranks vectors by an exact scan.
//!
//! The rule is stateless, read from the `chunks.ready` consumer's backlog (shared by every
//! replica) and the indexes that exist: at or over `enter_backlog` (and a quarter of the pages
//! already stored, see [`BUILD_SPEEDUP`]) the indexes go, at or under
//! `leave_backlog` the missing ones are built. So a replica killed between the two leaves nothing
//! behind: whichever replica looks next builds what is missing. Index changes are serialized
//! across replicas by the store.

use std::time::Duration;

use pagestream_bus::Stage;
use pagestream_events::ChunksReady;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::IndexerError;

/// Building an HNSW index costs about a quarter per vector of inserting the vectors one by one
/// (`ops/bench/replay`: ~3,200 vectors/s built; `ops/bench/pipeline`: ~830/s inserted): the
/// indexes are dropped only when the backlog is at least a quarter of the pages already stored,
/// since the build that ends bulk mode takes every stored vector, not just the backlog's.
const BUILD_SPEEDUP: u64 = 4;

/// When bulk mode starts and ends, in `chunks.ready` events waiting (one per page).
#[derive(Debug, Clone, Copy)]
pub struct BulkConfig {
    /// The backlog at which the vector indexes are dropped (0: never).
    pub enter_backlog: u64,
    /// The backlog at which the missing vector indexes are built.
    pub leave_backlog: u64,
    /// How often the backlog is read.
    pub check_every: Duration,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            enter_backlog: 1000,
            leave_backlog: 20,
            check_every: Duration::from_secs(1),
        }
    }
}

/// What one look at the backlog changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// This many vector indexes were dropped.
    Entered(usize),
    /// This many vector indexes were built.
    Left(usize),
}

/// Applies the rule once for `backlog`.
pub async fn adjust(
    pool: &PgPool,
    config: &BulkConfig,
    backlog: u64,
) -> Result<Transition, pagestream_store::StoreError> {
    if config.enter_backlog > 0
        && backlog >= config.enter_backlog
        && backlog.saturating_mul(BUILD_SPEEDUP)
            >= pagestream_store::chunks::pages_with_chunks(pool).await?
    {
        let dropped = pagestream_store::drop_embedding_indexes(pool).await?;
        if dropped > 0 {
            tracing::info!(
                backlog,
                dropped,
                "bulk mode: vector indexes dropped until the backlog is worked off"
            );
            return Ok(Transition::Entered(dropped));
        }
    } else if backlog <= config.leave_backlog {
        let started = std::time::Instant::now();
        let built = pagestream_store::build_embedding_indexes(pool).await?;
        if built > 0 {
            tracing::info!(
                backlog,
                built,
                seconds = started.elapsed().as_secs_f64(),
                "bulk mode over: vector indexes built"
            );
            return Ok(Transition::Left(built));
        }
    }
    Ok(Transition::Unchanged)
}

/// Watches the backlog of `stage` until cancelled (with bulk mode off, still builds an index an
/// earlier run left dropped). An outage (NATS or Postgres) is logged and
/// looked at again on the next tick: bulk mode is an optimization, never a reason to stop.
pub async fn run(
    stage: Stage<ChunksReady>,
    pool: PgPool,
    config: BulkConfig,
    cancel: CancellationToken,
) -> Result<(), IndexerError> {
    let mut ticks = tokio::time::interval(config.check_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        let backlog = match stage.backlog().await {
            Ok(backlog) => backlog,
            Err(error) => {
                tracing::debug!(%error, "bulk mode: cannot read the chunks backlog");
                continue;
            }
        };
        metrics::gauge!("pagestream_indexer_chunks_backlog").set(backlog as f64);
        match adjust(&pool, &config, backlog).await {
            Ok(Transition::Entered(_)) => {
                metrics::gauge!("pagestream_indexer_bulk_mode").set(1.0);
            }
            Ok(Transition::Left(_)) => {
                metrics::gauge!("pagestream_indexer_bulk_mode").set(0.0);
            }
            Ok(Transition::Unchanged) => {}
            Err(error) => tracing::warn!(%error, "bulk mode: cannot change the vector indexes"),
        }
    }
}
