//! Sync runs and hints: what to fetch, what to emit, and the state that makes it exactly-once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use pagestream_bus::consumer::Handler;
use pagestream_bus::{Bus, Delivery, HandlerError, Lane};
use pagestream_confluence::{
    COMMENT_EXPAND, ClientConfig, ConfluenceClient, ConfluenceError, Content, CqlQuery,
    ListOptions, MAX_LIMIT, RetryPolicy, SYNC_EXPAND, SpaceId, SpaceKey, UserTimeZone,
};
use pagestream_events::{
    AttachmentText, ContentType, Envelope, HintReason, PageAttachment, PageChanged, PageComment,
    PageDeleted, PageHinted, PageId, Retryable, SourceKey, SyncMode, SyncProgress, SyncRequested,
    SyncStatus,
};
use pagestream_sources::{AuthKind, SecretKey, SourceRegistry, SourceSettings};
use uuid::Uuid;

use crate::FetcherError;
use crate::extract::{self, FileKind};
use crate::includes::{self, Now};
use crate::page_info::{self, AttachmentRef, Site, Tree};
use crate::state::{AttachmentRecord, FetcherState, PageRecord, RecordRead, RunInFlight, Window};

mod spaces;

/// Results per CQL search request (bodies expanded, so Cloud serves at most 50).
const SEARCH_LIMIT: u32 = 50;

/// What a v1 listing (Data Center) needs: versions, parents and labels, no bodies.
const LISTING_EXPAND: &[&str] = &["version", "ancestors", "metadata.labels"];

/// What a listing of the space's comments needs to tell which pages' comments changed (see
/// [`page_info::comments_fingerprint`]): no bodies, so 250 a request.
const COMMENT_LISTING_EXPAND: &[&str] =
    &["version", "container", "ancestors", "extensions.resolution"];

/// What a listing of the space's attachments needs: their versions and pages (their media type,
/// size and download link come without expansion).
const ATTACHMENT_LISTING_EXPAND: &[&str] = &["version", "container"];

/// What a page shows Confluence has, beyond its version and place: where a field is none,
/// Confluence was not asked.
#[derive(Default)]
struct Facts<'a> {
    labels: Option<&'a [String]>,
    /// The comments' fingerprint.
    comments: Option<&'a str>,
    /// The attachments' fingerprint.
    attachments: Option<&'a str>,
    /// The fingerprint of the ancestors' titles.
    ancestry: Option<&'a str>,
    /// The included pages and their versions.
    included: Option<&'a BTreeMap<PageId, u64>>,
}

/// The incarnation to emit a page as (bumped for every new fact of the same version), or none
/// when what Confluence shows was already emitted: a new version, a restore (the same version
/// after a tombstone), a move, a rename above the page, a label, comment, attachment or
/// included page change (no new version) are emitted.
fn incarnation_to_emit(
    record: Option<&PageRecord>,
    version: u64,
    path: &str,
    facts: Facts<'_>,
) -> Option<u64> {
    let Some(record) = record else {
        return Some(0);
    };
    if record.deleted || record.deleting {
        return Some(record.incarnation + 1);
    }
    let moved = record.path.as_deref().is_some_and(|known| known != path)
        || matches!((record.ancestry.as_deref(), facts.ancestry), (Some(known), Some(now)) if known != now);
    let relabelled = match (record.labels.as_deref(), facts.labels) {
        (Some(known), Some(labels)) => known != labels,
        _ => false,
    };
    // A record without a fingerprint emitted no comments (or attachments): a page first seen
    // with them after an upgrade is emitted again with them.
    let recommented = facts.comments.is_some_and(|comments| {
        record
            .comments
            .as_deref()
            .unwrap_or_else(|| no_comments_fingerprint())
            != comments
    });
    let reattached = facts.attachments.is_some_and(|attachments| {
        record
            .attachments
            .as_deref()
            .unwrap_or_else(|| no_attachments_fingerprint())
            != attachments
    });
    // A change of an included page keeps the including page's version.
    let reincluded = facts
        .included
        .is_some_and(|included| match &record.included {
            Some(known) => known != included,
            None => !included.is_empty(),
        });
    if version > record.version {
        Some(record.incarnation)
    } else if version == record.version
        && (moved || relabelled || recommented || reattached || reincluded)
    {
        // A new fact of the same version: a move back within JetStream's duplicate window must
        // not collide with the earlier event, and an older placement arriving late must lose.
        Some(record.incarnation + 1)
    } else {
        None
    }
}

/// The fingerprint of a page without attachments.
fn no_attachments_fingerprint() -> &'static str {
    static EMPTY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| page_info::attachments_fingerprint([]))
}

/// The fingerprint of the attachments a listing shows.
fn listed_attachments_fingerprint(attachments: &[AttachmentRef]) -> String {
    page_info::attachments_fingerprint(
        attachments
            .iter()
            .map(|a| (a.id.as_str(), a.version, a.file_name.as_str())),
    )
}

/// The fingerprint of the attachments a page's event carries.
fn emitted_attachments_fingerprint(attachments: &[PageAttachment]) -> String {
    page_info::attachments_fingerprint(
        attachments
            .iter()
            .map(|a| (a.id.as_str(), a.version, a.file_name.as_str())),
    )
}

/// The fingerprint of a page without comments.
fn no_comments_fingerprint() -> &'static str {
    static EMPTY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| page_info::comments_fingerprint(&[]))
}

/// What v1 content is, if the index holds its kind (pages and blog posts; not comments or
/// attachments). Content without a type is a page.
fn indexed_type(content: &Content) -> Option<ContentType> {
    match content.content_type.as_deref() {
        None => Some(ContentType::Page),
        Some(kind) => ContentType::from_confluence(kind),
    }
}

/// How the fetcher behaves beyond each source's own settings.
#[derive(Debug, Clone)]
pub struct FetcherOptions {
    /// Overlap of successive incremental windows.
    pub overlap: Duration,
    /// Progress is published at least every this many pages.
    pub progress_every: u64,
    /// Page events published (and awaited) at once.
    pub publish_concurrency: usize,
    /// Replaces the client's retry policy (tests shorten the backoff).
    pub retry: Option<RetryPolicy>,
    /// Largest Confluence response read, in bytes (a page over it fails alone).
    pub max_response_bytes: usize,
    pub attachments: AttachmentOptions,
}

impl Default for FetcherOptions {
    fn default() -> Self {
        Self {
            overlap: Duration::from_secs(300),
            progress_every: 50,
            publish_concurrency: 16,
            retry: None,
            max_response_bytes: ClientConfig::DEFAULT_MAX_RESPONSE_BYTES,
            attachments: AttachmentOptions::default(),
        }
    }
}

/// Which attachments have their text extracted.
#[derive(Debug, Clone)]
pub struct AttachmentOptions {
    /// Largest file downloaded, in bytes: a larger one is listed with its page, without text.
    pub max_bytes: usize,
    /// The types whose text is extracted (the allow-list); others are listed without text.
    pub kinds: BTreeSet<FileKind>,
    /// Files downloaded and parsed at once (each holds up to `max_bytes` and its parse).
    pub concurrency: usize,
}

impl Default for AttachmentOptions {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            kinds: FileKind::ALL.into_iter().collect(),
            concurrency: 2,
        }
    }
}

/// The final snapshot of a sync run.
pub type SyncOutcome = SyncProgress;

struct CachedSource {
    updated_at: DateTime<Utc>,
    client: ConfluenceClient,
    site: Site,
    settings: SourceSettings,
}

/// One source's client (shared by its runs, so they share its rate limits) and site.
struct Source {
    client: ConfluenceClient,
    site: Site,
    settings: SourceSettings,
}

pub struct Fetcher {
    bus: Bus,
    registry: SourceRegistry,
    secret_key: SecretKey,
    state: FetcherState,
    options: FetcherOptions,
    sources: Mutex<HashMap<SourceKey, Arc<CachedSource>>>,
    /// Bounds the attachments downloaded and parsed at once, so their memory.
    extractions: tokio::sync::Semaphore,
}

/// The event name of the hints a move publishes for the moved page's descendants.
const ANCESTOR_MOVED: &str = "ancestor_moved";

/// The event name of the hints that send the pages including a changed page through again.
const INCLUDED_CHANGED: &str = "included_changed";

/// Whether a hint is a re-read that a change sent through (a moved page's subtree, a changed
/// page's includers), not a webhook's: it and its events travel in the bulk lane, and it waits for
/// the webhooks' pages under the rate limit, so that neither an edit nor a search (whose query
/// shares the embedder's urgent worker with live events) waits behind a cascade of them.
fn is_derived(hint: &PageHinted) -> bool {
    matches!(
        hint.webhook_event.as_deref(),
        Some(ANCESTOR_MOVED | INCLUDED_CHANGED)
    )
}

/// The lane of what a hint emits (see [`is_derived`]).
fn hint_lane(hint: &PageHinted) -> Lane {
    if is_derived(hint) {
        Lane::Bulk
    } else {
        Lane::Live
    }
}

/// Times a hint decides again after another hint (here or in another replica) changed the
/// page's record under it.
const HINT_ATTEMPTS: usize = 8;

