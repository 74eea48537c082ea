//! The dead-letter stream: events a stage gave up on, with the reason, so that nothing is lost and
//! an operator can look at them and retry them (`pagestream dlq list|retry`).

use async_nats::HeaderMap;
use async_nats::jetstream::message::Message;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use async_nats::jetstream::context::PublishErrorKind;

use crate::claim_check::CLAIM_CHECK_HEADER;
use crate::topology::is_command;
use crate::{Bus, BusError};

/// One dead letter: the event as it was delivered, and why the stage gave up on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub stage: String,
    /// The subject the event was published on (where a retry publishes it again).
    pub subject: String,
    pub reason: String,
    pub deliveries: u64,
    /// The event's sequence in its own stream.
    pub stream_sequence: u64,
    pub failed_at: DateTime<Utc>,
    /// The event's `Nats-Msg-Id`, when it had one.
    #[serde(default)]
    pub event_id: Option<String>,
    /// The message body, base64 (it may not be valid UTF-8).
    pub body: String,
    /// The claim-check object holding the real payload, for large events.
    #[serde(default)]
    pub claim_check: Option<String>,
}

impl DeadLetter {
    pub fn body_bytes(&self) -> Result<Vec<u8>, BusError> {
        STANDARD
            .decode(&self.body)
            .map_err(|error| BusError::jetstream("decode dead letter", error))
    }
}

pub(crate) async fn record(
    bus: &Bus,
    stage: &str,
    message: &Message,
    stream_sequence: u64,
    deliveries: u64,
    reason: &str,
) -> Result<(), BusError> {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(name))
            .map(|value| value.to_string())
    };
    let letter = DeadLetter {
        stage: stage.to_owned(),
        subject: message.subject.to_string(),
        reason: reason.to_owned(),
        deliveries,
        stream_sequence,
        failed_at: Utc::now(),
        event_id: header(async_nats::header::NATS_MESSAGE_ID.as_ref()),
        body: STANDARD.encode(&message.payload),
        claim_check: header(CLAIM_CHECK_HEADER),
    };
    let body = serde_json::to_vec(&letter)
        .map_err(|error| BusError::jetstream("encode dead letter", error))?;
    // One dead letter per stage and stream position, however often recording is retried.
    let id = format!("{stage}:{}:{stream_sequence}", message.subject);
    let subject = bus.subjects().internal(&format!("dlq.{stage}"));
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    bus.jetstream()
        .publish_with_headers(subject, headers, Bytes::from(body))
        .await
        .map_err(|error| BusError::jetstream("publish dead letter", error))?
        .await
        .map_err(|error| BusError::jetstream("publish dead letter ack", error))?;
    Ok(())
}

/// The dead letters the stream holds, oldest first, with their sequence in the dead-letter stream.
pub async fn list(bus: &Bus, limit: usize) -> Result<Vec<(u64, DeadLetter)>, BusError> {
    let mut stream = bus
        .jetstream()
        .get_stream(bus.streams().dead_letters())
        .await
        .map_err(|error| BusError::jetstream("get dead-letter stream", error))?;
    let state = stream
        .info()
        .await
        .map_err(|error| BusError::jetstream("dead-letter stream info", error))?
        .state
        .clone();
    let mut letters = Vec::new();
    if state.messages == 0 {
        return Ok(letters);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        if letters.len() >= limit {
            break;
        }
        // Retried letters are deleted, leaving gaps.
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        match serde_json::from_slice::<DeadLetter>(&message.payload) {
            Ok(letter) => letters.push((sequence, letter)),
            Err(error) => tracing::warn!(sequence, %error, "unreadable dead letter"),
        }
    }
    Ok(letters)
}

/// What retrying a dead letter did.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryOutcome {
    /// The event was published again on its subject.
    Published,
    /// The letter was a page's fact that the stream no longer holds as the page's latest: a
    /// newer fact replaced it, or the page's facts were purged. Publishing it again would take
    /// the page back (or bring a purged page back), so it was dropped.
    Superseded { reason: &'static str },
}

/// A retried dead letter and what became of it (the letter is removed either way).
#[derive(Debug, Clone)]
pub struct Retried {
    pub letter: DeadLetter,
    pub outcome: RetryOutcome,
}

/// Publishes a dead letter's event again on its subject and removes the letter. A page's fact is
/// published again only while it is still the page's latest message in its stream (checked and
/// published atomically, with the subject's expected last sequence).
pub async fn retry(bus: &Bus, sequence: u64) -> Result<Retried, BusError> {
    let stream = bus
        .jetstream()
        .get_stream(bus.streams().dead_letters())
        .await
        .map_err(|error| BusError::jetstream("get dead-letter stream", error))?;
    let message = stream
        .get_raw_message(sequence)
        .await
        .map_err(|error| BusError::jetstream("get dead letter", error))?;
    let letter: DeadLetter = serde_json::from_slice(&message.payload)
        .map_err(|error| BusError::jetstream("decode dead letter", error))?;
    let mut headers = HeaderMap::new();
    if let Some(object) = &letter.claim_check {
        headers.insert(CLAIM_CHECK_HEADER, object.as_str());
    }
    // A fresh message id: the original one may still be inside the duplicate window.
    let id = format!("retry:{sequence}:{}", uuid::Uuid::new_v4());
    let body = Bytes::from(letter.body_bytes()?);
    let fact_kind = bus
        .subjects()
        .parse(&letter.subject)
        .ok()
        .map(|parsed| parsed.kind)
        .filter(|kind| !is_command(*kind));
    let outcome = match fact_kind {
        Some(kind) => {
            let last = bus.last_message_of(kind, &letter.subject).await?;
            match last {
                None => RetryOutcome::Superseded {
                    reason: "the page's facts were purged",
                },
                // The same event, already published again by the retry of another stage's
                // letter: every stage of the subject sees it again.
                Some(last) if last.sequence != letter.stream_sequence && last.payload == body => {
                    RetryOutcome::Published
                }
                Some(last) if last.sequence != letter.stream_sequence => RetryOutcome::Superseded {
                    reason: "a newer fact of the page is in the stream",
                },
                Some(last) => {
                    headers.insert(
                        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                        last.sequence.to_string().as_str(),
                    );
                    match bus.send(letter.subject.clone(), id, headers, body).await {
                        Ok(_) => RetryOutcome::Published,
                        Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                            RetryOutcome::Superseded {
                                reason: "a newer fact of the page is in the stream",
                            }
                        }
                        Err(error) => return Err(BusError::jetstream("publish", error)),
                    }
                }
            }
        }
        None => {
            bus.publish_bytes(letter.subject.clone(), id, headers, body)
                .await?;
            RetryOutcome::Published
        }
    };
    stream
        .delete_message(sequence)
        .await
        .map_err(|error| BusError::jetstream("delete dead letter", error))?;
    Ok(Retried { letter, outcome })
}
