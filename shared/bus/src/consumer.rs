//! A stage's consumer runner: a durable pull consumer shared by every replica of the stage, the
//! one loop every consumer of Pagestream runs on (CloudEvents and plain JSON snapshots alike, see
//! [`Decode`]).
//!
//! - The runner pulls only as many messages as it starts at once (a free slot pulls up to one
//!   batch), so no message waits in a buffer while its ack wait runs out.
//! - Messages in hand, running or waiting for a retry, are kept alive with in-progress acks by a
//!   task that lives exactly as long as the batch's handling does.
//! - The handler's result decides the acknowledgement: done → ack (after the handler's own output
//!   is durable, since the handler awaits its publishes); permanent → a dead-letter record, then
//!   term; transient → an outage: the batch keeps its slot and is retried with capped backoff for
//!   up to `retry_for` (a day by default), so a stage whose dependency is down stops pulling rather
//!   than emptying its stream into the dead-letter stream.
//! - A handler that panics or outlives `handler_timeout` gives no outcome: the event is nak'd and
//!   redelivered, and one delivered more than `max_deliveries` times without an outcome (it crashes
//!   or hangs every replica) is dead-lettered.
//! - A work queue's bulk events may run in slots of their own ([`StageConfig::bulk_slots`]), so
//!   that a live event behind a backlog of them is taken at once.
//! - On cancellation the runner stops pulling, naks what waits for a retry, lets what runs finish
//!   within `shutdown_grace`, then naks the rest, so another replica takes it at once.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::{Acker, Message};
use futures::{FutureExt, StreamExt};
use pagestream_events::{Envelope, Payload, Retryable};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span};

use crate::{Bus, BusError, Lane, dead_letter, trace};

/// What a stage consumes: the stream its messages are on and how to read one. Every event kind
/// is one (its messages are CloudEvents); [`crate::ProgressSnapshots`] reads plain JSON.
pub trait Decode: Send + Sync + 'static {
    /// What a handler receives.
    type Event: Send + Sync + 'static;

    /// For logs.
    fn name() -> &'static str;

    fn stream(bus: &Bus) -> String;

    /// The subjects a stage of this kind consumes unless told otherwise.
    fn subjects(bus: &Bus) -> String;

    /// Decodes a message body (its claim check already resolved).
    fn decode(body: &[u8]) -> Result<Self::Event, BusError>;

    /// Names the event in logs and spans.
    fn event_id(event: &Self::Event) -> String;
}

impl<T: Payload> Decode for T {
    type Event = Envelope<T>;

    fn name() -> &'static str {
        T::KIND.name()
    }

    fn stream(bus: &Bus) -> String {
        bus.streams().for_kind(T::KIND)
    }

    fn subjects(bus: &Bus) -> String {
        bus.subjects().all_of(T::KIND)
    }

    fn decode(body: &[u8]) -> Result<Envelope<T>, BusError> {
        Ok(Envelope::from_json(body)?)
    }

    fn event_id(event: &Envelope<T>) -> String {
        event.id.to_string()
    }
}

/// What a handler reports when it could not finish an event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying later: a dependency is down or overloaded.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help: the event itself is bad.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn transient(error: impl std::fmt::Display) -> Self {
        Self::Transient(error.to_string())
    }

    pub fn permanent(error: impl std::fmt::Display) -> Self {
        Self::Permanent(error.to_string())
    }
}

/// Every stage's error converts by its one classification.
impl<E: Retryable + std::fmt::Display> From<E> for HandlerError {
    fn from(error: E) -> Self {
        if error.is_transient() {
            Self::transient(error)
        } else {
            Self::permanent(error)
        }
    }
}

/// One event handed to a handler.
#[derive(Debug)]
pub struct Delivery<T: Decode> {
    pub event: T::Event,
    pub subject: String,
    pub stream_sequence: u64,
    /// 1 on the first delivery.
    pub delivered: u64,
    /// 1 on the first try of this delivery; one more after each transient failure.
    pub attempt: u32,
    /// The lane it travels in: what the stage makes of it travels in the same one.
    pub lane: Lane,
    /// The span of this event's handling, a child of the publisher's span.
    pub span: Span,
}

