//! Webhook registration against the simulator: Cloud's site-admin resource and Data Center's,
//! created, listed and deleted; a change is sent once, never retried.

use confluence_sim::{FaultRule, Faults};
use pagestream_confluence::{
    Auth, ConfluenceClient, ConfluenceError, NewWebhook, Secret, WebhookApi,
};

use super::{client, fast_config, sim};

const PAT: &str = "pat-Qq77-secret";

fn registration(url: &str, secret: Option<&str>) -> NewWebhook {
    NewWebhook {
        name: "pagestream test".into(),
        url: Secret::new(url),
        events: vec!["page_created".into(), "page_updated".into()],
        secret: secret.map(Secret::new),
    }
}

#[tokio::test]
async fn webhooks_are_created_listed_and_deleted_on_cloud_and_data_center() {
    let sim = sim(3).await;
    let mut config = fast_config(&sim);
    config.auth = Auth::data_center(PAT);
    let data_center = ConfluenceClient::new(config).expect("client");
    for (client, api, secret) in [
        (client(&sim), WebhookApi::Cloud, None),
        (
            data_center,
            WebhookApi::DataCenter,
            Some("dc-signing-secret-0123456789"),
        ),
    ] {
        assert!(client.webhooks(api).await.expect("list").is_empty());
        let url = "http://127.0.0.1:9/webhooks/confluence/eng";
        let created = client
            .create_webhook(api, &registration(url, secret))
            .await
            .expect("create");
        assert!(!created.id.is_empty());
        let listed = client.webhooks(api).await.expect("list");
        assert_eq!(listed, vec![created.clone()], "{api:?}");
        assert_eq!(listed[0].url, url);
        assert_eq!(listed[0].events, ["page_created", "page_updated"]);
        assert!(listed[0].active);
        client
            .delete_webhook(api, &created.id)
            .await
            .expect("delete");
        assert!(client.webhooks(api).await.expect("list").is_empty());
        let gone = client
            .delete_webhook(api, &created.id)
            .await
            .expect_err("already gone");
        assert!(gone.is_not_found(), "{gone}");
    }
}

#[tokio::test]
async fn a_registration_is_sent_once_and_a_refusal_is_typed() {
    let sim = sim(3).await;
    let client = client(&sim);
    let hook = registration(
        "http://127.0.0.1:9/webhooks/confluence/eng/p/path-secret",
        None,
    );
    // A 503 may hide a registration that took effect: it is reported, not sent again.
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(503).on_path("/wiki/rest/webhooks")],
        ..Faults::default()
    });
    let before = client.stats().requests;
    let error = client
        .create_webhook(WebhookApi::Cloud, &hook)
        .await
        .expect_err("503");
    assert!(
        matches!(error, ConfluenceError::RateLimited { attempts: 1, .. }),
        "{error}"
    );
    assert_eq!(client.stats().requests - before, 1, "sent once");
    assert_eq!(client.stats().retries, 0);
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(403).on_path("/wiki/rest/webhooks")],
        ..Faults::default()
    });
    let refused = client
        .create_webhook(WebhookApi::Cloud, &hook)
        .await
        .expect_err("403");
    assert!(
        matches!(refused, ConfluenceError::Forbidden { .. }),
        "{refused}"
    );
    assert!(!refused.to_string().contains("path-secret"), "{refused}");
    sim.handle.clear_faults();
    assert!(
        client
            .webhooks(WebhookApi::Cloud)
            .await
            .expect("list")
            .is_empty()
    );
}
