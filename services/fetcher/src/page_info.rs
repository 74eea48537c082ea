//! Building `page.changed` payloads from what Confluence returns (v2 pages and blog posts, or v1
//! search content).

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::Utc;
use pagestream_confluence::{
    Attachment, AttachmentContent, Comment, Content, ContentAncestor, ContentLinks, Page, SpaceId,
};
use pagestream_events::{
    Ancestor, Author, CommentLocation, ContentType, PageChanged, PageComment, PageId, PageInfo,
    SourceKey,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::FetcherError;

/// Deepest ancestor chain followed through a listing (Confluence allows far fewer levels).
const MAX_DEPTH: usize = 256;

/// What every page of one source shares.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub source: SourceKey,
    /// The source's registry id, carried in its events (see [`PageInfo::source_id`]).
    pub source_id: Uuid,
    /// The space a run lists now (a hint's page names its own).
    pub space_key: String,
    /// The spaces whose pages belong to the source.
    pub spaces: pagestream_sources::Spaces,
    /// The wiki root, without a trailing slash (`https://x.atlassian.net/wiki`).
    pub base: String,
    /// Data Center has no v2 API: listings and confirmations go through v1.
    pub data_center: bool,
    /// The space's v2 id (Cloud), to tell a page moved to another space.
    pub space_id: Option<SpaceId>,
}

struct Node {
    content_type: ContentType,
    parent: Option<PageId>,
    /// The parent is a folder (v2 `parentType`).
    parent_is_folder: bool,
    title: String,
    version: u64,
    /// Sorted; none where the listing did not say.
    labels: Option<Vec<String>>,
}

/// Parent, title and version of every listed page (and blog post), to derive ancestors without a
/// request per page.
#[derive(Default)]
pub(crate) struct Tree {
    nodes: HashMap<PageId, Node>,
    /// The folders above listed pages (Cloud): their parent and title. Not indexed.
    folders: HashMap<PageId, Folder>,
}

struct Folder {
    parent: Option<PageId>,
    parent_is_folder: bool,
    title: String,
}

impl Tree {
    /// A page or blog post of a v2 listing.
    pub fn insert_page(&mut self, page: &Page, content_type: ContentType) {
        self.nodes.insert(
            page.id.clone(),
            Node {
                content_type,
                parent: page.parent_id.clone(),
                parent_is_folder: is_folder(page.parent_type.as_deref()),
                title: page.title.clone(),
                version: page.version_number(),
                labels: None,
            },
        );
    }

