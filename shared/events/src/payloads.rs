//! The typed `data` of every event. Fields are only ever added, as optional (`#[serde(default)]`);
//! a breaking change gets a new `type` version.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{EventError, EventKind, PageId, SourceKey, Vector};

/// What every payload tells the envelope about itself.
pub trait Payload: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: EventKind;

    fn source(&self) -> &SourceKey;

    /// The page the event is about (all but `sync.requested`).
    fn page_id(&self) -> Option<&PageId>;

    /// The fact the event states, as the parts its id is derived from (besides type, source and
    /// page). Publishing the same fact twice gives the same id.
    fn fact(&self) -> Vec<String>;

    /// Where a fact event stands among its page's facts: a page's fact in its stream never moves
    /// back. None for commands.
    fn position(&self) -> Option<FactPosition> {
        None
    }
}

/// Where a page's fact stands among the facts of its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactPosition {
    pub version: u64,
    pub incarnation: u64,
    /// See [`PageInfo::source_id`].
    pub source_id: Option<Uuid>,
}

impl FactPosition {
    /// Whether this fact is newer than `other`: a later version, or the same version in a later
    /// incarnation of the same source registration (a source removed and added again counts its
    /// incarnations afresh, and a removed one's late event must not hold the new one back).
    pub fn supersedes(&self, other: &FactPosition) -> bool {
        self.version > other.version
            || (self.version == other.version
                && self.source_id.is_some()
                && self.source_id == other.source_id
                && self.incarnation > other.incarnation)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Full,
    Incremental,
}

/// Names as the events, the api and `sync_runs` spell them (the serde names).
macro_rules! named {
    ($type:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $type {
            type Err = EventError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                match value {
                    $($name => Ok(Self::$variant),)+
                    _ => Err(EventError::InvalidIdentifier {
                        what: $what,
                        value: value.to_owned(),
                    }),
                }
            }
        }

        /// For columns read as text.
        impl TryFrom<String> for $type {
            type Error = EventError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                value.parse()
            }
        }
    };
}

named!(SyncMode, "sync mode", { Full => "full", Incremental => "incremental" });

/// `sync.requested`: a command to the fetcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequested {
    pub source: SourceKey,
    pub run_id: Uuid,
    pub mode: SyncMode,
    /// Diff the full id listing against what is known, even on an incremental sync.
    #[serde(default)]
    pub reconcile_deletions: bool,
    pub requested_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HintReason {
    /// Created, updated, restored or moved: fetch the page.
    Changed,
    /// Trashed or purged: confirm with Confluence, then emit `page.deleted`.
    Removed,
}

impl HintReason {
    /// The reason's part of a hint's event id: spelled out here, so that renaming a variant never
    /// changes the ids of hints already in the stream (and their deduplication).
    pub fn id_part(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::Removed => "removed",
        }
    }
}

/// The kind of Confluence content an indexed item is, spelled as Confluence spells its types.
/// Confluence ids are unique across content types, so a page id names one item of either kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    /// A page of the space's tree (events written before blog posts were indexed are pages).
    #[default]
    Page,
    /// A blog post: no parent, dated, listed apart from the page tree.
    Blogpost,
}

impl ContentType {
    pub const ALL: [ContentType; 2] = [ContentType::Page, ContentType::Blogpost];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Blogpost => "blogpost",
        }
    }

    pub fn is_page(&self) -> bool {
        *self == Self::Page
    }

    /// Confluence's `type` / `contentType` value; none for other content (comments, attachments).
    pub fn from_confluence(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.as_str() == kind)
    }
}

impl std::fmt::Display for ContentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ContentType {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::from_confluence(value).ok_or_else(|| "must be page or blogpost".to_owned())
    }
}

