//! The fetcher: the only part of Pagestream that talks to Confluence (DESIGN §1).
//!
//! It consumes `sync.requested` and `page.hinted` and emits one `page.changed` per new page version
//! and one `page.deleted` per page that is gone, each carrying the sync run id.
//!
//! - Full sync: the space's cheap id/version listing is diffed against the versions already emitted
//!   (kept in NATS, [`state`]); only new versions are fetched, in bulk; known pages that are no
//!   longer listed and answer 404 are deleted.
//! - Incremental sync: a CQL window on `lastmodified` frozen at the run's start, with an overlap;
//!   versions already emitted are skipped.
//! - Hints: fetch the one page; nothing is emitted for a version already emitted.
//!
//! A version is recorded only after JetStream acknowledged its `page.changed`, and event ids are
//! derived from the version, so a fetcher killed mid-run and redelivered the command neither loses
//! nor duplicates pages.

mod extract;
mod fetcher;
mod includes;
mod page_info;
pub mod schedule;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use pagestream_bus::{BulkSlots, BusError, Stage, StageConfig};
use pagestream_confluence::ConfluenceError;
use pagestream_events::{PageHinted, Retryable, SyncRequested};
use pagestream_service::{CommonArgs, Service, Shell};
use pagestream_sources::{SecretKey, SourceChange, SourceError, SourceRegistry};
use tokio_util::sync::CancellationToken;

pub use extract::FileKind;
pub use fetcher::{
    AttachmentOptions, Fetcher, FetcherOptions, HintHandler, SyncHandler, SyncOutcome,
};
pub use schedule::Scheduler;
pub use state::FetcherState;

#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error("unknown source {0:?}")]
    UnknownSource(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("confluence: {0}")]
    Confluence(#[from] ConfluenceError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("fetcher state {operation} failed: {reason}")]
    State {
        operation: &'static str,
        reason: String,
    },
    #[error("invalid page from confluence: {0}")]
    InvalidPage(String),
}

impl Retryable for FetcherError {
    /// Whether retrying the command later can succeed.
    fn is_transient(&self) -> bool {
        match self {
            FetcherError::UnknownSource(_) | FetcherError::InvalidPage(_) => false,
            FetcherError::Source(error) => matches!(error, SourceError::Registry(_)),
            FetcherError::Confluence(error) => error.is_transient(),
            FetcherError::Bus(error) => error.is_transient(),
            FetcherError::State { .. } => true,
        }
    }
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "pagestream-fetcher",
    about = "Confluence pages in, page events out"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Key that opens the sources' sealed credentials (32 bytes, base64 or hex).
    #[arg(long, env = "PAGESTREAM_SECRET_KEY", hide_env_values = true)]
    pub secret_key: SecretKey,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "PAGESTREAM_FETCHER_OPS_LISTEN",
        default_value = "127.0.0.1:9081"
    )]
    pub ops_listen: SocketAddr,
    /// Overlap of successive incremental windows, in seconds (edits indexed late by CQL).
    #[arg(long, env = "PAGESTREAM_FETCHER_OVERLAP_SECS", default_value_t = 300)]
    pub overlap_secs: u64,
    /// Largest Confluence response read, in MiB: a page whose body exceeds it fails alone (its
    /// run goes on; the next run tries it again).
    #[arg(long, env = "PAGESTREAM_FETCHER_MAX_RESPONSE_MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_response_mib: u32,
    /// Largest attachment downloaded for its text, in MiB: a larger one is indexed by its name
    /// alone.
    #[arg(long, env = "PAGESTREAM_FETCHER_ATTACHMENT_MAX_MIB", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub attachment_max_mib: u32,
    /// Attachment types whose text is extracted, comma-separated (pdf, docx, pptx, xlsx, txt,
    /// md, csv, json); others are indexed by their name alone.
    #[arg(
        long,
        env = "PAGESTREAM_FETCHER_ATTACHMENT_TYPES",
        value_delimiter = ',',
        default_value = "pdf,docx,pptx,xlsx,txt,md,csv,json"
    )]
    pub attachment_types: Vec<FileKind>,
    /// Attachments downloaded and parsed at once (each holds up to the size cap in memory).
    #[arg(long, env = "PAGESTREAM_FETCHER_ATTACHMENT_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub attachment_concurrency: u32,
    /// Sync runs handled at once by this replica.
    #[arg(long, env = "PAGESTREAM_FETCHER_SYNC_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub sync_concurrency: u32,
    /// Seconds between two looks at the sources' schedules (scheduled syncs start at most this
    /// late).
    #[arg(long, env = "PAGESTREAM_FETCHER_SCHEDULE_TICK_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub schedule_tick_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Fetcher(#[from] FetcherError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// The stage configurations of the two consumers.
