//! `pagestream`: the command line of Pagestream. Source, sync, page and search commands talk to
//! the api (`PAGESTREAM_API_URL`, `PAGESTREAM_API_KEY`); stream operations (`replay`, `dlq`) talk
//! to NATS (`PAGESTREAM_NATS_URL`), and `replay` writes to Postgres (`DATABASE_URL`).
//!
//! Results go to the given writer (stdout in the binary); progress bars go to stderr and are drawn
//! only on a terminal.

mod api;
mod commands;
mod dlq;
pub mod error;
mod replay;
mod sync;
mod table;
mod webhooks;

use std::io::Write;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pagestream_bus::{Bus, BusConfig};
use secrecy::{ExposeSecret, SecretString};

pub use api::ApiClient;
pub use error::CliError;

#[derive(Debug, Parser)]
#[command(
    name = "pagestream",
    version,
    about = "Pagestream: Confluence, searchable, in step."
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the api, NATS and Postgres are.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Base URL of pagestream-api.
    #[arg(
        long,
        env = "PAGESTREAM_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api_url: String,
    /// The api key (sent as `Authorization: Bearer`).
    #[arg(
        long,
        env = "PAGESTREAM_API_KEY",
        hide_env_values = true,
        global = true
    )]
    pub api_key: Option<SecretString>,
    /// NATS server with JetStream (replay, dlq).
    #[arg(
        long,
        env = "PAGESTREAM_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: SecretString,
    /// Subject root and stream-name prefix.
    #[arg(
        long,
        env = "PAGESTREAM_SUBJECT_ROOT",
        default_value = "pagestream",
        global = true
    )]
    pub subject_root: String,
    /// Postgres with pgvector (replay writes here).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<SecretString>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, list or remove Confluence sources.
    #[command(subcommand)]
    Sources(SourcesCommand),
    /// Start a sync of a source; with --wait, follow it to the end.
    Sync(SyncArgs),
    /// The current or last sync run of every source (or of one).
    Status {
        /// Source key or id (default: every source).
        source: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Hybrid search (vector + full text).
    Search(SearchArgs),
    /// List a source's pages, or show one page's Markdown.
    Pages(PagesArgs),
    /// Rebuild the database from the streams, or re-embed everything with the embedders' model.
    Replay(ReplayArgs),
    /// Events a stage gave up on.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Serve the knowledge base to an AI assistant over MCP on stdin/stdout (the assistant
    /// spawns this; it talks to the api).
    Mcp,
}

