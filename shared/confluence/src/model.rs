//! What Confluence sends, decoded tolerantly: ids as strings or numbers, unknown fields ignored,
//! optional fields optional (missing or `null`), unparsable optional dates dropped rather than
//! failing the page. Required identity (page ids, version numbers) must still be valid.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use pagestream_events::PageId;
use serde::{Deserialize, Deserializer};

/// A Confluence space id (decimal, sent as a string or a number).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpaceId(String);

impl SpaceId {
    /// Accepts 1 to 32 ASCII digits.
    pub fn new(id: impl Into<String>) -> Option<Self> {
        let id = id.into();
        (!id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit()))
            .then_some(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SpaceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = StringOrNumber::deserialize(deserializer)?.into_string();
        Self::new(raw.clone())
            .ok_or_else(|| serde::de::Error::custom(format!("invalid space id {raw:?}")))
    }
}

/// A v2 page: an entry of `/api/v2/pages`, `/api/v2/pages/{id}` or `/api/v2/spaces/{id}/pages`;
/// v2 blog posts (`/api/v2/blogposts…`) have the same shape without a parent or a position.
/// Listings without `body-format` leave `body` empty.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub id: PageId,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub title: String,
    #[serde(default, deserialize_with = "lenient_space_id")]
    pub space_id: Option<SpaceId>,
    /// The parent page (or folder, see `parent_type`); `None` at the root of the space.
    #[serde(default, deserialize_with = "lenient_page_id")]
    pub parent_id: Option<PageId>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub parent_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub author_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: Option<Version>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub body: Option<Body>,
    /// Present only when asked for (`include-labels` on a single page).
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Option<LabelList>,
    #[serde(default, rename = "_links", deserialize_with = "null_as_default")]
    pub links: ContentLinks,
}

impl Page {
    /// The version number, 0 when Confluence sent none.
    pub fn version_number(&self) -> u64 {
        self.version.as_ref().map_or(0, |v| v.number)
    }

    /// The storage-format (XHTML) body, when it was requested and sent.
    pub fn storage(&self) -> Option<&str> {
        self.body.as_ref().and_then(Body::storage)
    }

    pub fn label_names(&self) -> Vec<String> {
        self.labels
            .as_ref()
            .map(LabelList::names)
            .unwrap_or_default()
    }
}

/// A v2 comment: an entry of `/api/v2/{pages|blogposts}/{id}/{footer|inline}-comments` (top-level
/// comments, with `pageId` or `blogPostId`) or of `/api/v2/{footer|inline}-comments/{id}/children`
/// (replies, with `parentCommentId`). Inline comments carry their `resolutionStatus` and the
/// selection they highlight.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    pub id: PageId,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient_page_id")]
    pub parent_comment_id: Option<PageId>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: Option<Version>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub body: Option<Body>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub resolution_status: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub properties: Option<InlineCommentProperties>,
}

impl Comment {
    pub fn version_number(&self) -> u64 {
        self.version.as_ref().map_or(0, |v| v.number)
    }

    pub fn storage(&self) -> Option<&str> {
        self.body.as_ref().and_then(Body::storage)
    }
}

/// A v2 attachment (`AttachmentBulk`): an entry of `/api/v2/{pages|blogposts}/{id}/attachments`
/// or `/api/v2/attachments/{id}`. Its id carries Cloud's `att` prefix; `downloadLink` is relative
/// to the wiki root and names the version.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: Option<String>,
    /// The file name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub title: String,
    #[serde(default, deserialize_with = "lenient_page_id")]
    pub page_id: Option<PageId>,
    #[serde(default, deserialize_with = "lenient_page_id")]
    pub blog_post_id: Option<PageId>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub media_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub file_size: Option<u64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub webui_link: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub download_link: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: Option<Version>,
}

impl Attachment {
    pub fn version_number(&self) -> u64 {
        self.version.as_ref().map_or(0, |v| v.number)
    }
}

/// A v1 attachment, as a CQL search (`type=attachment`) returns it: its id carries Cloud's `att`
/// prefix (so it is no [`Content`]), `extensions` its media type and size, `_links.download` its
/// file (relative to the wiki root, naming the version), `container` its page or blog post (expand
/// `container`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AttachmentContent {
    pub id: String,
    #[serde(default, rename = "type", deserialize_with = "null_as_default")]
    pub content_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub title: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: Option<ContentVersion>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub container: Option<ContentAncestor>,
    #[serde(default, deserialize_with = "lenient_extensions")]
    pub extensions: Option<ContentExtensions>,
    #[serde(default, rename = "_links", deserialize_with = "null_as_default")]
    pub links: ContentLinks,
}

impl AttachmentContent {
    pub fn version_number(&self) -> u64 {
        self.version.as_ref().map_or(0, |v| v.number)
    }
}

/// What an inline comment highlights.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineCommentProperties {
    #[serde(default, deserialize_with = "null_as_default")]
    pub inline_original_selection: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub inline_marker_ref: Option<String>,
}

