//! The CloudEvents 1.0 envelope, in structured JSON mode (the NATS protocol binding's content mode):
//! the message body is the whole event, `data` is JSON.

use chrono::{DateTime, Utc};
use cloudevents::event::{Data, ExtensionValue};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use uuid::Uuid;

use crate::Payload;
use crate::{EventKind, PageId, SourceKey};

/// Namespace of Pagestream's UUIDv5 event ids.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c2e_8d0a_4f5e_9a7b_2c4d_6e8f_0a1b);

const SYNC_RUN_EXTENSION: &str = "syncrun";
const TRACEPARENT_EXTENSION: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("invalid {what}: {value:?}")]
    InvalidIdentifier { what: &'static str, value: String },
    #[error("invalid subject: {0:?}")]
    InvalidSubject(String),
    #[error("unknown event type: {0:?}")]
    UnknownType(String),
    #[error("event type is {found}, expected {expected}")]
    UnexpectedType { expected: String, found: String },
    #[error("malformed cloudevent: {0}")]
    Malformed(String),
    #[error("invalid {event_type} data: {reason}")]
    InvalidData { event_type: String, reason: String },
}

/// CloudEvents extensions Pagestream uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// The sync run that caused the event.
    pub syncrun: Option<Uuid>,
    /// W3C trace context of the span that published the event.
    pub traceparent: Option<String>,
}

/// A typed event: the envelope's attributes plus its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<T> {
    pub id: Uuid,
    pub time: DateTime<Utc>,
    pub extensions: Extensions,
    pub data: T,
}

/// Derives an event's id from the fact it states (DESIGN §2).
pub fn event_id(
    kind: EventKind,
    source: &SourceKey,
    page: Option<&PageId>,
    fact: &[String],
) -> Uuid {
    let mut name = format!("{}|{source}", kind.event_type());
    if let Some(page) = page {
        name.push('|');
        name.push_str(page.as_str());
    }
    for part in fact {
        name.push('|');
        name.push_str(part);
    }
    Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
}

impl<T: Payload> Envelope<T> {
    pub fn new(data: T) -> Self {
        let id = event_id(T::KIND, data.source(), data.page_id(), &data.fact());
        Self {
            id,
            time: Utc::now(),
            extensions: Extensions::default(),
            data,
        }
    }

    pub fn with_sync_run(mut self, run: Option<Uuid>) -> Self {
        self.extensions.syncrun = run;
        self
    }

    pub fn kind(&self) -> EventKind {
        T::KIND
    }

    /// The structured-mode CloudEvents JSON of this event.
    pub fn to_json(&self) -> Result<Vec<u8>, EventError> {
        self.to_json_traced(self.extensions.traceparent.as_deref())
    }

    /// The JSON with another `traceparent` (the publisher's current span) than the envelope's.
    pub fn to_json_traced(&self, traceparent: Option<&str>) -> Result<Vec<u8>, EventError> {
        let data = serde_json::to_value(&self.data).map_err(|error| EventError::InvalidData {
            event_type: T::KIND.event_type(),
            reason: error.to_string(),
        })?;
        let mut builder = EventBuilderV10::new()
            .id(self.id.to_string())
            .ty(T::KIND.event_type())
            .source(format!("/pagestream/sources/{}", self.data.source()))
            .time(self.time)
            .data("application/json", data);
        if let Some(page) = self.data.page_id() {
            builder = builder.subject(page.as_str());
        }
        if let Some(run) = self.extensions.syncrun {
            builder = builder.extension(SYNC_RUN_EXTENSION, run.to_string());
        }
        if let Some(traceparent) = traceparent {
            builder = builder.extension(TRACEPARENT_EXTENSION, traceparent);
        }
        let event = builder
            .build()
            .map_err(|error| EventError::Malformed(error.to_string()))?;
        serde_json::to_vec(&event).map_err(|error| EventError::Malformed(error.to_string()))
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        RawEvent::from_json(bytes)?.into_typed()
    }
}

