//! A source's webhooks on its Confluence site, managed with its stored credentials: listed and
//! checked against what the ingester needs, registered idempotently, removed.
//!
//! Cloud (site-admin webhooks, unsigned): one webhook per event at
//! `<public>/webhooks/confluence/<key>/p/<path secret>/<event>`. Data Center: one webhook for every
//! event at `<public>/webhooks/confluence/<key>`, signed with the source's webhook secret. A
//! webhook "points at this source" when its URL is under `<public>/webhooks/confluence/<key>`;
//! nothing else on the site is shown or touched.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use chrono::Utc;
use pagestream_confluence::{
    ConfluenceClient, ConfluenceError, NewWebhook, Secret as ConfluenceSecret, Webhook, WebhookApi,
};
use pagestream_events::{Retryable, WEBHOOK_EVENTS};
use pagestream_sources::{AuthKind, Credentials, Secret, SourceRecord};
pub use pagestream_views::{
    RegisteredStatus, RegisteredWebhook, WebhookEventCheck, WebhookEventStatus, WebhookReport,
};
use reqwest::Url;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::params::{JsonFields, QueryParams};
use crate::sources::{confluence_client, credentials_of, resolve};

/// The body of `PUT /api/confluence/{id}/webhooks` (documentation only).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct RegisterWebhooks {
    /// The ingester's public root (`https://hooks.example.com`); default: the api's
    /// `PAGESTREAM_WEBHOOK_PUBLIC_URL`.
    public_url: Option<String>,
}

