//! Pagestream's bus over NATS JetStream (DESIGN §3).
//!
//! - [`Bus::connect`] connects and creates the streams idempotently ([`topology`]).
//! - [`Bus::publish`] publishes an event with `Nats-Msg-Id` = its id and waits for the server's ack;
//!   payloads above the claim-check threshold go to the object store ([`claim_check`]).
//! - [`Stage`] runs a stage's durable pull consumer: the handler's result decides the ack, failures
//!   end in the dead-letter stream ([`dead_letter`]), and shutdown is graceful ([`consumer`]).
//! - `traceparent` travels in message headers, so one trace spans the stages ([`trace`]).

pub mod claim_check;
pub mod consumer;
pub mod dead_letter;
pub mod topology;
pub mod trace;

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use pagestream_events::{
    Envelope, EventKind, FactPosition, PageId, Payload, Retryable, SourceKey, Subjects,
    SyncProgress,
};
use pagestream_retry::Backoff;

pub use consumer::{BulkSlots, Decode, Delivery, HandlerError, Stage, StageConfig};
pub use dead_letter::DeadLetter;
pub use topology::StreamNames;

/// How to reach the bus and how it behaves. Its `Debug` hides the credentials a NATS URL may hold.
#[derive(Clone)]
pub struct BusConfig {
    /// One or more comma-separated server URLs, possibly with `user:password@` or `token@`.
    pub nats_url: String,
    /// Subject root and stream-name prefix: `pagestream` in production.
    pub root: String,
    /// Payloads larger than this travel by claim check (the server's limit is 1 MiB by default).
    pub claim_check_threshold: usize,
    /// How long the server waits for a publish acknowledgement.
    pub request_timeout: Duration,
    /// Copies of each stream and bucket in a JetStream cluster. `None` creates them with one and
    /// leaves existing ones as they are, so that a tool started without the setting never scales
    /// a cluster's streams down.
    pub replicas: Option<usize>,
}

impl std::fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusConfig")
            .field("nats_url", &redact_url(&self.nats_url))
            .field("root", &self.root)
            .field("claim_check_threshold", &self.claim_check_threshold)
            .field("request_timeout", &self.request_timeout)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// `url` (one or more comma-separated URLs) with the user info's password, or a bare token, replaced
/// by `***`: what may be printed of a server address.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = one.split_once("://").unwrap_or(("", one));
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let Some(at) = rest[..authority_end].rfind('@') else {
                return one.to_owned();
            };
            let userinfo = match rest[..at].split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            let prefix = if scheme.is_empty() {
                String::new()
            } else {
                format!("{scheme}://")
            };
            format!("{prefix}{userinfo}{}", &rest[at..])
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `text` with every credential of `url` replaced by `***`, for messages that may quote the URL.
fn redact_credentials_in(text: &str, url: &str) -> String {
    let mut redacted = text.to_owned();
    for one in url.split(',') {
        let rest = one.split_once("://").map_or(one, |(_, rest)| rest);
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            let secret = userinfo
                .split_once(':')
                .map_or(userinfo, |(_, password)| password);
            if !secret.is_empty() {
                redacted = redacted.replace(secret, "***");
            }
        }
    }
    redacted
}

