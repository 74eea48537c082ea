//! The converter stage: consumes `page.changed`, emits `page.converted`. Conversion runs on the
//! blocking pool; a page that cannot be converted is a permanent failure (dead-lettered) and never
//! stops the others.

use std::sync::Arc;

use pagestream_bus::consumer::Handler;
use pagestream_bus::{Bus, BusError, Delivery, HandlerError, Stage, StageConfig};
use pagestream_events::{Envelope, PageChanged};
use tokio_util::sync::CancellationToken;

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
        self.bus.publish(&event).await?;
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
            ..StageConfig::new(STAGE_NAME)
        },
    );
    stage.run(Arc::new(ConverterHandler { bus }), cancel).await
}