/// How a page's record is written: a sync run's only moves forward; a hint's decision holds only
/// if the record is still at the revision the hint read.
#[derive(Debug, Clone, Copy)]
enum Commit {
    Forward,
    AtRevision(u64),
}

/// What a hint's attempt came to.
enum Decided {
    /// Committed; whether it emitted an event.
    Done(bool),
    /// Another writer changed the record first: decide again. `published` is the incarnation
    /// of what this attempt published, if anything (the winner's deletion may have purged it).
    Lost { published: Option<u64> },
}

/// The record a hint's deletion starts from: its incarnation raised to what the hint published
/// before losing a race, so that the deletion supersedes those events.
fn superseding(record: Option<&PageRecord>, published: Option<u64>) -> Option<PageRecord> {
    let Some(published) = published else {
        return record.cloned();
    };
    let mut record = record.cloned().unwrap_or_default();
    record.incarnation = record.incarnation.max(published);
    Some(record)
}

impl Fetcher {
    pub async fn new(
        bus: Bus,
        registry: SourceRegistry,
        secret_key: SecretKey,
        options: FetcherOptions,
    ) -> Result<Self, FetcherError> {
        let state = FetcherState::open(&bus).await?;
        Ok(Self {
            bus,
            registry,
            secret_key,
            state,
            sources: Mutex::new(HashMap::new()),
            extractions: tokio::sync::Semaphore::new(options.attachments.concurrency.max(1)),
            options,
        })
    }

    pub fn state(&self) -> &FetcherState {
        &self.state
    }

    /// The source's client, rebuilt when its registry record changed.
    async fn source(&self, key: &SourceKey) -> Result<Source, FetcherError> {
        let record = self
            .registry
            .get(key)
            .await?
            .ok_or_else(|| FetcherError::UnknownSource(key.to_string()))?;
        let cached = self
            .sources
            .lock()
            .ok()
            .and_then(|sources| sources.get(key).cloned())
            .filter(|cached| cached.updated_at == record.updated_at);
        let cached = match cached {
            Some(cached) => cached,
            None => {
                self.state.claim_for(&record.key, record.id).await?;
                let credentials = record.credentials(&self.secret_key)?;
                let auth = record.confluence_auth(&credentials)?;
                let mut config = ClientConfig::new(record.site_url.clone(), auth);
                config.limits.requests_per_second = Some(record.settings.requests_per_second)
                    .filter(|rate| rate.is_finite() && *rate > 0.0);
                config.limits.max_concurrent = record.settings.concurrent_requests.max(1);
                if let Some(retry) = &self.options.retry {
                    config.retry = retry.clone();
                }
                config.max_response_bytes = self.options.max_response_bytes;
                let client = ConfluenceClient::new(config)?;
                let data_center = record.auth_kind == AuthKind::DataCenter;
                let site = Site {
                    source: record.key.clone(),
                    source_id: record.id,
                    // A run sets the space it lists; a hint's page says its own.
                    space_key: record
                        .spaces
                        .keys()
                        .and_then(<[String]>::first)
                        .cloned()
                        .unwrap_or_default(),
                    spaces: record.spaces.clone(),
                    base: client.base_url().as_str().trim_end_matches('/').to_owned(),
                    data_center,
                    // Learnt from the first listing, or when a confirmation needs it.
                    space_id: None,
                };
                let cached = Arc::new(CachedSource {
                    updated_at: record.updated_at,
                    client,
                    site,
                    settings: record.settings.clone(),
                });
                if let Ok(mut sources) = self.sources.lock() {
                    sources.insert(key.clone(), cached.clone());
                }
                cached
            }
        };
        Ok(Source {
            client: cached.client.clone(),
            site: cached.site.clone(),
            settings: cached.settings.clone(),
        })
    }

    /// Runs a sync to its end and returns its final progress. Page-level failures are counted;
    /// an error means the run should be retried (transient) or cannot succeed (permanent).
    pub async fn sync(&self, request: &SyncRequested) -> Result<SyncOutcome, FetcherError> {
        let source = self.source(&request.source).await?;
        let started_at = Utc::now();
        let mut run = Run {
            fetcher: self,
            // A run's requests are background work: a webhook's page goes before them.
            client: source.client.with_fresh_stats().in_background(),
            site: source.site,
            run_id: request.run_id,
            reported_at: 0,
            failed: BTreeSet::new(),
            emitted: HashSet::new(),
            resolver: Arc::default(),
            progress: SyncProgress::new(
                request.source.clone(),
                request.run_id,
                request.mode,
                SyncStatus::Running,
                started_at,
            ),
        };
        tracing::info!(source = %request.source, run_id = %request.run_id, mode = ?request.mode, "sync started");
        run.report().await;
        let result = match request.mode {
            SyncMode::Full => run.full().await,
            SyncMode::Incremental => {
                run.incremental(&source.settings, request.reconcile_deletions)
                    .await
            }
        };
        match result {
            Ok(()) => {
                run.progress.status = SyncStatus::Completed;
                run.progress.finished_at = Some(Utc::now());
                run.publish_progress().await?;
                run.unmark().await;
                tracing::info!(
                    source = %request.source,
                    run_id = %request.run_id,
                    seen = run.progress.pages_seen,
                    changed = run.progress.pages_changed,
                    deleted = run.progress.pages_deleted,
                    failed = run.progress.pages_failed,
                    requests = run.progress.requests,
                    "sync completed"
                );
                Ok(run.progress)
            }
            Err(error) => {
                // A transient failure is retried by redelivery; only a permanent one ends the run.
                if !error.is_transient() {
                    run.progress.status = SyncStatus::Failed;
                    run.progress.finished_at = Some(Utc::now());
                }
                run.progress.last_error = Some(error.to_string());
                run.report().await;
                if !error.is_transient() {
                    run.unmark().await;
                }
                tracing::warn!(source = %request.source, run_id = %request.run_id, %error, "sync stopped");
                Err(error)
            }
        }
    }

    /// Handles a webhook hint: fetch the page (or blog post) and its comments and emit it if it
    /// changed (a new version, a restore, a move, a label or comment change), or confirm a removal
    /// and emit the deletion. A moved page's recorded descendants are hinted in turn. A page of
    /// another space (Data Center and Connect webhooks are site-wide) is never indexed into the
    /// source; a page it holds that moved to another space leaves it.
    pub async fn hint(&self, hint: &PageHinted) -> Result<(), FetcherError> {
        let source = self.source(&hint.source).await?;
        let client = if is_derived(hint) {
            source.client.in_background()
        } else {
            source.client.clone()
        };
        let emitted = self
            .apply_hint(
                hint,
                &client,
                &source.site,
                None,
                &includes::Resolver::default(),
            )
            .await?;
        // The pages that include this one are converted again with what it holds now: after an
        // emit, by its recorded state; for a page the source does not hold (another space's,
        // which pages here may include), by what the webhook says.
        let record = self.state.record(&hint.source, &hint.page_id).await?;
        let now = match record {
            Some(record) if emitted => Some(Now::of(&record)),
            None if emitted => Some(Now::Gone),
            Some(_) => None,
            None => match hint.reason {
                HintReason::Removed => Some(Now::Gone),
                HintReason::Changed => hint.version.map(|version| Now::Live {
                    version,
                    name: None,
                }),
            },
        };
        if let Some(now) = now {
            self.hint_includers(&hint.source, &hint.page_id, now)
                .await?;
        }
        Ok(())
    }

    /// [`Self::hint`] through a given client (a sync run's, which counts its requests); returns
    /// whether it emitted an event.
    ///
    /// Hints of one page may run at once, in one fetcher or in several replicas (a trash and a
    /// restore a moment apart): each decision, doing nothing included, commits only if the page's
    /// record is still at the revision it read; otherwise it is taken again on what the other
    /// wrote, so the last to commit decided on everything before it. An attempt that published
    /// before losing may have seen its events purged by the winner's deletion: the next attempts
    /// emit what Confluence holds, whatever the record says, under incarnations beyond those.
    async fn apply_hint(
        &self,
        hint: &PageHinted,
        client: &ConfluenceClient,
        site: &Site,
        run_id: Option<Uuid>,
        resolver: &includes::Resolver,
    ) -> Result<bool, FetcherError> {
        let mut published = None;
        for _ in 0..HINT_ATTEMPTS {
            let read = self.state.read_record(&hint.source, &hint.page_id).await?;
            let decided = match hint.reason {
                HintReason::Changed => {
                    self.decide_change(hint, client, site, run_id, &read, published, resolver)
                        .await?
                }
                HintReason::Removed => {
                    self.decide_removal(hint, client, site, run_id, &read, published, resolver)
                        .await?
                }
            };
            match decided {
                Decided::Done(emitted) => return Ok(emitted),
                Decided::Lost { published: now } => {
                    published = published.max(now);
                    tracing::debug!(source = %hint.source, page = %hint.page_id, "the page's record changed under its hint: deciding again");
                }
            }
        }
        Err(FetcherError::State {
            operation: "commit hint",
            reason: format!("the page's record changed under its hint {HINT_ATTEMPTS} times"),
        })
    }