    /// A page or blog post of a v1 search expanded with its ancestors (the parent last).
    pub fn insert_content(&mut self, content: &Content, content_type: ContentType) {
        self.nodes.insert(
            content.id.clone(),
            Node {
                content_type,
                parent: content.ancestors.last().map(|a| a.id.clone()),
                parent_is_folder: content
                    .ancestors
                    .last()
                    .is_some_and(|a| is_folder(a.content_type.as_deref())),
                title: content.title.clone(),
                version: content.version_number(),
                labels: content
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.as_ref())
                    .map(|_| {
                        let mut labels = content.label_names();
                        labels.sort();
                        labels
                    }),
            },
        );
    }

    /// A folder above listed pages (v2 `GET /folders/{id}`).
    pub fn insert_folder(&mut self, folder: &Page) {
        self.folders.insert(
            folder.id.clone(),
            Folder {
                parent: folder.parent_id.clone(),
                parent_is_folder: is_folder(folder.parent_type.as_deref()),
                title: folder.title.clone(),
            },
        );
    }

    /// The folders that listed pages or known folders name as their parent, and that are not
    /// known yet.
    pub fn unknown_folders(&self) -> BTreeSet<PageId> {
        let pages = self
            .nodes
            .values()
            .map(|node| (node.parent.as_ref(), node.parent_is_folder));
        let folders = self
            .folders
            .values()
            .map(|folder| (folder.parent.as_ref(), folder.parent_is_folder));
        pages
            .chain(folders)
            .filter_map(|(parent, is_folder)| parent.filter(|_| is_folder))
            .filter(|parent| !self.folders.contains_key(*parent))
            .cloned()
            .collect()
    }

    /// The listed pages (not blog posts) by title, as include macros name them.
    pub fn page_titles(&self) -> HashMap<String, PageId> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.content_type == ContentType::Page)
            .map(|(id, node)| (node.title.clone(), id.clone()))
            .collect()
    }

    /// Adds what another space's listing holds (ids are unique across spaces).
    pub fn extend(&mut self, other: Tree) {
        self.nodes.extend(other.nodes);
        self.folders.extend(other.folders);
    }

    /// Records a listed page's labels (sorted).
    pub fn set_labels(&mut self, id: &PageId, labels: Vec<String>) {
        if let Some(node) = self.nodes.get_mut(id) {
            node.labels = Some(labels);
        }
    }

    /// A listed page's labels, sorted, where the listing said.
    pub fn labels(&self, id: &PageId) -> Option<&[String]> {
        self.nodes.get(id).and_then(|node| node.labels.as_deref())
    }

    /// Every listed page with its version.
    pub fn versions(&self) -> impl Iterator<Item = (&PageId, u64)> {
        self.nodes.iter().map(|(id, node)| (id, node.version))
    }

    /// What a listed item is (a page where the listing did not say).
    pub fn content_type(&self, id: &PageId) -> ContentType {
        self.nodes
            .get(id)
            .map_or(ContentType::Page, |node| node.content_type)
    }

    pub fn contains(&self, id: &PageId) -> bool {
        self.nodes.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Ancestors of a page, top-down, as far as the listing knows them.
    pub fn ancestors(&self, id: &PageId) -> Vec<Ancestor> {
        let mut chain = Vec::new();
        let mut seen = HashSet::from([id.clone()]);
        let mut current = self.nodes.get(id).and_then(|node| node.parent.clone());
        while let Some(parent) = current {
            if chain.len() >= MAX_DEPTH || !seen.insert(parent.clone()) {
                break;
            }
            // A page's ancestors run through the folders above it.
            let (title, next) = match (self.nodes.get(&parent), self.folders.get(&parent)) {
                (Some(node), _) => (Some(node.title.clone()), node.parent.clone()),
                (None, Some(folder)) => (Some(folder.title.clone()), folder.parent.clone()),
                (None, None) => (None, None),
            };
            chain.push(Ancestor { id: parent, title });
            current = next;
        }
        chain.reverse();
        chain
    }
}

fn is_folder(kind: Option<&str>) -> bool {
    kind == Some("folder")
}

/// `/root/parent/page`.
pub(crate) fn path(ancestors: &[Ancestor], page: &PageId) -> String {
    let mut path = String::new();
    for id in ancestors.iter().map(|a| &a.id).chain(std::iter::once(page)) {
        path.push('/');
        path.push_str(id.as_str());
    }
    path
}

fn url(site: &Site, links: &ContentLinks, id: &PageId) -> String {
    let base = links
        .base
        .as_deref()
        .unwrap_or(&site.base)
        .trim_end_matches('/');
    match links.webui.as_deref() {
        Some(webui) if webui.starts_with('/') => format!("{base}{webui}"),
        _ => format!("{base}/pages/viewpage.action?pageId={id}"),
    }
}

fn missing_body(id: &PageId) -> FetcherError {
    FetcherError::InvalidPage(format!("page {id} came without a storage body"))
}

/// From a v2 page or blog post fetched with its body; `ancestors` top-down (none for a blog
/// post).
pub(crate) fn from_page(
    site: &Site,
    page: &Page,
    content_type: ContentType,
    ancestors: Vec<Ancestor>,
) -> Result<PageChanged, FetcherError> {
    let body = page.storage().ok_or_else(|| missing_body(&page.id))?;
    let version = page.version.as_ref();
    let author = version
        .and_then(|v| v.author_id.clone())
        .or_else(|| page.author_id.clone())
        .map(|account_id| Author {
            account_id: Some(account_id),
            display_name: None,
        });
    Ok(PageChanged {
        page: PageInfo {
            source: site.source.clone(),
            page_id: page.id.clone(),
            content_type,
            space_key: site.space_key.clone(),
            title: page.title.clone(),
            version: page.version_number(),
            path: path(&ancestors, &page.id),
            url: url(site, &page.links, &page.id),
            ancestors,
            labels: page.label_names(),
            author,
            created_at: page.created_at,
            last_modified: version
                .and_then(|v| v.created_at)
                .or(page.created_at)
                .unwrap_or_else(Utc::now),
            incarnation: 0,
            source_id: Some(site.source_id),
        },
        body_storage: body.to_owned(),
        comments: Vec::new(),
        attachments: Vec::new(),
        included: Vec::new(),
    })
}

