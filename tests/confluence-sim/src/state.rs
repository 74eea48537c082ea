//! The simulator's mutable state: the space, the faults in force and the request counters.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::content::{
    self, CommentLocation, ContentKind, LinkTargets, PageStatus, Resolution, SimAttachment,
    SimComment, SimPage, USERS,
};
use crate::rng::SplitMix64;

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub page_count: usize,
    /// Blog posts of the space, generated after the pages (ids continue the sequence).
    pub blog_post_count: usize,
    /// Comments on the pages and blog posts (with replies), generated after them.
    pub comment_count: usize,
    /// Small text attachments (plain text, Markdown, CSV, JSON) on the pages and blog posts,
    /// generated after the comments.
    pub attachment_count: usize,
    /// Pages with bodies over 1 MB (default: one per 500 pages, at least one).
    pub large_pages: usize,
    pub space_key: String,
    pub space_name: String,
    pub space_id: u64,
    /// Basic auth: `email:api_token`.
    pub email: String,
    pub api_token: String,
    /// Also accept `Authorization: Bearer <pat>` (Data Center style).
    pub personal_access_token: Option<String>,
    /// Where mutations POST Cloud webhooks: `{target}/{event}`.
    pub webhook_target: Option<String>,
    /// When set, webhooks carry `X-Hub-Signature: sha256=<hmac of the body>`.
    pub webhook_secret: Option<String>,
    /// More spaces of the site, each holding only its homepage at first (ids after the generated
    /// content): pages are created in them or moved to them.
    pub other_spaces: Vec<SimSpace>,
    /// The API user's profile time zone, in which CQL dates are read (daylight saving included).
    pub time_zone: Tz,
    /// Whether `/rest/api/user/current` shows the zone (a Cloud privacy setting can hide it).
    pub time_zone_visible: bool,
}

impl SimConfig {
    pub fn new(seed: u64, page_count: usize) -> Self {
        Self {
            seed,
            page_count,
            blog_post_count: 0,
            comment_count: 0,
            attachment_count: 0,
            large_pages: (page_count / 500).max(1).min(page_count),
            space_key: "ENG".into(),
            space_name: "Engineering".into(),
            space_id: 98_305,
            email: "sim@example.com".into(),
            api_token: "sim-api-token".into(),
            personal_access_token: None,
            webhook_target: None,
            webhook_secret: None,
            other_spaces: Vec::new(),
            time_zone: Tz::UTC,
            time_zone_visible: true,
        }
    }
}

/// A space of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimSpace {
    pub id: u64,
    pub key: String,
    pub name: String,
}

impl SimSpace {
    pub fn new(id: u64, key: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id,
            key: key.into(),
            name: name.into(),
        }
    }
}

/// Faults in force. Set them with [`crate::SimHandle::set_faults`] or `PUT /_sim/faults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Injected error responses, tried in order; the first that fires answers the request.
    pub rules: Vec<FaultRule>,
    /// Delay added to every API response.
    pub latency_ms: u64,
    /// Serve at most this many results per page, whatever `limit` asks.
    pub page_size_cap: Option<usize>,
    /// The last page of a listing still carries a `next` link, which leads to empty pages that
    /// carry `next` again (Confluence does this; clients must stop at an empty page).
    pub trailing_empty_page: bool,
    /// Pages the API user may not see: CQL search drops them from each page of results after
    /// paging, as Cloud does, so a page may come back short or empty while `next` is still there.
    pub cql_hidden: Vec<u64>,
    /// Pages whose storage body v1 responses leave out (`body` stays expandable), as Confluence
    /// does for a page it cannot render: the client sees that page fail, the others not.
    pub bodiless: Vec<u64>,
    /// Fraction of responses that carry `X-RateLimit-NearLimit: true`.
    pub near_limit_rate: f64,
    /// Where v2 listings put the next link.
    pub v2_links: LinkStyle,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkStyle {
    /// `Link` header and `_links.next` (what Cloud does).
    #[default]
    Both,
    HeaderOnly,
    BodyOnly,
}