#[utoipa::path(
    get, path = "/api/confluence/{id}/webhooks", tag = "sources",
    params(
        ("id" = String, Path, description = "source key or uuid"),
        ("public_url" = Option<String>, Query, description = "the ingester's public root (default: the api's PAGESTREAM_WEBHOOK_PUBLIC_URL)"),
    ),
    responses(
        (status = 200, body = WebhookReport),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 502, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
/// The webhooks pointing at this source, and per event the ingester understands whether one
/// delivers it to the right URL.
pub async fn check(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<WebhookReport>, ApiError> {
    let site = Site::open(&state, &id, public_url_param(query.as_deref())?).await?;
    let listed = site.ours(Action::Check).await?;
    Ok(Json(site.report(&listed, 0, 0)))
}

#[utoipa::path(
    put, path = "/api/confluence/{id}/webhooks", tag = "sources",
    params(("id" = String, Path, description = "source key or uuid")),
    request_body = RegisterWebhooks,
    responses(
        (status = 200, body = WebhookReport),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 502, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Registers the webhooks the source needs: lists first, creates only what is missing, then
/// deletes stale and extra ones (so deliveries never stop). A Cloud source without a path secret
/// gets one, a Data Center source without a webhook secret gets one; neither is answered.
pub async fn register(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<WebhookReport>, ApiError> {
    let public_url = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let mut fields = JsonFields::parse(&body)?;
        let public_url = fields.optional("public_url")?;
        fields.finish()?;
        public_url
    };
    let mut site = Site::open(&state, &id, public_url).await?;
    site.ensure_secret(&state).await?;
    let listed = site.ours(Action::Register).await?;
    let wanted = site.wanted();
    let plan = plan(&wanted, &listed);
    let mut created = 0;
    for wanted in &plan.create {
        match site
            .client
            .create_webhook(site.api, &site.registration(wanted))
            .await
        {
            Ok(_) => created += 1,
            // A registration that timed out may have taken effect: listing first, the next
            // `register` finds it instead of registering it twice.
            Err(error) if error.is_transient() && !is_refusal(&error) => {
                tracing::warn!(source = %site.record.key, %error, "webhook registration failed");
                return Err(ApiError::new(
                    ErrorCode::ConfluenceUnavailable,
                    format!(
                        "confluence is unavailable: {error}; the registration may have taken effect: register again (it lists first and creates only what is missing)"
                    ),
                ));
            }
            Err(error) => return Err(site.refused(error, Action::Register)),
        }
    }
    let removed = site.delete(&plan.delete, Action::Register).await?;
    tracing::info!(source = %site.record.key, created, removed, "webhooks registered");
    let listed = site.ours(Action::Register).await?;
    Ok(Json(site.report(&listed, created, removed)))
}

#[utoipa::path(
    delete, path = "/api/confluence/{id}/webhooks", tag = "sources",
    params(
        ("id" = String, Path, description = "source key or uuid"),
        ("public_url" = Option<String>, Query, description = "the ingester's public root (default: the api's PAGESTREAM_WEBHOOK_PUBLIC_URL)"),
    ),
    responses(
        (status = 200, body = WebhookReport),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 502, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Deletes every webhook pointing at this source, and nothing else.
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<WebhookReport>, ApiError> {
    let site = Site::open(&state, &id, public_url_param(query.as_deref())?).await?;
    let ours = site.ours(Action::Remove).await?;
    let ids: Vec<String> = ours.into_iter().map(|hook| hook.id).collect();
    let removed = site.delete(&ids, Action::Remove).await?;
    tracing::info!(source = %site.record.key, removed, "webhooks removed");
    let listed = site.ours(Action::Remove).await?;
    Ok(Json(site.report(&listed, 0, removed)))
}

/// The `public_url` query parameter, the only one the reading and removing routes take.
fn public_url_param(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut params = QueryParams::parse(query)?;
    let public_url = params.text("public_url", 2000)?;
    params.finish()?;
    Ok(public_url)
}

/// What the operator asked for, to say what was refused.
#[derive(Clone, Copy)]
enum Action {
    Check,
    Register,
    Remove,
}

/// Refused credentials or permissions: transient for a sync, but said as what to fix here.
fn is_refusal(error: &ConfluenceError) -> bool {
    matches!(
        error,
        ConfluenceError::Unauthorized { .. } | ConfluenceError::Forbidden { .. }
    )
}

/// A source's site, opened for managing its webhooks.
struct Site {
    record: SourceRecord,
    credentials: Credentials,
    client: ConfluenceClient,
    api: WebhookApi,
    /// `<public>/webhooks/confluence/<key>`: every URL under it points at this source.
    root: Url,
}

/// A webhook the source needs: its URL and the events it must deliver.
struct Wanted {
    url: Url,
    events: Vec<&'static str>,
}

impl Site {
    async fn open(
        state: &AppState,
        id: &str,
        public_url: Option<String>,
    ) -> Result<Self, ApiError> {
        let public = public_root(public_url.as_deref().or(state.webhook_base_url()))?;
        let record = resolve(state, id).await?;
        let (credentials, auth) = credentials_of(state, &record)?;
        let client = confluence_client(&record.site_url, auth, state.inner.confluence_timeout)
            .map_err(|error| ApiError::internal(format!("stored source: {error}")))?;
        let root = Url::parse(&format!("{public}/webhooks/confluence/{}", record.key))
            .map_err(|_| ApiError::invalid("public_url", "not a URL"))?;
        let api = match record.auth_kind {
            AuthKind::Cloud => WebhookApi::Cloud,
            AuthKind::DataCenter => WebhookApi::DataCenter,
        };
        Ok(Self {
            record,
            credentials,
            client,
            api,
            root,
        })
    }

    /// Gives the source the secret its deliveries need, sealed with its credentials: Cloud's path
    /// secret, Data Center's signing secret.
    async fn ensure_secret(&mut self, state: &AppState) -> Result<(), ApiError> {
        let slot = match self.api {
            WebhookApi::Cloud => &mut self.credentials.webhook_path_secret,
            WebhookApi::DataCenter => &mut self.credentials.webhook_secret,
        };
        if slot.is_some() {
            return Ok(());
        }
        // 192 random bits in hex serve as a signing secret as well as a path secret.
        *slot = Some(Secret::generate_path_secret());
        self.record.sealed_credentials =
            SourceRecord::seal_credentials(&state.inner.secret_key, &self.credentials);
        self.record.updated_at = Utc::now();
        state
            .inner
            .registry
            .put(&self.record)
            .await
            .map_err(|e| ApiError::dependency("source registry", e))?;
        tracing::info!(source = %self.record.key, "webhook secret set for registration");
        Ok(())
    }

    /// The webhooks the source needs (none on Cloud before it has a path secret: every URL it
    /// could have is unknown).
    fn wanted(&self) -> Vec<Wanted> {
        let events: Vec<&'static str> = WEBHOOK_EVENTS.iter().map(|(event, _)| *event).collect();
        match self.api {
            WebhookApi::Cloud => {
                let Some(secret) = &self.credentials.webhook_path_secret else {
                    return Vec::new();
                };
                events
                    .into_iter()
                    .filter_map(|event| {
                        let url = format!("{}/p/{}/{event}", self.root, secret.expose());
                        Some(Wanted {
                            url: Url::parse(&url).ok()?,
                            events: vec![event],
                        })
                    })
                    .collect()
            }
            WebhookApi::DataCenter => vec![Wanted {
                url: self.root.clone(),
                events,
            }],
        }
    }

    fn registration(&self, wanted: &Wanted) -> NewWebhook {
        let name = match self.api {
            WebhookApi::Cloud => {
                format!("pagestream {} {}", self.record.key, wanted.events.join(" "))
            }
            WebhookApi::DataCenter => format!("pagestream {}", self.record.key),
        };
        NewWebhook {
            name,
            url: ConfluenceSecret::new(wanted.url.as_str()),
            events: wanted.events.iter().map(|e| (*e).to_owned()).collect(),
            secret: match self.api {
                WebhookApi::Cloud => None,
                WebhookApi::DataCenter => self
                    .credentials
                    .webhook_secret
                    .as_ref()
                    .map(|s| ConfluenceSecret::new(s.expose())),
            },
        }
    }

    /// The site's webhooks that point at this source.
    async fn ours(&self, action: Action) -> Result<Vec<Webhook>, ApiError> {
        let all = self
            .client
            .webhooks(self.api)
            .await
            .map_err(|error| self.refused(error, action))?;
        Ok(all
            .into_iter()
            .filter(|hook| points_at(&hook.url, &self.root))
            .collect())
    }

    /// Deletes webhooks by id; one already gone counts as deleted.
    async fn delete(&self, ids: &[String], action: Action) -> Result<usize, ApiError> {
        for id in ids {
            match self.client.delete_webhook(self.api, id).await {
                Ok(()) => {}
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(self.refused(error, action)),
            }
        }
        Ok(ids.len())
    }

    fn report(&self, listed: &[Webhook], created: usize, removed: usize) -> WebhookReport {
        let wanted = self.wanted();
        let plan = plan(&wanted, listed);
        let events: Vec<WebhookEventCheck> = if wanted.is_empty() {
            // Without a path secret no URL can be right yet: every event is missing.
            WEBHOOK_EVENTS
                .iter()
                .map(|(event, _)| WebhookEventCheck {
                    event: (*event).to_owned(),
                    status: WebhookEventStatus::Missing,
                    webhook_id: None,
                })
                .collect()
        } else {
            wanted
                .iter()
                .flat_map(|want| want.events.iter().map(move |event| (want, *event)))
                .map(|(want, event)| event_check(want, event, listed))
                .collect()
        };
        let webhooks: Vec<RegisteredWebhook> = listed
            .iter()
            .map(|hook| RegisteredWebhook {
                id: hook.id.clone(),
                name: hook.name.clone(),
                url: shown(&hook.url, &self.root),
                events: hook.events.clone(),
                active: hook.active,
                status: plan.status_of(&hook.id),
            })
            .collect();
        let healthy = events.iter().all(|e| e.status == WebhookEventStatus::Ok)
            && webhooks.iter().all(|h| h.status == RegisteredStatus::Ok);
        WebhookReport {
            key: self.record.key.to_string(),
            auth_kind: self.record.auth_kind.as_str().to_owned(),
            public_url: self
                .root
                .as_str()
                .trim_end_matches(&format!("/webhooks/confluence/{}", self.record.key))
                .to_owned(),
            events,
            webhooks,
            healthy,
            created,
            removed,
        }
    }

    /// A Confluence failure, said for the operator. Messages name endpoints, never URLs or secrets.
    fn refused(&self, error: ConfluenceError, action: Action) -> ApiError {
        tracing::warn!(source = %self.record.key, %error, "confluence webhook request failed");
        let admin = match self.api {
            WebhookApi::Cloud => "the token's user must be a site admin",
            WebhookApi::DataCenter => "the token's user must be a confluence administrator",
        };
        let what = match action {
            Action::Check => "confluence refused to list webhooks",
            Action::Register => "confluence refused webhook registration",
            Action::Remove => "confluence refused to remove webhooks",
        };
        match error {
            ConfluenceError::Forbidden { .. } => ApiError::new(
                ErrorCode::ConfluenceWebhooksRefused,
                format!("{what}: {admin}"),
            ),
            ConfluenceError::Unauthorized { .. } => ApiError::new(
                ErrorCode::ConfluenceCredentialsRejected,
                "confluence rejected the source's credentials",
            ),
            ConfluenceError::NotFound { endpoint } => ApiError::new(
                ErrorCode::ConfluenceWebhooksRefused,
                format!(
                    "{what}: the site has no webhook resource ({endpoint}); register the webhooks by hand (services/webhook/README.md)"
                ),
            ),
            ConfluenceError::Rejected { .. } => ApiError::new(
                ErrorCode::ConfluenceWebhooksRefused,
                format!("{what}: {error}"),
            ),
            other => ApiError::new(
                ErrorCode::ConfluenceUnavailable,
                format!("confluence is unavailable: {other}"),
            ),
        }
    }
}

/// The ingester's public root: an http(s) URL without query or fragment, no trailing slash.
fn public_root(given: Option<&str>) -> Result<String, ApiError> {
    let given = given
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "public_url",
                "is required (or start the api with PAGESTREAM_WEBHOOK_PUBLIC_URL)",
            )
        })?;
    let url = Url::parse(given)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .filter(|url| url.host_str().is_some() && url.query().is_none() && url.fragment().is_none())
        .ok_or_else(|| {
            ApiError::invalid(
                "public_url",
                "must be an http(s) URL without query, such as https://hooks.example.com",
            )
        })?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Whether a delivery URL is under `root` (same origin, path below it).
fn points_at(url: &str, root: &Url) -> bool {
    let Ok(url) = Url::parse(url) else {
        return false;
    };
    let base = root.path().trim_end_matches('/');
    url.origin() == root.origin()
        && (url.path() == base || url.path().starts_with(&format!("{base}/")))
}

/// A delivery URL of this source as shown: the segment after `/p/` (the path secret) as `***`,
/// without a query.
fn shown(url: &str, root: &Url) -> String {
    let Ok(url) = Url::parse(url) else {
        return String::new();
    };
    let base = root.path().trim_end_matches('/');
    let rest = url.path().strip_prefix(base).unwrap_or_default();
    let rest = match rest.strip_prefix("/p/") {
        Some(after) => match after.split_once('/') {
            Some((_, tail)) => format!("/p/***/{tail}"),
            None => "/p/***".to_owned(),
        },
        None => rest.to_owned(),
    };
    format!("{}{base}{rest}", url.origin().ascii_serialization())
}

fn same_url(url: &str, wanted: &Url) -> bool {
    Url::parse(url).is_ok_and(|url| url == *wanted)
}

/// What `register` does: create the wanted webhooks no complete, active webhook at their URL
/// delivers; delete the rest of ours.
struct Plan<'a> {
    create: Vec<&'a Wanted>,
    delete: Vec<String>,
    statuses: Vec<(String, RegisteredStatus)>,
}

impl Plan<'_> {
    fn status_of(&self, id: &str) -> RegisteredStatus {
        self.statuses
            .iter()
            .find(|(own, _)| own == id)
            .map_or(RegisteredStatus::Stale, |(_, status)| *status)
    }
}

