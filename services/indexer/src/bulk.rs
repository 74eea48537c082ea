//! Bulk mode: when chunks arrive faster than the HNSW index takes them (a first full sync, a
//! re-embed), the search indexes (vector and full text) are dropped, the rows load without them,
//! and each index is built once when the backlog is worked off: one build costs a fraction of
//! inserting every vector into the graph (and every row into the GIN index) one by one.
//! Meanwhile search ranks vectors by an exact scan.
//!
//! The rule reads the `chunks.ready` consumer's backlog (shared by every replica), the events
//! published to the stream over the last `settle` and the indexes that exist: at or over
//! `enter_backlog` (and a quarter of the pages already stored, see [`BUILD_SPEEDUP`]) the indexes
//! go; once the backlog is at or under `leave_backlog` and no more than that many events came
//! over the last `settle` (the load has ended, not merely paused while the indexer kept up), the
//! missing ones are built. So a replica killed between the two leaves nothing behind: whichever
//! replica looks next builds what is missing. Index changes are serialized across replicas by the
//! store.

use std::collections::VecDeque;
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
    /// The backlog at which the search indexes are dropped (0: never).
    pub enter_backlog: u64,
    /// The backlog at which the missing search indexes are built, when no more events than this
    /// came over the last `settle`.
    pub leave_backlog: u64,
    /// How long the stream must stay (almost) quiet before the indexes are built: while a load
    /// goes on, an indexer that keeps up sees no backlog (found by the pipeline bench: an entry
    /// bound of 100 built and dropped the index three times in one first sync).
    pub settle: Duration,
    /// How often the backlog is read.
    pub check_every: Duration,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            // Every vector stored before the drop is an HNSW insert: a 4,000-page first sync
            // entered 6.0 s after it began, against 9.0 s at a bound of 100 looked at once a
            // second, when about a hundred pages' vectors had gone into the graph one by one.
            enter_backlog: 50,
            leave_backlog: 20,
            settle: Duration::from_secs(5),
            check_every: Duration::from_millis(250),
        }
    }
}

/// What one look at the backlog changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// This many search indexes were dropped.
    Entered(usize),
    /// This many search indexes were built.
    Left(usize),
}

/// Applies the rule once for `backlog`, with `arrived` events published over the last `settle`
/// (`u64::MAX` while that is not known yet).
pub async fn adjust(
    pool: &PgPool,
    config: &BulkConfig,
    backlog: u64,
    arrived: u64,
) -> Result<Transition, pagestream_store::StoreError> {
    if config.enter_backlog > 0
        && backlog >= config.enter_backlog
        && backlog.saturating_mul(BUILD_SPEEDUP)
            >= pagestream_store::chunks::pages_with_chunks(pool).await?
    {
        let dropped = pagestream_store::drop_search_indexes(pool).await?;
        if dropped > 0 {
            tracing::info!(
                backlog,
                dropped,
                "bulk mode: search indexes dropped until the backlog is worked off"
            );
            return Ok(Transition::Entered(dropped));
        }
    } else if backlog <= config.leave_backlog && arrived <= config.leave_backlog {
        let started = std::time::Instant::now();
        let built = pagestream_store::build_search_indexes(pool).await?;
        if built > 0 {
            tracing::info!(
                backlog,
                built,
                seconds = started.elapsed().as_secs_f64(),
                "bulk mode over: search indexes built"
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
    let mut arrivals = Arrivals::new(config.settle, config.check_every);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        let (backlog, published) = match tokio::try_join!(stage.backlog(), stage.published()) {
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(%error, "bulk mode: cannot read the chunks backlog");
                continue;
            }
        };
        metrics::gauge!("pagestream_indexer_chunks_backlog").set(backlog as f64);
        let arrived = arrivals.observe(published);
        match adjust(&pool, &config, backlog, arrived).await {
            Ok(Transition::Entered(_)) => {
                metrics::gauge!("pagestream_indexer_bulk_mode").set(1.0);
            }
            Ok(Transition::Left(_)) => {
                metrics::gauge!("pagestream_indexer_bulk_mode").set(0.0);
            }
            Ok(Transition::Unchanged) => {}
            Err(error) => tracing::warn!(%error, "bulk mode: cannot change the search indexes"),
        }
    }
}

/// The events published over the last `settle`, from the stream's last sequence read once a tick.
struct Arrivals {
    /// The last sequences read, oldest first: one more than the ticks in `settle`.
    seen: VecDeque<u64>,
    ticks: usize,
}

impl Arrivals {
    fn new(settle: Duration, tick: Duration) -> Self {
        let ticks = (settle.as_millis() / tick.as_millis().max(1)).max(1) as usize;
        Self {
            seen: VecDeque::with_capacity(ticks + 1),
            ticks,
        }
    }

    /// Records the last sequence now; the events published since `settle` ago (`u64::MAX` until
    /// a whole `settle` has been seen: a replica just started knows nothing of the load before).
    fn observe(&mut self, last_sequence: u64) -> u64 {
        self.seen.push_back(last_sequence);
        if self.seen.len() > self.ticks + 1 {
            self.seen.pop_front();
        }
        match self.seen.front() {
            Some(first) if self.seen.len() > self.ticks => last_sequence.saturating_sub(*first),
            _ => u64::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_count_the_events_of_the_last_settle_only() {
        let mut arrivals = Arrivals::new(Duration::from_secs(3), Duration::from_secs(1));
        assert_eq!(arrivals.observe(100), u64::MAX);
        assert_eq!(arrivals.observe(160), u64::MAX);
        assert_eq!(arrivals.observe(220), u64::MAX);
        // A whole settle seen: 100 → 280.
        assert_eq!(arrivals.observe(280), 180);
        // The load ends: what came before the window no longer counts.
        assert_eq!(arrivals.observe(290), 130);
        assert_eq!(arrivals.observe(290), 70);
        assert_eq!(arrivals.observe(290), 10);
        assert_eq!(arrivals.observe(290), 0);
    }
}