/// One kind of injected error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Status to answer with (429, 500, 503, 401, 403, 404...).
    pub status: u16,
    /// Raw `Retry-After` header value, if any (`"2"`, `"999999"`, an HTTP date...).
    #[serde(default)]
    pub retry_after: Option<String>,
    /// Probability per matching request (1.0: always).
    #[serde(default = "always")]
    pub rate: f64,
    /// How many times it may still fire (`None`: unlimited).
    #[serde(default)]
    pub remaining: Option<u32>,
    /// Only requests whose path starts with this (e.g. `/wiki/api/v2/pages`).
    #[serde(default)]
    pub path_prefix: Option<String>,
}

fn always() -> f64 {
    1.0
}

impl FaultRule {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            rate: 1.0,
            remaining: None,
            path_prefix: None,
        }
    }

    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    pub fn times(mut self, remaining: u32) -> Self {
        self.remaining = Some(remaining);
        self
    }

    pub fn on_path(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }
}

/// Request counters, per endpoint and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    pub requests: u64,
    pub by_endpoint: BTreeMap<String, u64>,
    pub faults_injected: u64,
    pub unauthorized: u64,
    /// Most API requests served at the same time.
    pub max_in_flight: u64,
    pub webhooks_delivered: u64,
    pub webhooks_failed: u64,
}

impl SimStats {
    pub fn endpoint(&self, name: &str) -> u64 {
        self.by_endpoint.get(name).copied().unwrap_or(0)
    }
}

