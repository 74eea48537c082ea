//! Webhook ingester: Confluence webhooks in, page hints out (DESIGN §1, §5).
//!
//! Public HTTP ingress for Confluence Cloud (Connect app), Data Center and Automation deliveries.
//! Each delivery is authenticated with its source's webhook secret ([`auth`]), decoded ([`payload`])
//! and turned into a `page.hinted` command on JetStream; the answer goes out once JetStream has it.
//! Hints carry the page's version, so their ids repeat for repeated deliveries and JetStream drops the
//! duplicates. Webhooks are hints: periodic syncs remain the safety net.

pub mod auth;
pub mod http;
pub mod limit;
pub mod payload;
pub mod sources;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pagestream_bus::BusError;
use pagestream_service::{CommonArgs, Service, Shell};
use pagestream_sources::{SecretKey, SourceError, SourceRegistry};

pub use http::{HttpSettings, router};
pub use limit::RateLimiter;
pub use sources::SourceCache;

/// The ingester's configuration, from flags or `PAGESTREAM_*` variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "pagestream-webhook",
    about = "Confluence webhooks in, page hints out"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Key that opens the sources' sealed credentials (32 bytes, base64 or hex).
    #[arg(long, env = "PAGESTREAM_SECRET_KEY", hide_env_values = true)]
    pub secret_key: SecretKey,
    /// Address of the public webhook endpoint.
    #[arg(
        long,
        env = "PAGESTREAM_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8082"
    )]
    pub listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics (keep it off the public ingress).
    #[arg(
        long,
        env = "PAGESTREAM_WEBHOOK_OPS_LISTEN",
        default_value = "127.0.0.1:9082"
    )]
    pub ops_listen: SocketAddr,
    /// Largest accepted body; larger deliveries get 413.
    #[arg(long, env = "PAGESTREAM_WEBHOOK_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Deliveries per second per source key, sustained, counted before authentication; beyond it
    /// (and the burst) deliveries get 429.
    #[arg(long, env = "PAGESTREAM_WEBHOOK_RATE_PER_SEC", default_value_t = 20.0, value_parser = parse_rate)]
    pub rate_per_sec: f64,
    /// Deliveries per source accepted at once above the sustained rate.
    #[arg(long, env = "PAGESTREAM_WEBHOOK_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
    /// Clock skew tolerated on a Connect JWT's issue and expiry times, in seconds.
    #[arg(long, env = "PAGESTREAM_WEBHOOK_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u32,
    /// Longest lifetime of an accepted Connect JWT (`exp - iat`), in seconds; Confluence issues
    /// tokens for 3 minutes.
    #[arg(
        long,
        env = "PAGESTREAM_WEBHOOK_JWT_MAX_LIFETIME_SECS",
        default_value_t = 600
    )]
    pub jwt_max_lifetime_secs: u32,
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err("must be a positive number".to_owned()),
    }
}

impl Config {
    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            max_body_bytes: self.max_body_bytes,
            jwt_leeway_secs: i64::from(self.jwt_leeway_secs),
            jwt_max_lifetime_secs: i64::from(self.jwt_max_lifetime_secs),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Sources(#[from] SourceError),
}

impl Service for Config {
    const NAME: &'static str = "pagestream-webhook";
    const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);
    type Error = ServiceError;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn ops_listen(&self) -> SocketAddr {
        self.ops_listen
    }

    /// Connects, loads the sources, then serves the webhook endpoint while following the
    /// registry.
    async fn start(self, shell: &Shell) -> Result<(), ServiceError> {
        let bus = self.common.connect_bus().await?;
        let registry = SourceRegistry::open(&bus).await?;
        let sources = SourceCache::load(&registry, &self.secret_key).await?;
        let limiter = Arc::new(RateLimiter::new(self.rate_per_sec, self.burst));
        let app = router(bus, sources.clone(), limiter.clone(), self.http_settings());
        let supervisor = shell.supervisor();
        supervisor.spawn(
            "sources",
            sources.follow(
                registry,
                self.secret_key.clone(),
                shell.token(),
                move |source| limiter.forget(source),
            ),
        );
        supervisor.spawn(
            "webhooks",
            pagestream_service::serve(self.listen, app, shell.token()),
        );
        Ok(())
    }
}
