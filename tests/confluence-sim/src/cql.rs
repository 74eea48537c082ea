//! The CQL subset the fetcher uses: `type = page`, `type = blogpost` or
//! `type in (page, blogpost)`, or `type = comment` or `type = attachment` alone, `space = "KEY"`, `lastmodified` compared with
//! `"yyyy-MM-dd HH:mm"` (or `"yyyy-MM-dd"`) in the API user's time zone, joined by `and`, with an
//! optional `order by lastmodified [asc|desc]`. Anything else is rejected, as Confluence rejects
//! what it cannot parse (400).

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::content::ContentKind;

#[derive(Debug, Clone, PartialEq)]
pub struct CqlFilter {
    /// The content types asked for (`type` is required).
    pub types: Vec<ContentKind>,
    /// `type = comment`: comments (on the space's current pages and blog posts) instead.
    pub comments: bool,
    /// `type = attachment`: attachments (of the space's current pages and blog posts) instead.
    pub attachments: bool,
    pub space: Option<String>,
    pub modified: Vec<(Comparison, DateTime<Utc>)>,
    pub order: Option<SortOrder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

impl CqlFilter {
    pub fn matches(&self, space_key: &str, modified_at: DateTime<Utc>) -> bool {
        if let Some(space) = &self.space
            && !space.eq_ignore_ascii_case(space_key)
        {
            return false;
        }
        self.modified.iter().all(|(op, at)| match op {
            Comparison::Lt => modified_at < *at,
            Comparison::Le => modified_at <= *at,
            Comparison::Gt => modified_at > *at,
            Comparison::Ge => modified_at >= *at,
            Comparison::Eq => {
                modified_at >= *at && modified_at < *at + chrono::Duration::minutes(1)
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(String),
    Other(char),
}

fn tokenize(cql: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = cql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(escaped) => value.push(escaped),
                        None => return Err("unterminated escape".into()),
                    },
                    Some(q) if q == c => break,
                    Some(other) => value.push(other),
                    None => return Err("unterminated string".into()),
                }
            }
            tokens.push(Token::Quoted(value));
        } else if "=!<>~".contains(c) {
            let mut op = String::new();
            while let Some(&o) = chars.peek() {
                if "=!<>~".contains(o) {
                    op.push(o);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Op(op));
        } else if c.is_alphanumeric() || "._-~".contains(c) {
            let mut word = String::new();
            while let Some(&w) = chars.peek() {
                if w.is_alphanumeric() || "._-~:".contains(w) {
                    word.push(w);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Word(word));
        } else {
            tokens.push(Token::Other(c));
            chars.next();
        }
    }
    Ok(tokens)
}

fn parse_date(value: &str, zone: Tz) -> Option<DateTime<Utc>> {
    let naive = ["%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .or_else(|| {
            ["%Y-%m-%d", "%Y/%m/%d"]
                .iter()
                .find_map(|f| NaiveDate::parse_from_str(value, f).ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    // As Java's `ZonedDateTime.of` (Confluence's own reading): a repeated local hour (daylight
    // saving ends) is its first occurrence, a skipped one (daylight saving begins) an hour later.
    zone.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|d| d.with_timezone(&Utc))
}

/// Parses the supported subset; the error is the reason Confluence-style (`Could not parse cql`).
pub fn parse(cql: &str, zone: Tz) -> Result<CqlFilter, String> {
    let tokens = tokenize(cql)?;
    let mut filter = CqlFilter {
        types: Vec::new(),
        comments: false,
        attachments: false,
        space: None,
        modified: Vec::new(),
        order: None,
    };
    let mut i = 0;
    let word = |t: Option<&Token>| match t {
        Some(Token::Word(w)) => Some(w.to_ascii_lowercase()),
        _ => None,
    };
    let content_kind = |value: &str| match value.to_ascii_lowercase().as_str() {
        "page" => Ok(ContentKind::Page),
        "blogpost" => Ok(ContentKind::Blogpost),
        other => Err(format!(
            "the simulator only searches pages and blog posts, not {other}"
        )),
    };
    loop {
        let field = word(tokens.get(i)).ok_or_else(|| "expected a field".to_owned())?;
        if field == "type" && word(tokens.get(i + 1)).as_deref() == Some("in") {
            if !filter.types.is_empty() {
                return Err("type given twice".into());
            }
            if tokens.get(i + 2) != Some(&Token::Other('(')) {
                return Err("expected ( after type in".into());
            }
            i += 3;
            loop {
                match tokens.get(i) {
                    Some(Token::Word(value) | Token::Quoted(value)) => {
                        filter.types.push(content_kind(value)?)
                    }
                    _ => return Err("expected a type in the list".into()),
                }
                i += 1;
                match tokens.get(i) {
                    Some(Token::Other(',')) => i += 1,
                    Some(Token::Other(')')) => {
                        i += 1;
                        break;
                    }
                    _ => return Err("expected , or ) in the type list".into()),
                }
            }
        } else {
            let op = match tokens.get(i + 1) {
                Some(Token::Op(op)) => op.clone(),
                _ => return Err(format!("expected an operator after {field}")),
            };
            let value = match tokens.get(i + 2) {
                Some(Token::Quoted(v)) => v.clone(),
                Some(Token::Word(w)) => w.clone(),
                _ => return Err(format!("expected a value after {field} {op}")),
            };
            i += 3;
            match (field.as_str(), op.as_str()) {
                ("type", "=")
                    if value.eq_ignore_ascii_case("comment") && filter.types.is_empty() =>
                {
                    filter.comments = true;
                }
                ("type", "=")
                    if value.eq_ignore_ascii_case("attachment")
                        && filter.types.is_empty()
                        && !filter.comments =>
                {
                    filter.attachments = true;
                }
                ("type", "=")
                    if filter.types.is_empty() && !filter.comments && !filter.attachments =>
                {
                    filter.types.push(content_kind(&value)?)
                }
                ("type", _) => return Err(format!("unsupported type clause: type {op} {value}")),
                ("space" | "space.key", "=") => {
                    if filter.space.replace(value).is_some() {
                        return Err("space given twice".into());
                    }
                }
                ("lastmodified", _) => {
                    let comparison = match op.as_str() {
                        "<" => Comparison::Lt,
                        "<=" => Comparison::Le,
                        ">" => Comparison::Gt,
                        ">=" => Comparison::Ge,
                        "=" => Comparison::Eq,
                        other => {
                            return Err(format!("unsupported operator {other} for lastmodified"));
                        }
                    };
                    let at = parse_date(&value, zone)
                        .ok_or_else(|| format!("invalid date {value:?} for lastmodified"))?;
                    filter.modified.push((comparison, at));
                }
                _ => return Err(format!("unsupported clause: {field} {op} {value}")),
            }
        }
        match word(tokens.get(i)).as_deref() {
            None if i == tokens.len() => break,
            Some("and") => i += 1,
            Some("order") => {
                if word(tokens.get(i + 1)).as_deref() != Some("by")
                    || word(tokens.get(i + 2)).as_deref() != Some("lastmodified")
                {
                    return Err("only order by lastmodified is supported".into());
                }
                i += 3;
                filter.order = Some(match word(tokens.get(i)).as_deref() {
                    None => SortOrder::Asc,
                    Some("asc") => SortOrder::Asc,
                    Some("desc") => SortOrder::Desc,
                    Some(other) => return Err(format!("unexpected {other} after order by")),
                });
                if tokens.get(i).is_some() {
                    i += 1;
                }
                if i != tokens.len() {
                    return Err("unexpected input after order by".into());
                }
                break;
            }
            _ => return Err(format!("unexpected token at clause {}", i / 4 + 1)),
        }
    }
    if filter.types.is_empty() && !filter.comments && !filter.attachments {
        return Err(
            "the simulator needs a type clause (page, blogpost, comment, attachment)".into(),
        );
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> Tz {
        Tz::UTC
    }

    #[test]
    fn parses_the_fetchers_queries() {
        let f = parse(
            r#"type=page and space="ENG" and lastmodified >= "2024-03-01 10:05" and lastmodified < "2024-03-02" order by lastmodified asc"#,
            utc(),
        )
        .expect("parse");
        assert_eq!(f.space.as_deref(), Some("ENG"));
        assert_eq!(f.order, Some(SortOrder::Asc));
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("date")
                .with_timezone(&Utc)
        };
        assert!(f.matches("ENG", at("2024-03-01T10:05:00Z")));
        assert!(!f.matches("ENG", at("2024-03-01T10:04:59Z")));
        assert!(!f.matches("ENG", at("2024-03-02T00:00:00Z")));
        assert!(!f.matches("OPS", at("2024-03-01T12:00:00Z")));
    }

    #[test]
    fn parses_type_lists_of_pages_and_blog_posts() {
        let both = parse(
            r#"type in (page,blogpost) and space="ENG" order by lastmodified asc"#,
            utc(),
        )
        .expect("parse");
        assert_eq!(both.types, [ContentKind::Page, ContentKind::Blogpost]);
        assert_eq!(both.space.as_deref(), Some("ENG"));
        assert_eq!(both.order, Some(SortOrder::Asc));
        let blog = parse(r#"type = blogpost and space = "ENG""#, utc()).expect("parse");
        assert_eq!(blog.types, [ContentKind::Blogpost]);
        let listed = parse(r#"space="ENG" and type in ("page")"#, utc()).expect("parse");
        assert_eq!(listed.types, [ContentKind::Page]);
    }

    #[test]
    fn parses_comment_searches() {
        let f = parse(
            r#"type=comment and space="ENG" and lastmodified >= "2024-03-01 10:05" order by lastmodified asc"#,
            utc(),
        )
        .expect("parse");
        assert!(f.comments);
        assert!(f.types.is_empty());
        assert_eq!(f.space.as_deref(), Some("ENG"));
    }

    #[test]
    fn escaped_quotes_stay_inside_the_value() {
        let f = parse(r#"type=page and space="EN\"G\\" "#, utc()).expect("parse");
        assert_eq!(f.space.as_deref(), Some("EN\"G\\"));
    }

    #[test]
    fn time_zone_shifts_the_bounds() {
        let f = parse(
            r#"type=page and lastmodified >= "2024-03-01 02:00""#,
            Tz::Europe__Helsinki,
        )
        .expect("parse");
        assert_eq!(f.modified[0].1.to_rfc3339(), "2024-03-01T00:00:00+00:00");
        // The same zone in summer, a day after daylight saving began (03:00 became 04:00).
        let f = parse(
            r#"type=page and lastmodified >= "2024-04-01 02:00" and lastmodified < "2024-03-31 03:30""#,
            Tz::Europe__Helsinki,
        )
        .expect("parse");
        assert_eq!(f.modified[0].1.to_rfc3339(), "2024-03-31T23:00:00+00:00");
        assert_eq!(f.modified[1].1.to_rfc3339(), "2024-03-31T01:30:00+00:00");
    }

    #[test]
    fn everything_else_is_rejected() {
        for bad in [
            "",
            "space=ENG",
            "type in (page, comment)",
            "type=comment and type=page",
            "type in (page",
            "type in page",
            "type=page or space=ENG",
            "type=page and (space=ENG)",
            "type=page and title ~ \"x\"",
            "type=page and lastmodified >= \"yesterday\"",
            "type=page order by title",
            "type=page and space=\"ENG",
            "type=page and space in (\"A\",\"B\")",
        ] {
            assert!(parse(bad, utc()).is_err(), "{bad:?} accepted");
        }
    }
}