/// `page.hinted`: a webhook said something happened to a page (or a blog post).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHinted {
    pub source: SourceKey,
    pub page_id: PageId,
    /// What the webhook said the item is (`blog_*` events name blog posts).
    #[serde(default, skip_serializing_if = "ContentType::is_page")]
    pub content_type: ContentType,
    pub reason: HintReason,
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub space_key: Option<String>,
    /// The webhook event name as delivered (`page_updated`, ...).
    #[serde(default)]
    pub webhook_event: Option<String>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub id: PageId,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Author {
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// What every page event after the fetcher carries about the page besides its content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageInfo {
    pub source: SourceKey,
    pub page_id: PageId,
    /// A page or a blog post (a blog post has no ancestors: its path is `/<id>`).
    #[serde(default, skip_serializing_if = "ContentType::is_page")]
    pub content_type: ContentType,
    pub space_key: String,
    pub title: String,
    pub version: u64,
    /// Materialized path of ancestor ids and the page itself: `/root/parent/page`.
    pub path: String,
    pub url: String,
    #[serde(default)]
    pub ancestors: Vec<Ancestor>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub author: Option<Author>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    pub last_modified: DateTime<Utc>,
    /// Counts the page's changes that keep its version: a restore after a deletion the fetcher
    /// emitted (Confluence keeps the version), a move, a label change. `(version, incarnation)`
    /// orders a page's facts, so a restore outlives its tombstone and a late older placement
    /// loses.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
    /// The registry id of the source the page was fetched for. A source removed and added again
    /// under its key gets a new id: the new one's events never share an id with the old one's
    /// (JetStream would drop them as duplicates for two minutes), and the indexer drops a late
    /// event of the removed one. None in events written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<Uuid>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl PageInfo {
    fn position(&self) -> FactPosition {
        FactPosition {
            version: self.version,
            incarnation: self.incarnation,
            source_id: self.source_id,
        }
    }

    /// The parts of a page event's id: the version and incarnation, and where the page stands
    /// (path, labels, space), which change without a new version when a page is moved or
    /// labelled.
    fn fact(&self) -> Vec<String> {
        let mut fact = version_fact(self.version, self.incarnation, self.source_id);
        fact.push(format!("in:{}", self.space_key));
        fact.push(format!("at:{}", self.path));
        fact.push(format!("labels:{}", self.labels.join(",")));
        fact
    }
}

/// `version`, then the incarnation when the page was ever restored, then the source's registry id
/// (ids of events without them stay what they were before they existed).
fn version_fact(version: u64, incarnation: u64, source_id: Option<Uuid>) -> Vec<String> {
    let mut fact = vec![version.to_string()];
    if incarnation > 0 {
        fact.push(format!("i{incarnation}"));
    }
    if let Some(id) = source_id {
        fact.push(format!("s{id}"));
    }
    fact
}

/// `page.changed`: a new version of a page, with its storage-format body and its comments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageChanged {
    #[serde(flatten)]
    pub page: PageInfo,
    pub body_storage: String,
    /// The page's comments, top-level ones in Confluence's order, each followed by its replies.
    /// A comment change keeps the page's version: it comes as a new incarnation. Empty in events
    /// written before comments were fetched, and where the source's API has no comments (Data
    /// Center).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<PageComment>,
    /// The page's attachments, in id order, with the text extracted from each (an attachment
    /// change keeps the page's version: it comes as a new incarnation). Empty in events written
    /// before attachments were fetched, and where the source's API has no v2 listings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<PageAttachment>,
    /// The pages that the body's `include` and `excerpt-include` macros pull in, and those that
    /// these include in turn (to a bounded depth), as the fetcher found them: the converter
    /// renders each in place of its macro. A change of an included page keeps the including
    /// page's version: it comes as a new incarnation. Empty in events written before includes
    /// were resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included: Vec<IncludedPage>,
}

/// Levels of includes resolved (by the fetcher) and shown (by the converter): a page's own
/// include macros are level 1; an include macro deeper than this keeps its marker.
pub const MAX_INCLUDE_DEPTH: usize = 3;