fn plan<'a>(wanted: &'a [Wanted], ours: &[Webhook]) -> Plan<'a> {
    let mut statuses: Vec<(String, RegisteredStatus)> = Vec::new();
    let mut create = Vec::new();
    for want in wanted {
        let serving = ours.iter().find(|hook| {
            hook.active
                && same_url(&hook.url, &want.url)
                && want
                    .events
                    .iter()
                    .all(|e| hook.events.iter().any(|h| h == e))
                && !statuses.iter().any(|(id, _)| *id == hook.id)
        });
        match serving {
            Some(hook) => statuses.push((hook.id.clone(), RegisteredStatus::Ok)),
            None => create.push(want),
        }
    }
    let mut delete = Vec::new();
    for hook in ours {
        if statuses.iter().any(|(id, _)| *id == hook.id) {
            continue;
        }
        // An active twin of a webhook already serving its URL only repeats its deliveries.
        let extra = hook.active
            && wanted.iter().any(|want| {
                same_url(&hook.url, &want.url) && !create.iter().any(|c| std::ptr::eq(*c, want))
            });
        let status = if extra {
            RegisteredStatus::Extra
        } else {
            RegisteredStatus::Stale
        };
        statuses.push((hook.id.clone(), status));
        delete.push(hook.id.clone());
    }
    Plan {
        create,
        delete,
        statuses,
    }
}

