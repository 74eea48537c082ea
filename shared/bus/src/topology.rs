//! Streams and buckets (DESIGN §3), created or updated idempotently at start-up.
//!
//! - Fact streams (`page.changed`, `page.converted`, `chunks.ready`, `page.deleted`) keep the latest
//!   message per page subject: their size follows the number of live pages, not of edits.
//! - Command streams (`sync.requested`, `page.hinted`) are work queues.
//! - The dead-letter stream keeps failed events with their reason for 30 days.
//! - The sync-progress stream keeps the latest progress snapshot of each run.
//! - The claim-check bucket holds payloads too large for a message.

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::object_store;
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use pagestream_events::EventKind;

use crate::{Bus, BusError};

/// Names of the streams and bucket under one root (`pagestream` → `PAGESTREAM_PAGE_CHANGED`).
#[derive(Debug, Clone)]
pub struct StreamNames {
    prefix: String,
}

impl StreamNames {
    pub fn new(root: &str) -> Self {
        Self {
            prefix: root.to_ascii_uppercase().replace('-', "_"),
        }
    }

    /// The prefix of every stream and bucket name (other crates name their buckets with it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn for_kind(&self, kind: EventKind) -> String {
        format!(
            "{}_{}",
            self.prefix,
            kind.name().to_ascii_uppercase().replace('.', "_")
        )
    }

    pub fn dead_letters(&self) -> String {
        format!("{}_DEAD_LETTERS", self.prefix)
    }

    pub fn sync_progress(&self) -> String {
        format!("{}_SYNC_PROGRESS", self.prefix)
    }

    pub fn claim_check_bucket(&self) -> String {
        format!("{}_PAYLOADS", self.prefix)
    }
}

/// Whether a kind's stream is a work queue of commands (else it holds facts).
pub fn is_command(kind: EventKind) -> bool {
    matches!(kind, EventKind::SyncRequested | EventKind::PageHinted)
}

pub(crate) async fn ensure(bus: &Bus) -> Result<(), BusError> {
    let names = bus.streams();
    let subjects = bus.subjects();
    let mut configs: Vec<Config> = EventKind::ALL
        .into_iter()
        .map(|kind| {
            let base = Config {
                name: names.for_kind(kind),
                subjects: vec![subjects.all_of(kind)],
                storage: StorageType::File,
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                // Payloads above the claim-check threshold never reach the stream.
                max_message_size: 8 * 1024 * 1024,
                ..Default::default()
            };
            if is_command(kind) {
                Config {
                    retention: RetentionPolicy::WorkQueue,
                    description: Some(format!("{} commands (work queue)", kind.name())),
                    ..base
                }
            } else {
                Config {
                    retention: RetentionPolicy::Limits,
                    max_messages_per_subject: 1,
                    discard: DiscardPolicy::Old,
                    description: Some(format!("{} facts, latest per page", kind.name())),
                    ..base
                }
            }
        })
        .collect();
    configs.push(Config {
        name: names.dead_letters(),
        subjects: vec![subjects.internal("dlq.>")],
        storage: StorageType::File,
        max_age: Duration::from_secs(30 * 24 * 3600),
        max_message_size: 8 * 1024 * 1024,
        description: Some("events a stage gave up on, with the reason".into()),
        ..Default::default()
    });
    configs.push(Config {
        name: names.sync_progress(),
        subjects: vec![subjects.internal("sync.progress.>")],
        storage: StorageType::File,
        max_messages_per_subject: 1,
        max_age: Duration::from_secs(30 * 24 * 3600),
        allow_direct: true,
        description: Some("latest progress of each sync run".into()),
        ..Default::default()
    });
    for mut config in configs {
        config.num_replicas = match bus.config().replicas {
            Some(replicas) => replicas,
            None => current_replicas(bus, &config.name).await?.unwrap_or(1),
        };
        bus.jetstream()
            .create_or_update_stream(config)
            .await
            .map_err(|error| BusError::jetstream("create stream", error))?;
    }
    let bucket = names.claim_check_bucket();
    if bus.jetstream().get_object_store(&bucket).await.is_err() {
        bus.jetstream()
            .create_object_store(object_store::Config {
                bucket: bucket.clone(),
                description: Some("claim-checked event payloads, one object per payload".into()),
                storage: StorageType::File,
                num_replicas: bus.config().replicas.unwrap_or(1),
                ..Default::default()
            })
            .await
            .map_err(|error| BusError::jetstream("create object store", error))?;
    }
    configure_bucket(bus, &format!("OBJ_{bucket}")).await
}

/// The replica count of stream `name`; `None` when there is no such stream.
async fn current_replicas(bus: &Bus, name: &str) -> Result<Option<usize>, BusError> {
    match bus.jetstream().get_stream(name).await {
        Ok(stream) => Ok(Some(stream.cached_info().config.num_replicas)),
        Err(error) => match error.kind() {
            GetStreamErrorKind::JetStream(inner)
                if inner.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(BusError::jetstream("read stream", error)),
        },
    }
}

/// Gives the existing stream `name` (a bucket's) the configured replica count, if one is set,
/// and has its reads answered by the stream's leader. A direct get may be answered by any replica,
/// one that has not yet stored a write the leader acknowledged (found by `ops/chaos --cluster`:
/// a payload stored just before its message read as gone, and the page's Markdown was skipped).
pub(crate) async fn configure_bucket(bus: &Bus, name: &str) -> Result<(), BusError> {
    let stream = bus
        .jetstream()
        .get_stream(name)
        .await
        .map_err(|error| BusError::jetstream("read stream", error))?;
    let mut config = stream.cached_info().config.clone();
    let replicas = bus.config().replicas.unwrap_or(config.num_replicas);
    if config.num_replicas != replicas || config.allow_direct {
        config.num_replicas = replicas;
        config.allow_direct = false;
        bus.jetstream()
            .update_stream(config)
            .await
            .map_err(|error| BusError::jetstream("configure bucket stream", error))?;
    }
    Ok(())
}
