//! Webhook bodies: what Cloud Connect, Data Center and Automation deliveries say about a page or a
//! blog post (`blog_*` events carry it as `blog`, `comment_*` events as the comment's `parent`,
//! `attachment_*` events as `attachedTo`, or the attachment's `container`).
//!
//! Cloud Connect bodies name no event (the app routes by URL path); Data Center bodies carry an
//! `event` field; Automation bodies are whatever the rule's author templated, so every field but the
//! page id is optional. Ids arrive as strings or numbers (`id`, `idAsString`), versions as numbers,
//! strings or `{"number": n}`; unknown fields are ignored.

use pagestream_events::{ContentType, HintReason, PageId};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("body is not a json object: {0}")]
    NotJson(String),
    #[error("delivery names no event: post to /webhooks/confluence/{{source}}/{{event}}")]
    NoEvent,
    #[error("invalid event name")]
    InvalidEvent,
    #[error("{event} delivery carries no page")]
    NoPage { event: String },
    #[error("invalid page id")]
    InvalidPageId,
    #[error("invalid page version")]
    InvalidVersion,
}

/// What a delivery's event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    Hint(HintReason),
    Ignore,
}

/// Maps a Confluence webhook event name to what Pagestream does with it
/// ([`pagestream_events::WEBHOOK_EVENTS`]).
pub fn action_for(event: &str) -> EventAction {
    pagestream_events::webhook_hint(event).map_or(EventAction::Ignore, EventAction::Hint)
}

/// The page a delivery is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRef {
    pub id: PageId,
    pub content_type: ContentType,
    pub space_key: Option<String>,
    pub version: Option<u64>,
}

/// A decoded delivery: its event name and, for page events, the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event: String,
    pub action: EventAction,
    /// Set for every [`EventAction::Hint`].
    pub page: Option<PageRef>,
}

#[derive(Deserialize)]
struct RawDelivery {
    #[serde(default)]
    event: Option<Value>,
    #[serde(default)]
    page: Option<RawPage>,
    #[serde(default)]
    blog: Option<RawPage>,
    /// What a label event labelled (`labeled` in Cloud's payloads, `labelled` in older Data
    /// Center ones).
    #[serde(default, alias = "labelled")]
    labeled: Option<RawPage>,
    #[serde(default)]
    comment: Option<RawComment>,
    /// The page or blog post an attachment event's file is attached to.
    #[serde(default, rename = "attachedTo")]
    attached_to: Option<RawPage>,
    #[serde(default)]
    attachment: Option<RawAttachment>,
}

/// An attachment event's attachment: some deliveries name its page as its `container`.
#[derive(Deserialize)]
struct RawAttachment {
    #[serde(default)]
    container: Option<RawPage>,
}

