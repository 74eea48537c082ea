//! Webhooks registered through the API, and their deliveries: Cloud's site-admin resource
//! (`/wiki/rest/webhooks/1.0/webhook`: unsigned deliveries to the registered URL) and Data
//! Center's (`/rest/api/webhooks`: deliveries naming their `event`, signed `X-Hub-Signature` with
//! the registration's `configuration.secret`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Api, App, Shared, guard, ok, site};
use crate::webhook::{self, WebhookEvent};

/// A webhook registered through the API.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub id: u64,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    /// Data Center's signing secret; Cloud's site-admin webhooks have none.
    pub secret: Option<String>,
    pub active: bool,
    pub data_center: bool,
    pub created: i64,
}

#[derive(Deserialize)]
struct Registration {
    name: String,
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    configuration: Option<Configuration>,
}

#[derive(Deserialize)]
struct Configuration {
    secret: Option<String>,
}

fn cloud_view(hook: &Registered, site: &str) -> Value {
    json!({
        "self": format!("{site}/rest/webhooks/1.0/webhook/{}", hook.id),
        "name": hook.name,
        "url": hook.url,
        "events": hook.events,
        "enabled": hook.active,
        "excludeBody": false,
        "filters": {},
        "lastUpdated": hook.created,
    })
}

fn dc_view(hook: &Registered) -> Value {
    // The secret is write-only: Confluence never shows it again.
    json!({
        "id": hook.id,
        "name": hook.name,
        "url": hook.url,
        "events": hook.events,
        "active": hook.active,
        "scopeType": "global",
        "sslVerificationRequired": true,
        "configuration": {},
        "createdDate": hook.created,
        "updatedDate": hook.created,
    })
}

fn path_of(data_center: bool) -> &'static str {
    if data_center {
        "/wiki/rest/api/webhooks"
    } else {
        "/wiki/rest/webhooks/1.0/webhook"
    }
}

pub(super) async fn create(
    shared: App,
    headers: HeaderMap,
    body: Bytes,
    data_center: bool,
) -> Response {
    let State(shared) = shared;
    let near = match guard(&shared, &headers, path_of(data_center), "webhooks", Api::V1).await {
        Ok(near) => near,
        Err(response) => return response,
    };
    let Ok(registration) = serde_json::from_slice::<Registration>(&body) else {
        return super::error(Api::V1, StatusCode::BAD_REQUEST, "invalid webhook");
    };
    if registration.name.trim().is_empty()
        || reqwest::Url::parse(&registration.url).is_err()
        || registration.events.is_empty()
    {
        return super::error(
            Api::V1,
            StatusCode::BAD_REQUEST,
            "a webhook needs a name, a url and events",
        );
    }
    let site = site(&headers, &shared);
    let mut state = shared.lock();
    state.next_id += 1;
    let hook = Registered {
        id: state.next_id,
        name: registration.name,
        url: registration.url,
        events: registration.events,
        secret: registration.configuration.and_then(|c| c.secret),
        active: registration.active.unwrap_or(true),
        data_center,
        created: chrono::Utc::now().timestamp_millis(),
    };
    let view = if data_center {
        dc_view(&hook)
    } else {
        cloud_view(&hook, &site)
    };
    state.webhooks.push(hook);
    let mut response = ok(view, near, None);
    *response.status_mut() = StatusCode::CREATED;
    response
}

pub(super) async fn list(shared: App, headers: HeaderMap, data_center: bool) -> Response {
    let State(shared) = shared;
    let near = match guard(&shared, &headers, path_of(data_center), "webhooks", Api::V1).await {
        Ok(near) => near,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let state = shared.lock();
    let hooks = state
        .webhooks
        .iter()
        .filter(|h| h.data_center == data_center);
    let body = if data_center {
        let results: Vec<Value> = hooks.map(dc_view).collect();
        json!({"results": results, "start": 0, "limit": 100, "size": results.len(),
               "_links": {"base": site, "context": "/wiki"}})
    } else {
        // Cloud answers a bare array.
        Value::Array(hooks.map(|h| cloud_view(h, &site)).collect())
    };
    ok(body, near, None)
}

pub(super) async fn delete(
    shared: App,
    headers: HeaderMap,
    Path(id): Path<String>,
    data_center: bool,
) -> Response {
    let State(shared) = shared;
    if let Err(response) = guard(&shared, &headers, path_of(data_center), "webhooks", Api::V1).await
    {
        return response;
    }
    let mut state = shared.lock();
    let before = state.webhooks.len();
    state
        .webhooks
        .retain(|h| !(h.data_center == data_center && h.id.to_string() == id));
    if state.webhooks.len() == before {
        return super::error(Api::V1, StatusCode::NOT_FOUND, "no such webhook");
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Delivers `body` of `event` to every active registered webhook subscribed to it.
pub(super) async fn deliver_registered(shared: &Shared, event: WebhookEvent, body: &Value) {
    let targets: Vec<Registered> = shared
        .lock()
        .webhooks
        .iter()
        .filter(|h| h.active && h.events.iter().any(|e| e == event.name()))
        .cloned()
        .collect();
    for hook in targets {
        let mut body = body.clone();
        if hook.data_center
            && let Some(map) = body.as_object_mut()
        {
            map.insert("event".into(), json!(event.name()));
        }
        let delivery = webhook::deliver_to(
            &shared.http,
            &hook.url,
            hook.secret.as_deref(),
            event,
            &body,
        )
        .await;
        let mut state = shared.lock();
        if delivery.delivered() {
            state.stats.webhooks_delivered += 1;
        } else {
            state.stats.webhooks_failed += 1;
        }
    }
}
