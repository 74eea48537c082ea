//! Jira issue keys: from `jira` macros, from `/browse/KEY-123` links and from plain text.

// The rule itself is shared with the api's `jira` filter.
pub use pagestream_events::jira::{is_valid_issue_key, normalize_issue_key as normalize_key};

/// The issue key of a Jira issue URL (`…/browse/KEY-123`, optionally followed by a path, query or
/// fragment).
pub fn key_from_browse_url(url: &str) -> Option<String> {
    let (_, after) = url.split_once("/browse/")?;
    let key = after.split(['/', '?', '#']).next()?;
    normalize_key(key)
}

/// Prefixes of tokens that look like keys in prose but are standards, algorithms and versions.
const NOT_PROJECTS: &[&str] = &[
    "AES", "ANSI", "ASCII", "CP", "CRC", "CVE", "CWE", "DES", "ECMA", "EN", "ES", "GPT", "HTTP",
    "IEC", "IEEE", "IPV", "ISO", "JEP", "JSR", "MD", "PEP", "RFC", "RSA", "SHA", "SSL", "TLS",
    "UCS", "UTF", "WCAG", "WIN", "X",
];

/// Appends the issue keys that appear as words in prose: not inside a longer word, a path segment
/// joined by `-`/`_`, or a version (`ABC-1.2`).
pub fn keys_in_text(text: &str, out: &mut Vec<String>) {
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let start = index;
        if !bytes[start].is_ascii_uppercase() || start > 0 && is_word_byte(bytes[start - 1]) {
            index += 1;
            continue;
        }
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_uppercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if end < bytes.len() && bytes[end] == b'-' {
            let mut number_end = end + 1;
            while number_end < bytes.len() && bytes[number_end].is_ascii_digit() {
                number_end += 1;
            }
            let followed_by_word = bytes.get(number_end).is_some_and(|&b| {
                is_word_byte(b)
                    || b == b'.' && bytes.get(number_end + 1).is_some_and(u8::is_ascii_digit)
            });
            let key = &text[start..number_end];
            if number_end > end + 1
                && !followed_by_word
                && is_valid_issue_key(key)
                && !NOT_PROJECTS.contains(&&text[start..end])
            {
                push_unique(out, key.to_owned());
            }
            index = number_end.max(end + 1);
        } else {
            index = end.max(start + 1);
        }
    }
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' || byte >= 0x80
}

pub fn push_unique(list: &mut Vec<String>, value: String) {
    if !list.contains(&value) {
        list.push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_browse_urls() {
        assert_eq!(
            key_from_browse_url("https://acme.atlassian.net/browse/OPS-42?focusedCommentId=1")
                .as_deref(),
            Some("OPS-42")
        );
        assert_eq!(key_from_browse_url("https://x.org/browse/nope"), None);
    }

    #[test]
    fn keys_in_prose_skip_lookalikes() {
        let mut keys = Vec::new();
        keys_in_text(
            "Fixed in PROJ-12 and (OPS-7), see PROJ-12. Not UTF-8, SHA-256, ISO-8601, xPROJ-1, PROJ-1a, ABC-1.2, my-PROJ-3 or ü-AB-4; but DATA_2-5.",
            &mut keys,
        );
        assert_eq!(keys, ["PROJ-12", "OPS-7", "DATA_2-5"]);
    }
}
