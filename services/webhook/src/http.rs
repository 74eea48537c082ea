//! The public endpoint: `POST /webhooks/confluence/{source}[/{event}]`, and for Cloud's unsigned
//! site-admin webhooks `POST /webhooks/confluence/{source}/p/{path secret}[/{event}]`.
//!
//! Each delivery goes through, in order: the source key must be within its rate (429), the body must
//! fit (413), the delivery must be authentic for a known source (401), the body must name a page
//! event and a page (400). A page event becomes a `page.hinted` command, and the answer (202 with
//! the event id) goes out once JetStream has stored it; other events are answered 202 and counted.
//! Nothing is published for a rejected delivery.
//!
//! The rate limit comes first so that a stranger gets a bounded amount of HMAC work per key. An
//! unknown source is verified against a random decoy secret and answered exactly like a bad
//! signature on a known one, so that answers (and their timing) do not tell which keys exist.
//! Rejections before authentication are counted in metrics, never logged one by one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use pagestream_bus::{Bus, BusError};
use pagestream_events::{Envelope, PageHinted, SourceKey};
use pagestream_sources::{Secret, SecretKey};
use pagestream_views::ErrorBody;
use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::{self, AuthError, JwtPolicy, SignedRequest};
use crate::limit::RateLimiter;
use crate::payload::{self, EventAction, PayloadError};
use crate::sources::{SourceCache, WebhookSource};

/// Limits of the endpoint.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub max_body_bytes: usize,
    /// Clock skew tolerated on a Connect JWT's `iat` and `exp`.
    pub jwt_leeway_secs: i64,
    /// Longest lifetime (`exp - iat`) of an accepted Connect JWT.
    pub jwt_max_lifetime_secs: i64,
}

#[derive(Clone)]
struct AppState {
    bus: Bus,
    sources: SourceCache,
    limiter: Arc<RateLimiter>,
    settings: Arc<HttpSettings>,
    /// What unknown sources are verified against: a secret nobody knows.
    decoy: Arc<WebhookSource>,
}

