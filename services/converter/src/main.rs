//! `pagestream-converter`: Confluence storage format to Markdown, as a pipeline stage.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pagestream_bus::{Bus, BusConfig};
use pagestream_telemetry::{LogFormat, Supervisor};
use secrecy::{ExposeSecret, SecretString};

/// Converts `page.changed` events into `page.converted`.
#[derive(Debug, Parser)]
#[command(name = "pagestream-converter", version)]
struct Config {
    /// NATS server with JetStream.
    #[arg(long, env = "PAGESTREAM_NATS_URL")]
    nats_url: SecretString,
    /// Subject root and stream-name prefix.
    #[arg(long, env = "PAGESTREAM_SUBJECT_ROOT", default_value = "pagestream")]
    subject_root: String,
    /// Pages converted at once by this replica (defaults to the number of cores).
    #[arg(long, env = "PAGESTREAM_CONVERTER_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "PAGESTREAM_CONVERTER_OPS_LISTEN",
        default_value = "127.0.0.1:9084"
    )]
    ops_listen: SocketAddr,
    /// human or json.
    #[arg(long, env = "PAGESTREAM_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = pagestream_telemetry::init("pagestream-converter", config.log_format)?;
    let bus = Bus::connect(
        BusConfig::new(config.nats_url.expose_secret()).with_root(&config.subject_root),
    )
    .await
    .context("connect to nats (PAGESTREAM_NATS_URL)")?;
    let concurrency = config
        .concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    let supervisor = Supervisor::new();
    let readiness =
        pagestream_telemetry::spawn_ops_server(&supervisor, config.ops_listen, &telemetry);
    supervisor.spawn(
        "converter",
        pagestream_converter::service::run(bus, concurrency, supervisor.token()),
    );
    readiness.set(true);
    let result = supervisor.run(Duration::from_secs(30)).await;
    telemetry.shutdown();
    result.map_err(Into::into)
}