/// From v1 content (a page or a blog post, `content_type`) expanded with
/// [`pagestream_confluence::SYNC_EXPAND`].
pub(crate) fn from_content(
    site: &Site,
    content: &Content,
    content_type: ContentType,
) -> Result<PageChanged, FetcherError> {
    let body = content.storage().ok_or_else(|| missing_body(&content.id))?;
    let ancestors: Vec<Ancestor> = content
        .ancestors
        .iter()
        .map(|a| Ancestor {
            id: a.id.clone(),
            title: a.title.clone(),
        })
        .collect();
    let history = content.history.as_ref();
    let author = content
        .version
        .as_ref()
        .and_then(|v| v.by.as_ref())
        .or_else(|| history.and_then(|h| h.created_by.as_ref()))
        .map(|user| Author {
            account_id: user.account_id.clone(),
            display_name: user.display_name.clone().or(user.public_name.clone()),
        });
    Ok(PageChanged {
        page: PageInfo {
            source: site.source.clone(),
            page_id: content.id.clone(),
            content_type,
            space_key: content
                .space
                .as_ref()
                .map_or_else(|| site.space_key.clone(), |s| s.key.clone()),
            title: content.title.clone(),
            version: content.version_number(),
            path: path(&ancestors, &content.id),
            url: url(site, &content.links, &content.id),
            ancestors,
            labels: content.label_names(),
            author,
            created_at: history.and_then(|h| h.created_date),
            last_modified: content.last_modified().unwrap_or_else(Utc::now),
            incarnation: 0,
            source_id: Some(site.source_id),
        },
        body_storage: body.to_owned(),
        comments: Vec::new(),
        attachments: Vec::new(),
        included: Vec::new(),
    })
}

/// A page's comments from its v2 listings (top-level ones, each followed by its replies), in
/// [`canonical`] order; comments that are not current are left out.
pub(crate) fn comments(listed: Vec<(CommentLocation, Comment)>) -> Vec<PageComment> {
    let comments = listed
        .into_iter()
        .filter(|(_, comment)| comment.status.as_deref().is_none_or(|s| s == "current"))
        .map(|(location, comment)| {
            let version = comment.version.as_ref();
            PageComment {
                location,
                parent_id: comment.parent_comment_id.clone(),
                author: account(version.and_then(|v| v.author_id.clone())),
                last_modified: version.and_then(|v| v.created_at),
                version: comment.version_number(),
                body_storage: comment.storage().unwrap_or_default().to_owned(),
                resolution: comment.resolution_status.clone(),
                selection: comment
                    .properties
                    .as_ref()
                    .and_then(|p| p.inline_original_selection.clone())
                    .filter(|selection| !selection.is_empty()),
                id: comment.id,
            }
        })
        .collect();
    canonical(comments)
}

/// The page or blog post that a search result of type `kind` sits on, if the result is current
/// content of that type.
fn current_on_a_page<'a>(
    kind: &str,
    content_type: Option<&str>,
    status: Option<&str>,
    container: Option<&'a ContentAncestor>,
) -> Option<&'a ContentAncestor> {
    if content_type != Some(kind) || status.is_some_and(|s| s != "current") {
        return None;
    }
    let container = container?;
    let on_a_page = container
        .content_type
        .as_deref()
        .is_none_or(|kind| ContentType::from_confluence(kind).is_some());
    on_a_page.then_some(container)
}