/// A stage's logic. Implement `handle`; batch-minded stages override `handle_batch` too.
pub trait Handler<T: Decode>: Send + Sync + 'static {
    fn handle(
        &self,
        delivery: &Delivery<T>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Handles a batch, one result per delivery in order. The default handles each concurrently.
    fn handle_batch(
        &self,
        batch: &[Delivery<T>],
    ) -> impl Future<Output = Vec<Result<(), HandlerError>>> + Send {
        futures::future::join_all(
            batch
                .iter()
                .map(|delivery| self.handle(delivery).instrument(delivery.span.clone())),
        )
    }
}

/// How a stage consumes.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// Durable consumer name, shared by the stage's replicas (e.g. `converter`).
    pub name: String,
    /// Subject filter; defaults to every subject of the stage's event kind.
    pub filter: Option<String>,
    /// Batches handled at once by this replica.
    pub concurrency: usize,
    /// Events per batch (1: one at a time).
    pub max_batch: usize,
    /// How long to wait for more events to fill a batch.
    pub batch_linger: Duration,
    /// Deliveries without an outcome (the handler panicked, hung or its replica died) before the
    /// event goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// The server redelivers an event not acknowledged within this time; events in hand are kept
    /// alive with in-progress acks.
    pub ack_wait: Duration,
    /// Wait after the first transient failure; doubles with each further one up to
    /// `max_retry_delay`.
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// How long an event that keeps failing transiently (an outage) is retried before it goes to
    /// the dead-letter stream: as long as an operator would wait.
    pub retry_for: Duration,
    /// A handler that has not finished a batch within this time is abandoned and the batch
    /// redelivered (a delivery without an outcome).
    pub handler_timeout: Duration,
    /// How long shutdown waits for in-flight events before it naks them.
    pub shutdown_grace: Duration,
    /// Whether the stage also runs a live lane: a second durable consumer (`<name>-live`) that
    /// takes each live event as it is published, ahead of a bulk backlog in the stage's own
    /// consumer, which handles it again in its turn (every stage is idempotent). The live lane
    /// tries each event once and never dead-letters: the stage's consumer stays the one that
    /// settles every event. Only for fact streams (a work queue takes one consumer per subject).
    pub live_lane: bool,
    /// For a work queue, where a live lane cannot be: bulk events run in slots of their own and
    /// wait for one without taking the stage's, so that a live event is taken at once behind a
    /// backlog of bulk ones (as long as fewer than [`BulkSlots::in_hand`] are ahead of it).
    pub bulk_slots: Option<BulkSlots>,
}

/// See [`StageConfig::bulk_slots`].
#[derive(Debug, Clone, Copy)]
pub struct BulkSlots {
    /// Bulk batches handled at once by this replica.
    pub running: usize,
    /// Bulk events a replica holds, running or waiting for a slot (kept alive meanwhile).
    pub in_hand: usize,
}

impl StageConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            filter: None,
            concurrency: 4,
            max_batch: 1,
            batch_linger: Duration::from_millis(5),
            max_deliveries: 5,
            ack_wait: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(60),
            retry_for: retry_for_default(),
            handler_timeout: Duration::from_secs(15 * 60),
            shutdown_grace: Duration::from_secs(20),
            live_lane: false,
            bulk_slots: None,
        }
    }

    /// The wait before try `attempt + 1`.
    fn retry_delay(&self, attempt: u32) -> Duration {
        pagestream_retry::Backoff::new(self.retry_delay, self.max_retry_delay).nth(attempt)
    }
}

/// How long every stage waits out an outage unless told otherwise: `PAGESTREAM_RETRY_FOR_SECS`, or
/// a day. Read from the environment here, once, so that each service honours it alike.
fn retry_for_default() -> Duration {
    static RETRY_FOR: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *RETRY_FOR.get_or_init(|| {
        std::env::var("PAGESTREAM_RETRY_FOR_SECS")
            .ok()
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(24 * 3600), Duration::from_secs)
    })
}

/// How long the runner waits for a message in one pull request when none is available.
const PULL_WAIT: Duration = Duration::from_secs(5);

/// How long a fetch of what is available (or the sending of a pull request) may take. The server
/// answers a fetch at once, but the client sets no timer on it: a request or answer lost while the
/// server restarts would otherwise leave the consumer waiting for good (found by the chaos suite:
/// the indexer's page.converted consumer stopped after a NATS restart).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A stage's consumer on the bus.
pub struct Stage<T> {
    bus: Bus,
    config: Arc<StageConfig>,
    _kind: std::marker::PhantomData<fn() -> T>,
}

impl<T: Decode> Stage<T> {
    pub fn new(bus: Bus, config: StageConfig) -> Self {
        Self {
            bus,
            config: Arc::new(config),
            _kind: std::marker::PhantomData,
        }
    }

