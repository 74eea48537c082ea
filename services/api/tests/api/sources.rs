//! Sources, sync runs, auth and the error shape.

use std::net::SocketAddr;

use confluence_sim::SimConfig;
use pagestream_events::{EventKind, RawEvent, SourceKey, SyncMode, SyncRequested};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{self, API_KEY, assert_error, seed_source};

const TOKEN: &str = "ATATT-sim-token-must-never-leak-9f8e7d";
const PAT: &str = "dc-pat-must-never-leak-1a2b3c";

async fn sim() -> confluence_sim::RunningSim {
    let mut config = SimConfig::new(11, 12);
    config.api_token = TOKEN.into();
    config.personal_access_token = Some(PAT.into());
    confluence_sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator")
}

const WEBHOOK_SECRET: &str = "whsec-also-secret-0f3a9c1d7e";

fn cloud_source(site: &str, key: &str, space: &str, token: &str) -> Value {
    json!({
        "key": key,
        "site_url": site,
        "space_key": space,
        "auth": {"kind": "cloud", "email": "sim@example.com", "api_token": token},
        "webhook_secret": WEBHOOK_SECRET,
        "connect_client_key": "connect-client-key-1",
        "settings": {"incremental_interval_secs": 600},
    })
}

#[tokio::test]
async fn every_api_route_requires_the_key() {
    let api = support::start(false).await;
    let routes = [
        (Method::POST, "/api/confluence/sources"),
        (Method::GET, "/api/confluence/sources"),
        (Method::POST, "/api/confluence/eng/sync"),
        (Method::GET, "/api/confluence/eng/status"),
        (Method::DELETE, "/api/confluence/eng"),
        (Method::PATCH, "/api/confluence/eng"),
        (Method::POST, "/api/confluence/eng/webhook-path"),
        (Method::GET, "/api/confluence/eng/webhooks"),
        (Method::PUT, "/api/confluence/eng/webhooks"),
        (Method::DELETE, "/api/confluence/eng/webhooks"),
        (Method::GET, "/api/confluence/eng/pages"),
        (Method::GET, "/api/pages/eng/1"),
        (Method::GET, "/api/search?q=x"),
        (Method::GET, "/api/openapi.json"),
    ];
    for (method, path) in routes {
        let missing = api.call_with(method.clone(), path, None, None).await;
        assert_error(&missing, 401, "missing_api_key", None);
        let wrong = api
            .call_with(method.clone(), path, None, Some("not-the-key-0123456789"))
            .await;
        assert_error(&wrong, 401, "invalid_api_key", None);
        let almost = api
            .call_with(method, path, None, Some(&API_KEY[..API_KEY.len() - 1]))
            .await;
        assert_error(&almost, 401, "invalid_api_key", None);
    }
    // Ops endpoints stay open; the OpenAPI document lists every route.
    let health = api.call_with(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.0.as_u16(), 200);
    let ready = api.call_with(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.0.as_u16(), 200);
    // Metrics are served on the ops listener only, never on the public port.
    for key in [None, Some(support::API_KEY)] {
        let metrics = api.call_with(Method::GET, "/metrics", None, key).await;
        assert_eq!(metrics.0.as_u16(), 404, "{:?}", metrics.1);
    }
    let (status, document) = api.get("/api/openapi.json").await;
    assert_eq!(status.as_u16(), 200);
    for path in [
        "/api/confluence/sources",
        "/api/confluence/{id}/sync",
        "/api/confluence/{id}/status",
        "/api/confluence/{id}",
        "/api/confluence/{id}/pages",
        "/api/confluence/{id}/webhooks",
        "/api/pages/{source}/{page}",
        "/api/search",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} missing from the document"
        );
    }
    assert!(document["components"]["securitySchemes"]["api_key"].is_object());
    let unknown = api.get("/api/nothing-here").await;
    assert_error(&unknown, 404, "route_not_found", None);
}

