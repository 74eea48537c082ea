use std::collections::HashSet;

use axum::http::StatusCode;
use futures::StreamExt;

use crate::harness::{
    CLOUD_SECRET, DC_SECRET, Options, cloud_request, dc_request, fixture, send, start,
};

fn dc_update(page: u64, version: u64) -> Vec<u8> {
    serde_json::json!({
        "timestamp": 1_762_302_000_123_u64,
        "event": "page_updated",
        "userAccountId": "8a7f808a7e1b2c3d017e1b2c3d4e0001",
        "page": {"id": page, "spaceKey": "DOCS", "version": version, "contentType": "page"}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn bodies_beyond_the_limit_get_413() {
    let harness = start(Options {
        max_body_bytes: 1024,
        ..Options::default()
    })
    .await;
    let mut padded: serde_json::Value =
        serde_json::from_slice(&fixture("dc_page_updated.json")).expect("fixture");
    padded["padding"] = "x".repeat(2048).into();
    let body = padded.to_string().into_bytes();
    let (status, answer) = harness.send(dc_request("dc", None, body, DC_SECRET)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");
    assert_eq!(answer["error"]["message"], "body exceeds 1024 bytes");
    // Just under the limit passes.
    let (status, _) = harness
        .send(dc_request(
            "dc",
            None,
            fixture("dc_page_updated.json"),
            DC_SECRET,
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(harness.hinted_count().await, 1);
}

#[tokio::test]
async fn each_source_is_held_to_its_rate() {
    let harness = start(Options {
        rate_per_sec: 0.01,
        burst: 3,
        ..Options::default()
    })
    .await;
    for version in 1..=3 {
        let (status, _) = harness
            .send(dc_request("dc", None, dc_update(7, version), DC_SECRET))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let response = {
        use tower::ServiceExt;
        harness
            .app
            .clone()
            .oneshot(dc_request("dc", None, dc_update(7, 4), DC_SECRET))
            .await
            .expect("infallible")
    };
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(
        (1..=100).contains(&retry_after),
        "retry-after {retry_after}"
    );
    // The other source has its own budget.
    let (status, _) = harness
        .send(cloud_request(
            "cloud",
            "page_updated",
            fixture("cloud_page_updated.json"),
            CLOUD_SECRET,
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The limit comes before verification: a forged delivery is limited like a genuine one, and
    // the limited one was not published.
    assert_eq!(
        harness
            .send(dc_request("dc", None, dc_update(7, 5), "guess"))
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(harness.hinted_count().await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forgeries_is_bounded_and_other_sources_still_deliver() {
    const FLOOD: usize = 2_000;
    let harness = start(Options {
        rate_per_sec: 5.0,
        burst: 20,
        ..Options::default()
    })
    .await;
    let app = harness.app.clone();
    let flood = tokio::spawn(async move {
        futures::stream::iter(0..FLOOD)
            .map(|i| {
                let app = app.clone();
                let request = dc_request("dc", None, dc_update(7, i as u64), "forged-secret");
                async move { send(&app, request).await.0 }
            })
            .buffer_unordered(32)
            .collect::<Vec<StatusCode>>()
            .await
    });
    // During the flood, another source's genuine delivery goes through.
    let (status, _) = harness
        .send(cloud_request(
            "cloud",
            "page_updated",
            fixture("cloud_page_updated.json"),
            CLOUD_SECRET,
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let statuses = flood.await.expect("flood");
    let verified = statuses
        .iter()
        .filter(|status| **status == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|status| **status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(verified + limited, FLOOD, "only 401 and 429");
    // The burst plus what the rate refilled during the flood: a bounded number of verifications.
    assert!(
        (20..200).contains(&verified),
        "{verified} forgeries were verified"
    );
    assert_eq!(harness.hinted_count().await, 1);
}

#[tokio::test]
async fn the_same_hint_ten_times_is_stored_once() {
    let harness = start(Options::default()).await;
    let mut ids = HashSet::new();
    let mut duplicates = 0;
    for _ in 0..10 {
        let (status, answer) = harness
            .send(dc_request(
                "dc",
                None,
                fixture("dc_page_updated.json"),
                DC_SECRET,
            ))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.insert(answer["event_id"].as_str().expect("event id").to_owned());
        if answer["duplicate"] == true {
            duplicates += 1;
        }
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(duplicates, 9);
    assert_eq!(harness.hinted_count().await, 1);
    // A new version is a new fact.
    let (_, answer) = harness
        .send(dc_request("dc", None, dc_update(98305, 13), DC_SECRET))
        .await;
    assert_eq!(answer["duplicate"], false);
    assert_eq!(harness.hinted_count().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_ten_thousand_loses_nothing() {
    const DELIVERIES: u64 = 10_000;
    let harness = start(Options {
        rate_per_sec: 1_000_000.0,
        burst: 1_000_000,
        ..Options::default()
    })
    .await;
    let app = harness.app.clone();
    let statuses: Vec<StatusCode> = futures::stream::iter(0..DELIVERIES)
        .map(|i| {
            let app = app.clone();
            // Distinct pages, some with several versions.
            let request = dc_request("dc", None, dc_update(1_000 + i / 2, 1 + i % 2), DC_SECRET);
            async move { send(&app, request).await.0 }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let accepted = statuses
        .iter()
        .filter(|status| **status == StatusCode::ACCEPTED)
        .count();
    assert_eq!(
        accepted as u64,
        DELIVERIES,
        "{:?}",
        statuses.iter().find(|s| **s != StatusCode::ACCEPTED)
    );
    assert_eq!(harness.hinted_count().await, DELIVERIES);
}