    /// A change hint: fetch the page and emit it if it changed; a page gone from the source
    /// leaves it only through a removal hint or a sync, unless it moved to another space.
    #[allow(clippy::too_many_arguments)]
    async fn decide_change(
        &self,
        hint: &PageHinted,
        client: &ConfluenceClient,
        site: &Site,
        run_id: Option<Uuid>,
        read: &RecordRead,
        published: Option<u64>,
        resolver: &includes::Resolver,
    ) -> Result<Decided, FetcherError> {
        let record = read.record.as_ref();
        let known = record.and_then(PageRecord::live_version);
        // Moves, label and comment changes keep the version: only a plain edit hint can be
        // skipped on its version alone.
        let same_version_change = hint.webhook_event.as_deref().is_some_and(|event| {
            event.contains("move")
                || event.contains("label")
                || event.contains("restore")
                || event.contains("comment")
                || event.contains("attachment")
                || event == INCLUDED_CHANGED
        });
        if published.is_none()
            && !same_version_change
            && hint.version.is_some_and(|version| known >= Some(version))
        {
            return self.keep(hint, read).await;
        }
        if record.is_none()
            && hint
                .space_key
                .as_deref()
                .is_some_and(|space| !site.spaces.covers(space))
        {
            return Ok(Decided::Done(false));
        }
        let content = match client.content(&hint.page_id, SYNC_EXPAND).await {
            Ok(content) => content,
            // Gone (or hidden) since the hint: deletions are confirmed by syncs and removal
            // hints, not guessed from a change hint.
            Err(error) if error.is_not_found() => {
                return self
                    .nothing_to_emit(hint, site, run_id, read, published, 0)
                    .await;
            }
            Err(error) => return Err(error.into()),
        };
        if content.content_type.as_deref() == Some("folder") {
            // A folder is not indexed: a hint naming one (renamed or moved) goes to the pages
            // recorded under it, whose ancestors or path changed.
            self.hint_pages_under(&hint.source, &hint.page_id).await?;
            return self.keep(hint, read).await;
        }
        let Some(content_type) = indexed_type(&content) else {
            return self.keep(hint, read).await;
        };
        if matches!(
            content.status.as_deref(),
            Some("trashed" | "deleted" | "draft")
        ) {
            return self
                .nothing_to_emit(
                    hint,
                    site,
                    run_id,
                    read,
                    published,
                    content.version_number(),
                )
                .await;
        }
        let in_space = content
            .space
            .as_ref()
            .is_none_or(|space| site.spaces.covers(&space.key));
        if !in_space {
            if known.is_none() && published.is_none() {
                return self.keep(hint, read).await;
            }
            // Its subtree went along, without webhooks of its own: each descendant's hint finds
            // it in the other space too.
            if let Some(old_path) = record.and_then(|record| record.path.as_deref())
                && hint.webhook_event.as_deref() != Some(ANCESTOR_MOVED)
            {
                self.hint_descendants(&hint.source, old_path).await?;
            }
            return self
                .emit_deleted(
                    site,
                    &hint.page_id,
                    superseding(record, published).as_ref(),
                    content.version_number(),
                    "moved to another space",
                    run_id,
                    hint_lane(hint),
                    Commit::AtRevision(read.revision),
                )
                .await;
        }
        let mut changed = page_info::from_content(site, &content, content_type)?;
        let labels_known = content
            .metadata
            .as_ref()
            .is_some_and(|m| m.labels.is_some());
        let mut labels = changed.page.labels.clone();
        labels.sort();
        let listed = match fetch_comments(client, site, &mut changed).await {
            Ok(comments) => match fetch_attachments(client, site, &changed).await {
                Ok(attachments) => Ok((comments, attachments)),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        let (comments, attachments) = match listed {
            Ok(listed) => listed,
            // Gone (or hidden) since the page was read: as for the page itself.
            Err(FetcherError::Confluence(error)) if error.is_not_found() => {
                return self
                    .nothing_to_emit(hint, site, run_id, read, published, changed.page.version)
                    .await;
            }
            Err(error) => return Err(error),
        };
        let attachments_fingerprint = attachments.as_deref().map(listed_attachments_fingerprint);
        changed.included = resolver
            .resolve(client, &changed.page, &changed.body_storage)
            .await?;
        let included = includes::versions(&changed.included);
        let ancestry = page_info::ancestry_fingerprint(&changed.page.ancestors);
        let emit = incarnation_to_emit(
            record,
            changed.page.version,
            &changed.page.path,
            Facts {
                labels: labels_known.then_some(labels.as_slice()),
                comments: comments.as_deref(),
                attachments: attachments_fingerprint.as_deref(),
                ancestry: Some(&ancestry),
                included: Some(&included),
            },
        );
        let incarnation = match published {
            None => emit,
            Some(published) => Some(
                emit.unwrap_or(0)
                    .max(published + 1)
                    .max(record.map_or(0, |record| record.incarnation + 1)),
            ),
        };
        let Some(incarnation) = incarnation else {
            return self.keep(hint, read).await;
        };
        // A move takes the page's subtree along without a version or a webhook of theirs: each
        // descendant is hinted, before the page is recorded at its new place (a crash in between
        // hints them again when the move's hint comes back). A descendant's own hint has no
        // subtree left to hint: the first covered it.
        if let Some(old_path) = record
            .and_then(|record| record.path.as_deref())
            .filter(|old_path| *old_path != changed.page.path)
            && hint.webhook_event.as_deref() != Some(ANCESTOR_MOVED)
        {
            self.hint_descendants(&hint.source, old_path).await?;
        }
        let attachments_known = attachments.is_some();
        changed.attachments = self
            .attachment_texts(client, site, attachments.unwrap_or_default())
            .await?;
        self.emit_changed(
            changed,
            incarnation,
            labels_known,
            comments.is_some(),
            attachments_known,
            run_id,
            hint_lane(hint),
            Commit::AtRevision(read.revision),
        )
        .await
    }

    /// A removal hint: confirm the page is gone and emit its deletion.
    #[allow(clippy::too_many_arguments)]
    async fn decide_removal(
        &self,
        hint: &PageHinted,
        client: &ConfluenceClient,
        site: &Site,
        run_id: Option<Uuid>,
        read: &RecordRead,
        published: Option<u64>,
        resolver: &includes::Resolver,
    ) -> Result<Decided, FetcherError> {
        // What the fetcher emitted knows the type best; the webhook's word otherwise.
        let content_type = read
            .record
            .as_ref()
            .map_or(hint.content_type, |record| record.content_type);
        match confirm_gone(client, site, &hint.page_id, content_type).await? {
            Presence::Gone { version } => {
                let version = version.or(hint.version).unwrap_or(0);
                self.emit_deleted(
                    site,
                    &hint.page_id,
                    superseding(read.record.as_ref(), published).as_ref(),
                    version,
                    "removed",
                    run_id,
                    hint_lane(hint),
                    Commit::AtRevision(read.revision),
                )
                .await
            }
            Presence::Present if published.is_none() => self.keep(hint, read).await,
            // This hint's deletion went out, then the page came back (a restore that raced it):
            // the page is emitted again, over that deletion.
            Presence::Present => {
                self.decide_change(hint, client, site, run_id, read, published, resolver)
                    .await
            }
        }
    }

    /// A change hint found nothing to emit (the page gone, trashed, a draft): nothing to do,
    /// unless this hint published the page before losing a race (then the deletion supersedes
    /// it).
    async fn nothing_to_emit(
        &self,
        hint: &PageHinted,
        site: &Site,
        run_id: Option<Uuid>,
        read: &RecordRead,
        published: Option<u64>,
        version: u64,
    ) -> Result<Decided, FetcherError> {
        if published.is_none() {
            return self.keep(hint, read).await;
        }
        self.emit_deleted(
            site,
            &hint.page_id,
            superseding(read.record.as_ref(), published).as_ref(),
            version,
            "removed",
            run_id,
            hint_lane(hint),
            Commit::AtRevision(read.revision),
        )
        .await
    }

    /// Commits a decision to do nothing: the record is written again as read, so that a hint that
    /// changed it meanwhile makes this one decide again. Without a record there is nothing to
    /// hold: nothing was emitted for the page.
    async fn keep(&self, hint: &PageHinted, read: &RecordRead) -> Result<Decided, FetcherError> {
        let Some(record) = &read.record else {
            return Ok(Decided::Done(false));
        };
        let kept = self
            .state
            .commit_record(&hint.source, &hint.page_id, record, read.revision)
            .await?;
        Ok(match kept {
            Some(_) => Decided::Done(false),
            None => Decided::Lost { published: None },
        })
    }

    /// Hints every live page recorded under `old_path` (a moved page's subtree) as moved.
    async fn hint_descendants(
        &self,
        source: &SourceKey,
        old_path: &str,
    ) -> Result<(), FetcherError> {
        let below = format!("{old_path}/");
        let hinted = self
            .hint_recorded(source, ANCESTOR_MOVED, |_, record| {
                record
                    .path
                    .as_deref()
                    .is_some_and(|path| path.starts_with(&below))
            })
            .await?;
        if hinted > 0 {
            tracing::info!(%source, old_path, descendants = hinted, "hinted a moved page's subtree");
        }
        Ok(())
    }

    /// Hints every live page recorded under a folder (renamed or moved) as moved.
    async fn hint_pages_under(
        &self,
        source: &SourceKey,
        folder: &PageId,
    ) -> Result<(), FetcherError> {
        let inside = format!("/{folder}/");
        let hinted = self
            .hint_recorded(source, ANCESTOR_MOVED, |_, record| {
                record
                    .path
                    .as_deref()
                    .is_some_and(|path| path.contains(&inside))
            })
            .await?;
        tracing::info!(%source, %folder, pages = hinted, "hinted the pages under a folder");
        Ok(())
    }

    /// Hints every live page whose record [`includes::is_stale`] given what `page` is `now`
    /// (it changed, went or was renamed since they included it, or took a name they include),
    /// so that each is converted again with what it includes now.
    async fn hint_includers(
        &self,
        source: &SourceKey,
        page: &PageId,
        now: Now,
    ) -> Result<(), FetcherError> {
        let name = now.name().map(str::to_owned);
        let hinted = self
            .hint_recorded(source, INCLUDED_CHANGED, |_, record| {
                includes::is_stale(
                    record,
                    |included| (included == page).then(|| now.clone()),
                    |named| (Some(named) == name.as_deref()).then(|| page.clone()),
                )
            })
            .await?;
        if hinted > 0 {
            tracing::info!(%source, %page, includers = hinted, "hinted the pages that include a changed page");
        }
        Ok(())
    }

    /// Hints (as `event`) every live page recorded in the source that `wanted` picks; returns
    /// how many.
    async fn hint_recorded(
        &self,
        source: &SourceKey,
        event: &str,
        wanted: impl Fn(&PageId, &PageRecord) -> bool,
    ) -> Result<usize, FetcherError> {
        let records = self.state.records(source).await?;
        let mut hinted = 0;
        for (page, record) in &records {
            if record.live_version().is_none() || !wanted(page, record) {
                continue;
            }
            let hint = PageHinted {
                source: source.clone(),
                page_id: page.clone(),
                content_type: record.content_type,
                reason: HintReason::Changed,
                version: None,
                space_key: None,
                webhook_event: Some(event.into()),
                received_at: Utc::now(),
            };
            // In the bulk lane: the hints stage takes a webhook's hint behind a cascade of these.
            self.bus
                .publish_in(Lane::Bulk, &Envelope::new(hint))
                .await?;
            hinted += 1;
        }
        Ok(hinted)
    }

    /// Publishes a page's new state, then records it: a crash in between re-publishes the same
    /// event id, which JetStream drops as a duplicate.
    #[allow(clippy::too_many_arguments)]
    async fn emit_changed(
        &self,
        mut changed: PageChanged,
        incarnation: u64,
        labels_known: bool,
        comments_known: bool,
        attachments_known: bool,
        run_id: Option<Uuid>,
        lane: Lane,
        commit: Commit,
    ) -> Result<Decided, FetcherError> {
        changed.page.incarnation = incarnation;
        changed.page.labels.sort();
        let source = changed.page.source.clone();
        let page = changed.page.page_id.clone();
        let record = PageRecord {
            version: changed.page.version,
            content_type: changed.page.content_type,
            incarnation,
            path: Some(changed.page.path.clone()),
            labels: labels_known.then(|| changed.page.labels.clone()),
            space_key: Some(changed.page.space_key.clone()),
            comments: comments_known.then(|| page_info::comments_fingerprint(&changed.comments)),
            attachments: attachments_known
                .then(|| emitted_attachments_fingerprint(&changed.attachments)),
            ancestry: Some(page_info::ancestry_fingerprint(&changed.page.ancestors)),
            included: Some(includes::versions(&changed.included))
                .filter(|included| !included.is_empty()),
            included_names: Some(includes::names(&changed.included))
                .filter(|names| !names.is_empty()),
            title: Some(changed.page.title.clone()),
            deleted: false,
            deleting: false,
            source_id: changed.page.source_id,
        };
        self.bus
            .publish_in(lane, &Envelope::new(changed).with_sync_run(run_id))
            .await?;
        Ok(match self.record(&source, &page, &record, commit).await? {
            Some(_) => Decided::Done(true),
            None => Decided::Lost {
                published: Some(incarnation),
            },
        })
    }

    /// Writes a page's record as `commit` says, and returns how a next write of the same decision
    /// commits; none when a hint lost the race (a sync run's record only moves forward).
    async fn record(
        &self,
        source: &SourceKey,
        page: &PageId,
        record: &PageRecord,
        commit: Commit,
    ) -> Result<Option<Commit>, FetcherError> {
        match commit {
            Commit::Forward => {
                self.state.set_record(source, page, record).await?;
                Ok(Some(Commit::Forward))
            }
            Commit::AtRevision(revision) => Ok(self
                .state
                .commit_record(source, page, record, revision)
                .await?
                .map(Commit::AtRevision)),
        }
    }

    /// Adds to a page's event what the listing that found it did not carry (its comments, its
    /// attachments and their text), then emits it.
    async fn complete_and_emit(
        &self,
        client: &ConfluenceClient,
        site: &Site,
        mut emit: PageToEmit,
        run_id: Uuid,
        lane: Lane,
        resolver: &includes::Resolver,
    ) -> Result<(), FetcherError> {
        let comments_known = if emit.comments_known {
            true
        } else {
            fetch_comments(client, site, &mut emit.changed)
                .await?
                .is_some()
        };
        let attachments = match emit.attachments.take() {
            Some(listed) => Some(listed),
            None => fetch_attachments(client, site, &emit.changed).await?,
        };
        let attachments_known = attachments.is_some();
        emit.changed.attachments = self
            .attachment_texts(client, site, attachments.unwrap_or_default())
            .await?;
        emit.changed.included = resolver
            .resolve(client, &emit.changed.page, &emit.changed.body_storage)
            .await?;
        self.emit_changed(
            emit.changed,
            emit.incarnation,
            emit.labels_known,
            comments_known,
            attachments_known,
            Some(run_id),
            lane,
            Commit::Forward,
        )
        .await
        .map(|_| ())
    }

    /// The attachments of a page's event, each with its text: extracted again only when its
    /// version differs from the one recorded (see [`Self::attachment_text`]). An attachment gone
    /// since it was listed is left out.
    async fn attachment_texts(
        &self,
        client: &ConfluenceClient,
        site: &Site,
        mut listed: Vec<AttachmentRef>,
    ) -> Result<Vec<PageAttachment>, FetcherError> {
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        let mut attachments = Vec::with_capacity(listed.len());
        for attachment in listed {
            let Some(text) = self.attachment_text(client, site, &attachment).await? else {
                continue;
            };
            attachments.push(PageAttachment {
                id: attachment.id,
                file_name: attachment.file_name,
                media_type: attachment.media_type,
                version: attachment.version,
                file_size: attachment.file_size,
                url: attachment.url,
                text,
            });
        }
        Ok(attachments)
    }

    /// An attachment's text: skipped by type or size (from the listing, without a download),
    /// what was recorded for this version, or downloaded (under the size cap) and extracted on a
    /// blocking thread, then recorded. A file that cannot be parsed is a permanent failure of
    /// this version of the attachment alone: recorded, logged, and shown with its page. None
    /// when the file is gone.
    async fn attachment_text(
        &self,
        client: &ConfluenceClient,
        site: &Site,
        attachment: &AttachmentRef,
    ) -> Result<Option<AttachmentText>, FetcherError> {
        let options = &self.options.attachments;
        let over_cap =
            || AttachmentText::Skipped(format!("over the size cap of {} bytes", options.max_bytes));
        let Some(kind) = FileKind::of(&attachment.file_name, attachment.media_type.as_deref())
            .filter(|kind| options.kinds.contains(kind))
        else {
            return Ok(Some(AttachmentText::Skipped("type not indexed".into())));
        };
        if attachment
            .file_size
            .is_some_and(|size| size > options.max_bytes as u64)
        {
            return Ok(Some(over_cap()));
        }
        if let Some(record) = self.state.attachment(&site.source, &attachment.id).await?
            && record.version == attachment.version
        {
            return Ok(Some(record.text));
        }
        let Some(link) = attachment.download.as_deref() else {
            return Ok(Some(AttachmentText::Skipped(
                "confluence gave no download link".into(),
            )));
        };
        let text = {
            let _permit = self
                .extractions
                .acquire()
                .await
                .map_err(|_| FetcherError::InvalidPage("extraction limiter closed".into()))?;
            let data = match client.download(link, options.max_bytes).await {
                Ok(data) => data,
                Err(error) if error.is_not_found() => return Ok(None),
                Err(ConfluenceError::ResponseTooLarge { .. }) => return Ok(Some(over_cap())),
                Err(error) => return Err(error.into()),
            };
            match tokio::task::spawn_blocking(move || extract::extract(kind, &data)).await {
                Ok(Ok(text)) => AttachmentText::Extracted(text),
                Ok(Err(error)) => AttachmentText::Failed(error.to_string()),
                // A parser that panics on a hostile file fails that file alone.
                Err(_) => AttachmentText::Failed(format!("the {kind} parser gave up on the file")),
            }
        };
        if let AttachmentText::Failed(reason) = &text {
            tracing::warn!(
                source = %site.source,
                attachment = %attachment.id,
                file = %attachment.file_name,
                version = attachment.version,
                %reason,
                "attachment text cannot be extracted"
            );
        }
        let record = AttachmentRecord {
            version: attachment.version,
            text: text.clone(),
        };
        self.state
            .set_attachment(&site.source, &attachment.id, &record)
            .await?;
        Ok(Some(text))
    }

    /// Marks the page as being deleted, publishes the deletion, purges what the streams hold for
    /// the page (so that a replay cannot bring it back), then records the tombstone (so that a
    /// restore of the same version is told apart from the deleted page). The mark covers a crash
    /// after the publish: without it the record would still say live, and a restore of the same
    /// version would look like no change while the projection holds the tombstone.
    #[allow(clippy::too_many_arguments)]
    async fn emit_deleted(
        &self,
        site: &Site,
        page: &PageId,
        record: Option<&PageRecord>,
        version: u64,
        reason: &str,
        run_id: Option<Uuid>,
        lane: Lane,
        commit: Commit,
    ) -> Result<Decided, FetcherError> {
        let version = record.map_or(version, |record| record.version.max(version));
        let incarnation = record.map_or(0, |record| record.incarnation);
        let marked = PageRecord {
            version,
            deleting: true,
            source_id: Some(site.source_id),
            ..record.cloned().unwrap_or_default()
        };
        let Some(then) = self.record(&site.source, page, &marked, commit).await? else {
            return Ok(Decided::Lost { published: None });
        };
        let deleted = PageDeleted {
            source: site.source.clone(),
            page_id: page.clone(),
            version,
            space_key: record
                .and_then(|record| record.space_key.clone())
                .or_else(|| Some(site.space_key.clone()).filter(|key| !key.is_empty())),
            deleted_at: Utc::now(),
            reason: Some(reason.to_owned()),
            incarnation,
            source_id: Some(site.source_id),
        };
        self.bus
            .publish_in(lane, &Envelope::new(deleted).with_sync_run(run_id))
            .await?;
        self.bus.purge_page(&site.source, page).await?;
        let tombstone = PageRecord {
            version,
            content_type: marked.content_type,
            incarnation,
            deleted: true,
            source_id: Some(site.source_id),
            ..PageRecord::default()
        };
        Ok(
            match self.record(&site.source, page, &tombstone, then).await? {
                Some(_) => Decided::Done(true),
                None => Decided::Lost {
                    published: Some(incarnation),
                },
            },
        )
    }
}

/// Fetches a page's comments into its event (Cloud: Data Center has no v2 comment listings) and
/// returns their fingerprint, or none where comments are not fetched.
async fn fetch_comments(
    client: &ConfluenceClient,
    site: &Site,
    changed: &mut PageChanged,
) -> Result<Option<String>, FetcherError> {
    if site.data_center {
        return Ok(None);
    }
    let listed = client
        .comments(changed.page.content_type, &changed.page.page_id)
        .await?;
    changed.comments = page_info::comments(listed);
    Ok(Some(page_info::comments_fingerprint(&changed.comments)))
}

/// A page's current attachments from its v2 listing (Cloud: Data Center has no v2 listings), or
/// none where attachments are not fetched.
async fn fetch_attachments(
    client: &ConfluenceClient,
    site: &Site,
    changed: &PageChanged,
) -> Result<Option<Vec<AttachmentRef>>, FetcherError> {
    if site.data_center {
        return Ok(None);
    }
    let listed = client
        .attachments(changed.page.content_type, &changed.page.page_id)
        .await?;
    Ok(Some(
        listed
            .into_iter()
            .filter_map(|attachment| page_info::attachment_from_v2(site, attachment))
            .collect(),
    ))
}

/// What Confluence says of a page a listing no longer shows or a removal hint named.
enum Presence {
    /// Trashed, purged, or moved to another space; the version when Confluence still shows it.
    Gone {
        version: Option<u64>,
    },
    Present,
}

/// Whether a page (or blog post, `content_type`) is really gone from the source: on Cloud a 404
/// may also mean "no permission", so callers only ask about pages the space listing no longer
/// shows, or that a removal hint named.
async fn confirm_gone(
    client: &ConfluenceClient,
    site: &Site,
    page: &PageId,
    content_type: ContentType,
) -> Result<Presence, FetcherError> {
    let found = if site.data_center {
        client
            .content(page, &["version", "space"])
            .await
            .map(|found| {
                let version = found.version_number();
                let space = found.space.map(|space| SpaceOf::Key(space.key));
                (found.status, version, space)
            })
    } else {
        client.content_v2(content_type, page).await.map(|found| {
            let version = found.version_number();
            (found.status, version, found.space_id.map(SpaceOf::Id))
        })
    };
    match found {
        Ok((status, version, space)) => {
            let elsewhere = match space {
                Some(SpaceOf::Key(key)) => !site.spaces.covers(&key),
                Some(SpaceOf::Id(id)) => {
                    site.space_id.as_ref() != Some(&id)
                        && !spaces::covers_space_id(client, site, &id).await?
                }
                None => false,
            };
            if elsewhere || matches!(status.as_deref(), Some("trashed" | "deleted")) {
                Ok(Presence::Gone {
                    version: (version > 0).then_some(version),
                })
            } else {
                Ok(Presence::Present)
            }
        }
        Err(error) if error.is_not_found() => Ok(Presence::Gone { version: None }),
        Err(error) => Err(error.into()),
    }
}

enum SpaceOf {
    Key(String),
    Id(SpaceId),
}

/// Comments by the page they are on.
type CommentsByPage = HashMap<PageId, Vec<PageComment>>;

/// A page's event to emit.
struct PageToEmit {
    changed: PageChanged,
    incarnation: u64,
    /// Confluence sent the page's labels.
    labels_known: bool,
    /// The event carries the page's comments as a listing of the space's comments showed them;
    /// otherwise they are fetched for the page before it is emitted (where the source can).
    comments_known: bool,
    /// The page's attachments as a listing of the space's attachments showed them; none when
    /// they are listed for the page before it is emitted (where the source can).
    attachments: Option<Vec<AttachmentRef>>,
}

/// One sync run in progress.
struct Run<'a> {
    fetcher: &'a Fetcher,
    /// This run's view of the source's client: its own statistics, the shared rate limiter.
    client: ConfluenceClient,
    site: Site,
    run_id: Uuid,
    progress: SyncProgress,
    /// Pages handled when progress was last published.
    reported_at: u64,
    /// Pages that failed in this run: the next incremental run fetches them again.
    failed: BTreeSet<PageId>,
    /// Pages this run emitted (with their comments as they stood).
    emitted: HashSet<PageId>,
    /// The pages included by this run's pages, fetched once for all of them.
    resolver: Arc<includes::Resolver>,
}

impl Run<'_> {
    /// A full sync's events travel in the bulk lane; an incremental one's are what people wait
    /// for.
    fn lane(&self) -> Lane {
        match self.progress.mode {
            SyncMode::Full => Lane::Bulk,
            SyncMode::Incremental => Lane::Live,
        }
    }