/// An event decoded only as far as its envelope: enough to route, count or dead-letter it.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub id: String,
    pub kind: EventKind,
    pub time: Option<DateTime<Utc>>,
    pub extensions: Extensions,
    pub event: Event,
}

impl RawEvent {
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        let event: Event = serde_json::from_slice(bytes)
            .map_err(|error| EventError::Malformed(error.to_string()))?;
        let kind = EventKind::from_event_type(event.ty())?;
        let extension = |name: &str| match event.extension(name) {
            Some(ExtensionValue::String(value)) => Some(value.clone()),
            _ => None,
        };
        let syncrun = extension(SYNC_RUN_EXTENSION)
            .map(|run| {
                Uuid::parse_str(&run)
                    .map_err(|_| EventError::Malformed(format!("syncrun is not a uuid: {run:?}")))
            })
            .transpose()?;
        let extensions = Extensions {
            syncrun,
            traceparent: extension(TRACEPARENT_EXTENSION),
        };
        Ok(Self {
            id: event.id().to_owned(),
            kind,
            time: event.time().copied(),
            extensions,
            event,
        })
    }

    pub fn into_typed<T: Payload>(mut self) -> Result<Envelope<T>, EventError> {
        let event_type = self.kind.event_type();
        if self.kind != T::KIND {
            return Err(EventError::UnexpectedType {
                expected: T::KIND.event_type(),
                found: event_type,
            });
        }
        let invalid = |reason: String| EventError::InvalidData {
            event_type: event_type.clone(),
            reason,
        };
        let data: T = match self.event.take_data().2 {
            Some(Data::Json(value)) => serde_json::from_value(value),
            Some(Data::String(text)) => serde_json::from_str(&text),
            Some(Data::Binary(bytes)) => serde_json::from_slice(&bytes),
            None => return Err(invalid("no data".to_owned())),
        }
        .map_err(|error| invalid(error.to_string()))?;
        let id = Uuid::parse_str(&self.id)
            .map_err(|_| EventError::Malformed(format!("id is not a uuid: {:?}", self.id)))?;
        Ok(Envelope {
            id,
            time: self.time.unwrap_or_else(Utc::now),
            extensions: self.extensions,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vector;
    use crate::payloads::*;

    fn source() -> SourceKey {
        SourceKey::new("eng").expect("source")
    }

    fn page_info(version: u64) -> PageInfo {
        PageInfo {
            source: source(),
            page_id: PageId::new("65601").expect("page"),
            content_type: ContentType::Page,
            space_key: "ENG".into(),
            title: "Runbook".into(),
            version,
            path: "/1/65601".into(),
            url: "https://example.atlassian.net/wiki/spaces/ENG/pages/65601".into(),
            ancestors: vec![Ancestor {
                id: PageId::new("1").expect("page"),
                title: Some("Home".into()),
            }],
            labels: vec!["ops".into()],
            author: None,
            created_at: None,
            last_modified: Utc::now(),
            incarnation: 0,
            source_id: None,
        }
    }

    #[test]
    fn ids_are_derived_from_the_fact() {
        let a = Envelope::new(PageChanged {
            page: page_info(3),
            body_storage: "<p>a</p>".into(),
            comments: Vec::new(),
            attachments: Vec::new(),
            included: Vec::new(),
        });
        let b = Envelope::new(PageChanged {
            page: page_info(3),
            body_storage: "<p>a</p>".into(),
            comments: Vec::new(),
            attachments: Vec::new(),
            included: Vec::new(),
        });
        let c = Envelope::new(PageChanged {
            page: page_info(4),
            body_storage: "<p>a</p>".into(),
            comments: Vec::new(),
            attachments: Vec::new(),
            included: Vec::new(),
        });
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(a.id.get_version_num(), 5);

        let chunks = |model: &str| {
            Envelope::new(ChunksReady {
                source: source(),
                page_id: PageId::new("65601").expect("page"),
                space_key: "ENG".into(),
                version: 3,
                model: model.into(),
                dimension: 2,
                chunks: vec![],
                incarnation: 0,
                source_id: None,
            })
        };
        assert_ne!(chunks("all-MiniLM-L6-v2").id, chunks("other").id);
        assert_ne!(chunks("all-MiniLM-L6-v2").id, a.id);
    }

    #[test]
    fn a_restore_a_move_and_a_label_change_are_new_facts_of_the_same_version() {
        let changed = |page: PageInfo| {
            Envelope::new(PageChanged {
                page,
                body_storage: "<p>a</p>".into(),
                comments: Vec::new(),
                attachments: Vec::new(),
                included: Vec::new(),
            })
            .id
        };
        let before = changed(page_info(3));
        let restored = changed(PageInfo {
            incarnation: 1,
            ..page_info(3)
        });
        let moved = changed(PageInfo {
            path: "/2/65601".into(),
            ..page_info(3)
        });
        let relabelled = changed(PageInfo {
            labels: vec!["ops".into(), "runbook".into()],
            ..page_info(3)
        });
        // The same page of a source removed and added again under its key.
        let added_again = changed(PageInfo {
            source_id: Some(Uuid::new_v4()),
            ..page_info(3)
        });
        let ids =
            std::collections::HashSet::from([before, restored, moved, relabelled, added_again]);
        assert_eq!(ids.len(), 5);
        let deleted = |incarnation, source_id| {
            Envelope::new(PageDeleted {
                source: source(),
                page_id: PageId::new("65601").expect("page"),
                version: 3,
                space_key: None,
                deleted_at: Utc::now(),
                reason: None,
                incarnation,
                source_id,
            })
            .id
        };
        assert_ne!(deleted(0, None), deleted(1, None));
        assert_ne!(deleted(0, None), deleted(0, Some(Uuid::new_v4())));
    }

    #[test]
    fn round_trips_through_structured_json() {
        let run = Uuid::new_v4();
        let mut envelope = Envelope::new(ChunksReady {
            source: source(),
            page_id: PageId::new("65601").expect("page"),
            space_key: "ENG".into(),
            version: 7,
            model: "all-MiniLM-L6-v2".into(),
            dimension: 3,
            chunks: vec![Chunk {
                index: 0,
                text: "hello".into(),
                heading_path: vec!["Runbook".into(), "Setup".into()],
                content_hash: "abc".into(),
                token_count: 1,
                vector: Vector(vec![0.25, -0.5, 1.0]),
                code: None,
            }],
            incarnation: 0,
            source_id: None,
        })
        .with_sync_run(Some(run));
        envelope.extensions.traceparent =
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let json = envelope.to_json().expect("encode");
        let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["type"], "io.pagestream.chunks.ready.v1");
        assert_eq!(value["subject"], "65601");
        assert_eq!(value["syncrun"], run.to_string());
        let back = Envelope::<ChunksReady>::from_json(&json).expect("decode");
        assert_eq!(back.id, envelope.id);
        assert_eq!(back.extensions, envelope.extensions);
        assert_eq!(back.data, envelope.data);
    }

    #[test]
    fn decoding_names_what_is_wrong() {
        let json = Envelope::new(PageDeleted {
            source: source(),
            page_id: PageId::new("5").expect("page"),
            version: 2,
            space_key: None,
            deleted_at: Utc::now(),
            reason: None,
            incarnation: 0,
            source_id: None,
        })
        .to_json()
        .expect("encode");
        let wrong = Envelope::<PageChanged>::from_json(&json).expect_err("wrong type");
        assert!(
            wrong
                .to_string()
                .contains("expected io.pagestream.page.changed.v1")
        );
        assert!(matches!(
            Envelope::<PageDeleted>::from_json(b"{not json"),
            Err(EventError::Malformed(_))
        ));
        let mut value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        value["data"]["page_id"] = serde_json::json!("not-a-number");
        let bad = serde_json::to_vec(&value).expect("json");
        assert!(matches!(
            Envelope::<PageDeleted>::from_json(&bad),
            Err(EventError::InvalidData { .. })
        ));
    }
}
