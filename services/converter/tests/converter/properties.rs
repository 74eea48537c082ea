//! Properties over generated pages: no storage markup survives, every code macro's text comes out
//! verbatim in a fenced block, every Jira key is found.

use pagestream_converter::convert;
use proptest::prelude::*;

use crate::support::{fenced_code_blocks, site_options};

/// A generated page: its storage body, plus what the conversion must preserve.
#[derive(Debug, Clone, Default)]
struct Page {
    storage: String,
    code_texts: Vec<String>,
    jira_keys: Vec<String>,
}

impl Page {
    fn push(&mut self, other: Page) {
        self.storage.push_str(&other.storage);
        self.code_texts.extend(other.code_texts);
        self.jira_keys.extend(other.jira_keys);
    }
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// CDATA cannot hold `]]>`: storage splits it across two sections.
fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

fn word() -> impl Strategy<Value = String> {
    "[a-z]{1,8}|[A-Z][a-z]{1,6}|[0-9]{1,3}|[*_`#>|-]{1,2}[a-z]{0,3}"
}

fn jira_key() -> impl Strategy<Value = String> {
    ("[A-Z][A-Z0-9]{1,5}", 1u32..100_000)
        .prop_filter("not a standard's prefix", |(project, _)| {
            ![
                "AES", "ANSI", "CP", "CRC", "CVE", "CWE", "DES", "EN", "ES", "GPT", "IEC", "ISO",
                "JEP", "JSR", "MD", "PEP", "RFC", "RSA", "SHA", "SSL", "TLS", "UCS", "UTF", "WIN",
                "HTTP", "IEEE", "IPV", "ECMA", "WCAG", "ASCII",
            ]
            .contains(&project.as_str())
        })
        .prop_map(|(project, number)| format!("{project}-{number}"))
}

/// Code text: any printable text, with the characters that break naive converters.
fn code_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            "[ -~]{0,20}",
            Just("```".to_owned()),
            Just("]]>".to_owned()),
            Just("<ac:structured-macro ac:name=\"x\">".to_owned()),
            Just("&amp;&nbsp;".to_owned()),
            Just("\n".to_owned()),
            Just("    ".to_owned()),
            "[àéü日本語🙂]{1,3}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

fn inline() -> impl Strategy<Value = Page> {
    prop_oneof![
        4 => word().prop_map(|w| Page { storage: format!("{} ", escape_xml(&w)), ..Page::default() }),
        1 => jira_key().prop_map(|key| Page {
            storage: format!("see {key} "),
            jira_keys: vec![key],
            ..Page::default()
        }),
        1 => jira_key().prop_map(|key| Page {
            storage: format!("<ac:structured-macro ac:name=\"jira\"><ac:parameter ac:name=\"server\">System JIRA</ac:parameter><ac:parameter ac:name=\"key\">{key}</ac:parameter></ac:structured-macro> "),
            jira_keys: vec![key],
            ..Page::default()
        }),
        1 => jira_key().prop_map(|key| Page {
            storage: format!("<a href=\"https://jira.example.com/browse/{key}\">ticket</a> "),
            jira_keys: vec![key],
            ..Page::default()
        }),
        1 => word().prop_map(|w| Page {
            storage: format!("<ac:structured-macro ac:name=\"status\"><ac:parameter ac:name=\"colour\">Green</ac:parameter><ac:parameter ac:name=\"title\">{}</ac:parameter></ac:structured-macro> ", escape_xml(&w)),
            ..Page::default()
        }),
        1 => "[a-z0-9]{6,12}".prop_map(|id| Page {
            storage: format!("<ac:link><ri:user ri:account-id=\"{id}\" /></ac:link> "),
            ..Page::default()
        }),
        1 => (word(), prop::option::of(word())).prop_map(|(title, body)| Page {
            storage: match body {
                Some(body) => format!("<ac:link><ri:page ri:space-key=\"DOC\" ri:content-title=\"{}\" /><ac:plain-text-link-body>{}</ac:plain-text-link-body></ac:link> ", escape_xml(&title), cdata(&body)),
                None => format!("<ac:link><ri:page ri:content-title=\"{}\" /></ac:link> ", escape_xml(&title)),
            },
            ..Page::default()
        }),
        1 => Just(Page { storage: "<ac:emoticon ac:name=\"tick\" /> ".to_owned(), ..Page::default() }),
        1 => word().prop_map(|w| Page {
            storage: format!("<ac:inline-comment-marker ac:ref=\"r1\">{}</ac:inline-comment-marker> ", escape_xml(&w)),
            ..Page::default()
        }),
        1 => word().prop_map(|w| Page { storage: format!("<strong>{}</strong> ", escape_xml(&w)), ..Page::default() }),
    ]
}

fn paragraph() -> impl Strategy<Value = Page> {
    proptest::collection::vec(inline(), 1..8).prop_map(|parts| {
        let mut page = Page {
            storage: "<p>".to_owned(),
            ..Page::default()
        };
        for part in parts {
            page.push(part);
        }
        page.storage.push_str("</p>");
        page
    })
}

fn code_macro() -> impl Strategy<Value = Page> {
    (
        code_text(),
        prop::option::of("[a-z]{1,6}"),
        prop::option::of(word()),
        prop::bool::ANY,
    )
        .prop_map(|(text, language, title, noformat)| {
            let mut storage = format!(
                "<ac:structured-macro ac:name=\"{}\" ac:schema-version=\"1\">",
                if noformat { "noformat" } else { "code" }
            );
            if let Some(language) = language {
                storage.push_str(&format!(
                    "<ac:parameter ac:name=\"language\">{language}</ac:parameter>"
                ));
            }
            if let Some(title) = title {
                storage.push_str(&format!(
                    "<ac:parameter ac:name=\"title\">{}</ac:parameter>",
                    escape_xml(&title)
                ));
            }
            storage.push_str(&format!(
                "<ac:plain-text-body>{}</ac:plain-text-body></ac:structured-macro>",
                cdata(&text)
            ));
            Page {
                storage,
                code_texts: vec![text],
                jira_keys: Vec::new(),
            }
        })
}

fn leaf_block() -> impl Strategy<Value = Page> {
    prop_oneof![
        3 => paragraph(),
        2 => code_macro(),
        1 => proptest::collection::vec((paragraph(), prop::bool::ANY), 1..4).prop_map(|tasks| {
            let mut page = Page { storage: "<ac:task-list>".to_owned(), ..Page::default() };
            for (index, (body, done)) in tasks.into_iter().enumerate() {
                page.storage.push_str(&format!(
                    "<ac:task><ac:task-id>{index}</ac:task-id><ac:task-status>{}</ac:task-status><ac:task-body>",
                    if done { "complete" } else { "incomplete" }
                ));
                page.push(body);
                page.storage.push_str("</ac:task-body></ac:task>");
            }
            page.storage.push_str("</ac:task-list>");
            page
        }),
        1 => (1usize..4, 1usize..4).prop_flat_map(|(rows, columns)| {
            proptest::collection::vec(prop_oneof![3 => paragraph(), 1 => code_macro()], rows * columns)
                .prop_map(move |cells| {
                    let mut page = Page { storage: "<table><tbody>".to_owned(), ..Page::default() };
                    for row in cells.chunks(columns) {
                        page.storage.push_str("<tr>");
                        for cell in row {
                            page.storage.push_str("<td>");
                            page.push(cell.clone());
                            page.storage.push_str("</td>");
                        }
                        page.storage.push_str("</tr>");
                    }
                    page.storage.push_str("</tbody></table>");
                    page
                })
        }),
        1 => Just(Page {
            storage: "<ac:structured-macro ac:name=\"toc\"><ac:parameter ac:name=\"maxLevel\">3</ac:parameter></ac:structured-macro>".to_owned(),
            ..Page::default()
        }),
        1 => word().prop_map(|title| Page {
            storage: format!("<ac:structured-macro ac:name=\"include\"><ac:parameter ac:name=\"\"><ac:link><ri:page ri:space-key=\"INC\" ri:content-title=\"{}\" /></ac:link></ac:parameter></ac:structured-macro>", escape_xml(&title)),
            ..Page::default()
        }),
        1 => word().prop_map(|w| Page {
            storage: format!("<h2>{}</h2>", escape_xml(&w)),
            ..Page::default()
        }),
    ]
}

/// Blocks, some wrapped in panels, expands, layouts or unknown macros.
fn block() -> impl Strategy<Value = Page> {
    leaf_block().prop_recursive(3, 24, 4, |inner| {
        (
            prop_oneof![
                Just("info"), Just("note"), Just("tip"), Just("warning"), Just("panel"),
                Just("expand"), Just("some-unknown-macro"), Just("layout")
            ],
            proptest::collection::vec(inner, 1..4),
        )
            .prop_map(|(container, blocks)| {
                let (open, close) = if container == "layout" {
                    (
                        "<ac:layout><ac:layout-section ac:type=\"single\"><ac:layout-cell>".to_owned(),
                        "</ac:layout-cell></ac:layout-section></ac:layout>".to_owned(),
                    )
                } else {
                    (
                        format!("<ac:structured-macro ac:name=\"{container}\"><ac:parameter ac:name=\"title\">T</ac:parameter><ac:rich-text-body>"),
                        "</ac:rich-text-body></ac:structured-macro>".to_owned(),
                    )
                };
                let mut page = Page { storage: open, ..Page::default() };
                for block in blocks {
                    page.push(block);
                }
                page.storage.push_str(&close);
                page
            })
    })
}

fn page() -> impl Strategy<Value = Page> {
    proptest::collection::vec(block(), 1..8).prop_map(|blocks| {
        let mut page = Page::default();
        for block in blocks {
            page.push(block);
        }
        page
    })
}

/// Everything a Markdown reader sees outside code: text, inline HTML and HTML blocks.
fn non_code_markdown(markdown: &str) -> String {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut out = String::new();
    let mut in_code_block = false;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::CodeBlock(_)) => in_code_block = true,
            Event::End(TagEnd::CodeBlock) => in_code_block = false,
            Event::Text(text) | Event::Html(text) | Event::InlineHtml(text) if !in_code_block => {
                out.push_str(&text);
                out.push('\n');
            }
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => {
                out.push_str(&dest_url);
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_pages_convert_faithfully(page in page()) {
        let conversion = convert(&page.storage, &site_options()).expect("generated page converts");
        prop_assert_eq!(conversion.parse_mode, pagestream_converter::ParseMode::Strict);
        let markdown = &conversion.markdown;

        let visible = non_code_markdown(markdown);
        for markup in ["ac:", "ri:", "CDATA"] {
            prop_assert!(!visible.contains(markup), "{} left in:\n{}\nfrom:\n{}", markup, markdown, page.storage);
        }

        let blocks = fenced_code_blocks(markdown);
        for text in &page.code_texts {
            let with_newline = format!("{text}\n");
            prop_assert!(
                blocks.iter().any(|block| block == text || *block == with_newline),
                "code {:?} not verbatim in a fenced block of:\n{}", text, markdown
            );
        }

        for key in &page.jira_keys {
            prop_assert!(
                conversion.metadata.jira_issue_links.contains(key),
                "{} not found in {:?}", key, conversion.metadata.jira_issue_links
            );
        }
        let mut unique = conversion.metadata.jira_issue_links.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), conversion.metadata.jira_issue_links.len());
    }
}