/// A page named by an `include` or `excerpt-include` macro, as the fetcher resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncludedPage {
    /// The space the macro names, or the space of the page that holds the macro.
    pub space_key: String,
    /// The title the macro names (Confluence includes by title).
    pub title: String,
    pub content: IncludedContent,
}

/// What an included page holds, or why it is not shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncludedContent {
    /// Found: its id, version and storage body.
    Found {
        page_id: PageId,
        version: u64,
        body_storage: String,
    },
    /// Not shown: missing (deleted, or hidden from the API user) or over the bound on what one
    /// page may include.
    Missing(String),
}

impl IncludedPage {
    /// Whether this is the page a macro names: the same space and title.
    pub fn is(&self, space_key: &str, title: &str) -> bool {
        self.space_key == space_key && self.title == title
    }
}

/// A file attached to a page or blog post, with what its text extraction gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageAttachment {
    /// Confluence's id (`att…` on Cloud).
    pub id: String,
    pub file_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub version: u64,
    /// Size in bytes, as Confluence reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// Where a reader opens the file (its preview in the page, or its download).
    pub url: String,
    pub text: AttachmentText,
}

/// The text of an attachment, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentText {
    /// The text extracted from the file (bounded; cut at a character boundary).
    Extracted(String),
    /// Not read, by configuration: a type outside the allow-list or a file over the size cap.
    Skipped(String),
    /// The file could not be parsed: a permanent failure of this version of this attachment.
    Failed(String),
}

/// Where a comment sits on its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommentLocation {
    /// Below the page.
    Footer,
    /// On a highlighted selection of the page's text.
    Inline,
}

/// A comment on a page or blog post, or a reply to one (`parent_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageComment {
    pub id: PageId,
    pub location: CommentLocation,
    /// The comment this one replies to; none for a top-level comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<PageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
    /// When its current version was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<DateTime<Utc>>,
    pub version: u64,
    pub body_storage: String,
    /// An inline comment's `resolutionStatus` as Confluence spells it (`open`, `reopened`,
    /// `resolved`, `dangling`); none for footer comments and replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// The text an inline comment highlights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<String>,
}

impl PageComment {
    /// Whether this is an inline comment its thread marked resolved.
    pub fn is_resolved(&self) -> bool {
        self.resolution.as_deref() == Some("resolved")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InternalLink {
    pub title: String,
    #[serde(default)]
    pub space_key: Option<String>,
    #[serde(default)]
    pub page_id: Option<PageId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Include {
    /// `include` or `excerpt-include`.
    pub macro_name: String,
    pub title: String,
    #[serde(default)]
    pub space_key: Option<String>,
}

/// What the converter learned from the body (DESIGN §4 `metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContentMetadata {
    #[serde(default)]
    pub jira_issue_links: Vec<String>,
    #[serde(default)]
    pub user_mentions: Vec<String>,
    #[serde(default)]
    pub internal_links: Vec<InternalLink>,
    #[serde(default)]
    pub external_links: Vec<String>,
    #[serde(default)]
    pub attachments: Vec<String>,
    #[serde(default)]
    pub includes: Vec<Include>,
    #[serde(default)]
    pub macros_used: Vec<String>,
    #[serde(default)]
    pub word_count: u64,
    #[serde(default)]
    pub content_length: u64,
}

/// `page.converted`: the page as clean Markdown plus metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageConverted {
    #[serde(flatten)]
    pub page: PageInfo,
    pub markdown: String,
    pub metadata: ContentMetadata,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub index: u32,
    pub text: String,
    /// Page title, then each heading above the chunk.
    pub heading_path: Vec<String>,
    /// Hex SHA-256 of the embedded text.
    pub content_hash: String,
    pub token_count: u32,
    pub vector: Vector,
    /// Set when the chunk is one code block of the page (a `code` or `noformat` macro), indexed
    /// as its own searchable kind besides the section it sits in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeBlock>,
}

/// What a code chunk's block says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CodeBlock {
    /// The macro's language, lowercase (`python`, `bash`); absent for `noformat` and plain blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The macro's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `chunks.ready`: a page version's chunks with their embeddings from one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunksReady {
    pub source: SourceKey,
    pub page_id: PageId,
    pub space_key: String,
    pub version: u64,
    pub model: String,
    pub dimension: u32,
    pub chunks: Vec<Chunk>,
    /// The page's incarnation (see [`PageInfo::incarnation`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
    /// See [`PageInfo::source_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<Uuid>,
}