/// A comment of a v1 comment search (expanded with
/// [`pagestream_confluence::COMMENT_EXPAND`]) and the id of the page it is on; none for content
/// that is not a current comment on a page or blog post.
pub(crate) fn comment_from_content(content: &Content) -> Option<(PageId, PageComment)> {
    let container = current_on_a_page(
        "comment",
        content.content_type.as_deref(),
        content.status.as_deref(),
        content.container.as_ref(),
    )?;
    let extensions = content.extensions.as_ref();
    let location = match extensions.and_then(|e| e.location.as_deref()) {
        Some("inline") => CommentLocation::Inline,
        _ => CommentLocation::Footer,
    };
    let version = content.version.as_ref();
    let comment = PageComment {
        id: content.id.clone(),
        location,
        // A reply's ancestors are the comments above it, the one it answers last.
        parent_id: content
            .ancestors
            .iter()
            .rev()
            .find(|a| {
                a.content_type
                    .as_deref()
                    .is_none_or(|kind| kind == "comment")
            })
            .map(|a| a.id.clone()),
        author: account(version.and_then(|v| v.by.as_ref()?.account_id.clone())),
        last_modified: version.and_then(|v| v.when),
        version: content.version_number(),
        body_storage: content.storage().unwrap_or_default().to_owned(),
        resolution: extensions
            .and_then(|e| e.resolution.as_ref())
            .and_then(|r| r.status.clone()),
        selection: extensions
            .and_then(|e| e.inline_properties.as_ref())
            .and_then(|p| p.original_selection.clone())
            .filter(|selection| !selection.is_empty()),
    };
    Some((container.id.clone(), comment))
}

fn account(account_id: Option<String>) -> Option<Author> {
    account_id.map(|account_id| Author {
        account_id: Some(account_id),
        display_name: None,
    })
}

/// The one order of a page's comments, whichever API listed them: footer threads, then inline
/// ones, each thread's top-level comment first and its replies after it, oldest (lowest id)
/// first. The fingerprint depends on it.
pub(crate) fn canonical(mut comments: Vec<PageComment>) -> Vec<PageComment> {
    let number = |id: &PageId| id.as_str().parse::<u64>().unwrap_or(u64::MAX);
    comments.sort_by_key(|comment| {
        let thread = comment.parent_id.as_ref().unwrap_or(&comment.id);
        (
            comment.location == CommentLocation::Inline,
            number(thread),
            comment.parent_id.is_some(),
            number(&comment.id),
        )
    });
    comments
}

/// An attachment as a listing shows it: what tells whether it changed and where to download it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttachmentRef {
    pub id: String,
    pub file_name: String,
    pub media_type: Option<String>,
    pub version: u64,
    pub file_size: Option<u64>,
    /// Relative to the wiki root; none where Confluence did not say.
    pub download: Option<String>,
    /// Where a reader opens it (its preview in the page, else its download), absolute.
    pub url: String,
}

fn absolute(site: &Site, link: &str) -> String {
    if link.starts_with('/') {
        format!("{}{link}", site.base)
    } else {
        link.to_owned()
    }
}

/// A current attachment of a v2 listing.
pub(crate) fn attachment_from_v2(site: &Site, attachment: Attachment) -> Option<AttachmentRef> {
    if attachment.status.as_deref().is_some_and(|s| s != "current") {
        return None;
    }
    let version = attachment.version_number();
    let link = attachment
        .webui_link
        .as_deref()
        .or(attachment.download_link.as_deref())
        .map(|link| absolute(site, link))
        .unwrap_or_default();
    Some(AttachmentRef {
        version,
        file_size: attachment.file_size,
        url: link,
        file_name: attachment.title,
        media_type: attachment.media_type,
        download: attachment.download_link,
        id: attachment.id,
    })
}

/// An attachment of a v1 search (`type=attachment`, expanded with `version` and `container`) and
/// the id of the page it is attached to; none for content that is not a current attachment of a
/// page or blog post.
pub(crate) fn attachment_from_content(
    site: &Site,
    content: &AttachmentContent,
) -> Option<(PageId, AttachmentRef)> {
    let container = current_on_a_page(
        "attachment",
        content.content_type.as_deref(),
        content.status.as_deref(),
        content.container.as_ref(),
    )?;
    let extensions = content.extensions.as_ref();
    let link = content
        .links
        .webui
        .as_deref()
        .or(content.links.download.as_deref())
        .map(|link| absolute(site, link))
        .unwrap_or_default();
    Some((
        container.id.clone(),
        AttachmentRef {
            id: content.id.clone(),
            file_name: content.title.clone(),
            media_type: extensions.and_then(|e| e.media_type.clone()),
            version: content.version_number(),
            file_size: extensions.and_then(|e| e.file_size),
            download: content.links.download.clone(),
            url: link,
        },
    ))
}