    /// The stream the stage consumes.
    async fn stream(&self) -> Result<async_nats::jetstream::stream::Stream, BusError> {
        self.bus
            .jetstream()
            .get_stream(T::stream(&self.bus))
            .await
            .map_err(|error| BusError::jetstream("get stream", error))
    }

    /// Creates or updates the durable consumer.
    pub async fn consumer(
        &self,
    ) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, BusError> {
        self.durable(self.config.name.clone(), DeliverPolicy::All, false)
            .await
    }

    /// Creates or updates durable consumer `name` of the stage's subjects; `deliver_policy` says
    /// where a new one starts, `headers_only` that it delivers each event's headers without its
    /// body (a setting an existing consumer takes on update).
    async fn durable(
        &self,
        name: String,
        deliver_policy: DeliverPolicy,
        headers_only: bool,
    ) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, BusError> {
        let stream = self.stream().await?;
        let filter = self
            .config
            .filter
            .clone()
            .unwrap_or_else(|| T::subjects(&self.bus));
        let max_ack_pending = (self.config.concurrency * self.config.max_batch * 2).max(64)
            + self.config.bulk_slots.map_or(0, |bulk| bulk.in_hand);
        stream
            .create_consumer(pull::Config {
                durable_name: Some(name),
                filter_subject: filter,
                ack_policy: AckPolicy::Explicit,
                deliver_policy,
                ack_wait: self.config.ack_wait,
                // Redelivery is bounded by the runner, which dead-letters instead of dropping.
                max_deliver: -1,
                max_ack_pending: max_ack_pending as i64,
                headers_only,
                ..Default::default()
            })
            .await
            .map_err(|error| BusError::jetstream("create consumer", error))
    }

    /// The durable consumer's state on the server.
    async fn info(&self) -> Result<async_nats::jetstream::consumer::Info, BusError> {
        self.stream()
            .await?
            .consumer_info(&self.config.name)
            .await
            .map_err(|error| BusError::jetstream("consumer info", error))
    }

    /// The stream sequence up to which the stage's consumer has taken events (delivered to a
    /// replica, if not yet finished).
    async fn delivered_up_to(&self) -> Result<u64, BusError> {
        Ok(self.info().await?.delivered.stream_sequence)
    }

    /// The events the durable consumer has yet to finish: not yet delivered, or delivered and not
    /// yet acknowledged. Shared by every replica of the stage.
    pub async fn backlog(&self) -> Result<u64, BusError> {
        let info = self.info().await?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// The sequence of the last event published to the stage's stream: how many have come.
    pub async fn published(&self) -> Result<u64, BusError> {
        let mut stream = self.stream().await?;
        let info = stream
            .info()
            .await
            .map_err(|error| BusError::jetstream("stream info", error))?;
        Ok(info.state.last_sequence)
    }

    /// After a failed pull: pauses, then makes sure of the consumer. It may have been deleted
    /// (`pagestream replay --reembed` does so to start over from the first event), and the error
    /// can arrive while the deletion is still under way, hence the pause first. False when
    /// cancelled meanwhile.
    async fn recover(
        &self,
        consumer: &mut async_nats::jetstream::consumer::Consumer<pull::Config>,
        pause: Duration,
        cancel: &CancellationToken,
    ) -> bool {
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep(pause) => {}
        }
        match self.consumer().await {
            Ok(fresh) => *consumer = fresh,
            Err(error) => {
                tracing::warn!(stage = %self.config.name, %error, "cannot create the consumer again");
            }
        }
        true
    }

    /// Consumes until `cancel` fires, with the live lane if the stage has one. Returns an error
    /// only if the consumer cannot be set up.
    pub async fn run<H: Handler<T>>(
        &self,
        handler: Arc<H>,
        cancel: CancellationToken,
    ) -> Result<(), BusError> {
        if !self.config.live_lane {
            return self.run_consumer(handler, cancel).await;
        }
        let live_cancel = cancel.child_token();
        let consumer = async {
            let result = self.run_consumer(handler.clone(), cancel).await;
            live_cancel.cancel();
            result
        };
        let (result, ()) =
            tokio::join!(consumer, self.run_live_lane(handler.clone(), &live_cancel));
        result
    }

