//! An XSS corpus: whatever the storage holds, the Markdown, rendered as a reader would render it,
//! has no active content and no script URLs.

use pagestream_converter::convert;

use crate::support::{rendered_html, site_options};

/// Bodies of dropped elements carry this marker: it must not reach the Markdown at all.
const MARKER: &str = "XSS_MARKER";

const CORPUS: &[&str] = &[
    "<script>alert('XSS_MARKER')</script>",
    "<p>before<script type=\"text/javascript\">document.write('XSS_MARKER')</script>after</p>",
    "<style>body{background:url('XSS_MARKER')}</style><p>styled</p>",
    "<iframe src=\"javascript:alert(1)\">XSS_MARKER</iframe>",
    "<object data=\"x.swf\"><param name=\"a\" value=\"XSS_MARKER\"/>XSS_MARKER</object>",
    "<embed src=\"javascript:alert(1)\"/>",
    "<a href=\"javascript:alert(1)\">click</a>",
    "<a href=\"JaVaScRiPt:alert(1)\">click</a>",
    "<a href=\"  javascript:alert(1)\">click</a>",
    "<a href=\"java&#x09;script:alert(1)\">click</a>",
    "<a href=\"&#106;avascript:alert(1)\">click</a>",
    "<a href=\"jav&amp;#x09;ascript:alert(1)\">click</a>",
    "<a href=\"vbscript:msgbox(1)\">click</a>",
    "<a href=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">click</a>",
    "<a href=\"https://ok.example/\" onclick=\"alert(1)\">fine</a>",
    "<a href=\"https://x.org/&quot; onmouseover=&quot;alert(1)\">quote</a>",
    "<img src=\"javascript:alert(1)\" onerror=\"alert(1)\"/>",
    "<img src=\"x.png\" onerror=\"alert('XSS_MARKER')\"/>",
    "<ac:image><ri:url ri:value=\"javascript:alert(1)\"/></ac:image>",
    "<ac:image><ri:url ri:value=\"data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+\"/></ac:image>",
    "<ac:link><ri:url ri:value=\"javascript:alert(1)\"/><ac:plain-text-link-body><![CDATA[x]]></ac:plain-text-link-body></ac:link>",
    "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>",
    "<p>&lt;img src=x onerror=alert(1)&gt;</p>",
    "<p>[click](javascript:alert(1)) and ![i](javascript:alert(1))</p>",
    "<p>&lt;javascript:alert(1)&gt;</p>",
    "<ac:structured-macro ac:name=\"html\"><ac:plain-text-body><![CDATA[<script>alert('XSS_MARKER')</script>]]></ac:plain-text-body></ac:structured-macro>",
    "<ac:structured-macro ac:name=\"status\"><ac:parameter ac:name=\"title\">](javascript:alert(1))</ac:parameter></ac:structured-macro>",
    "<ac:image ac:alt=\"x](javascript:alert(1)) ![y\"><ri:attachment ri:filename=\"a.png\"/></ac:image>",
    "<ac:link><ri:page ri:content-title=\"x) [evil](javascript:alert(1)\"/></ac:link>",
    "<ac:link><ri:page ri:content-title=\"&lt;img src=x onerror=alert(1)&gt;\"/></ac:link>",
    "<ac:link><ri:attachment ri:filename=\"&lt;script&gt;alert(1)&lt;/script&gt;.png\"/></ac:link>",
    "<ac:structured-macro ac:name=\"code\"><ac:parameter ac:name=\"language\">js\"&gt;&lt;script&gt;alert(1)&lt;/script&gt;</ac:parameter><ac:parameter ac:name=\"title\">&lt;script&gt;alert(1)&lt;/script&gt;</ac:parameter><ac:plain-text-body><![CDATA[x]]></ac:plain-text-body></ac:structured-macro>",
    "<table><tr><td colspan=\"2 onmouseover=alert(1)\">a</td><td rowspan=\"3&quot;&gt;&lt;script&gt;\">b</td></tr><tr><td>c</td></tr></table>",
    "<table><tr><td>&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;</td></tr><tr><td colspan=\"2\">&lt;script&gt;x&lt;/script&gt;</td></tr></table>",
    "<svg><script>alert('XSS_MARKER')</script></svg>",
    "<math><mi xlink:href=\"javascript:alert(1)\">XSS_MARKER</mi></math>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">XSS_MARKER</p></noscript>",
    "<p>unclosed <script>alert('XSS_MARKER')",
    "<p>lenient <a href=javascript:alert(1)>x</a> &bogus; <img src=javascript:alert(1)>",
    "<ac:link><ri:user ri:account-id=\"x&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\"/></ac:link>",
    "<ac:emoticon ac:emoji-fallback=\"&lt;script&gt;alert(1)&lt;/script&gt;\"/>",
    "<time datetime=\"&lt;img src=x onerror=alert(1)&gt;\"/>",
    "<ac:structured-macro ac:name=\"info\"><ac:rich-text-body><script>alert('XSS_MARKER')</script><p>kept</p></ac:rich-text-body></ac:structured-macro>",
    "<ac:structured-macro ac:name=\"jira\"><ac:parameter ac:name=\"jqlQuery\">&lt;script&gt;alert(1)&lt;/script&gt;</ac:parameter></ac:structured-macro>",
    "<ac:structured-macro ac:name=\"include\"><ac:parameter ac:name=\"\"><ac:link><ri:page ri:content-title=\"&lt;script&gt;alert(1)&lt;/script&gt;\"/></ac:link></ac:parameter></ac:structured-macro>",
    "<ac:link pagestream url=\"javascript:alert(1)\"><ri:user ri:username=\"u\"/></ac:link>",
    "<a href=\"https://ok.example/\" pagestream url=\"javascript:alert(1)\">forged</a>",
];