/// A v2 version.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    #[serde(deserialize_with = "flexible_u64")]
    pub number: u64,
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub author_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub minor_edit: Option<bool>,
}

/// Body representations (v1 `body` and v2 `body` share this shape).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Body {
    #[serde(default, deserialize_with = "null_as_default")]
    pub storage: Option<BodyValue>,
}

impl Body {
    pub fn storage(&self) -> Option<&str> {
        self.storage.as_ref().map(|s| s.value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct BodyValue {
    #[serde(default, deserialize_with = "null_as_default")]
    pub value: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub representation: Option<String>,
}

/// Labels (v1 `metadata.labels` and v2 `labels` share this shape).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct LabelList {
    #[serde(default, deserialize_with = "null_as_default")]
    pub results: Vec<Label>,
}

impl LabelList {
    pub fn names(&self) -> Vec<String> {
        self.results.iter().map(|l| l.name.clone()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Label {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ContentLinks {
    #[serde(default, deserialize_with = "null_as_default")]
    pub webui: Option<String>,
    /// An attachment's file, relative to the wiki root.
    #[serde(default, deserialize_with = "null_as_default")]
    pub download: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tinyui: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub base: Option<String>,
}

/// A v2 space.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Space {
    pub id: SpaceId,
    pub key: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "null_as_default")]
    pub space_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient_page_id")]
    pub homepage_id: Option<PageId>,
}

/// The API user, from v1 `/rest/api/user/current` (only what the fetcher reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentUser {
    /// An IANA zone name; null when the user's privacy settings hide it.
    #[serde(default, deserialize_with = "null_as_default")]
    pub time_zone: Option<String>,
}

/// One ancestor from v2 `/pages/{id}/ancestors` (ids only; titles come from the pages themselves).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AncestorRef {
    pub id: PageId,
    #[serde(default, rename = "type", deserialize_with = "null_as_default")]
    pub ancestor_type: Option<String>,
}

/// A v1 content object (`/rest/api/content/search`, `/rest/api/content/{id}`), with whatever was
/// expanded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Content {
    pub id: PageId,
    #[serde(default, rename = "type", deserialize_with = "null_as_default")]
    pub content_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub title: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub space: Option<SpaceRef>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: Option<ContentVersion>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub history: Option<History>,
    /// Top-down: the space's root first, the parent last.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ancestors: Vec<ContentAncestor>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub body: Option<Body>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Option<Metadata>,
    /// A comment's page or blog post (expand `container`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub container: Option<ContentAncestor>,
    /// A comment's location, and an inline one's resolution and selection. Pages carry other
    /// extensions: a shape not understood is none, never a failed page.
    #[serde(default, deserialize_with = "lenient_extensions")]
    pub extensions: Option<ContentExtensions>,
    #[serde(default, rename = "_links", deserialize_with = "null_as_default")]
    pub links: ContentLinks,
}

/// v1 `extensions` of a comment (`location`: `footer` or `inline`; `resolution` and
/// `inlineProperties` with `extensions.resolution` and `extensions.inlineProperties` expanded).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentExtensions {
    #[serde(default, deserialize_with = "null_as_default")]
    pub location: Option<String>,
    /// An attachment's media type.
    #[serde(default, deserialize_with = "null_as_default")]
    pub media_type: Option<String>,
    /// An attachment's size in bytes.
    #[serde(default, deserialize_with = "null_as_default")]
    pub file_size: Option<u64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub resolution: Option<CommentResolution>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub inline_properties: Option<InlineProperties>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct CommentResolution {
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineProperties {
    #[serde(default, deserialize_with = "null_as_default")]
    pub original_selection: Option<String>,
}

impl Content {
    pub fn version_number(&self) -> u64 {
        self.version.as_ref().map_or(0, |v| v.number)
    }

    pub fn storage(&self) -> Option<&str> {
        self.body.as_ref().and_then(Body::storage)
    }

    pub fn label_names(&self) -> Vec<String> {
        self.metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .map(LabelList::names)
            .unwrap_or_default()
    }

    pub fn last_modified(&self) -> Option<DateTime<Utc>> {
        self.version.as_ref().and_then(|v| v.when)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SpaceRef {
    #[serde(default, deserialize_with = "lenient_space_id")]
    pub id: Option<SpaceId>,
    pub key: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentVersion {
    #[serde(deserialize_with = "flexible_u64")]
    pub number: u64,
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub when: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub by: Option<User>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub minor_edit: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub created_date: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub created_by: Option<User>,
}

/// A v1 user: Cloud sends `accountId`, Data Center `username`/`userKey`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default, deserialize_with = "null_as_default")]
    pub account_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub public_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub user_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContentAncestor {
    pub id: PageId,
    #[serde(default, deserialize_with = "null_as_default")]
    pub title: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "null_as_default")]
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Metadata {
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Option<LabelList>,
}

/// A result of a v1 search: `/rest/api/content/search` sends content objects, `/rest/api/search`
/// wraps them in `{"content": …}`; both decode to [`Content`].
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit(pub Content);

impl<'de> Deserialize<'de> for SearchHit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Direct(Box<Content>),
            Wrapped { content: Box<Content> },
        }
        match Shape::deserialize(deserializer) {
            Ok(Shape::Direct(content) | Shape::Wrapped { content }) => Ok(Self(*content)),
            Err(_) => Err(serde::de::Error::custom(
                "search result is neither a content object nor a {\"content\": …} wrapper",
            )),
        }
    }
}

