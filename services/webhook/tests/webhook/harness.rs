//! A running ingester (router, source cache following the registry) on a fresh bus, with two
//! sources: `cloud` (Cloud, Connect JWT or Automation) and `dc` (Data Center, X-Hub-Signature).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use pagestream_bus::Bus;
use pagestream_events::{Envelope, EventKind, PageHinted, PageId, SourceKey};
use pagestream_sources::{
    AuthKind, Credentials, Secret, SecretKey, SourceRecord, SourceRegistry, SourceSettings,
};
use pagestream_webhook::auth::{
    AUTOMATION_TOKEN_HEADER, HUB_SIGNATURE_HEADER, connect_jwt, hub_signature,
};
use pagestream_webhook::{HttpSettings, RateLimiter, SourceCache, router};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const CLOUD_SECRET: &str = "connect-shared-secret-5e1f";
pub const DC_SECRET: &str = "dc-webhook-secret-a90c";
/// The Connect app's client key, stored with every test source.
pub const CLIENT_KEY: &str = "client-key";

pub struct Options {
    pub max_body_bytes: usize,
    pub rate_per_sec: f64,
    pub burst: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            rate_per_sec: 1000.0,
            burst: 1000,
        }
    }
}

pub struct Harness {
    pub bus: Bus,
    pub registry: SourceRegistry,
    pub key: SecretKey,
    pub app: Router,
    cancel: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn start(options: Options) -> Harness {
    let bus = pagestream_testkit::bus().await;
    let registry = SourceRegistry::open(&bus).await.expect("registry");
    let key = SecretKey::parse(&SecretKey::generate()).expect("key");
    put_source(
        &registry,
        &key,
        "cloud",
        AuthKind::Cloud,
        Some(CLOUD_SECRET),
    )
    .await;
    put_source(&registry, &key, "dc", AuthKind::DataCenter, Some(DC_SECRET)).await;
    let sources = SourceCache::load(&registry, &key)
        .await
        .expect("load sources");
    let limiter = Arc::new(RateLimiter::new(options.rate_per_sec, options.burst));
    let cancel = CancellationToken::new();
    tokio::spawn(sources.clone().follow(
        registry.clone(),
        key.clone(),
        cancel.clone(),
        |_: &SourceKey| {},
    ));
    let app = router(
        bus.clone(),
        sources,
        limiter,
        HttpSettings {
            max_body_bytes: options.max_body_bytes,
            jwt_leeway_secs: 30,
            jwt_max_lifetime_secs: 600,
        },
    );
    Harness {
        bus,
        registry,
        key,
        app,
        cancel,
    }
}

pub async fn put_source(
    registry: &SourceRegistry,
    key: &SecretKey,
    name: &str,
    auth_kind: AuthKind,
    webhook_secret: Option<&str>,
) {
    let credentials = Credentials {
        email: None,
        token: Secret::new("api-token-not-used-here"),
        webhook_secret: webhook_secret.map(Secret::new),
        connect_client_key: Some(CLIENT_KEY.to_owned()),
        webhook_path_secret: None,
    };
    let record = SourceRecord {
        id: uuid::Uuid::new_v4(),
        key: SourceKey::new(name).expect("source key"),
        site_url: "https://acme.atlassian.net".into(),
        spaces: pagestream_sources::Spaces::one("ENG"),
        auth_kind,
        sealed_credentials: SourceRecord::seal_credentials(key, &credentials),
        settings: SourceSettings::default(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    registry.put(&record).await.expect("put source");
}

/// A Cloud source whose site-admin webhooks deliver unsigned to a URL carrying `path_secret`.
pub async fn put_unsigned_source(
    registry: &SourceRegistry,
    key: &SecretKey,
    name: &str,
    path_secret: &str,
) {
    let credentials = Credentials {
        email: Some("ops@example.com".into()),
        token: Secret::new("api-token-not-used-here"),
        webhook_secret: None,
        connect_client_key: None,
        webhook_path_secret: Some(Secret::new(path_secret)),
    };
    let record = SourceRecord {
        id: uuid::Uuid::new_v4(),
        key: SourceKey::new(name).expect("source key"),
        site_url: "https://acme.atlassian.net/wiki".into(),
        spaces: pagestream_sources::Spaces::All,
        auth_kind: AuthKind::Cloud,
        sealed_credentials: SourceRecord::seal_credentials(key, &credentials),
        settings: SourceSettings::default(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    registry.put(&record).await.expect("put source");
}

/// An unsigned delivery (Cloud's site-admin webhooks) to the URL with `secret` in its path.
pub fn unsigned_request(source: &str, secret: &str, event: &str, body: Vec<u8>) -> Request<Body> {
    post(&format!("/webhooks/confluence/{source}/p/{secret}/{event}"))
        .body(Body::from(body))
        .expect("request")
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The path a delivery goes to: with the event in it (Connect) or not.
pub fn path(source: &str, event: Option<&str>) -> String {
    match event {
        Some(event) => format!("/webhooks/confluence/{source}/{event}"),
        None => format!("/webhooks/confluence/{source}"),
    }
}

fn post(uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
}

/// A Data Center delivery signed with `secret`.
pub fn dc_request(source: &str, event: Option<&str>, body: Vec<u8>, secret: &str) -> Request<Body> {
    post(&path(source, event))
        .header(HUB_SIGNATURE_HEADER, hub_signature(secret, &body))
        .body(Body::from(body))
        .expect("request")
}

/// A Cloud Connect delivery with a JWT in `Authorization`, signed for the path it goes to.
pub fn cloud_request(source: &str, event: &str, body: Vec<u8>, secret: &str) -> Request<Body> {
    let path = path(source, Some(event));
    let token = connect_jwt(
        secret,
        CLIENT_KEY,
        "POST",
        &path,
        None,
        Utc::now().timestamp(),
        180,
    );
    post(&path)
        .header("authorization", format!("JWT {token}"))
        .body(Body::from(body))
        .expect("request")
}

/// An Automation delivery carrying the shared token.
pub fn automation_request(
    source: &str,
    event: Option<&str>,
    body: Vec<u8>,
    token: &str,
) -> Request<Body> {
    post(&path(source, event))
        .header(AUTOMATION_TOKEN_HEADER, token)
        .body(Body::from(body))
        .expect("request")
}

impl Harness {
    /// Sends a request through the router; the status and the JSON answer.
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        send(&self.app, request).await
    }

    /// Messages the `page.hinted` stream holds.
    pub async fn hinted_count(&self) -> u64 {
        let mut stream = self
            .bus
            .jetstream()
            .get_stream(self.bus.streams().for_kind(EventKind::PageHinted))
            .await
            .expect("page.hinted stream");
        stream.info().await.expect("stream info").state.messages
    }

    pub async fn last_hint(&self, source: &str, page: &str) -> Option<Envelope<PageHinted>> {
        self.bus
            .last_for_page::<PageHinted>(
                &SourceKey::new(source).expect("source"),
                &PageId::new(page).expect("page"),
            )
            .await
            .expect("read page.hinted")
    }

    /// Waits until a request gets `status` (the source cache follows the registry asynchronously).
    pub async fn eventually(&self, make: impl Fn() -> Request<Body>, status: StatusCode) {
        for _ in 0..100 {
            if self.send(make()).await.0 == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never answered {status}");
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("response body");
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, json)
}
