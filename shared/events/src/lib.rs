//! Pagestream's event contracts (DESIGN §2): the CloudEvents envelope, the typed payloads of every
//! event, the subjects they travel on and their deterministic ids. No I/O lives here.

mod envelope;
mod failure;
mod hash_embedding;
mod ids;
pub mod jira;
mod payloads;
mod subjects;
mod vector;
mod webhook_events;

pub use envelope::{Envelope, EventError, Extensions, RawEvent};
pub use failure::Retryable;
pub use hash_embedding::{hash_embedding, hash_model_name};
pub use ids::{PageId, SourceKey};
pub use payloads::*;
pub use subjects::{EventKind, ParsedSubject, Subjects};
pub use vector::Vector;
pub use webhook_events::{WEBHOOK_EVENTS, webhook_hint};
