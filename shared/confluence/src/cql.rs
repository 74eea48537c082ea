//! Space keys and the CQL the fetcher sends. Every value that goes into CQL is quoted and escaped
//! (backslash first, then `"`), and space keys are validated before they reach a query or a URL.

use std::fmt;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

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

/// The time zone of the API user's profile, in which Confluence reads CQL dates: an IANA zone, so
/// that a window is written with the offset in force at each of its bounds (daylight saving).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserTimeZone(Tz);

impl UserTimeZone {
    pub const UTC: Self = Self(Tz::UTC);

    /// An IANA zone name (`Australia/Sydney`, `UTC`).
    pub fn parse(name: &str) -> Result<Self, ConfluenceError> {
        name.parse::<Tz>()
            .map(Self)
            .map_err(|_| ConfluenceError::InvalidTimeZone(name.chars().take(80).collect()))
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// `at` as the local minute CQL compares with. Where daylight saving ends, a local time
    /// occurs twice and Confluence may read either: a lower bound takes the reading that starts
    /// the window no later than `at`, an upper bound the one that ends it no earlier.
    fn local(&self, at: DateTime<Utc>, bound: Bound) -> NaiveDateTime {
        let local = at.with_timezone(&self.0).naive_local();
        match self.0.from_local_datetime(&local) {
            LocalResult::Ambiguous(one, other) => {
                let repeated = (one - other).abs();
                match bound {
                    Bound::Lower => local - repeated,
                    Bound::Upper => local + repeated,
                }
            }
            _ => local,
        }
    }
}

impl Default for UserTimeZone {
    fn default() -> Self {
        Self::UTC
    }
}

impl fmt::Display for UserTimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy)]
enum Bound {
    Lower,
    Upper,
}

/// Builds the discovery query: pages (and blog posts, with [`CqlQuery::content_in_space`]) of one
/// space, optionally within a `lastmodified` window, oldest first.
///
/// Bounds are instants; they are written in `time_zone` (the API user's zone, UTC by default) and
/// truncated to the minute, so the lower bound (`>=`) may include a little more than asked and the
/// upper bound (`<`) a little less: callers keep an overlap between consecutive windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CqlQuery {
    space: SpaceKey,
    /// The `type` clause.
    types: &'static str,
    modified_from: Option<DateTime<Utc>>,
    modified_before: Option<DateTime<Utc>>,
    time_zone: UserTimeZone,
}

impl CqlQuery {
    /// `type=page`.
    pub fn pages_in_space(space: SpaceKey) -> Self {
        Self {
            space,
            types: "type=page",
            modified_from: None,
            modified_before: None,
            time_zone: UserTimeZone::UTC,
        }
    }

    /// `type in (page,blogpost)`: both in one listing (one request a batch, not one per type).
    pub fn content_in_space(space: SpaceKey) -> Self {
        Self {
            types: "type in (page,blogpost)",
            ..Self::pages_in_space(space)
        }
    }

    /// `type=comment`: the comments on the space's pages and blog posts (expand `container` to
    /// learn which).
    pub fn comments_in_space(space: SpaceKey) -> Self {
        Self {
            types: "type=comment",
            ..Self::pages_in_space(space)
        }
    }

    /// The same space, window and time zone over the space's comments (`type=comment`).
    pub fn comments(&self) -> Self {
        Self {
            types: "type=comment",
            ..self.clone()
        }
    }

    /// `type=attachment`: the files attached to the space's pages and blog posts (expand
    /// `container` to learn which).
    pub fn attachments_in_space(space: SpaceKey) -> Self {
        Self {
            types: "type=attachment",
            ..Self::pages_in_space(space)
        }
    }

