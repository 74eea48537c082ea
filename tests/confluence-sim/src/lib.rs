//! A Confluence Cloud simulator for tests, benchmarks and the demo.
//!
//! It serves what the fetcher uses, as Cloud does: v1 CQL search and content (`/wiki/rest/api/…`,
//! `_links.next` relative to `_links.base`) and v2 pages, page, ancestors, spaces and space pages,
//! and the same for blog posts (`/wiki/api/v2/blogposts`, `/blogposts/{id}`,
//! `/spaces/{id}/blogposts`; ids are unique across both types) (`/wiki/api/v2/…`, cursors in
//! `Link` headers and `_links.next`), with Basic auth (and Bearer
//! for Data Center style), v1/v2 error bodies and a 400 for CQL outside the supported subset.
//! The space is generated from a seed: a tree up to seven levels deep, bodies of 1–75 KB (and a
//! few over 1 MB) rendered on demand with every storage construct the converter handles; about
//! half of them include a snippet page (one of the pages under 2 KB), as the samples' real pages do.
//! `SimConfig::other_spaces` adds spaces holding only a homepage; pages are created in them or
//! moved there (a move under a page of another space takes the subtree along, keeps the version
//! and sends `page_moved` with the new space), and every response names each page's own space
//! (v1 `space`, v2 `spaceId`, CQL `space = KEY`, `/spaces`, `/spaces/{id}/pages`, webhooks).
//! [`SimHandle::add_space`] and [`SimHandle::delete_space`] create and delete spaces while it
//! runs; v1 `/wiki/rest/api/space` lists them as Data Center does (`spaceKey`, `start`/`limit`).
//! Webhooks register through the API as on the real sites: Cloud's site-admin resource
//! `POST|GET /wiki/rest/webhooks/1.0/webhook`, `DELETE …/webhook/{id}` (deliveries unsigned, to
//! the registered URL) and Data Center's `POST|GET /rest/api/webhooks`, `DELETE …/{id}`
//! (deliveries name their `event` and are signed with `configuration.secret`); every mutation's
//! webhook also goes to each registration subscribed to its event.
//!
//! Tests start it in-process with [`start`] and steer it through the [`SimHandle`]; the
//! `confluence-sim` binary serves the same thing, steered over HTTP:
//!
//! - `GET|DELETE /_sim/stats`: request counters per endpoint (`v1.search`, `v1.content`,
//!   `v2.pages`, `v2.page`, `v2.ancestors`, `v2.spaces`, `v2.space_pages`, `v2.blogposts`,
//!   `v2.blogpost`, `v2.space_blogposts`, `v2.folder`, `v1.content.list`), faults injected,
//!   webhooks sent.
//! - `GET|PUT|DELETE /_sim/faults`: a [`Faults`] document (error rules with rate, count and
//!   `Retry-After`, latency, page-size cap, trailing empty pages, near-limit signals, link style).
//! - `GET /_sim/pages`, `POST /_sim/pages` (create), `POST /_sim/pages/{id}/{edit|move|trash|
//!   purge|restore|label}`: mutations that change versions and dates as Confluence does (create: 1,
//!   edit: +1; trash, restore, move and a label (`{"label", "add"}`) keep the version) and POST
//!   the matching Cloud webhook to `{webhook_target}/{event}` before answering. `POST /_sim/blogposts` publishes a blog post;
//!   the page mutations apply to blog posts too (but move), with `blog_*` webhooks.
//! - Comments (`SimConfig::comment_count`, generated with replies and resolved inline ones):
//!   `/wiki/api/v2/{pages|blogposts}/{id}/{footer|inline}-comments` (top level, with
//!   `resolutionStatus` and the highlighted selection for inline ones) and
//!   `/wiki/api/v2/{footer|inline}-comments/{id}/children` (replies), and the v1 CQL search
//!   `type = comment` (with `container`, the replies' `ancestors` and `extensions.location`,
//!   `.resolution`, `.inlineProperties`); [`SimHandle::add_comment`]
//!   and its siblings send `comment_*` webhooks carrying the page under `parent`, and leave the
//!   page's version alone, as Confluence does.
//! - Attachments (`SimConfig::attachment_count` small text files, or any file a test attaches):
//!   `/wiki/api/v2/{pages|blogposts}/{id}/attachments`, `/wiki/api/v2/attachments/{id}` (ids
//!   `att…`), the file's bytes at `/wiki/download/attachments/{pageId}/{fileName}?version=N` (every
//!   version kept), and the v1 CQL search `type = attachment` (`extensions.mediaType`,
//!   `.fileSize`, `_links.download`, `container`); [`SimHandle::attach`] and its siblings send
//!   `attachment_*` webhooks carrying the page as `attachedTo`, and leave its version alone.
//! - Folders (Cloud; `POST /_sim/folders`, [`SimHandle::create_folder`]): `GET
//!   /wiki/api/v2/folders/{id}` (`FolderSingle`: title, `parentId`, `parentType`, version, no
//!   body); a page or folder under one names it with `parentType: folder`; v1 and v2 ancestors
//!   run through folders (`type: folder`); folders are not listed with the pages, nor found by
//!   CQL `type = page`. Rename (`edit`) and move work as for pages and send no webhook (Cloud's
//!   webhooks name no folder events); a trash ([`SimHandle::trash_folder`]) takes everything
//!   under the folder to the trash and sends `page_trashed` for each page.
//! - v1 `GET /wiki/rest/api/content?spaceKey=KEY&title=T` (`type` page by default, `expand`):
//!   the page of that title in that space, as include macros name pages.

