//! URLs that may appear in the Markdown: only safe schemes, encoded so that they cannot break out
//! of a Markdown link destination.

/// What a URL is used for: images may also be raster `data:` URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlUse {
    Link,
    Image,
}

/// The URL as it may appear in a Markdown link or image, or `None` if it is not safe there
/// (`javascript:`, `vbscript:`, `data:` other than a raster image, any other unknown scheme).
pub fn sanitize_url(raw: &str, use_: UrlUse) -> Option<String> {
    // Browsers ignore ASCII tabs and newlines anywhere in a URL and trim controls and spaces:
    // `java\tscript:` is `javascript:`.
    let cleaned: String = raw
        .trim_matches(|c: char| c.is_ascii_control() || c == ' ')
        .chars()
        .filter(|&c| c != '\t' && c != '\n' && c != '\r')
        .collect();
    if cleaned.is_empty() {
        return None;
    }
    if let Some(scheme) = scheme_of(&cleaned) {
        let scheme = scheme.to_ascii_lowercase();
        let allowed = match scheme.as_str() {
            "http" | "https" => true,
            "mailto" | "ftp" | "tel" => use_ == UrlUse::Link,
            "data" => use_ == UrlUse::Image && is_raster_data_url(&cleaned),
            _ => false,
        };
        if !allowed {
            return None;
        }
    }
    Some(encode_destination(&cleaned))
}

/// The scheme, if the URL has one: letters, digits, `+ - .` before a `:` that comes before any
/// `/ ? #`.
fn scheme_of(url: &str) -> Option<&str> {
    let end = url.find([':', '/', '?', '#'])?;
    if url.as_bytes().get(end) != Some(&b':') {
        return None;
    }
    let scheme = &url[..end];
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    // Anything else before a colon (`a b:c`) still makes browsers guess; refuse it.
    if valid { Some(scheme) } else { Some("") }
}

fn is_raster_data_url(url: &str) -> bool {
    let lower = url.get(..30).unwrap_or(url).to_ascii_lowercase();
    ["png", "jpeg", "jpg", "gif", "webp", "bmp", "avif"]
        .iter()
        .any(|kind| {
            let prefix = format!("data:image/{kind}");
            lower.starts_with(&prefix)
                && matches!(lower.as_bytes().get(prefix.len()), Some(b';' | b','))
        })
}

/// Percent-encodes what would end or confuse a Markdown link destination.
fn encode_destination(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for ch in url.chars() {
        match ch {
            ' ' | '<' | '>' | '(' | ')' | '"' | '`' | '\\' | '[' | ']' => {
                out.push_str(&format!("%{:02X}", ch as u32));
            }
            // Markdown decodes entity references in destinations (`&#x09;` would become a tab
            // that browsers drop, re-forming `javascript:`); an escaped `&` stays literal.
            '&' => out.push_str("\\&"),
            c if c.is_control() => {
                let mut buf = [0; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one path segment (a page title, a file name).
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The Confluence base URL (context path included) of a page URL: everything before the
/// `/spaces/`, `/display/` or `/pages/` part that Cloud and Data Center page URLs have.
pub fn confluence_base_from_page_url(page_url: &str) -> Option<String> {
    let rest = page_url
        .strip_prefix("https://")
        .or_else(|| page_url.strip_prefix("http://"))?;
    let path_start = rest.find('/')?;
    let path = &rest[path_start..];
    let cut = ["/spaces/", "/display/", "/pages/"]
        .iter()
        .filter_map(|marker| path.find(marker))
        .min()?;
    let base = &page_url[..page_url.len() - path.len() + cut];
    Some(base.to_owned())
}

/// On Atlassian Cloud, Jira lives on the same site as Confluence (`https://acme.atlassian.net`).
pub fn cloud_jira_base(page_url: &str) -> Option<String> {
    let rest = page_url.strip_prefix("https://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    host.ends_with(".atlassian.net")
        .then(|| format!("https://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_schemes_are_refused_however_disguised() {
        for url in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "java\tscript:alert(1)",
            "vbscript:msgbox",
            "\u{1}javascript:alert(1)",
            "data:text/html;base64,PHNjcmlwdD4=",
            "file:///etc/passwd",
        ] {
            assert_eq!(sanitize_url(url, UrlUse::Link), None, "{url:?}");
            assert_eq!(sanitize_url(url, UrlUse::Image), None, "{url:?}");
        }
    }

    #[test]
    fn data_urls_are_kept_only_for_raster_images() {
        let png = "data:image/png;base64,iVBORw0KGgo=";
        assert_eq!(sanitize_url(png, UrlUse::Image).as_deref(), Some(png));
        assert_eq!(sanitize_url(png, UrlUse::Link), None);
        assert_eq!(
            sanitize_url("data:image/svg+xml;base64,PHN2Zz4=", UrlUse::Image),
            None
        );
    }

    #[test]
    fn safe_urls_are_encoded_for_markdown() {
        assert_eq!(
            sanitize_url("https://x.org/a b(c)<d>", UrlUse::Link).as_deref(),
            Some("https://x.org/a%20b%28c%29%3Cd%3E")
        );
        assert_eq!(
            sanitize_url("https://x.org/?a=1&b=2", UrlUse::Link).as_deref(),
            Some("https://x.org/?a=1\\&b=2")
        );
        assert_eq!(
            sanitize_url("/wiki/x?y=1#z", UrlUse::Link).as_deref(),
            Some("/wiki/x?y=1#z")
        );
        assert_eq!(
            sanitize_url("mailto:a@b.org", UrlUse::Link).as_deref(),
            Some("mailto:a@b.org")
        );
    }

    #[test]
    fn bases_come_from_cloud_and_data_center_page_urls() {
        assert_eq!(
            confluence_base_from_page_url("https://acme.atlassian.net/wiki/spaces/ENG/pages/1/T")
                .as_deref(),
            Some("https://acme.atlassian.net/wiki")
        );
        assert_eq!(
            confluence_base_from_page_url(
                "https://wiki.corp/confluence/pages/viewpage.action?pageId=1"
            )
            .as_deref(),
            Some("https://wiki.corp/confluence")
        );
        assert_eq!(confluence_base_from_page_url("not a url"), None);
        assert_eq!(
            cloud_jira_base("https://acme.atlassian.net/wiki/spaces/ENG/pages/1").as_deref(),
            Some("https://acme.atlassian.net")
        );
        assert_eq!(cloud_jira_base("https://wiki.corp/display/ENG/T"), None);
    }
}