    /// The live lane (see [`StageConfig::live_lane`]): until `cancel` fires, takes each new live
    /// event once and acknowledges every event, bulk ones unread. The lane's consumer delivers
    /// headers only (the lane is in a header): a first sync's bodies (hundreds of megabytes of
    /// `chunks.ready`) would otherwise travel twice, and the few live events are read from the
    /// stream by sequence.
    async fn run_live_lane<H: Handler<T>>(&self, handler: Arc<H>, cancel: &CancellationToken) {
        let config = &self.config;
        let name = format!("{}-live", config.name);
        let mut consumer = None;
        while !cancel.is_cancelled() {
            let current = match &consumer {
                Some(current) => current,
                // A lane created anew starts at the events published from now on.
                None => match self.durable(name.clone(), DeliverPolicy::New, true).await {
                    Ok(created) => consumer.insert(created),
                    Err(error) => {
                        tracing::warn!(stage = %name, %error, "cannot set up the live lane; retrying");
                        pause(Duration::from_secs(1), cancel).await;
                        continue;
                    }
                },
            };
            let batch = match pull(current, config, cancel).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::debug!(stage = %name, %error, "live lane cannot pull; retrying");
                    consumer = None;
                    pause(Duration::from_millis(500), cancel).await;
                    continue;
                }
            };
            let mut live = Vec::with_capacity(batch.len());
            for message in batch {
                if Lane::of(message.headers.as_ref()) == Lane::Live && !cancel.is_cancelled() {
                    live.push(message);
                } else {
                    let_go(&name, &message).await;
                }
            }
            if !live.is_empty() {
                // Only what the stage's consumer has not taken yet: when it keeps up, it takes
                // each event at once, and the lane would do the work twice.
                pause(LIVE_LANE_GRACE, cancel).await;
                let taken = self.delivered_up_to().await.unwrap_or(0);
                let (ahead, taken): (Vec<_>, Vec<_>) = live.into_iter().partition(|message| {
                    message
                        .info()
                        .is_ok_and(|info| info.stream_sequence > taken)
                });
                for message in &taken {
                    let_go(&name, message).await;
                }
                if !ahead.is_empty() {
                    match self.stream().await {
                        Ok(stream) => {
                            handle_live(
                                &self.bus,
                                config,
                                &name,
                                handler.as_ref(),
                                &stream,
                                ahead,
                                cancel,
                            )
                            .await;
                        }
                        Err(error) => {
                            tracing::debug!(stage = %name, %error, "left to the stage's consumer");
                            for message in &ahead {
                                let_go(&name, message).await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Consumes until `cancel` fires. Returns an error only if the consumer cannot be set up.
    async fn run_consumer<H: Handler<T>>(
        &self,
        handler: Arc<H>,
        cancel: CancellationToken,
    ) -> Result<(), BusError> {
        let mut consumer = self.consumer().await?;
        let config = &self.config;
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let bulk_slots = config
            .bulk_slots
            .map(|bulk| Arc::new(Semaphore::new(bulk.running.max(1))));
        let tracker = TaskTracker::new();
        // Fires when the shutdown grace is over: what still runs is nak'd.
        let abandon = CancellationToken::new();
        tracing::info!(stage = %config.name, kind = T::name(), "consuming");

        loop {
            let slot = tokio::select! {
                () = cancel.cancelled() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let batch = match pull(&consumer, config, &cancel).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(stage = %config.name, %error, "cannot pull; retrying");
                    if !self
                        .recover(&mut consumer, Duration::from_millis(500), &cancel)
                        .await
                    {
                        break;
                    }
                    continue;
                }
            };
            if cancel.is_cancelled() {
                nak_all(config, batch.iter()).await;
                break;
            }
            let batch = match &bulk_slots {
                Some(bulk_slots) => {
                    let (live, bulk): (Vec<_>, Vec<_>) = batch
                        .into_iter()
                        .partition(|message| Lane::of(message.headers.as_ref()) == Lane::Live);
                    if !bulk.is_empty() {
                        tracker.spawn(process_bulk_batch::<T, H>(
                            self.bus.clone(),
                            self.config.clone(),
                            handler.clone(),
                            bulk,
                            bulk_slots.clone(),
                            cancel.clone(),
                            abandon.clone(),
                        ));
                    }
                    live
                }
                None => batch,
            };
            if batch.is_empty() {
                continue;
            }
            let bus = self.bus.clone();
            let config = self.config.clone();
            let handler = handler.clone();
            let cancel = cancel.clone();
            let abandon = abandon.clone();
            tracker.spawn(async move {
                process_batch::<T, H>(&bus, &config, handler.as_ref(), batch, &cancel, &abandon)
                    .await;
                drop(slot);
            });
        }

        tracker.close();
        if tokio::time::timeout(config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(stage = %config.name, "shutdown grace elapsed with events in flight; nak'ing them");
            abandon.cancel();
            tracker.wait().await;
        }
        tracing::info!(stage = %config.name, "stopped consuming");
        Ok(())
    }
}

/// Sleeps for `duration`, or less if `cancel` fires.
async fn pause(duration: Duration, cancel: &CancellationToken) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}

/// How long the live lane lets the stage's consumer take a new event first.
const LIVE_LANE_GRACE: Duration = Duration::from_millis(250);

/// How long the live lane gives a batch before it leaves it to the stage's consumer.
const LIVE_LANE_TIMEOUT: Duration = Duration::from_secs(60);

/// Handles live events once, as one batch (their bodies read from `stream`: the lane delivers
/// headers only), then acknowledges them whatever the outcome: the stage's own consumer settles
/// each in its turn (retries, dead letters).
async fn handle_live<T: Decode, H: Handler<T>>(
    bus: &Bus,
    config: &StageConfig,
    lane: &str,
    handler: &H,
    stream: &async_nats::jetstream::stream::Stream,
    messages: Vec<Message>,
    cancel: &CancellationToken,
) {
    let mut deliveries = Vec::with_capacity(messages.len());
    for message in &messages {
        let Ok(info) = message.info() else { continue };
        let delivered = info.delivered.max(1) as u64;
        let read = async {
            let stored = stream
                .get_raw_message(info.stream_sequence)
                .await
                .map_err(|error| BusError::jetstream("read live event", error))?;
            let event = Stored {
                subject: &stored.subject,
                headers: Some(&stored.headers),
                payload: stored.payload.clone(),
            };
            decode::<T>(bus, config, event, info.stream_sequence, delivered).await
        };
        match read.await {
            Ok(delivery) => deliveries.push(delivery),
            Err(error) => {
                tracing::debug!(stage = %lane, %error, "left to the stage's consumer");
            }
        }
    }
    if !deliveries.is_empty() {
        let run = AssertUnwindSafe(handler.handle_batch(&deliveries)).catch_unwind();
        let finished = kept_alive(&messages, config.ack_wait, async {
            tokio::select! {
                finished = tokio::time::timeout(LIVE_LANE_TIMEOUT, run) => Some(finished),
                () = cancel.cancelled() => None,
            }
        })
        .await;
        let failed = match finished {
            Some(Ok(Ok(results))) => results.iter().filter(|result| result.is_err()).count(),
            Some(Ok(Err(panic))) => {
                tracing::warn!(stage = %lane, panic = panic_message(panic.as_ref()), "handler panicked; left to the stage's consumer");
                deliveries.len()
            }
            Some(Err(_)) | None => deliveries.len(),
        };
        metrics::counter!("pagestream_live_lane_events_total", "stage" => lane.to_owned(), "outcome" => "handled")
            .increment((deliveries.len() - failed) as u64);
        metrics::counter!("pagestream_live_lane_events_total", "stage" => lane.to_owned(), "outcome" => "left")
            .increment(failed as u64);
    }
    for message in &messages {
        let_go(lane, message).await;
    }
}

/// Pulls at most one batch: what is available now, else waits for one message (up to
/// [`PULL_WAIT`], or until cancelled) and lingers for more. Empty when nothing came.
async fn pull(
    consumer: &async_nats::jetstream::consumer::Consumer<pull::Config>,
    config: &StageConfig,
    cancel: &CancellationToken,
) -> Result<Vec<Message>, BusError> {
    let max_batch = config.max_batch.max(1);
    let mut batch = fetch_available(consumer, max_batch).await?;
    if batch.is_empty() {
        let request = consumer
            .batch()
            .max_messages(1)
            .expires(PULL_WAIT)
            .messages();
        let waiting = tokio::time::timeout(FETCH_TIMEOUT, request)
            .await
            .map_err(|_| BusError::jetstream("pull", "no answer from the server"))?
            .map_err(|error| BusError::jetstream("pull", error))?;
        let mut waiting = std::pin::pin!(waiting);
        tokio::select! {
            () = cancel.cancelled() => return Ok(batch),
            next = waiting.next() => match next {
                Some(Ok(message)) => batch.push(message),
                Some(Err(error)) => return Err(BusError::jetstream("pull", error)),
                None => return Ok(batch),
            },
        }
        if max_batch > 1 {
            tokio::select! {
                () = cancel.cancelled() => return Ok(batch),
                () = tokio::time::sleep(config.batch_linger) => {}
            }
        }
    }
    if batch.len() < max_batch {
        batch.extend(fetch_available(consumer, max_batch - batch.len()).await?);
    }
    Ok(batch)
}

/// Up to `max` messages that are available now, without waiting.
async fn fetch_available(
    consumer: &async_nats::jetstream::consumer::Consumer<pull::Config>,
    max: usize,
) -> Result<Vec<Message>, BusError> {
    let fetch = async {
        let mut messages = consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(|error| BusError::jetstream("fetch", error))?;
        let mut batch = Vec::new();
        while let Some(message) = messages.next().await {
            batch.push(message.map_err(|error| BusError::jetstream("fetch", error))?);
        }
        Ok(batch)
    };
    // What came before the timeout is redelivered after the ack wait.
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| BusError::jetstream("fetch", "no answer from the server"))?
}

/// An event as the stream holds it: delivered in full, or read back by sequence.
struct Stored<'a> {
    subject: &'a str,
    headers: Option<&'a async_nats::HeaderMap>,
    payload: bytes::Bytes,
}

impl<'a> Stored<'a> {
    fn of(message: &'a Message) -> Self {
        Self {
            subject: &message.subject,
            headers: message.headers.as_ref(),
            payload: message.payload.clone(),
        }
    }
}

/// Decodes a stored event into a typed delivery.
async fn decode<T: Decode>(
    bus: &Bus,
    config: &StageConfig,
    stored: Stored<'_>,
    stream_sequence: u64,
    delivered: u64,
) -> Result<Delivery<T>, BusError> {
    let event = bus
        .read::<T>(stored.subject, stored.headers, stored.payload)
        .await?;
    let span = tracing::info_span!(
        "handle",
        stage = %config.name,
        subject = %stored.subject,
        event_id = %T::event_id(&event),
        delivered,
    );
    trace::set_parent(&span, stored.headers);
    Ok(Delivery {
        event,
        subject: stored.subject.to_owned(),
        stream_sequence,
        delivered,
        attempt: 1,
        lane: Lane::of(stored.headers),
        span,
    })
}

/// Sends in-progress acks for `ackers` every third of the ack wait; never returns, so it lives
/// exactly as long as the future it is raced with.
async fn keep_alive(ackers: Vec<Acker>, ack_wait: Duration) {
    let mut ticker = tokio::time::interval((ack_wait / 3).max(Duration::from_millis(10)));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        for acker in &ackers {
            let _ = acker.ack_with(AckKind::Progress).await;
        }
    }
}