    fn handled(&self) -> u64 {
        let p = &self.progress;
        p.pages_seen + p.pages_changed + p.pages_deleted + p.pages_failed
    }

    async fn publish_progress(&mut self) -> Result<(), FetcherError> {
        let stats = self.client.stats();
        self.progress.requests = stats.requests;
        self.progress.rate_limit_wait_ms = stats.waited().as_millis() as u64;
        self.progress.updated_at = Utc::now();
        self.reported_at = self.handled();
        self.fetcher.bus.publish_progress(&self.progress).await?;
        Ok(())
    }

    /// Publishes progress and marks the run as in progress for the scheduler; a failure only
    /// delays the next snapshot.
    async fn report(&mut self) {
        if let Err(error) = self.publish_progress().await {
            tracing::warn!(run_id = %self.run_id, %error, "cannot publish sync progress");
        }
        let in_flight = RunInFlight {
            run_id: self.run_id,
            reported_at: self.progress.updated_at,
        };
        if let Err(error) = self
            .fetcher
            .state
            .set_running(&self.progress.source, &in_flight)
            .await
        {
            tracing::warn!(run_id = %self.run_id, %error, "cannot mark the sync run in progress");
        }
    }

    /// Lifts the in-progress mark of a run that ended (a stale mark only delays scheduling).
    async fn unmark(&self) {
        if let Err(error) = self
            .fetcher
            .state
            .clear_running(&self.progress.source, self.run_id)
            .await
        {
            tracing::warn!(run_id = %self.run_id, %error, "cannot unmark the ended sync run");
        }
    }

