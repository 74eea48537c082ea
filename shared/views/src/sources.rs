//! Sources and their sync runs, as the api shows them.

use chrono::{DateTime, Utc};
use pagestream_events::{RunPipeline, SyncMode, SyncStatus};
use pagestream_sources::{SourceSettings, Spaces};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A source as the api shows it: never its credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceView {
    pub id: Uuid,
    pub key: String,
    pub site_url: String,
    /// The spaces as shown: `ENG`, `ENG, OPS`, or `all spaces`.
    pub space_key: String,
    /// `{"keys": ["ENG", "OPS"]}`, or `"all"`: every space the credentials can read.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spaces: Spaces,
    /// `cloud` or `data_center`.
    pub auth_kind: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub settings: SourceSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Live pages and chunks (of the search model) in the projection.
    pub pages: i64,
    pub chunks: i64,
    /// Whether the indexer has projected the source into Postgres yet.
    pub projected: bool,
    pub last_sync: Option<SyncRunView>,
    /// When the next scheduled sync is due (RFC 3339); none when scheduled syncs are off.
    pub next_sync_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceList {
    pub sources: Vec<SourceView>,
}

/// Per-stage page counts of a sync run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StageCounts {
    pub seen: i64,
    pub changed: i64,
    pub deleted: i64,
    pub converted: i64,
    pub embedded: i64,
    pub indexed: i64,
    pub failed: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncRunView {
    pub run_id: Uuid,
    pub source: String,
    /// `full` or `incremental`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub mode: SyncMode,
    /// The fetch stage's status: `queued`, `running`, `completed` or `failed`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: SyncStatus,
    /// Where the run stands in the whole pipeline: `{"state": "queued" | "fetching" | "done" |
    /// "failed"}`, `{"state": "processing", "done", "total"}` or
    /// `{"state": "done_with_failures", "failed"}`. A run is finished when its pages are indexed.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub pipeline: RunPipeline,
    /// The pipeline state in words (`processing 12 of 300`).
    pub pipeline_label: String,
    pub counts: StageCounts,
    pub confluence_requests: i64,
    pub rate_limit_wait_ms: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl SyncRunView {
    /// The run is over and every changed page is indexed (or the fetch failed).
    pub fn settled(&self) -> bool {
        self.pipeline.is_finished()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncAccepted {
    pub run_id: Uuid,
    pub source: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub mode: SyncMode,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: SyncStatus,
    /// Where to follow the run.
    pub status_url: String,
}

/// The path Cloud's unsigned site-admin webhooks deliver to, with the source's new path secret:
/// shown once, when it is set; the one before no longer works.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookPath {
    pub key: String,
    /// `/webhooks/confluence/<key>/p/<secret>`; append `/<event>` per webhook.
    pub path: String,
}

/// A source's webhooks as the site holds them, against those it needs: the answer of
/// `GET|PUT|DELETE /api/confluence/{id}/webhooks`. Only webhooks pointing at this source's
/// ingester path are shown, a path secret in their URL as `***`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookReport {
    pub key: String,
    /// `cloud` (site-admin webhooks, one per event, path secret in the URL) or `data_center`
    /// (one webhook for every event, signed with the source's webhook secret).
    pub auth_kind: String,
    /// The ingester's public root the webhooks must point at.
    pub public_url: String,
    /// Each event the ingester understands, and whether a webhook delivers it.
    pub events: Vec<WebhookEventCheck>,
    /// The webhooks pointing at this source.
    pub webhooks: Vec<RegisteredWebhook>,
    /// Every event is delivered by an active webhook at the right URL, and nothing stale is left.
    pub healthy: bool,
    /// Webhooks this request created and deleted.
    pub created: usize,
    pub removed: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookEventCheck {
    pub event: String,
    pub status: WebhookEventStatus,
    /// The webhook that delivers it, when one does.
    pub webhook_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WebhookEventStatus {
    /// An active webhook at the right URL delivers it.
    Ok,
    /// No webhook of this source subscribes to it.
    Missing,
    /// Its webhook is at the right URL but disabled.
    Inactive,
    /// Only a webhook at another URL of this source delivers it (an old path secret): the
    /// ingester refuses those deliveries.
    WrongUrl,
}

/// A webhook pointing at this source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisteredWebhook {
    pub id: String,
    pub name: String,
    /// The delivery URL, its path secret shown as `***`.
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub status: RegisteredStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RegisteredStatus {
    /// Needed: it delivers expected events to the right URL.
    Ok,
    /// Points at this source but is of no use (wrong URL, disabled, events missing): `register`
    /// replaces it.
    Stale,
    /// Repeats what another webhook already delivers: `register` deletes it.
    Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceRemoved {
    pub id: Uuid,
    pub key: String,
    /// Pages and chunks are removed by the indexer shortly after.
    pub status: String,
}
