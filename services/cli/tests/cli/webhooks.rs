//! `sources add --register-webhooks` and `sources webhooks`: the simulator's registered webhooks
//! (Cloud's unsigned ones at the path-secret URL, Data Center's signed one) deliver an edit to the
//! ingester, and the edit reaches search without a sync; registering twice creates nothing; a
//! rotated path secret shows in `check`; `remove` removes only the source's own.

use std::time::Duration;

use confluence_sim::EditPage;
use pagestream_cli::CliError;
use pagestream_events::WEBHOOK_EVENTS;

use super::stack::{Provider, SIM_PAT, SOURCE, Stack, eventually};

#[tokio::test]
async fn registered_webhooks_deliver_an_edit_and_are_checked_and_removed() {
    let stack = Stack::start(6, Provider::Hash(384)).await;
    let public = stack
        .webhook_url
        .trim_end_matches(&format!("/webhooks/confluence/{SOURCE}"))
        .to_owned();
    let site = stack.sim.base_url();
    let events = WEBHOOK_EVENTS.len();
    let added = stack
        .add_source_with(&["--register-webhooks", "--public-url", &public])
        .await
        .expect("sources add --register-webhooks");
    assert!(
        added.contains(&format!(
            "registered {events} webhook(s) at {public}: {events} of {events} events delivered"
        )),
        "{added}"
    );
    // Data Center on the same site: one webhook, signed with a secret the api made for it; the
    // api's own public URL is the default.
    let dc = stack
        .cli(&[
            "sources",
            "add",
            "--key",
            "docs-dc",
            "--site-url",
            &site,
            "--space",
            "ENG",
            "--personal-token",
            SIM_PAT,
            "--register-webhooks",
        ])
        .await
        .expect("data center source");
    assert!(dc.contains("registered 1 webhook(s)"), "{dc}");

    let check = stack
        .cli(&["sources", "webhooks", SOURCE, "check"])
        .await
        .expect("healthy");
    assert!(
        check.contains(&format!(
            "all {events} events of {SOURCE} are delivered to {public}"
        )),
        "{check}"
    );
    assert!(
        check.contains("page_updated          ok (webhook"),
        "{check}"
    );
    let again = stack
        .cli(&[
            "sources",
            "webhooks",
            SOURCE,
            "register",
            "--public-url",
            &public,
        ])
        .await
        .expect("register again");
    assert!(again.contains("0 created, 0 removed"), "{again}");
    let listed = stack
        .cli(&["sources", "webhooks", SOURCE, "list"])
        .await
        .expect("list");
    assert!(
        listed.contains(&format!(
            "{public}/webhooks/confluence/{SOURCE}/p/***/page_updated"
        )),
        "{listed}"
    );

    // An edit after a sync: the simulator delivers it to both registrations, the ingester takes
    // both, and the new text is searchable without another sync.
    let synced = stack
        .cli(&["sync", SOURCE, "--full", "--wait"])
        .await
        .expect("sync");
    assert!(synced.contains("sync done"), "{synced}");
    let page = stack.sim.handle.current_page_ids()[1];
    let before = stack.sim.handle.stats();
    stack
        .sim
        .handle
        .edit(
            page,
            EditPage {
                body: Some("<p>The quartermaster keeps the marmalade ledger.</p>".to_owned()),
                ..EditPage::default()
            },
        )
        .await
        .expect("edit");
    let after = stack.sim.handle.stats();
    assert_eq!(after.webhooks_delivered - before.webhooks_delivered, 2);
    assert_eq!(after.webhooks_failed, before.webhooks_failed);
    eventually(
        "the edit is searchable",
        Duration::from_secs(60),
        || async {
            stack
                .search_pages("quartermaster marmalade ledger")
                .await
                .first()
                == Some(&page.to_string())
        },
    )
    .await;

    // A rotated path secret: every webhook now points where the ingester refuses.
    stack
        .cli(&["sources", "webhook-url", SOURCE, "--public-url", &public])
        .await
        .expect("rotate");
    let stale = stack
        .cli(&["sources", "webhooks", SOURCE, "check"])
        .await
        .expect_err("stale webhooks");
    assert!(
        matches!(stale, CliError::WebhooksUnhealthy { .. }),
        "{stale}"
    );
    let replaced = stack
        .cli(&["sources", "webhooks", SOURCE, "register"])
        .await
        .expect("replace");
    assert!(
        replaced.contains(&format!("{events} created, {events} removed")),
        "{replaced}"
    );

    let removed = stack
        .cli(&["sources", "webhooks", SOURCE, "remove"])
        .await
        .expect("remove");
    assert!(
        removed.contains(&format!("removed {events} webhook(s)")),
        "{removed}"
    );
    let none = stack
        .cli(&["sources", "webhooks", SOURCE, "list"])
        .await
        .expect("list");
    assert!(none.contains("no webhooks point at"), "{none}");
    let kept = stack
        .cli(&["sources", "webhooks", "docs-dc", "check"])
        .await
        .expect("the other source's webhook is untouched");
    assert!(kept.contains("are delivered"), "{kept}");
}
