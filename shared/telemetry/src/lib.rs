//! What every Pagestream service shares at run time: logging and tracing (human or JSON logs,
//! OpenTelemetry OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set), Prometheus metrics, the
//! `/healthz`, `/readyz` and `/metrics` endpoints, and the supervisor that runs a service's tasks.

pub mod supervisor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use supervisor::{Supervisor, SupervisorError};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter: {0}")]
    Filter(String),
    #[error("cannot set up otlp export: {0}")]
    Otlp(String),
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(String),
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
    #[error("cannot serve {addr}: {reason}")]
    Serve { addr: SocketAddr, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" | "text" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected human or json)"
            )),
        }
    }
}

/// Installed telemetry; flush it with [`Telemetry::shutdown`] before exiting.
pub struct Telemetry {
    pub metrics: PrometheusHandle,
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("otlp shutdown: {error}");
        }
    }
}

/// Installs the global subscriber (filter from `RUST_LOG`, default `info`) and metrics recorder.
pub fn init(service: &'static str, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new("info"))
        .map_err(|error| TelemetryError::Filter(error.to_string()))?;
    let tracer_provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|error| TelemetryError::Otlp(error.to_string()))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(service).build())
                    .build(),
            )
        }
        _ => None,
    };
    let otel_layer = tracer_provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    let (human, json) = match format {
        LogFormat::Human => (
            Some(tracing_subscriber::fmt::layer().with_target(false)),
            None,
        ),
        LogFormat::Json => (None, Some(tracing_subscriber::fmt::layer().json())),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(human)
        .with(json)
        .try_init()
        .map_err(|error| TelemetryError::Subscriber(error.to_string()))?;
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|error| TelemetryError::Metrics(error.to_string()))?;
    Ok(Telemetry {
        metrics,
        tracer_provider,
    })
}

/// Whether the service is ready for work (dependencies connected, start-up done).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `/healthz` (the process answers), `/readyz` (503 until ready) and `/metrics` (Prometheus text).
pub fn ops_router(metrics: Option<PrometheusHandle>, readiness: Readiness) -> Router {
    health_router(readiness).merge(
        Router::new()
            .route(
                "/metrics",
                get(
                    |State(metrics): State<Option<PrometheusHandle>>| async move {
                        metrics
                            .as_ref()
                            .map(PrometheusHandle::render)
                            .unwrap_or_default()
                    },
                ),
            )
            .with_state(metrics),
    )
}

/// `/healthz` and `/readyz` alone: what a public listener may answer (metrics stay on the ops
/// listener).
pub fn health_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(readiness): State<Readiness>| async move {
                if readiness.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(readiness)
}

/// Serves `router` on `addr` until `cancel` fires.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    cancel: CancellationToken,
) -> Result<(), TelemetryError> {
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| TelemetryError::Serve {
                addr,
                reason: error.to_string(),
            })?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .map_err(|error| TelemetryError::Serve {
            addr,
            reason: error.to_string(),
        })
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` as one of the supervisor's tasks; returns
/// the readiness to set once the service is up.
pub fn spawn_ops_server(
    supervisor: &Supervisor,
    addr: SocketAddr,
    telemetry: &Telemetry,
) -> Readiness {
    let readiness = Readiness::default();
    supervisor.spawn(
        "ops-http",
        serve(
            addr,
            ops_router(Some(telemetry.metrics.clone()), readiness.clone()),
            supervisor.token(),
        ),
    );
    readiness
}
