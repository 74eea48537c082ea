//! Pagestream's event contracts (DESIGN §2): the CloudEvents envelope, the typed payloads of every
//! event, the subjects they travel on and their deterministic ids. No I/O lives here.

mod envelope;
mod failure;
mod ids;
mod payloads;
mod subjects;
mod vector;

pub use envelope::{Envelope, EventError, Extensions, RawEvent};
pub use failure::Retryable;
pub use ids::{PageId, SourceKey};
pub use payloads::*;
pub use subjects::{EventKind, ParsedSubject, Subjects};
pub use vector::Vector;