/// Runs `work` while keeping `messages` alive.
async fn kept_alive<F: Future>(messages: &[Message], ack_wait: Duration, work: F) -> F::Output {
    let ackers = messages
        .iter()
        .map(|message| message.clone().split().1)
        .collect();
    tokio::select! {
        output = work => output,
        () = keep_alive(ackers, ack_wait) => unreachable!("keep_alive never returns"),
    }
}

/// Handles bulk events once one of the bulk slots is free, keeping them alive meanwhile; gives
/// them back at once on shutdown.
async fn process_bulk_batch<T: Decode, H: Handler<T>>(
    bus: Bus,
    config: Arc<StageConfig>,
    handler: Arc<H>,
    messages: Vec<Message>,
    bulk_slots: Arc<Semaphore>,
    cancel: CancellationToken,
    abandon: CancellationToken,
) {
    let slot = kept_alive(&messages, config.ack_wait, async {
        tokio::select! {
            () = cancel.cancelled() => None,
            slot = bulk_slots.acquire_owned() => slot.ok(),
        }
    })
    .await;
    match slot {
        Some(_slot) => {
            process_batch::<T, H>(&bus, &config, handler.as_ref(), messages, &cancel, &abandon)
                .await;
        }
        None => nak_all(&config, messages.iter()).await,
    }
}