    /// The same space, window and time zone over the space's attachments (`type=attachment`).
    pub fn attachments(&self) -> Self {
        Self {
            types: "type=attachment",
            ..self.clone()
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
    pub fn time_zone(mut self, zone: UserTimeZone) -> Self {
        self.time_zone = zone;
        self
    }

    pub fn space(&self) -> &SpaceKey {
        &self.space
    }

    fn date(&self, at: DateTime<Utc>, bound: Bound) -> String {
        quote_cql(
            &self
                .time_zone
                .local(at, bound)
                .format(CQL_DATE_FORMAT)
                .to_string(),
        )
    }
}

impl fmt::Display for CqlQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} and space={}",
            self.types,
            quote_cql(self.space.as_str())
        )?;
        if let Some(from) = self.modified_from {
            write!(f, " and lastmodified >= {}", self.date(from, Bound::Lower))?;
        }
        if let Some(before) = self.modified_before {
            write!(f, " and lastmodified < {}", self.date(before, Bound::Upper))?;
        }
        f.write_str(" order by lastmodified asc")
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn comment_searches_keep_the_window() {
        let space = SpaceKey::new("ENG").expect("key");
        let at = Utc
            .with_ymd_and_hms(2024, 3, 1, 10, 5, 30)
            .single()
            .expect("date");
        let window = CqlQuery::content_in_space(space.clone())
            .modified_from(at)
            .modified_before(at);
        assert_eq!(
            window.comments().to_string(),
            r#"type=comment and space="ENG" and lastmodified >= "2024-03-01 10:05" and lastmodified < "2024-03-01 10:05" order by lastmodified asc"#
        );
        assert_eq!(
            CqlQuery::comments_in_space(space.clone()).to_string(),
            r#"type=comment and space="ENG" order by lastmodified asc"#
        );
        assert_eq!(
            window.attachments().to_string(),
            r#"type=attachment and space="ENG" and lastmodified >= "2024-03-01 10:05" and lastmodified < "2024-03-01 10:05" order by lastmodified asc"#
        );
        assert_eq!(
            CqlQuery::attachments_in_space(space).to_string(),
            r#"type=attachment and space="ENG" order by lastmodified asc"#
        );
    }

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
            .time_zone(UserTimeZone::parse("Europe/Berlin").expect("zone"));
        assert_eq!(
            window.to_string(),
            r#"type=page and space="ENG" and lastmodified >= "2024-03-02 00:30" and lastmodified < "2024-03-02 02:00" order by lastmodified asc"#
        );
        assert_eq!(
            CqlQuery::content_in_space(space).to_string(),
            r#"type in (page,blogpost) and space="ENG" order by lastmodified asc"#
        );
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("date")
    }

    #[test]
    fn a_window_across_a_daylight_saving_change_has_each_bound_in_its_own_offset() {
        let sydney = UserTimeZone::parse("Australia/Sydney").expect("zone");
        // Daylight saving began on 2026-10-04 at 02:00 AEST (+10), then 03:00 AEDT (+11).
        let window = CqlQuery::pages_in_space(SpaceKey::new("ENG").expect("key"))
            .modified_from(at(2026, 10, 3, 14, 5))
            .modified_before(at(2026, 12, 3, 1, 0))
            .time_zone(sydney);
        assert_eq!(
            window.to_string(),
            r#"type=page and space="ENG" and lastmodified >= "2026-10-04 00:05" and lastmodified < "2026-12-03 12:00" order by lastmodified asc"#
        );
    }

    #[test]
    fn a_repeated_local_hour_widens_the_window() {
        let berlin = UserTimeZone::parse("Europe/Berlin").expect("zone");
        // 2026-10-25: 03:00 CEST became 02:00 CET, so 02:30 local happened at 00:30 and 01:30 UTC.
        let window = CqlQuery::pages_in_space(SpaceKey::new("ENG").expect("key"))
            .modified_from(at(2026, 10, 25, 0, 30))
            .modified_before(at(2026, 10, 25, 1, 30))
            .time_zone(berlin);
        assert_eq!(
            window.to_string(),
            r#"type=page and space="ENG" and lastmodified >= "2026-10-25 01:30" and lastmodified < "2026-10-25 03:30" order by lastmodified asc"#
        );
    }

    #[test]
    fn zone_names_are_validated() {
        assert_eq!(
            UserTimeZone::parse("America/New_York")
                .expect("zone")
                .name(),
            "America/New_York"
        );
        assert_eq!(UserTimeZone::default(), UserTimeZone::UTC);
        for bad in ["", "UTC+10", "Mars/Olympus", "+02:00"] {
            assert!(UserTimeZone::parse(bad).is_err(), "{bad}");
        }
    }
}
