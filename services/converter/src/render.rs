//! The tree to Markdown: htmd, with element handlers for the `ac:`/`ri:` vocabulary, for tables,
//! and for every element that carries a URL (so that only URLs the analysis approved are written).

use std::sync::OnceLock;

use htmd::element_handler::{HandlerResult, Handlers};
use htmd::options::{BulletListMarker, HrStyle, Options};
use htmd::{Element, HtmlToMarkdown};
use markup5ever_rcdom::Handle;

use crate::analyze::{
    RESOLVED_URL, attr, child_elements, first_child_named, holds_blocks, included_page,
    is_file_macro, macro_name, macro_parameter, macro_parameter_text, parent, text_content,
    user_id,
};
use crate::emoticon::emoticon_text;
use crate::include::INCLUDED;
use crate::parse::element_name;
use crate::text::{escape_markdown, indent_continuation, prefix_lines, squash_whitespace};

pub fn render(document: &Handle) -> String {
    let mut markdown = converter().tree_to_markdown(document);
    if !markdown.is_empty() {
        markdown.push('\n');
    }
    markdown
}

fn converter() -> &'static HtmlToMarkdown {
    static CONVERTER: OnceLock<HtmlToMarkdown> = OnceLock::new();
    CONVERTER.get_or_init(|| {
        HtmlToMarkdown::builder()
            .options(Options {
                bullet_list_marker: BulletListMarker::Dash,
                ul_bullet_spacing: 1,
                ol_number_spacing: 1,
                hr_style: HrStyle::Dashes,
                ..Options::default()
            })
            .add_handler(vec!["ac:structured-macro", "ac:macro"], macro_handler)
            .add_handler(vec!["ac:link"], link_handler)
            .add_handler(vec!["ac:image"], image_handler)
            .add_handler(vec!["ac:emoticon"], |_: &dyn Handlers, element: Element| {
                Some(emoticon_text(element.attrs).into())
            })
            .add_handler(vec!["ac:task-list"], task_list_handler)
            .add_handler(
                vec!["ac:plain-text-body"],
                |_: &dyn Handlers, element: Element| {
                    Some(code_block(&text_content(element.node), None, None).into())
                },
            )
            .add_handler(vec!["ac:adf-extension"], adf_extension_handler)
            .add_handler(
                vec![
                    "ac:rich-text-body",
                    "ac:layout",
                    "ac:layout-section",
                    "ac:layout-cell",
                    "ac:adf-node",
                    "ac:adf-content",
                    "ac:adf-fallback",
                    "ac:task",
                ],
                |handlers: &dyn Handlers, element: Element| {
                    Some(block(&children(handlers, element.node)).into())
                },
            )
            // Read by their parents' handlers, or carrying nothing to show.
            .skip_tags(vec![
                "ac:parameter",
                "ac:task-id",
                "ac:task-uuid",
                "ac:task-status",
                "ac:placeholder",
                "ac:adf-attribute",
                "ri:page",
                "ri:blog-post",
                "ri:attachment",
                "ri:url",
                "ri:user",
                "ri:space",
                "ri:content-entity",
                "ri:shortcut",
            ])
            .add_handler(vec!["a"], anchor_handler)
            .add_handler(vec!["img"], img_handler)
            .add_handler(
                vec!["time"],
                |handlers: &dyn Handlers, element: Element| match attr(element.node, "datetime") {
                    Some(datetime) => Some(escape_markdown(&datetime).into()),
                    None => Some(handlers.walk_children(element.node)),
                },
            )
            .add_handler(vec!["table"], table_handler)
            .build()
    })
}

/// The rendered children of `node`, without surrounding blank lines.
fn children(handlers: &dyn Handlers, node: &Handle) -> String {
    let mut content = handlers.walk_children(node).content;
    let is_padding = |c: char| c == '\n' || c == ' ';
    content.truncate(content.trim_end_matches(is_padding).len());
    let leading = content.len() - content.trim_start_matches(is_padding).len();
    content.drain(..leading);
    content
}