#[tokio::test]
async fn creating_a_source_checks_the_token_seals_it_and_never_shows_it() {
    let api = support::start(false).await;
    let sim = sim().await;
    let site = sim.base_url();

    let wrong_token = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            Some(cloud_source(&site, "eng", "ENG", "wrong-token")),
        )
        .await;
    assert_error(
        &wrong_token,
        400,
        "confluence_credentials_rejected",
        Some("auth"),
    );
    let wrong_space = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            Some(cloud_source(&site, "eng", "NOPE", TOKEN)),
        )
        .await;
    assert_error(
        &wrong_space,
        400,
        "confluence_space_not_found",
        Some("space_key"),
    );
    assert!(
        api.registry.list().await.expect("list").is_empty(),
        "refused sources are not stored"
    );

    let (status, created) = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            Some(cloud_source(&site, "eng", "ENG", TOKEN)),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{created}");
    assert_eq!(created["key"], "eng");
    assert_eq!(created["space_key"], "ENG");
    assert_eq!(created["auth_kind"], "cloud");
    assert_eq!(created["site_url"], site);
    assert_eq!(created["settings"]["incremental_interval_secs"], 600);
    let id = Uuid::parse_str(created["id"].as_str().expect("id")).expect("uuid");

    // Sealed in the registry, and only the secret key opens it.
    let record = api
        .registry
        .get(&SourceKey::new("eng").expect("key"))
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(record.id, id);
    assert!(!record.sealed_credentials.contains(TOKEN));
    let credentials = record.credentials(&api.secret_key).expect("open");
    assert_eq!(credentials.token.expose(), TOKEN);
    assert_eq!(credentials.email.as_deref(), Some("sim@example.com"));
    assert_eq!(
        credentials.webhook_secret.as_ref().map(|s| s.expose()),
        Some(WEBHOOK_SECRET)
    );
    assert_eq!(
        credentials.connect_client_key.as_deref(),
        Some("connect-client-key-1")
    );

    let duplicate = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            Some(cloud_source(&site, "eng", "ENG", TOKEN)),
        )
        .await;
    assert_error(&duplicate, 409, "source_already_exists", Some("key"));

    // Data Center: a personal access token.
    let (status, dc) = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            Some(json!({
                "key": "eng-dc", "site_url": site, "space_key": "ENG",
                "auth": {"kind": "data_center", "personal_access_token": PAT},
            })),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{dc}");
    assert_eq!(dc["auth_kind"], "data_center");

    // Listed from the registry until the indexer projects it, then with counts.
    let (_, listed) = api.get("/api/confluence/sources").await;
    let sources = listed["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["key"], "eng");
    assert_eq!(sources[0]["projected"], false);
    seed_source(&api.pool, id, "eng").await;
    let (_, listed) = api.get("/api/confluence/sources").await;
    assert_eq!(listed["sources"][0]["projected"], true);
    assert_eq!(listed["sources"][0]["pages"], 0);
    assert!(listed["sources"][0]["last_sync"].is_null());
    // The scheduled sync (every 900 s by default) is due within its interval.
    let next = listed["sources"][0]["next_sync_at"]
        .as_str()
        .expect("next_sync_at");
    let next = chrono::DateTime::parse_from_rfc3339(next).expect("rfc 3339");
    let until = next.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        until > chrono::Duration::zero() && until <= chrono::Duration::seconds(900),
        "{until:?}"
    );

    // The token is nowhere: not in a response, not in a log line.
    for response in [&created, &dc, &listed, &wrong_token.1, &wrong_space.1] {
        let text = response.to_string();
        assert!(!text.contains(TOKEN) && !text.contains(PAT), "{text}");
        assert!(!text.contains("whsec-also-secret"), "{text}");
    }
    let logs = support::captured_logs();
    assert!(logs.contains("source created"), "the logs were captured");
    assert!(
        !logs.contains(TOKEN) && !logs.contains(PAT),
        "a token reached the logs"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_source_input_names_the_field() {
    let api = support::start(false).await;
    let base = || {
        json!({
            "key": "eng", "site_url": "https://example.atlassian.net/wiki", "space_key": "ENG",
            "auth": {"kind": "cloud", "email": "a@example.com", "api_token": "t"},
        })
    };
    fn remove(body: &mut Value, path: &[&str]) {
        let (last, parents) = path.split_last().expect("path");
        let mut object = body;
        for parent in parents {
            object = &mut object[*parent];
        }
        object.as_object_mut().expect("object").remove(*last);
    }
    type Edit = fn(&mut Value);
    let cases: Vec<(Edit, &str)> = vec![
        (|b| remove(b, &["space_key"]), "space_key"),
        (|b| b["space_key"] = json!("EN G"), "space_key"),
        (|b| b["key"] = json!("Not A Slug"), "key"),
        (|b| b["key"] = json!(Uuid::new_v4().to_string()), "key"),
        (|b| remove(b, &["site_url"]), "site_url"),
        (
            |b| b["site_url"] = json!("http://confluence.example.com"),
            "site_url",
        ),
        (
            |b| b["site_url"] = json!("https://user:pw@example.atlassian.net"),
            "site_url",
        ),
        (|b| b["site_url"] = json!(42), "site_url"),
        (|b| remove(b, &["auth"]), "auth"),
        (|b| b["auth"]["kind"] = json!("ldap"), "auth.kind"),
        (|b| b["auth"]["email"] = json!("nobody"), "auth.email"),
        (|b| remove(b, &["auth", "api_token"]), "auth.api_token"),
        (
            |b| b["auth"] = json!({"kind": "data_center", "personal_access_token": "line\nbreak"}),
            "auth",
        ),
        (|b| b["auth"]["colour"] = json!("red"), "auth.colour"),
        (
            |b| b["settings"] = json!({"concurrent_requests": 0}),
            "settings.concurrent_requests",
        ),
        (
            |b| b["settings"] = json!({"requests_per_second": "fast"}),
            "settings",
        ),
        (|b| b["extra"] = json!(true), "extra"),
        // 23 characters: one short of the minimum.
        (
            |b| b["webhook_secret"] = json!("x".repeat(23)),
            "webhook_secret",
        ),
        (
            |b| b["connect_client_key"] = json!(""),
            "connect_client_key",
        ),
    ];
    for (edit, field) in cases {
        let mut body = base();
        edit(&mut body);
        let response = api
            .call(Method::POST, "/api/confluence/sources", Some(body))
            .await;
        assert_error(&response, 400, "invalid_parameter", Some(field));
    }
    assert_error(
        &api.post_raw("/api/confluence/sources", "{not json").await,
        400,
        "malformed_body",
        None,
    );
    assert_error(
        &api.post_raw("/api/confluence/sources", "[1, 2]").await,
        400,
        "malformed_body",
        None,
    );
    assert!(api.registry.list().await.expect("list").is_empty());
}

/// Registers a source directly, as a created one would be.
async fn register(api: &support::TestApi, key: &str) -> Uuid {
    let sim_free_record = pagestream_sources::SourceRecord {
        id: Uuid::new_v4(),
        key: SourceKey::new(key).expect("key"),
        site_url: "https://example.atlassian.net/wiki".into(),
        spaces: pagestream_sources::Spaces::one("ENG"),
        auth_kind: pagestream_sources::AuthKind::Cloud,
        sealed_credentials: pagestream_sources::SourceRecord::seal_credentials(
            &api.secret_key,
            &pagestream_sources::Credentials {
                email: Some("a@example.com".into()),
                token: pagestream_sources::Secret::new(TOKEN),
                webhook_secret: None,
                connect_client_key: None,
                webhook_path_secret: None,
            },
        ),
        settings: Default::default(),
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    };
    api.registry.put(&sim_free_record).await.expect("put");
    sim_free_record.id
}

#[tokio::test]
async fn sync_publishes_the_request_and_status_follows_the_run() {
    let api = support::start(false).await;
    let id = register(&api, "eng").await;

    assert_error(
        &api.call(Method::POST, "/api/confluence/eng/sync?mode=partial", None)
            .await,
        400,
        "invalid_parameter",
        Some("mode"),
    );
    assert_error(
        &api.call(
            Method::POST,
            "/api/confluence/eng/sync?reconcile_deletions=maybe",
            None,
        )
        .await,
        400,
        "invalid_parameter",
        Some("reconcile_deletions"),
    );
    assert_error(
        &api.call(Method::POST, "/api/confluence/eng/sync?force=1", None)
            .await,
        400,
        "invalid_parameter",
        Some("force"),
    );
    assert_error(
        &api.call(Method::POST, "/api/confluence/nope/sync", None)
            .await,
        404,
        "source_not_found",
        None,
    );
    assert_error(
        &api.get("/api/confluence/eng/status").await,
        404,
        "sync_run_not_found",
        None,
    );
    assert_error(
        &api.get("/api/confluence/eng/status?run=12").await,
        400,
        "invalid_parameter",
        Some("run"),
    );

    // By uuid as well as by key.
    let (status, accepted) = api
        .call(
            Method::POST,
            &format!("/api/confluence/{id}/sync?mode=full"),
            None,
        )
        .await;
    assert_eq!(status.as_u16(), 202, "{accepted}");
    assert_eq!(accepted["status"], "queued");
    let run_id = Uuid::parse_str(accepted["run_id"].as_str().expect("run id")).expect("uuid");

    // The command is on the stream, for the fetcher.
    let stream = api
        .bus
        .jetstream()
        .get_stream(api.bus.streams().for_kind(EventKind::SyncRequested))
        .await
        .expect("stream");
    let message = stream
        .get_last_raw_message_by_subject(
            &api.bus
                .subjects()
                .sync_requested(&SourceKey::new("eng").expect("key")),
        )
        .await
        .expect("sync.requested published");
    let event = RawEvent::from_json(&message.payload)
        .expect("cloudevent")
        .into_typed::<SyncRequested>()
        .expect("typed");
    assert_eq!(event.data.run_id, run_id);
    assert_eq!(event.data.mode, SyncMode::Full);
    assert_eq!(event.extensions.syncrun, Some(run_id));

    // Queued: known from the progress stream before the indexer projects it.
    let status_url = accepted["status_url"]
        .as_str()
        .expect("status url")
        .to_owned();
    let (status, queued) = api.get(&status_url).await;
    assert_eq!(status.as_u16(), 200, "{queued}");
    assert_eq!(queued["run_id"], run_id.to_string());
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["pipeline"], json!({"state": "queued"}));
    assert_eq!(queued["mode"], "full");

    // Projected: the per-stage counts come from sync_runs.
    seed_source(&api.pool, id, "eng").await;
    sqlx::query(
        "INSERT INTO sync_runs (id, source_id, mode, status, pages_seen, pages_changed, \
         pages_deleted, pages_converted, pages_embedded, pages_indexed, pages_failed, \
         confluence_requests, rate_limit_wait_ms, last_error) \
         VALUES ($1, $2, 'full', 'running', 120, 30, 2, 28, 25, 20, 1, 14, 3500, 'page 7: too large')",
    )
    .bind(run_id)
    .bind(id)
    .execute(&api.pool)
    .await
    .expect("sync run");
    for path in [status_url.clone(), "/api/confluence/eng/status".to_owned()] {
        let (status, running) = api.get(&path).await;
        assert_eq!(status.as_u16(), 200, "{running}");
        assert_eq!(running["status"], "running");
        assert_eq!(
            running["counts"],
            json!({"seen": 120, "changed": 30, "deleted": 2, "converted": 28, "embedded": 25, "indexed": 20, "failed": 1})
        );
        assert_eq!(running["confluence_requests"], 14);
        assert_eq!(running["rate_limit_wait_ms"], 3500);
        assert_eq!(running["last_error"], "page 7: too large");
        assert_eq!(running["pipeline"], json!({"state": "fetching"}));
    }
    // Fetching is over, but the run is not finished until its pages are indexed.
    sqlx::query("UPDATE sync_runs SET status = 'completed', finished_at = now() WHERE id = $1")
        .bind(run_id)
        .execute(&api.pool)
        .await
        .expect("complete the fetch");
    let (_, processing) = api.get(&status_url).await;
    assert_eq!(processing["status"], "completed");
    assert_eq!(
        processing["pipeline"],
        json!({"state": "processing", "done": 20, "total": 30})
    );
    assert_eq!(processing["pipeline_label"], "processing 20 of 30");
    sqlx::query("UPDATE sync_runs SET pages_indexed = 30 WHERE id = $1")
        .bind(run_id)
        .execute(&api.pool)
        .await
        .expect("index the rest");
    let (_, done) = api.get(&status_url).await;
    assert_eq!(
        done["pipeline"],
        json!({"state": "done_with_failures", "failed": 1})
    );
    let (_, listed) = api.get("/api/confluence/sources").await;
    assert_eq!(
        listed["sources"][0]["last_sync"]["run_id"],
        run_id.to_string()
    );
}