/// The webhook routes.
pub fn router(
    bus: Bus,
    sources: SourceCache,
    limiter: Arc<RateLimiter>,
    settings: HttpSettings,
) -> Router {
    let body_limit = settings.max_body_bytes;
    Router::new()
        .route("/webhooks/confluence/{source}", post(receive_named))
        .route(
            "/webhooks/confluence/{source}/{event}",
            post(receive_routed),
        )
        .route(
            "/webhooks/confluence/{source}/p/{secret}",
            post(receive_unsigned),
        )
        .route(
            "/webhooks/confluence/{source}/p/{secret}/{event}",
            post(receive_unsigned_routed),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(AppState {
            bus,
            sources,
            limiter,
            settings: Arc::new(settings),
            decoy: Arc::new(WebhookSource {
                secret: Some(Secret::new(SecretKey::generate())),
                connect_client_key: Some(SecretKey::generate()),
                path_secret: Some(Secret::new(SecretKey::generate())),
            }),
        })
}

#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error("body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body cannot be read")]
    Unreadable,
    /// The reason stays in metrics: the answer is the same for every reason, an unknown source
    /// included.
    #[error("unauthorized")]
    Unauthorized(#[from] AuthError),
    #[error("rate limit exceeded")]
    RateLimited { retry_after: Duration },
    #[error("invalid payload: {0}")]
    Payload(#[from] PayloadError),
    #[error("cannot queue the hint; try again")]
    Publish(#[source] BusError),
}

impl WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            WebhookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Unreadable | WebhookError::Payload(_) => StatusCode::BAD_REQUEST,
            WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebhookError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            WebhookError::Publish(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code of the answer, from the ingester's table (in the api's style, `snake_case`):
    /// `payload_too_large`, `unreadable_body`, `unauthorized`, `rate_limited`,
    /// `invalid_payload`, `dependency_unavailable`.
    fn code(&self) -> &'static str {
        match self {
            WebhookError::TooLarge { .. } => "payload_too_large",
            WebhookError::Unreadable => "unreadable_body",
            WebhookError::Unauthorized(_) => "unauthorized",
            WebhookError::RateLimited { .. } => "rate_limited",
            WebhookError::Payload(_) => "invalid_payload",
            WebhookError::Publish(_) => "dependency_unavailable",
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            WebhookError::TooLarge { .. } => "too_large",
            WebhookError::Unreadable | WebhookError::Payload(_) => "invalid",
            WebhookError::Unauthorized(_) => "unauthorized",
            WebhookError::RateLimited { .. } => "rate_limited",
            WebhookError::Publish(_) => "publish_failed",
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Messages name what is wrong, never a secret or a token.
        let body = ErrorBody::new(self.code(), self.to_string(), None);
        let mut response = (status, Json(body)).into_response();
        if let WebhookError::RateLimited { retry_after } = self {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The answer to an accepted delivery.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Accepted {
    /// A `page.hinted` command is stored (or was already, for a duplicate).
    Hinted { event_id: Uuid, duplicate: bool },
    /// Not a page event: nothing to do.
    Ignored { event: String },
}

async fn receive_named(
    State(state): State<AppState>,
    Path(source): Path<String>,
    request: Request,
) -> Response {
    receive(state, source, None, None, request).await
}

async fn receive_routed(
    State(state): State<AppState>,
    Path((source, event)): Path<(String, String)>,
    request: Request,
) -> Response {
    receive(state, source, None, Some(event), request).await
}

async fn receive_unsigned(
    State(state): State<AppState>,
    Path((source, secret)): Path<(String, String)>,
    request: Request,
) -> Response {
    receive(state, source, Some(Secret::new(secret)), None, request).await
}

async fn receive_unsigned_routed(
    State(state): State<AppState>,
    Path((source, secret, event)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    receive(
        state,
        source,
        Some(Secret::new(secret)),
        Some(event),
        request,
    )
    .await
}

/// `path_secret`: the secret of an unsigned delivery's URL (never logged).
async fn receive(
    state: AppState,
    source: String,
    path_secret: Option<Secret>,
    path_event: Option<String>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let key = SourceKey::new(source).ok();
    let known = key.as_ref().and_then(|key| state.sources.get(key));
    // Only known sources label metrics: a caller must not grow their cardinality.
    let source_label = match (&key, &known) {
        (Some(key), Some(_)) => key.to_string(),
        _ => "unknown".to_owned(),
    };
    let span =
        tracing::info_span!("webhook", source = %source_label, event = tracing::field::Empty);
    let result = handle(
        &state,
        key,
        known,
        path_secret.as_ref(),
        path_event.as_deref(),
        request,
    )
    .instrument(span.clone())
    .await;
    let outcome = match &result {
        Ok(Accepted::Hinted {
            duplicate: true, ..
        }) => "duplicate",
        Ok(Accepted::Hinted { .. }) => "hinted",
        Ok(Accepted::Ignored { .. }) => "ignored",
        Err(error) => error.outcome(),
    };
    metrics::counter!("pagestream_webhook_deliveries_total", "source" => source_label.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("pagestream_webhook_response_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(accepted) => {
            if let Accepted::Ignored { event } = &accepted {
                metrics::counter!("pagestream_webhook_ignored_total", "source" => source_label, "event" => event.clone())
                    .increment(1);
            }
            span.in_scope(|| tracing::debug!(outcome, "delivery accepted"));
            (StatusCode::ACCEPTED, Json(accepted)).into_response()
        }
        Err(error) => {
            if let WebhookError::Unauthorized(reason) = &error {
                metrics::counter!("pagestream_webhook_unauthorized_total", "source" => source_label, "reason" => reason.label())
                    .increment(1);
            }
            span.in_scope(|| match &error {
                WebhookError::Publish(cause) => {
                    tracing::error!(error = %cause, "cannot publish hint");
                }
                // Authenticated, yet unusable: worth a line.
                WebhookError::Payload(cause) => {
                    tracing::info!(outcome, reason = %cause, "delivery rejected");
                }
                // Anyone can knock: rejections before authentication are only counted.
                WebhookError::TooLarge { .. }
                | WebhookError::Unreadable
                | WebhookError::Unauthorized(_)
                | WebhookError::RateLimited { .. } => {}
            });
            error.into_response()
        }
    }
}

async fn handle(
    state: &AppState,
    key: Option<SourceKey>,
    known: Option<Arc<WebhookSource>>,
    path_secret: Option<&Secret>,
    path_event: Option<&str>,
    request: Request,
) -> Result<Accepted, WebhookError> {
    // Not even a key: nothing to look up, and the key syntax is public.
    let source = key.ok_or(AuthError::UnknownSource)?;
    state
        .limiter
        .acquire(&source)
        .map_err(|retry_after| WebhookError::RateLimited { retry_after })?;
    let method = request.method().clone();
    let uri = request.uri().clone();
    let headers = request.headers().clone();
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                WebhookError::TooLarge {
                    limit: state.settings.max_body_bytes,
                }
            } else {
                WebhookError::Unreadable
            }
        })?;
    let signed = SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        headers: &headers,
        body: &body,
    };
    let verified_against = known.as_ref().unwrap_or(&state.decoy);
    // A wrong path secret, like a bad signature, is answered as an unknown source is.
    let scheme = match path_secret {
        Some(given) => auth::verify_path_secret(
            given.expose(),
            verified_against.path_secret.as_ref().map(Secret::expose),
        ),
        None => auth::authenticate(
            &signed,
            verified_against
                .secret
                .as_ref()
                .map(|secret| secret.expose()),
            Utc::now().timestamp(),
            &JwtPolicy {
                issuer: verified_against.connect_client_key.as_deref(),
                leeway_secs: state.settings.jwt_leeway_secs,
                max_lifetime_secs: state.settings.jwt_max_lifetime_secs,
            },
        ),
    };
    if known.is_none() {
        return Err(AuthError::UnknownSource.into());
    }
    let scheme = scheme?;
    let delivery = payload::decode(&body, path_event)?;
    tracing::Span::current().record("event", delivery.event.as_str());
    let (EventAction::Hint(reason), Some(page)) = (delivery.action, delivery.page) else {
        return Ok(Accepted::Ignored {
            event: delivery.event,
        });
    };
    let envelope = Envelope::new(PageHinted {
        source,
        page_id: page.id,
        content_type: page.content_type,
        reason,
        version: page.version,
        space_key: page.space_key,
        webhook_event: Some(delivery.event),
        received_at: Utc::now(),
    });
    let published = state
        .bus
        .publish(&envelope)
        .await
        .map_err(WebhookError::Publish)?;
    tracing::debug!(
        scheme = scheme.as_str(),
        page = %envelope.data.page_id,
        version = envelope.data.version,
        duplicate = published.duplicate,
        "hint queued"
    );
    Ok(Accepted::Hinted {
        event_id: envelope.id,
        duplicate: published.duplicate,
    })
}
