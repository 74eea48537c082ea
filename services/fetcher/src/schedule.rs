//! The safety net under lossy webhooks: each source's incremental syncs (which reconcile
//! deletions when that is due) on its interval.
//!
//! Every replica ticks; a source's slot is published under a run id derived from the source and
//! the slot (JetStream drops the duplicate of a replica that raced within its window), then the
//! slot is claimed in the fetcher's state by compare-and-set, so that no replica, now or after a
//! restart, schedules it again. A source's first slot is only claimed: its first sync is the one
//! its owner asks for. A slot that comes while a run of the source is in progress waits for its
//! end (a run beside a first full sync would emit the pages the full run has not reached yet a
//! second time), unless that run has not reported for [`SILENT_RUN`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use pagestream_bus::Bus;
use pagestream_events::{Envelope, SyncMode, SyncRequested};
use pagestream_sources::SourceRegistry;
use tokio_util::sync::CancellationToken;

use crate::FetcherError;
use crate::state::FetcherState;

/// A run that has not reported for this long is taken for dead: runs report at least every
/// 50 pages, and a crashed one is redelivered and reports again.
const SILENT_RUN: chrono::Duration = chrono::Duration::minutes(10);

pub struct Scheduler {
    bus: Bus,
    registry: SourceRegistry,
    state: FetcherState,
}

impl Scheduler {
    pub fn new(bus: Bus, registry: SourceRegistry, state: FetcherState) -> Self {
        Self {
            bus,
            registry,
            state,
        }
    }

    /// Schedules every source whose slot at `now` is not scheduled yet; returns the requests
    /// this call published.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Vec<SyncRequested>, FetcherError> {
        let mut published = Vec::new();
        for record in self.registry.list().await? {
            let Some(slot) = record.schedule_slot(now) else {
                continue;
            };
            match self.state.last_slot(&record.key).await? {
                None => {
                    self.state.claim_slot(&record.key, slot).await?;
                    continue;
                }
                Some(last) if last >= slot => continue,
                Some(_) => {}
            }
            if let Some(run) = self.state.running(&record.key).await?
                && now - run.reported_at < SILENT_RUN
            {
                tracing::debug!(source = %record.key, run_id = %run.run_id, slot, "scheduled sync waits for the run in progress");
                continue;
            }
            let request = SyncRequested {
                source: record.key.clone(),
                run_id: record.scheduled_run_id(slot),
                mode: SyncMode::Incremental,
                reconcile_deletions: false,
                requested_at: now,
            };
            let envelope = Envelope::new(request.clone()).with_sync_run(Some(request.run_id));
            let stored = self.bus.publish(&envelope).await?;
            // The slot is claimed whoever wins the claim; the request is this call's when its
            // publish was not the duplicate of another replica's.
            self.state.claim_slot(&record.key, slot).await?;
            if !stored.duplicate {
                tracing::info!(source = %record.key, run_id = %request.run_id, slot, "scheduled sync requested");
                published.push(request);
            }
        }
        Ok(published)
    }

    /// Ticks every `every` until cancelled; a failed tick is retried at the next one.
    pub async fn run(self, every: Duration, cancel: CancellationToken) -> Result<(), FetcherError> {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.tick(Utc::now()).await {
                tracing::warn!(%error, "scheduling failed; next tick retries");
            }
        }
    }
}