#[tokio::test]
async fn deleting_a_source_removes_it_from_the_registry_and_the_streams() {
    let api = support::start(false).await;
    register(&api, "eng").await;
    let (status, _) = api
        .call(Method::POST, "/api/confluence/eng/sync", None)
        .await;
    assert_eq!(status.as_u16(), 202);

    let (status, removed) = api.call(Method::DELETE, "/api/confluence/eng", None).await;
    assert_eq!(status.as_u16(), 202, "{removed}");
    assert_eq!(removed["key"], "eng");
    assert!(
        api.registry
            .get(&SourceKey::new("eng").expect("key"))
            .await
            .expect("get")
            .is_none()
    );
    let stream = api
        .bus
        .jetstream()
        .get_stream(api.bus.streams().for_kind(EventKind::SyncRequested))
        .await
        .expect("stream");
    assert!(
        stream
            .get_last_raw_message_by_subject(
                &api.bus
                    .subjects()
                    .sync_requested(&SourceKey::new("eng").expect("key"))
            )
            .await
            .is_err(),
        "the source's commands were purged"
    );
    assert_error(
        &api.call(Method::DELETE, "/api/confluence/eng", None).await,
        404,
        "source_not_found",
        None,
    );
    assert_error(
        &api.get("/api/confluence/eng/status").await,
        404,
        "source_not_found",
        None,
    );
}

