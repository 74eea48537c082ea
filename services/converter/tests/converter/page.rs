//! The page-aware entry point: links resolve against the page's own site, space and id.

use pagestream_converter::{ConvertOptions, convert, convert_page};
use pagestream_events::PageChanged;

const BODY: &str = "<p><ac:link><ri:page ri:content-title=\"Deploy Guide\" /></ac:link> \
    <ac:link><ri:attachment ri:filename=\"plan.pdf\" /></ac:link> \
    <ac:structured-macro ac:name=\"jira\"><ac:parameter ac:name=\"key\">OPS-9</ac:parameter></ac:structured-macro></p>";

fn page_changed(url: &str) -> PageChanged {
    serde_json::from_value(serde_json::json!({
        "source": "acme",
        "page_id": "4242",
        "space_key": "ENG",
        "title": "Runbook",
        "version": 7,
        "path": "/1/4242",
        "url": url,
        "labels": ["ops"],
        "last_modified": "2024-06-01T10:00:00Z",
        "body_storage": BODY,
    }))
    .expect("page.changed payload")
}

#[test]
fn cloud_pages_link_into_their_site_and_jira() {
    let page = page_changed("https://acme.atlassian.net/wiki/spaces/ENG/pages/4242/Runbook");
    let converted = convert_page(&page).expect("page converts");
    assert_eq!(converted.page, page.page);
    assert_eq!(
        converted.markdown,
        "[Deploy Guide](https://acme.atlassian.net/wiki/display/ENG/Deploy%20Guide) \
         [plan.pdf](https://acme.atlassian.net/wiki/download/attachments/4242/plan.pdf) \
         [OPS-9](https://acme.atlassian.net/browse/OPS-9)\n"
    );
    assert_eq!(
        converted.metadata.internal_links[0].space_key.as_deref(),
        Some("ENG")
    );
    assert_eq!(converted.metadata.jira_issue_links, ["OPS-9"]);
}

#[test]
fn data_center_pages_link_into_their_site_but_not_into_jira() {
    let page = page_changed("https://wiki.corp.example/confluence/display/ENG/Runbook");
    let converted = convert_page(&page).expect("page converts");
    assert_eq!(
        converted.markdown,
        "[Deploy Guide](https://wiki.corp.example/confluence/display/ENG/Deploy%20Guide) \
         [plan.pdf](https://wiki.corp.example/confluence/download/attachments/4242/plan.pdf) \
         OPS-9\n"
    );
}

#[test]
fn without_page_context_links_degrade_to_text_and_relative_files() {
    let conversion = convert(BODY, &ConvertOptions::default()).expect("converts");
    assert_eq!(
        conversion.markdown,
        "Deploy Guide [plan.pdf](plan.pdf) OPS-9\n"
    );
    assert_eq!(conversion.metadata.internal_links[0].space_key, None);
}
