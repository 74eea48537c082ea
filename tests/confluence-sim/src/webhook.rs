//! Cloud webhooks for mutations: Connect-style payloads (no body, no event name; the event is in
//! the URL path `{target}/{event}`), optionally signed like Data Center (`X-Hub-Signature`).

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::content::{ContentKind, SimAttachment, SimComment, SimPage, USERS};

/// A page (or blog post) event Confluence Cloud sends a webhook for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    PageCreated,
    PageUpdated,
    PageTrashed,
    PageRemoved,
    PageRestored,
    PageMoved,
    LabelAdded,
    LabelRemoved,
    BlogCreated,
    BlogUpdated,
    BlogTrashed,
    BlogRemoved,
    BlogRestored,
    CommentCreated,
    CommentUpdated,
    CommentRemoved,
    AttachmentCreated,
    AttachmentUpdated,
    AttachmentTrashed,
    AttachmentRestored,
    AttachmentRemoved,
}

impl WebhookEvent {
    /// The event of a label added (`add`) or removed.
    pub fn label(add: bool) -> Self {
        if add {
            Self::LabelAdded
        } else {
            Self::LabelRemoved
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::PageCreated => "page_created",
            Self::PageUpdated => "page_updated",
            Self::PageTrashed => "page_trashed",
            Self::PageRemoved => "page_removed",
            Self::PageRestored => "page_restored",
            Self::PageMoved => "page_moved",
            Self::LabelAdded => "label_added",
            Self::LabelRemoved => "label_removed",
            Self::BlogCreated => "blog_created",
            Self::BlogUpdated => "blog_updated",
            Self::BlogTrashed => "blog_trashed",
            Self::BlogRemoved => "blog_removed",
            Self::BlogRestored => "blog_restored",
            Self::CommentCreated => "comment_created",
            Self::CommentUpdated => "comment_updated",
            Self::CommentRemoved => "comment_removed",
            Self::AttachmentCreated => "attachment_created",
            Self::AttachmentUpdated => "attachment_updated",
            Self::AttachmentTrashed => "attachment_trashed",
            Self::AttachmentRestored => "attachment_restored",
            Self::AttachmentRemoved => "attachment_removed",
        }
    }

    /// The event as Confluence names it for content of this kind (`page_updated` of a blog post
    /// is `blog_updated`; label events are the same for both).
    pub fn for_kind(self, kind: ContentKind) -> Self {
        match (kind, self) {
            (ContentKind::Blogpost, Self::PageCreated) => Self::BlogCreated,
            (ContentKind::Blogpost, Self::PageUpdated) => Self::BlogUpdated,
            (ContentKind::Blogpost, Self::PageTrashed) => Self::BlogTrashed,
            (ContentKind::Blogpost, Self::PageRemoved) => Self::BlogRemoved,
            (ContentKind::Blogpost, Self::PageRestored) => Self::BlogRestored,
            (_, event) => event,
        }
    }
}

/// What happened to a webhook a mutation sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookDelivery {
    pub event: &'static str,
    pub url: String,
    /// The receiver's status code, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
}

impl WebhookDelivery {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The payload, shaped like the Cloud Connect samples (`page_updated` adds `updateTrigger`). Label
/// events name the label and carry the page as `labeled`, as Atlassian documents them; blog events
/// carry the blog post as `blog`.
pub fn payload(
    event: WebhookEvent,
    page: &SimPage,
    label: Option<&str>,
    space_key: &str,
    space_id: u64,
    site: &str,
) -> serde_json::Value {
    let account = |index: usize| USERS.get(index).map_or("", |u| u.0);
    let slug: String = page
        .title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '+' })
        .collect();
    let (holder, webui) = match page.kind {
        ContentKind::Page => ("page", format!("pages/{}", page.id)),
        ContentKind::Blogpost => ("blog", blog_path(page)),
        ContentKind::Folder => ("folder", format!("folder/{}", page.id)),
    };
    let mut body = json!({
        "userAccountId": account(page.last_modifier),
        "accountType": "customer",
        holder: {
            "idAsString": page.id.to_string(),
            "creatorAccountId": account(page.author),
            "spaceKey": space_key,
            "spaceId": space_id,
            "modificationDate": page.modified_at.timestamp_millis(),
            "lastModifierAccountId": account(page.last_modifier),
            "self": format!("{site}/spaces/{space_key}/{webui}/{slug}"),
            "id": page.id,
            "title": page.title,
            "creationDate": page.created_at.timestamp_millis(),
            "contentType": page.kind.name(),
            "version": page.version,
        },
        "timestamp": chrono::Utc::now().timestamp_millis(),
    });
    if matches!(event, WebhookEvent::LabelAdded | WebhookEvent::LabelRemoved)
        && let Some(map) = body.as_object_mut()
    {
        if let Some(mut labeled) = map.remove(holder) {
            if let Some(labeled) = labeled.as_object_mut() {
                // Labelling creates no version: the body does not say one.
                labeled.remove("version");
            }
            map.insert("labeled".into(), labeled);
        }
        let name = label.unwrap_or_default();
        map.insert(
            "label".into(),
            json!({"name": name, "prefix": "global", "id": "0", "self": format!("{site}/rest/api/label?name={name}")}),
        );
    }
    if matches!(event, WebhookEvent::PageUpdated | WebhookEvent::BlogUpdated)
        && let Some(map) = body.as_object_mut()
    {
        map.insert("updateTrigger".into(), json!("edit_page"));
        map.insert("suppressNotifications".into(), json!(false));
    }
    body
}

