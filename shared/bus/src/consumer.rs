//! A stage's consumer runner: a durable pull consumer shared by every replica of the stage.
//!
//! The handler's result decides the acknowledgement: done → ack (after the handler's own output is
//! durable, since the handler awaits its publishes); transient → nak with a growing delay; permanent →
//! term plus a dead-letter record. An event that keeps failing transiently, or that was delivered
//! more than `max_deliveries` times without an outcome (a crashing replica), is dead-lettered too.
//! Long work is kept alive with in-progress acks. Error items from the message stream are logged and
//! skipped. On cancellation the runner stops pulling, finishes what is in flight (bounded by
//! `shutdown_grace`), and naks what it had pulled but not started so another replica takes it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::Message;
use futures::StreamExt;
use pagestream_events::Payload;
use pagestream_events::{Envelope, EventError, RawEvent};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span};

use crate::{Bus, BusError, claim_check, dead_letter, trace};

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

impl From<BusError> for HandlerError {
    /// Failing to publish or read the bus is worth retrying; a malformed event is not.
    fn from(error: BusError) -> Self {
        match error {
            BusError::Event(_) | BusError::Config(_) => Self::permanent(error),
            _ => Self::transient(error),
        }
    }
}

/// One event handed to a handler.
#[derive(Debug)]
pub struct Delivery<T> {
    pub event: Envelope<T>,
    pub subject: String,
    pub stream_sequence: u64,
    /// 1 on the first delivery.
    pub delivered: u64,
    /// The span of this event's handling, a child of the publisher's span.
    pub span: Span,
}

/// A stage's logic. Implement `handle`; batch-minded stages override `handle_batch` too.
pub trait Handler<T: Payload>: Send + Sync + 'static {
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
    /// Deliveries before an event that keeps failing goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// The server redelivers an event not acknowledged within this time.
    pub ack_wait: Duration,
    /// Nak delay after the first failure; doubles with each delivery up to `max_retry_delay`.
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// How long shutdown waits for in-flight events.
    pub shutdown_grace: Duration,
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
            shutdown_grace: Duration::from_secs(20),
        }
    }

    fn nak_delay(&self, delivered: u64) -> Duration {
        let exponent = delivered.saturating_sub(1).min(16) as u32;
        self.retry_delay
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.max_retry_delay)
    }
}

/// A stage's consumer on the bus.
pub struct Stage<T> {
    bus: Bus,
    config: Arc<StageConfig>,
    _kind: std::marker::PhantomData<fn() -> T>,
}

impl<T: Payload> Stage<T> {
    pub fn new(bus: Bus, config: StageConfig) -> Self {
        Self {
            bus,
            config: Arc::new(config),
            _kind: std::marker::PhantomData,
        }
    }

    /// Creates or updates the durable consumer.
    pub async fn consumer(
        &self,
    ) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, BusError> {
        let stream = self.bus.stream(T::KIND).await?;
        let filter = self
            .config
            .filter
            .clone()
            .unwrap_or_else(|| self.bus.subjects().all_of(T::KIND));
        let max_ack_pending = (self.config.concurrency * self.config.max_batch * 2).max(64);
        stream
            .create_consumer(pull::Config {
                durable_name: Some(self.config.name.clone()),
                filter_subject: filter,
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: self.config.ack_wait,
                // Redelivery is bounded by the runner, which dead-letters instead of dropping.
                max_deliver: -1,
                max_ack_pending: max_ack_pending as i64,
                ..Default::default()
            })
            .await
            .map_err(|error| BusError::jetstream("create consumer", error))
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

    /// Consumes until `cancel` fires. Returns an error only if the consumer cannot be set up.
    pub async fn run<H: Handler<T>>(
        &self,
        handler: Arc<H>,
        cancel: CancellationToken,
    ) -> Result<(), BusError> {
        let mut consumer = self.consumer().await?;
        let config = &self.config;
        let prefetch = config.concurrency * config.max_batch;
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let tracker = TaskTracker::new();
        tracing::info!(stage = %config.name, kind = T::KIND.name(), "consuming");

        'pull: while !cancel.is_cancelled() {
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(prefetch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
            {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(stage = %config.name, %error, "cannot pull; retrying");
                    if !self
                        .recover(&mut consumer, Duration::from_secs(1), &cancel)
                        .await
                    {
                        break 'pull;
                    }
                    continue 'pull;
                }
            };
            loop {
                let slot = tokio::select! {
                    () = cancel.cancelled() => break 'pull,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break 'pull,
                    },
                };
                let first = tokio::select! {
                    () = cancel.cancelled() => break 'pull,
                    next = messages.next() => next,
                };
                let mut batch = match first {
                    Some(Ok(message)) => vec![message],
                    Some(Err(error)) => {
                        tracing::warn!(stage = %config.name, %error, "error item from the message stream; pulling again");
                        if !self
                            .recover(&mut consumer, Duration::from_millis(500), &cancel)
                            .await
                        {
                            break 'pull;
                        }
                        continue 'pull;
                    }
                    // The server ended the pull: start a new one.
                    None => continue 'pull,
                };
                while batch.len() < config.max_batch {
                    match tokio::time::timeout(config.batch_linger, messages.next()).await {
                        Ok(Some(Ok(message))) => batch.push(message),
                        Ok(Some(Err(error))) => {
                            // The next read meets the stream's state and deals with it.
                            tracing::warn!(stage = %config.name, %error, "error item from the message stream");
                            break;
                        }
                        _ => break,
                    }
                }
                let bus = self.bus.clone();
                let config = self.config.clone();
                let handler = handler.clone();
                tracker.spawn(async move {
                    process_batch::<T, H>(&bus, &config, handler.as_ref(), batch).await;
                    drop(slot);
                });
            }
        }

