//! The one rule for Jira issue keys: the converter extracts keys by it and the api's `jira` filter
//! accepts keys by it, so a key the index holds is always one a search can ask for.

/// Whether `key` is a Jira issue key: a project key (a capital letter, then capitals, digits or
/// `_`; 2 to 20 characters), `-`, and an issue number (1 to 10 digits) without leading zero.
pub fn is_valid_issue_key(key: &str) -> bool {
    let Some((project, number)) = key.split_once('-') else {
        return false;
    };
    let mut project_chars = project.chars();
    let project_valid = (2..=20).contains(&project.len())
        && project_chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && project_chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    let number_valid = (1..=10).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
        && !number.starts_with('0');
    project_valid && number_valid
}

/// A key as written by a person or a macro parameter (any case, padded) in canonical form, if valid.
pub fn normalize_issue_key(raw: &str) -> Option<String> {
    let key = raw.trim().to_ascii_uppercase();
    is_valid_issue_key(&key).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for key in ["AB-1", "PROJ-123", "A1_B-99", "ABCDEFGHIJKLMNOPQRST-1"] {
            assert!(is_valid_issue_key(key), "{key}");
        }
        for key in [
            "A-1",
            "ab-1",
            "AB-01",
            "AB-",
            "-1",
            "AB-1x",
            "1AB-1",
            "AB_1",
            "ABCDEFGHIJKLMNOPQRSTU-1",
            "AB-12345678901",
        ] {
            assert!(!is_valid_issue_key(key), "{key}");
        }
        assert_eq!(normalize_issue_key(" proj-7 ").as_deref(), Some("PROJ-7"));
        assert_eq!(normalize_issue_key("PROJ-7\" onclick"), None);
    }
}
