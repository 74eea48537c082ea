//! Space keys and the CQL the fetcher sends. Every value that goes into CQL is quoted and escaped
//! (backslash first, then `"`), and space keys are validated before they reach a query or a URL.

use std::fmt;

use chrono::{DateTime, FixedOffset, Offset, Utc};

use crate::ConfluenceError;

/// A validated Confluence space key: letters and digits (`ENG`, `DOCS2`), or a personal space
/// (`~` followed by letters, digits, `.`, `_`, `-`, `@`, `:`), at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpaceKey(String);

impl SpaceKey {
    pub fn new(key: impl Into<String>) -> Result<Self, ConfluenceError> {
        let key = key.into();
        let valid = match key.strip_prefix('~') {
            Some(personal) => {
                !personal.is_empty()
                    && personal
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-@:".contains(c))
            }
            None => !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
        };
        if valid && key.len() <= 255 {
            Ok(Self(key))
        } else {
            Err(ConfluenceError::InvalidSpaceKey(
                key.chars().take(80).collect(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpaceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SpaceKey {
    type Err = ConfluenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Quotes a value for CQL: escape backslashes first, then double quotes, and wrap in `"`.
pub fn quote_cql(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// The CQL date format (minute precision, read in the API user's time zone).
const CQL_DATE_FORMAT: &str = "%Y-%m-%d %H:%M";

/// Builds the discovery query: pages (and blog posts, with [`CqlQuery::content_in_space`]) of one
/// space, optionally within a `lastmodified` window, oldest first.
///
/// Bounds are instants; they are written in `time_zone` (the API user's zone, UTC by default) and
/// truncated to the minute, so the lower bound (`>=`) may include a little more than asked and the
/// upper bound (`<`) a little less: callers keep an overlap between consecutive windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CqlQuery {
    space: SpaceKey,
    with_blog_posts: bool,
    modified_from: Option<DateTime<Utc>>,
    modified_before: Option<DateTime<Utc>>,
    time_zone: FixedOffset,
}

impl CqlQuery {
    /// `type=page`.
    pub fn pages_in_space(space: SpaceKey) -> Self {
        Self {
            space,
            with_blog_posts: false,
            modified_from: None,
            modified_before: None,
            time_zone: Utc.fix(),
        }
    }

    /// `type in (page,blogpost)`: both in one listing (one request a batch, not one per type).
    pub fn content_in_space(space: SpaceKey) -> Self {
        Self {
            with_blog_posts: true,
            ..Self::pages_in_space(space)
        }
    }

    /// `lastmodified >= from` (inclusive, truncated to the minute).
    pub fn modified_from(mut self, from: DateTime<Utc>) -> Self {
        self.modified_from = Some(from);
        self
    }

    /// `lastmodified < before` (exclusive, truncated to the minute).
    pub fn modified_before(mut self, before: DateTime<Utc>) -> Self {
        self.modified_before = Some(before);
        self
    }

    /// The time zone Confluence reads CQL dates in (the API user's profile zone).
    pub fn time_zone(mut self, offset: FixedOffset) -> Self {
        self.time_zone = offset;
        self
    }

    pub fn space(&self) -> &SpaceKey {
        &self.space
    }

    fn date(&self, at: DateTime<Utc>) -> String {
        quote_cql(
            &at.with_timezone(&self.time_zone)
                .format(CQL_DATE_FORMAT)
                .to_string(),
        )
    }
}

impl fmt::Display for CqlQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types = if self.with_blog_posts {
            "type in (page,blogpost)"
        } else {
            "type=page"
        };
        write!(f, "{types} and space={}", quote_cql(self.space.as_str()))?;
        if let Some(from) = self.modified_from {
            write!(f, " and lastmodified >= {}", self.date(from))?;
        }
        if let Some(before) = self.modified_before {
            write!(f, " and lastmodified < {}", self.date(before))?;
        }
        f.write_str(" order by lastmodified asc")
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn quoting_escapes_backslash_before_quote() {
        assert_eq!(quote_cql("plain"), "\"plain\"");
        assert_eq!(quote_cql(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote_cql(r"a\b"), r#""a\\b""#);
        // Escaping the quote first would turn `\"` into `\\\"` wrongly; backslash first gives `\\\"`
        // for the pair, which Confluence reads back as `\"`.
        assert_eq!(quote_cql(r#"\""#), r#""\\\"""#);
        assert_eq!(quote_cql(r#"x" or space="Y"#), r#""x\" or space=\"Y""#);
    }

    #[test]
    fn space_keys_are_validated() {
        for good in ["ENG", "docs2", "~323528440", "~jane.doe", "~557058:abc-def"] {
            assert!(SpaceKey::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "~",
            "EN G",
            "ENG\"",
            "ENG)",
            "a/b",
            "ÉNG",
            &"A".repeat(256),
        ] {
            assert!(SpaceKey::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_formats_bounds_in_the_users_time_zone() {
        let space = SpaceKey::new("ENG").expect("key");
        let from = Utc
            .with_ymd_and_hms(2024, 3, 1, 23, 30, 59)
            .single()
            .expect("date");
        let before = Utc
            .with_ymd_and_hms(2024, 3, 2, 1, 0, 0)
            .single()
            .expect("date");
        let plain = CqlQuery::pages_in_space(space.clone());
        assert_eq!(
            plain.to_string(),
            r#"type=page and space="ENG" order by lastmodified asc"#
        );
        let window = plain
            .modified_from(from)
            .modified_before(before)
            .time_zone(FixedOffset::east_opt(2 * 3600).expect("offset"));
        assert_eq!(
            window.to_string(),
            r#"type=page and space="ENG" and lastmodified >= "2024-03-02 01:30" and lastmodified < "2024-03-02 03:00" order by lastmodified asc"#
        );
        assert_eq!(
            CqlQuery::content_in_space(space).to_string(),
            r#"type in (page,blogpost) and space="ENG" order by lastmodified asc"#
        );
    }
}
