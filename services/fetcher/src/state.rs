//! The fetcher's state in a NATS key-value bucket (`<PREFIX>_FETCHER_STATE`), so that any replica
//! can pick up any source and a restarted fetcher resumes where it stopped:
//!
//! - `<source>.<page>`: the last page version whose `page.changed` JetStream acknowledged;
//! - `<source>.watermark`: where the next incremental window starts (RFC 3339);
//! - `<source>.reconciled`: when deletions were last reconciled against a full listing (RFC 3339);
//! - `<source>.window`: the window of the incremental run in progress, frozen at its start, so a
//!   run redelivered after a crash queries the same bounds.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pagestream_bus::Bus;
use pagestream_events::{PageId, SourceKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::FetcherError;

const WATERMARK: &str = "watermark";
const WINDOW: &str = "window";
const RECONCILED: &str = "reconciled";

fn state_error(operation: &'static str, error: impl std::fmt::Display) -> FetcherError {
    FetcherError::State {
        operation,
        reason: error.to_string(),
    }
}

/// The bounds of an incremental run, frozen when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub run_id: Uuid,
    /// Inclusive lower bound; none on the first sync of a source (everything).
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub before: DateTime<Utc>,
    /// The watermark the run leaves behind when it completes.
    pub next_watermark: DateTime<Utc>,
}

/// The fetcher's key-value bucket.
#[derive(Clone)]
pub struct FetcherState {
    store: kv::Store,
}

impl FetcherState {
    /// Opens the bucket, creating it if needed.
    pub async fn open(bus: &Bus) -> Result<Self, FetcherError> {
        let store = bus
            .key_value(
                "FETCHER_STATE",
                "fetcher: emitted page versions and sync watermarks",
            )
            .await
            .map_err(|error| state_error("open bucket", error))?;
        Ok(Self { store })
    }

    fn page_key(source: &SourceKey, page: &PageId) -> String {
        format!("{source}.{page}")
    }

    /// The last emitted version of a page.
    pub async fn version(
        &self,
        source: &SourceKey,
        page: &PageId,
    ) -> Result<Option<u64>, FetcherError> {
        let value = self
            .store
            .get(Self::page_key(source, page))
            .await
            .map_err(|error| state_error("get version", error))?;
        Ok(value.and_then(|bytes| parse_version(&bytes)))
    }

    pub async fn set_version(
        &self,
        source: &SourceKey,
        page: &PageId,
        version: u64,
    ) -> Result<(), FetcherError> {
        self.store
            .put(
                Self::page_key(source, page),
                Bytes::from(version.to_string()),
            )
            .await
            .map_err(|error| state_error("put version", error))?;
        Ok(())
    }

    pub async fn forget(&self, source: &SourceKey, page: &PageId) -> Result<(), FetcherError> {
        self.store
            .purge(Self::page_key(source, page))
            .await
            .map_err(|error| state_error("purge version", error))
    }

    /// Every emitted version of a source's pages. Reads the bucket's stream through a throwaway
    /// consumer (last message per key) rather than one `get` per key.
    pub async fn versions(&self, source: &SourceKey) -> Result<HashMap<PageId, u64>, FetcherError> {
        let consumer = self
            .store
            .stream
            .create_consumer(pull::Config {
                filter_subject: format!("{}{source}.*", self.store.prefix),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|error| state_error("create state reader", error))?;
        let mut pending = consumer.cached_info().num_pending;
        let mut versions = HashMap::with_capacity(pending as usize);
        if pending == 0 {
            return Ok(versions);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|error| state_error("read state", error))?;
        while pending > 0 {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .map_err(|_| state_error("read state", "timed out"))?
                .ok_or_else(|| state_error("read state", "stream ended early"))?
                .map_err(|error| state_error("read state", error))?;
            pending -= 1;
            let deleted = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("KV-Operation"))
                .is_some_and(|op| op.as_str() != "PUT");
            let page = message
                .subject
                .rsplit('.')
                .next()
                .and_then(|token| PageId::new(token).ok());
            if let (false, Some(page), Some(version)) =
                (deleted, page, parse_version(&message.payload))
            {
                versions.insert(page, version);
            }
        }
        Ok(versions)
    }

    pub async fn watermark(
        &self,
        source: &SourceKey,
    ) -> Result<Option<DateTime<Utc>>, FetcherError> {
        self.timestamp(source, WATERMARK).await
    }

    pub async fn set_watermark(
        &self,
        source: &SourceKey,
        at: DateTime<Utc>,
    ) -> Result<(), FetcherError> {
        self.set_timestamp(source, WATERMARK, at).await
    }

    /// When deletions were last reconciled against a full listing.
    pub async fn reconciled(
        &self,
        source: &SourceKey,
    ) -> Result<Option<DateTime<Utc>>, FetcherError> {
        self.timestamp(source, RECONCILED).await
    }

    pub async fn set_reconciled(
        &self,
        source: &SourceKey,
        at: DateTime<Utc>,
    ) -> Result<(), FetcherError> {
        self.set_timestamp(source, RECONCILED, at).await
    }

    async fn timestamp(
        &self,
        source: &SourceKey,
        name: &str,
    ) -> Result<Option<DateTime<Utc>>, FetcherError> {
        let value = self
            .store
            .get(format!("{source}.{name}"))
            .await
            .map_err(|error| state_error("get timestamp", error))?;
        Ok(value.and_then(|bytes| {
            std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
                .map(|at| at.with_timezone(&Utc))
        }))
    }

    async fn set_timestamp(
        &self,
        source: &SourceKey,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<(), FetcherError> {
        self.store
            .put(format!("{source}.{name}"), Bytes::from(at.to_rfc3339()))
            .await
            .map_err(|error| state_error("put timestamp", error))?;
        Ok(())
    }

    pub async fn window(&self, source: &SourceKey) -> Result<Option<Window>, FetcherError> {
        let value = self
            .store
            .get(format!("{source}.{WINDOW}"))
            .await
            .map_err(|error| state_error("get window", error))?;
        Ok(value.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    pub async fn set_window(
        &self,
        source: &SourceKey,
        window: &Window,
    ) -> Result<(), FetcherError> {
        let value =
            serde_json::to_vec(window).map_err(|error| state_error("encode window", error))?;
        self.store
            .put(format!("{source}.{WINDOW}"), Bytes::from(value))
            .await
            .map_err(|error| state_error("put window", error))?;
        Ok(())
    }
}

fn parse_version(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}