#[tokio::test]
async fn a_source_covers_several_spaces_or_all_and_its_spaces_can_be_changed() {
    let api = support::start(false).await;
    let mut config = SimConfig::new(11, 4);
    config.api_token = TOKEN.into();
    config.other_spaces = vec![confluence_sim::SimSpace::new(131_073, "OPS", "Operations")];
    let sim = confluence_sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator");
    let site = sim.base_url();
    let with_spaces = |key: &str, spaces: Value| {
        let mut body = cloud_source(&site, key, "ENG", TOKEN);
        body.as_object_mut().expect("object").remove("space_key");
        body["spaces"] = spaces;
        body
    };

    let (status, two) = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            Some(with_spaces("eng", json!(["ENG", "OPS", "eng"]))),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{two}");
    assert_eq!(two["spaces"], json!({"keys": ["ENG", "OPS"]}));
    assert_eq!(two["space_key"], "ENG, OPS");
    let unknown = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            Some(with_spaces("other", json!(["ENG", "NOPE"]))),
        )
        .await;
    assert_error(&unknown, 400, "confluence_space_not_found", Some("spaces"));
    let both = cloud_source(&site, "both", "ENG", TOKEN);
    let mut both = both;
    both["spaces"] = json!("all");
    assert_error(
        &api.call(Method::POST, "/api/confluence/sources", Some(both))
            .await,
        400,
        "invalid_parameter",
        Some("spaces"),
    );
    let mut keyless = with_spaces("x", json!("all"));
    keyless.as_object_mut().expect("object").remove("key");
    assert_error(
        &api.call(Method::POST, "/api/confluence/sources", Some(keyless))
            .await,
        400,
        "invalid_parameter",
        Some("key"),
    );
    let (status, all) = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            Some(with_spaces("site", json!("all"))),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{all}");
    assert_eq!(all["spaces"], "all");
    assert_eq!(all["space_key"], "all spaces");

    // Changed with the stored credentials; a space they cannot see is refused and nothing changes.
    let refused = api
        .call(
            Method::PATCH,
            "/api/confluence/eng",
            Some(json!({"spaces": ["NOPE"]})),
        )
        .await;
    assert_error(&refused, 400, "confluence_space_not_found", Some("spaces"));
    let (status, updated) = api
        .call(
            Method::PATCH,
            "/api/confluence/eng",
            Some(json!({"space_key": "OPS"})),
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{updated}");
    assert_eq!(updated["spaces"], json!({"keys": ["OPS"]}));
    let record = api
        .registry
        .get(&SourceKey::new("eng").expect("key"))
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(record.spaces, pagestream_sources::Spaces::one("OPS"));
    assert!(record.updated_at > record.created_at);
}

