//! The fetcher's state in a NATS key-value bucket (`<PREFIX>_FETCHER_STATE`), so that any replica
//! can pick up any source and a restarted fetcher resumes where it stopped:
//!
//! - `<source>.<page>`: the last [`PageRecord`] whose event JetStream acknowledged (version,
//!   incarnation, where the page stood, or a tombstone); a sync run's write only moves it forward,
//!   a hint's decision commits only on the revision the hint read (both compare-and-set);
//! - `<source>.watermark`: where the next incremental window starts (RFC 3339);
//! - `<source>.reconciled`: when deletions were last reconciled against a full listing (RFC 3339);
//! - `<source>.window`: the window of the incremental run in progress, frozen at its start, so a
//!   run redelivered after a crash queries the same bounds;
//! - `<source>.source`: the id of the source the state belongs to (a source removed and added
//!   again under its key starts afresh);
//! - `<source>.schedule`: the last scheduled slot of the source's incremental syncs;
//! - `<source>.running`: the sync run in progress and when it last reported, so that the
//!   scheduler does not start a run beside it;
//! - `<source>.failed`: the pages that failed in the last run, which the next incremental run
//!   fetches again whatever its window (the watermark moves on without them);
//! - `<source>.spaces`: the keys of the spaces the last completed run synced, so that a space
//!   new to the source is synced whole and one gone from it is reconciled away;
//! - `<source>.attachment.<id>`: an attachment's version and the text extracted from it (or why
//!   it could not be), so that a file is downloaded and parsed again only when its own version
//!   changes, not whenever its page does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pagestream_bus::Bus;
use pagestream_events::{AttachmentText, ContentType, PageId, SourceKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::FetcherError;

const WATERMARK: &str = "watermark";
const WINDOW: &str = "window";
const RECONCILED: &str = "reconciled";
const SOURCE_ID: &str = "source";
const SCHEDULE: &str = "schedule";
const FAILED: &str = "failed";
const SPACES: &str = "spaces";
const RUNNING: &str = "running";

/// Compare-and-set attempts before a write racing other replicas gives up (transient).
const CAS_ATTEMPTS: usize = 16;

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// What the fetcher last emitted for a page (or a blog post: ids are unique across types, so
/// both share the `<source>.<id>` keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PageRecord {
    pub version: u64,
    /// What the id names: a deletion is confirmed at its type's endpoint (a page's answers 404
    /// for a blog post). Records written before blog posts were indexed are pages.
    #[serde(default, skip_serializing_if = "ContentType::is_page")]
    pub content_type: ContentType,
    /// How many times the page came back after a deletion (Confluence keeps the version).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
    /// Where the page stood: a move or a label change creates no version. None when unknown
    /// (recorded before these were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_key: Option<String>,
    /// Fingerprint of the comments emitted with the page (a comment changes no page version).
    /// None when not fetched (recorded before comments were, or a source without the v2 API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comments: Option<String>,
    /// Fingerprint of the attachments emitted with the page (an attachment changes no page
    /// version). None when not fetched (as for comments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<String>,
    /// Fingerprint of the titles of the page's ancestors (pages and folders) as emitted: a
    /// rename above the page keeps its path and version. None when not recorded (before
    /// ancestors' titles were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ancestry: Option<String>,
    /// The pages the page's event carried as included (include and excerpt-include macros, all
    /// levels), with their versions: a change of one sends the page through again. None when it
    /// includes none (or was recorded before includes were resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included: Option<BTreeMap<PageId, u64>>,
    /// The names (space and title, [`crate::includes::include_name`]) its include macros
    /// named, found or not: a page that takes one of these names later (created, renamed,
    /// moved or restored) sends the page through again, and so does an included page that no
    /// longer bears one. None when it names none (or was recorded before names were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included_names: Option<BTreeSet<String>>,
    /// The page's title as emitted (what include macros name it by). None in records written
    /// before titles were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The fetcher emitted the page's deletion (a tombstone, kept so that a restore of the same
    /// version is recognised and emitted as the next incarnation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The fetcher was about to emit the page's deletion (marked before publishing it): a crash
    /// after the publish leaves this mark instead of the tombstone, so the page counts as
    /// possibly deleted: a restore is still emitted as the next incarnation, and a sync that
    /// finds the page gone emits the deletion again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// The registry id of the source the record was written for. A source removed and added
    /// again under its key owns the key's state anew ([`FetcherState::claim_for`]); a late
    /// write of the removed one's work (a hint still in flight) must not pass for the new one's,
    /// which would then skip the page for good. None in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<Uuid>,
}