const ALLOWED_TAGS: &[&str] = &[
    "a",
    "blockquote",
    "br",
    "code",
    "del",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "img",
    "input",
    "li",
    "ol",
    "p",
    "pre",
    "strong",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
];
const ALLOWED_ATTRIBUTES: &[&str] = &[
    "href", "src", "alt", "title", "colspan", "rowspan", "class", "type", "checked", "disabled",
    "start",
];

/// Tags of the rendered HTML as (name, [(attribute, value)]). Text `<` is always escaped by the
/// renderer, so every `<` starts a tag.
fn tags(html: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut tags = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>').unwrap_or(after.len());
        let inside = after[..end].trim_end_matches('/');
        rest = &after[end.min(after.len())..];
        let inside = inside.trim_start_matches('/');
        let name_end = inside
            .find(|c: char| c.is_whitespace())
            .unwrap_or(inside.len());
        let name = inside[..name_end].to_ascii_lowercase();
        let mut attributes = Vec::new();
        let mut attr_text = &inside[name_end..];
        while let Some(eq) = attr_text.find('=') {
            let attr_name = attr_text[..eq].trim().to_ascii_lowercase();
            let value_text = attr_text[eq + 1..].trim_start();
            let (value, remaining) = match value_text.strip_prefix('"') {
                Some(quoted) => {
                    let close = quoted.find('"').unwrap_or(quoted.len());
                    (&quoted[..close], &quoted[(close + 1).min(quoted.len())..])
                }
                None => {
                    let close = value_text
                        .find(char::is_whitespace)
                        .unwrap_or(value_text.len());
                    (&value_text[..close], &value_text[close..])
                }
            };
            attributes.push((attr_name, value.to_owned()));
            attr_text = remaining;
        }
        tags.push((name, attributes));
    }
    tags
}

/// An attribute value as the browser reads it: entities decoded once, controls and whitespace gone.
fn browser_url(value: &str) -> String {
    const ENTITIES: &[(&str, char)] = &[
        ("&amp;", '&'),
        ("&quot;", '"'),
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&#x09;", '\t'),
        ("&#9;", '\t'),
        ("&#39;", '\''),
    ];
    let mut decoded = String::new();
    let mut rest = value;
    while let Some(ch) = rest.chars().next() {
        match ENTITIES.iter().find(|(entity, _)| rest.starts_with(entity)) {
            Some((entity, replacement)) => {
                decoded.push(*replacement);
                rest = &rest[entity.len()..];
            }
            None => {
                decoded.push(ch);
                rest = &rest[ch.len_utf8()..];
            }
        }
    }
    decoded
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect::<String>()
        .to_ascii_lowercase()
}

#[test]
fn the_xss_corpus_renders_without_active_content() {
    for storage in CORPUS {
        let conversion = convert(storage, &site_options()).expect("corpus entry converts");
        let markdown = &conversion.markdown;
        assert!(
            !markdown.contains(MARKER),
            "dropped content leaked from {storage:?}:\n{markdown}"
        );
        let html = rendered_html(markdown);
        for (name, attributes) in tags(&html) {
            assert!(
                ALLOWED_TAGS.contains(&name.as_str()),
                "<{name}> from {storage:?}:\n{markdown}\n{html}"
            );
            for (attribute, value) in attributes {
                assert!(
                    ALLOWED_ATTRIBUTES.contains(&attribute.as_str()),
                    "{attribute} on <{name}> from {storage:?}:\n{html}"
                );
                if attribute == "href" || attribute == "src" {
                    let url = browser_url(&value);
                    for scheme in ["javascript:", "vbscript:", "data:text", "data:image/svg"] {
                        assert!(
                            !url.starts_with(scheme),
                            "{attribute}={value} from {storage:?}:\n{html}"
                        );
                    }
                    if attribute == "href" {
                        assert!(
                            !url.starts_with("data:"),
                            "{attribute}={value} from {storage:?}"
                        );
                    }
                }
                if attribute == "colspan" || attribute == "rowspan" {
                    assert!(
                        value.chars().all(|c| c.is_ascii_digit()),
                        "{attribute}={value}"
                    );
                }
            }
        }
    }
}

#[test]
fn escaped_markup_in_text_stays_visible_text() {
    let conversion = convert(
        "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>",
        &site_options(),
    )
    .expect("converts");
    let html = rendered_html(&conversion.markdown);
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
}

#[test]
fn safe_links_survive_sanitizing() {
    let conversion = convert(
        "<p><a href=\"https://ok.example/a?b=1&amp;c=2\" onclick=\"x()\">ok</a> <img src=\"data:image/png;base64,iVBORw0KGgo=\" alt=\"dot\"/></p>",
        &site_options(),
    )
    .expect("converts");
    let html = rendered_html(&conversion.markdown);
    assert!(
        html.contains("href=\"https://ok.example/a?b=1&amp;c=2\""),
        "{html}"
    );
    assert!(
        html.contains("src=\"data:image/png;base64,iVBORw0KGgo=\""),
        "{html}"
    );
}