fn block(content: &str) -> String {
    if content.is_empty() {
        String::new()
    } else {
        format!("\n\n{content}\n\n")
    }
}

fn macro_handler(handlers: &dyn Handlers, element: Element) -> Option<HandlerResult> {
    let node = element.node;
    let name = macro_name(node);
    let rendered = match name.as_str() {
        "code" | "code-pro" | "sourcecode" | "code-block" | "noformat" | "preformatted" => {
            let language = (name != "noformat")
                .then(|| macro_parameter_text(node, "language"))
                .flatten();
            let title = macro_parameter_text(node, "title");
            let text = first_child_named(node, "ac:plain-text-body")
                .map(|body| text_content(&body))
                .unwrap_or_default();
            code_block(&text, language.as_deref(), title.as_deref())
        }
        "info" | "note" | "tip" | "warning" | "panel" => {
            let label = match name.as_str() {
                "info" => "Info",
                "note" => "Note",
                "tip" => "Tip",
                "warning" => "Warning",
                _ => "Panel",
            };
            let heading = match macro_parameter_text(node, "title") {
                Some(title) => format!("**{label}: {}**", escape_markdown(&title)),
                None => format!("**{label}**"),
            };
            let body = rich_body(handlers, node);
            let content = if body.is_empty() {
                heading
            } else {
                format!("{heading}\n\n{body}")
            };
            block(&prefix_lines(&content, "> ", ">"))
        }
        "expand" => {
            let title = macro_parameter_text(node, "title").unwrap_or_else(|| "Expand".to_owned());
            let body = rich_body(handlers, node);
            block(format!("**{}**\n\n{body}", escape_markdown(&title)).trim_end())
        }
        "status" => match macro_parameter_text(node, "title")
            .or_else(|| macro_parameter_text(node, "colour"))
        {
            Some(title) => format!("[{}]", escape_markdown(&title)),
            None => String::new(),
        },
        "jira" => match macro_parameter_text(node, "key")
            .and_then(|key| crate::jira::normalize_key(&key))
        {
            Some(key) => match attr(node, RESOLVED_URL) {
                Some(url) => format!("[{key}]({url})"),
                None => key,
            },
            None => match macro_parameter_text(node, "jqlQuery")
                .or_else(|| macro_parameter_text(node, "jqlquery"))
            {
                Some(query) => block(&format!("Jira issues: {}", escape_markdown(&query))),
                None => String::new(),
            },
        },
        "include" | "excerpt-include" => {
            match (first_child_named(node, INCLUDED), included_page(node)) {
                (Some(included), _) => block(&children(handlers, &included)),
                (None, Some((title, space))) => {
                    let what = if name == "include" {
                        "Included page"
                    } else {
                        "Included excerpt"
                    };
                    let space = space
                        .map(|space| format!(" (space {})", escape_markdown(&space)))
                        .unwrap_or_default();
                    block(&format!("_{what}: {}{space}_", escape_markdown(&title)))
                }
                (None, None) => String::new(),
            }
        }
        // Navigation that Confluence computes, markup that would run as is, and embeds: nothing of
        // them is content.
        "toc" | "toc-zone-marker" | "children" | "pagetree" | "pagetreesearch" | "livesearch"
        | "recently-updated" | "index" | "navmap" | "listlabels" | "anchor" | "html"
        | "html-include" | "iframe" | "widget" | "gadget" => String::new(),
        name if is_file_macro(name) => {
            let file = macro_parameter(node, "name")
                .and_then(|parameter| first_child_named(&parameter, "ri:attachment"))
                .and_then(|attachment| attr(&attachment, "ri:filename"));
            match (file, attr(node, RESOLVED_URL)) {
                (Some(file), Some(url)) => block(&format!("[{}]({url})", escape_markdown(&file))),
                (Some(file), None) => block(&escape_markdown(&file)),
                _ => String::new(),
            }
        }
        // Unknown macros keep their body; their name is in the metadata.
        _ => {
            if first_child_named(node, "ac:rich-text-body").is_some() {
                block(&rich_body(handlers, node))
            } else if let Some(body) = first_child_named(node, "ac:plain-text-body") {
                code_block(&text_content(&body), None, None)
            } else {
                String::new()
            }
        }
    };
    Some(rendered.into())
}