impl PageRecord {
    /// Records are ordered by version, then incarnation, then the live page, its deletion mark,
    /// its tombstone.
    fn order(&self) -> (u64, u64, bool, bool) {
        (self.version, self.incarnation, self.deleted, self.deleting)
    }

    /// The live version known, if the page is not (possibly) deleted.
    pub fn live_version(&self) -> Option<u64> {
        (!self.deleted && !self.deleting).then_some(self.version)
    }

    /// The name include macros reach the page by, if the page is live and its space and title
    /// are recorded.
    pub fn include_name(&self) -> Option<String> {
        self.live_version()?;
        Some(crate::includes::include_name(
            self.space_key.as_deref()?,
            self.title.as_deref()?,
        ))
    }

    /// Whether the record is the state of the source with registry id `owner` (a record or an
    /// owner from before ids were kept counts as the owner's).
    fn belongs_to(&self, owner: Option<Uuid>) -> bool {
        match (self.source_id, owner) {
            (Some(written_for), Some(owner)) => written_for == owner,
            _ => true,
        }
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        // Versions were once stored as a bare number.
        serde_json::from_slice(bytes).ok().or_else(|| {
            parse_version(bytes).map(|version| PageRecord {
                version,
                ..PageRecord::default()
            })
        })
    }
}

/// A page's record as a hint read it, and the key's revision then (0: never written).
#[derive(Debug, Clone, Default)]
pub struct RecordRead {
    pub record: Option<PageRecord>,
    pub revision: u64,
}

/// What was extracted from one version of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub version: u64,
    pub text: AttachmentText,
}

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