    async fn report_if_due(&mut self) {
        if self.handled() - self.reported_at >= self.fetcher.options.progress_every {
            self.report().await;
        }
    }

    /// Counts a page that could not be emitted; transient errors end the run instead (it is
    /// redelivered and resumes), since skipping the page would lose it.
    fn page_failed(&mut self, page: &PageId, error: FetcherError) -> Result<(), FetcherError> {
        if error.is_transient() {
            return Err(error);
        }
        tracing::warn!(run_id = %self.run_id, page = %page, %error, "page skipped");
        self.failed.insert(page.clone());
        self.progress.pages_failed += 1;
        self.progress.last_error = Some(error.to_string());
        Ok(())
    }

    fn space_key(&self) -> Result<SpaceKey, FetcherError> {
        Ok(SpaceKey::new(self.site.space_key.clone())?)
    }

    /// Every current page and blog post of the space: ids, versions, parents and titles, without
    /// bodies.
    async fn list_space(&mut self) -> Result<Tree, FetcherError> {
        let mut tree = Tree::default();
        if self.site.data_center {
            let cql = CqlQuery::content_in_space(self.space_key()?);
            let mut search = self
                .client
                .search(&cql.to_string(), LISTING_EXPAND, MAX_LIMIT);
            while let Some(batch) = search.next_page().await? {
                for content in &batch {
                    if let Some(content_type) = indexed_type(content) {
                        tree.insert_content(content, content_type);
                    }
                }
                self.progress.pages_seen += batch.len() as u64;
                self.report_if_due().await;
            }
        } else {
            let space = self.client.space_by_key(&self.space_key()?).await?;
            self.site.space_id = Some(space.id.clone());
            for content_type in ContentType::ALL {
                let mut listing = match content_type {
                    ContentType::Page => {
                        self.client.space_pages(&space.id, &ListOptions::default())
                    }
                    ContentType::Blogpost => self
                        .client
                        .space_blog_posts(&space.id, &ListOptions::default()),
                };
                while let Some(batch) = listing.next_page().await? {
                    for page in &batch {
                        tree.insert_page(page, content_type);
                    }
                    self.progress.pages_seen += batch.len() as u64;
                    self.report_if_due().await;
                }
            }
            self.list_folders(&mut tree).await?;
            // The v2 listings and bulk bodies carry no labels, and a label change creates no
            // version: one CQL pass with labels only (250 items a request) tells them.
            let cql = CqlQuery::content_in_space(self.space_key()?);
            let mut labelled =
                self.client
                    .search(&cql.to_string(), &["metadata.labels"], MAX_LIMIT);
            while let Some(batch) = labelled.next_page().await? {
                for content in &batch {
                    let mut labels = content.label_names();
                    labels.sort();
                    tree.set_labels(&content.id, labels);
                }
            }
        }
        Ok(tree)
    }

