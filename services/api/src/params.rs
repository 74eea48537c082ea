//! Input parsing that names the field at fault: query parameters and JSON bodies are read field by
//! field, and anything unknown is refused rather than silently ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode, truncated};

/// A request's query parameters, taken one by one.
pub struct QueryParams(BTreeMap<String, String>);

impl QueryParams {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut params = BTreeMap::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).map_err(|m| ApiError::invalid("query", m))?;
            let value = decode(value).map_err(|m| ApiError::invalid(name.clone(), m))?;
            if params.insert(name.clone(), value).is_some() {
                return Err(ApiError::invalid(name, "given more than once"));
            }
        }
        Ok(Self(params))
    }

    /// A parameter's value; empty values count as absent.
    pub fn text(&mut self, name: &str, max_chars: usize) -> Result<Option<String>, ApiError> {
        match self.0.remove(name) {
            Some(value) if value.trim().is_empty() => Ok(None),
            Some(value) if value.chars().count() > max_chars => Err(ApiError::invalid(
                name,
                format!("must be at most {max_chars} characters"),
            )),
            Some(value) => Ok(Some(value.trim().to_owned())),
            None => Ok(None),
        }
    }

    pub fn integer(
        &mut self,
        name: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<Option<u32>, ApiError> {
        let Some(value) = self.text(name, 20)? else {
            return Ok(None);
        };
        match value.parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::invalid(
                name,
                format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    pub fn boolean(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.text(name, 10)?.as_deref() {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid(name, "must be true or false")),
        }
    }

    /// An RFC 3339 timestamp or a date (midnight UTC).
    pub fn timestamp(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(value) = self.text(name, 40)? else {
            return Ok(None);
        };
        if let Ok(time) = DateTime::parse_from_rfc3339(&value) {
            return Ok(Some(time.with_timezone(&Utc)));
        }
        NaiveDate::parse_from_str(&value, "%Y-%m-%d")
            .ok()
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .map(|time| Some(time.and_utc()))
            .ok_or_else(|| {
                ApiError::invalid(
                    name,
                    "must be an RFC 3339 timestamp (2024-05-01T12:00:00Z) or a date (2024-05-01)",
                )
            })
    }

    /// Refuses parameters nobody asked for.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.0.into_keys().next() {
            Some(name) => Err(ApiError::invalid(
                truncated(&name),
                "unknown query parameter",
            )),
            None => Ok(()),
        }
    }
}

fn decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("malformed percent-encoding")?;
                out.push(hex);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "not utf-8".to_owned())
}

/// A JSON object body, taken field by field.
pub struct JsonFields {
    prefix: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl JsonFields {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(fields)) => Ok(Self {
                prefix: String::new(),
                fields,
            }),
            Ok(_) => Err(ApiError::new(
                ErrorCode::MalformedBody,
                "the body must be a JSON object",
            )),
            Err(error) => Err(ApiError::new(
                ErrorCode::MalformedBody,
                format!("the body is not valid JSON: {error}"),
            )),
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn optional<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, ApiError> {
        match self.fields.remove(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|error| ApiError::invalid(self.path(name), error.to_string())),
        }
    }

    pub fn required<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, ApiError> {
        self.optional(name)?
            .ok_or_else(|| ApiError::invalid(self.path(name), "is required"))
    }

    /// A nested object, whose fields are named `name.field` in errors.
    pub fn object(&mut self, name: &str) -> Result<Option<JsonFields>, ApiError> {
        match self.fields.remove(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Object(fields)) => Ok(Some(JsonFields {
                prefix: format!("{}.", self.path(name)),
                fields,
            })),
            Some(_) => Err(ApiError::invalid(self.path(name), "must be an object")),
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        let Self { prefix, fields } = self;
        match fields.into_iter().next().map(|(name, _)| name) {
            Some(name) => Err(ApiError::invalid(
                truncated(&format!("{prefix}{name}")),
                "unknown field",
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_name_the_field_at_fault() {
        let mut params = QueryParams::parse(Some("q=hello+w%C3%B6rld&limit=500")).expect("parse");
        assert_eq!(
            params.text("q", 100).expect("q").as_deref(),
            Some("hello wörld")
        );
        let error = params.integer("limit", 1..=100).expect_err("limit");
        assert_eq!(error.field.as_deref(), Some("limit"));
        let extra = QueryParams::parse(Some("colour=red")).expect("parse");
        assert_eq!(
            extra.finish().expect_err("unknown").field.as_deref(),
            Some("colour")
        );
        assert!(QueryParams::parse(Some("q=%zz")).is_err());
        assert!(QueryParams::parse(Some("q=a&q=b")).is_err());
        let mut dates =
            QueryParams::parse(Some("a=2024-05-01&b=2024-05-01T10:00:00%2B02:00&c=May"))
                .expect("parse");
        assert_eq!(
            dates
                .timestamp("a")
                .expect("a")
                .map(|t| t.to_rfc3339())
                .as_deref(),
            Some("2024-05-01T00:00:00+00:00")
        );
        assert_eq!(
            dates
                .timestamp("b")
                .expect("b")
                .map(|t| t.to_rfc3339())
                .as_deref(),
            Some("2024-05-01T08:00:00+00:00")
        );
        assert_eq!(
            dates.timestamp("c").expect_err("c").field.as_deref(),
            Some("c")
        );
    }

    #[test]
    fn json_fields_name_nested_fields() {
        let mut body = JsonFields::parse(br#"{"auth": {"kind": 3}, "extra": 1}"#).expect("parse");
        let mut auth = body.object("auth").expect("auth").expect("present");
        let error = auth.required::<String>("kind").expect_err("kind");
        assert_eq!(error.field.as_deref(), Some("auth.kind"));
        let error = auth.required::<String>("email").expect_err("email");
        assert_eq!(error.field.as_deref(), Some("auth.email"));
        assert_eq!(
            body.finish().expect_err("extra").field.as_deref(),
            Some("extra")
        );
        assert!(JsonFields::parse(b"[1]").is_err());
        assert!(JsonFields::parse(b"{").is_err());
    }
}