        tracker.close();
        if tokio::time::timeout(config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(stage = %config.name, "shutdown grace elapsed with events in flight; they will be redelivered");
        }
        tracing::info!(stage = %config.name, "stopped consuming");
        Ok(())
    }
}

/// Decodes a message into a typed delivery.
async fn decode<T: Payload>(
    bus: &Bus,
    config: &StageConfig,
    message: &Message,
    stream_sequence: u64,
    delivered: u64,
) -> Result<Delivery<T>, BusError> {
    let body = claim_check::resolve(
        bus,
        &message.subject,
        message.headers.as_ref(),
        message.payload.clone(),
    )
    .await?;
    let event: Envelope<T> = RawEvent::from_json(&body)
        .and_then(RawEvent::into_typed)
        .map_err(BusError::from)?;
    let span = tracing::info_span!(
        "handle",
        stage = %config.name,
        subject = %message.subject,
        event_id = %event.id,
        delivered,
    );
    trace::set_parent(&span, message.headers.as_ref());
    Ok(Delivery {
        event,
        subject: message.subject.to_string(),
        stream_sequence,
        delivered,
        span,
    })
}

async fn process_batch<T: Payload, H: Handler<T>>(
    bus: &Bus,
    config: &StageConfig,
    handler: &H,
    messages: Vec<Message>,
) {
    let mut pending = Vec::with_capacity(messages.len());
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
        match decode::<T>(bus, config, &message, stream_sequence, delivered).await {
            Ok(delivery) => {
                deliveries.push(delivery);
                pending.push(message);
            }
            Err(error @ BusError::Event(_)) => {
                give_up(
                    bus,
                    config,
                    &message,
                    stream_sequence,
                    delivered,
                    &error.to_string(),
                )
                .await;
            }
            Err(error) => {
                let outcome = HandlerError::transient(error);
                settle(
                    bus,
                    config,
                    &message,
                    stream_sequence,
                    delivered,
                    Err(outcome),
                )
                .await;
            }
        }
    }
    if deliveries.is_empty() {
        return;
    }

    // In-progress acks keep long work from being redelivered to another replica.
    let keep_alive = {
        let acks: Vec<_> = pending
            .iter()
            .map(|message| message.clone().split().1)
            .collect();
        let every = config.ack_wait / 3;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                for acker in &acks {
                    let _ = acker.ack_with(AckKind::Progress).await;
                }
            }
        })
    };
    let mut results = handler.handle_batch(&deliveries).await;
    keep_alive.abort();
    results.resize_with(deliveries.len(), || {
        Err(HandlerError::permanent(
            "handler returned no result for this event",
        ))
    });

    for ((message, delivery), result) in pending.iter().zip(&deliveries).zip(results) {
        let _entered = delivery.span.enter();
        settle(
            bus,
            config,
            message,
            delivery.stream_sequence,
            delivery.delivered,
            result,
        )
        .await;
    }
}

/// Acknowledges a message according to its outcome.
async fn settle(
    bus: &Bus,
    config: &StageConfig,
    message: &Message,
    stream_sequence: u64,
    delivered: u64,
    result: Result<(), HandlerError>,
) {
    let stage = config.name.as_str();
    match result {
        Ok(()) => {
            metrics::counter!("pagestream_events_total", "stage" => stage.to_owned(), "outcome" => "done").increment(1);
            if let Err(error) = message.double_ack().await {
                tracing::warn!(stage, %error, "ack failed; the event will be redelivered");
            }
        }
        Err(HandlerError::Transient(reason)) if delivered < config.max_deliveries => {
            let delay = config.nak_delay(delivered);
            metrics::counter!("pagestream_events_total", "stage" => stage.to_owned(), "outcome" => "retried").increment(1);
            tracing::warn!(stage, delivered, retry_in_ms = delay.as_millis() as u64, %reason, "transient failure");
            if let Err(error) = message.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::warn!(stage, %error, "nak failed; the event will be redelivered after ack wait");
            }
        }
        Err(HandlerError::Transient(reason)) => {
            let reason = format!("gave up after {delivered} deliveries: {reason}");
            give_up(bus, config, message, stream_sequence, delivered, &reason).await;
        }
        Err(HandlerError::Permanent(reason)) => {
            give_up(bus, config, message, stream_sequence, delivered, &reason).await;
        }
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
            let _ = message
                .ack_with(AckKind::Nak(Some(config.max_retry_delay)))
                .await;
        }
    }
}

impl From<EventError> for HandlerError {
    fn from(error: EventError) -> Self {
        Self::permanent(error)
    }
}