/// A comment event's comment: the page (or blog post) it is on comes as its `parent`.
#[derive(Deserialize)]
struct RawComment {
    #[serde(default)]
    parent: Option<RawPage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPage {
    #[serde(default)]
    id_as_string: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    space_key: Option<Value>,
    #[serde(default)]
    space: Option<RawSpace>,
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    content_type: Option<Value>,
}

#[derive(Deserialize)]
struct RawSpace {
    #[serde(default)]
    key: Option<Value>,
}

/// Decodes a delivery. `path_event` is the event named in the URL, which wins over the body's.
pub fn decode(body: &[u8], path_event: Option<&str>) -> Result<Delivery, PayloadError> {
    let raw: RawDelivery =
        serde_json::from_slice(body).map_err(|error| PayloadError::NotJson(error.to_string()))?;
    let event = match path_event {
        Some(event) => event.to_owned(),
        None => match raw.event {
            Some(Value::String(event)) => event,
            Some(_) => return Err(PayloadError::InvalidEvent),
            None => return Err(PayloadError::NoEvent),
        },
    };
    if !is_event_name(&event) {
        return Err(PayloadError::InvalidEvent);
    }
    let mut action = action_for(&event);
    // `blog_*` events carry the blog post as `blog`; label events name what they labelled.
    let comment_event = event.starts_with("comment_");
    let attachment_event = event.starts_with("attachment_");
    let (raw_page, implied) = match (raw.page, raw.blog, raw.labeled) {
        // Comment events carry the commented page under `comment.parent`.
        _ if comment_event => (
            raw.comment.and_then(|comment| comment.parent),
            ContentType::Page,
        ),
        _ if attachment_event => (
            raw.attached_to
                .or_else(|| raw.attachment.and_then(|attachment| attachment.container)),
            ContentType::Page,
        ),
        (Some(page), ..) => (Some(page), ContentType::Page),
        (None, Some(blog), _) => (Some(blog), ContentType::Blogpost),
        (None, None, labeled) if event.starts_with("blog_") => (labeled, ContentType::Blogpost),
        (None, None, labeled) => (labeled, ContentType::Page),
    };
    // What the body says it is wins; a label on an attachment (or any other content) is none
    // of the index's business.
    let content_type = match raw_page
        .as_ref()
        .and_then(|page| page.content_type.as_ref())
        .and_then(Value::as_str)
    {
        Some(kind) => ContentType::from_confluence(kind),
        None => Some(implied),
    };
    let Some(content_type) = content_type else {
        action = EventAction::Ignore;
        return Ok(Delivery {
            event,
            action,
            page: None,
        });
    };
    let page = match action {
        EventAction::Ignore => None,
        EventAction::Hint(_) => {
            let page = raw_page.ok_or_else(|| PayloadError::NoPage {
                event: event.clone(),
            })?;
            let mut page = page.resolve(content_type)?;
            if comment_event || attachment_event {
                // The version there is the page's, which a comment or an attachment does not
                // change: a hint carrying it would be deduplicated against the page's last
                // edit hint.
                page.version = None;
            }
            Some(page)
        }
    };
    Ok(Delivery {
        event,
        action,
        page,
    })
}

/// Event names are snake_case words; anything else is not from Confluence.
pub fn is_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl RawPage {
    fn resolve(self, content_type: ContentType) -> Result<PageRef, PayloadError> {
        // `idAsString` exists because `id` may not survive a JavaScript number; prefer it.
        let id = self
            .id_as_string
            .filter(|value| !value.is_null())
            .or(self.id)
            .ok_or(PayloadError::InvalidPageId)?;
        let id = match id {
            Value::String(id) => PageId::new(id.trim()).map_err(|_| PayloadError::InvalidPageId)?,
            Value::Number(number) => number
                .as_u64()
                .map(PageId::from)
                .ok_or(PayloadError::InvalidPageId)?,
            _ => return Err(PayloadError::InvalidPageId),
        };
        let space_key = self
            .space_key
            .or_else(|| self.space.and_then(|space| space.key))
            .and_then(|key| match key {
                Value::String(key) if is_space_key(&key) => Some(key),
                // The space key is advisory (the fetcher reads the page's own); drop a strange one.
                _ => None,
            });
        Ok(PageRef {
            id,
            content_type,
            space_key,
            version: self.version.map(version_number).transpose()?.flatten(),
        })
    }
}

fn version_number(value: Value) -> Result<Option<u64>, PayloadError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(number) => number
            .as_u64()
            .map(Some)
            .ok_or(PayloadError::InvalidVersion),
        Value::String(text) if text.trim().is_empty() => Ok(None),
        Value::String(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| PayloadError::InvalidVersion),
        Value::Object(mut object) => object.remove("number").map_or(Ok(None), version_number),
        _ => Err(PayloadError::InvalidVersion),
    }
}

