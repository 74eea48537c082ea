use anyhow::Context;
use clap::Parser;
use pagestream_telemetry::Readiness;
use pagestream_webhook::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = pagestream_telemetry::init("pagestream-webhook", config.log_format)?;
    let readiness = Readiness::default();
    let ops = pagestream_telemetry::ops_router(Some(telemetry.metrics.clone()), readiness.clone());
    let result = pagestream_webhook::run(config, ops, readiness)
        .await
        .context("webhook ingester stopped");
    telemetry.shutdown();
    result
}
