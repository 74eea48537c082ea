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

#[test]
fn comments_follow_the_body_threaded_dated_and_marked_resolved() {
    let mut page = page_changed("https://acme.atlassian.net/wiki/spaces/ENG/pages/4242/Runbook");
    page.comments = serde_json::from_value(serde_json::json!([
        {"id": "501", "location": "footer", "version": 1,
         "author": {"account_id": "712020:ana"}, "last_modified": "2024-06-02T08:00:00Z",
         "body_storage": "<p>Rotate the <strong>quokka</strong> key first.</p>"},
        {"id": "502", "location": "footer", "parent_id": "501", "version": 2,
         "author": {"account_id": "712020:bo", "display_name": "Bo"},
         "last_modified": "2024-06-03T09:00:00Z",
         "body_storage": "<p>Done, see <ac:structured-macro ac:name=\"jira\"><ac:parameter ac:name=\"key\">OPS-12</ac:parameter></ac:structured-macro>.</p>"},
        {"id": "503", "location": "inline", "version": 1, "resolution": "resolved",
         "selection": "plan [x](javascript:alert(1))",
         "body_storage": "<p>Typo here.</p>"},
        {"id": "504", "location": "inline", "version": 1, "resolution": "open",
         "body_storage": "<p>Still open.</p>"}
    ]))
    .expect("comments");
    let converted = convert_page(&page).expect("page converts");
    let (body, comments) = converted
        .markdown
        .split_once("\n## Comments\n")
        .expect("a comments section after the body");
    assert!(body.contains("[OPS-9](https://acme.atlassian.net/browse/OPS-9)"));
    assert_eq!(
        comments,
        "\n### Comment by 712020:ana on 2024-06-02\n\nRotate the **quokka** key first.\n\
         \n#### Reply by Bo on 2024-06-03\n\nDone, see [OPS-12](https://acme.atlassian.net/browse/OPS-12).\n\
         \n### Inline comment by unknown (resolved)\n\n> plan \\[x\\](javascript:alert(1))\n\nTypo here.\n\
         \n### Inline comment by unknown\n\nStill open.\n"
    );
    assert!(
        converted.metadata.word_count
            > convert_page(&page_changed("u"))
                .expect("converts")
                .metadata
                .word_count
    );

    // An event from before comments were fetched converts as it did.
    let mut bare = page.clone();
    bare.comments.clear();
    assert!(
        !convert_page(&bare)
            .expect("converts")
            .markdown
            .contains("Comments")
    );
}

#[test]
fn attachments_follow_the_comments_one_section_per_file_shown_literally() {
    let mut page = page_changed("https://acme.atlassian.net/wiki/spaces/ENG/pages/4242/Runbook");
    page.body_storage = "<p>Body.</p>".into();
    page.attachments = serde_json::from_value(serde_json::json!([
        {"id": "att1", "file_name": "plan v2.pdf", "media_type": "application/pdf", "version": 3,
         "url": "https://acme.atlassian.net/wiki/spaces/ENG/pages/4242?preview=/4242/att1/plan v2.pdf",
         "text": {"extracted": "# Not a heading\n\n1. not a list\n- nor this\n\n\n\nLast *line*"}},
        {"id": "att2", "file_name": "broken.docx", "version": 1, "url": "https://x/y",
         "text": {"failed": "not a readable docx file: invalid zip"}},
        {"id": "att3", "file_name": "logo.png", "media_type": "image/png", "version": 1,
         "url": "https://x/z", "text": {"skipped": "type not indexed"}}
    ]))
    .expect("attachments");
    let converted = convert_page(&page).expect("page converts");
    assert_eq!(
        converted.markdown,
        "Body.\n\n## Attachments\n\
         \n### plan v2.pdf\n\n\
         [plan v2.pdf](https://acme.atlassian.net/wiki/spaces/ENG/pages/4242?preview=/4242/att1/plan%20v2.pdf) (application/pdf)\n\n\
         \\# Not a heading\n\n1\\. not a list\n\\- nor this\n\nLast \\*line\\*\n\
         \n### broken.docx\n\n[broken.docx](https://x/y)\n\n\
         *Text could not be extracted: not a readable docx file: invalid zip.*\n\
         \n### logo.png\n\n[logo.png](https://x/z) (image/png)\n\n*Text not extracted: type not indexed.*\n"
    );
    assert!(converted.metadata.content_length > 100);
}
