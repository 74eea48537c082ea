//! A source's webhooks on the simulator's site (Cloud and Data Center): registered once, checked,
//! replaced when stale, removed alone; secrets never answered.

use std::net::SocketAddr;

use confluence_sim::{FaultRule, Faults, SimConfig};
use pagestream_events::{SourceKey, WEBHOOK_EVENTS};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, assert_error};

const TOKEN: &str = "ATATT-hooks-token-never-shown-4c1d";
const PAT: &str = "dc-pat-hooks-never-shown-7e2f";
const PUBLIC: &str = "https://hooks.example.com/in";

async fn sim() -> confluence_sim::RunningSim {
    let mut config = SimConfig::new(11, 4);
    config.api_token = TOKEN.into();
    config.personal_access_token = Some(PAT.into());
    confluence_sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator")
}

/// Registers a webhook directly on the site, as someone else would.
async fn foreign(sim: &confluence_sim::RunningSim, url: &str) {
    let response = reqwest::Client::new()
        .post(format!("{}/rest/webhooks/1.0/webhook", sim.base_url()))
        .basic_auth("sim@example.com", Some(TOKEN))
        .json(&json!({"name": "not ours", "url": url, "events": ["page_created"]}))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status().as_u16(), 201);
}

/// Every webhook on the site's Cloud resource: (url, events).
async fn site_hooks(sim: &confluence_sim::RunningSim, data_center: bool) -> Vec<(String, Value)> {
    let path = if data_center {
        "rest/api/webhooks"
    } else {
        "rest/webhooks/1.0/webhook"
    };
    let body: Value = reqwest::Client::new()
        .get(format!("{}/{path}", sim.base_url()))
        .bearer_auth(PAT)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let hooks = if data_center {
        body["results"].clone()
    } else {
        body
    };
    hooks
        .as_array()
        .expect("array")
        .iter()
        .map(|h| {
            (
                h["url"].as_str().unwrap_or_default().to_owned(),
                h["events"].clone(),
            )
        })
        .collect()
}

fn statuses(report: &Value, field: &str) -> Vec<String> {
    report[field]
        .as_array()
        .expect(field)
        .iter()
        .map(|item| item["status"].as_str().expect("status").to_owned())
        .collect()
}

async fn path_secret(api: &support::TestApi, key: &str) -> String {
    let record = api
        .registry
        .get(&SourceKey::new(key).expect("key"))
        .await
        .expect("get")
        .expect("stored");
    record
        .credentials(&api.secret_key)
        .expect("open")
        .webhook_path_secret
        .expect("path secret")
        .expose()
        .to_owned()
}