fn rich_body(handlers: &dyn Handlers, node: &Handle) -> String {
    first_child_named(node, "ac:rich-text-body")
        .map(|body| children(handlers, &body))
        .unwrap_or_default()
}

/// A fenced block holding `text` byte for byte; the fence is longer than any backtick run in it.
fn code_block(text: &str, language: Option<&str>, title: Option<&str>) -> String {
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run.max(2) + 1);
    let language: String = language
        .filter(|language| !language.eq_ignore_ascii_case("none"))
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '#' | '.' | '_'))
        .collect::<String>()
        .to_ascii_lowercase();
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str("\n\n");
    if let Some(title) = title {
        out.push_str(&format!("**{}**\n\n", escape_markdown(title)));
    }
    out.push_str(&fence);
    out.push_str(&language);
    out.push('\n');
    out.push_str(text);
    if !text.is_empty() && !text.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&fence);
    out.push_str("\n\n");
    out
}

fn link_handler(handlers: &dyn Handlers, element: Element) -> Option<HandlerResult> {
    let node = element.node;
    let resource = child_elements(node)
        .into_iter()
        .find(|child| element_name(child).starts_with("ri:"));
    let body = if let Some(body) = first_child_named(node, "ac:link-body") {
        children(handlers, &body)
    } else if let Some(body) = first_child_named(node, "ac:plain-text-link-body") {
        escape_markdown(&squash_whitespace(&text_content(&body)))
    } else {
        String::new()
    };
    let text = if body.trim().is_empty() {
        let default = resource
            .as_ref()
            .and_then(|resource| match &**element_name(resource) {
                "ri:page" | "ri:blog-post" => attr(resource, "ri:content-title"),
                "ri:attachment" => attr(resource, "ri:filename"),
                "ri:user" => user_id(resource).map(|user| format!("@{user}")),
                "ri:space" => attr(resource, "ri:space-key"),
                "ri:url" => attr(resource, "ri:value"),
                _ => None,
            });
        let default = default.or_else(|| attr(node, "ac:anchor"));
        escape_markdown(&default.unwrap_or_default())
    } else {
        body
    };
    let rendered = match (attr(node, RESOLVED_URL), text.is_empty()) {
        (Some(url), true) => format!("[{}]({url})", escape_markdown(&url)),
        (Some(url), false) => format!("[{text}]({url})"),
        (None, _) => text,
    };
    Some(rendered.into())
}

fn image_handler(_: &dyn Handlers, element: Element) -> Option<HandlerResult> {
    let node = element.node;
    let file = first_child_named(node, "ri:attachment").and_then(|file| attr(&file, "ri:filename"));
    let alt = first_child_named(node, "ac:caption")
        .map(|caption| squash_whitespace(&text_content(&caption)))
        .filter(|caption| !caption.is_empty())
        .or_else(|| attr(node, "ac:alt"))
        .or_else(|| attr(node, "ac:title"))
        .or(file)
        .unwrap_or_default();
    let image = image(&alt, attr(node, RESOLVED_URL));
    // An image standing between blocks is a block of its own.
    let standalone = parent(node).is_some_and(|parent| holds_blocks(element_name(&parent)));
    Some(if standalone { block(&image) } else { image }.into())
}

fn img_handler(_: &dyn Handlers, element: Element) -> Option<HandlerResult> {
    let node = element.node;
    let alt = attr(node, "alt")
        .or_else(|| attr(node, "title"))
        .unwrap_or_default();
    Some(image(&alt, attr(node, RESOLVED_URL)).into())
}