/// How one try of a batch ended.
enum Attempt {
    Results(Vec<Result<(), HandlerError>>),
    /// Panicked or timed out: no outcome.
    NoOutcome(String),
    /// Still running when the shutdown grace ran out.
    Abandoned,
}

async fn process_batch<T: Decode, H: Handler<T>>(
    bus: &Bus,
    config: &StageConfig,
    handler: &H,
    messages: Vec<Message>,
    cancel: &CancellationToken,
    abandon: &CancellationToken,
) {
    // The messages of `deliveries`, in the same order.
    let mut in_hand = Vec::with_capacity(messages.len());
    let mut deliveries = Vec::with_capacity(messages.len());
    for message in messages {
        let (stream_sequence, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered.max(1) as u64),
            Err(error) => {
                tracing::warn!(stage = %config.name, %error, "message without jetstream metadata");
                continue;
            }
        };
        if delivered > config.max_deliveries {
            let reason = format!(
                "delivered {delivered} times without an outcome (limit {})",
                config.max_deliveries
            );
            give_up(bus, config, &message, stream_sequence, delivered, &reason).await;
            continue;
        }
        match kept_alive(
            std::slice::from_ref(&message),
            config.ack_wait,
            decode::<T>(
                bus,
                config,
                Stored::of(&message),
                stream_sequence,
                delivered,
            ),
        )
        .await
        {
            Ok(delivery) => {
                deliveries.push(delivery);
                in_hand.push(message);
            }
            Err(BusError::PayloadGone { subject }) => {
                // A newer fact replaced it, or its page or source was purged: nothing to do.
                tracing::debug!(stage = %config.name, %subject, "superseded event skipped");
                ack(config, &message).await;
            }
            Err(error) if !error.is_transient() => {
                let reason = error.to_string();
                give_up(bus, config, &message, stream_sequence, delivered, &reason).await;
            }
            Err(error) => {
                // The bus itself is out: another try later, by redelivery.
                tracing::warn!(stage = %config.name, %error, "cannot read the event; retrying later");
                nak(config, &message, Some(config.retry_delay)).await;
            }
        }
    }

    if deliveries.is_empty() {
        return;
    }
    // One keep-alive for as long as any of them is in hand (in-progress acks for the ones settled
    // meanwhile are ignored by the server).
    let ackers = in_hand
        .iter()
        .map(|message| message.clone().split().1)
        .collect();
    tokio::select! {
        () = handle(bus, config, handler, in_hand, deliveries, cancel, abandon) => {}
        () = keep_alive(ackers, config.ack_wait) => unreachable!("keep_alive never returns"),
    }
}

