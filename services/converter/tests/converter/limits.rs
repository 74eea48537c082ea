//! Hostile shapes: deep nesting, huge pages, invalid UTF-8, unclosed tags. Each gives a result or
//! a permanent error, on a thread with the 2 MiB stack that tokio's blocking threads have.

use pagestream_converter::{
    Conversion, ConvertError, ConvertOptions, Limits, ParseMode, convert, convert_bytes,
};

use crate::support::site_options;

const BLOCKING_THREAD_STACK: usize = 2 * 1024 * 1024;

/// Converts on a thread with a blocking thread's stack: a recursion the limits fail to bound
/// overflows it and fails the test.
fn convert_on_small_stack(
    storage: String,
    options: ConvertOptions,
) -> Result<Conversion, ConvertError> {
    std::thread::Builder::new()
        .stack_size(BLOCKING_THREAD_STACK)
        .spawn(move || convert(&storage, &options))
        .expect("spawn converter thread")
        .join()
        .expect("converter thread did not panic")
}

fn nested(open: &str, close: &str, depth: usize, inner: &str) -> String {
    let mut storage = String::with_capacity((open.len() + close.len()) * depth + inner.len());
    for _ in 0..depth {
        storage.push_str(open);
    }
    storage.push_str(inner);
    for _ in 0..depth {
        storage.push_str(close);
    }
    storage
}

#[test]
fn hundred_thousand_levels_of_nesting_convert_and_keep_their_text() {
    let cases = [
        ("<div>", "</div>"),
        ("<ul><li>", "</li></ul>"),
        ("<table><tbody><tr><td>", "</td></tr></tbody></table>"),
        ("<blockquote>", "</blockquote>"),
        (
            "<ac:structured-macro ac:name=\"info\"><ac:rich-text-body>",
            "</ac:rich-text-body></ac:structured-macro>",
        ),
        (
            "<ac:structured-macro ac:name=\"expand\"><ac:rich-text-body>",
            "</ac:rich-text-body></ac:structured-macro>",
        ),
        (
            "<ac:layout><ac:layout-section><ac:layout-cell>",
            "</ac:layout-cell></ac:layout-section></ac:layout>",
        ),
        ("<strong><em>", "</em></strong>"),
    ];
    for (open, close) in cases {
        let storage = nested(open, close, 100_000, "<p>deepest words</p>");
        let conversion =
            convert_on_small_stack(storage, site_options()).expect("deep nesting converts");
        assert_eq!(conversion.parse_mode, ParseMode::Strict, "{open}");
        assert!(
            conversion.markdown.contains("deepest words"),
            "{open}: text lost"
        );
    }
}

#[test]
fn hundred_thousand_unclosed_tags_convert_leniently() {
    for open in [
        "<div>",
        "<b><i>",
        "<p>",
        "<li>",
        "<td>",
        "<ac:rich-text-body>",
        "<a href=\"x\">",
    ] {
        let storage = format!("{}end of page", open.repeat(100_000));
        let conversion =
            convert_on_small_stack(storage, site_options()).expect("unclosed tags convert");
        assert_eq!(conversion.parse_mode, ParseMode::Lenient, "{open}");
        assert!(
            conversion.markdown.contains("end of page"),
            "{open}: text lost"
        );
    }
}

#[test]
fn a_ten_megabyte_page_converts_whole() {
    let section = "<h2>Section</h2><p>Some <strong>bold</strong> prose about OPS-12 with a <ac:link><ri:page ri:content-title=\"Other page\" /></ac:link>.</p>\
        <ac:structured-macro ac:name=\"code\"><ac:parameter ac:name=\"language\">bash</ac:parameter><ac:plain-text-body><![CDATA[echo \"hello\" && ls -la /var/log]]></ac:plain-text-body></ac:structured-macro>\
        <table><tbody><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></tbody></table>";
    let mut storage = String::with_capacity(10 * 1024 * 1024 + 1024);
    while storage.len() < 10 * 1024 * 1024 {
        storage.push_str(section);
    }
    storage.push_str("<p>the very last paragraph</p>");
    let conversion = convert_on_small_stack(storage, site_options()).expect("10 MB page converts");
    assert_eq!(conversion.parse_mode, ParseMode::Strict);
    assert!(conversion.markdown.ends_with("the very last paragraph\n"));
    assert_eq!(conversion.metadata.jira_issue_links, ["OPS-12"]);
    assert!(
        conversion.metadata.word_count > 300_000,
        "{}",
        conversion.metadata.word_count
    );
}

#[test]
fn many_sibling_elements_convert_in_bounded_work() {
    // Adjacent identical inline elements are merged; a quadratic merge would not finish.
    let storage = format!("<p>{}</p>", "<b>x</b>".repeat(300_000));
    let conversion = convert_on_small_stack(storage, site_options()).expect("siblings convert");
    assert!(conversion.markdown.starts_with("**xxx"));
    assert_eq!(conversion.markdown.len(), 300_000 + "****\n".len());

    // Past the element limit, elements are flattened into their text.
    let options = ConvertOptions {
        limits: Limits {
            max_elements: 50_000,
            ..Limits::default()
        },
        ..site_options()
    };
    let storage = format!("{}<p>last</p>", "<p>a</p><i>b</i>".repeat(30_000));
    let conversion = convert_on_small_stack(storage, options).expect("many elements convert");
    assert!(
        conversion.markdown.trim_end().ends_with("a b last"),
        "{}",
        &conversion.markdown[conversion.markdown.len() - 40..]
    );
    assert_eq!(conversion.metadata.word_count, 60_001);
}

#[test]
fn oversized_bodies_are_refused_permanently() {
    let options = ConvertOptions {
        limits: Limits {
            max_input_bytes: 1024,
            ..Limits::default()
        },
        ..ConvertOptions::default()
    };
    let error = convert(&"x".repeat(1025), &options).expect_err("over the limit");
    assert_eq!(
        error,
        ConvertError::TooLarge {
            size: 1025,
            limit: 1024
        }
    );
    assert!(error.is_permanent());
    assert_eq!(
        error.to_string(),
        "storage body is 1025 bytes, over the limit of 1024 bytes"
    );
}

#[test]
fn invalid_utf8_is_refused_permanently_with_its_offset() {
    let mut storage = b"<p>caf".to_vec();
    storage.extend_from_slice(&[0xC3, 0x28]);
    storage.extend_from_slice(b"</p>");
    let error = convert_bytes(&storage, &site_options()).expect_err("invalid utf-8");
    assert_eq!(error, ConvertError::InvalidUtf8 { offset: 6 });
    assert!(error.is_permanent());

    let conversion = convert_bytes("<p>café</p>".as_bytes(), &site_options()).expect("valid utf-8");
    assert_eq!(conversion.markdown, "café\n");
}

#[test]
fn garbage_converts_to_something() {
    for storage in [
        "",
        "<",
        "<<<>>>",
        "]]>",
        "<![CDATA[never closed",
        "<ac:structured-macro ac:name=\"code\"><ac:plain-text-body><![CDATA[open",
        "&#0;&#xD800;&#1114112;&;&#;",
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\">]><p>&a;&a;</p>",
        "\u{0}\u{1}\u{FEFF}text",
        "</p></p></ac:rich-text-body>",
    ] {
        let conversion = convert_on_small_stack(storage.to_owned(), site_options());
        assert!(conversion.is_ok(), "{storage:?}");
    }
}