#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Add a space; the token is checked against Confluence, then stored sealed.
    Add(AddSourceArgs),
    /// Every source with its page and chunk counts and last sync.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a source's spaces: the next sync syncs a space added and removes the pages of a
    /// space taken off.
    Update {
        /// Source key or id.
        source: String,
        #[command(flatten)]
        spaces: SpacesArgs,
    },
    /// Set a new secret in the URL that Cloud's unsigned site-admin webhooks deliver to, and
    /// print the URL (once): the old URL stops working.
    WebhookUrl {
        /// Source key or id.
        source: String,
        /// The ingester's public root, e.g. https://hooks.example.com.
        #[arg(long, env = "PAGESTREAM_WEBHOOK_PUBLIC_URL")]
        public_url: String,
    },
    /// The source's webhooks on its Confluence site (the token's user must be a site admin on
    /// Cloud, an administrator on Data Center): list them, check that every event the ingester
    /// understands is delivered, register what is missing (idempotent), or remove them (only
    /// those pointing at this source).
    Webhooks {
        /// Source key or id.
        source: String,
        #[arg(value_enum)]
        action: WebhooksAction,
        /// The ingester's public root, e.g. https://hooks.example.com (default: the api's).
        #[arg(long, env = "PAGESTREAM_WEBHOOK_PUBLIC_URL")]
        public_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a source and everything derived from it (pages, chunks, stream data).
    Rm {
        /// Source key or id.
        source: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WebhooksAction {
    /// The webhooks pointing at this source.
    List,
    /// Per event: delivered by an active webhook at the right URL? Fails when not all are.
    Check,
    /// Create what is missing, replace stale webhooks.
    Register,
    /// Delete the webhooks pointing at this source.
    Remove,
}

/// Which spaces a source covers.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SpacesArgs {
    /// A Confluence space key; repeat it (or separate keys by commas) for several.
    #[arg(long, value_delimiter = ',')]
    pub space: Vec<String>,
    /// Every space the credentials can read: one created later is synced by the next sync.
    #[arg(long)]
    pub all_spaces: bool,
}

impl SpacesArgs {
    /// The `spaces` of the api's source body.
    pub fn to_json(&self) -> serde_json::Value {
        if self.all_spaces {
            serde_json::json!("all")
        } else {
            serde_json::json!(self.space)
        }
    }
}

#[derive(Debug, Args)]
pub struct AddSourceArgs {
    /// The wiki root, e.g. https://example.atlassian.net/wiki.
    #[arg(long)]
    pub site_url: String,
    #[command(flatten)]
    pub spaces: SpacesArgs,
    /// Source key (default: the (first) space key, lowercased; required with --all-spaces).
    #[arg(long)]
    pub key: Option<String>,
    /// Confluence Cloud: the account's e-mail (with --api-token).
    #[arg(long, requires = "api_token")]
    pub email: Option<String>,
    /// Confluence Cloud: an API token.
    #[arg(
        long,
        env = "CONFLUENCE_API_TOKEN",
        hide_env_values = true,
        requires = "email",
        conflicts_with = "personal_token"
    )]
    pub api_token: Option<SecretString>,
    /// Confluence Data Center: a personal access token.
    #[arg(long, env = "CONFLUENCE_PERSONAL_TOKEN", hide_env_values = true)]
    pub personal_token: Option<SecretString>,
    /// Shared secret of this space's webhook deliveries (at least 24 characters).
    #[arg(long, env = "CONFLUENCE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<SecretString>,
    /// The Connect app's `clientKey` (from its installation): the issuer its JWTs must name.
    #[arg(long)]
    pub connect_client_key: Option<String>,
    /// Seconds between scheduled incremental syncs (0: off; the api's default is 900).
    #[arg(long)]
    pub incremental_interval_secs: Option<u64>,
    /// Register the source's webhooks on the site (as `sources webhooks <key> register`).
    #[arg(long)]
    pub register_webhooks: bool,
    /// With --register-webhooks: the ingester's public root (default: the api's).
    #[arg(long, env = "PAGESTREAM_WEBHOOK_PUBLIC_URL")]
    pub public_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Source key or id.
    pub source: String,
    /// Fetch every page, not only what changed since the last sync.
    #[arg(long)]
    pub full: bool,
    /// Follow the run with a progress bar per stage until every page is indexed.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this many seconds (the run goes on).
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    pub query: String,
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    /// Source key or id.
    #[arg(long)]
    pub source: Option<String>,
    #[arg(long)]
    pub space: Option<String>,
    #[arg(long)]
    pub label: Option<String>,
    /// Subtree: a page path such as /65601/65602.
    #[arg(long)]
    pub path: Option<String>,
    /// Pages that link this Jira issue key.
    #[arg(long)]
    pub jira: Option<String>,
    /// Pages that mention this user (account id).
    #[arg(long)]
    pub mention: Option<String>,
    /// RFC 3339 timestamp or date.
    #[arg(long)]
    pub updated_after: Option<String>,
    /// Only pages (`page`) or only blog posts (`blogpost`).
    #[arg(long, value_parser = ["page", "blogpost"])]
    pub content_type: Option<String>,
    /// The api's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PagesArgs {
    /// Source key or id.
    pub source: String,
    /// A page id: show its Markdown instead of listing.
    pub page: Option<String>,
    /// Subtree: a page path such as /65601/65602.
    #[arg(long)]
    pub path: Option<String>,
    #[arg(long)]
    pub label: Option<String>,
    /// RFC 3339 timestamp or date.
    #[arg(long)]
    pub updated_after: Option<String>,
    /// Pages per request (1 to 500).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Continue after this cursor (printed under a listing).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Every page, following cursors.
    #[arg(long, conflicts_with = "cursor")]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Events applied per transaction (64 measured fastest: ops/bench/replay).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Replay into a database that already holds pages (the projection converges; nothing is
    /// deleted first).
    #[arg(long)]
    pub allow_existing: bool,
    /// Instead of rebuilding the database: make the embedders re-embed every converted page from
    /// the stream, with the model they are configured with now.
    #[arg(long, conflicts_with = "allow_existing")]
    pub reembed: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The dead letters, oldest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters' events again on their subjects, and remove the letters.
    Retry {
        /// Dead-letter sequence numbers (from `dlq list`).
        sequences: Vec<u64>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "sequences")]
        all: bool,
    },
}

