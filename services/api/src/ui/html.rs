//! Building pages: escaping, the layout every page shares, and small formatting helpers.
//! Everything shown may come from Confluence: every string goes through [`esc`] unless it is
//! HTML this crate made safe (sanitised Markdown, escaped search snippets).

use chrono::{DateTime, Utc};

use super::session::Session;

/// Escapes text for HTML content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value.
pub fn enc(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// An external link (to Confluence) only when it is http(s); otherwise the text alone.
pub fn external_link(url: &str, text: &str) -> String {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        format!(
            r#"<a href="{}" rel="noopener noreferrer" target="_blank">{}</a>"#,
            esc(url.trim()),
            esc(text)
        )
    } else {
        esc(text)
    }
}

pub fn time(at: DateTime<Utc>) -> String {
    format!(
        r#"<time datetime="{}">{}</time>"#,
        at.to_rfc3339(),
        at.format("%Y-%m-%d %H:%M UTC")
    )
}

/// "3 min", "2 h 5 min", "4 days": how long a span is, roughly.
pub fn span(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86_400 => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{} days", seconds / 86_400),
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(session: &Session) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(&session.csrf)
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Sources,
    Search,
    DeadLetters,
    None,
}

/// A whole page: head, navigation (when signed in), the body, and the script.
pub fn page(title: &str, session: Option<&Session>, nav: Nav, body: &str) -> String {
    let navigation = match session {
        Some(session) => {
            let item = |target: Nav, href: &str, label: &str| {
                let current = if target == nav {
                    r#" aria-current="page""#
                } else {
                    ""
                };
                format!(r#"<li><a href="{href}"{current}>{label}</a></li>"#)
            };
            format!(
                r#"<nav aria-label="Main"><ul>{}{}{}</ul>
<form method="post" action="/signout" class="signout">{}<button type="submit">Sign out</button></form></nav>"#,
                item(Nav::Sources, "/sources", "Sources"),
                item(Nav::Search, "/search", "Search"),
                item(Nav::DeadLetters, "/dead-letters", "Dead letters"),
                csrf_field(session)
            )
        }
        None => String::new(),
    };
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Pagestream</title>
<link rel="stylesheet" href="/assets/ui.css">
<script src="/assets/ui.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><a class="brand" href="/">Pagestream</a>{navigation}</header>
<main id="main" tabindex="-1">
{body}
</main>
</body>
</html>
"##,
        title = esc(title),
    )
}

/// A labelled input with its error (from the api's `field`) below it.
pub struct Field<'a> {
    pub name: &'a str,
    pub label: &'a str,
    pub kind: &'a str,
    pub value: &'a str,
    pub hint: &'a str,
    pub error: Option<&'a str>,
    pub required: bool,
}

impl Field<'_> {
    pub fn render(&self) -> String {
        let id = format!("f-{}", self.name.replace('.', "-"));
        let mut described = Vec::new();
        let hint = if self.hint.is_empty() {
            String::new()
        } else {
            described.push(format!("{id}-hint"));
            format!(r#"<p class="hint" id="{id}-hint">{}</p>"#, esc(self.hint))
        };
        let error = match self.error {
            Some(error) => {
                described.push(format!("{id}-error"));
                format!(
                    r#"<p class="error" id="{id}-error" role="alert">{}</p>"#,
                    esc(error)
                )
            }
            None => String::new(),
        };
        let mut attributes = String::new();
        if !described.is_empty() {
            attributes.push_str(&format!(r#" aria-describedby="{}""#, described.join(" ")));
        }
        if self.error.is_some() {
            attributes.push_str(r#" aria-invalid="true""#);
        }
        if self.required {
            attributes.push_str(" required");
        }
        // Secrets are never written back into the page.
        let value = if self.kind == "password" {
            String::new()
        } else {
            format!(r#" value="{}""#, esc(self.value))
        };
        if self.kind == "password" {
            attributes.push_str(r#" autocomplete="new-password""#);
        }
        format!(
            r#"<div class="field"><label for="{id}">{label}</label>{hint}<input id="{id}" name="{name}" type="{kind}"{value}{attributes}>{error}</div>"#,
            label = esc(self.label),
            name = esc(self.name),
            kind = self.kind,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_links() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(
            external_link("javascript:alert(1)", "<b>t</b>"),
            "&lt;b&gt;t&lt;/b&gt;"
        );
        assert!(external_link("https://x.example/?a=1&b=\"", "t").contains("a=1&amp;b=&quot;"));
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
        assert_eq!(span(59), "59 s");
        assert_eq!(span(3 * 3600 + 120), "3 h 2 min");
    }

    #[test]
    fn password_fields_never_carry_a_value() {
        let field = Field {
            name: "auth.api_token",
            label: "API token",
            kind: "password",
            value: "secret-token",
            hint: "",
            error: Some("confluence rejected the credentials"),
            required: true,
        };
        let html = field.render();
        assert!(!html.contains("secret-token"), "{html}");
        assert!(html.contains(r#"aria-invalid="true""#), "{html}");
    }
}