#[tokio::test]
async fn cloud_webhooks_are_registered_once_checked_replaced_and_removed_alone() {
    let api = support::start(false).await;
    let sim = sim().await;
    let (status, created) = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            Some(json!({
                "key": "eng", "site_url": sim.base_url(), "space_key": "ENG",
                "auth": {"kind": "cloud", "email": "sim@example.com", "api_token": TOKEN},
            })),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{created}");
    // Someone else's webhooks, and another source's: never shown, never touched.
    foreign(&sim, "https://elsewhere.example.com/hook").await;
    foreign(
        &sim,
        &format!("{PUBLIC}/webhooks/confluence/engineering/p/x/page_created"),
    )
    .await;

    let unknown_root = api.get("/api/confluence/eng/webhooks").await;
    assert_error(&unknown_root, 400, "invalid_parameter", Some("public_url"));
    let query = format!("/api/confluence/eng/webhooks?public_url={PUBLIC}");
    let (status, before) = api.get(&query).await;
    assert_eq!(status.as_u16(), 200, "{before}");
    assert_eq!(before["healthy"], false);
    assert_eq!(before["webhooks"], json!([]));
    assert_eq!(
        statuses(&before, "events"),
        vec!["missing"; WEBHOOK_EVENTS.len()]
    );

    let register = || {
        api.call(
            Method::PUT,
            "/api/confluence/eng/webhooks",
            Some(json!({"public_url": PUBLIC})),
        )
    };
    let (status, registered) = register().await;
    assert_eq!(status.as_u16(), 200, "{registered}");
    assert_eq!(registered["created"], WEBHOOK_EVENTS.len());
    assert_eq!(registered["removed"], 0);
    assert_eq!(registered["healthy"], true, "{registered}");
    assert_eq!(
        statuses(&registered, "events"),
        vec!["ok"; WEBHOOK_EVENTS.len()]
    );
    // Registering gave the source a path secret, which no answer shows.
    let secret = path_secret(&api, "eng").await;
    assert!(!registered.to_string().contains(&secret));
    let first = &registered["webhooks"][0];
    assert_eq!(
        first["url"],
        format!("{PUBLIC}/webhooks/confluence/eng/p/***/page_created")
    );
    assert_eq!(first["events"], json!(["page_created"]));
    let on_site = site_hooks(&sim, false).await;
    assert_eq!(on_site.len(), WEBHOOK_EVENTS.len() + 2);
    assert!(on_site.iter().any(|(url, events)| {
        *url == format!("{PUBLIC}/webhooks/confluence/eng/p/{secret}/page_trashed")
            && *events == json!(["page_trashed"])
    }));

    // Twice: nothing new.
    let (_, again) = register().await;
    assert_eq!(
        (again["created"].clone(), again["removed"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(
        site_hooks(&sim, false).await.len(),
        WEBHOOK_EVENTS.len() + 2
    );

    // A rotated path secret leaves every webhook at a URL the ingester refuses.
    let (status, _) = api
        .call(Method::POST, "/api/confluence/eng/webhook-path", None)
        .await;
    assert_eq!(status.as_u16(), 200);
    let (_, stale) = api.get(&query).await;
    assert_eq!(stale["healthy"], false);
    assert_eq!(
        statuses(&stale, "events"),
        vec!["wrong_url"; WEBHOOK_EVENTS.len()]
    );
    assert_eq!(
        statuses(&stale, "webhooks"),
        vec!["stale"; WEBHOOK_EVENTS.len()]
    );
    let (_, replaced) = register().await;
    assert_eq!(replaced["created"], WEBHOOK_EVENTS.len());
    assert_eq!(replaced["removed"], WEBHOOK_EVENTS.len());
    assert_eq!(replaced["healthy"], true);
    assert_eq!(
        site_hooks(&sim, false).await.len(),
        WEBHOOK_EVENTS.len() + 2
    );

    // Removal deletes ours alone.
    let (status, removed) = api.call(Method::DELETE, &query, None).await;
    assert_eq!(status.as_u16(), 200, "{removed}");
    assert_eq!(removed["removed"], WEBHOOK_EVENTS.len());
    assert_eq!(removed["webhooks"], json!([]));
    let left: Vec<String> = site_hooks(&sim, false)
        .await
        .into_iter()
        .map(|(url, _)| url)
        .collect();
    assert_eq!(
        left,
        [
            "https://elsewhere.example.com/hook".to_owned(),
            format!("{PUBLIC}/webhooks/confluence/engineering/p/x/page_created")
        ]
    );
    for answer in [&registered, &again, &stale, &replaced, &removed] {
        assert!(!answer.to_string().contains(TOKEN));
    }
}

#[tokio::test]
async fn data_center_webhooks_are_one_signed_registration_and_a_refusal_says_why() {
    let api = support::start(false).await;
    let sim = sim().await;
    let (status, created) = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            Some(json!({
                "key": "wiki", "site_url": sim.base_url(), "space_key": "ENG",
                "auth": {"kind": "data_center", "personal_access_token": PAT},
            })),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{created}");
    let (status, registered) = api
        .call(
            Method::PUT,
            "/api/confluence/wiki/webhooks",
            Some(json!({"public_url": PUBLIC})),
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{registered}");
    assert_eq!(registered["created"], 1);
    assert_eq!(registered["healthy"], true, "{registered}");
    let on_site = site_hooks(&sim, true).await;
    assert_eq!(on_site.len(), 1);
    assert_eq!(on_site[0].0, format!("{PUBLIC}/webhooks/confluence/wiki"));
    let events: Vec<&str> = WEBHOOK_EVENTS.iter().map(|(event, _)| *event).collect();
    assert_eq!(on_site[0].1, json!(events));
    // The source got a signing secret for it, sealed and never answered.
    let record = api
        .registry
        .get(&SourceKey::new("wiki").expect("key"))
        .await
        .expect("get")
        .expect("stored");
    let secret = record
        .credentials(&api.secret_key)
        .expect("open")
        .webhook_secret
        .expect("webhook secret");
    assert!(secret.expose().len() >= pagestream_sources::MIN_WEBHOOK_SECRET_CHARS);
    assert!(!registered.to_string().contains(secret.expose()));

    // A token whose user is no administrator.
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(403).on_path("/wiki/rest/api/webhooks")],
        ..Faults::default()
    });
    let refused = api
        .call(
            Method::PUT,
            "/api/confluence/wiki/webhooks",
            Some(json!({"public_url": PUBLIC})),
        )
        .await;
    assert_error(&refused, 400, "confluence_webhooks_refused", None);
    assert_eq!(
        refused.1["error"]["message"],
        "confluence refused webhook registration: the token's user must be a confluence administrator"
    );
    sim.handle.clear_faults();
    let (_, removed) = api
        .call(
            Method::DELETE,
            &format!("/api/confluence/wiki/webhooks?public_url={PUBLIC}"),
            None,
        )
        .await;
    assert_eq!(removed["removed"], 1);
    assert!(site_hooks(&sim, true).await.is_empty());
}