#[tokio::test]
async fn a_rotated_webhook_path_secret_is_sealed_shown_once_and_replaces_the_old_one() {
    let api = support::start(false).await;
    register(&api, "eng").await;
    let key = SourceKey::new("eng").expect("key");
    let (status, first) = api
        .call(Method::POST, "/api/confluence/eng/webhook-path", None)
        .await;
    assert_eq!(status.as_u16(), 200, "{first}");
    let path = first["path"].as_str().expect("path");
    let secret = path
        .strip_prefix("/webhooks/confluence/eng/p/")
        .expect("the source's path");
    assert!(secret.len() >= 24 && secret.chars().all(|c| c.is_ascii_hexdigit()));
    let record = api.registry.get(&key).await.expect("get").expect("stored");
    assert!(!record.sealed_credentials.contains(secret));
    let credentials = record.credentials(&api.secret_key).expect("open");
    assert_eq!(
        credentials.webhook_path_secret.as_ref().map(|s| s.expose()),
        Some(secret)
    );
    assert_eq!(credentials.token.expose(), TOKEN, "the token is kept");
    // Never in the source's view; a rotation replaces it.
    let (_, view) = api.get("/api/confluence/sources").await;
    assert!(!view.to_string().contains(secret));
    let (_, second) = api
        .call(Method::POST, "/api/confluence/eng/webhook-path", None)
        .await;
    assert_ne!(second["path"], first["path"]);
    let rotated = api.registry.get(&key).await.expect("get").expect("stored");
    assert_ne!(
        rotated
            .credentials(&api.secret_key)
            .expect("open")
            .webhook_path_secret
            .as_ref()
            .map(|s| s.expose()),
        Some(secret)
    );
}