/// `page.deleted`: the page is gone (trashed, purged, or no longer listed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageDeleted {
    pub source: SourceKey,
    pub page_id: PageId,
    /// The newest version known when it was deleted; an older version arriving later stays deleted.
    pub version: u64,
    #[serde(default)]
    pub space_key: Option<String>,
    pub deleted_at: DateTime<Utc>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The incarnation deleted (see [`PageInfo::incarnation`]): a restored page's later
    /// incarnation outlives this tombstone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
    /// See [`PageInfo::source_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<Uuid>,
}

impl Payload for SyncRequested {
    const KIND: EventKind = EventKind::SyncRequested;
    fn source(&self) -> &SourceKey {
        &self.source
    }
    fn page_id(&self) -> Option<&PageId> {
        None
    }
    fn fact(&self) -> Vec<String> {
        vec![self.run_id.to_string()]
    }
}

impl Payload for PageHinted {
    const KIND: EventKind = EventKind::PageHinted;
    fn source(&self) -> &SourceKey {
        &self.source
    }
    fn page_id(&self) -> Option<&PageId> {
        Some(&self.page_id)
    }
    fn fact(&self) -> Vec<String> {
        let reason = self.reason.id_part().to_owned();
        match self.version {
            // Hints of the same version are the same fact: a burst collapses to one.
            Some(version) => vec![reason, version.to_string()],
            // Without a version only the delivery time tells two hints apart.
            None => vec![reason, self.received_at.to_rfc3339()],
        }
    }
}

impl Payload for PageChanged {
    const KIND: EventKind = EventKind::PageChanged;
    fn position(&self) -> Option<FactPosition> {
        Some(self.page.position())
    }
    fn source(&self) -> &SourceKey {
        &self.page.source
    }
    fn page_id(&self) -> Option<&PageId> {
        Some(&self.page.page_id)
    }
    fn fact(&self) -> Vec<String> {
        self.page.fact()
    }
}

impl Payload for PageConverted {
    const KIND: EventKind = EventKind::PageConverted;
    fn position(&self) -> Option<FactPosition> {
        Some(self.page.position())
    }
    fn source(&self) -> &SourceKey {
        &self.page.source
    }
    fn page_id(&self) -> Option<&PageId> {
        Some(&self.page.page_id)
    }
    fn fact(&self) -> Vec<String> {
        self.page.fact()
    }
}

impl Payload for ChunksReady {
    const KIND: EventKind = EventKind::ChunksReady;
    fn position(&self) -> Option<FactPosition> {
        Some(FactPosition {
            version: self.version,
            incarnation: self.incarnation,
            source_id: self.source_id,
        })
    }
    fn source(&self) -> &SourceKey {
        &self.source
    }
    fn page_id(&self) -> Option<&PageId> {
        Some(&self.page_id)
    }
    fn fact(&self) -> Vec<String> {
        let mut fact = version_fact(self.version, self.incarnation, self.source_id);
        fact.push(self.model.clone());
        fact
    }
}