/// A sync run in progress, as its fetcher last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInFlight {
    pub run_id: Uuid,
    pub reported_at: DateTime<Utc>,
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

    /// The JSON value under `key`; none when it is absent or unreadable (another version's).
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: String,
        operation: &'static str,
    ) -> Result<Option<T>, FetcherError> {
        let value = self
            .store
            .get(key)
            .await
            .map_err(|error| state_error(operation, error))?;
        Ok(value.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    async fn put_json<T: Serialize>(
        &self,
        key: String,
        value: &T,
        operation: &'static str,
    ) -> Result<(), FetcherError> {
        let bytes = serde_json::to_vec(value).map_err(|error| state_error(operation, error))?;
        self.store
            .put(key, Bytes::from(bytes))
            .await
            .map_err(|error| state_error(operation, error))?;
        Ok(())
    }

    fn page_key(source: &SourceKey, page: &PageId) -> String {
        format!("{source}.{page}")
    }

    /// What was last emitted for a page.
    pub async fn record(
        &self,
        source: &SourceKey,
        page: &PageId,
    ) -> Result<Option<PageRecord>, FetcherError> {
        let value = self
            .store
            .get(Self::page_key(source, page))
            .await
            .map_err(|error| state_error("get version", error))?;
        let owner = self.owner(source).await?;
        Ok(value
            .and_then(|bytes| PageRecord::parse(&bytes))
            .filter(|record| record.belongs_to(owner)))
    }

    /// The registry id that owns the source's state (see [`Self::claim_for`]), if claimed.
    async fn owner(&self, source: &SourceKey) -> Result<Option<Uuid>, FetcherError> {
        let owner = self
            .store
            .get(format!("{source}.{SOURCE_ID}"))
            .await
            .map_err(|error| state_error("get source id", error))?;
        Ok(owner.and_then(|id| std::str::from_utf8(&id).ok()?.parse().ok()))
    }

    /// What was last emitted for a page, with the revision a decision taken on it commits
    /// against (see [`Self::commit_record`]).
    pub async fn read_record(
        &self,
        source: &SourceKey,
        page: &PageId,
    ) -> Result<RecordRead, FetcherError> {
        let entry = self
            .store
            .entry(Self::page_key(source, page))
            .await
            .map_err(|error| state_error("get version", error))?;
        let owner = self.owner(source).await?;
        Ok(match entry {
            Some(entry) if entry.operation == kv::Operation::Put => RecordRead {
                record: PageRecord::parse(&entry.value).filter(|record| record.belongs_to(owner)),
                revision: entry.revision,
            },
            Some(entry) => RecordRead {
                record: None,
                revision: entry.revision,
            },
            None => RecordRead::default(),
        })
    }

    /// Writes a page's record if it is still at the revision the decision read: the new revision,
    /// or none when another hint or replica wrote first (the decision must be taken again).
    pub async fn commit_record(
        &self,
        source: &SourceKey,
        page: &PageId,
        record: &PageRecord,
        revision: u64,
    ) -> Result<Option<u64>, FetcherError> {
        let value = Bytes::from(
            serde_json::to_vec(record).map_err(|error| state_error("encode version", error))?,
        );
        // Revision 0 expects no record at all.
        match self
            .store
            .update(Self::page_key(source, page), value, revision)
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(error) => Err(state_error("put version", error)),
        }
    }

    /// The last emitted live version of a page (none when unknown or deleted).
    pub async fn version(
        &self,
        source: &SourceKey,
        page: &PageId,
    ) -> Result<Option<u64>, FetcherError> {
        Ok(self
            .record(source, page)
            .await?
            .and_then(|record| record.live_version()))
    }

    /// Records what was emitted, unless a replica already recorded something newer: the record
    /// only moves forward (compare-and-set on the key's revision). Returns whether it was written.
    pub async fn set_record(
        &self,
        source: &SourceKey,
        page: &PageId,
        record: &PageRecord,
    ) -> Result<bool, FetcherError> {
        let key = Self::page_key(source, page);
        let value = Bytes::from(
            serde_json::to_vec(record).map_err(|error| state_error("encode version", error))?,
        );
        for _ in 0..CAS_ATTEMPTS {
            let entry = self
                .store
                .entry(key.as_str())
                .await
                .map_err(|error| state_error("get version", error))?;
            let written = match entry.filter(|entry| entry.operation == kv::Operation::Put) {
                Some(entry) => {
                    // Another source's record (see `PageRecord::source_id`) is no order to keep.
                    if PageRecord::parse(&entry.value).is_some_and(|stored| {
                        stored.belongs_to(record.source_id) && stored.order() > record.order()
                    }) {
                        return Ok(false);
                    }
                    self.store
                        .update(key.as_str(), value.clone(), entry.revision)
                        .await
                        .is_ok()
                }
                None => self.store.create(key.as_str(), value.clone()).await.is_ok(),
            };
            if written {
                return Ok(true);
            }
        }
        Err(state_error(
            "put version",
            "lost the race to other replicas",
        ))
    }

    fn attachment_key(source: &SourceKey, attachment: &str) -> Option<String> {
        // A key token must not hold NATS subject syntax.
        let valid = !attachment.is_empty()
            && attachment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| format!("{source}.attachment.{attachment}"))
    }

    /// What was last extracted from an attachment (none when never, or for an id that cannot be
    /// a key).
    pub async fn attachment(
        &self,
        source: &SourceKey,
        attachment: &str,
    ) -> Result<Option<AttachmentRecord>, FetcherError> {
        let Some(key) = Self::attachment_key(source, attachment) else {
            return Ok(None);
        };
        self.get_json(key, "get attachment").await
    }

    /// Records what was extracted from an attachment's version.
    pub async fn set_attachment(
        &self,
        source: &SourceKey,
        attachment: &str,
        record: &AttachmentRecord,
    ) -> Result<(), FetcherError> {
        let Some(key) = Self::attachment_key(source, attachment) else {
            return Ok(());
        };
        self.put_json(key, record, "put attachment").await
    }

    /// Drops every key of a source: its versions, watermark, window and schedule.
    pub async fn purge_source(&self, source: &SourceKey) -> Result<(), FetcherError> {
        self.store
            .stream
            .purge()
            .filter(format!("{}{source}.>", self.store.prefix))
            .await
            .map_err(|error| state_error("purge source", error))?;
        Ok(())
    }

    /// Makes the state belong to the source with this id: a source removed and added again under
    /// its key must not inherit the removed one's versions (it would skip every page).
    pub async fn claim_for(&self, source: &SourceKey, id: Uuid) -> Result<(), FetcherError> {
        let key = format!("{source}.{SOURCE_ID}");
        let owner = self
            .store
            .get(key.as_str())
            .await
            .map_err(|error| state_error("get source id", error))?;
        let id_text = id.to_string();
        if owner.as_deref() == Some(id_text.as_bytes()) {
            return Ok(());
        }
        if owner.is_some() {
            tracing::info!(%source, "source re-created: its previous fetcher state is dropped");
            self.purge_source(source).await?;
        }
        self.store
            .put(key, Bytes::from(id_text))
            .await
            .map_err(|error| state_error("put source id", error))?;
        Ok(())
    }

    /// The last slot of the source's schedule that was claimed.
    pub async fn last_slot(&self, source: &SourceKey) -> Result<Option<i64>, FetcherError> {
        let value = self
            .store
            .get(format!("{source}.{SCHEDULE}"))
            .await
            .map_err(|error| state_error("get schedule", error))?;
        Ok(value.and_then(|bytes| std::str::from_utf8(&bytes).ok()?.trim().parse().ok()))
    }

    /// Claims a schedule slot of a source: true for exactly one caller per slot, across replicas
    /// and restarts (compare-and-set of the last scheduled slot).
    pub async fn claim_slot(&self, source: &SourceKey, slot: i64) -> Result<bool, FetcherError> {
        let key = format!("{source}.{SCHEDULE}");
        let entry = self
            .store
            .entry(key.as_str())
            .await
            .map_err(|error| state_error("get schedule", error))?;
        let value = Bytes::from(slot.to_string());
        let claimed = match entry.filter(|entry| entry.operation == kv::Operation::Put) {
            Some(entry) => {
                let last = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.trim().parse::<i64>().ok());
                if last.is_some_and(|last| last >= slot) {
                    return Ok(false);
                }
                self.store.update(key, value, entry.revision).await.is_ok()
            }
            None => self.store.create(key, value).await.is_ok(),
        };
        Ok(claimed)
    }

    /// The source's sync run in progress, if one reported.
    pub async fn running(&self, source: &SourceKey) -> Result<Option<RunInFlight>, FetcherError> {
        self.get_json(format!("{source}.{RUNNING}"), "get running run")
            .await
    }

    /// Records that a run of the source is in progress (its latest report wins).
    pub async fn set_running(
        &self,
        source: &SourceKey,
        run: &RunInFlight,
    ) -> Result<(), FetcherError> {
        self.put_json(format!("{source}.{RUNNING}"), run, "put running run")
            .await
    }

    /// Records that the run ended, unless another run of the source reported since.
    pub async fn clear_running(
        &self,
        source: &SourceKey,
        run_id: Uuid,
    ) -> Result<(), FetcherError> {
        if self
            .running(source)
            .await?
            .is_some_and(|run| run.run_id == run_id)
        {
            self.store
                .delete(format!("{source}.{RUNNING}"))
                .await
                .map_err(|error| state_error("delete running run", error))?;
        }
        Ok(())
    }

    /// What was emitted for each of a source's pages, tombstones included. Reads the bucket's
    /// stream through a throwaway consumer (last message per key) rather than one `get` per key.
    pub async fn records(
        &self,
        source: &SourceKey,
    ) -> Result<HashMap<PageId, PageRecord>, FetcherError> {
        let owner = self.owner(source).await?;
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
            if let (false, Some(page), Some(record)) =
                (deleted, page, PageRecord::parse(&message.payload))
                && record.belongs_to(owner)
            {
                versions.insert(page, record);
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

    /// The pages that failed in the source's last run.
    pub async fn failed_pages(&self, source: &SourceKey) -> Result<BTreeSet<PageId>, FetcherError> {
        Ok(self
            .get_json(format!("{source}.{FAILED}"), "get failed pages")
            .await?
            .unwrap_or_default())
    }

    pub async fn set_failed_pages(
        &self,
        source: &SourceKey,
        pages: &BTreeSet<PageId>,
    ) -> Result<(), FetcherError> {
        self.put_json(format!("{source}.{FAILED}"), pages, "put failed pages")
            .await
    }

    pub async fn window(&self, source: &SourceKey) -> Result<Option<Window>, FetcherError> {
        self.get_json(format!("{source}.{WINDOW}"), "get window")
            .await
    }

    pub async fn set_window(
        &self,
        source: &SourceKey,
        window: &Window,
    ) -> Result<(), FetcherError> {
        self.put_json(format!("{source}.{WINDOW}"), window, "put window")
            .await
    }
}

fn parse_version(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

impl FetcherState {
    /// The keys of the spaces the source's last completed run synced; none before the first
    /// (or where the state predates sources of several spaces).
    pub async fn spaces(
        &self,
        source: &SourceKey,
    ) -> Result<Option<BTreeSet<String>>, FetcherError> {
        self.get_json(format!("{source}.{SPACES}"), "get spaces")
            .await
    }

    pub async fn set_spaces(
        &self,
        source: &SourceKey,
        spaces: &BTreeSet<String>,
    ) -> Result<(), FetcherError> {
        self.put_json(format!("{source}.{SPACES}"), spaces, "put spaces")
            .await
    }
}