pub fn stage_configs(sync_concurrency: usize) -> (StageConfig, StageConfig) {
    let mut sync = StageConfig::new("fetcher-sync");
    sync.concurrency = sync_concurrency;
    // A sync run takes long; in-progress acks keep it alive, a crashed replica's run comes back
    // after ack_wait to another one.
    sync.ack_wait = Duration::from_secs(60);
    sync.max_deliveries = 10;
    // A full sync of a large space under rate limits takes hours; a run that outlives this is
    // taken as hung and redelivered (it resumes where it stopped).
    sync.handler_timeout = Duration::from_secs(6 * 3600);
    let mut hints = StageConfig::new("fetcher-hints");
    // Hints mostly wait for their rate-limit slots. The re-reads a change sends through
    // (includers, a moved subtree; bulk lane) wait behind a webhook's own pages there, in slots
    // of their own: a cascade of them held all 32 slots for seconds at a time, and a webhook's
    // hint waited for one (found by `ops/bench/freshness`).
    hints.concurrency = 8;
    hints.bulk_slots = Some(BulkSlots {
        running: 16,
        in_hand: 1024,
    });
    (sync, hints)
}

impl Service for Config {
    const NAME: &'static str = "pagestream-fetcher";
    type Error = ServiceError;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn ops_listen(&self) -> SocketAddr {
        self.ops_listen
    }

    /// Spawns the sync and hint consumers, the scheduler and the removed-sources sweeper.
    async fn start(self, shell: &Shell) -> Result<(), ServiceError> {
        let bus = self.common.connect_bus().await?;
        let registry = SourceRegistry::open(&bus).await?;
        let options = FetcherOptions {
            overlap: Duration::from_secs(self.overlap_secs),
            max_response_bytes: self.max_response_mib as usize * 1024 * 1024,
            attachments: AttachmentOptions {
                max_bytes: self.attachment_max_mib as usize * 1024 * 1024,
                kinds: self.attachment_types.iter().copied().collect(),
                concurrency: self.attachment_concurrency as usize,
            },
            ..FetcherOptions::default()
        };
        let fetcher = Arc::new(
            Fetcher::new(
                bus.clone(),
                registry.clone(),
                self.secret_key.clone(),
                options,
            )
            .await?,
        );
        let scheduler = Scheduler::new(bus.clone(), registry.clone(), fetcher.state().clone());
        let state = fetcher.state().clone();
        let (sync_config, hint_config) = stage_configs(self.sync_concurrency as usize);
        let sync_stage = Stage::<SyncRequested>::new(bus.clone(), sync_config);
        let hint_stage = Stage::<PageHinted>::new(bus, hint_config);

        let supervisor = shell.supervisor();
        let sync_handler = Arc::new(SyncHandler(fetcher.clone()));
        let cancel = shell.token();
        supervisor.spawn(
            "sync",
            async move { sync_stage.run(sync_handler, cancel).await },
        );
        let hint_handler = Arc::new(HintHandler(fetcher));
        let cancel = shell.token();
        supervisor.spawn("hints", async move {
            hint_stage.run(hint_handler, cancel).await
        });
        let tick = Duration::from_secs(self.schedule_tick_secs);
        supervisor.spawn("schedule", scheduler.run(tick, shell.token()));
        supervisor.spawn(
            "forget-removed-sources",
            forget_removed_sources(registry, state, shell.token()),
        );
        Ok(())
    }
}

/// Drops the fetcher state of each removed source (its versions, watermark and schedule), also of
/// those removed while no fetcher ran: the registry's history replays their removal.
async fn forget_removed_sources(
    registry: SourceRegistry,
    state: FetcherState,
    cancel: CancellationToken,
) -> Result<(), FetcherError> {
    let mut changes = registry.watch().await?;
    loop {
        let change = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            change = changes.next() => change,
        };
        match change {
            Some(Ok(SourceChange::Removed(key))) => {
                state.purge_source(&key).await?;
                tracing::info!(source = %key, "removed source's fetcher state dropped");
            }
            Some(Ok(SourceChange::Upserted(_))) => {}
            Some(Err(error)) => tracing::warn!(%error, "unreadable registry change"),
            None => {
                return Err(FetcherError::Source(SourceError::Registry(
                    "registry watch ended".into(),
                )));
            }
        }
    }
}
