//! The one classification of failures that every stage's error gives, so that the consumer runner
//! decides the same way for all of them: a transient failure is an outage (a database, NATS,
//! Confluence or an embedding server down, overloaded or slow, or a configuration that an operator
//! must fix, such as a revoked token) and is waited out; any other failure would recur however
//! often the event is retried, and the event goes to the dead-letter stream at once.

use crate::EventError;

/// Whether retrying later, without changing the event, can succeed.
pub trait Retryable {
    fn is_transient(&self) -> bool;
}

impl Retryable for EventError {
    /// A malformed or mistyped event stays so.
    fn is_transient(&self) -> bool {
        false
    }
}