impl Connection {
    pub fn api(&self) -> ApiClient {
        ApiClient::new(
            &self.api_url,
            self.api_key.as_ref().map(ExposeSecret::expose_secret),
        )
    }

    pub async fn bus(&self) -> Result<Bus, CliError> {
        Bus::connect(BusConfig::new(self.nats_url.expose_secret()).with_root(&self.subject_root))
            .await
            .map_err(|error| match error {
                pagestream_bus::BusError::Connect { url, reason } => {
                    CliError::NatsUnreachable { url, reason }
                }
                other => CliError::Bus(other),
            })
    }
}

/// Runs one command, writing its results to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let connection = &cli.connection;
    match cli.command {
        Command::Sources(SourcesCommand::Add(args)) => {
            commands::add_source(&connection.api(), &args, out).await
        }
        Command::Sources(SourcesCommand::List { json }) => {
            commands::list_sources(&connection.api(), json, out).await
        }
        Command::Sources(SourcesCommand::Update { source, spaces }) => {
            commands::update_source(&connection.api(), &source, &spaces, out).await
        }
        Command::Sources(SourcesCommand::WebhookUrl { source, public_url }) => {
            commands::rotate_webhook_url(&connection.api(), &source, &public_url, out).await
        }
        Command::Sources(SourcesCommand::Webhooks {
            source,
            action,
            public_url,
            json,
        }) => {
            webhooks::run(
                &connection.api(),
                &source,
                action,
                public_url.as_deref(),
                json,
                out,
            )
            .await
        }
        Command::Sources(SourcesCommand::Rm { source }) => {
            commands::remove_source(&connection.api(), &source, out).await
        }
        Command::Sync(args) => sync::sync(&connection.api(), &args, out).await,
        Command::Status { source, json } => {
            commands::status(&connection.api(), source.as_deref(), json, out).await
        }
        Command::Search(args) => commands::search(&connection.api(), &args, out).await,
        Command::Pages(args) => commands::pages(&connection.api(), &args, out).await,
        Command::Replay(args) => replay::run(connection, &args, out).await,
        Command::Dlq(DlqCommand::List { limit, json }) => {
            dlq::list(&connection.bus().await?, limit, json, out).await
        }
        Command::Dlq(DlqCommand::Retry { sequences, all }) => {
            dlq::retry(&connection.bus().await?, &sequences, all, out).await
        }
        // Without a key the server still starts: every tool then says how to set one.
        Command::Mcp => Ok(pagestream_mcp::serve_stdio(std::sync::Arc::new(
            pagestream_mcp::HttpBackend::new(
                &connection.api_url,
                connection
                    .api_key
                    .as_ref()
                    .map(ExposeSecret::expose_secret)
                    .unwrap_or_default(),
            ),
        ))
        .await?),
    }
}
