//! `pagestream-indexer`: projects the streams into Postgres.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pagestream_bus::{Bus, BusConfig};
use pagestream_indexer::IndexerConfig;
use pagestream_sources::SourceRegistry;
use pagestream_telemetry::{LogFormat, Supervisor};
use secrecy::{ExposeSecret, SecretString};

/// Projects Pagestream's event streams into Postgres.
#[derive(Debug, Parser)]
#[command(name = "pagestream-indexer", version)]
struct Config {
    /// NATS server with JetStream.
    #[arg(long, env = "PAGESTREAM_NATS_URL")]
    nats_url: SecretString,
    /// Postgres with pgvector.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: SecretString,
    /// Subject root and stream-name prefix.
    #[arg(long, env = "PAGESTREAM_SUBJECT_ROOT", default_value = "pagestream")]
    subject_root: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "PAGESTREAM_INDEXER_OPS_LISTEN",
        default_value = "127.0.0.1:9083"
    )]
    ops_listen: SocketAddr,
    /// Events applied per transaction.
    #[arg(long, env = "PAGESTREAM_INDEXER_BATCH_SIZE", default_value_t = 64)]
    batch_size: usize,
    /// Transactions in flight per stream.
    #[arg(long, env = "PAGESTREAM_INDEXER_CONCURRENCY", default_value_t = 2)]
    concurrency: usize,
    /// human or json.
    #[arg(long, env = "PAGESTREAM_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = pagestream_telemetry::init("pagestream-indexer", config.log_format)?;
    let pool = pagestream_store::connect(
        config.database_url.expose_secret(),
        (config.concurrency as u32 * 4 + 4).max(8),
    )
    .await
    .context("connect to postgres (DATABASE_URL)")?;
    pagestream_store::migrate(&pool)
        .await
        .context("apply migrations")?;
    let bus = Bus::connect(
        BusConfig::new(config.nats_url.expose_secret()).with_root(&config.subject_root),
    )
    .await
    .context("connect to nats (PAGESTREAM_NATS_URL)")?;
    let registry = SourceRegistry::open(&bus).await?;

    let supervisor = Supervisor::new();
    let readiness =
        pagestream_telemetry::spawn_ops_server(&supervisor, config.ops_listen, &telemetry);
    pagestream_indexer::spawn_all(
        &supervisor,
        &bus,
        registry,
        &pool,
        &IndexerConfig {
            batch_size: config.batch_size.max(1),
            concurrency: config.concurrency.max(1),
        },
    );
    readiness.set(true);
    let result = supervisor.run(Duration::from_secs(30)).await;
    telemetry.shutdown();
    result.map_err(Into::into)
}
