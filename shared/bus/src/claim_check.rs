//! Claim check (DESIGN §2): a payload above the threshold is stored in the JetStream object store
//! and the message carries only a reference in a header; consumers resolve it transparently.
//!
//! Each stored payload gets an object of its own (`{subject}/{unique}`) and is never written
//! again: a publish that the stream then drops (a duplicate id, a newer version, a lost race) can
//! never change the payload another message refers to (found by the chaos suite: with one object
//! per subject, a late publish of a page's older fact, dropped as a duplicate, replaced the
//! payload of the newer message and the page kept chunks of other Markdown). The publisher removes
//! its own object when the stream did not take its message, and the replaced message's object
//! when it did: a fact stream keeps one message per subject, so the bucket keeps about one object
//! per claim-checked page.

use async_nats::HeaderMap;
use async_nats::jetstream::object_store::{DeleteErrorKind, GetErrorKind, ObjectStore};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use bytes::Bytes;
use futures::TryStreamExt;
use pagestream_events::SourceKey;
use tokio::io::AsyncReadExt;

use crate::{Bus, BusError};

/// Header naming the object that holds the message's real payload.
pub const CLAIM_CHECK_HEADER: &str = "Pagestream-Claim-Check";

async fn bucket(bus: &Bus) -> Result<ObjectStore, BusError> {
    let name = bus.streams().claim_check_bucket();
    bus.jetstream()
        .get_object_store(&name)
        .await
        .map_err(|error| BusError::ClaimCheck {
            name,
            reason: error.to_string(),
        })
}

fn claim_error(name: &str, error: impl std::fmt::Display) -> BusError {
    BusError::ClaimCheck {
        name: name.to_owned(),
        reason: error.to_string(),
    }
}

/// The object a message's headers name, if its payload was claim-checked.
pub(crate) fn object_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CLAIM_CHECK_HEADER)
        .map(|name| name.as_str().to_owned())
}

/// The subject an object was stored for.
fn subject_of(object: &str) -> &str {
    object
        .rsplit_once('/')
        .map_or(object, |(subject, _)| subject)
}

/// Stores `body` in an object of its own if it is above the threshold, and returns what the
/// message should carry instead (an empty body; the header is set) and the object's name; small
/// bodies pass through.
pub(crate) async fn store_if_large(
    bus: &Bus,
    subject: &str,
    headers: &mut HeaderMap,
    body: Bytes,
) -> Result<(Bytes, Option<String>), BusError> {
    if body.len() <= bus.config().claim_check_threshold {
        return Ok((body, None));
    }
    let name = format!("{subject}/{}", uuid::Uuid::new_v4().simple());
    let store = bucket(bus).await?;
    let mut reader = body.as_ref();
    store
        .put(name.as_str(), &mut reader)
        .await
        .map_err(|error| claim_error(&name, error))?;
    headers.insert(CLAIM_CHECK_HEADER, name.as_str());
    tracing::debug!(subject, object = %name, bytes = body.len(), "payload stored by claim check");
    Ok((Bytes::new(), Some(name)))
}

/// The real payload of a message: its body, or the object its claim-check header names.
pub async fn resolve(
    bus: &Bus,
    subject: &str,
    headers: Option<&HeaderMap>,
    body: Bytes,
) -> Result<Bytes, BusError> {
    let Some(name) = headers.and_then(object_of) else {
        return Ok(body);
    };
    let store = bucket(bus).await?;
    let mut object = store.get(&name).await.map_err(|error| {
        if matches!(error.kind(), GetErrorKind::NotFound) {
            BusError::PayloadGone {
                subject: subject.to_owned(),
            }
        } else {
            claim_error(&name, error)
        }
    })?;
    // The object's parts come through a consumer that waits for them for good: parts removed
    // between the object's description and the consumer's start (a newer payload replaced this
    // one) would otherwise keep the event in hand forever (found by the chaos suite in CI: a
    // consumer never drained). A stall is an error; the redelivery finds the object gone.
    let mut payload = Vec::with_capacity(object.info.size.min(64 << 20));
    let mut part = vec![0; 64 * 1024];
    loop {
        let read = tokio::time::timeout(CLAIM_READ_STALL, object.read(&mut part))
            .await
            .map_err(|_| {
                let stall = CLAIM_READ_STALL.as_secs();
                claim_error(
                    &name,
                    format!("no part of the object came within {stall} s"),
                )
            })?
            .map_err(|error| claim_error(&name, error))?;
        if read == 0 {
            break;
        }
        payload.extend_from_slice(&part[..read]);
    }
    Ok(Bytes::from(payload))
}

/// How long a claim-checked payload's read may wait for its next part.
const CLAIM_READ_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes an object, if it is there, and the marker its deletion leaves, so that the bucket
/// does not grow with every replaced payload.
pub(crate) async fn remove(bus: &Bus, name: &str) -> Result<(), BusError> {
    match bucket(bus).await?.delete(name).await {
        Ok(()) => {}
        Err(error) if matches!(error.kind(), DeleteErrorKind::NotFound) => return Ok(()),
        Err(error) => return Err(claim_error(name, error)),
    }
    let bucket = bus.streams().claim_check_bucket();
    bus.jetstream()
        .get_stream(format!("OBJ_{bucket}"))
        .await
        .map_err(|error| claim_error(name, error))?
        .purge()
        .filter(format!("$O.{bucket}.M.{}", URL_SAFE.encode(name)))
        .await
        .map_err(|error| claim_error(name, error))?;
    Ok(())
}

/// Removes the object a message refers to, if any.
pub(crate) async fn remove_of(bus: &Bus, headers: &HeaderMap) -> Result<(), BusError> {
    match object_of(headers) {
        Some(name) => remove(bus, &name).await,
        None => Ok(()),
    }
}

/// Removes every object of a source.
pub(crate) async fn remove_source(bus: &Bus, source: &SourceKey) -> Result<(), BusError> {
    let store = bucket(bus).await?;
    let names: Vec<String> = store
        .list()
        .await
        .map_err(|error| claim_error("*", error))?
        .try_filter_map(|info| {
            let of_source = !info.deleted
                && bus
                    .subjects()
                    .parse(subject_of(&info.name))
                    .is_ok_and(|parsed| &parsed.source == source);
            async move { Ok(of_source.then_some(info.name)) }
        })
        .try_collect()
        .await
        .map_err(|error| claim_error("*", error))?;
    for name in names {
        remove(bus, &name).await?;
    }
    Ok(())
}
