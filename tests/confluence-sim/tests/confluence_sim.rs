//! The simulator over HTTP, as the binary and the demo use it: Confluence-shaped responses and
//! errors, the `/_sim` control plane, and webhooks for mutations.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use confluence_sim::{MovePage, RunningSim, SimConfig, SimSpace, SimStats, webhook_signature};
use serde_json::{Value, json};

const AUTH: (&str, &str) = ("sim@example.com", "sim-api-token");

async fn start(pages: usize, webhook_target: Option<String>) -> RunningSim {
    let mut config = SimConfig::new(5, pages);
    config.webhook_target = webhook_target;
    config.webhook_secret = Some("hook-secret".into());
    confluence_sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(sim: &RunningSim, path_and_query: &str) -> reqwest::Response {
    http()
        .get(format!("http://{}{path_and_query}", sim.addr))
        .basic_auth(AUTH.0, Some(AUTH.1))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn errors_have_the_v1_and_v2_shapes() {
    let sim = start(5, None).await;
    let unauthenticated = http()
        .get(format!("http://{}/wiki/api/v2/pages/1", sim.addr))
        .basic_auth(AUTH.0, Some("nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(unauthenticated.status(), 401);
    let body: Value = unauthenticated.json().await.expect("json");
    assert_eq!(body["errors"][0]["status"], 401);

    let missing = get(&sim, "/wiki/rest/api/content/42").await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["statusCode"], 404);
    assert_eq!(body["reason"], "Not Found");

    let bad_cql = get(&sim, "/wiki/rest/api/content/search?cql=title~%22x%22").await;
    assert_eq!(bad_cql.status(), 400);
    let body: Value = bad_cql.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Could not parse cql")),
        "{body}"
    );

    let too_many: Vec<String> = (0..251).map(|i| (i + 1).to_string()).collect();
    let response = get(
        &sim,
        &format!("/wiki/api/v2/pages?id={}", too_many.join(",")),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(sim.handle.stats().unauthorized, 1);
}

#[tokio::test]
async fn listings_carry_cursors_in_link_headers_and_bodies() {
    let sim = start(30, None).await;
    let space = sim.handle.space_id();
    let first = get(&sim, &format!("/wiki/api/v2/spaces/{space}/pages?limit=20")).await;
    let link = first
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .expect("link header")
        .to_owned();
    let body: Value = first.json().await.expect("json");
    let next = body["_links"]["next"].as_str().expect("next in body");
    assert!(next.starts_with("/wiki/api/v2/spaces/"), "{next}");
    assert!(link.contains(&format!("<{next}>; rel=\"next\"")), "{link}");
    assert!(link.contains("rel=\"base\""), "{link}");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(20));
    assert!(
        body["results"][0]
            .get("body")
            .is_some_and(|b| b == &json!({}))
    );

    let second = get(&sim, next).await;
    assert!(
        second.headers().get("link").is_none(),
        "last page has no next"
    );
    let body: Value = second.json().await.expect("json");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(10));

    let search = get(
        &sim,
        "/wiki/rest/api/content/search?cql=type%3Dpage%20order%20by%20lastmodified%20asc&limit=25&expand=version",
    )
    .await;
    let body: Value = search.json().await.expect("json");
    let next = body["_links"]["next"].as_str().expect("v1 next");
    assert!(
        next.starts_with("/rest/api/content/search?"),
        "relative to base: {next}"
    );
    assert_eq!(body["_links"]["base"], format!("http://{}/wiki", sim.addr));
    let dates: Vec<&str> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["version"]["when"].as_str().expect("when"))
        .collect();
    assert!(
        dates.windows(2).all(|w| w[0] <= w[1]),
        "ordered by lastmodified"
    );
    let rest = get(&sim, &format!("/wiki{next}")).await;
    let body: Value = rest.json().await.expect("json");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(5));
    assert!(body["_links"].get("next").is_none());
}