/// Runs the handler over a batch until each event is settled: done, dead-lettered, given back
/// (no outcome, shutdown), or retried after transient failures for up to `retry_for`.
async fn handle<T: Decode, H: Handler<T>>(
    bus: &Bus,
    config: &StageConfig,
    handler: &H,
    mut in_hand: Vec<Message>,
    mut deliveries: Vec<Delivery<T>>,
    cancel: &CancellationToken,
    abandon: &CancellationToken,
) {
    let mut first_failure: Option<Instant> = None;
    while !deliveries.is_empty() {
        let attempt = async {
            let run = AssertUnwindSafe(handler.handle_batch(&deliveries)).catch_unwind();
            let run = tokio::time::timeout(config.handler_timeout, run);
            let finished = tokio::select! {
                finished = run => finished,
                () = abandon.cancelled() => return Attempt::Abandoned,
            };
            match finished {
                Ok(Ok(results)) => Attempt::Results(results),
                Ok(Err(panic)) => Attempt::NoOutcome(format!(
                    "handler panicked: {}",
                    panic_message(panic.as_ref())
                )),
                Err(_) => Attempt::NoOutcome(format!(
                    "handler did not finish within {:?}",
                    config.handler_timeout
                )),
            }
        }
        .await;
        let mut results = match attempt {
            Attempt::Results(results) => results,
            Attempt::Abandoned => {
                // The shutdown grace is over: another replica takes them now.
                nak_all(config, in_hand.iter()).await;
                return;
            }
            Attempt::NoOutcome(reason) => {
                tracing::error!(stage = %config.name, %reason, "no outcome; the batch will be redelivered");
                metrics::counter!("pagestream_events_total", "stage" => config.name.clone(), "outcome" => "no_outcome").increment(deliveries.len() as u64);
                let messages = std::mem::take(&mut in_hand);
                nak_all_after(config, messages.iter(), Some(config.retry_delay)).await;
                return;
            }
        };
        results.resize_with(deliveries.len(), || {
            Err(HandlerError::permanent(
                "handler returned no result for this event",
            ))
        });

        let messages = std::mem::take(&mut in_hand);
        let mut retry = Vec::new();
        let mut reasons = Vec::new();
        for ((message, delivery), result) in messages.into_iter().zip(deliveries).zip(results) {
            let span = delivery.span.clone();
            match result {
                Ok(()) => ack(config, &message).instrument(span).await,
                Err(HandlerError::Permanent(reason)) => {
                    give_up(
                        bus,
                        config,
                        &message,
                        delivery.stream_sequence,
                        delivery.delivered,
                        &reason,
                    )
                    .instrument(span)
                    .await;
                }
                Err(HandlerError::Transient(reason)) => {
                    in_hand.push(message);
                    reasons.push(reason);
                    retry.push(delivery);
                }
            }
        }
        deliveries = retry;
        if deliveries.is_empty() {
            return;
        }

        let attempt = deliveries[0].attempt;
        let failing_for = first_failure.get_or_insert_with(Instant::now).elapsed();
        if failing_for >= config.retry_for {
            let messages = std::mem::take(&mut in_hand);
            for ((message, delivery), reason) in messages.iter().zip(&deliveries).zip(&reasons) {
                let reason = format!(
                    "gave up after {attempt} tries over {}s of transient failures: {reason}",
                    failing_for.as_secs()
                );
                give_up(
                    bus,
                    config,
                    message,
                    delivery.stream_sequence,
                    delivery.delivered,
                    &reason,
                )
                .await;
            }
            return;
        }
        let delay = config.retry_delay(attempt);
        metrics::counter!("pagestream_events_total", "stage" => config.name.clone(), "outcome" => "retried").increment(deliveries.len() as u64);
        tracing::warn!(
            stage = %config.name,
            events = deliveries.len(),
            attempt,
            failing_for_s = failing_for.as_secs(),
            retry_in_ms = delay.as_millis() as u64,
            reason = %reasons[0],
            "transient failure; retrying"
        );
        let waited = tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        };
        if !waited {
            // Shutting down: another replica takes them now.
            nak_all(config, in_hand.iter()).await;
            return;
        }
        for delivery in &mut deliveries {
            delivery.attempt += 1;
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Acknowledges an event the stage is done with, once the server has the acknowledgement.
async fn ack(config: &StageConfig, message: &Message) {
    let stage = config.name.as_str();
    metrics::counter!("pagestream_events_total", "stage" => stage.to_owned(), "outcome" => "done")
        .increment(1);
    if let Err(error) = message.double_ack().await {
        tracing::warn!(stage, %error, "ack failed; the event will be redelivered");
    }
}

/// Acknowledges a live-lane delivery without waiting for the server, and without counting it as
/// an event done (the stage's consumer settles and counts each in its turn): a lost
/// acknowledgement only brings the event back to the lane, which lets it go again.
async fn let_go(lane: &str, message: &Message) {
    if let Err(error) = message.ack().await {
        tracing::debug!(stage = lane, %error, "live lane ack failed; the event comes back to it");
    }
}

async fn nak(config: &StageConfig, message: &Message, delay: Option<Duration>) {
    if let Err(error) = message.ack_with(AckKind::Nak(delay)).await {
        tracing::warn!(stage = %config.name, %error, "nak failed; the event will be redelivered after ack wait");
    }
}

async fn nak_all(config: &StageConfig, messages: impl Iterator<Item = &Message>) {
    nak_all_after(config, messages, None).await;
}

async fn nak_all_after(
    config: &StageConfig,
    messages: impl Iterator<Item = &Message>,
    delay: Option<Duration>,
) {
    for message in messages {
        nak(config, message, delay).await;
    }
}

/// Moves a message to the dead-letter stream, then terminates it. If the dead letter cannot be
/// stored, the message is nak'd instead: nothing is lost.
async fn give_up(
    bus: &Bus,
    config: &StageConfig,
    message: &Message,
    stream_sequence: u64,
    delivered: u64,
    reason: &str,
) {
    let stage = config.name.as_str();
    match dead_letter::record(bus, stage, message, stream_sequence, delivered, reason).await {
        Ok(()) => {
            metrics::counter!("pagestream_events_total", "stage" => stage.to_owned(), "outcome" => "dead_lettered").increment(1);
            tracing::error!(stage, subject = %message.subject, delivered, reason, "event moved to the dead-letter stream");
            if let Err(error) = message.ack_with(AckKind::Term).await {
                tracing::warn!(stage, %error, "term failed; the event may be delivered again");
            }
        }
        Err(error) => {
            tracing::error!(stage, %error, "cannot store the dead letter; retrying the event later");
            nak(config, message, Some(config.max_retry_delay)).await;
        }
    }
}