/// Whether `event` reaches the ingester: an active webhook at the wanted URL subscribes to it.
fn event_check(want: &Wanted, event: &str, ours: &[Webhook]) -> WebhookEventCheck {
    let subscribed = |hook: &&Webhook| hook.events.iter().any(|e| e == event);
    let at_url = |hook: &&Webhook| same_url(&hook.url, &want.url);
    let found = ours
        .iter()
        .filter(subscribed)
        .find(|hook| at_url(hook) && hook.active)
        .map(|hook| (WebhookEventStatus::Ok, hook))
        .or_else(|| {
            ours.iter()
                .filter(subscribed)
                .find(at_url)
                .map(|hook| (WebhookEventStatus::Inactive, hook))
        })
        .or_else(|| {
            ours.iter()
                .find(subscribed)
                .map(|hook| (WebhookEventStatus::WrongUrl, hook))
        });
    WebhookEventCheck {
        event: event.to_owned(),
        status: found.map_or(WebhookEventStatus::Missing, |(status, _)| status),
        webhook_id: found.map(|(_, hook)| hook.id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(id: &str, url: &str, events: &[&str], active: bool) -> Webhook {
        Webhook {
            id: id.into(),
            name: String::new(),
            url: url.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            active,
        }
    }

    fn want(url: &str, events: &[&'static str]) -> Wanted {
        Wanted {
            url: Url::parse(url).expect("url"),
            events: events.to_vec(),
        }
    }

    #[test]
    fn only_urls_under_the_source_root_are_ours() {
        let root = Url::parse("https://hooks.example.com/in/webhooks/confluence/eng").expect("url");
        for url in [
            "https://hooks.example.com/in/webhooks/confluence/eng",
            "https://hooks.example.com/in/webhooks/confluence/eng/p/abc/page_created",
        ] {
            assert!(points_at(url, &root), "{url}");
        }
        for url in [
            "https://hooks.example.com/in/webhooks/confluence/engineering",
            "https://other.example.com/in/webhooks/confluence/eng",
            "http://hooks.example.com/in/webhooks/confluence/eng",
            "https://hooks.example.com/webhooks/confluence/eng",
            "not a url",
        ] {
            assert!(!points_at(url, &root), "{url}");
        }
        assert_eq!(
            shown(
                "https://hooks.example.com/in/webhooks/confluence/eng/p/0123abcd/page_created?x=1",
                &root
            ),
            "https://hooks.example.com/in/webhooks/confluence/eng/p/***/page_created"
        );
        assert_eq!(
            shown(
                "https://hooks.example.com/in/webhooks/confluence/eng",
                &root
            ),
            "https://hooks.example.com/in/webhooks/confluence/eng"
        );
    }

    #[test]
    fn the_plan_keeps_what_serves_and_replaces_the_rest() {
        let base = "https://h/webhooks/confluence/eng";
        let wanted = [
            want(&format!("{base}/p/new/page_created"), &["page_created"]),
            want(&format!("{base}/p/new/page_updated"), &["page_updated"]),
            want(&format!("{base}/p/new/page_moved"), &["page_moved"]),
        ];
        let ours = [
            hook(
                "1",
                &format!("{base}/p/new/page_created"),
                &["page_created"],
                true,
            ),
            hook(
                "2",
                &format!("{base}/p/new/page_created"),
                &["page_created"],
                true,
            ),
            hook(
                "3",
                &format!("{base}/p/old/page_updated"),
                &["page_updated"],
                true,
            ),
            hook(
                "4",
                &format!("{base}/p/new/page_moved"),
                &["page_moved"],
                false,
            ),
        ];
        let plan = plan(&wanted, &ours);
        let created: Vec<&str> = plan.create.iter().map(|w| w.url.as_str()).collect();
        assert_eq!(
            created,
            [
                format!("{base}/p/new/page_updated"),
                format!("{base}/p/new/page_moved")
            ]
        );
        assert_eq!(plan.delete, ["2", "3", "4"]);
        assert_eq!(plan.status_of("1"), RegisteredStatus::Ok);
        assert_eq!(plan.status_of("2"), RegisteredStatus::Extra);
        assert_eq!(plan.status_of("3"), RegisteredStatus::Stale);
        assert_eq!(plan.status_of("4"), RegisteredStatus::Stale);
        let checks: Vec<WebhookEventStatus> = wanted
            .iter()
            .map(|w| event_check(w, w.events[0], &ours).status)
            .collect();
        assert_eq!(
            checks,
            [
                WebhookEventStatus::Ok,
                WebhookEventStatus::WrongUrl,
                WebhookEventStatus::Inactive
            ]
        );
    }

    #[test]
    fn an_incomplete_data_center_webhook_is_replaced() {
        let url = "https://h/webhooks/confluence/eng";
        let wanted = [want(url, &["page_created", "page_updated"])];
        let ours = [hook("9", url, &["page_created"], true)];
        let plan = plan(&wanted, &ours);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.delete, ["9"]);
        assert_eq!(plan.status_of("9"), RegisteredStatus::Stale);
        assert_eq!(
            event_check(&wanted[0], "page_created", &ours).status,
            WebhookEventStatus::Ok
        );
        assert_eq!(
            event_check(&wanted[0], "page_updated", &ours).status,
            WebhookEventStatus::Missing
        );
    }

    #[test]
    fn a_public_url_must_be_a_plain_http_root() {
        assert_eq!(
            public_root(Some("https://hooks.example.com/")).expect("ok"),
            "https://hooks.example.com"
        );
        for bad in [
            None,
            Some(""),
            Some("ftp://h"),
            Some("https://h/?q=1"),
            Some("nope"),
        ] {
            assert!(public_root(bad).is_err(), "{bad:?}");
        }
    }
}
