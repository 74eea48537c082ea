//! The converter stage: consumes `page.changed`, emits `page.converted`. Conversion runs on the
//! blocking pool; a page that cannot be converted is a permanent failure (dead-lettered) and never
//! stops the others.

use std::net::SocketAddr;
use std::sync::Arc;

use pagestream_bus::consumer::Handler;
use pagestream_bus::{Bus, BusError, Delivery, HandlerError, Stage, StageConfig};
use pagestream_events::{Envelope, PageChanged};
use pagestream_service::{CommonArgs, Service, Shell};
use tokio_util::sync::CancellationToken;

/// Converts `page.changed` events into `page.converted`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pagestream-converter", version)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Batches of pages (up to four each) this replica converts at once (defaults to the number
    /// of cores).
    #[arg(long, env = "PAGESTREAM_CONVERTER_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "PAGESTREAM_CONVERTER_OPS_LISTEN",
        default_value = "127.0.0.1:9084"
    )]
    pub ops_listen: SocketAddr,
}

impl Service for Config {
    const NAME: &'static str = "pagestream-converter";
    type Error = BusError;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn ops_listen(&self) -> SocketAddr {
        self.ops_listen
    }

    async fn start(self, shell: &Shell) -> Result<(), BusError> {
        let bus = self.common.connect_bus().await?;
        let concurrency = self
            .concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
        shell
            .supervisor()
            .spawn("converter", run(bus, concurrency, shell.token()));
        Ok(())
    }
}

/// The durable consumer shared by every converter replica.
pub const STAGE_NAME: &str = "converter";

pub struct ConverterHandler {
    bus: Bus,
}

impl Handler<PageChanged> for ConverterHandler {
    async fn handle(&self, delivery: &Delivery<PageChanged>) -> Result<(), HandlerError> {
        // The body can be megabytes: hand the blocking pool its own copy.
        let changed = delivery.event.data.clone();
        let converted = tokio::task::spawn_blocking(move || crate::convert_page(&changed))
            .await
            .map_err(|error| HandlerError::transient(format!("conversion task: {error}")))?
            .map_err(HandlerError::permanent)?;
        let event = Envelope::new(converted).with_sync_run(delivery.event.extensions.syncrun);
        self.bus.publish_in(delivery.lane, &event).await?;
        tracing::debug!(page = %event.data.page.page_id, version = event.data.page.version, "converted");
        Ok(())
    }
}

/// Runs the converter stage until `cancel` fires.
pub async fn run(bus: Bus, concurrency: usize, cancel: CancellationToken) -> Result<(), BusError> {
    let stage = Stage::<PageChanged>::new(
        bus.clone(),
        StageConfig {
            concurrency: concurrency.max(1),
            // A page's conversion waits on NATS besides the CPU (its publish is on disk before it
            // is acknowledged): one page a slot left the cores idle while a first sync's pages
            // queued (ops/bench/pipeline: every page converted at 31.6 s; 22.5 s with four).
            max_batch: 4,
            live_lane: true,
            ..StageConfig::new(STAGE_NAME)
        },
    );
    stage.run(Arc::new(ConverterHandler { bus }), cancel).await
}