/// Space keys are alphanumeric; personal spaces start with `~` and may hold an account id.
fn is_space_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'~' | b'_' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(delivery: &Delivery) -> &PageRef {
        delivery.page.as_ref().expect("page")
    }

    #[test]
    fn every_page_event_maps_to_its_reason() {
        for event in [
            "page_created",
            "page_updated",
            "page_restored",
            "page_moved",
            "label_added",
            "label_removed",
        ] {
            assert_eq!(action_for(event), EventAction::Hint(HintReason::Changed));
        }
        for event in [
            "page_trashed",
            "page_removed",
            "blog_trashed",
            "blog_removed",
        ] {
            assert_eq!(action_for(event), EventAction::Hint(HintReason::Removed));
        }
        for event in ["blog_created", "blog_updated", "blog_restored"] {
            assert_eq!(action_for(event), EventAction::Hint(HintReason::Changed));
        }
        for event in ["comment_created", "comment_updated", "comment_removed"] {
            assert_eq!(action_for(event), EventAction::Hint(HintReason::Changed));
        }
        for event in [
            "attachment_created",
            "attachment_updated",
            "attachment_removed",
            "attachment_restored",
            "attachment_trashed",
        ] {
            assert_eq!(action_for(event), EventAction::Hint(HintReason::Changed));
        }
        for event in ["content_created", "label_created", "attachment_viewed"] {
            assert_eq!(action_for(event), EventAction::Ignore);
        }
    }

    #[test]
    fn label_events_hint_the_labelled_page_only() {
        let labelled = decode(
            br#"{"label":{"name":"runbook","prefix":"global"},"labeled":{"id":65601,"spaceKey":"ENG","contentType":"page"},"timestamp":1}"#,
            Some("label_added"),
        )
        .expect("label on a page");
        assert_eq!(labelled.action, EventAction::Hint(HintReason::Changed));
        assert_eq!(page(&labelled).id.as_str(), "65601");
        assert_eq!(page(&labelled).version, None);
        assert_eq!(page(&labelled).content_type, ContentType::Page);
        let blog = decode(
            br#"{"label":{"name":"news"},"labeled":{"id":7,"contentType":"blogpost"}}"#,
            Some("label_removed"),
        )
        .expect("label on a blog post");
        assert_eq!(blog.action, EventAction::Hint(HintReason::Changed));
        assert_eq!(page(&blog).content_type, ContentType::Blogpost);
        let attachment = decode(
            br#"{"label":{"name":"pdf"},"labeled":{"id":8,"contentType":"attachment"}}"#,
            Some("label_added"),
        )
        .expect("label on an attachment");
        assert_eq!(attachment.action, EventAction::Ignore);
    }

    #[test]
    fn blog_events_hint_the_blog_post() {
        let updated = decode(
            br#"{"blog":{"idAsString":"2210000040","id":2210000040,"spaceKey":"ENG","contentType":"blogpost","version":3},"timestamp":1}"#,
            Some("blog_updated"),
        )
        .expect("blog_updated");
        assert_eq!(updated.action, EventAction::Hint(HintReason::Changed));
        assert_eq!(page(&updated).id.as_str(), "2210000040");
        assert_eq!(page(&updated).content_type, ContentType::Blogpost);
        assert_eq!(page(&updated).version, Some(3));
        let removed = decode(br#"{"blog":{"id":"41"}}"#, Some("blog_removed")).expect("removed");
        assert_eq!(removed.action, EventAction::Hint(HintReason::Removed));
        assert_eq!(page(&removed).content_type, ContentType::Blogpost);
        let missing = decode(br#"{"page":null}"#, Some("blog_trashed")).expect_err("no blog");
        assert_eq!(
            missing,
            PayloadError::NoPage {
                event: "blog_trashed".into()
            }
        );
    }

    #[test]
    fn ids_and_versions_decode_in_every_shape() {
        let numeric = decode(
            br#"{"page":{"id":1188560897,"version":2,"spaceKey":"~323528440"}}"#,
            Some("page_updated"),
        )
        .expect("numeric");
        assert_eq!(page(&numeric).id.as_str(), "1188560897");
        assert_eq!(page(&numeric).version, Some(2));
        assert_eq!(page(&numeric).space_key.as_deref(), Some("~323528440"));

        let strings = decode(
            br#"{"page":{"idAsString":"10000001","id":"10000001","version":"3"}}"#,
            Some("page_updated"),
        )
        .expect("strings");
        assert_eq!(page(&strings).id.as_str(), "10000001");
        assert_eq!(page(&strings).version, Some(3));

        let nested = decode(
            br#"{"event":"page_created","page":{"id":" 77 ","version":{"number":5},"space":{"key":"OPS"}}}"#,
            None,
        )
        .expect("nested");
        assert_eq!(page(&nested).id.as_str(), "77");
        assert_eq!(page(&nested).version, Some(5));
        assert_eq!(page(&nested).space_key.as_deref(), Some("OPS"));

        let bare = decode(br#"{"page":{"id":"9"}}"#, Some("page_removed")).expect("bare");
        assert_eq!(page(&bare).version, None);
        assert_eq!(page(&bare).space_key, None);
        assert_eq!(bare.action, EventAction::Hint(HintReason::Removed));
    }

    #[test]
    fn the_path_event_wins_over_the_body() {
        let delivery = decode(
            br#"{"event":"page_updated","page":{"id":1}}"#,
            Some("page_trashed"),
        )
        .expect("decode");
        assert_eq!(delivery.event, "page_trashed");
        assert_eq!(delivery.action, EventAction::Hint(HintReason::Removed));
    }

    #[test]
    fn ignored_events_need_no_page() {
        let delivery = decode(br#"{"content":{"id":"1"}}"#, Some("content_created")).expect("ok");
        assert_eq!(delivery.action, EventAction::Ignore);
        assert_eq!(delivery.page, None);
    }

    #[test]
    fn comment_events_hint_the_commented_page_without_its_version() {
        let created = decode(
            br#"{"comment":{"id":"30000009","contentType":"comment","version":1,"parent":{"idAsString":"30000007","id":"30000007","spaceKey":"OPS","contentType":"page","version":3}}}"#,
            Some("comment_created"),
        )
        .expect("comment_created");
        assert_eq!(created.action, EventAction::Hint(HintReason::Changed));
        assert_eq!(page(&created).id.as_str(), "30000007");
        assert_eq!(page(&created).content_type, ContentType::Page);
        assert_eq!(page(&created).space_key.as_deref(), Some("OPS"));
        assert_eq!(page(&created).version, None);
        let on_blog = decode(
            br#"{"comment":{"id":"5","parent":{"id":41,"contentType":"blogpost","version":2}}}"#,
            Some("comment_removed"),
        )
        .expect("comment on a blog post");
        assert_eq!(page(&on_blog).content_type, ContentType::Blogpost);
        assert_eq!(on_blog.action, EventAction::Hint(HintReason::Changed));
        let on_attachment = decode(
            br#"{"comment":{"id":"6","parent":{"id":42,"contentType":"attachment"}}}"#,
            Some("comment_updated"),
        )
        .expect("comment on an attachment");
        assert_eq!(on_attachment.action, EventAction::Ignore);
        let orphan =
            decode(br#"{"comment":{"id":"7"}}"#, Some("comment_created")).expect_err("no page");
        assert_eq!(
            orphan,
            PayloadError::NoPage {
                event: "comment_created".into()
            }
        );
    }

    #[test]
    fn attachment_events_hint_the_page_they_are_attached_to_without_its_version() {
        let created = decode(
            br#"{"attachment":{"id":"att30000011","fileName":"plan.pdf","contentType":"attachment","version":1},"attachedTo":{"idAsString":"30000007","id":30000007,"spaceKey":"OPS","contentType":"page","version":3}}"#,
            Some("attachment_created"),
        )
        .expect("attachment_created");
        assert_eq!(created.action, EventAction::Hint(HintReason::Changed));
        assert_eq!(page(&created).id.as_str(), "30000007");
        assert_eq!(page(&created).content_type, ContentType::Page);
        assert_eq!(page(&created).space_key.as_deref(), Some("OPS"));
        assert_eq!(page(&created).version, None);
        let in_container = decode(
            br#"{"attachment":{"id":"att5","container":{"id":"41","contentType":"blogpost","version":2}}}"#,
            Some("attachment_trashed"),
        )
        .expect("attachment with its container");
        assert_eq!(page(&in_container).id.as_str(), "41");
        assert_eq!(page(&in_container).content_type, ContentType::Blogpost);
        let orphan = decode(
            br#"{"attachment":{"id":"att7"}}"#,
            Some("attachment_removed"),
        )
        .expect_err("no page");
        assert_eq!(
            orphan,
            PayloadError::NoPage {
                event: "attachment_removed".into()
            }
        );
    }

    #[test]
    fn bad_input_names_what_is_wrong() {
        let cases: [(&[u8], Option<&str>, PayloadError); 8] = [
            (
                b"not json",
                Some("page_updated"),
                PayloadError::NotJson(String::new()),
            ),
            (
                b"[1,2]",
                Some("page_updated"),
                PayloadError::NotJson(String::new()),
            ),
            (br#"{"page":{"id":1}}"#, None, PayloadError::NoEvent),
            (
                br#"{"page":{"id":1}}"#,
                Some("Page.Updated"),
                PayloadError::InvalidEvent,
            ),
            (
                br#"{"timestamp":1}"#,
                Some("page_updated"),
                PayloadError::NoPage {
                    event: "page_updated".into(),
                },
            ),
            (
                br#"{"page":{"id":"12a"}}"#,
                Some("page_updated"),
                PayloadError::InvalidPageId,
            ),
            (
                br#"{"page":{"id":-4}}"#,
                Some("page_updated"),
                PayloadError::InvalidPageId,
            ),
            (
                br#"{"page":{"id":4,"version":"two"}}"#,
                Some("page_updated"),
                PayloadError::InvalidVersion,
            ),
        ];
        for (body, event, expected) in cases {
            let error = decode(body, event).expect_err("must fail");
            match (&error, &expected) {
                (PayloadError::NotJson(_), PayloadError::NotJson(_)) => {}
                _ => assert_eq!(error, expected),
            }
        }
    }

    #[test]
    fn strange_space_keys_are_dropped() {
        let delivery = decode(
            br#"{"page":{"id":1,"spaceKey":"a b<script>"}}"#,
            Some("page_updated"),
        )
        .expect("decode");
        assert_eq!(page(&delivery).space_key, None);
    }
}
