//! The shell every Pagestream service runs in: the settings they share ([`CommonArgs`],
//! [`DatabaseArgs`]), the supervisor that runs a service's tasks, its ops listener (`/healthz`,
//! `/readyz`, `/metrics`) and the start-up and shutdown order ([`main`], [`run`]).
//!
//! A service is a [`Service`]: its `Config` (clap, with `CommonArgs` flattened in) and a `start`
//! that connects and spawns its tasks. Its binary's `main` is one call to [`main`].

pub mod supervisor;

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use pagestream_bus::{Bus, BusConfig, BusError};
use pagestream_telemetry::{LogFormat, TelemetryError};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

pub use supervisor::{Supervisor, SupervisorError};

/// Settings of every service that speaks to NATS.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// NATS server with JetStream (its URL may hold a password: never shown in `--help`).
    #[arg(long, env = "PAGESTREAM_NATS_URL", hide_env_values = true)]
    pub nats_url: SecretString,
    /// Subject root and stream-name prefix (`pagestream` in production).
    #[arg(long, env = "PAGESTREAM_SUBJECT_ROOT", default_value = "pagestream")]
    pub subject_root: String,
    /// Copies of each stream and bucket in a JetStream cluster (3 for a 3-node cluster). Unset:
    /// new ones get one and existing ones keep theirs.
    #[arg(long, env = "PAGESTREAM_NATS_REPLICAS", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: Option<u8>,
    /// Log format: human or json.
    #[arg(long, env = "PAGESTREAM_LOG_FORMAT", default_value = "human")]
    pub log_format: LogFormat,
}

impl CommonArgs {
    /// Connects to NATS under the configured subject root.
    pub async fn connect_bus(&self) -> Result<Bus, BusError> {
        Bus::connect(
            BusConfig::new(self.nats_url.expose_secret())
                .with_root(self.subject_root.clone())
                .with_replicas(self.nats_replicas.map(usize::from)),
        )
        .await
    }
}

/// Settings of the services that read or write the projection.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Postgres with pgvector, holding the projection.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: SecretString,
}

/// One Pagestream service: its configuration and how it starts.
pub trait Service: clap::Parser + Send + 'static {
    /// The process's name in logs and traces (`pagestream-<service>`).
    const NAME: &'static str;
    /// How long a shutdown waits for the service's tasks.
    const SHUTDOWN_BOUND: Duration = Duration::from_secs(30);
    /// What `start` fails with.
    type Error: Error + Send + Sync + 'static;

    fn common(&self) -> &CommonArgs;

    /// Address of `/healthz`, `/readyz` and `/metrics` (`PAGESTREAM_<SERVICE>_OPS_LISTEN`,
    /// loopback by default: keep it off public ingress).
    fn ops_listen(&self) -> SocketAddr;

    /// Connects to what the service needs and spawns its tasks on `shell`'s supervisor; returns
    /// once they run (the service is then reported ready).
    fn start(self, shell: &Shell) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error("{service} did not start: {reason}")]
    Start {
        service: &'static str,
        reason: Box<dyn Error + Send + Sync>,
    },
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
}

/// What a starting service spawns its tasks on, and the readiness it shares with its listeners.
#[derive(Clone, Default)]
pub struct Shell {
    supervisor: Supervisor,
    readiness: Readiness,
}

impl Shell {
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The token every task watches; cancelled on shutdown or when a task fails.
    pub fn token(&self) -> CancellationToken {
        self.supervisor.token()
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }
}

/// A service as its process's `main`: parses its configuration, installs telemetry, then
/// [`run`]s it.
pub async fn main<S: Service>() -> Result<(), ShellError> {
    let config = S::parse();
    let telemetry = pagestream_telemetry::init(S::NAME, config.common().log_format)?;
    let result = run(config, Some(telemetry.metrics.clone())).await;
    if let Err(error) = &result {
        tracing::error!(service = S::NAME, %error, "stopped");
    }
    telemetry.shutdown();
    result
}

/// Runs a service until a signal or a task failure: its ops listener, then `start`, then ready.
/// Tests run several services in one process this way (without their own telemetry).
pub async fn run<S: Service>(
    config: S,
    metrics: Option<PrometheusHandle>,
) -> Result<(), ShellError> {
    let shell = Shell::default();
    let ops_listen = config.ops_listen();
    shell.supervisor.spawn(
        "ops",
        serve(
            ops_listen,
            ops_router(metrics, shell.readiness.clone()),
            shell.token(),
        ),
    );
    if let Err(error) = config.start(&shell).await {
        shell.token().cancel();
        // Whatever started stops; the start's error is the one to report.
        let _ = shell.supervisor.run(S::SHUTDOWN_BOUND).await;
        return Err(ShellError::Start {
            service: S::NAME,
            reason: Box::new(error),
        });
    }
    shell.readiness.set(true);
    tracing::info!(service = S::NAME, %ops_listen, "ready");
    shell.supervisor.run(S::SHUTDOWN_BOUND).await?;
    Ok(())
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

#[derive(Debug, thiserror::Error)]
#[error("cannot serve {addr}: {reason}")]
pub struct ServeError {
    addr: SocketAddr,
    reason: String,
}

/// Serves `router` on `addr` until `cancel` fires.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    let failed = |error: std::io::Error| ServeError {
        addr,
        reason: error.to_string(),
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .map_err(failed)
}
