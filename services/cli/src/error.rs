//! What can go wrong, each with what to do next.

use pagestream_bus::BusError;
use pagestream_indexer::IndexerError;
use pagestream_sources::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot reach the api at {url}: {reason}\n  is pagestream-api running? point --api-url (PAGESTREAM_API_URL) at it"
    )]
    ApiUnreachable { url: String, reason: String },
    #[error(
        "no api key\n  set PAGESTREAM_API_KEY (or pass --api-key) to the key the api was started with"
    )]
    MissingApiKey,
    #[error("{message}\n  {hint}")]
    Api {
        status: u16,
        code: String,
        message: String,
        hint: String,
    },
    #[error("unexpected answer from the api ({context}): {reason}")]
    Protocol {
        context: &'static str,
        reason: String,
    },
    #[error(
        "cannot reach nats at {url}: {reason}\n  is nats-server running? point --nats-url (PAGESTREAM_NATS_URL) at it"
    )]
    NatsUnreachable { url: String, reason: String },
    #[error(
        "cannot open the database: {reason}\n  point --database-url (DATABASE_URL) at a Postgres with pgvector"
    )]
    DatabaseUnreachable { reason: String },
    #[error(
        "the database already holds {pages} pages\n  replay into an empty database (create one and point DATABASE_URL at it), or pass --allow-existing to converge this one"
    )]
    DatabaseNotEmpty { pages: i64 },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Indexer(#[from] IndexerError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Mcp(#[from] pagestream_mcp::ServeError),
    #[error(
        "sync run {run} failed: {reason}\n  see `pagestream status {source_key}` and the fetcher's log"
    )]
    SyncFailed {
        run: uuid::Uuid,
        source_key: String,
        reason: String,
    },
    #[error(
        "sync run {run} had not finished after {seconds} s\n  it goes on in the background: follow it with `pagestream status {source_key}`"
    )]
    WaitTimedOut {
        run: uuid::Uuid,
        source_key: String,
        seconds: u64,
    },
    #[error(
        "webhooks of {source_key} need attention\n  run `pagestream sources webhooks {source_key} register` (it creates what is missing and replaces stale ones)"
    )]
    WebhooksUnhealthy { source_key: String },
    #[error(
        "the source {source_key} was added, but its webhooks were not registered: {reason}\n  fix that, then run `pagestream sources webhooks {source_key} register`"
    )]
    WebhooksNotRegistered { source_key: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// What to do about an api error code (codes are the api's stable error table).
pub(crate) fn hint_for(code: &str) -> &'static str {
    match code {
        "missing_api_key" | "invalid_api_key" => {
            "set PAGESTREAM_API_KEY (or pass --api-key) to the key the api was started with"
        }
        "source_not_found" => "list the sources with `pagestream sources list`",
        "source_already_exists" => {
            "choose another key, or remove the old source with `pagestream sources rm <key>`"
        }
        "confluence_credentials_rejected" => {
            "check the e-mail and API token (Cloud) or the personal access token (Data Center)"
        }
        "confluence_webhooks_refused" => {
            "use a token of a site admin (Cloud) or an administrator (Data Center), or register the webhooks by hand (services/webhook/README.md)"
        }
        "confluence_space_not_found" => {
            "check the space key, and that the token's user can see that space"
        }
        "confluence_unavailable" => {
            "check the site URL and that Confluence answers; then try again"
        }
        "page_not_found" => "list the pages with `pagestream pages <source>`",
        "sync_run_not_found" => "start one with `pagestream sync <source>`",
        "invalid_parameter" | "malformed_body" => "see `pagestream help` for the accepted values",
        "dependency_unavailable" => {
            "the api cannot reach Postgres or NATS: check its log and the stack (ops/dev-up)"
        }
        _ => "see the api's log for details",
    }
}
