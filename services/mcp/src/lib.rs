//! Pagestream's knowledge base as a Model Context Protocol server, for coding assistants.
//!
//! The tools (search, search_code, get_page, page_tree, related, sources) and the page resources
//! (`confluence://<source>/<page id>`) are written once over a [`Backend`], the api's `/api`
//! routes. Two transports serve them:
//! - stdio, for assistants that spawn a process: `pagestream mcp` ([`serve_stdio`]), which
//!   reaches the api over HTTP with `PAGESTREAM_API_URL` / `PAGESTREAM_API_KEY`;
//! - streamable HTTP at the api's `/mcp` ([`http_service`]), behind the api key like every
//!   `/api` route, answering from the api's routes in process.

pub mod api;
pub mod backend;
pub mod markdown;
mod server;

use std::sync::Arc;

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

pub use api::Api;
pub use backend::{Backend, BackendError, HttpBackend, RouterBackend};
pub use server::{PagestreamMcp, RESOURCE_SCHEME};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the mcp session did not start: {0}")]
    Start(String),
    #[error("the mcp session ended abnormally: {0}")]
    Run(String),
}

/// Serves MCP on stdin/stdout until the client closes them.
pub async fn serve_stdio(backend: Arc<dyn Backend>) -> Result<(), ServeError> {
    let running = PagestreamMcp::new(Api::new(backend))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|error| ServeError::Start(error.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|error| ServeError::Run(error.to_string()))?;
    Ok(())
}

/// The streamable HTTP endpoint, to mount (e.g. at `/mcp`) behind the api key. Stateless, with
/// plain JSON answers: any api replica can answer any request, and nothing outlives one.
pub fn http_service(
    backend: Arc<dyn Backend>,
) -> StreamableHttpService<PagestreamMcp, LocalSessionManager> {
    let api = Api::new(backend);
    // The Host check guards keyless servers on loopback against DNS rebinding; this endpoint is
    // behind the api key, and the api is deployed under names of its operators' choosing.
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(PagestreamMcp::new(api.clone())),
        Arc::default(),
        config,
    )
}