fn image(alt: &str, url: Option<String>) -> String {
    let alt = escape_markdown(&squash_whitespace(alt));
    match url {
        Some(url) => format!("![{alt}]({url})"),
        None => alt,
    }
}

fn anchor_handler(handlers: &dyn Handlers, element: Element) -> Option<HandlerResult> {
    let text = children(handlers, element.node);
    let rendered = match (attr(element.node, RESOLVED_URL), text.is_empty()) {
        (Some(url), true) => format!("[{}]({url})", escape_markdown(&url)),
        (Some(url), false) => format!("[{text}]({url})"),
        (None, _) => text,
    };
    Some(rendered.into())
}

fn task_list_handler(handlers: &dyn Handlers, element: Element) -> Option<HandlerResult> {
    let items: Vec<String> = child_elements(element.node)
        .iter()
        .filter(|child| &**element_name(child) == "ac:task")
        .map(|task| {
            let done = first_child_named(task, "ac:task-status")
                .is_some_and(|status| text_content(&status).trim() == "complete");
            let body = first_child_named(task, "ac:task-body")
                .map(|body| children(handlers, &body))
                .unwrap_or_default();
            let mark = if done { "x" } else { " " };
            format!("- [{mark}] {}", indent_continuation(&body, 2))
        })
        .collect();
    Some(block(&items.join("\n")).into())
}

fn adf_extension_handler(handlers: &dyn Handlers, element: Element) -> Option<HandlerResult> {
    // The fallback is what Confluence shows where it cannot render the node; the node itself
    // repeats it.
    let content = match first_child_named(element.node, "ac:adf-fallback") {
        Some(fallback) => children(handlers, &fallback),
        None => children(handlers, element.node),
    };
    Some(block(&content).into())
}

struct Cell {
    header: bool,
    colspan: u32,
    rowspan: u32,
    content: String,
}

/// GFM when the table is rectangular (no spans, same cell count in every row) and every cell
/// fits on one line; otherwise a plain HTML table whose cells hold Markdown between blank lines,
/// which keeps the spans and any block content (code, lists, nested tables).
fn table_handler(handlers: &dyn Handlers, element: Element) -> Option<HandlerResult> {
    let mut captions = Vec::new();
    let mut outside = Vec::new();
    let mut rows: Vec<(bool, Vec<Cell>)> = Vec::new();
    for child in child_elements(element.node) {
        match &**element_name(&child) {
            "caption" => captions.push(children(handlers, &child)),
            "colgroup" | "col" => {}
            "thead" | "tbody" | "tfoot" => {
                let in_head = &**element_name(&child) == "thead";
                for row in child_elements(&child) {
                    if &**element_name(&row) == "tr" {
                        rows.push((in_head, table_row(handlers, &row)));
                    } else {
                        outside.push(children(handlers, &row));
                    }
                }
            }
            "tr" => rows.push((false, table_row(handlers, &child))),
            _ => outside.push(children(handlers, &child)),
        }
    }
    rows.retain(|(_, cells)| !cells.is_empty());
    let mut out = String::from("\n\n");
    for text in captions
        .iter()
        .chain(&outside)
        .filter(|text| !text.is_empty())
    {
        out.push_str(text);
        out.push_str("\n\n");
    }
    if rows.is_empty() {
        return Some(out.into());
    }
    let width = rows[0].1.len();
    let rectangular = rows.iter().all(|(_, cells)| {
        cells.len() == width
            && cells.iter().all(|cell| {
                cell.colspan == 1 && cell.rowspan == 1 && fits_in_gfm_cell(&cell.content)
            })
    });
    if rectangular {
        gfm_table(&rows, &mut out);
    } else {
        html_table(&rows, &mut out);
    }
    out.push('\n');
    Some(out.into())
}