impl BusConfig {
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            root: "pagestream".to_owned(),
            claim_check_threshold: 768 * 1024,
            request_timeout: Duration::from_secs(10),
            replicas: None,
        }
    }

    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    pub fn with_replicas(mut self, replicas: Option<usize>) -> Self {
        self.replicas = replicas;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// `url` and `reason` have the URL's credentials redacted.
    #[error("cannot connect to nats at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("invalid bus configuration: {0}")]
    Config(String),
    #[error("jetstream {operation} failed: {reason}")]
    JetStream {
        operation: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Event(#[from] pagestream_events::EventError),
    #[error("claim check {name:?}: {reason}")]
    ClaimCheck { name: String, reason: String },
    /// The claim-checked payload of a message was removed (its page or source was purged).
    #[error("the payload of {subject} is gone")]
    PayloadGone { subject: String },
    #[error("undecodable message: {0}")]
    Decode(String),
}

impl Retryable for BusError {
    /// NATS being out or slow passes; a bad event or configuration does not.
    fn is_transient(&self) -> bool {
        match self {
            BusError::Connect { .. } | BusError::JetStream { .. } | BusError::ClaimCheck { .. } => {
                true
            }
            BusError::Config(_)
            | BusError::Event(_)
            | BusError::PayloadGone { .. }
            | BusError::Decode(_) => false,
        }
    }
}

impl BusError {
    pub(crate) fn jetstream(operation: &'static str, error: impl std::fmt::Display) -> Self {
        BusError::JetStream {
            operation,
            reason: error.to_string(),
        }
    }
}

/// The outcome of a publish, as the server acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub stream_sequence: u64,
    /// The stream already held this event: a message with its id inside the duplicate window,
    /// or, for a page's fact, as the page's latest fact.
    pub duplicate: bool,
    /// The stream holds a newer version of this fact for the page (at `stream_sequence`): nothing
    /// was published.
    pub superseded: bool,
}

/// The lane an event travels in: work someone waits for (a webhook's edit, an incremental sync)
/// or bulk work (a full sync, and what the stages make of it). A stage with a live lane handles
/// live events as they come, ahead of its bulk backlog. A message header, not part of the event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lane {
    #[default]
    Live,
    Bulk,
}

impl Lane {
    const HEADER: &str = "Pagestream-Lane";

    /// The lane a message's headers name (live unless they say bulk).
    pub fn of(headers: Option<&HeaderMap>) -> Lane {
        match headers.and_then(|headers| headers.get(Self::HEADER)) {
            Some(lane) if lane.as_str() == "bulk" => Lane::Bulk,
            _ => Lane::Live,
        }
    }

    fn insert(self, headers: &mut HeaderMap) {
        if self == Lane::Bulk {
            headers.insert(Self::HEADER, "bulk");
        }
    }
}

/// Headers of fact messages: where the fact stands among its page's facts, read by the publish
/// guard without decoding (or resolving) the payload.
mod position_headers {
    use async_nats::HeaderMap;
    use pagestream_events::FactPosition;

    const VERSION: &str = "Pagestream-Version";
    const INCARNATION: &str = "Pagestream-Incarnation";
    const SOURCE_ID: &str = "Pagestream-Source-Id";

    pub(crate) fn insert(headers: &mut HeaderMap, position: &FactPosition) {
        headers.insert(VERSION, position.version.to_string().as_str());
        headers.insert(INCARNATION, position.incarnation.to_string().as_str());
        if let Some(id) = position.source_id {
            headers.insert(SOURCE_ID, id.to_string().as_str());
        }
    }

    /// The position a message's headers state; messages written before the incarnation header
    /// existed read as incarnation 0 of no registration (ordered by version alone).
    pub(crate) fn read(headers: &HeaderMap) -> Option<FactPosition> {
        let number = |name: &str| headers.get(name)?.as_str().parse::<u64>().ok();
        Some(FactPosition {
            version: number(VERSION)?,
            incarnation: number(INCARNATION).unwrap_or(0),
            source_id: headers
                .get(SOURCE_ID)
                .and_then(|id| id.as_str().parse().ok()),
        })
    }
}

/// The last message on a subject of a stream, if any.
async fn last_message<I>(
    stream: &jetstream::stream::Stream<I>,
    subject: &str,
) -> Result<Option<jetstream::message::StreamMessage>, BusError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message)),
        Err(error)
            if matches!(
                error.kind(),
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(BusError::jetstream("get last message", error)),
    }
}

/// A connected bus: JetStream context, subjects and stream names under one root.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: Context,
    subjects: Subjects,
    streams: StreamNames,
    config: BusConfig,
}