impl Payload for PageDeleted {
    const KIND: EventKind = EventKind::PageDeleted;
    fn position(&self) -> Option<FactPosition> {
        Some(FactPosition {
            version: self.version,
            incarnation: self.incarnation,
            source_id: self.source_id,
        })
    }
    fn source(&self) -> &SourceKey {
        &self.source
    }
    fn page_id(&self) -> Option<&PageId> {
        Some(&self.page_id)
    }
    fn fact(&self) -> Vec<String> {
        version_fact(self.version, self.incarnation, self.source_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncStatus {
    Queued,
    Running,
    Completed,
    Failed,
}

named!(SyncStatus, "sync status", {
    Queued => "queued",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
});

impl SyncStatus {
    /// The statuses of a run that has not ended: a snapshot with one of them never reopens a
    /// run that has.
    pub const UNFINISHED: [SyncStatus; 2] = [SyncStatus::Queued, SyncStatus::Running];
}

/// The fetcher's side of a sync run: a cumulative snapshot, published on
/// `<root>.sync.progress.<source>.<run>` at least every 50 pages. The stream keeps the latest
/// snapshot per run; the indexer projects it into `sync_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncProgress {
    pub source: SourceKey,
    pub run_id: Uuid,
    pub mode: SyncMode,
    pub status: SyncStatus,
    #[serde(default)]
    pub pages_seen: u64,
    #[serde(default)]
    pub pages_changed: u64,
    #[serde(default)]
    pub pages_deleted: u64,
    #[serde(default)]
    pub pages_failed: u64,
    /// Requests made to Confluence.
    #[serde(default)]
    pub requests: u64,
    /// Time spent waiting on rate limits (429/503 and client-side limits).
    #[serde(default)]
    pub rate_limit_wait_ms: u64,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl SyncProgress {
    /// The first snapshot of a run, with nothing counted yet: `Queued` when the api accepts it,
    /// `Running` when a fetcher starts it.
    pub fn new(
        source: SourceKey,
        run_id: Uuid,
        mode: SyncMode,
        status: SyncStatus,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            source,
            run_id,
            mode,
            status,
            pages_seen: 0,
            pages_changed: 0,
            pages_deleted: 0,
            pages_failed: 0,
            requests: 0,
            rate_limit_wait_ms: 0,
            started_at: at,
            finished_at: None,
            last_error: None,
            updated_at: at,
        }
    }
}

/// Where a sync run stands in the whole pipeline, not only in fetching: a run is finished when
/// every page it changed is indexed. The api, the CLI and the UI show it beside the fetch status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunPipeline {
    /// No fetcher has picked the run up yet.
    Queued,
    /// The fetcher is still listing and fetching pages.
    Fetching,
    /// Fetching is over; `done` of the `total` changed pages are indexed.
    Processing { done: u64, total: u64 },
    /// Every changed page is indexed.
    Done,
    /// Every page that could be fetched is indexed; `failed` pages could not be.
    DoneWithFailures { failed: u64 },
    /// The fetch itself failed (see the run's last error).
    Failed,
}

impl RunPipeline {
    /// The pipeline state from the fetch status and the run's page counts.
    pub fn of(status: SyncStatus, changed: u64, indexed: u64, failed: u64) -> Self {
        match status {
            SyncStatus::Queued => Self::Queued,
            SyncStatus::Running => Self::Fetching,
            SyncStatus::Failed => Self::Failed,
            SyncStatus::Completed if indexed < changed => Self::Processing {
                done: indexed,
                total: changed,
            },
            SyncStatus::Completed if failed > 0 => Self::DoneWithFailures { failed },
            SyncStatus::Completed => Self::Done,
        }
    }

    /// Nothing more will happen to the run.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Done | Self::DoneWithFailures { .. } | Self::Failed
        )
    }
}

impl std::fmt::Display for RunPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Queued => f.write_str("queued"),
            Self::Fetching => f.write_str("fetching"),
            Self::Processing { done, total } => write!(f, "processing {done} of {total}"),
            Self::Done => f.write_str("done"),
            Self::DoneWithFailures { failed } => write!(f, "done with {failed} failed"),
            Self::Failed => f.write_str("failed"),
        }
    }
}

/// Request on `<root>.embed.query` (NATS request/reply): embed a search query with the model the
/// embedder serves, so api replicas need no model of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedQueryRequest {
    pub text: String,
    /// The model the caller expects; the embedder refuses if it serves another.
    #[serde(default)]
    pub model: Option<String>,
}

