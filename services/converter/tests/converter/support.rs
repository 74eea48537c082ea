//! Helpers shared by the test modules.

use pagestream_converter::{ConvertOptions, Limits};

/// The options of a page on a Cloud site, as `ConvertOptions::for_page` would give them.
pub fn site_options() -> ConvertOptions {
    ConvertOptions {
        confluence_base_url: Some("https://acme.atlassian.net/wiki".to_owned()),
        jira_base_url: Some("https://acme.atlassian.net".to_owned()),
        space_key: Some("ENG".to_owned()),
        page_id: Some("1001".to_owned()),
        limits: Limits::default(),
    }
}

/// Markdown rendered to HTML the way a reader (or a chat UI) would show it.
pub fn rendered_html(markdown: &str) -> String {
    let mut options = pulldown_cmark::Options::empty();
    options.insert(pulldown_cmark::Options::ENABLE_TABLES);
    options.insert(pulldown_cmark::Options::ENABLE_TASKLISTS);
    options.insert(pulldown_cmark::Options::ENABLE_STRIKETHROUGH);
    let parser = pulldown_cmark::Parser::new_ext(markdown, options);
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, parser);
    html
}

/// The contents of every fenced code block of the Markdown, as a Markdown parser reads them.
pub fn fenced_code_blocks(markdown: &str) -> Vec<String> {
    use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(_))) => current = Some(String::new()),
            Event::Text(text) => {
                if let Some(block) = current.as_mut() {
                    block.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some(block) = current.take() {
                    blocks.push(block);
                }
            }
            _ => {}
        }
    }
    blocks
}
