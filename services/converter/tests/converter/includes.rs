//! Include and excerpt-include macros show the pages the fetcher carried with the page, modelled
//! on real Cloud storage (an include of another space's page inside a paragraph).

use pagestream_converter::{ConvertOptions, convert_including, convert_page};
use pagestream_events::{IncludedContent, IncludedPage, MAX_INCLUDE_DEPTH, PageChanged, PageId};

fn include(title: &str, space: Option<&str>) -> String {
    let space = space
        .map(|s| format!(" ri:space-key=\"{s}\""))
        .unwrap_or_default();
    format!(
        "<ac:structured-macro ac:name=\"include\" ac:schema-version=\"1\" \
         ac:macro-id=\"c0a632e2-d181-4628-a370-cf716c43180b\"><ac:parameter ac:name=\"\">\
         <ac:link><ri:page{space} ri:content-title=\"{title}\" /></ac:link></ac:parameter>\
         </ac:structured-macro>"
    )
}

fn excerpt_include(title: &str) -> String {
    format!(
        "<ac:structured-macro ac:name=\"excerpt-include\" ac:schema-version=\"1\">\
         <ac:parameter ac:name=\"\"><ac:link><ri:page ri:content-title=\"{title}\" /></ac:link>\
         </ac:parameter><ac:parameter ac:name=\"nopanel\">true</ac:parameter></ac:structured-macro>"
    )
}

fn found(space: &str, title: &str, id: u64, body: &str) -> IncludedPage {
    IncludedPage {
        space_key: space.into(),
        title: title.into(),
        content: IncludedContent::Found {
            page_id: PageId::from(id),
            version: 1,
            body_storage: body.into(),
        },
    }
}

fn page(body: &str, included: Vec<IncludedPage>) -> PageChanged {
    let mut page: PageChanged = serde_json::from_value(serde_json::json!({
        "source": "acme", "page_id": "4242", "space_key": "ENG", "title": "Cockpit",
        "version": 3, "path": "/1/4242",
        "url": "https://acme.atlassian.net/wiki/spaces/ENG/pages/4242/Cockpit",
        "last_modified": "2024-06-01T10:00:00Z", "body_storage": body,
    }))
    .expect("page.changed payload");
    page.included = included;
    page
}

#[test]
fn an_include_shows_the_included_page_in_place_and_its_jira_keys_count() {
    let body = format!(
        "<h2>Cockpit</h2><p>{}</p><p>After.</p>",
        include("_what is the cockpit", Some("INCL"))
    );
    let included = vec![found(
        "INCL",
        "_what is the cockpit",
        7,
        "<p>The cockpit&nbsp;shows <strong>quokka</strong> metrics, see \
         <ac:structured-macro ac:name=\"jira\"><ac:parameter ac:name=\"key\">OPS-7</ac:parameter>\
         </ac:structured-macro>.</p>",
    )];
    let converted = convert_page(&page(&body, included)).expect("converts");
    assert_eq!(
        converted.markdown,
        "## Cockpit\n\nThe cockpit shows **quokka** metrics, see \
         [OPS-7](https://acme.atlassian.net/browse/OPS-7).\n\nAfter.\n"
    );
    assert_eq!(converted.metadata.jira_issue_links, ["OPS-7"]);
    assert_eq!(converted.metadata.includes.len(), 1);

    // Without the included page (an event from before, or a page the fetcher did not find), the
    // macro leaves its marker.
    let marker = convert_page(&page(&body, Vec::new())).expect("converts");
    assert!(
        marker
            .markdown
            .contains("_Included page: \\_what is the cockpit (space INCL)_"),
        "{}",
        marker.markdown
    );
    let missing = vec![IncludedPage {
        space_key: "INCL".into(),
        title: "_what is the cockpit".into(),
        content: IncludedContent::Missing("not found".into()),
    }];
    assert_eq!(
        convert_page(&page(&body, missing))
            .expect("converts")
            .markdown,
        marker.markdown
    );
}

#[test]
fn includes_are_expanded_recursively_and_a_cycle_or_the_depth_cap_leaves_a_marker() {
    // A (the page) includes B, B includes A and C, C includes D, D includes E: A is not shown
    // again inside B, and E is past the depth cap.
    let body = format!("<p>Alpha text.</p>{}", include("B", None));
    let included = vec![
        found(
            "ENG",
            "B",
            2,
            &format!(
                "<p>Bravo text.</p>{}{}",
                include("Cockpit", None),
                include("C", None)
            ),
        ),
        found(
            "ENG",
            "C",
            3,
            &format!("<p>Charlie text.</p>{}", include("D", None)),
        ),
        found(
            "ENG",
            "D",
            4,
            &format!("<p>Delta text.</p>{}", include("E", None)),
        ),
        found("ENG", "E", 5, "<p>Echo text.</p>"),
    ];
    assert_eq!(MAX_INCLUDE_DEPTH, 3);
    let markdown = convert_page(&page(&body, included))
        .expect("converts")
        .markdown;
    assert_eq!(
        markdown,
        "Alpha text.\n\nBravo text.\n\n_Included page: Cockpit_\n\nCharlie text.\n\nDelta text.\n\n\
         _Included page: E_\n",
    );
}

#[test]
fn an_excerpt_include_shows_only_the_excerpt_of_the_included_page() {
    let body = format!(
        "<p>Intro.</p>{}{}",
        excerpt_include("Glossary"),
        excerpt_include("Plain")
    );
    let included = vec![
        found(
            "ENG",
            "Glossary",
            9,
            "<p>Not in the excerpt.</p><ac:structured-macro ac:name=\"excerpt\">\
             <ac:parameter ac:name=\"hidden\">true</ac:parameter><ac:rich-text-body>\
             <p>A <em>wombat</em> is a deploy unit.</p></ac:rich-text-body></ac:structured-macro>\
             <p>Also not.</p>",
        ),
        found("ENG", "Plain", 10, "<p>No excerpt here.</p>"),
    ];
    let markdown = convert_page(&page(&body, included))
        .expect("converts")
        .markdown;
    assert_eq!(
        markdown,
        "Intro.\n\nA *wombat* is a deploy unit.\n\n_Included excerpt: Plain_\n"
    );
}

#[test]
fn included_bodies_count_against_the_input_bound() {
    // Each of the page's 40 includes names the same 4 KB page: together they would exceed a
    // 64 KiB bound, so the later ones keep their marker.
    let big = format!("<p>Start {}</p>", "word ".repeat(800));
    let body: String = (0..40).map(|_| include("Big", None)).collect();
    let included = vec![found("ENG", "Big", 11, &big)];
    let page = page(&body, included);
    let mut options = ConvertOptions::for_page(&page.page);
    options.limits.max_input_bytes = 64 * 1024;
    let markdown = convert_including(&page.body_storage, &options, &page.included)
        .expect("converts")
        .markdown;
    let shown = markdown.matches("Start word").count();
    assert!((10..20).contains(&shown), "{shown} copies shown");
    assert!(markdown.contains("_Included page: Big_"));
}