/// Why a mutation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutationError {
    #[error("page {0} not found")]
    NotFound(u64),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreatePage {
    pub title: String,
    /// The parent, whose space the page joins; none: under the generated space's homepage.
    pub parent_id: Option<u64>,
    pub body: Option<String>,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EditPage {
    pub title: Option<String>,
    /// New storage body; without one the next generated body is used.
    pub body: Option<String>,
    pub labels: Option<Vec<String>>,
    /// When the edit happened (now by default): tests of windows in the past set it.
    pub modified_at: Option<DateTime<Utc>>,
}

/// A new comment: on the page or blog post, or a reply to `reply_to` (same location).
#[derive(Debug, Clone, Deserialize)]
pub struct CreateComment {
    /// Storage format.
    pub body: String,
    #[serde(default = "footer")]
    pub location: CommentLocation,
    #[serde(default)]
    pub reply_to: Option<u64>,
    /// The text an inline comment highlights.
    #[serde(default)]
    pub selection: Option<String>,
}

/// A new attachment (version 1) or a new version of one (same file name).
#[derive(Debug, Clone, Deserialize)]
pub struct CreateAttachment {
    pub file_name: String,
    pub media_type: String,
    /// The file's bytes.
    pub data: Vec<u8>,
}

fn footer() -> CommentLocation {
    CommentLocation::Footer
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MovePage {
    /// New parent, possibly in another space (the page and its subtree move to that space, as
    /// Confluence's move does); `None` moves the page to the root of its space.
    pub parent_id: Option<u64>,
}

/// A label to add to a page or remove from it (`/_sim/pages/{id}/label`).
#[derive(Debug, Clone, Deserialize)]
pub struct LabelPage {
    pub label: String,
    #[serde(default = "added")]
    pub add: bool,
}

fn added() -> bool {
    true
}

impl Default for LabelPage {
    fn default() -> Self {
        Self {
            label: String::new(),
            add: added(),
        }
    }
}

pub(crate) struct SimState {
    pub config: SimConfig,
    /// The generated space, then `config.other_spaces`.
    primary: SimSpace,
    others: Vec<SimSpace>,
    pub pages: BTreeMap<u64, SimPage>,
    pub comments: BTreeMap<u64, SimComment>,
    pub attachments: BTreeMap<u64, SimAttachment>,
    pub next_id: u64,
    pub faults: Faults,
    pub stats: SimStats,
    pub fault_rng: SplitMix64,
    /// Distinguishes the cursors of successive trailing empty pages.
    pub empty_cursor_serial: u64,
    pub in_flight: u64,
    /// The label of the last label mutation, for its webhook.
    pub last_label: Option<String>,
    /// Webhooks registered through the API (Cloud site-admin and Data Center).
    pub(crate) webhooks: Vec<crate::server::hooks::Registered>,
}

impl SimState {
    pub fn new(config: SimConfig) -> Self {
        let primary = SimSpace::new(
            config.space_id,
            config.space_key.clone(),
            config.space_name.clone(),
        );
        let mut pages = content::generate_pages(
            config.seed,
            primary.id,
            config.page_count,
            config.large_pages,
        );
        let first_blog_post = pages
            .keys()
            .next_back()
            .map_or(content::FIRST_PAGE_ID, |id| id + 1);
        pages.extend(
            content::generate_blog_posts(
                config.seed,
                primary.id,
                first_blog_post,
                config.blog_post_count,
            )
            .into_iter()
            .map(|post| (post.id, post)),
        );
        let first_comment = pages
            .keys()
            .next_back()
            .map_or(content::FIRST_PAGE_ID, |id| id + 1);
        let containers: Vec<_> = pages.values().map(|p| (p.id, p.created_at)).collect();
        let comments: BTreeMap<u64, SimComment> = content::generate_comments(
            config.seed,
            first_comment,
            config.comment_count,
            &containers,
        )
        .into_iter()
        .map(|comment| (comment.id, comment))
        .collect();
        let first_attachment = comments
            .keys()
            .next_back()
            .map_or(first_comment, |id| id + 1);
        let attachments: BTreeMap<u64, SimAttachment> = content::generate_attachments(
            config.seed,
            first_attachment,
            config.attachment_count,
            &containers,
        )
        .into_iter()
        .map(|attachment| (attachment.id, attachment))
        .collect();
        let next_id = attachments
            .keys()
            .next_back()
            .map_or(first_attachment, |id| id + 1);
        let fault_rng = SplitMix64::derive(config.seed, &[0xfa17]);
        let others = config.other_spaces.clone();
        let mut state = Self {
            config,
            primary,
            others,
            pages,
            comments,
            attachments,
            next_id,
            faults: Faults::default(),
            stats: SimStats::default(),
            fault_rng,
            empty_cursor_serial: 0,
            in_flight: 0,
            last_label: None,
            webhooks: Vec::new(),
        };
        // Every space has a homepage (its first page, which cannot be trashed).
        for space in state.others.clone() {
            let homepage = CreatePage {
                title: format!("{} Home", space.name),
                ..CreatePage::default()
            };
            if let Err(error) = state.insert_content(ContentKind::Page, space.id, None, homepage) {
                tracing::warn!(%error, "cannot create a space homepage");
            }
        }
        state
    }

    /// Every space of the site, the generated one first.
    pub fn spaces(&self) -> impl Iterator<Item = &SimSpace> {
        std::iter::once(&self.primary).chain(&self.others)
    }

    pub fn space(&self, id: u64) -> Option<&SimSpace> {
        self.spaces().find(|space| space.id == id)
    }

    /// The space a page (or blog post) belongs to.
    pub fn space_of(&self, page: &SimPage) -> &SimSpace {
        self.space(page.space_id).unwrap_or(&self.primary)
    }

    /// Whether another page of the space already has this title (titles are unique per space).
    fn title_taken(&self, space_id: u64, title: &str, except: Option<u64>) -> bool {
        self.pages
            .values()
            .any(|p| p.space_id == space_id && p.title == title && Some(p.id) != except)
    }

    pub fn count(&mut self, endpoint: &str) {
        self.stats.requests += 1;
        *self
            .stats
            .by_endpoint
            .entry(endpoint.to_owned())
            .or_default() += 1;
    }

    /// The first fault rule that fires for this path, if any.
    pub fn roll_fault(&mut self, path: &str) -> Option<FaultRule> {
        for index in 0..self.faults.rules.len() {
            let roll = self.fault_rng.unit();
            let rule = &mut self.faults.rules[index];
            let applies = rule
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
                && rule.remaining != Some(0)
                && roll < rule.rate;
            if applies {
                if let Some(remaining) = rule.remaining.as_mut() {
                    *remaining -= 1;
                }
                self.stats.faults_injected += 1;
                return Some(rule.clone());
            }
        }
        None
    }

    pub fn roll_near_limit(&mut self) -> bool {
        self.faults.near_limit_rate > 0.0 && self.fault_rng.unit() < self.faults.near_limit_rate
    }

    pub fn current(&self, id: u64) -> Option<&SimPage> {
        self.pages
            .get(&id)
            .filter(|p| p.status == PageStatus::Current)
    }

    /// The current page or folder of that id: what can hold pages.
    fn current_place(&self, id: u64) -> Option<&SimPage> {
        self.current(id)
            .filter(|p| matches!(p.kind, ContentKind::Page | ContentKind::Folder))
    }

    /// A space's homepage: its first page.
    pub fn homepage(&self, space_id: u64) -> Option<u64> {
        self.pages
            .values()
            .find(|p| p.kind == ContentKind::Page && p.space_id == space_id)
            .map(|p| p.id)
    }

    /// Ancestor ids, top-down.
    pub fn ancestors(&self, id: u64) -> Vec<u64> {
        let mut chain = Vec::new();
        let mut cursor = self.pages.get(&id).and_then(|p| p.parent_id);
        while let Some(parent) = cursor {
            if chain.contains(&parent) || chain.len() > 1000 {
                break;
            }
            chain.push(parent);
            cursor = self.pages.get(&parent).and_then(|p| p.parent_id);
        }
        chain.reverse();
        chain
    }

    /// What rendering a page's body needs, detached from the state so that it can run after the
    /// lock is released.
    pub fn body_job(&self, page: &SimPage) -> BodyJob {
        // Link and include targets: a handful of generated pages, deterministic for the page (ids
        // that no longer exist are skipped). Never a page a test created: a generated page that
        // included it would carry the test's text.
        let mut rng = SplitMix64::derive(self.config.seed, &[page.id, 0x11]);
        let span = self.config.page_count.max(1);
        let targets: Vec<&SimPage> = (0..6)
            .map(|_| content::FIRST_PAGE_ID + rng.below(span) as u64)
            .filter_map(|id| self.pages.get(&id))
            .collect();
        let include = targets
            .iter()
            .find(|target| content::is_snippet(target))
            .map(|target| target.title.clone());
        BodyJob {
            seed: self.config.seed,
            page: page.clone(),
            space_key: self.space_of(page).key.clone(),
            titles: targets.iter().map(|p| (p.id, p.title.clone())).collect(),
            include,
        }
    }

    fn actor(&self, page_id: u64) -> usize {
        (page_id as usize) % USERS.len()
    }

    pub fn create(&mut self, request: CreatePage) -> Result<SimPage, MutationError> {
        self.create_content(ContentKind::Page, request)
    }

    /// Creates a folder (version 1, no body) under a page or folder, or under the generated
    /// space's homepage.
    pub fn create_folder(&mut self, request: CreatePage) -> Result<SimPage, MutationError> {
        if request.body.is_some() {
            return Err(MutationError::Invalid("a folder has no body".into()));
        }
        self.create_content(ContentKind::Folder, request)
    }

    /// Publishes a blog post (no parent; version 1).
    pub fn create_blog_post(&mut self, request: CreatePage) -> Result<SimPage, MutationError> {
        if request.parent_id.is_some() {
            return Err(MutationError::Invalid("a blog post has no parent".into()));
        }
        self.create_content(ContentKind::Blogpost, request)
    }

    fn create_content(
        &mut self,
        kind: ContentKind,
        request: CreatePage,
    ) -> Result<SimPage, MutationError> {
        let (space_id, parent_id) = match (kind, request.parent_id) {
            (ContentKind::Blogpost, _) => (self.primary.id, None),
            (ContentKind::Page | ContentKind::Folder, Some(parent)) => {
                let parent = self
                    .current_place(parent)
                    .ok_or(MutationError::NotFound(parent))?;
                (parent.space_id, Some(parent.id))
            }
            (ContentKind::Page | ContentKind::Folder, None) => {
                (self.primary.id, self.homepage(self.primary.id))
            }
        };
        self.insert_content(kind, space_id, parent_id, request)
    }

    /// Adds a page or blog post (version 1) to a space, under `parent_id`.
    fn insert_content(
        &mut self,
        kind: ContentKind,
        space_id: u64,
        parent_id: Option<u64>,
        request: CreatePage,
    ) -> Result<SimPage, MutationError> {
        let title = request.title.trim().to_owned();
        if title.is_empty() {
            return Err(MutationError::Invalid("title must not be empty".into()));
        }
        if self.title_taken(space_id, &title, None) {
            return Err(MutationError::Invalid(format!(
                "a page titled {title:?} already exists in the space"
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        let now = Utc::now();
        let actor = self.actor(id);
        let position = self
            .pages
            .values()
            .filter(|p| p.parent_id == parent_id)
            .count() as u32
            + 1;
        let page = SimPage {
            id,
            kind,
            space_id,
            title,
            parent_id,
            position,
            status: PageStatus::Current,
            version: 1,
            created_at: now,
            modified_at: now,
            author: actor,
            last_modifier: actor,
            labels: request.labels,
            body_target: 4096,
            body: request.body,
        };
        self.pages.insert(id, page.clone());
        Ok(page)
    }

    pub fn edit(&mut self, id: u64, request: EditPage) -> Result<SimPage, MutationError> {
        let space_id = self
            .pages
            .get(&id)
            .ok_or(MutationError::NotFound(id))?
            .space_id;
        if let Some(title) = &request.title
            && self.title_taken(space_id, title, Some(id))
        {
            return Err(MutationError::Invalid(format!(
                "a page titled {title:?} already exists in the space"
            )));
        }
        let actor = self.actor(id + 1);
        let page = self
            .pages
            .get_mut(&id)
            .filter(|p| p.status == PageStatus::Current)
            .ok_or(MutationError::NotFound(id))?;
        page.version += 1;
        page.modified_at = request.modified_at.unwrap_or_else(Utc::now);
        page.last_modifier = actor;
        if let Some(title) = request.title {
            page.title = title;
        }
        if page.kind != ContentKind::Folder {
            page.body = request.body;
        }
        if let Some(labels) = request.labels {
            page.labels = labels;
        }
        Ok(page.clone())
    }

    /// Moves the page to the trash; its children move up to its parent, as Confluence does.
    /// The version is unchanged (Confluence does not version a trash).
    pub fn trash(&mut self, id: u64) -> Result<SimPage, MutationError> {
        let page = self.current(id).ok_or(MutationError::NotFound(id))?;
        let parent = page.parent_id;
        if page.kind == ContentKind::Page && parent.is_none() {
            return Err(MutationError::Invalid(
                "the space homepage cannot be trashed".into(),
            ));
        }
        for child in self.pages.values_mut().filter(|p| p.parent_id == Some(id)) {
            child.parent_id = parent;
        }
        let page = self.pages.get_mut(&id).ok_or(MutationError::NotFound(id))?;
        page.status = PageStatus::Trashed;
        Ok(page.clone())
    }

    /// Moves a folder to the trash with everything under it (pages and folders), as Cloud's
    /// folder deletion does; returns the pages trashed with it (each gets its `page_trashed`).
    pub fn trash_folder(&mut self, id: u64) -> Result<(SimPage, Vec<SimPage>), MutationError> {
        self.current(id)
            .filter(|p| p.kind == ContentKind::Folder)
            .ok_or(MutationError::NotFound(id))?;
        let subtree: Vec<u64> = self
            .pages
            .values()
            .filter(|p| p.status == PageStatus::Current && self.ancestors(p.id).contains(&id))
            .map(|p| p.id)
            .collect();
        let mut pages = Vec::new();
        for trashed in subtree.into_iter().chain([id]) {
            if let Some(page) = self.pages.get_mut(&trashed) {
                page.status = PageStatus::Trashed;
                if page.kind == ContentKind::Page {
                    pages.push(page.clone());
                }
            }
        }
        let folder = self
            .pages
            .get(&id)
            .cloned()
            .ok_or(MutationError::NotFound(id))?;
        Ok((folder, pages))
    }

    /// Purges a trashed page for good.
    pub fn purge(&mut self, id: u64) -> Result<SimPage, MutationError> {
        match self.pages.get(&id) {
            Some(p) if p.status == PageStatus::Trashed => {}
            Some(_) => {
                return Err(MutationError::Invalid(
                    "only a trashed page can be purged".into(),
                ));
            }
            None => return Err(MutationError::NotFound(id)),
        }
        // Purging takes the page's comments with it.
        self.comments
            .retain(|_, comment| comment.container_id != id);
        self.attachments
            .retain(|_, attachment| attachment.container_id != id);
        self.pages.remove(&id).ok_or(MutationError::NotFound(id))
    }

    /// The current attachments of a current page or blog post, in id order.
    pub fn attachments_of(&self, container: u64) -> Vec<&SimAttachment> {
        self.attachments
            .values()
            .filter(|a| a.container_id == container && !a.trashed)
            .collect()
    }

    /// Attaches a file (version 1), or uploads a new version of the page's attachment of the same
    /// file name (version + 1), as Confluence's upload does. The page keeps its version.
    pub fn attach(
        &mut self,
        container_id: u64,
        request: CreateAttachment,
    ) -> Result<SimAttachment, MutationError> {
        self.current(container_id)
            .ok_or(MutationError::NotFound(container_id))?;
        if request.file_name.trim().is_empty() {
            return Err(MutationError::Invalid("file name must not be empty".into()));
        }
        let now = Utc::now();
        if let Some(existing) = self
            .attachments
            .values_mut()
            .find(|a| a.container_id == container_id && a.title == request.file_name && !a.trashed)
        {
            existing.versions.push(request.data);
            existing.version += 1;
            existing.media_type = request.media_type;
            existing.modified_at = now;
            return Ok(existing.clone());
        }
        let id = self.next_id;
        self.next_id += 1;
        let attachment = SimAttachment {
            id,
            container_id,
            title: request.file_name,
            media_type: request.media_type,
            version: 1,
            created_at: now,
            modified_at: now,
            author: self.actor(id),
            trashed: false,
            versions: vec![request.data],
        };
        self.attachments.insert(id, attachment.clone());
        Ok(attachment)
    }

    /// Moves an attachment to the trash (`true`) or restores it.
    pub fn trash_attachment(
        &mut self,
        id: u64,
        trashed: bool,
    ) -> Result<SimAttachment, MutationError> {
        let attachment = self
            .attachments
            .get_mut(&id)
            .ok_or(MutationError::NotFound(id))?;
        attachment.trashed = trashed;
        Ok(attachment.clone())
    }

    /// Deletes an attachment for good.
    pub fn remove_attachment(&mut self, id: u64) -> Result<SimAttachment, MutationError> {
        self.attachments
            .remove(&id)
            .ok_or(MutationError::NotFound(id))
    }

    /// Comments on a page or blog post: top-level ones of `location`, or the replies to `parent`.
    pub fn comments_of(
        &self,
        container: Option<u64>,
        parent: Option<u64>,
        location: CommentLocation,
    ) -> Vec<&SimComment> {
        self.comments
            .values()
            .filter(|c| c.location == location && c.parent_comment_id == parent)
            .filter(|c| container.is_none_or(|id| c.container_id == id))
            .collect()
    }

    /// Adds a comment (version 1). The page's version does not change, as in Confluence.
    pub fn add_comment(
        &mut self,
        container_id: u64,
        request: CreateComment,
    ) -> Result<SimComment, MutationError> {
        self.current(container_id)
            .ok_or(MutationError::NotFound(container_id))?;
        let location = match request.reply_to {
            Some(parent) => {
                let parent = self
                    .comments
                    .get(&parent)
                    .filter(|c| c.container_id == container_id && c.parent_comment_id.is_none())
                    .ok_or(MutationError::NotFound(parent))?;
                parent.location
            }
            None => request.location,
        };
        let top_inline = location == CommentLocation::Inline && request.reply_to.is_none();
        let id = self.next_id;
        self.next_id += 1;
        let now = Utc::now();
        let comment = SimComment {
            id,
            container_id,
            location,
            parent_comment_id: request.reply_to,
            author: self.actor(id),
            created_at: now,
            modified_at: now,
            version: 1,
            body: request.body,
            resolution: top_inline.then_some(Resolution::Open),
            selection: if top_inline {
                Some(request.selection.unwrap_or_default())
            } else {
                None
            },
        };
        self.comments.insert(id, comment.clone());
        Ok(comment)
    }

    /// Edits a comment's body (its version + 1).
    pub fn edit_comment(&mut self, id: u64, body: String) -> Result<SimComment, MutationError> {
        let comment = self
            .comments
            .get_mut(&id)
            .ok_or(MutationError::NotFound(id))?;
        comment.body = body;
        comment.version += 1;
        comment.modified_at = Utc::now();
        Ok(comment.clone())
    }

    /// Resolves (or reopens) a top-level inline comment.
    pub fn resolve_comment(
        &mut self,
        id: u64,
        resolved: bool,
    ) -> Result<SimComment, MutationError> {
        let comment = self
            .comments
            .get_mut(&id)
            .ok_or(MutationError::NotFound(id))?;
        if comment.resolution.is_none() {
            return Err(MutationError::Invalid(
                "only a top-level inline comment can be resolved".into(),
            ));
        }
        comment.resolution = Some(if resolved {
            Resolution::Resolved
        } else {
            Resolution::Reopened
        });
        comment.modified_at = Utc::now();
        Ok(comment.clone())
    }

    /// Deletes a comment and its replies.
    pub fn remove_comment(&mut self, id: u64) -> Result<SimComment, MutationError> {
        let comment = self
            .comments
            .remove(&id)
            .ok_or(MutationError::NotFound(id))?;
        self.comments
            .retain(|_, reply| reply.parent_comment_id != Some(id));
        Ok(comment)
    }

    /// Restores a trashed page (to the root when its parent is gone). The version is unchanged; the
    /// modification date moves, as in Cloud's `page_restored`.
    pub fn restore(&mut self, id: u64) -> Result<SimPage, MutationError> {
        let parent_alive =
            |state: &Self, parent: Option<u64>| parent.is_none_or(|p| state.current(p).is_some());
        let (parent, homepage) = match self.pages.get(&id) {
            Some(p) if p.status == PageStatus::Trashed => (p.parent_id, self.homepage(p.space_id)),
            Some(_) => {
                return Err(MutationError::Invalid(
                    "only a trashed page can be restored".into(),
                ));
            }
            None => return Err(MutationError::NotFound(id)),
        };
        let parent = if parent_alive(self, parent) {
            parent
        } else {
            homepage
        };
        let page = self.pages.get_mut(&id).ok_or(MutationError::NotFound(id))?;
        page.status = PageStatus::Current;
        page.parent_id = parent;
        page.modified_at = Utc::now();
        Ok(page.clone())
    }

    /// Adds or removes one label. Confluence creates no version and leaves the modification date
    /// (CQL's `lastmodified`) as it was: only the label webhook or a listing tells.
    pub fn label(&mut self, id: u64, label: &str, add: bool) -> Result<SimPage, MutationError> {
        if label.trim().is_empty() {
            return Err(MutationError::Invalid("a label cannot be empty".into()));
        }
        let page = self
            .pages
            .get_mut(&id)
            .filter(|p| p.status == PageStatus::Current)
            .ok_or(MutationError::NotFound(id))?;
        page.labels.retain(|known| known != label);
        if add {
            page.labels.push(label.to_owned());
        }
        let page = page.clone();
        self.last_label = Some(label.to_owned());
        Ok(page)
    }

    /// Moves a page (or a folder, with what it holds) under another page or folder. The version
    /// is unchanged; the modification date moves.
    /// Under a page of another space, the page and its subtree (with their comments and
    /// attachments) move to that space, unless a title is taken there.
    pub fn move_page(&mut self, id: u64, request: MovePage) -> Result<SimPage, MutationError> {
        let from_space = self
            .current_place(id)
            .ok_or(MutationError::NotFound(id))?
            .space_id;
        let mut to_space = from_space;
        if let Some(parent) = request.parent_id {
            to_space = self
                .current_place(parent)
                .ok_or(MutationError::NotFound(parent))?
                .space_id;
            if parent == id || self.ancestors(parent).contains(&id) {
                return Err(MutationError::Invalid(
                    "a page cannot move under itself".into(),
                ));
            }
        }
        if to_space != from_space {
            let subtree: Vec<u64> = self
                .pages
                .values()
                .filter(|p| p.id == id || self.ancestors(p.id).contains(&id))
                .map(|p| p.id)
                .collect();
            for moving in &subtree {
                let title = self.pages.get(moving).map(|p| p.title.clone());
                if let Some(title) = title
                    && self.title_taken(to_space, &title, None)
                {
                    return Err(MutationError::Invalid(format!(
                        "a page titled {title:?} already exists in the target space"
                    )));
                }
            }
            for moving in subtree {
                if let Some(page) = self.pages.get_mut(&moving) {
                    page.space_id = to_space;
                }
            }
        }
        let page = self.pages.get_mut(&id).ok_or(MutationError::NotFound(id))?;
        page.parent_id = request.parent_id;
        page.modified_at = Utc::now();
        Ok(page.clone())
    }
}

/// A storage body to render (see [`SimState::body_job`]).
pub(crate) struct BodyJob {
    seed: u64,
    page: SimPage,
    space_key: String,
    titles: Vec<(u64, String)>,
    include: Option<String>,
}

impl BodyJob {
    pub fn render(&self) -> String {
        let titles: Vec<(u64, &str)> = self
            .titles
            .iter()
            .map(|(id, t)| (*id, t.as_str()))
            .collect();
        let targets = LinkTargets {
            space_key: &self.space_key,
            titles: &titles,
            include: self.include.as_deref(),
        };
        content::render_body(self.seed, &self.page, &targets)
    }
}

impl SimState {
    /// Creates a space with its homepage; returns the homepage's id.
    pub fn add_space(&mut self, space: SimSpace) -> Result<u64, MutationError> {
        if self
            .spaces()
            .any(|s| s.id == space.id || s.key.eq_ignore_ascii_case(&space.key))
        {
            return Err(MutationError::Invalid(format!(
                "a space with key {:?} or id {} already exists",
                space.key, space.id
            )));
        }
        self.others.push(space.clone());
        let homepage = CreatePage {
            title: format!("{} Home", space.name),
            ..CreatePage::default()
        };
        Ok(self
            .insert_content(ContentKind::Page, space.id, None, homepage)?
            .id)
    }

    /// Deletes a space (not the generated one) with its pages, blog posts, comments and
    /// attachments, as Confluence's space deletion does: the API no longer serves any of them.
    pub fn delete_space(&mut self, key: &str) -> Result<SimSpace, MutationError> {
        let index = self
            .others
            .iter()
            .position(|s| s.key.eq_ignore_ascii_case(key))
            .ok_or_else(|| MutationError::Invalid(format!("no other space has key {key:?}")))?;
        let space = self.others.remove(index);
        self.pages.retain(|_, page| page.space_id != space.id);
        let pages = &self.pages;
        self.comments
            .retain(|_, comment| pages.contains_key(&comment.container_id));
        self.attachments
            .retain(|_, attachment| pages.contains_key(&attachment.container_id));
        Ok(space)
    }
}
