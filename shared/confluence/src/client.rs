//! The endpoints the fetcher uses, and cursor pagination over them.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;

use pagestream_events::{CommentLocation, ContentType, PageId};
use reqwest::Url;
use reqwest::header::{HeaderMap, LINK};
use serde::de::DeserializeOwned;

use crate::model::{CurrentUser, Listing, ListingLinks};
use crate::stats::Counters;
use crate::transport::{Caller, Change, Fetched, Priority, SharedTransport, Transport};
use crate::{
    AncestorRef, Attachment, AttachmentContent, ClientConfig, ClientStats, Comment,
    ConfluenceError, Content, Page, SearchHit, Space, SpaceId, SpaceKey, UserTimeZone,
};

/// Expansions for a v1 search that returns everything a `page.changed` needs in one request per
/// page of results.
pub const SYNC_EXPAND: &[&str] = &[
    "body.storage",
    "version",
    "space",
    "ancestors",
    "metadata.labels",
    "history",
];

/// Expansions for a v1 comment search (`type=comment`): everything a page event's comment needs,
/// with the page it is on (`container`) and the comment a reply answers (`ancestors`).
pub const COMMENT_EXPAND: &[&str] = &[
    "body.storage",
    "version",
    "container",
    "ancestors",
    "extensions.inlineProperties",
    "extensions.resolution",
];

/// Largest page of results Confluence serves (v1 and v2).
pub const MAX_LIMIT: u32 = 250;

/// Pages of a paginated listing a pager follows at most, in case a server keeps inventing cursors.
const MAX_PAGES: u64 = 1_000_000;

/// Consecutive empty CQL result pages followed while they still carry `next`: Cloud filters
/// search results by permission after paging, so a page may come back empty or short in the
/// middle of a listing; an endless run of empty pages ends it.
pub const MAX_EMPTY_SEARCH_PAGES: u32 = 10;

/// What [`ConfluenceClient::pages_by_id`] brought back.
#[derive(Debug, Default)]
pub struct BulkPages {
    pub pages: Vec<Page>,
    /// Pages whose response alone exceeds the size bound, with that error.
    pub too_large: Vec<(PageId, ConfluenceError)>,
}

/// A Confluence REST client for one source. Cheap to clone; clones share the connection pool,
/// the rate limiter and the statistics.
#[derive(Clone)]
pub struct ConfluenceClient {
    transport: SharedTransport,
    counters: Arc<Counters>,
    priority: Priority,
}

impl std::fmt::Debug for ConfluenceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfluenceClient")
            .field("base_url", &self.transport.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Options of a v2 page listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    /// Results per request (1 to 250; servers may send fewer).
    pub limit: u32,
    /// Ask for the storage body too (`body-format=storage`). Off for a cheap listing.
    pub with_body: bool,
}

impl Default for ListOptions {
    fn default() -> Self {
        Self {
            limit: MAX_LIMIT,
            with_body: false,
        }
    }
}

impl ConfluenceClient {
    pub fn new(config: ClientConfig) -> Result<Self, ConfluenceError> {
        Ok(Self {
            transport: Arc::new(Transport::new(&config)?),
            counters: Arc::new(Counters::default()),
            priority: Priority::Urgent,
        })
    }

    /// The normalised wiki root every request is built on (e.g. `https://x.atlassian.net/wiki`).
    pub fn base_url(&self) -> &Url {
        &self.transport.base
    }

    /// A snapshot of what this client (and the clones sharing its counters) has done.
    pub fn stats(&self) -> ClientStats {
        self.counters.snapshot()
    }

    /// A clone with its own, zeroed statistics that still shares the connection pool and the rate
    /// limiter: one per sync run gives that run's requests and waits exactly.
    pub fn with_fresh_stats(&self) -> Self {
        Self {
            transport: Arc::clone(&self.transport),
            counters: Arc::new(Counters::default()),
            priority: self.priority,
        }
    }

    /// A clone (sharing its statistics) whose requests are background work: under the rate limit
    /// each waits until it can go without drawing on the burst, which stays for the default
    /// (urgent) clients, so a webhook's page never queues behind a backlog of them.
    pub fn in_background(&self) -> Self {
        Self {
            transport: Arc::clone(&self.transport),
            counters: Arc::clone(&self.counters),
            priority: Priority::Background,
        }
    }