/// Reply to [`EmbedQueryRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedQueryReply {
    Embedded {
        model: String,
        dimension: u32,
        vector: Vector,
    },
    Failed {
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_ids_are_built_from_spelled_out_reasons() {
        let hint = |reason| PageHinted {
            source: SourceKey::new("eng").expect("key"),
            page_id: PageId::new("42").expect("page id"),
            content_type: ContentType::Page,
            reason,
            version: Some(7),
            space_key: None,
            webhook_event: None,
            received_at: Utc::now(),
        };
        assert_eq!(hint(HintReason::Changed).fact(), ["changed", "7"]);
        assert_eq!(hint(HintReason::Removed).fact(), ["removed", "7"]);
    }

    #[test]
    fn events_without_a_content_type_are_pages() {
        let old = serde_json::json!({
            "source": "eng", "page_id": "42", "space_key": "ENG", "title": "T", "version": 3,
            "path": "/42", "url": "https://x/wiki/x/42", "last_modified": "2024-03-01T10:00:00Z",
        });
        let info: PageInfo = serde_json::from_value(old.clone()).expect("old page info");
        assert_eq!(info.content_type, ContentType::Page);
        // A page's events are written as before; a blog post's say what they are.
        assert_eq!(
            serde_json::to_value(&info)
                .expect("json")
                .get("content_type"),
            None
        );
        let blog = PageInfo {
            content_type: ContentType::Blogpost,
            ..info
        };
        let json = serde_json::to_value(&blog).expect("json");
        assert_eq!(json["content_type"], "blogpost");
        let back: PageInfo = serde_json::from_value(json).expect("blog post info");
        assert_eq!(back.content_type, ContentType::Blogpost);
        assert_eq!("blogpost".parse::<ContentType>(), Ok(ContentType::Blogpost));
        assert_eq!(ContentType::from_confluence("comment"), None);
    }

    #[test]
    fn sync_names_are_the_serde_names_and_read_back() {
        for mode in [SyncMode::Full, SyncMode::Incremental] {
            assert_eq!(
                serde_json::to_value(mode).ok(),
                Some(serde_json::Value::from(mode.as_str()))
            );
            assert_eq!(mode.as_str().parse::<SyncMode>().ok(), Some(mode));
        }
        for status in [
            SyncStatus::Queued,
            SyncStatus::Running,
            SyncStatus::Completed,
            SyncStatus::Failed,
        ] {
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::Value::from(status.as_str()))
            );
            assert_eq!(SyncStatus::try_from(status.to_string()).ok(), Some(status));
        }
        assert!("Full".parse::<SyncMode>().is_err());
        assert!("done".parse::<SyncStatus>().is_err());
    }

    #[test]
    fn a_run_is_finished_when_its_pages_are_indexed() {
        let of = RunPipeline::of;
        assert_eq!(of(SyncStatus::Queued, 0, 0, 0), RunPipeline::Queued);
        assert_eq!(of(SyncStatus::Running, 40, 40, 0), RunPipeline::Fetching);
        let processing = of(SyncStatus::Completed, 300, 12, 0);
        assert_eq!(
            processing,
            RunPipeline::Processing {
                done: 12,
                total: 300
            }
        );
        assert!(!processing.is_finished());
        assert_eq!(processing.to_string(), "processing 12 of 300");
        assert_eq!(of(SyncStatus::Completed, 300, 300, 0), RunPipeline::Done);
        assert!(of(SyncStatus::Completed, 300, 300, 0).is_finished());
        let partly = of(SyncStatus::Completed, 298, 298, 2);
        assert_eq!(partly, RunPipeline::DoneWithFailures { failed: 2 });
        assert!(partly.is_finished());
        assert_eq!(of(SyncStatus::Failed, 10, 3, 0), RunPipeline::Failed);
        assert_eq!(
            serde_json::to_value(processing).expect("json"),
            serde_json::json!({"state": "processing", "done": 12, "total": 300})
        );
    }
}