/// What a page's attachments are, in a few bytes (an attachment changes no page version):
/// hex SHA-256 of each one's id, version and file name, in id order.
pub(crate) fn attachments_fingerprint<'a>(
    attachments: impl IntoIterator<Item = (&'a str, u64, &'a str)>,
) -> String {
    let mut listed: Vec<_> = attachments.into_iter().collect();
    listed.sort();
    let mut hasher = Sha256::new();
    for (id, version, file_name) in listed {
        hasher.update(format!("{id}|{version}|{file_name}\n"));
    }
    hex::encode(hasher.finalize())
}

/// What a page's comments are, in a few bytes: what the fetcher keeps to tell whether they
/// changed (a comment changes no page version). Hex SHA-256 of each comment's identity, place,
/// version and resolution, in canonical order: an edit bumps the comment's version, so a listing
/// without bodies tells a change as well as one with them.
/// Fingerprint of the titles of a page's ancestors (its path holds their ids): a page or folder
/// renamed above the page changes it.
pub(crate) fn ancestry_fingerprint(ancestors: &[Ancestor]) -> String {
    let mut hasher = Sha256::new();
    for ancestor in ancestors {
        hasher.update(ancestor.title.as_deref().unwrap_or(""));
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

pub(crate) fn comments_fingerprint(comments: &[PageComment]) -> String {
    let mut hasher = Sha256::new();
    for comment in comments {
        let location = match comment.location {
            CommentLocation::Footer => "footer",
            CommentLocation::Inline => "inline",
        };
        hasher.update(format!(
            "{}|{location}|{}|{}|{}\n",
            comment.id,
            comment.parent_id.as_ref().map_or("", PageId::as_str),
            comment.version,
            comment.resolution.as_deref().unwrap_or(""),
        ));
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: u64, parent: Option<u64>, title: &str) -> Page {
        serde_json::from_value(serde_json::json!({
            "id": id.to_string(),
            "title": title,
            "parentId": parent.map(|p| p.to_string()),
            "version": {"number": 3},
        }))
        .expect("page")
    }

    #[test]
    fn ancestors_and_path_follow_the_listing() {
        let mut tree = Tree::default();
        tree.insert_page(&listed(1, None, "Home"), ContentType::Page);
        tree.insert_page(&listed(2, Some(1), "Guides"), ContentType::Page);
        tree.insert_page(&listed(3, Some(2), "Setup"), ContentType::Page);
        tree.insert_page(&listed(9, None, "Release notes"), ContentType::Blogpost);
        assert_eq!(tree.content_type(&PageId::from(9)), ContentType::Blogpost);
        assert_eq!(tree.content_type(&PageId::from(2)), ContentType::Page);
        assert!(tree.ancestors(&PageId::from(9)).is_empty());
        let ancestors = tree.ancestors(&PageId::from(3));
        assert_eq!(
            ancestors.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(ancestors[1].title.as_deref(), Some("Guides"));
        assert_eq!(path(&ancestors, &PageId::from(3)), "/1/2/3");
        assert_eq!(path(&[], &PageId::from(1)), "/1");
    }

    #[test]
    fn a_parent_cycle_ends_the_chain() {
        let mut tree = Tree::default();
        tree.insert_page(&listed(1, Some(2), "A"), ContentType::Page);
        tree.insert_page(&listed(2, Some(1), "B"), ContentType::Page);
        let ancestors = tree.ancestors(&PageId::from(1));
        assert_eq!(
            ancestors.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["2"]
        );
    }

    #[test]
    fn url_joins_the_base_and_webui_and_falls_back_to_the_id() {
        let site = Site {
            source: SourceKey::new("eng").expect("key"),
            source_id: uuid::Uuid::nil(),
            space_key: "ENG".into(),
            spaces: pagestream_sources::Spaces::one("ENG"),
            base: "https://x.atlassian.net/wiki".into(),
            data_center: false,
            space_id: None,
        };
        let mut page = listed(7, None, "T");
        page.links.webui = Some("/spaces/ENG/pages/7/T".into());
        assert_eq!(
            url(&site, &page.links, &page.id),
            "https://x.atlassian.net/wiki/spaces/ENG/pages/7/T"
        );
        page.links.webui = None;
        assert_eq!(
            url(&site, &page.links, &page.id),
            "https://x.atlassian.net/wiki/pages/viewpage.action?pageId=7"
        );
        assert!(matches!(
            from_page(&site, &page, ContentType::Page, Vec::new()),
            Err(FetcherError::InvalidPage(_))
        ));
    }
}