    fn caller(&self) -> Caller<'_> {
        Caller {
            counters: &self.counters,
            priority: self.priority,
        }
    }

    // ----- v1 ---------------------------------------------------------------------------------

    /// v1 CQL search (`GET /rest/api/content/search?cql=…&expand=…&limit=…`). Build `cql` with
    /// [`crate::CqlQuery`] (or quote every value with [`crate::quote_cql`]). The pager follows
    /// `_links.next` relative to `_links.base` until it is absent, through empty or short pages
    /// (Cloud filters results by permission after paging), at most [`MAX_EMPTY_SEARCH_PAGES`]
    /// empty ones in a row.
    pub fn search(&self, cql: &str, expand: &[&str], limit: u32) -> Pager<Content> {
        let mut url = self.endpoint(&["rest", "api", "content", "search"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("cql", cql);
            if !expand.is_empty() {
                query.append_pair("expand", &expand.join(","));
            }
            query.append_pair("limit", &limit.clamp(1, MAX_LIMIT).to_string());
        }
        Pager::new(self.clone(), url, decode_search_hits)
            .following_empty(MAX_EMPTY_SEARCH_PAGES)
            .shrinking()
    }

    /// [`Self::search`] for `type=attachment` queries, whose results are [`AttachmentContent`].
    pub fn search_attachments(
        &self,
        cql: &str,
        expand: &[&str],
        limit: u32,
    ) -> Pager<AttachmentContent> {
        let mut url = self.endpoint(&["rest", "api", "content", "search"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("cql", cql);
            if !expand.is_empty() {
                query.append_pair("expand", &expand.join(","));
            }
            query.append_pair("limit", &limit.clamp(1, MAX_LIMIT).to_string());
        }
        Pager::new(self.clone(), url, decode_results::<AttachmentContent>)
            .following_empty(MAX_EMPTY_SEARCH_PAGES)
    }

    /// v1 `GET /rest/api/content/{id}?expand=…` (works on Cloud and Data Center).
    pub async fn content(&self, id: &PageId, expand: &[&str]) -> Result<Content, ConfluenceError> {
        let mut url = self.endpoint(&["rest", "api", "content", id.as_str()]);
        if !expand.is_empty() {
            url.query_pairs_mut()
                .append_pair("expand", &expand.join(","));
        }
        self.get_json(&url).await
    }

    /// v1 `GET /rest/api/content?spaceKey=KEY&title=T&expand=…`: the current page of that title
    /// in that space (titles are unique per space), as include macros name it; `None` when there
    /// is none or the user may not see it. Works on Cloud and Data Center.
    pub async fn page_by_title(
        &self,
        space: &SpaceKey,
        title: &str,
        expand: &[&str],
    ) -> Result<Option<Content>, ConfluenceError> {
        let mut url = self.endpoint(&["rest", "api", "content"]);
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("type", "page")
                .append_pair("spaceKey", space.as_str())
                .append_pair("title", title);
            if !expand.is_empty() {
                query.append_pair("expand", &expand.join(","));
            }
        }
        let listing: Listing<Content> = self.get_json(&url).await?;
        Ok(listing.results.into_iter().find(|page| page.title == title))
    }

    /// v1 `GET /rest/api/user/current`: the API user's profile time zone, in which Confluence
    /// reads CQL dates. `None` where the profile hides it (a privacy setting on Cloud), the site
    /// does not say (Data Center) or names a zone this build does not know.
    pub async fn current_user_time_zone(&self) -> Result<Option<UserTimeZone>, ConfluenceError> {
        let url = self.endpoint(&["rest", "api", "user", "current"]);
        let user: CurrentUser = self.get_json(&url).await?;
        Ok(user
            .time_zone
            .as_deref()
            .and_then(|name| UserTimeZone::parse(name).ok()))
    }

    // ----- v2 (Cloud) -------------------------------------------------------------------------

    /// v2 `GET /api/v2/spaces?keys=KEY`. `NotFound` when no space has that key (or the user may
    /// not see it).
    pub async fn space_by_key(&self, key: &SpaceKey) -> Result<Space, ConfluenceError> {
        let mut url = self.endpoint(&["api", "v2", "spaces"]);
        url.query_pairs_mut().append_pair("keys", key.as_str());
        let listing: Listing<Space> = self.get_json(&url).await?;
        listing
            .results
            .into_iter()
            .find(|s| s.key.eq_ignore_ascii_case(key.as_str()))
            .ok_or_else(|| ConfluenceError::NotFound {
                endpoint: format!("GET {}", url.path()),
            })
    }

    /// Spaces the credentials can read, `keys` only where given: v2 `GET /api/v2/spaces?keys=…`
    /// (Cloud, cursor pagination), or v1 `GET /rest/api/space?spaceKey=…` (`v1`: Data Center,
    /// which has no v2 API). A key no space has (or the user may not see) is simply not listed.
    pub fn spaces(&self, keys: Option<&[SpaceKey]>, v1: bool) -> Pager<Space> {
        let mut url = if v1 {
            self.endpoint(&["rest", "api", "space"])
        } else {
            self.endpoint(&["api", "v2", "spaces"])
        };
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &MAX_LIMIT.to_string());
            match (keys, v1) {
                (Some(keys), true) => {
                    for key in keys {
                        query.append_pair("spaceKey", key.as_str());
                    }
                }
                (Some(keys), false) => {
                    let keys: Vec<&str> = keys.iter().map(SpaceKey::as_str).collect();
                    query.append_pair("keys", &keys.join(","));
                }
                (None, _) => {}
            }
        }
        Pager::new(self.clone(), url, decode_results::<Space>)
    }

    /// v2 `GET /api/v2/spaces/{id}/pages`: every page of a space (current ones), followed through
    /// `Link` / `_links.next`. Without a body this is the cheap listing of ids, titles, parents and
    /// versions that a full sync diffs against what it knows.
    pub fn space_pages(&self, space: &SpaceId, options: &ListOptions) -> Pager<Page> {
        self.space_content(ContentType::Page, space, options)
    }

    /// v2 `GET /api/v2/spaces/{id}/blogposts`: every current blog post of a space, paginated like
    /// [`Self::space_pages`]. Blog posts decode as [`Page`]s without a parent.
    pub fn space_blog_posts(&self, space: &SpaceId, options: &ListOptions) -> Pager<Page> {
        self.space_content(ContentType::Blogpost, space, options)
    }

    fn space_content(
        &self,
        kind: ContentType,
        space: &SpaceId,
        options: &ListOptions,
    ) -> Pager<Page> {
        let mut url = self.endpoint(&["api", "v2", "spaces", space.as_str(), v2_collection(kind)]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &options.limit.clamp(1, MAX_LIMIT).to_string());
            if options.with_body {
                query.append_pair("body-format", "storage");
            }
        }
        Pager::new(self.clone(), url, decode_results::<Page>)
    }

    /// v2 `GET /api/v2/pages?id=…&body-format=storage`: pages with their storage bodies, in
    /// batches of up to 250 ids (`bulk_batch_size`); a batch whose response exceeds the size bound
    /// is split in halves, and a page that exceeds it alone is returned in
    /// [`BulkPages::too_large`] (that page fails, not the others). Ids Confluence does not return
    /// (deleted, trashed, not visible) are simply absent from the result; duplicates are fetched
    /// once.
    pub async fn pages_by_id(&self, ids: &[PageId]) -> Result<BulkPages, ConfluenceError> {
        self.content_by_id(ContentType::Page, ids).await
    }

    /// v2 `GET /api/v2/blogposts?id=…&body-format=storage`: blog posts with their bodies, batched
    /// and split like [`Self::pages_by_id`].
    pub async fn blog_posts_by_id(&self, ids: &[PageId]) -> Result<BulkPages, ConfluenceError> {
        self.content_by_id(ContentType::Blogpost, ids).await
    }

    async fn content_by_id(
        &self,
        kind: ContentType,
        ids: &[PageId],
    ) -> Result<BulkPages, ConfluenceError> {
        let mut seen = HashSet::new();
        let unique: Vec<&PageId> = ids.iter().filter(|id| seen.insert(*id)).collect();
        let mut bulk = BulkPages {
            pages: Vec::with_capacity(unique.len()),
            too_large: Vec::new(),
        };
        for batch in unique.chunks(self.transport.bulk_batch_size) {
            self.fetch_batch(kind, batch, &mut bulk).await?;
        }
        Ok(bulk)
    }

    async fn fetch_batch(
        &self,
        kind: ContentType,
        batch: &[&PageId],
        into: &mut BulkPages,
    ) -> Result<(), ConfluenceError> {
        let mut url = self.endpoint(&["api", "v2", v2_collection(kind)]);
        {
            let joined = batch
                .iter()
                .map(|id| id.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let mut query = url.query_pairs_mut();
            query.append_pair("id", &joined);
            query.append_pair("body-format", "storage");
            query.append_pair(
                "limit",
                &batch.len().clamp(1, MAX_LIMIT as usize).to_string(),
            );
        }
        match Pager::<Page>::new(self.clone(), url, decode_results::<Page>)
            .collect_all()
            .await
        {
            Ok(pages) => {
                into.pages.extend(pages);
                Ok(())
            }
            Err(ConfluenceError::ResponseTooLarge { .. }) if batch.len() > 1 => {
                let (left, right) = batch.split_at(batch.len() / 2);
                tracing::info!(ids = batch.len(), "bulk page response too large, splitting");
                Box::pin(self.fetch_batch(kind, left, into)).await?;
                Box::pin(self.fetch_batch(kind, right, into)).await
            }
            Err(error @ ConfluenceError::ResponseTooLarge { .. }) => {
                if let Some(id) = batch.first() {
                    into.too_large.push(((*id).clone(), error));
                }
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// v2 `GET /api/v2/pages/{id}?body-format=storage&include-labels=true`. A 404 may mean "no
    /// permission" on Cloud: confirm before treating the page as deleted.
    pub async fn page(&self, id: &PageId) -> Result<Page, ConfluenceError> {
        self.content_v2(ContentType::Page, id).await
    }

    /// v2 `GET /api/v2/blogposts/{id}?body-format=storage&include-labels=true`; a 404 may mean "no
    /// permission", as for a page.
    pub async fn blog_post(&self, id: &PageId) -> Result<Page, ConfluenceError> {
        self.content_v2(ContentType::Blogpost, id).await
    }

    /// v2 `GET /api/v2/{pages|blogposts}/{id}`: ids are unique across content types, but each
    /// type answers only for its own (a page's endpoint gives 404 for a blog post id).
    pub async fn content_v2(
        &self,
        kind: ContentType,
        id: &PageId,
    ) -> Result<Page, ConfluenceError> {
        let mut url = self.endpoint(&["api", "v2", v2_collection(kind), id.as_str()]);
        url.query_pairs_mut()
            .append_pair("body-format", "storage")
            .append_pair("include-labels", "true");
        self.get_json(&url).await
    }

    /// v2 `GET /api/v2/folders/{id}` (Cloud): a folder's title and its parent (a page or another
    /// folder, `parent_type`), decoded as a [`Page`] without a body. A 404 may mean "no
    /// permission", as for a page.
    pub async fn folder(&self, id: &PageId) -> Result<Page, ConfluenceError> {
        let url = self.endpoint(&["api", "v2", "folders", id.as_str()]);
        self.get_json(&url).await
    }

    /// v2 comments of a page or blog post: its top-level footer comments, then its top-level
    /// inline comments (`/api/v2/{pages|blogposts}/{id}/{footer|inline}-comments`), each followed
    /// by its replies (`/api/v2/{footer|inline}-comments/{id}/children`), bodies in storage
    /// format, every listing followed through its cursor. Replies are one level deep, as Cloud's
    /// editor makes them. A 404 may mean "no permission", as for the page.
    pub async fn comments(
        &self,
        kind: ContentType,
        id: &PageId,
    ) -> Result<Vec<(CommentLocation, Comment)>, ConfluenceError> {
        let mut comments = Vec::new();
        for location in [CommentLocation::Footer, CommentLocation::Inline] {
            let listing = format!("{}-comments", comment_location(location));
            let url = self.comment_listing(&[v2_collection(kind), id.as_str(), &listing]);
            let roots = Pager::new(self.clone(), url, decode_results::<Comment>)
                .collect_all()
                .await?;
            for root in roots {
                let url = self.comment_listing(&[listing.as_str(), root.id.as_str(), "children"]);
                let replies = Pager::new(self.clone(), url, decode_results::<Comment>)
                    .collect_all()
                    .await?;
                comments.push((location, root));
                comments.extend(replies.into_iter().map(|reply| (location, reply)));
            }
        }
        Ok(comments)
    }

    /// v2 attachments of a page or blog post (`/api/v2/{pages|blogposts}/{id}/attachments`),
    /// current ones, 250 a request. A 404 may mean "no permission", as for the page.
    pub async fn attachments(
        &self,
        kind: ContentType,
        id: &PageId,
    ) -> Result<Vec<Attachment>, ConfluenceError> {
        let mut url =
            self.endpoint(&["api", "v2", v2_collection(kind), id.as_str(), "attachments"]);
        url.query_pairs_mut()
            .append_pair("status", "current")
            .append_pair("limit", &MAX_LIMIT.to_string());
        Pager::new(self.clone(), url, decode_results::<Attachment>)
            .collect_all()
            .await
    }

    /// Downloads an attachment's file from its download link (relative to the wiki root, as v1
    /// `_links.download` and v2 `downloadLink` give it, naming the version), at most `limit`
    /// bytes: a larger file is [`ConfluenceError::ResponseTooLarge`], without reading it.
    pub async fn download(&self, link: &str, limit: usize) -> Result<Vec<u8>, ConfluenceError> {
        let base = self.transport.base.as_str().trim_end_matches('/');
        let url = if link.starts_with('/') {
            Url::parse(&format!("{base}{link}"))
        } else {
            Url::parse(link)
        }
        .map_err(|error| ConfluenceError::InvalidResponse {
            endpoint: "GET download".into(),
            reason: format!("invalid download link: {error}"),
        })?;
        // Only links on the site itself carry the credentials.
        if url.origin() != self.transport.base.origin() {
            return Err(ConfluenceError::InvalidResponse {
                endpoint: "GET download".into(),
                reason: "download link leaves the site".into(),
            });
        }
        self.transport.download(&url, self.caller(), limit).await
    }

    fn comment_listing(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint(&["api", "v2"]);
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        url.query_pairs_mut()
            .append_pair("body-format", "storage")
            .append_pair("limit", &MAX_LIMIT.to_string());
        url
    }

    /// v2 `GET /api/v2/pages/{id}/ancestors`, top-down (the space's root first, the parent last).
    /// Deep trees are followed by asking again for the highest ancestor, as Confluence documents.
    pub async fn ancestors(&self, id: &PageId) -> Result<Vec<AncestorRef>, ConfluenceError> {
        let mut chain: Vec<AncestorRef> = Vec::new();
        let mut current = id.clone();
        for _ in 0..64 {
            let mut url = self.endpoint(&["api", "v2", "pages", current.as_str(), "ancestors"]);
            url.query_pairs_mut()
                .append_pair("limit", &MAX_LIMIT.to_string());
            let listing: Listing<AncestorRef> = self.get_json(&url).await?;
            let full = listing.results.len() >= MAX_LIMIT as usize;
            let mut upper = listing.results;
            let Some(top) = upper.first().map(|a| a.id.clone()) else {
                break;
            };
            upper.append(&mut chain);
            chain = upper;
            if !full {
                break;
            }
            current = top;
        }
        Ok(chain)
    }

    // ----- plumbing ---------------------------------------------------------------------------

    pub(crate) fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.transport.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn fetch(&self, url: &Url) -> Result<Fetched, ConfluenceError> {
        self.transport.get(url, self.caller()).await
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        url: &Url,
    ) -> Result<T, ConfluenceError> {
        let fetched = self.fetch(url).await?;
        self.decode(url, &fetched.body)
    }

    pub(crate) async fn send_once(
        &self,
        url: &Url,
        change: &Change<'_>,
    ) -> Result<Fetched, ConfluenceError> {
        self.transport.send_once(url, change, self.caller()).await
    }

    /// Decodes the answer to a change, scrubbing the secrets it carried from the error too.
    pub(crate) fn decode_as<T: DeserializeOwned>(
        &self,
        change: &Change<'_>,
        url: &Url,
        body: &[u8],
    ) -> Result<T, ConfluenceError> {
        serde_json::from_slice(body).map_err(|e| ConfluenceError::InvalidResponse {
            endpoint: format!("{} {}", change.method, url.path()),
            reason: self.transport.scrub_also(&e.to_string(), change.secrets),
        })
    }

    fn decode<T: DeserializeOwned>(&self, url: &Url, body: &[u8]) -> Result<T, ConfluenceError> {
        serde_json::from_slice(body).map_err(|e| ConfluenceError::InvalidResponse {
            endpoint: format!("GET {}", url.path()),
            reason: self.transport.scrub(&e.to_string()),
        })
    }

    /// Resolves a next link against the configured base: relative links are appended to the base
    /// (after dropping the server's own base path, so `/wiki/api/v2/…` and v1's `/rest/api/…` both
    /// land right); absolute links must point at the configured origin.
    fn resolve_next(
        &self,
        current: &Url,
        next: &str,
        server_base: Option<&str>,
    ) -> Result<Url, ConfluenceError> {
        let base = &self.transport.base;
        let invalid = |reason: &str| ConfluenceError::InvalidResponse {
            endpoint: format!("GET {}", current.path()),
            reason: reason.to_owned(),
        };
        let next = next.trim();
        let relative = if next.starts_with("http://") || next.starts_with("https://") {
            let absolute = Url::parse(next).map_err(|_| invalid("malformed next link"))?;
            if absolute.origin() != base.origin() {
                return Err(invalid("next link points to another host"));
            }
            match absolute.query() {
                Some(q) => format!("{}?{q}", absolute.path()),
                None => absolute.path().to_owned(),
            }
        } else if next.starts_with('/') && !next.starts_with("//") {
            next.to_owned()
        } else {
            return Err(invalid("next link is not a path"));
        };
        let server_path = server_base
            .and_then(|b| Url::parse(b).ok())
            .map(|b| b.path().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| base.path().trim_end_matches('/').to_owned());
        let base_path = base.path().trim_end_matches('/');
        let rest = if !base_path.is_empty() && relative.starts_with(&format!("{base_path}/")) {
            &relative[base_path.len()..]
        } else if !server_path.is_empty() && relative.starts_with(&format!("{server_path}/")) {
            &relative[server_path.len()..]
        } else {
            relative.as_str()
        };
        let joined = format!("{}{base_path}{rest}", base.origin().ascii_serialization());
        Url::parse(&joined).map_err(|_| invalid("malformed next link"))
    }
}

/// The v2 collection of a content type.
fn comment_location(location: CommentLocation) -> &'static str {
    match location {
        CommentLocation::Footer => "footer",
        CommentLocation::Inline => "inline",
    }
}

fn v2_collection(kind: ContentType) -> &'static str {
    match kind {
        ContentType::Page => "pages",
        ContentType::Blogpost => "blogposts",
    }
}

/// Decodes one page of a listing into its items and links.
type Decode<T> = fn(&[u8]) -> Result<(Vec<T>, ListingLinks), serde_json::Error>;

fn decode_results<T: DeserializeOwned>(
    body: &[u8],
) -> Result<(Vec<T>, ListingLinks), serde_json::Error> {
    let listing: Listing<T> = serde_json::from_slice(body)?;
    Ok((listing.results, listing.links))
}

fn decode_search_hits(body: &[u8]) -> Result<(Vec<Content>, ListingLinks), serde_json::Error> {
    let listing: Listing<SearchHit> = serde_json::from_slice(body)?;
    Ok((
        listing.results.into_iter().map(|hit| hit.0).collect(),
        listing.links,
    ))
}

/// Follows a cursor-paginated listing, one request per [`Pager::next_page`].
///
/// The next request comes from the body's `_links.next` or, failing that, the `Link` header's
/// `rel="next"`. The pager stops when neither is present or a page comes back empty (Confluence
/// sometimes sends a `next` with an empty page), and fails on a link that repeats or leaves the
/// configured host.
pub struct Pager<T> {
    client: ConfluenceClient,
    next: Option<Url>,
    decode: Decode<T>,
    visited: HashSet<String>,
    pages: u64,
    /// Empty pages followed in a row at most (0: an empty page ends the listing).
    follow_empty: u32,
    /// A page of results over the size bound is asked again smaller (see [`Pager::shrinking`]).
    shrink: bool,
    /// The request's `limit` and `expand` before it was made smaller: put back into the link
    /// that follows the bodiless answer, so the listing goes on at full size past the huge page.
    full_size: Vec<(String, String)>,
    /// The request in flight leaves the body out.
    bodiless: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Pager<T> {
    fn new(client: ConfluenceClient, first: Url, decode: Decode<T>) -> Self {
        Self {
            client,
            next: Some(first),
            decode,
            visited: HashSet::new(),
            pages: 0,
            follow_empty: 0,
            shrink: false,
            full_size: Vec::new(),
            bodiless: false,
            _item: PhantomData,
        }
    }

    fn following_empty(mut self, pages: u32) -> Self {
        self.follow_empty = pages;
        self
    }

    /// A page of results whose response exceeds the size bound is asked again with half the
    /// `limit`, down to one result; one result still over the bound is asked again without its
    /// body, so that one huge page fails alone (it comes without a body) instead of the listing.
    fn shrinking(mut self) -> Self {
        self.shrink = true;
        self
    }

    /// The next page of results, or `None` when the listing is exhausted.
    pub async fn next_page(&mut self) -> Result<Option<Vec<T>>, ConfluenceError> {
        let mut empty_in_a_row = 0;
        loop {
            match self.fetch_next().await? {
                Fetch::Items(items) => return Ok(Some(items)),
                Fetch::End => return Ok(None),
                Fetch::Again => {}
                Fetch::Empty if self.next.is_some() && empty_in_a_row < self.follow_empty => {
                    empty_in_a_row += 1;
                }
                Fetch::Empty => {
                    self.next = None;
                    return Ok(None);
                }
            }
        }
    }

    async fn fetch_next(&mut self) -> Result<Fetch<T>, ConfluenceError> {
        let Some(url) = self.next.take() else {
            return Ok(Fetch::End);
        };
        if !self.visited.insert(url.as_str().to_owned()) || self.pages >= MAX_PAGES {
            return Err(ConfluenceError::InvalidResponse {
                endpoint: format!("GET {}", url.path()),
                reason: "pagination does not advance".into(),
            });
        }
        self.pages += 1;
        let fetched = match self.client.fetch(&url).await {
            Ok(fetched) => fetched,
            Err(error @ ConfluenceError::ResponseTooLarge { .. }) if self.shrink => {
                let smaller = smaller_request(&url).ok_or(error)?;
                tracing::info!(path = url.path(), "response too large, asking for less");
                if self.full_size.is_empty() {
                    self.full_size = ["limit", "expand"]
                        .into_iter()
                        .filter_map(|name| Some((name.to_owned(), query_value(&url, name)?)))
                        .collect();
                }
                self.bodiless = query_value(&smaller, "expand") != query_value(&url, "expand");
                self.visited.remove(url.as_str());
                self.next = Some(smaller);
                return Ok(Fetch::Again);
            }
            Err(error) => return Err(error),
        };
        let (items, links) =
            (self.decode)(&fetched.body).map_err(|e| ConfluenceError::InvalidResponse {
                endpoint: format!("GET {}", url.path()),
                reason: self.client.transport.scrub(&e.to_string()),
            })?;
        let header_links = parse_link_header(&fetched.headers);
        let next = links.next.or(header_links.next);
        let server_base = links.base.or(header_links.base);
        if let Some(next) = next {
            let mut next = self
                .client
                .resolve_next(&url, &next, server_base.as_deref())?;
            if std::mem::take(&mut self.bodiless) {
                for (name, value) in std::mem::take(&mut self.full_size) {
                    next = with_query_value(&next, &name, &value);
                }
            }
            self.next = Some(next);
        }
        Ok(if items.is_empty() {
            Fetch::Empty
        } else {
            Fetch::Items(items)
        })
    }

    /// Follows the listing to its end.
    pub async fn collect_all(mut self) -> Result<Vec<T>, ConfluenceError> {
        let mut all = Vec::new();
        while let Some(mut page) = self.next_page().await? {
            all.append(&mut page);
        }
        Ok(all)
    }

    /// Requests made by this pager so far.
    pub fn pages_fetched(&self) -> u64 {
        self.pages
    }
}

enum Fetch<T> {
    Items(Vec<T>),
    Empty,
    End,
    /// The request is to be made again, smaller.
    Again,
}

fn query_value(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// `url` with the query parameter `name` set to `value`.
fn with_query_value(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != name)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let mut url = url.clone();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair(name, value);
    url
}

/// The same request for less: half the `limit`, or at one result, without the storage body.
fn smaller_request(url: &Url) -> Option<Url> {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let limit = pairs
        .iter()
        .find(|(key, _)| key == "limit")
        .and_then(|(_, value)| value.parse::<u32>().ok())
        .unwrap_or(25);
    let mut changed = false;
    let smaller: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(key, value)| match key.as_str() {
            "limit" if limit > 1 => {
                changed = true;
                (key, (limit / 2).to_string())
            }
            "expand" if limit <= 1 && value.split(',').any(|e| e == "body.storage") => {
                changed = true;
                let rest: Vec<&str> = value.split(',').filter(|e| *e != "body.storage").collect();
                (key, rest.join(","))
            }
            _ => (key, value),
        })
        .collect();
    if !changed {
        return None;
    }
    let mut url = url.clone();
    url.query_pairs_mut().clear().extend_pairs(smaller);
    Some(url)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct LinkHeader {
    next: Option<String>,
    base: Option<String>,
}

/// Parses `Link: </wiki/api/v2/pages?cursor=…>; rel="next", <https://x/wiki>; rel="base"`.
fn parse_link_header(headers: &HeaderMap) -> LinkHeader {
    let mut parsed = LinkHeader::default();
    for value in headers.get_all(LINK) {
        let Ok(mut rest) = value.to_str() else {
            continue;
        };
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>').map(|c| open + c) else {
                break;
            };
            let target = rest[open + 1..close].to_owned();
            let params_end = rest[close..].find('<').map_or(rest.len(), |n| close + n);
            let params = &rest[close + 1..params_end];
            for param in params.split(';') {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                if !key.trim().eq_ignore_ascii_case("rel") {
                    continue;
                }
                let value = value.trim().trim_end_matches(',').trim().trim_matches('"');
                for rel in value.split_whitespace() {
                    match rel {
                        "next" => parsed.next = Some(target.clone()),
                        "base" => parsed.base = Some(target.clone()),
                        _ => {}
                    }
                }
            }
            rest = &rest[params_end..];
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;
    use crate::Auth;

    fn client(base: &str) -> ConfluenceClient {
        ConfluenceClient::new(ClientConfig::new(base, Auth::cloud("a@b.c", "t"))).expect("client")
    }

    #[test]
    fn link_headers_give_next_and_base() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static(
                r#"</wiki/api/v2/pages?cursor=abc,def>; rel="next", <https://x.atlassian.net/wiki>; rel="base""#,
            ),
        );
        let links = parse_link_header(&headers);
        assert_eq!(
            links.next.as_deref(),
            Some("/wiki/api/v2/pages?cursor=abc,def")
        );
        assert_eq!(links.base.as_deref(), Some("https://x.atlassian.net/wiki"));
        assert_eq!(parse_link_header(&HeaderMap::new()), LinkHeader::default());
    }

    #[test]
    fn next_links_resolve_against_the_configured_base() {
        let cloud = client("https://x.atlassian.net/wiki");
        let current = cloud.endpoint(&["api", "v2", "pages"]);
        let resolve = |next: &str, base: Option<&str>| {
            cloud
                .resolve_next(&current, next, base)
                .map(|u| u.to_string())
        };
        assert_eq!(
            resolve("/wiki/api/v2/pages?cursor=a", None).expect("v2"),
            "https://x.atlassian.net/wiki/api/v2/pages?cursor=a"
        );
        assert_eq!(
            resolve(
                "/rest/api/content/search?cursor=b",
                Some("https://x.atlassian.net/wiki")
            )
            .expect("v1"),
            "https://x.atlassian.net/wiki/rest/api/content/search?cursor=b"
        );
        assert_eq!(
            resolve("https://x.atlassian.net/wiki/api/v2/pages?cursor=c", None).expect("absolute"),
            "https://x.atlassian.net/wiki/api/v2/pages?cursor=c"
        );
        for foreign in [
            "https://evil.example/wiki/api/v2/pages",
            "//evil.example/x",
            "api/v2",
        ] {
            assert!(
                matches!(
                    resolve(foreign, None),
                    Err(ConfluenceError::InvalidResponse { .. })
                ),
                "{foreign}"
            );
        }

        // Behind a gateway the server's own base path differs from ours.
        let gateway = client("https://api.atlassian.com/ex/confluence/abc/wiki");
        let current = gateway.endpoint(&["api", "v2", "pages"]);
        assert_eq!(
            gateway
                .resolve_next(
                    &current,
                    "/wiki/api/v2/pages?cursor=d",
                    Some("https://x.atlassian.net/wiki")
                )
                .expect("gateway")
                .to_string(),
            "https://api.atlassian.com/ex/confluence/abc/wiki/api/v2/pages?cursor=d"
        );
    }
}
