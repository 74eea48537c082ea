//! The api's client as the CLI calls it: the shared [`pagestream_views::client::ApiClient`], its
//! failures said as [`CliError`]s with what to do next.

use pagestream_views::client::{self, ClientError, Unreachable};
pub use pagestream_views::encode;
use pagestream_views::{SyncRunView, with_query};
use reqwest::Method;
use serde::de::DeserializeOwned;

use crate::error::{CliError, hint_for};

#[derive(Debug, Clone)]
pub struct ApiClient {
    client: client::ApiClient,
}

impl ApiClient {
    pub fn new(base: &str, key: Option<&str>) -> Self {
        Self {
            client: client::ApiClient::new(base, key),
        }
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        context: &'static str,
    ) -> Result<T, CliError> {
        self.call(Method::GET, path, query, None, context).await
    }

    /// One request; a non-2xx answer becomes [`CliError::Api`] with the api's code and message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
        context: &'static str,
    ) -> Result<T, CliError> {
        if !self.client.has_key() {
            return Err(CliError::MissingApiKey);
        }
        let body = self
            .client
            .send(method, &with_query(path, query), body.as_ref())
            .await
            .map_err(|error| cli_error(error, context))?;
        serde_json::from_slice(&body).map_err(|error| CliError::Protocol {
            context,
            reason: error.to_string(),
        })
    }

    /// A sync run of a source: the given one, or the current or last one.
    pub async fn run_status(
        &self,
        source: &str,
        run: Option<uuid::Uuid>,
    ) -> Result<SyncRunView, CliError> {
        let query: Vec<(&str, String)> = run
            .map(|run| ("run", run.to_string()))
            .into_iter()
            .collect();
        self.get(
            &format!("/api/confluence/{}/status", encode(source)),
            &query,
            "sync status",
        )
        .await
    }
}

fn cli_error(error: ClientError, context: &'static str) -> CliError {
    match error {
        ClientError::Unreachable {
            kind: Unreachable::CutOff,
            ..
        } => CliError::Protocol {
            context,
            reason: "the answer was cut off".to_owned(),
        },
        ClientError::Unreachable { url, kind } => CliError::ApiUnreachable {
            url,
            reason: match kind {
                Unreachable::Connect => "connection refused",
                Unreachable::Timeout => "timed out",
                Unreachable::Failed | Unreachable::CutOff => "request failed",
            }
            .to_owned(),
        },
        ClientError::Refused {
            status,
            error: Some(error),
        } => CliError::Api {
            status,
            hint: hint_for(&error.code).to_owned(),
            message: match error.field {
                Some(field) => format!("{} ({field})", error.message),
                None => error.message,
            },
            code: error.code,
        },
        ClientError::Refused {
            status,
            error: None,
        } => CliError::Api {
            status,
            code: "unknown".to_owned(),
            message: format!("the api answered {status}"),
            hint: hint_for("").to_owned(),
        },
    }
}
