//! Claim check (DESIGN §2): a payload above the threshold is stored in the JetStream object store
//! and the message carries only a reference in a header; consumers resolve it transparently.
//!
//! Objects are named by the message's subject. Fact streams keep one message per subject, so the
//! bucket keeps one object per subject too and never grows with edits; a consumer resolving an older
//! message may read the newer payload of the same page, which supersedes it anyway.

use async_nats::HeaderMap;
use async_nats::jetstream::object_store::{DeleteErrorKind, GetErrorKind, ObjectStore};
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

/// Stores `body` under `subject` if it is above the threshold and returns what the message should
/// carry instead (an empty body and the header); small bodies pass through.
pub(crate) async fn store_if_large(
    bus: &Bus,
    subject: &str,
    headers: &mut HeaderMap,
    body: Bytes,
) -> Result<Bytes, BusError> {
    if body.len() <= bus.config().claim_check_threshold {
        return Ok(body);
    }
    let store = bucket(bus).await?;
    let mut reader = body.as_ref();
    store
        .put(subject, &mut reader)
        .await
        .map_err(|error| claim_error(subject, error))?;
    headers.insert(CLAIM_CHECK_HEADER, subject);
    tracing::debug!(subject, bytes = body.len(), "payload stored by claim check");
    Ok(Bytes::new())
}

/// The real payload of a message: its body, or the object its claim-check header names.
pub async fn resolve(
    bus: &Bus,
    subject: &str,
    headers: Option<&HeaderMap>,
    body: Bytes,
) -> Result<Bytes, BusError> {
    let Some(name) = headers.and_then(|headers| headers.get(CLAIM_CHECK_HEADER)) else {
        return Ok(body);
    };
    let name = name.to_string();
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
    let mut payload = Vec::new();
    object
        .read_to_end(&mut payload)
        .await
        .map_err(|error| claim_error(&name, error))?;
    Ok(Bytes::from(payload))
}

/// Removes the object of one subject, if there is one.
pub(crate) async fn remove(bus: &Bus, subject: &str) -> Result<(), BusError> {
    match bucket(bus).await?.delete(subject).await {
        Ok(()) => Ok(()),
        Err(error) if matches!(error.kind(), DeleteErrorKind::NotFound) => Ok(()),
        Err(error) => Err(claim_error(subject, error)),
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
                    .parse(&info.name)
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