mod content;
mod cql;
mod rng;
mod server;
mod state;
mod webhook;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use content::{
    CommentLocation, ContentKind, FIRST_PAGE_ID, MAX_DEPTH, PageStatus, Resolution, SimAttachment,
    SimComment, SimPage, USERS,
};
pub use state::{
    CreateAttachment, CreateComment, CreatePage, EditPage, FaultRule, Faults, LinkStyle, MovePage,
    MutationError, SimConfig, SimSpace, SimStats,
};
pub use webhook::{WebhookDelivery, WebhookEvent, signature as webhook_signature};

use server::Shared;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the webhook client: {0}")]
    Http(#[source] reqwest::Error),
}

/// A running simulator. Dropping it stops the server.
pub struct RunningSim {
    pub addr: SocketAddr,
    pub handle: SimHandle,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningSim {
    /// The wiki root to give a client: `http://127.0.0.1:PORT/wiki`.
    pub fn base_url(&self) -> String {
        self.handle.base_url()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Generates the space and serves it on `addr` (port 0 for an ephemeral port).
pub async fn start(config: SimConfig, addr: SocketAddr) -> Result<RunningSim, SimError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SimError::Bind { addr, source })?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(SimError::Http)?;
    let site = format!("http://{addr}/wiki");
    let shared = Arc::new(Shared {
        state: Mutex::new(state::SimState::new(config)),
        http,
        site,
    });
    let app = server::router(Arc::clone(&shared));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "confluence simulator stopped");
        }
    });
    tracing::info!(%addr, "confluence simulator listening");
    Ok(RunningSim {
        addr,
        handle: SimHandle { shared },
        shutdown: Some(tx),
        task,
    })
}

/// Steers a running simulator from the test that started it. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

/// A mutation's result: the page after it, and the webhook it sent (when a target is set).
pub type Mutation = (SimPage, Option<WebhookDelivery>);

/// A comment mutation's result: the comment, and the webhook it sent.
pub type CommentMutation = (SimComment, Option<WebhookDelivery>);

/// An attachment mutation's result: the attachment, and the webhook it sent.
pub type AttachmentMutation = (SimAttachment, Option<WebhookDelivery>);

impl SimHandle {
    pub fn base_url(&self) -> String {
        self.shared.site.clone()
    }

    pub fn space_key(&self) -> String {
        self.shared.lock().config.space_key.clone()
    }

    pub fn space_id(&self) -> u64 {
        self.shared.lock().config.space_id
    }

    /// Every space of the site, the generated one first.
    pub fn spaces(&self) -> Vec<SimSpace> {
        self.shared.lock().spaces().cloned().collect()
    }

    /// Creates a space holding only its homepage (a sync of a source over every space finds
    /// it); returns the homepage's id.
    pub fn add_space(&self, space: SimSpace) -> Result<u64, MutationError> {
        self.shared.lock().add_space(space)
    }

