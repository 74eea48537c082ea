//! Webhooks registered through the REST API: Cloud's site-admin resource
//! (`/rest/webhooks/1.0/webhook`; deliveries unsigned) and Data Center's (`/rest/api/webhooks`;
//! deliveries signed with the registration's secret). Both need an administrator's credentials.
//!
//! Creating and deleting are sent once, never retried: a registration retried after a timeout
//! could exist twice. Callers list what is there and reconcile instead.

use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::transport::Change;
use crate::{ConfluenceClient, ConfluenceError, Secret};

/// Which registration resource a site has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookApi {
    /// Cloud's site-admin webhooks, `/wiki/rest/webhooks/1.0/webhook` (unsigned deliveries).
    Cloud,
    /// Data Center's `/rest/api/webhooks` (deliveries signed `X-Hub-Signature`, naming their event).
    DataCenter,
}

impl WebhookApi {
    fn segments(self) -> &'static [&'static str] {
        match self {
            Self::Cloud => &["rest", "webhooks", "1.0", "webhook"],
            Self::DataCenter => &["rest", "api", "webhooks"],
        }
    }
}

/// A registered webhook as the site lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Cloud names it only in its `self` link; Data Center gives an `id`.
    pub id: String,
    pub name: String,
    /// Where deliveries go: may hold a secret of whoever registered it; never log it.
    pub url: String,
    pub events: Vec<String>,
    /// Cloud's `enabled`, Data Center's `active`.
    pub active: bool,
}

/// A webhook to register.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub name: String,
    /// Where deliveries go. Kept out of errors (it may carry a secret in its path).
    pub url: Secret,
    pub events: Vec<String>,
    /// Data Center's signing secret (write-only: the site never shows it again).
    pub secret: Option<Secret>,
}

#[derive(Deserialize)]
struct RawWebhook {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default, rename = "self")]
    self_link: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    active: Option<bool>,
}

impl RawWebhook {
    fn into_webhook(self) -> Option<Webhook> {
        let id = match self.id {
            Some(Value::String(id)) => id,
            Some(Value::Number(id)) => id.to_string(),
            _ => self
                .self_link
                .as_deref()
                .and_then(|link| link.trim_end_matches('/').rsplit('/').next())
                .map(str::to_owned)?,
        };
        if id.is_empty() {
            return None;
        }
        Some(Webhook {
            id,
            name: self.name.unwrap_or_default(),
            url: self.url.unwrap_or_default(),
            events: self.events,
            // Both sites create webhooks enabled unless told otherwise.
            active: self.active.or(self.enabled).unwrap_or(true),
        })
    }
}

/// Cloud answers a bare array; Data Center a page of `results` (`values` on some versions).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawListing {
    Bare(Vec<RawWebhook>),
    Paged {
        #[serde(default, alias = "values")]
        results: Vec<RawWebhook>,
        #[serde(default, rename = "isLastPage")]
        last_page: Option<bool>,
        #[serde(default)]
        size: Option<usize>,
    },
}

/// Webhooks one listing request asks for; Data Center pages by `start` and `limit`.
const PAGE: usize = 100;
/// Listing pages followed at most (10,000 webhooks).
const MAX_PAGES: usize = 100;

impl ConfluenceClient {
    /// Every webhook registered on the site (retried GETs; Data Center followed page by page).
    pub async fn webhooks(&self, api: WebhookApi) -> Result<Vec<Webhook>, ConfluenceError> {
        let mut webhooks = Vec::new();
        for page in 0..MAX_PAGES {
            let mut url = self.endpoint(api.segments());
            if api == WebhookApi::DataCenter {
                url.query_pairs_mut()
                    .append_pair("start", &(page * PAGE).to_string())
                    .append_pair("limit", &PAGE.to_string());
            }
            let listing: RawListing = self.get_json(&url).await?;
            let (raw, more) = match listing {
                RawListing::Bare(raw) => (raw, false),
                RawListing::Paged {
                    results,
                    last_page,
                    size,
                } => {
                    let full = size.unwrap_or(results.len()) >= PAGE;
                    let more = last_page.map_or(full, |last| !last) && !results.is_empty();
                    (results, more)
                }
            };
            webhooks.extend(raw.into_iter().filter_map(RawWebhook::into_webhook));
            if !more {
                return Ok(webhooks);
            }
        }
        Err(ConfluenceError::InvalidResponse {
            endpoint: format!("GET {}", self.endpoint(api.segments()).path()),
            reason: "webhook listing does not end".into(),
        })
    }

    /// Registers a webhook (one `POST`, never retried) and returns it as the site answered.
    pub async fn create_webhook(
        &self,
        api: WebhookApi,
        webhook: &NewWebhook,
    ) -> Result<Webhook, ConfluenceError> {
        let url = self.endpoint(api.segments());
        let mut body = json!({
            "name": webhook.name,
            "url": webhook.url.expose(),
            "events": webhook.events,
        });
        match api {
            WebhookApi::Cloud => {
                body["enabled"] = json!(true);
                body["excludeBody"] = json!(false);
            }
            WebhookApi::DataCenter => {
                body["active"] = json!(true);
                if let Some(secret) = &webhook.secret {
                    body["configuration"] = json!({"secret": secret.expose()});
                }
            }
        }
        let secrets: Vec<&str> = std::iter::once(webhook.url.expose())
            .chain(webhook.secret.as_ref().map(Secret::expose))
            .collect();
        let change = Change {
            method: Method::POST,
            body: Some(body.to_string().into_bytes()),
            secrets: &secrets,
        };
        let fetched = self.send_once(&url, &change).await?;
        let created: RawWebhook = self.decode_as(&change, &url, &fetched.body)?;
        created
            .into_webhook()
            .ok_or_else(|| ConfluenceError::InvalidResponse {
                endpoint: format!("POST {}", url.path()),
                reason: "the created webhook has no id".into(),
            })
    }

    /// Deletes a webhook (one `DELETE`, never retried). A webhook already gone is `NotFound`.
    pub async fn delete_webhook(&self, api: WebhookApi, id: &str) -> Result<(), ConfluenceError> {
        let mut url: Url = self.endpoint(api.segments());
        if let Ok(mut path) = url.path_segments_mut() {
            path.push(id);
        }
        let change = Change {
            method: Method::DELETE,
            body: None,
            secrets: &[],
        };
        self.send_once(&url, &change).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(body: &str) -> Vec<Webhook> {
        match serde_json::from_str::<RawListing>(body).expect("listing") {
            RawListing::Bare(raw) | RawListing::Paged { results: raw, .. } => raw
                .into_iter()
                .filter_map(RawWebhook::into_webhook)
                .collect(),
        }
    }

    #[test]
    fn cloud_and_data_center_listings_decode() {
        let cloud = listed(
            r#"[{"self":"https://x.atlassian.net/wiki/rest/webhooks/1.0/webhook/12","name":"a",
                "url":"https://h/w","events":["page_created"],"enabled":false,"filters":{}}]"#,
        );
        assert_eq!(cloud.len(), 1);
        assert_eq!(cloud[0].id, "12");
        assert!(!cloud[0].active);
        let dc = listed(
            r#"{"results":[{"id":7,"name":"b","url":"https://h/w","events":["page_updated"],
                "active":true},{"name":"no id"}],"start":0,"limit":100,"size":2}"#,
        );
        assert_eq!(dc.len(), 1, "a webhook without an id cannot be managed");
        assert_eq!(dc[0].id, "7");
        assert!(dc[0].active);
        let values = listed(r#"{"values":[{"id":"9","url":"u"}],"isLastPage":true}"#);
        assert_eq!(values[0].id, "9");
    }
}