#[tokio::test]
async fn faults_and_stats_are_steered_over_http() {
    let sim = start(5, None).await;
    let base = format!("http://{}", sim.addr);
    let set = http()
        .put(format!("{base}/_sim/faults"))
        .json(&json!({"rules": [{"status": 429, "retry_after": "999999", "remaining": 1}]}))
        .send()
        .await
        .expect("set faults");
    assert_eq!(set.status(), 204);
    let limited = get(&sim, "/wiki/api/v2/spaces?keys=ENG").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(
        limited
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("999999")
    );
    let space = get(&sim, "/wiki/api/v2/spaces?keys=ENG").await;
    assert_eq!(space.status(), 200);
    let body: Value = space.json().await.expect("json");
    assert_eq!(body["results"][0]["key"], "ENG");
    assert_eq!(
        body["results"][0]["homepageId"],
        confluence_sim::FIRST_PAGE_ID.to_string()
    );

    let stats: SimStats = http()
        .get(format!("{base}/_sim/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats.endpoint("v2.spaces"), 2);
    assert_eq!(stats.faults_injected, 1);
    let bad = http()
        .put(format!("{base}/_sim/faults"))
        .body("{not json")
        .send()
        .await
        .expect("bad faults");
    assert_eq!(bad.status(), 400);
}

/// A delivered webhook: event (from the path), parsed body, signature header, raw body.
type Delivery = (String, Value, Option<String>, String);

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Delivery>>>);

async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route(
            "/hooks/{event}",
            post(
                |State(received): State<Received>,
                 Path(event): Path<String>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let signature = headers
                        .get("x-hub-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let raw = String::from_utf8_lossy(&body).into_owned();
                    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    received
                        .0
                        .lock()
                        .expect("received")
                        .push((event, value, signature, raw));
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hooks"), received)
}

#[tokio::test]
async fn mutations_bump_versions_and_send_cloud_webhooks() {
    let (target, received) = receiver().await;
    let sim = start(10, Some(target)).await;
    let base = format!("http://{}/_sim/pages", sim.addr);
    let id = confluence_sim::FIRST_PAGE_ID + 4;
    let before = sim.handle.page(id).expect("page");

    let post = |url: String, body: Value| async move {
        let response = http().post(url).json(&body).send().await.expect("mutation");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("json"))
    };
    let (status, edited) = post(
        format!("{base}/{id}/edit"),
        json!({"title": "Renamed page"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(edited["page"]["version"], before.version + 1);
    assert_eq!(edited["webhook"]["status"], 200);
    let (_, created) = post(base.clone(), json!({"title": "Brand new", "parent_id": id})).await;
    let new_id = created["page"]["id"].as_u64().expect("new id");
    assert_eq!(created["page"]["version"], 1);
    let (_, moved) = post(format!("{base}/{new_id}/move"), json!({})).await;
    assert_eq!(moved["page"]["parent_id"], Value::Null);
    assert_eq!(moved["page"]["version"], 1, "moves keep the version");
    let (status, _) = post(format!("{base}/{new_id}/purge"), json!({})).await;
    assert_eq!(status, 400, "only trashed pages can be purged");
    let (_, trashed) = post(format!("{base}/{id}/trash"), json!({})).await;
    assert_eq!(trashed["page"]["status"], "trashed");
    let (_, restored) = post(format!("{base}/{id}/restore"), json!({})).await;
    assert_eq!(restored["page"]["status"], "current");
    post(format!("{base}/{id}/trash"), json!({})).await;
    let (status, _) = post(format!("{base}/{id}/purge"), json!({})).await;
    assert_eq!(status, 200);
    assert!(sim.handle.page(id).is_none());
    let (status, _) = post(format!("{base}/{id}/edit"), json!({})).await;
    assert_eq!(status, 404);

    let received = received.0.lock().expect("received").clone();
    let events: Vec<&str> = received.iter().map(|(e, ..)| e.as_str()).collect();
    assert_eq!(
        events,
        [
            "page_updated",
            "page_created",
            "page_moved",
            "page_trashed",
            "page_restored",
            "page_trashed",
            "page_removed"
        ]
    );
    for (event, body, signature, raw) in &received {
        assert_eq!(body["page"]["contentType"], "page", "{event}");
        assert_eq!(body["page"]["spaceKey"], "ENG", "{event}");
        assert!(
            body["page"]["id"].is_u64(),
            "{event}: Connect sends numeric ids"
        );
        assert!(body.get("timestamp").is_some_and(Value::is_i64));
        assert_eq!(
            signature.as_deref(),
            Some(
                format!(
                    "sha256={}",
                    webhook_signature(b"hook-secret", raw.as_bytes())
                )
                .as_str()
            )
        );
        assert!(!raw.contains("<p>"), "webhooks carry no body");
    }
    assert_eq!(received[0].1["updateTrigger"], "edit_page");
    assert_eq!(received[0].1["page"]["title"], "Renamed page");
    assert_eq!(sim.handle.stats().webhooks_delivered, 7);
}

/// The ids a listing or search response holds.
fn result_ids(body: &Value) -> Vec<u64> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").parse().expect("numeric id"))
        .collect()
}

#[tokio::test]
async fn a_page_moved_to_another_space_is_served_from_that_space_with_its_subtree() {
    let (target, received) = receiver().await;
    let mut config = SimConfig::new(5, 12);
    config.webhook_target = Some(target);
    config.other_spaces = vec![SimSpace::new(131_073, "OPS", "Operations")];
    let sim = confluence_sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts");
    let eng = sim.handle.space_id();
    let ops_home = sim
        .handle
        .homepage(131_073)
        .expect("every space has a homepage");
    let spaces: Value = get(&sim, "/wiki/api/v2/spaces")
        .await
        .json()
        .await
        .expect("json");
    let keys: Vec<&str> = spaces["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|s| s["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["ENG", "OPS"]);
    let ops: Value = get(&sim, "/wiki/api/v2/spaces?keys=OPS")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ops["results"][0]["id"], "131073");
    assert_eq!(ops["results"][0]["homepageId"], ops_home.to_string());

    // A page with a child moves under the other space's homepage, its child with it.
    let create = |title: &str, parent_id: Option<u64>| {
        sim.handle.create(confluence_sim::CreatePage {
            title: title.into(),
            parent_id,
            ..Default::default()
        })
    };
    let (moved, _) = create("Runbooks", None).await.expect("create");
    let (child, _) = create("Paging", Some(moved.id)).await.expect("create");
    let (moved, child) = (moved.id, child.id);
    let before = sim.handle.page(moved).expect("page");
    let (after, _) = sim
        .handle
        .move_page(
            moved,
            MovePage {
                parent_id: Some(ops_home),
            },
        )
        .await
        .expect("move to another space");
    assert_eq!(after.version, before.version, "a move keeps the version");
    assert_eq!(after.space_id, 131_073);

    for id in [moved, child] {
        let v2: Value = get(&sim, &format!("/wiki/api/v2/pages/{id}"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(v2["spaceId"], "131073", "page {id}");
        let v1: Value = get(
            &sim,
            &format!("/wiki/rest/api/content/{id}?expand=space,ancestors"),
        )
        .await
        .json()
        .await
        .expect("json");
        assert_eq!(v1["space"]["key"], "OPS", "page {id}");
        assert!(
            v1["_links"]["webui"]
                .as_str()
                .is_some_and(|w| w.starts_with("/spaces/OPS/")),
            "{v1}"
        );
        assert_eq!(v1["ancestors"][0]["id"], ops_home.to_string());
    }
    let listed = |path: String| {
        let sim = &sim;
        async move { result_ids(&get(sim, &path).await.json().await.expect("json")) }
    };
    let search = |space: &str| {
        listed(format!(
            "/wiki/rest/api/content/search?limit=250&cql=type%3Dpage%20and%20space%3D%22{space}%22"
        ))
    };
    let mut expected = vec![moved, child, ops_home];
    expected.sort();
    let in_eng = search("ENG").await;
    let mut in_ops = search("OPS").await;
    in_ops.sort();
    assert_eq!(in_eng.len(), 12);
    assert!(!in_eng.contains(&moved) && !in_eng.contains(&child));
    assert_eq!(in_ops, expected);
    let eng_pages = listed(format!("/wiki/api/v2/spaces/{eng}/pages?limit=250")).await;
    assert_eq!(eng_pages.len(), 12);
    assert!(!eng_pages.contains(&moved));
    let mut ops_pages = listed("/wiki/api/v2/spaces/131073/pages?limit=250".into()).await;
    ops_pages.sort();
    assert_eq!(ops_pages, expected);
    let mut bulk = listed("/wiki/api/v2/pages?space-id=131073&limit=250".into()).await;
    bulk.sort();
    assert_eq!(bulk, expected);

    // The webhook names the page in its new space; titles are unique per space only.
    let received = received.0.lock().expect("received").clone();
    let (event, body, ..) = received.last().expect("a webhook");
    assert_eq!(event, "page_moved");
    assert_eq!(body["page"]["spaceKey"], "OPS");
    assert_eq!(body["page"]["spaceId"], 131_073);
    let stayed = sim
        .handle
        .current_page_ids()
        .iter()
        .find(|id| ![moved, child].contains(id))
        .and_then(|id| sim.handle.page(*id))
        .expect("a page left in ENG");
    let same_title = |parent_id: Option<u64>| confluence_sim::CreatePage {
        title: stayed.title.clone(),
        parent_id,
        ..Default::default()
    };
    assert!(sim.handle.create(same_title(None)).await.is_err());
    let (created, _) = sim
        .handle
        .create(same_title(Some(ops_home)))
        .await
        .expect("the title is free in OPS");
    assert_eq!(
        (created.space_id, created.parent_id),
        (131_073, Some(ops_home))
    );
}

#[tokio::test]
async fn a_large_space_is_generated_with_its_shape() {
    let sim = start(4000, None).await;
    let pages = sim.handle.pages();
    assert_eq!(pages.len(), 4000);
    assert_eq!(
        pages.iter().filter(|p| p.body_target > 1_000_000).count(),
        8
    );
    let deepest = pages
        .iter()
        .map(|p| sim.handle.ancestors(p.id).len() + 1)
        .max();
    assert_eq!(deepest, Some(usize::from(confluence_sim::MAX_DEPTH)));
    let sizes: Vec<usize> = pages
        .iter()
        .step_by(97)
        .filter(|p| p.body_target < 1_000_000)
        .map(|p| sim.handle.body(p.id).map_or(0, |b| b.len()))
        .collect();
    assert!(
        sizes.iter().all(|s| (1024..=80 * 1024).contains(s)),
        "{sizes:?}"
    );
    assert!(pages.iter().any(|p| !p.labels.is_empty()));
    assert!(
        pages
            .iter()
            .map(|p| p.author)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 3
    );
}

#[tokio::test]
async fn blog_posts_have_their_own_endpoints_cql_type_and_webhooks() {
    let (target, received) = receiver().await;
    let mut config = SimConfig::new(9, 12);
    config.blog_post_count = 30;
    config.webhook_target = Some(target);
    let sim = confluence_sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts");
    let space = sim.handle.space_id();
    let posts = sim.handle.current_blog_post_ids();
    assert_eq!(posts.len(), 30);
    assert_eq!(sim.handle.current_page_ids().len(), 12);
    assert!(
        posts
            .iter()
            .all(|id| !sim.handle.current_page_ids().contains(id)),
        "ids are unique across types"
    );

    // The space's blog posts, paginated like its pages; no place in the tree.
    let mut listed = Vec::new();
    let mut next = Some(format!("/wiki/api/v2/spaces/{space}/blogposts?limit=7"));
    while let Some(path) = next.take() {
        let body: Value = get(&sim, &path).await.json().await.expect("json");
        for post in body["results"].as_array().expect("results") {
            assert!(post.get("parentId").is_none(), "{post}");
            let webui = post["_links"]["webui"].as_str().expect("webui");
            assert!(webui.starts_with("/spaces/ENG/blog/"), "{webui}");
            listed.push(post["id"].as_str().expect("id").parse::<u64>().expect("id"));
        }
        next = body["_links"]["next"].as_str().map(str::to_owned);
    }
    assert_eq!(listed, posts);
    let pages: Value = get(
        &sim,
        &format!("/wiki/api/v2/spaces/{space}/pages?limit=250"),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(pages["results"].as_array().expect("results").len(), 12);

    // Bodies in bulk and one by one; each type answers for its own ids only.
    let post = posts[3];
    let bulk: Value = get(
        &sim,
        &format!(
            "/wiki/api/v2/blogposts?id={post},{}&body-format=storage",
            posts[4]
        ),
    )
    .await
    .json()
    .await
    .expect("json");
    let bodies = bulk["results"].as_array().expect("results");
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        bodies[0]["body"]["storage"]["value"].as_str(),
        sim.handle.body(post).as_deref()
    );
    assert_eq!(
        get(&sim, &format!("/wiki/api/v2/blogposts/{post}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        get(&sim, &format!("/wiki/api/v2/pages/{post}"))
            .await
            .status(),
        404
    );
    let page = sim.handle.current_page_ids()[0];
    assert_eq!(
        get(&sim, &format!("/wiki/api/v2/blogposts/{page}"))
            .await
            .status(),
        404
    );
    let stats = sim.handle.stats();
    assert_eq!(stats.endpoint("v2.space_blogposts"), 5);
    assert_eq!(stats.endpoint("v2.blogposts"), 1);
    assert_eq!(stats.endpoint("v2.blogpost"), 2);

    // CQL: `type=blogpost`, or both types in one listing; v1 content says the type.
    let cql = |types: &str| {
        let cql = format!("{types} and space=\"ENG\" order by lastmodified asc");
        format!(
            "/wiki/rest/api/content/search?limit=250&cql={}",
            cql.replace(' ', "%20")
                .replace('"', "%22")
                .replace(',', "%2C")
        )
    };
    let count = |body: &Value, kind: &str| {
        body["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter(|c| c["type"] == kind)
            .count()
    };
    let blog_only: Value = get(&sim, &cql("type=blogpost"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (count(&blog_only, "blogpost"), count(&blog_only, "page")),
        (30, 0)
    );
    let both: Value = get(&sim, &cql("type in (page,blogpost)"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!((count(&both, "blogpost"), count(&both, "page")), (30, 12));
    let content: Value = get(
        &sim,
        &format!("/wiki/rest/api/content/{post}?expand=ancestors"),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(content["type"], "blogpost");
    assert_eq!(content["ancestors"], json!([]));

    // Mutations of a blog post send `blog_*` webhooks carrying it as `blog`; it cannot move.
    let (created, _) = sim
        .handle
        .create_blog_post(confluence_sim::CreatePage {
            title: "Release 4.0".into(),
            ..Default::default()
        })
        .await
        .expect("publish");
    assert_eq!(created.parent_id, None);
    sim.handle
        .edit(created.id, confluence_sim::EditPage::default())
        .await
        .expect("edit");
    assert!(
        sim.handle
            .move_page(created.id, confluence_sim::MovePage::default())
            .await
            .is_err()
    );
    sim.handle.trash(created.id).await.expect("trash");
    sim.handle.restore(created.id).await.expect("restore");
    sim.handle.trash(created.id).await.expect("trash");
    sim.handle.purge(created.id).await.expect("purge");
    let received = received.0.lock().expect("received").clone();
    let events: Vec<&str> = received.iter().map(|(e, ..)| e.as_str()).collect();
    assert_eq!(
        events,
        [
            "blog_created",
            "blog_updated",
            "blog_trashed",
            "blog_restored",
            "blog_trashed",
            "blog_removed"
        ]
    );
    for (event, body, ..) in &received {
        assert_eq!(body["blog"]["contentType"], "blogpost", "{event}");
        assert_eq!(body["blog"]["id"], created.id, "{event}");
        assert!(body.get("page").is_none(), "{event}");
    }
}

#[tokio::test]
async fn comments_are_listed_per_page_with_replies_resolution_and_webhooks() {
    let (target, received) = receiver().await;
    let mut config = SimConfig::new(21, 10);
    config.comment_count = 200;
    config.webhook_target = Some(target);
    let sim = confluence_sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts");
    // The page with the most comments.
    let page = sim
        .handle
        .current_page_ids()
        .into_iter()
        .max_by_key(|id| sim.handle.comments(*id).len())
        .expect("a page");
    let all = sim.handle.comments(page);
    assert!(all.iter().any(|c| c.parent_comment_id.is_some()), "replies");

    // Footer and inline comments at their endpoints (top level only), paginated, with bodies.
    let mut listed = Vec::new();
    for location in ["footer", "inline"] {
        let mut next = Some(format!(
            "/wiki/api/v2/pages/{page}/{location}-comments?body-format=storage&limit=3"
        ));
        while let Some(path) = next.take() {
            let body: Value = get(&sim, &path).await.json().await.expect("json");
            for comment in body["results"].as_array().expect("results") {
                assert_eq!(comment["pageId"], page.to_string());
                assert!(
                    comment["body"]["storage"]["value"]
                        .as_str()
                        .is_some_and(|b| b.starts_with("<p>"))
                );
                assert!(comment["version"]["authorId"].is_string());
                if location == "inline" {
                    assert!(comment["resolutionStatus"].is_string(), "{comment}");
                    assert!(comment["properties"]["inlineOriginalSelection"].is_string());
                } else {
                    assert!(comment.get("resolutionStatus").is_none());
                }
                let id = comment["id"].as_str().expect("id").to_owned();
                // Replies at the comment's children endpoint.
                let children: Value = get(
                    &sim,
                    &format!("/wiki/api/v2/{location}-comments/{id}/children?body-format=storage"),
                )
                .await
                .json()
                .await
                .expect("json");
                for reply in children["results"].as_array().expect("results") {
                    assert_eq!(reply["parentCommentId"], id.as_str());
                    listed.push(reply["id"].as_str().expect("id").to_owned());
                }
                listed.push(id);
            }
            next = body["_links"]["next"].as_str().map(str::to_owned);
        }
    }
    listed.sort();
    let mut expected: Vec<String> = all.iter().map(|c| c.id.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    // The space's comments by CQL (`type=comment`), with their page, the comment a reply answers,
    // their location and an inline one's resolution, followed through `_links.next`.
    let mut searched = Vec::new();
    let mut next = Some(
        "/wiki/rest/api/content/search?cql=type%3Dcomment%20and%20space%3D%22ENG%22&limit=50\
         &expand=body.storage,version,container,ancestors,extensions.resolution"
            .to_owned(),
    );
    while let Some(path) = next {
        let path = path.strip_prefix("/wiki").unwrap_or(&path).to_owned();
        let body: serde_json::Value = get(&sim, &format!("/wiki{path}"))
            .await
            .json()
            .await
            .expect("json");
        for hit in body["results"].as_array().expect("results") {
            assert_eq!(hit["type"], "comment");
            let id: u64 = hit["id"].as_str().expect("id").parse().expect("numeric");
            let sim_comment = sim
                .handle
                .comments(
                    hit["container"]["id"]
                        .as_str()
                        .expect("container")
                        .parse()
                        .expect("id"),
                )
                .into_iter()
                .find(|c| c.id == id)
                .expect("a comment of its container");
            assert_eq!(hit["body"]["storage"]["value"], sim_comment.body.as_str());
            assert_eq!(hit["version"]["number"], sim_comment.version);
            let location = match sim_comment.location {
                confluence_sim::CommentLocation::Footer => "footer",
                confluence_sim::CommentLocation::Inline => "inline",
            };
            assert_eq!(hit["extensions"]["location"], location);
            assert_eq!(
                hit["ancestors"][0]["id"].as_str(),
                sim_comment
                    .parent_comment_id
                    .map(|p| p.to_string())
                    .as_deref()
            );
            assert_eq!(
                hit["extensions"]["resolution"]["status"].as_str().is_some(),
                sim_comment.resolution.is_some()
            );
            searched.push(id);
        }
        next = body["_links"]["next"].as_str().map(str::to_owned);
    }
    assert_eq!(searched.len(), 200, "every comment once");

    let blog_id = page;
    assert_eq!(
        get(
            &sim,
            &format!("/wiki/api/v2/blogposts/{blog_id}/footer-comments")
        )
        .await
        .status(),
        404,
        "a page is no blog post"
    );

    // Comment mutations send comment_* webhooks naming the page; the page keeps its version.
    let version = sim.handle.page(page).expect("page").version;
    let (created, _) = sim
        .handle
        .add_comment(
            page,
            confluence_sim::CreateComment {
                body: "<p>Is the rollback step still right?</p>".into(),
                location: confluence_sim::CommentLocation::Inline,
                reply_to: None,
                selection: Some("rollback".into()),
            },
        )
        .await
        .expect("comment");
    assert_eq!(created.resolution, Some(confluence_sim::Resolution::Open));
    sim.handle
        .resolve_comment(created.id, true)
        .await
        .expect("resolve");
    sim.handle.remove_comment(created.id).await.expect("remove");
    assert_eq!(sim.handle.page(page).expect("page").version, version);
    let received = received.0.lock().expect("received").clone();
    let events: Vec<&str> = received.iter().map(|(e, ..)| e.as_str()).collect();
    assert_eq!(
        events,
        ["comment_created", "comment_updated", "comment_removed"]
    );
    for (event, body, ..) in &received {
        assert_eq!(body["comment"]["contentType"], "comment", "{event}");
        assert_eq!(body["comment"]["id"], created.id.to_string(), "{event}");
        assert_eq!(body["comment"]["parent"]["id"], page, "{event}");
        assert_eq!(body["comment"]["parent"]["contentType"], "page", "{event}");
    }
}

#[tokio::test]
async fn attachments_are_listed_searched_downloaded_by_version_and_send_webhooks() {
    let (target, received) = receiver().await;
    let mut config = SimConfig::new(7, 6);
    config.attachment_count = 9;
    config.webhook_target = Some(target);
    let sim = confluence_sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts");
    let page = sim.handle.current_page_ids()[1];
    let upload = |data: &[u8]| confluence_sim::CreateAttachment {
        file_name: "plan v1.txt".into(),
        media_type: "text/plain".into(),
        data: data.to_vec(),
    };
    let (created, _) = sim
        .handle
        .attach(page, upload(b"first"))
        .await
        .expect("attach");
    let (updated, _) = sim
        .handle
        .attach(page, upload(b"second text"))
        .await
        .expect("new version");
    assert_eq!(
        (created.version, updated.version, updated.id),
        (1, 2, created.id)
    );

    // The page's v2 listing and the attachment itself agree; the download link names the version.
    let listing: Value = get(&sim, &format!("/wiki/api/v2/pages/{page}/attachments"))
        .await
        .json()
        .await
        .expect("listing");
    let listed = listing["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|a| a["title"] == "plan v1.txt")
        .expect("listed")
        .clone();
    assert_eq!(listed["id"], format!("att{}", created.id));
    assert_eq!(listed["pageId"], page.to_string());
    assert_eq!(listed["version"]["number"], 2);
    assert_eq!(listed["fileSize"], 11);
    let single: Value = get(&sim, &format!("/wiki/api/v2/attachments/att{}", created.id))
        .await
        .json()
        .await
        .expect("single");
    assert_eq!(single["downloadLink"], listed["downloadLink"]);
    let link = listed["downloadLink"].as_str().expect("link");
    assert!(link.starts_with(&format!(
        "/download/attachments/{page}/plan%20v1.txt?version=2"
    )));
    let current = get(&sim, &format!("/wiki{link}")).await;
    assert_eq!(current.text().await.expect("body"), "second text");
    let first = get(
        &sim,
        &format!("/wiki/download/attachments/{page}/plan%20v1.txt?version=1"),
    )
    .await;
    assert_eq!(first.text().await.expect("body"), "first");

    // CQL `type=attachment` finds every current attachment with its page.
    let search: Value = get(
        &sim,
        "/wiki/rest/api/content/search?cql=type%3Dattachment%20and%20space%3DENG&expand=version,container&limit=250",
    )
    .await
    .json()
    .await
    .expect("search");
    let results = search["results"].as_array().expect("results");
    assert_eq!(results.len(), 10);
    let hit = results
        .iter()
        .find(|a| a["title"] == "plan v1.txt")
        .expect("found");
    assert_eq!(hit["container"]["id"], page.to_string());
    assert_eq!(hit["extensions"]["mediaType"], "text/plain");
    assert_eq!(hit["_links"]["download"], listed["downloadLink"]);

    // Trash and removal leave listings, search and downloads; each sends its webhook with the
    // page as `attachedTo`.
    sim.handle
        .trash_attachment(created.id)
        .await
        .expect("trash");
    assert_eq!(get(&sim, &format!("/wiki{link}")).await.status(), 404);
    sim.handle
        .restore_attachment(created.id)
        .await
        .expect("restore");
    sim.handle
        .remove_attachment(created.id)
        .await
        .expect("remove");
    assert!(
        sim.handle
            .attachments(page)
            .iter()
            .all(|a| a.id != created.id)
    );
    let events: Vec<(String, Value)> = received
        .0
        .lock()
        .expect("received")
        .iter()
        .map(|(event, body, ..)| (event.clone(), body.clone()))
        .collect();
    assert_eq!(
        events.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
        [
            "attachment_created",
            "attachment_updated",
            "attachment_trashed",
            "attachment_restored",
            "attachment_removed"
        ]
    );
    for (_, body) in &events {
        assert_eq!(body["attachedTo"]["id"], page);
        assert_eq!(body["attachment"]["id"], format!("att{}", created.id));
    }
}

#[tokio::test]
async fn folders_sit_in_the_page_tree_and_take_their_pages_to_the_trash() {
    let (target, received) = receiver().await;
    let sim = start(4, Some(target)).await;
    let home = sim.handle.homepage(sim.handle.space_id()).expect("home");
    let post = |path: String, body: Value| {
        let url = format!("http://{}{path}", sim.addr);
        async move {
            let response = http().post(url).json(&body).send().await.expect("mutation");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("json")
        }
    };
    let created = post("/_sim/folders".into(), json!({"title": "Handbook"})).await;
    let folder = created["page"]["id"].as_u64().expect("folder id");
    assert_eq!(created["page"]["type"], "folder");
    assert_eq!(
        created["webhook"],
        Value::Null,
        "Cloud sends no folder webhook"
    );
    let created = post(
        "/_sim/pages".into(),
        json!({"title": "On call", "parent_id": folder, "body": "<p>pager</p>"}),
    )
    .await;
    let page = created["page"]["id"].as_u64().expect("page id");

    // v2: the folder (FolderSingle), the page naming it as a folder parent, ancestors typed.
    let found: Value = get(&sim, &format!("/wiki/api/v2/folders/{folder}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(found["type"], "folder");
    assert_eq!(found["title"], "Handbook");
    assert_eq!(found["parentId"], home.to_string());
    assert_eq!(found["parentType"], "page");
    assert!(found.get("body").is_none());
    let as_page = get(&sim, &format!("/wiki/api/v2/pages/{folder}")).await;
    assert_eq!(as_page.status(), 404, "a folder is not a page");
    let v2: Value = get(&sim, &format!("/wiki/api/v2/pages/{page}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (v2["parentId"].as_str(), v2["parentType"].as_str()),
        (Some(folder.to_string().as_str()), Some("folder"))
    );
    let ancestors: Value = get(&sim, &format!("/wiki/api/v2/pages/{page}/ancestors"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        ancestors["results"],
        json!([{"id": home.to_string(), "type": "page"}, {"id": folder.to_string(), "type": "folder"}])
    );
    // v1: folders are content too, and a page's ancestors run through them.
    let v1: Value = get(
        &sim,
        &format!("/wiki/rest/api/content/{page}?expand=ancestors,body.storage"),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(v1["ancestors"][1]["type"], "folder");
    assert_eq!(v1["ancestors"][1]["title"], "Handbook");
    let listing: Value = get(
        &sim,
        &format!("/wiki/api/v2/spaces/{}/pages", sim.handle.space_id()),
    )
    .await
    .json()
    .await
    .expect("json");
    assert!(
        !result_ids(&listing).contains(&folder),
        "folders are not listed as pages"
    );

    // v1 content by space and title, as include macros name pages.
    let by_title: Value = get(
        &sim,
        "/wiki/rest/api/content?spaceKey=ENG&title=On%20call&expand=body.storage,version",
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(result_ids(&by_title), [page]);
    assert_eq!(
        by_title["results"][0]["body"]["storage"]["value"],
        "<p>pager</p>"
    );
    let none: Value = get(&sim, "/wiki/rest/api/content?spaceKey=ENG&title=Handbook")
        .await
        .json()
        .await
        .expect("json");
    assert!(
        result_ids(&none).is_empty(),
        "type=page by default: not the folder"
    );

    // A rename or move sends nothing; a trash takes the pages along, each with its webhook.
    post(
        format!("/_sim/pages/{folder}/edit"),
        json!({"title": "Handbook 2"}),
    )
    .await;
    let trashed = post(format!("/_sim/pages/{folder}/trash"), json!({})).await;
    assert_eq!(trashed["page"]["status"], "trashed");
    assert_eq!(
        get(&sim, &format!("/wiki/api/v2/pages/{page}?status=current"))
            .await
            .status(),
        404
    );
    let events: Vec<(String, Value)> = received
        .0
        .lock()
        .expect("received")
        .iter()
        .map(|(event, body, ..)| (event.clone(), body["page"]["id"].clone()))
        .collect();
    assert_eq!(
        events,
        [
            ("page_created".to_owned(), json!(page)),
            ("page_trashed".to_owned(), json!(page))
        ]
    );
}

#[tokio::test]
async fn webhooks_registered_through_the_api_are_listed_delivered_and_removed() {
    let (receiver_url, received) = receiver().await;
    let sim = start(5, None).await;
    let api = |method: reqwest::Method, path: &str| {
        http()
            .request(method, format!("http://{}{path}", sim.addr))
            .basic_auth(AUTH.0, Some(AUTH.1))
    };
    // Cloud's site-admin resource: unsigned, to the URL as registered.
    let cloud = api(reqwest::Method::POST, "/wiki/rest/webhooks/1.0/webhook")
        .json(&json!({"name": "pagestream eng page_updated", "url": format!("{receiver_url}/page_updated"),
                      "events": ["page_updated"]}))
        .send()
        .await
        .expect("register");
    assert_eq!(cloud.status().as_u16(), 201);
    let cloud: Value = cloud.json().await.expect("json");
    let cloud_self = cloud["self"].as_str().expect("self").to_owned();
    // Data Center's: naming the event in the body, signed with the registered secret.
    let dc = api(reqwest::Method::POST, "/wiki/rest/api/webhooks")
        .json(
            &json!({"name": "pagestream eng", "url": format!("{receiver_url}/dc"),
                      "events": ["page_updated", "page_trashed"], "active": true,
                      "configuration": {"secret": "dc-registered-secret-0123"}}),
        )
        .send()
        .await
        .expect("register");
    assert_eq!(dc.status().as_u16(), 201);
    let dc: Value = dc.json().await.expect("json");
    assert_eq!(
        dc["configuration"],
        json!({}),
        "the secret is never shown again"
    );
    let unauthorized = http()
        .get(format!("http://{}/wiki/rest/api/webhooks", sim.addr))
        .send()
        .await
        .expect("request");
    assert_eq!(unauthorized.status().as_u16(), 401);

    let listed: Value = api(reqwest::Method::GET, "/wiki/rest/webhooks/1.0/webhook")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let listed: Value = api(reqwest::Method::GET, "/wiki/rest/api/webhooks")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed["results"][0]["events"],
        json!(["page_updated", "page_trashed"])
    );

    let id = confluence_sim::FIRST_PAGE_ID + 2;
    sim.handle
        .edit(id, confluence_sim::EditPage::default())
        .await
        .expect("edit");
    let deliveries = received.0.lock().expect("received").clone();
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    let cloud_delivery = deliveries
        .iter()
        .find(|d| d.0 == "page_updated")
        .expect("cloud");
    assert_eq!(cloud_delivery.2, None, "unsigned");
    assert_eq!(cloud_delivery.1["page"]["id"], id);
    let dc_delivery = deliveries
        .iter()
        .find(|d| d.0 == "dc")
        .expect("data center");
    assert_eq!(dc_delivery.1["event"], "page_updated");
    assert_eq!(
        dc_delivery.2.as_deref(),
        Some(
            format!(
                "sha256={}",
                webhook_signature(b"dc-registered-secret-0123", dc_delivery.3.as_bytes())
            )
            .as_str()
        )
    );

    // Removed: listed no more, delivered no more.
    let cloud_id = cloud_self.rsplit('/').next().expect("id");
    for path in [
        format!("/wiki/rest/webhooks/1.0/webhook/{cloud_id}"),
        format!("/wiki/rest/api/webhooks/{}", dc["id"]),
    ] {
        let deleted = api(reqwest::Method::DELETE, &path)
            .send()
            .await
            .expect("delete");
        assert_eq!(deleted.status().as_u16(), 204, "{path}");
        let again = api(reqwest::Method::DELETE, &path)
            .send()
            .await
            .expect("delete");
        assert_eq!(again.status().as_u16(), 404, "{path}");
    }
    sim.handle
        .edit(id, confluence_sim::EditPage::default())
        .await
        .expect("edit");
    assert_eq!(received.0.lock().expect("received").len(), 2);
}