/// One page of a paginated listing (v1 and v2 share `results` + `_links`).
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub(crate) struct Listing<T> {
    #[serde(default = "Vec::new", deserialize_with = "null_as_default")]
    pub results: Vec<T>,
    #[serde(default, rename = "_links", deserialize_with = "null_as_default")]
    pub links: ListingLinks,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListingLinks {
    #[serde(default, deserialize_with = "null_as_default")]
    pub next: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub base: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Unsigned(u64),
    Signed(i64),
}

impl StringOrNumber {
    fn into_string(self) -> String {
        match self {
            Self::String(s) => s,
            Self::Unsigned(n) => n.to_string(),
            Self::Signed(n) => n.to_string(),
        }
    }
}

fn lenient_extensions<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ContentExtensions>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn flexible_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match StringOrNumber::deserialize(deserializer)? {
        StringOrNumber::Unsigned(n) => Ok(n),
        StringOrNumber::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("invalid number {s:?}"))),
        StringOrNumber::Signed(n) => Err(serde::de::Error::custom(format!("negative number {n}"))),
    }
}

/// An optional page id: absent, `null` and `""` mean none; anything else must be a valid id.
fn lenient_page_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PageId>, D::Error> {
    match Option::<StringOrNumber>::deserialize(deserializer)?.map(StringOrNumber::into_string) {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => PageId::new(s).map(Some).map_err(serde::de::Error::custom),
    }
}

fn lenient_space_id<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SpaceId>, D::Error> {
    Ok(Option::<StringOrNumber>::deserialize(deserializer)?
        .map(StringOrNumber::into_string)
        .and_then(SpaceId::new))
}

/// RFC 3339 strings or epoch milliseconds; anything unparsable becomes `None`.
fn lenient_datetime<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    Ok(
        match Option::<serde_json::Value>::deserialize(deserializer)? {
            Some(serde_json::Value::String(s)) => DateTime::parse_from_rfc3339(&s)
                .ok()
                .map(|d| d.with_timezone(&Utc)),
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_decode_with_numeric_ids_nulls_and_unknown_fields() {
        let page: Page = serde_json::from_str(
            r#"{"id": 65601, "title": null, "spaceId": 98306, "parentId": "", "status": "current",
                "version": {"number": "7", "createdAt": "not a date", "extra": [1]},
                "unknown": {"deep": true}}"#,
        )
        .expect("tolerant page");
        assert_eq!(page.id.as_str(), "65601");
        assert_eq!(page.title, "");
        assert_eq!(page.space_id.as_ref().map(SpaceId::as_str), Some("98306"));
        assert_eq!(page.parent_id, None);
        assert_eq!(page.version_number(), 7);
        assert_eq!(page.version.as_ref().and_then(|v| v.created_at), None);
        assert_eq!(page.storage(), None);
    }

    #[test]
    fn bad_identity_is_an_error_not_a_guess() {
        assert!(serde_json::from_str::<Page>(r#"{"id": "12a"}"#).is_err());
        assert!(serde_json::from_str::<Page>(r#"{"id": "1", "parentId": "x"}"#).is_err());
        assert!(serde_json::from_str::<Page>(r#"{"id": "1", "version": {"number": -1}}"#).is_err());
    }

    #[test]
    fn search_hits_accept_both_result_shapes() {
        let direct: SearchHit =
            serde_json::from_str(r#"{"id": "1", "type": "page", "title": "A"}"#).expect("direct");
        let wrapped: SearchHit = serde_json::from_str(
            r#"{"content": {"id": 1, "type": "page", "title": "A"}, "title": "A", "score": 0.0}"#,
        )
        .expect("wrapped");
        assert_eq!(direct.0.id, wrapped.0.id);
        assert_eq!(wrapped.0.title, "A");
    }

    #[test]
    fn dates_accept_rfc3339_and_epoch_millis() {
        let v: ContentVersion =
            serde_json::from_str(r#"{"number": 1, "when": "2023-07-06T00:53:41.898Z"}"#)
                .expect("v1");
        assert_eq!(
            v.when.map(|d| d.timestamp_millis()),
            Some(1_688_604_821_898)
        );
        let h: History =
            serde_json::from_str(r#"{"createdDate": 1631605030794}"#).expect("history");
        assert_eq!(
            h.created_date.map(|d| d.timestamp_millis()),
            Some(1_631_605_030_794)
        );
    }
}