impl Bus {
    /// Connects and makes sure every stream, and the claim-check bucket, exists as configured.
    pub async fn connect(config: BusConfig) -> Result<Self, BusError> {
        let subjects = Subjects::with_root(config.root.clone())?;
        let failed = |reason: String| BusError::Connect {
            url: redact_url(&config.nats_url),
            reason: redact_credentials_in(&reason, &config.nats_url),
        };
        // async-nats parses one URL per string: a cluster's list is split here.
        let servers = config
            .nats_url
            .split(',')
            .map(|url| url.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| failed(format!("invalid server url: {error}")))?;
        // A server that is down or restarting at start-up is waited for like any outage (found by
        // the chaos suite: an indexer restarted while nats-server restarted exited for good).
        let client = patiently("connect to nats", || async {
            async_nats::ConnectOptions::new()
                .name("pagestream")
                .request_timeout(Some(config.request_timeout))
                .connect(servers.clone())
                .await
                .map_err(|error| failed(error.to_string()))
        })
        .await?;
        let jetstream = jetstream::new(client.clone());
        let bus = Self {
            client,
            jetstream,
            streams: StreamNames::new(&config.root),
            subjects,
            config,
        };
        patiently("create the streams", || topology::ensure(&bus)).await?;
        Ok(bus)
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &Context {
        &self.jetstream
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn streams(&self) -> &StreamNames {
        &self.streams
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// Publishes an event and waits until JetStream has stored it. The current span's trace context
    /// goes with it, in the headers and in the `traceparent` extension. A fact older than the one
    /// its stream holds for the page is not published ([`Published::superseded`]).
    pub async fn publish<T: Payload>(&self, envelope: &Envelope<T>) -> Result<Published, BusError> {
        self.publish_in(Lane::Live, envelope).await
    }

    /// [`Bus::publish`] in a given lane (a full sync's events, and what stages make of them,
    /// travel in the bulk lane).
    pub async fn publish_in<T: Payload>(
        &self,
        lane: Lane,
        envelope: &Envelope<T>,
    ) -> Result<Published, BusError> {
        let mut headers = HeaderMap::new();
        trace::inject(&mut headers);
        lane.insert(&mut headers);
        let traceparent = headers
            .get(trace::TRACEPARENT)
            .map(|value| value.to_string())
            .or_else(|| envelope.extensions.traceparent.clone());
        let subject =
            self.subjects
                .for_event(T::KIND, envelope.data.source(), envelope.data.page_id());
        let body = Bytes::from(envelope.to_json_traced(traceparent.as_deref())?);
        let id = envelope.id.to_string();
        match envelope.data.position() {
            Some(position) if !topology::is_command(T::KIND) => {
                self.publish_fact(T::KIND, subject, id, headers, body, position)
                    .await
            }
            _ => self.publish_bytes(subject, id, headers, body).await,
        }
    }

    /// Publishes a page's fact at `position` unless the stream holds a newer one or this very
    /// fact (the same event id), expecting the subject's last sequence to be the one just
    /// read: of two replicas publishing back-to-back versions at once, the one that loses the
    /// race reads again and either publishes after the winner or finds itself superseded. The
    /// fact never moves backwards.
    async fn publish_fact(
        &self,
        kind: EventKind,
        subject: String,
        message_id: String,
        mut headers: HeaderMap,
        body: Bytes,
        position: FactPosition,
    ) -> Result<Published, BusError> {
        let stream = self.stream(kind).await?;
        position_headers::insert(&mut headers, &position);
        let (body, object) =
            claim_check::store_if_large(self, &subject, &mut headers, body).await?;
        let outcome = self
            .publish_fact_once_stored(&stream, &subject, &message_id, &headers, &body, position)
            .await;
        match &outcome {
            // The message replaced the subject's previous one: its payload is no one's now.
            Ok((published, replaced)) if !published.duplicate && !published.superseded => {
                if let Some(replaced) = replaced {
                    claim_check::remove_of(self, &replaced.headers).await?;
                }
            }
            // The stream did not take the message: its payload is no one's.
            Ok(_) => {
                if let Some(object) = &object {
                    claim_check::remove(self, object).await?;
                }
            }
            // It may have landed (an ack lost on the way back): its payload stays.
            Err(_) => {}
        }
        outcome.map(|(published, _)| published)
    }

    /// [`Self::publish_fact`] with the payload stored: what was published, and the message it
    /// replaced.
    async fn publish_fact_once_stored(
        &self,
        stream: &jetstream::stream::Stream<()>,
        subject: &str,
        message_id: &str,
        headers: &HeaderMap,
        body: &Bytes,
        position: FactPosition,
    ) -> Result<(Published, Option<jetstream::message::StreamMessage>), BusError> {
        const RACES: usize = 16;
        for _ in 0..RACES {
            let last = last_message(stream, subject).await?;
            let last_sequence = last.as_ref().map_or(0, |message| message.sequence);
            let newer = last
                .as_ref()
                .and_then(|message| position_headers::read(&message.headers))
                .is_some_and(|last| last.supersedes(&position));
            if newer {
                let published = Published {
                    stream_sequence: last_sequence,
                    duplicate: false,
                    superseded: true,
                };
                return Ok((published, last));
            }
            // The same fact stated again (an event id names a fact): its first statement stays,
            // as the indexer keeps the first of equal facts. A restarted fetcher re-reading a page
            // whose body changed without a new version (a linked page renamed) would otherwise
            // replace, after JetStream's duplicate window, what the projection already holds.
            let same_fact = last
                .as_ref()
                .and_then(|message| message.headers.get(async_nats::header::NATS_MESSAGE_ID))
                .is_some_and(|id| id.as_str() == message_id);
            if same_fact {
                let published = Published {
                    stream_sequence: last_sequence,
                    duplicate: true,
                    superseded: false,
                };
                return Ok((published, last));
            }
            let mut headers = headers.clone();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                last_sequence.to_string().as_str(),
            );
            match self
                .send(
                    subject.to_owned(),
                    message_id.to_owned(),
                    headers,
                    body.clone(),
                )
                .await
            {
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => continue,
                Err(error) => return Err(BusError::jetstream("publish", error)),
                Ok(published) => return Ok((published, last)),
            }
        }
        Err(BusError::jetstream(
            "publish",
            format!("{subject} changed {RACES} times while publishing"),
        ))
    }

    /// The last message on a subject of a kind's stream (none when the subject holds nothing:
    /// never published, or purged).
    pub(crate) async fn last_message_of(
        &self,
        kind: EventKind,
        subject: &str,
    ) -> Result<Option<jetstream::message::StreamMessage>, BusError> {
        let stream = self.stream(kind).await?;
        last_message(&stream, subject).await
    }

    /// Publishes already-encoded bytes under a message id (also used to retry dead letters).
    pub(crate) async fn publish_bytes(
        &self,
        subject: String,
        message_id: String,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Published, BusError> {
        let (body, object) =
            claim_check::store_if_large(self, &subject, &mut headers, body).await?;
        let published = self
            .send(subject, message_id, headers, body)
            .await
            .map_err(|error| BusError::jetstream("publish", error))?;
        if let Some(object) = object.filter(|_| published.duplicate) {
            claim_check::remove(self, &object).await?;
        }
        Ok(published)
    }

    /// Sends a message as it is (its payload already claim-checked if large).
    async fn send(
        &self,
        subject: String,
        message_id: String,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Published, PublishError> {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id.as_str());
        let ack = self
            .jetstream
            .publish_with_headers(subject, headers, body)
            .await?
            .await?;
        Ok(Published {
            stream_sequence: ack.sequence,
            duplicate: ack.duplicate,
            superseded: false,
        })
    }

    /// The key-value bucket `<PREFIX>_<name>` (one revision per key), created if needed.
    pub async fn key_value(
        &self,
        name: &str,
        description: &str,
    ) -> Result<jetstream::kv::Store, BusError> {
        let bucket = format!("{}_{name}", self.streams.prefix());
        patiently("create a key-value bucket", || async {
            if self.jetstream.get_key_value(&bucket).await.is_err() {
                self.jetstream
                    .create_key_value(jetstream::kv::Config {
                        bucket: bucket.clone(),
                        description: description.to_owned(),
                        history: 1,
                        num_replicas: self.config.replicas.unwrap_or(1),
                        ..Default::default()
                    })
                    .await
                    .map_err(|error| BusError::jetstream("create key-value bucket", error))?;
            }
            topology::configure_bucket(self, &format!("KV_{bucket}")).await?;
            // Opened after the configuration: the store reads by what it found then.
            self.jetstream
                .get_key_value(&bucket)
                .await
                .map_err(|error| BusError::jetstream("open key-value bucket", error))
        })
        .await
    }

    /// Reads a message of a `T` stream: resolves its claim check, then decodes it. Every reader
    /// (stages, [`Bus::last_for_page`], replay) goes through here.
    pub async fn read<T: Decode>(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        body: Bytes,
    ) -> Result<T::Event, BusError> {
        let body = claim_check::resolve(self, subject, headers, body).await?;
        T::decode(&body)
    }

    /// Publishes a sync run's progress snapshot (the stream keeps the latest per run).
    pub async fn publish_progress(&self, progress: &SyncProgress) -> Result<Published, BusError> {
        let subject = self.progress_subject(&progress.source, progress.run_id);
        let body = serde_json::to_vec(progress)
            .map_err(|error| BusError::jetstream("encode progress", error))?;
        let ack = self
            .jetstream
            .publish(subject, Bytes::from(body))
            .await
            .map_err(|error| BusError::jetstream("publish progress", error))?
            .await
            .map_err(|error| BusError::jetstream("publish progress ack", error))?;
        Ok(Published {
            stream_sequence: ack.sequence,
            duplicate: ack.duplicate,
            superseded: false,
        })
    }

    /// The latest progress snapshot of a run, if the stream holds one.
    pub async fn latest_progress(
        &self,
        source: &SourceKey,
        run_id: uuid::Uuid,
    ) -> Result<Option<SyncProgress>, BusError> {
        let stream = self
            .jetstream
            .get_stream(self.streams.sync_progress())
            .await
            .map_err(|error| BusError::jetstream("get stream", error))?;
        match stream
            .get_last_raw_message_by_subject(&self.progress_subject(source, run_id))
            .await
        {
            Ok(message) => serde_json::from_slice(&message.payload)
                .map(Some)
                .map_err(|error| BusError::jetstream("decode progress", error)),
            Err(error)
                if matches!(
                    error.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(BusError::jetstream("get progress", error)),
        }
    }

    pub fn progress_subject(&self, source: &SourceKey, run_id: uuid::Uuid) -> String {
        self.subjects
            .internal(&format!("sync.progress.{source}.{}", run_id.simple()))
    }

    /// The subject of query-embedding requests (see [`pagestream_events::EmbedQueryRequest`]).
    pub fn embed_query_subject(&self) -> String {
        self.subjects.internal("embed.query")
    }

    /// The newest event the stream holds for a page, if any (claim checks resolved). A message
    /// whose claim-checked payload is gone counts as none: its page or source was purged after
    /// (or while) it was published, so nothing of it may be reused (found by the chaos suite: a
    /// source removed and added again under load left such a message, and the embedder
    /// dead-lettered the page's next conversion instead of embedding it afresh).
    pub async fn last_for_page<T: Payload>(
        &self,
        source: &SourceKey,
        page: &PageId,
    ) -> Result<Option<Envelope<T>>, BusError> {
        let stream = self.stream(T::KIND).await?;
        let subject = self.subjects.page(T::KIND, source, page);
        let message = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            Err(error)
                if matches!(
                    error.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(BusError::jetstream("get last message", error)),
        };
        match self
            .read::<T>(&message.subject, Some(&message.headers), message.payload)
            .await
        {
            Ok(event) => Ok(Some(event)),
            Err(BusError::PayloadGone { subject }) => {
                tracing::debug!(subject, "the newest message's payload is gone: none");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Removes what the fact streams hold for a page, except its `page.deleted` tombstone, and its
    /// claim-check objects: a replay then cannot bring the page back.
    pub async fn purge_page(&self, source: &SourceKey, page: &PageId) -> Result<(), BusError> {
        for kind in [
            EventKind::PageChanged,
            EventKind::PageConverted,
            EventKind::ChunksReady,
        ] {
            let subject = self.subjects.page(kind, source, page);
            let last = self.last_message_of(kind, &subject).await?;
            self.purge_subject(kind, &subject).await?;
            if let Some(last) = last {
                claim_check::remove_of(self, &last.headers).await?;
            }
        }
        Ok(())
    }

    /// Removes everything the streams hold for a source, tombstones included (the source is gone).
    pub async fn purge_source(&self, source: &SourceKey) -> Result<(), BusError> {
        for kind in EventKind::ALL {
            let filter = self.subjects.all_of_source(kind, source);
            self.purge_subject(kind, &filter).await?;
        }
        claim_check::remove_source(self, source).await
    }

    async fn purge_subject(&self, kind: EventKind, filter: &str) -> Result<(), BusError> {
        self.stream(kind)
            .await?
            .purge()
            .filter(filter)
            .await
            .map_err(|error| BusError::jetstream("purge", error))?;
        Ok(())
    }

    /// A handle on a kind's stream, without asking the server for its info: every publish of a
    /// fact reads its subject's last message through one, and nothing here reads the info (a
    /// `STREAM.INFO` round trip, the stream's state encoded as JSON, for each of a first sync's
    /// 12,000 publishes).
    pub(crate) async fn stream(
        &self,
        kind: EventKind,
    ) -> Result<jetstream::stream::Stream<()>, BusError> {
        self.jetstream
            .get_stream_no_info(self.streams.for_kind(kind))
            .await
            .map_err(|error| BusError::jetstream("get stream", error))
    }
}

/// The sync-progress stream as a stage consumes it: plain JSON [`SyncProgress`] snapshots, the
/// latest per run.
pub struct ProgressSnapshots;

impl Decode for ProgressSnapshots {
    type Event = SyncProgress;

    fn name() -> &'static str {
        "sync.progress"
    }

    fn stream(bus: &Bus) -> String {
        bus.streams().sync_progress()
    }

    fn subjects(bus: &Bus) -> String {
        bus.subjects().internal("sync.progress.>")
    }

    fn decode(body: &[u8]) -> Result<SyncProgress, BusError> {
        serde_json::from_slice(body).map_err(|error| BusError::Decode(error.to_string()))
    }

    fn event_id(progress: &SyncProgress) -> String {
        format!("{}:{}", progress.source, progress.run_id)
    }
}

/// How long start-up waits for the server and for JetStream to take the streams and buckets: a
/// server restarting, a cluster that has just formed, or a node that is catching up refuses or
/// answers "timed out" or 503 for a while.
const TOPOLOGY_PATIENCE: Duration = Duration::from_secs(90);

/// Runs a start-up step again while it fails for a transient reason, with capped backoff, for
/// at most [`TOPOLOGY_PATIENCE`].
async fn patiently<T, F, Fut>(what: &str, mut step: F) -> Result<T, BusError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    let deadline = tokio::time::Instant::now() + TOPOLOGY_PATIENCE;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match step().await {
            Err(error) if error.is_transient() && tokio::time::Instant::now() < deadline => {
                let wait = backoff.next_wait();
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "cannot {what} yet; retrying");
                tokio::time::sleep(wait).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_and_tokens() {
        assert_eq!(
            redact_url("nats://app:hunter2@nats:4222,tls://s3cret-token@10.0.0.2:4222/x@y"),
            "nats://app:***@nats:4222,tls://***@10.0.0.2:4222/x@y"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("app:pw@host:4222"), "app:***@host:4222");
        let debug = format!("{:?}", BusConfig::new("nats://app:hunter2@nats:4222"));
        assert!(
            !debug.contains("hunter2") && debug.contains("app:***@"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn a_failed_connection_does_not_print_the_password() {
        // Nothing listens on port 1; the error quotes the server address.
        let url = "nats://pagestream:canary-nats-password@127.0.0.1:1";
        let Err(error) = Bus::connect(BusConfig::new(url)).await else {
            panic!("connected to port 1");
        };
        let message = format!("{error} {error:?}");
        assert!(matches!(error, BusError::Connect { .. }), "{message}");
        assert!(!message.contains("canary-nats-password"), "{message}");
        assert!(message.contains("pagestream:***@127.0.0.1:1"), "{message}");
    }
}