    /// Deletes a space (not the generated one) and everything in it.
    pub fn delete_space(&self, key: &str) -> Result<SimSpace, MutationError> {
        self.shared.lock().delete_space(key)
    }

    /// A space's homepage: its first page.
    pub fn homepage(&self, space_id: u64) -> Option<u64> {
        self.shared.lock().homepage(space_id)
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults = Faults::default();
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    pub fn stats(&self) -> SimStats {
        self.shared.lock().stats.clone()
    }

    pub fn reset_stats(&self) {
        self.shared.lock().stats = SimStats::default();
    }

    /// Sets (or clears) where mutations send webhooks.
    pub fn set_webhook_target(&self, target: Option<String>) {
        self.shared.lock().config.webhook_target = target;
    }

    /// Every page, trashed ones included.
    pub fn pages(&self) -> Vec<SimPage> {
        self.shared.lock().pages.values().cloned().collect()
    }

    /// Ids of the current (not trashed) pages, ascending (blog posts excluded).
    pub fn current_page_ids(&self) -> Vec<u64> {
        self.current_ids(ContentKind::Page)
    }

    /// Ids of the current (not trashed) blog posts, ascending.
    pub fn current_blog_post_ids(&self) -> Vec<u64> {
        self.current_ids(ContentKind::Blogpost)
    }

    fn current_ids(&self, kind: ContentKind) -> Vec<u64> {
        let state = self.shared.lock();
        state
            .pages
            .values()
            .filter(|p| p.status == PageStatus::Current && p.kind == kind)
            .map(|p| p.id)
            .collect()
    }

    pub fn page(&self, id: u64) -> Option<SimPage> {
        self.shared.lock().pages.get(&id).cloned()
    }

    /// The storage body the API serves for a page at its current version.
    pub fn body(&self, id: u64) -> Option<String> {
        let state = self.shared.lock();
        state
            .pages
            .get(&id)
            .map(|page| state.body_job(page).render())
    }

    /// Ancestor ids of a page, top-down.
    pub fn ancestors(&self, id: u64) -> Vec<u64> {
        self.shared.lock().ancestors(id)
    }

    pub async fn create(&self, request: CreatePage) -> Result<Mutation, MutationError> {
        server::mutate(&self.shared, WebhookEvent::PageCreated, |s| {
            s.create(request)
        })
        .await
    }

    /// Publishes a blog post (a `blog_created` webhook).
    pub async fn create_blog_post(&self, request: CreatePage) -> Result<Mutation, MutationError> {
        server::mutate(&self.shared, WebhookEvent::PageCreated, |s| {
            s.create_blog_post(request)
        })
        .await
    }

    /// Creates a folder (Cloud) under a page or folder (`parent_id`), or under the homepage; no
    /// webhook (Cloud sends none for folders).
    pub async fn create_folder(&self, request: CreatePage) -> Result<Mutation, MutationError> {
        server::mutate(&self.shared, WebhookEvent::PageCreated, |s| {
            s.create_folder(request)
        })
        .await
    }

    /// Trashes a folder and everything under it: a `page_trashed` webhook for each page.
    pub async fn trash_folder(
        &self,
        id: u64,
    ) -> Result<(SimPage, Vec<WebhookDelivery>), MutationError> {
        server::trash_folder(&self.shared, id).await
    }

    /// Edits a page or a blog post (`page_updated` or `blog_updated`), or renames a folder (no
    /// webhook).
    pub async fn edit(&self, id: u64, request: EditPage) -> Result<Mutation, MutationError> {
        server::mutate(&self.shared, WebhookEvent::PageUpdated, |s| {
            s.edit(id, request)
        })
        .await
    }

    pub async fn move_page(&self, id: u64, request: MovePage) -> Result<Mutation, MutationError> {
        server::mutate(&self.shared, WebhookEvent::PageMoved, |s| {
            s.move_page(id, request)
        })
        .await
    }

    pub async fn trash(&self, id: u64) -> Result<Mutation, MutationError> {
        server::mutate(&self.shared, WebhookEvent::PageTrashed, |s| s.trash(id)).await
    }

    pub async fn purge(&self, id: u64) -> Result<Mutation, MutationError> {
        server::mutate(&self.shared, WebhookEvent::PageRemoved, |s| s.purge(id)).await
    }

    /// Adds (`add`) or removes a label: no new version, a `label_added` / `label_removed` webhook.
    pub async fn label(&self, id: u64, label: &str, add: bool) -> Result<Mutation, MutationError> {
        server::mutate(&self.shared, WebhookEvent::label(add), |s| {
            s.label(id, label, add)
        })
        .await
    }

    /// Every comment and reply on a page or blog post, in id order.
    pub fn comments(&self, container_id: u64) -> Vec<SimComment> {
        let state = self.shared.lock();
        state
            .comments
            .values()
            .filter(|c| c.container_id == container_id)
            .cloned()
            .collect()
    }

    /// Comments on a page or blog post (a `comment_created` webhook; the page keeps its version).
    pub async fn add_comment(
        &self,
        container_id: u64,
        request: CreateComment,
    ) -> Result<CommentMutation, MutationError> {
        server::mutate_comment(&self.shared, WebhookEvent::CommentCreated, |s| {
            s.add_comment(container_id, request)
        })
        .await
    }

    pub async fn edit_comment(
        &self,
        id: u64,
        body: String,
    ) -> Result<CommentMutation, MutationError> {
        server::mutate_comment(&self.shared, WebhookEvent::CommentUpdated, |s| {
            s.edit_comment(id, body)
        })
        .await
    }

    /// Resolves (`true`) or reopens an inline comment (a `comment_updated` webhook).
    pub async fn resolve_comment(
        &self,
        id: u64,
        resolved: bool,
    ) -> Result<CommentMutation, MutationError> {
        server::mutate_comment(&self.shared, WebhookEvent::CommentUpdated, |s| {
            s.resolve_comment(id, resolved)
        })
        .await
    }

    /// Deletes a comment and its replies (a `comment_removed` webhook).
    pub async fn remove_comment(&self, id: u64) -> Result<CommentMutation, MutationError> {
        server::mutate_comment(&self.shared, WebhookEvent::CommentRemoved, |s| {
            s.remove_comment(id)
        })
        .await
    }

    /// The current attachments of a page or blog post, in id order.
    pub fn attachments(&self, container_id: u64) -> Vec<SimAttachment> {
        self.shared
            .lock()
            .attachments_of(container_id)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Attaches a file to a page or blog post (`attachment_created`), or uploads a new version
    /// of its attachment of that file name (`attachment_updated`). The page keeps its version.
    pub async fn attach(
        &self,
        container_id: u64,
        request: CreateAttachment,
    ) -> Result<AttachmentMutation, MutationError> {
        let event = if self
            .shared
            .lock()
            .attachments_of(container_id)
            .iter()
            .any(|a| a.title == request.file_name)
        {
            WebhookEvent::AttachmentUpdated
        } else {
            WebhookEvent::AttachmentCreated
        };
        server::mutate_attachment(&self.shared, event, |s| s.attach(container_id, request)).await
    }

    /// Moves an attachment to the trash (`attachment_trashed`).
    pub async fn trash_attachment(&self, id: u64) -> Result<AttachmentMutation, MutationError> {
        server::mutate_attachment(&self.shared, WebhookEvent::AttachmentTrashed, |s| {
            s.trash_attachment(id, true)
        })
        .await
    }

    /// Restores a trashed attachment (`attachment_restored`).
    pub async fn restore_attachment(&self, id: u64) -> Result<AttachmentMutation, MutationError> {
        server::mutate_attachment(&self.shared, WebhookEvent::AttachmentRestored, |s| {
            s.trash_attachment(id, false)
        })
        .await
    }

    /// Deletes an attachment for good (`attachment_removed`).
    pub async fn remove_attachment(&self, id: u64) -> Result<AttachmentMutation, MutationError> {
        server::mutate_attachment(&self.shared, WebhookEvent::AttachmentRemoved, |s| {
            s.remove_attachment(id)
        })
        .await
    }

    pub async fn restore(&self, id: u64) -> Result<Mutation, MutationError> {
        server::mutate(&self.shared, WebhookEvent::PageRestored, |s| s.restore(id)).await
    }
}