/// A comment event's payload, as in the Cloud capture: the comment, with its page (or blog post)
/// under `parent`.
pub fn comment_payload(
    comment: &SimComment,
    container: &SimPage,
    space_key: &str,
    space_id: u64,
    site: &str,
) -> serde_json::Value {
    let account = |index: usize| USERS.get(index).map_or("", |u| u.0);
    let page = payload(
        WebhookEvent::PageCreated,
        container,
        None,
        space_key,
        space_id,
        site,
    );
    let parent = page
        .get(match container.kind {
            ContentKind::Page => "page",
            ContentKind::Blogpost => "blog",
            ContentKind::Folder => "folder",
        })
        .cloned()
        .unwrap_or_default();
    let container_self = parent["self"].as_str().unwrap_or_default().to_owned();
    json!({
        "comment": {
            "idAsString": comment.id.to_string(),
            "creatorAccountId": account(comment.author),
            "spaceKey": space_key,
            "spaceId": space_id,
            "parent": parent,
            "modificationDate": comment.modified_at.timestamp_millis(),
            "lastModifierAccountId": account(comment.author),
            "self": format!("{container_self}?focusedCommentId={}", comment.id),
            "id": comment.id.to_string(),
            "creationDate": comment.created_at.timestamp_millis(),
            "contentType": "comment",
            "version": comment.version,
        },
        "accountType": "customer",
        "timestamp": chrono::Utc::now().timestamp_millis(),
        "userAccountId": account(comment.author),
    })
}

/// An attachment event's payload, as Connect sends it: the attachment, and the page (or blog
/// post) it is attached to as `attachedTo`. An attachment change creates no page version.
pub fn attachment_payload(
    attachment: &SimAttachment,
    container: &SimPage,
    space_key: &str,
    space_id: u64,
    site: &str,
) -> serde_json::Value {
    let account = |index: usize| USERS.get(index).map_or("", |u| u.0);
    let page = payload(
        WebhookEvent::PageCreated,
        container,
        None,
        space_key,
        space_id,
        site,
    );
    let attached_to = page
        .get(match container.kind {
            ContentKind::Page => "page",
            ContentKind::Blogpost => "blog",
            ContentKind::Folder => "folder",
        })
        .cloned()
        .unwrap_or_default();
    json!({
        "attachment": {
            "id": attachment.content_id(),
            "idAsString": attachment.content_id(),
            "fileName": attachment.title,
            "title": attachment.title,
            "contentType": "attachment",
            "mediaType": attachment.media_type,
            "version": attachment.version,
            "creatorAccountId": account(attachment.author),
            "lastModifierAccountId": account(attachment.author),
            "spaceKey": space_key,
            "creationDate": attachment.created_at.timestamp_millis(),
            "modificationDate": attachment.modified_at.timestamp_millis(),
        },
        "attachedTo": attached_to,
        "accountType": "customer",
        "timestamp": chrono::Utc::now().timestamp_millis(),
        "userAccountId": account(attachment.author),
    })
}

/// A blog post's place in Cloud's web UI: `blog/YYYY/MM/DD/{id}` (its creation date).
pub fn blog_path(post: &SimPage) -> String {
    format!("blog/{}/{}", post.created_at.format("%Y/%m/%d"), post.id)
}

/// `{target}/{event}`, keeping a query string of the target after the path.
pub fn event_url(target: &str, event: WebhookEvent) -> String {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut url = format!("{}/{}", path.trim_end_matches('/'), event.name());
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// HMAC-SHA256 (RFC 2104), hex-encoded, as Data Center's `X-Hub-Signature: sha256=…`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut key = [0u8; BLOCK];
    if secret.len() > BLOCK {
        key[..32].copy_from_slice(&Sha256::digest(secret));
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// POSTs one webhook to `{target}/{event}` and reports what happened (never fails the mutation).
pub async fn deliver(
    http: &reqwest::Client,
    target: &str,
    secret: Option<&str>,
    event: WebhookEvent,
    body: &serde_json::Value,
) -> WebhookDelivery {
    deliver_to(http, &event_url(target, event), secret, event, body).await
}

/// POSTs one webhook to `url` as it is (a webhook registered through the API).
pub async fn deliver_to(
    http: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    event: WebhookEvent,
    body: &serde_json::Value,
) -> WebhookDelivery {
    let url = url.to_owned();
    let raw = body.to_string();
    let mut request = http
        .post(&url)
        .timeout(Duration::from_secs(10))
        .header("content-type", "application/json")
        .header("user-agent", "Atlassian Webhook HTTP Client");
    if let Some(secret) = secret {
        request = request.header(
            "x-hub-signature",
            format!("sha256={}", signature(secret.as_bytes(), raw.as_bytes())),
        );
    }
    match request.body(raw).send().await {
        Ok(response) => WebhookDelivery {
            event: event.name(),
            url,
            status: Some(response.status().as_u16()),
            error: None,
        },
        Err(error) => WebhookDelivery {
            event: event.name(),
            url,
            status: None,
            error: Some(error.without_url().to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaau8; 131];
        assert_eq!(
            signature(
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn event_urls_route_by_path() {
        assert_eq!(
            event_url("http://h/hooks/eng/", WebhookEvent::PageTrashed),
            "http://h/hooks/eng/page_trashed"
        );
        assert_eq!(
            event_url("http://h/hooks?token=x", WebhookEvent::PageUpdated),
            "http://h/hooks/page_updated?token=x"
        );
    }
}
