//! Identifiers that end up in subjects: they must be single NATS subject tokens.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::EventError;

/// The key of a Confluence source: a token-safe slug (`[a-z0-9][a-z0-9_-]{0,62}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SourceKey(String);

impl SourceKey {
    pub fn new(key: impl Into<String>) -> Result<Self, EventError> {
        let key = key.into();
        let mut chars = key.chars();
        let valid_first = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let valid_rest =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid_first && valid_rest && key.len() <= 63 {
            Ok(Self(key))
        } else {
            Err(EventError::InvalidIdentifier {
                what: "source key",
                value: truncate_for_error(&key),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Confluence content id. Confluence ids are decimal numbers; real payloads send them as strings or
/// as numbers, and both decode here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PageId(String);

impl PageId {
    pub fn new(id: impl Into<String>) -> Result<Self, EventError> {
        let id = id.into();
        if !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(id))
        } else {
            Err(EventError::InvalidIdentifier {
                what: "page id",
                value: truncate_for_error(&id),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<u64> for PageId {
    fn from(id: u64) -> Self {
        Self(id.to_string())
    }
}

fn truncate_for_error(value: &str) -> String {
    value.chars().take(80).collect()
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SourceKey {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl std::str::FromStr for PageId {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for SourceKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(raw).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for PageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum StringOrNumber {
            String(String),
            Number(u64),
        }
        match StringOrNumber::deserialize(deserializer)? {
            StringOrNumber::String(s) => Self::new(s).map_err(serde::de::Error::custom),
            StringOrNumber::Number(n) => Ok(Self::from(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_keys_must_be_subject_tokens() {
        assert!(SourceKey::new("eng-docs_2").is_ok());
        for bad in ["", "Eng", "a.b", "a*", "a>", "a b", "-x", &"x".repeat(64)] {
            assert!(SourceKey::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn page_ids_decode_from_strings_and_numbers() {
        let from_string: PageId = serde_json::from_str("\"65601\"").expect("string id");
        let from_number: PageId = serde_json::from_str("65601").expect("number id");
        assert_eq!(from_string, from_number);
        assert!(serde_json::from_str::<PageId>("\"12.3\"").is_err());
        assert!(serde_json::from_str::<PageId>("\"\"").is_err());
    }
}