fn table_row(handlers: &dyn Handlers, row: &Handle) -> Vec<Cell> {
    child_elements(row)
        .iter()
        .filter(|cell| matches!(&**element_name(cell), "td" | "th"))
        .map(|cell| {
            let span = |name: &str| {
                attr(cell, name)
                    .and_then(|value| value.parse::<u32>().ok())
                    .filter(|span| (1..=1000).contains(span))
                    .unwrap_or(1)
            };
            Cell {
                header: &**element_name(cell) == "th",
                colspan: span("colspan"),
                rowspan: span("rowspan"),
                content: children(handlers, cell),
            }
        })
        .collect()
}

/// Whether a cell's Markdown survives being put on one line: no code block, no table, no quote.
fn fits_in_gfm_cell(content: &str) -> bool {
    !content.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with("```")
            || line.starts_with("~~~")
            || line.starts_with('|')
            || line.starts_with('>')
            || line.starts_with("<table")
    })
}

fn gfm_table(rows: &[(bool, Vec<Cell>)], out: &mut String) {
    let width = rows[0].1.len();
    let (first_in_head, first) = &rows[0];
    let has_header = *first_in_head || first.iter().all(|cell| cell.header);
    let body = if has_header { &rows[1..] } else { rows };
    let header: Vec<String> = if has_header {
        first.iter().map(|cell| gfm_cell(&cell.content)).collect()
    } else {
        vec![String::new(); width]
    };
    push_gfm_row(out, &header);
    out.push('|');
    for _ in 0..width {
        out.push_str(" --- |");
    }
    out.push('\n');
    for (_, cells) in body {
        let cells: Vec<String> = cells.iter().map(|cell| gfm_cell(&cell.content)).collect();
        push_gfm_row(out, &cells);
    }
}

fn push_gfm_row(out: &mut String, cells: &[String]) {
    out.push('|');
    for cell in cells {
        out.push(' ');
        out.push_str(cell);
        out.push_str(" |");
    }
    out.push('\n');
}

/// One line: line breaks become `<br>`, and pipes are escaped.
fn gfm_cell(content: &str) -> String {
    let joined = content
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("<br>");
    let mut out = String::with_capacity(joined.len());
    let mut backslashes = 0;
    for ch in joined.chars() {
        if ch == '|' && backslashes % 2 == 0 {
            out.push('\\');
        }
        backslashes = if ch == '\\' { backslashes + 1 } else { 0 };
        out.push(ch);
    }
    out
}

fn html_table(rows: &[(bool, Vec<Cell>)], out: &mut String) {
    out.push_str("<table>\n");
    for (_, cells) in rows {
        out.push_str("<tr>\n");
        for cell in cells {
            let tag = if cell.header { "th" } else { "td" };
            out.push('<');
            out.push_str(tag);
            if cell.colspan > 1 {
                out.push_str(&format!(" colspan=\"{}\"", cell.colspan));
            }
            if cell.rowspan > 1 {
                out.push_str(&format!(" rowspan=\"{}\"", cell.rowspan));
            }
            out.push('>');
            if !cell.content.is_empty() {
                // Blank lines around the content make Markdown parse it as Markdown.
                out.push_str("\n\n");
                out.push_str(&cell.content);
                out.push_str("\n\n");
            }
            out.push_str("</");
            out.push_str(tag);
            out.push_str(">\n");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_fences_outgrow_backtick_runs_in_the_code() {
        let block = code_block("a ```` b", Some("Rust"), None);
        assert!(block.contains("`````rust\na ```` b\n`````"), "{block}");
        let block = code_block("x\n", Some("bad\" lang"), Some("T*"));
        assert!(block.contains("**T\\***\n\n```badlang\nx\n```"), "{block}");
    }

    #[test]
    fn gfm_cells_escape_unescaped_pipes_only() {
        assert_eq!(gfm_cell("a | b \\| c\n\nd"), "a \\| b \\| c<br>d");
    }

    #[test]
    fn rendering_an_empty_document_gives_nothing() {
        let document = markup5ever_rcdom::Node::new(markup5ever_rcdom::NodeData::Document);
        assert_eq!(render(&document), "");
    }
}
