//! Confluence REST client (Cloud and Data Center): CQL search, v2 pages and spaces, retries and
//! rate limits. The fetcher builds on it; nothing here knows about events or NATS.
//!
//! # API at a glance
//!
//! ```no_run
//! # async fn demo() -> Result<(), pagestream_confluence::ConfluenceError> {
//! use pagestream_confluence::*;
//! use pagestream_events::{ContentType, PageId};
//!
//! // One client per source. Cloud: Basic email:api_token; Data Center: `Auth::data_center(pat)`.
//! // Defaults: 30 s timeout, 4 attempts (backoff 1/2/4 s ±20 %), Retry-After clamped to 60 s,
//! // 10 requests/s (5 at once after a quiet spell), 4 in flight, 64 MiB per response, 250 ids
//! // per bulk request.
//! let mut config = ClientConfig::new("https://example.atlassian.net/wiki", Auth::cloud("me@x.io", "token"));
//! config.retry.max_attempts = 6;
//! let client = ConfluenceClient::new(config)?; // Err(Config) for http:// (non-loopback), bad creds
//! let run = client.with_fresh_stats(); // per sync run: its own counters, shared limiter
//!
//! // Full sync: resolve the space, list ids + versions + parents + titles cheaply, then fetch
//! // bodies in bulk (250 ids per request) only for what changed.
//! let space = run.space_by_key(&SpaceKey::new("ENG")?).await?; // Space { id, key, homepage_id, .. }
//! let mut listing = run.space_pages(&space.id, &ListOptions::default()); // Pager<Page>, no bodies
//! while let Some(batch) = listing.next_page().await? {
//!     for page in &batch { let _ = (&page.id, page.version_number(), &page.parent_id, &page.title); }
//! }
//! let ids: Vec<PageId> = vec![PageId::new("65601").expect("id")];
//! let bodies = run.pages_by_id(&ids).await?.pages; // Vec<Page> with page.storage(); missing ids absent
//!
//! // Incremental sync: a CQL window (values quoted and escaped), oldest first, with everything a
//! // page event needs expanded (body, version, space, ancestors with titles, labels, history).
//! let cql = CqlQuery::pages_in_space(SpaceKey::new("ENG")?)
//!     .modified_from(chrono::Utc::now() - chrono::Duration::hours(1))
//!     .modified_before(chrono::Utc::now());
//! let mut search = run.search(&cql.to_string(), SYNC_EXPAND, 50); // Pager<Content>
//! while let Some(batch) = search.next_page().await? {
//!     for c in &batch { let _ = (c.storage(), c.label_names(), &c.ancestors, c.last_modified()); }
//! }
//!
//! // Comments: the space's by CQL (`CqlQuery::comments_in_space`, expand `COMMENT_EXPAND`), or
//! // one page's v2 footer and inline comments, each top-level one followed by its replies.
//! let comments = run.comments(ContentType::Page, &ids[0]).await?; // Vec<(CommentLocation, Comment)>
//!
//! // Hints: one page (body + labels), its ancestors (ids, top-down).
//! let page = run.page(&ids[0]).await; // Err(NotFound) may mean "no permission" on Cloud
//! let chain = run.ancestors(&ids[0]).await?;
//!
//! // What to report in the sync run.
//! let stats: ClientStats = run.stats(); // requests, retries, rate_limited, waited(), ...
//! # let _ = (bodies, page, chain, stats, comments); Ok(()) }
//! ```
//!
//! Webhooks registered through the REST API ([`ConfluenceClient::webhooks`],
//! [`ConfluenceClient::create_webhook`], [`ConfluenceClient::delete_webhook`]; Cloud's site-admin
//! resource or Data Center's, [`WebhookApi`]) need an administrator's token. A `POST` or `DELETE`
//! is sent once, never retried: list and reconcile instead.
//!
//! Data Center has no v2 API: use [`ConfluenceClient::search`] (with [`SYNC_EXPAND`]) for
//! discovery and bodies, and [`ConfluenceClient::content`] for single pages.
//!
//! Errors are [`ConfluenceError`]: `Unauthorized` (401), `Forbidden` (403), `NotFound` (404),
//! `Rejected` (other 4xx, e.g. bad CQL), `RateLimited`, `Server`, `Transport` (after all retries;
//! these and 401/403 are transient by [`pagestream_events::Retryable`]), `ResponseTooLarge`,
//! `InvalidResponse`, `Config`, `InvalidSpaceKey`. No message, `Debug` output or log line
//! contains the token.

mod client;
mod config;
mod cql;
mod error;
mod model;
mod secret;
mod stats;
mod transport;
mod webhooks;

pub use client::{
    BulkPages, COMMENT_EXPAND, ConfluenceClient, ListOptions, MAX_EMPTY_SEARCH_PAGES, MAX_LIMIT,
    Pager, SYNC_EXPAND,
};
pub use config::{ClientConfig, RateLimits};
pub use cql::{CqlQuery, SpaceKey, UserTimeZone, quote_cql};
pub use error::ConfluenceError;
pub use model::{
    AncestorRef, Attachment, AttachmentContent, Body, BodyValue, Comment, CommentResolution,
    Content, ContentAncestor, ContentExtensions, ContentLinks, ContentVersion, History,
    InlineCommentProperties, InlineProperties, Label, LabelList, Metadata, Page, SearchHit, Space,
    SpaceId, SpaceRef, User, Version,
};
pub use pagestream_retry::RetryPolicy;
pub use secret::{Auth, Secret};
pub use stats::ClientStats;
pub use webhooks::{NewWebhook, Webhook, WebhookApi};
