use anyhow::Context;
use clap::Parser;
use pagestream_fetcher::Config;
use pagestream_telemetry::Readiness;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = pagestream_telemetry::init("pagestream-fetcher", config.log_format)?;
    let readiness = Readiness::default();
    let ops = pagestream_telemetry::ops_router(Some(telemetry.metrics.clone()), readiness.clone());
    let result = pagestream_fetcher::run(config, ops, readiness)
        .await
        .context("fetcher stopped");
    telemetry.shutdown();
    result
}
