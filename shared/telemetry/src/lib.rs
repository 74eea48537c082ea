//! What every Pagestream service shares for observability: logging and tracing (human or JSON
//! logs, OpenTelemetry OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set) and the Prometheus
//! metrics recorder (served by the service shell's ops listener).

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
