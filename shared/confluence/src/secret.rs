//! Credentials. The token lives in [`Secret`], whose `Debug` never shows it, and reaches the wire only
//! as a header value marked sensitive.

use std::fmt;

use base64::Engine as _;
use reqwest::header::HeaderValue;

use crate::ConfluenceError;

/// A secret string (API token, personal access token). `Debug` prints `Secret([redacted])`; there is
/// no `Display`. Read it with [`Secret::expose`] only where it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// How a source authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Confluence Cloud: Basic `email:api_token`.
    Cloud { email: String, api_token: Secret },
    /// Confluence Data Center: a personal access token, sent as `Bearer`.
    DataCenter { token: Secret },
}

impl Auth {
    pub fn cloud(email: impl Into<String>, api_token: impl Into<String>) -> Self {
        Self::Cloud {
            email: email.into(),
            api_token: Secret::new(api_token),
        }
    }

    pub fn data_center(token: impl Into<String>) -> Self {
        Self::DataCenter {
            token: Secret::new(token),
        }
    }

    /// The `Authorization` header value, marked sensitive so that `reqwest`/`hyper` never print it.
    pub(crate) fn header_value(&self) -> Result<HeaderValue, ConfluenceError> {
        let raw = match self {
            Self::Cloud { email, api_token } => {
                let pair = format!("{email}:{}", api_token.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            Self::DataCenter { token } => format!("Bearer {}", token.expose()),
        };
        let mut value = HeaderValue::from_str(&raw).map_err(|_| {
            ConfluenceError::Config("credentials contain characters not allowed in a header".into())
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Strings that must never appear in anything the client prints: the token itself and the
    /// encoded header credential. Used to scrub text that comes back from the server.
    pub(crate) fn secret_forms(&self) -> Vec<String> {
        let mut forms = Vec::new();
        match self {
            Self::Cloud { email, api_token } => {
                let token = api_token.expose();
                if !token.is_empty() {
                    forms.push(token.to_owned());
                }
                forms.push(
                    base64::engine::general_purpose::STANDARD.encode(format!("{email}:{token}")),
                );
            }
            Self::DataCenter { token } => {
                if !token.expose().is_empty() {
                    forms.push(token.expose().to_owned());
                }
            }
        }
        forms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let auth = Auth::cloud("me@example.com", "tok-123-secret");
        let shown = format!("{auth:?}");
        assert!(!shown.contains("tok-123-secret"), "{shown}");
        assert!(shown.contains("me@example.com"));
        let dc = Auth::data_center("pat-456-secret");
        assert!(!format!("{dc:?}").contains("pat-456-secret"));
    }

    #[test]
    fn header_values_are_sensitive_and_well_formed() {
        let value = Auth::cloud("a@b.c", "t").header_value().expect("header");
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().expect("ascii"), "Basic YUBiLmM6dA==");
        let value = Auth::data_center("pat").header_value().expect("header");
        assert_eq!(value.to_str().expect("ascii"), "Bearer pat");
        assert!(Auth::data_center("bad\nvalue").header_value().is_err());
    }
}