    /// The folders above the listed pages (Cloud), one request each, up to the space's root:
    /// a page's path and ancestors run through them. A folder Confluence does not show (gone
    /// since the listing, or hidden) ends its branch of the chain.
    async fn list_folders(&mut self, tree: &mut Tree) -> Result<(), FetcherError> {
        let mut missing = BTreeSet::new();
        loop {
            let unknown: Vec<PageId> = tree
                .unknown_folders()
                .into_iter()
                .filter(|folder| !missing.contains(folder))
                .collect();
            if unknown.is_empty() {
                return Ok(());
            }
            for folder in unknown {
                match self.client.folder(&folder).await {
                    Ok(found) => tree.insert_folder(&found),
                    Err(error) if error.is_not_found() => {
                        missing.insert(folder);
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
    }

    async fn full(&mut self) -> Result<(), FetcherError> {
        let started_at = self.progress.started_at;
        let known = self.fetcher.state.records(&self.site.source).await?;
        let spaces = self.resolve_spaces().await?;
        let mut tree = Tree::default();
        for space in &spaces {
            self.enter_space(space);
            tree.extend(self.sync_whole_space(&known).await?);
        }
        self.reconcile(&tree, &known).await?;
        self.reread_includers().await?;
        let state = &self.fetcher.state;
        state.set_reconciled(&self.site.source, started_at).await?;
        state.set_spaces(&self.site.source, &spaces).await?;
        state
            .set_failed_pages(&self.site.source, &self.failed)
            .await?;
        // An incremental run after this one only needs what changed since it started.
        state.set_watermark(&self.site.source, started_at).await
    }

    /// Lists the space cheaply and its comments, then fetches bodies in bulk (pages and blog posts
    /// at their own endpoints) for the items whose version, place, life (a restore) or comments
    /// differ from what was emitted.
    async fn list_and_fetch(
        &mut self,
        known: &HashMap<PageId, PageRecord>,
    ) -> Result<Tree, FetcherError> {
        let tree = self.list_space().await?;
        let listed = self.space_comments(false).await?;
        let mut attachments = self.space_attachments().await?;
        let no_comments = Vec::new();
        let no_attachments = Vec::new();
        let wanted: HashMap<PageId, u64> = tree
            .versions()
            .filter_map(|(id, version)| {
                let path = page_info::path(&tree.ancestors(id), id);
                let comments =
                    page_info::comments_fingerprint(listed.get(id).unwrap_or(&no_comments));
                let attached =
                    listed_attachments_fingerprint(attachments.get(id).unwrap_or(&no_attachments));
                let ancestry = page_info::ancestry_fingerprint(&tree.ancestors(id));
                incarnation_to_emit(
                    known.get(id),
                    version,
                    &path,
                    Facts {
                        labels: tree.labels(id),
                        comments: Some(&comments),
                        attachments: Some(&attached),
                        ancestry: Some(&ancestry),
                        included: None,
                    },
                )
                .map(|incarnation| (id.clone(), incarnation))
            })
            .collect();
        tracing::info!(run_id = %self.run_id, listed = tree.len(), known = known.len(), wanted = wanted.len(), "space listed");
        // The wanted pages' comment bodies: from one search of the whole space's comments (50 a
        // request), or from each page's own listings (two requests and one per thread), whichever
        // costs fewer requests. Pages without comments need neither.
        let per_page: usize = wanted
            .keys()
            .filter_map(|id| listed.get(id))
            .map(|comments| 2 + comments.iter().filter(|c| c.parent_id.is_none()).count())
            .sum();
        let whole_space = listed
            .values()
            .map(Vec::len)
            .sum::<usize>()
            .div_ceil(SEARCH_LIMIT as usize);
        let mut comments = if per_page > whole_space {
            Some(self.space_comments(true).await?)
        } else {
            None
        };
        let mut ids: Vec<PageId> = wanted.keys().cloned().collect();
        ids.sort();
        for content_type in ContentType::ALL {
            let of_type: Vec<PageId> = ids
                .iter()
                .filter(|id| tree.content_type(id) == content_type)
                .cloned()
                .collect();
            for ids in of_type.chunks(MAX_LIMIT as usize) {
                self.fetch_and_emit(
                    content_type,
                    ids,
                    &tree,
                    &wanted,
                    (&listed, &mut comments),
                    &mut attachments,
                )
                .await?;
            }
        }
        Ok(tree)
    }

    /// Every comment of the space, by the page it is on, each page's in canonical order: with
    /// their bodies (50 a request), or without (250 a request, enough for their fingerprint).
    async fn space_comments(
        &mut self,
        with_bodies: bool,
    ) -> Result<HashMap<PageId, Vec<PageComment>>, FetcherError> {
        let cql = CqlQuery::comments_in_space(self.space_key()?);
        let mut by_page: HashMap<PageId, Vec<PageComment>> = HashMap::new();
        let mut search = if with_bodies {
            self.client
                .search(&cql.to_string(), COMMENT_EXPAND, SEARCH_LIMIT)
        } else {
            self.client
                .search(&cql.to_string(), COMMENT_LISTING_EXPAND, MAX_LIMIT)
        };
        while let Some(batch) = search.next_page().await? {
            for (page, comment) in batch.iter().filter_map(page_info::comment_from_content) {
                by_page.entry(page).or_default().push(comment);
            }
        }
        Ok(by_page
            .into_iter()
            .map(|(page, comments)| (page, page_info::canonical(comments)))
            .collect())
    }

    /// Every current attachment of the space, by the page it is attached to (250 a request,
    /// without bodies: media type, size and download link come with each).
    async fn space_attachments(
        &mut self,
    ) -> Result<HashMap<PageId, Vec<AttachmentRef>>, FetcherError> {
        let cql = CqlQuery::attachments_in_space(self.space_key()?);
        let mut by_page: HashMap<PageId, Vec<AttachmentRef>> = HashMap::new();
        let mut search =
            self.client
                .search_attachments(&cql.to_string(), ATTACHMENT_LISTING_EXPAND, MAX_LIMIT);
        while let Some(batch) = search.next_page().await? {
            for content in &batch {
                if let Some((page, attachment)) =
                    page_info::attachment_from_content(&self.site, content)
                {
                    by_page.entry(page).or_default().push(attachment);
                }
            }
        }
        Ok(by_page)
    }

    /// Fetches one batch of bodies of one type and emits them with their comments.
    async fn fetch_and_emit(
        &mut self,
        content_type: ContentType,
        ids: &[PageId],
        tree: &Tree,
        wanted: &HashMap<PageId, u64>,
        (listed, comments): (&CommentsByPage, &mut Option<CommentsByPage>),
        attachments: &mut HashMap<PageId, Vec<AttachmentRef>>,
    ) -> Result<(), FetcherError> {
        // Ids missing from the answer were removed since the listing: the next run deletes them.
        let bulk = match content_type {
            ContentType::Page => self.client.pages_by_id(ids).await?,
            ContentType::Blogpost => self.client.blog_posts_by_id(ids).await?,
        };
        // A page over the response bound fails alone (the next run tries it again).
        for (page, error) in bulk.too_large {
            self.page_failed(&page, error.into())?;
        }
        // The pages these include, in bulk, before each resolves its own.
        let bodies = bulk
            .pages
            .iter()
            .filter_map(|page| page.storage().map(str::to_owned))
            .collect();
        self.resolver
            .prefetch(
                &self.client,
                &self.site.space_key,
                &tree.page_titles(),
                bodies,
            )
            .await?;
        let changes: Vec<_> = bulk
            .pages
            .iter()
            .map(|page| {
                let incarnation = wanted.get(&page.id).copied().unwrap_or(0);
                let labels = tree.labels(&page.id);
                // Known here unless the page has comments whose bodies were not searched.
                let page_comments = match comments.as_mut() {
                    Some(comments) => Some(comments.remove(&page.id).unwrap_or_default()),
                    None => (!listed.contains_key(&page.id)).then(Vec::new),
                };
                // The listing of the space's attachments is complete: a page it does not name
                // has none.
                let page_attachments = attachments.remove(&page.id).unwrap_or_default();
                let changed =
                    page_info::from_page(&self.site, page, content_type, tree.ancestors(&page.id))
                        .map(|mut changed| {
                            if let Some(labels) = labels {
                                changed.page.labels = labels.to_vec();
                            }
                            let comments_known = page_comments.is_some();
                            changed.comments = page_comments.unwrap_or_default();
                            PageToEmit {
                                changed,
                                incarnation,
                                labels_known: labels.is_some() || page.labels.is_some(),
                                comments_known,
                                attachments: Some(page_attachments),
                            }
                        });
                (page.id.clone(), changed)
            })
            .collect();
        self.emit_all(changes).await
    }

    /// The pages whose comments changed within an incremental window (Cloud), read again with
    /// their comments and emitted if these differ from what was emitted: a comment changes no
    /// page version, so the page window does not show it. One request when nothing changed;
    /// a removed comment shows in no window (its webhook or the next reconciliation tells).
    async fn comments_window(&mut self, cql: CqlQuery) -> Result<(), FetcherError> {
        let mut pages = BTreeSet::new();
        let mut search = self
            .client
            .search(&cql.to_string(), &["container"], MAX_LIMIT);
        while let Some(batch) = search.next_page().await? {
            pages.extend(
                batch
                    .iter()
                    .filter_map(|content| content.container.as_ref())
                    .map(|container| container.id.clone()),
            );
        }
        self.read_again(pages, "comment_updated").await
    }

    /// The same for the pages whose attachments were added or changed within the window (a
    /// removed one shows in no window: its webhook or the next reconciliation tells).
    async fn attachments_window(&mut self, cql: CqlQuery) -> Result<(), FetcherError> {
        let mut pages = BTreeSet::new();
        let mut search =
            self.client
                .search_attachments(&cql.to_string(), &["container"], MAX_LIMIT);
        while let Some(batch) = search.next_page().await? {
            pages.extend(
                batch
                    .iter()
                    .filter_map(|content| content.container.as_ref())
                    .map(|container| container.id.clone()),
            );
        }
        self.read_again(pages, "attachment_updated").await
    }

    /// Reads pages this run did not emit yet again, as a hint of `event` would, and emits those
    /// that changed.
    async fn read_again(
        &mut self,
        pages: BTreeSet<PageId>,
        event: &str,
    ) -> Result<(), FetcherError> {
        for page in pages {
            if self.emitted.contains(&page) {
                continue;
            }
            let hint = PageHinted {
                source: self.site.source.clone(),
                page_id: page.clone(),
                content_type: ContentType::Page,
                reason: HintReason::Changed,
                version: None,
                space_key: None,
                webhook_event: Some(event.into()),
                received_at: Utc::now(),
            };
            match self
                .fetcher
                .apply_hint(
                    &hint,
                    &self.client,
                    &self.site,
                    Some(self.run_id),
                    &self.resolver,
                )
                .await
            {
                Ok(true) => {
                    self.progress.pages_changed += 1;
                    self.emitted.insert(page);
                }
                Ok(false) => {}
                Err(error) => self.page_failed(&page, error)?,
            }
            self.report_if_due().await;
        }
        Ok(())
    }

    /// Reads again the live pages of the source whose included content differs from what they
    /// were emitted with ([`includes::is_stale`] on the source's records): an included page
    /// changed, went or was renamed, or a page took a name they include, without a version of
    /// theirs.
    async fn reread_includers(&mut self) -> Result<(), FetcherError> {
        let records = self.fetcher.state.records(&self.site.source).await?;
        let now: HashMap<&PageId, Now> = records
            .iter()
            .map(|(page, record)| (page, Now::of(record)))
            .collect();
        let holders: HashMap<&str, &PageId> = now
            .iter()
            .filter_map(|(page, now)| Some((now.name()?, *page)))
            .collect();
        let stale: BTreeSet<PageId> = records
            .iter()
            .filter(|(_, record)| record.live_version().is_some())
            .filter(|(_, record)| {
                includes::is_stale(
                    record,
                    |page| now.get(page).cloned(),
                    |name| holders.get(name).map(|page| (*page).clone()),
                )
            })
            .map(|(page, _)| page.clone())
            .collect();
        if !stale.is_empty() {
            tracing::info!(run_id = %self.run_id, includers = stale.len(), "reading again the pages whose included pages changed");
        }
        self.read_again(stale, INCLUDED_CHANGED).await
    }

    /// Runs a CQL search with bodies and emits what differs from what was emitted; returns what
    /// it saw.
    async fn search_and_emit(
        &mut self,
        cql: &CqlQuery,
        known: &HashMap<PageId, PageRecord>,
    ) -> Result<Tree, FetcherError> {
        let mut tree = Tree::default();
        let mut search = self
            .client
            .search(&cql.to_string(), SYNC_EXPAND, SEARCH_LIMIT);
        while let Some(batch) = search.next_page().await? {
            self.progress.pages_seen += batch.len() as u64;
            let mut changes = Vec::new();
            for content in &batch {
                let Some(content_type) = indexed_type(content) else {
                    continue;
                };
                tree.insert_content(content, content_type);
                changes.extend(self.change_of(content, content_type, known));
            }
            self.emit_all(changes).await?;
        }
        Ok(tree)
    }

    /// What a page's content asks to emit: nothing when the fetcher already emitted it as it
    /// stands, else the page's next version or incarnation (or why it cannot be emitted).
    fn change_of(
        &self,
        content: &Content,
        content_type: ContentType,
        known: &HashMap<PageId, PageRecord>,
    ) -> Option<(PageId, Result<PageToEmit, FetcherError>)> {
        let changed = match page_info::from_content(&self.site, content, content_type) {
            Ok(changed) => changed,
            Err(error) => return Some((content.id.clone(), Err(error))),
        };
        let mut labels = changed.page.labels.clone();
        labels.sort();
        let labels_known = content
            .metadata
            .as_ref()
            .is_some_and(|m| m.labels.is_some());
        let ancestry = page_info::ancestry_fingerprint(&changed.page.ancestors);
        let incarnation = incarnation_to_emit(
            known.get(&content.id),
            changed.page.version,
            &changed.page.path,
            Facts {
                labels: labels_known.then_some(labels.as_slice()),
                ancestry: Some(&ancestry),
                ..Facts::default()
            },
        )?;
        Some((
            content.id.clone(),
            Ok(PageToEmit {
                changed,
                incarnation,
                labels_known,
                comments_known: false,
                attachments: None,
            }),
        ))
    }

    /// Fetches again, by id, the pages that failed in the last run and that this run's window
    /// did not bring back: the watermark has moved past them.
    async fn retry_failed(
        &mut self,
        failed_before: BTreeSet<PageId>,
        seen: &Tree,
        known: &HashMap<PageId, PageRecord>,
    ) -> Result<(), FetcherError> {
        let mut changes = Vec::new();
        for page in failed_before.iter().filter(|page| !seen.contains(page)) {
            match self.client.content(page, SYNC_EXPAND).await {
                Ok(content) => {
                    // Gone or not content that is indexed: the deletion reconciliation deals
                    // with it.
                    if let Some(content_type) = indexed_type(&content) {
                        self.progress.pages_seen += 1;
                        changes.extend(self.change_of(&content, content_type, known));
                    }
                }
                Err(ConfluenceError::NotFound { .. }) => {}
                Err(error) => changes.push((page.clone(), Err(error.into()))),
            }
        }
        self.emit_all(changes).await
    }

    async fn incremental(
        &mut self,
        settings: &SourceSettings,
        reconcile_deletions: bool,
    ) -> Result<(), FetcherError> {
        let window = self.window().await?;
        let zone = self.user_time_zone(settings).await?;
        let spaces = self.resolve_spaces().await?;
        let synced = self.fetcher.state.spaces(&self.site.source).await?;
        let failed_before = self.fetcher.state.failed_pages(&self.site.source).await?;
        let known = self.fetcher.state.records(&self.site.source).await?;
        let mut seen = Tree::default();
        for space in &spaces {
            self.enter_space(space);
            // A space the source never synced (added to its list, or new where it covers every
            // space): all of it, whatever the window.
            if window.from.is_some() && synced.as_ref().is_some_and(|s| !s.contains(space)) {
                tracing::info!(source = %self.site.source, space = %space, "a new space: syncing all of it");
                seen.extend(self.sync_whole_space(&known).await?);
                continue;
            }
            let mut cql = CqlQuery::content_in_space(self.space_key()?)
                .modified_before(window.before)
                .time_zone(zone);
            if let Some(from) = window.from {
                cql = cql.modified_from(from);
            }
            seen.extend(self.search_and_emit(&cql, &known).await?);
            // Without a lower bound the page window emitted every page, with its comments.
            if !self.site.data_center && window.from.is_some() {
                self.comments_window(cql.comments()).await?;
                self.attachments_window(cql.attachments()).await?;
            }
        }
        self.retry_failed(failed_before, &seen, &known).await?;
        // A space the source no longer reaches (deleted, out of the credentials' sight, or
        // taken off its list) leaves its pages unlisted: the reconciliation removes them.
        let space_gone = synced.is_some_and(|s| s.iter().any(|space| !spaces.contains(space)));
        if reconcile_deletions || space_gone || self.reconciliation_due(settings).await? {
            let started_at = Utc::now();
            let known = self.fetcher.state.records(&self.site.source).await?;
            let mut tree = Tree::default();
            for space in &spaces {
                self.enter_space(space);
                // On Cloud the listing also brings back what changed without a version (moves,
                // labels, restores) and what the windows missed.
                tree.extend(if self.site.data_center {
                    self.list_space().await?
                } else {
                    self.list_and_fetch(&known).await?
                });
            }
            self.reconcile(&tree, &known).await?;
            self.fetcher
                .state
                .set_reconciled(&self.site.source, started_at)
                .await?;
        }
        self.reread_includers().await?;
        self.fetcher
            .state
            .set_spaces(&self.site.source, &spaces)
            .await?;
        self.fetcher
            .state
            .set_failed_pages(&self.site.source, &self.failed)
            .await?;
        self.fetcher
            .state
            .set_watermark(&self.site.source, window.next_watermark)
            .await
    }

    /// The zone Confluence reads this source's CQL dates in: the source's setting, else the API
    /// user's profile (asked on every run: a user may move), else UTC with a warning.
    async fn user_time_zone(
        &self,
        settings: &SourceSettings,
    ) -> Result<UserTimeZone, FetcherError> {
        if let Some(name) = &settings.cql_time_zone {
            return Ok(UserTimeZone::parse(name)?);
        }
        let unknown = match self.client.current_user_time_zone().await {
            Ok(Some(zone)) => return Ok(zone),
            Ok(None) => "the user's profile does not say it".to_owned(),
            Err(error) if error.is_transient() => return Err(error.into()),
            Err(error) => error.to_string(),
        };
        tracing::warn!(
            source = %self.site.source,
            reason = %unknown,
            "the api user's time zone is unknown; cql dates are written in utc (set settings.cql_time_zone)"
        );
        Ok(UserTimeZone::UTC)
    }

    /// Whether the source's periodic deletion reconciliation is due (never reconciled, or longer
    /// ago than its interval; an interval of 0 turns it off).
    async fn reconciliation_due(&self, settings: &SourceSettings) -> Result<bool, FetcherError> {
        if settings.reconcile_interval_secs == 0 {
            return Ok(false);
        }
        let interval = chrono::Duration::seconds(
            i64::try_from(settings.reconcile_interval_secs).unwrap_or(i64::MAX / 1000),
        );
        let last = self.fetcher.state.reconciled(&self.site.source).await?;
        Ok(last.is_none_or(|last| Utc::now() - last >= interval))
    }

    /// The run's window: the one frozen when this run first started (a redelivered run queries
    /// the same bounds), or a new one from the watermark.
    async fn window(&self) -> Result<Window, FetcherError> {
        let state = &self.fetcher.state;
        let source = &self.site.source;
        if let Some(window) = state.window(source).await?
            && window.run_id == self.run_id
        {
            return Ok(window);
        }
        let now = Utc::now();
        let overlap = chrono::Duration::from_std(self.fetcher.options.overlap)
            .unwrap_or(chrono::Duration::zero());
        let window = Window {
            run_id: self.run_id,
            from: state.watermark(source).await?.map(|mark| mark - overlap),
            // CQL compares whole minutes: the next minute includes edits of the current one.
            before: now + chrono::Duration::minutes(1),
            next_watermark: now,
        };
        state.set_window(source, &window).await?;
        Ok(window)
    }

    /// Emits pages concurrently; each is recorded once its event is stored.
    async fn emit_all(
        &mut self,
        changes: Vec<(PageId, Result<PageToEmit, FetcherError>)>,
    ) -> Result<(), FetcherError> {
        let fetcher = self.fetcher;
        let run_id = self.run_id;
        let lane = self.lane();
        // The run's own (cheap) copies: emitting borrows them while the run counts outcomes.
        let (client, site, resolver) = (
            self.client.clone(),
            self.site.clone(),
            self.resolver.clone(),
        );
        let (client, site, resolver) = (&client, &site, &*resolver);
        let mut outcomes =
            futures::stream::iter(changes.into_iter().map(|(id, changed)| async move {
                let outcome = match changed {
                    Ok(emit) => {
                        fetcher
                            .complete_and_emit(client, site, emit, run_id, lane, resolver)
                            .await
                    }
                    Err(error) => Err(error),
                };
                (id, outcome)
            }))
            .buffer_unordered(fetcher.options.publish_concurrency.max(1));
        let mut first_transient = None;
        while let Some((id, outcome)) = outcomes.next().await {
            match outcome {
                Ok(()) => {
                    self.progress.pages_changed += 1;
                    self.emitted.insert(id);
                }
                Err(error) => {
                    if let Err(error) = self.page_failed(&id, error) {
                        first_transient.get_or_insert(error);
                    }
                }
            }
            self.report_if_due().await;
        }
        first_transient.map_or(Ok(()), Err)
    }

    /// Deletes the known pages the listing no longer shows, once Confluence confirms they are gone
    /// (trashed, purged, or moved to another space).
    async fn reconcile(
        &mut self,
        listed: &Tree,
        known: &HashMap<PageId, PageRecord>,
    ) -> Result<(), FetcherError> {
        let mut missing: Vec<(&PageId, &PageRecord)> = known
            .iter()
            .filter(|(id, record)| !record.deleted && !listed.contains(id))
            .collect();
        missing.sort_by_key(|(id, _)| *id);
        for (page, record) in missing {
            let version =
                match confirm_gone(&self.client, &self.site, page, record.content_type).await {
                    Ok(Presence::Gone { version }) => version.unwrap_or(record.version),
                    Ok(Presence::Present) => continue,
                    Err(error) => {
                        self.page_failed(page, error)?;
                        continue;
                    }
                };
            match self
                .fetcher
                .emit_deleted(
                    &self.site,
                    page,
                    Some(record),
                    version,
                    "not listed",
                    Some(self.run_id),
                    self.lane(),
                    Commit::Forward,
                )
                .await
            {
                Ok(_) => self.progress.pages_deleted += 1,
                Err(error) => self.page_failed(page, error)?,
            }
            self.report_if_due().await;
        }
        Ok(())
    }
}

/// The `sync.requested` consumer.
pub struct SyncHandler(pub Arc<Fetcher>);

impl Handler<SyncRequested> for SyncHandler {
    async fn handle(&self, delivery: &Delivery<SyncRequested>) -> Result<(), HandlerError> {
        unless_source_removed(
            self.0.sync(&delivery.event.data).await.map(|_| ()),
            "sync request",
        )
    }
}

/// A command of a source that is no longer registered was accepted (the webhook and the api
/// check the source) before the source was removed: nothing to do, not a poison event (found by
/// ops/chaos --full: a hint delivered between a source's removal and its re-adding was
/// dead-lettered).
fn unless_source_removed(
    result: Result<(), FetcherError>,
    command: &'static str,
) -> Result<(), HandlerError> {
    match result {
        Err(FetcherError::UnknownSource(source)) => {
            tracing::info!(%source, command, "command of a removed source dropped");
            metrics::counter!("pagestream_fetcher_dropped_total", "reason" => "source_removed")
                .increment(1);
            Ok(())
        }
        result => Ok(result?),
    }
}

/// The `page.hinted` consumer.
pub struct HintHandler(pub Arc<Fetcher>);

impl Handler<PageHinted> for HintHandler {
    async fn handle(&self, delivery: &Delivery<PageHinted>) -> Result<(), HandlerError> {
        unless_source_removed(self.0.hint(&delivery.event.data).await, "hint")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sources_and_bad_pages_are_permanent_and_bus_failures_transient() {
        assert!(!FetcherError::UnknownSource("x".into()).is_transient());
        assert!(!FetcherError::InvalidPage("x".into()).is_transient());
        assert!(
            FetcherError::State {
                operation: "put",
                reason: "timeout".into()
            }
            .is_transient()
        );
        assert!(matches!(
            HandlerError::from(FetcherError::Confluence(ConfluenceError::Config(
                "x".into()
            ))),
            HandlerError::Permanent(_)
        ));
    }
}
