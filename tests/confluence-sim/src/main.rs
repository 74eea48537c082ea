//! `confluence-sim`: serves a generated Confluence Cloud space for tests, benchmarks and the demo.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use clap::Parser;

/// A Confluence Cloud simulator (v1 CQL search, v2 pages and spaces, faults, webhooks).
#[derive(Debug, Parser)]
#[command(name = "confluence-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CONFLUENCE_SIM_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "CONFLUENCE_SIM_PORT", default_value_t = 8090)]
    port: u16,
    /// Seed of the generated space.
    #[arg(long, env = "CONFLUENCE_SIM_SEED", default_value_t = 42)]
    seed: u64,
    /// Number of pages to generate.
    #[arg(long, env = "CONFLUENCE_SIM_PAGES", default_value_t = 500)]
    pages: usize,
    /// Pages with bodies over 1 MB (default: one per 500 pages, at least one).
    #[arg(long, env = "CONFLUENCE_SIM_LARGE_PAGES")]
    large_pages: Option<usize>,
    /// Space key.
    #[arg(long, env = "CONFLUENCE_SIM_SPACE_KEY", default_value = "ENG")]
    space_key: String,
    /// E-mail of the Basic-auth user.
    #[arg(long, env = "CONFLUENCE_SIM_EMAIL", default_value = "sim@example.com")]
    email: String,
    /// API token of the Basic-auth user.
    #[arg(
        long,
        env = "CONFLUENCE_SIM_API_TOKEN",
        default_value = "sim-api-token",
        hide_env_values = true
    )]
    api_token: String,
    /// Also accept this personal access token as `Bearer` (Data Center style).
    #[arg(long, env = "CONFLUENCE_SIM_PAT", hide_env_values = true)]
    pat: Option<String>,
    /// Where mutations POST Cloud webhooks (`{url}/{event}`).
    #[arg(long, env = "CONFLUENCE_SIM_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// The API user's profile time zone, an IANA name (CQL dates are read in it).
    #[arg(long, env = "CONFLUENCE_SIM_TIME_ZONE", default_value = "UTC")]
    time_zone: chrono_tz::Tz,
    /// Sign webhooks with `X-Hub-Signature: sha256=…` using this secret.
    #[arg(long, env = "CONFLUENCE_SIM_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Another space of the site, holding only its homepage (repeat for more; pages move there).
    #[arg(long = "other-space", value_name = "KEY")]
    other_spaces: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut config = confluence_sim::SimConfig::new(args.seed, args.pages);
    if let Some(large) = args.large_pages {
        config.large_pages = large.min(args.pages);
    }
    config.space_key = args.space_key;
    config.email = args.email;
    config.api_token = args.api_token;
    config.personal_access_token = args.pat;
    config.webhook_target = args.webhook_url;
    config.webhook_secret = args.webhook_secret;
    config.time_zone = args.time_zone;
    // Space ids follow the generated space's, as Confluence hands them out.
    config.other_spaces = (1..)
        .zip(args.other_spaces)
        .map(|(n, key)| confluence_sim::SimSpace::new(config.space_id + n, key.clone(), key))
        .collect();
    let sim = confluence_sim::start(config, SocketAddr::new(args.bind, args.port))
        .await
        .context("starting the confluence simulator")?;
    println!(
        "confluence-sim serving {} pages at {}",
        args.pages,
        sim.base_url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    sim.shutdown().await;
    Ok(())
}
