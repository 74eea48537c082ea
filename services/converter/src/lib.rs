//! Converter: Confluence storage format to clean Markdown plus metadata.
//!
//! [`convert`] turns one storage-format body (XHTML with `ac:`/`ri:` elements, HTML entities and
//! CDATA) into Markdown and the [`ContentMetadata`] that goes into `page.converted`. It is pure and
//! CPU-bound: call it off the async runtime. Input is untrusted: the result never carries active
//! content (script, style, iframe, object) or `javascript:`/`vbscript:`/non-image `data:` URLs, and
//! any input, however deep, large or malformed, gives a result or a [`ConvertError`], never a
//! panic or unbounded recursion.
//!
//! [`convert_page`] also shows what the fetcher carried with the page: the pages its `include`
//! and `excerpt-include` macros name, in place of each macro ([`convert_including`]), then its
//! comments and its attachments' text.

mod analyze;
mod emoticon;
mod include;
mod jira;
mod parse;
mod render;
mod text;
mod url;

use pagestream_events::{
    AttachmentText, CommentLocation, ContentMetadata, IncludedPage, PageAttachment, PageChanged,
    PageComment, PageConverted, PageInfo,
};

pub use jira::is_valid_issue_key;
pub use parse::ParseMode;
pub use service::Config;

/// Why a body could not be converted.
///
/// Every variant is permanent: the same body fails the same way on every attempt, so the event
/// belongs in the dead-letter stream, not in a retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("storage body is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("storage body is not valid utf-8 (invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
}

impl ConvertError {
    /// Always true: no variant can succeed on a retry. Kept as a method so that callers route by
    /// it rather than by matching variants.
    pub fn is_permanent(&self) -> bool {
        match self {
            ConvertError::TooLarge { .. } | ConvertError::InvalidUtf8 { .. } => true,
        }
    }
}

/// The converted page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub markdown: String,
    pub metadata: ContentMetadata,
    /// Whether the body was well formed, or was read by the lenient parser.
    pub parse_mode: ParseMode,
}

/// Bounds on what one conversion may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Larger bodies are refused with [`ConvertError::TooLarge`].
    pub max_input_bytes: usize,
    /// Elements nested deeper are flattened into their text (the text is kept).
    pub max_depth: usize,
    /// Elements past this count are flattened into their text (the text is kept).
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: 16 * 1024 * 1024,
            // Real pages nest a few dozen levels at most; the renderer recurses once per level.
            max_depth: 96,
            max_elements: 1_000_000,
        }
    }
}

/// What the converter knows about the page beyond its body. Everything is optional: without it,
/// links whose address depends on the site are rendered as text (they are still recorded in the
/// metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// The Confluence base URL, context path included (`https://acme.atlassian.net/wiki`).
    pub confluence_base_url: Option<String>,
    /// The Jira base URL, for `jira` macros (`https://acme.atlassian.net`).
    pub jira_base_url: Option<String>,
    /// The page's own space: links that name no space point into it.
    pub space_key: Option<String>,
    /// The page's id: its attachments live under it.
    pub page_id: Option<String>,
    pub limits: Limits,
}

impl ConvertOptions {
    /// Options for a page as the fetcher describes it: its space, id and site.
    pub fn for_page(page: &PageInfo) -> Self {
        let confluence_base_url = url::confluence_base_from_page_url(&page.url);
        let jira_base_url = url::cloud_jira_base(&page.url);
        Self {
            confluence_base_url,
            jira_base_url,
            space_key: Some(page.space_key.clone()),
            page_id: Some(page.page_id.as_str().to_owned()),
            limits: Limits::default(),
        }
    }
}

/// Converts a storage-format body to Markdown and metadata; include macros show a marker.
pub fn convert(storage: &str, options: &ConvertOptions) -> Result<Conversion, ConvertError> {
    convert_including(storage, options, &[])
}

/// [`convert`], with the pages that the body's include and excerpt-include macros name (and
/// those that these include) shown in place of their macros,
/// [`pagestream_events::MAX_INCLUDE_DEPTH`] levels deep,
/// cycles broken; a page not among `included`, missing, or over the input bound (all included
/// bodies together count against `max_input_bytes`) keeps the marker.
pub fn convert_including(
    storage: &str,
    options: &ConvertOptions,
    included: &[IncludedPage],
) -> Result<Conversion, ConvertError> {
    let limit = options.limits.max_input_bytes;
    if storage.len() > limit {
        return Err(ConvertError::TooLarge {
            size: storage.len(),
            limit,
        });
    }
    let limits = parse::TreeLimits {
        max_depth: options.limits.max_depth,
        max_elements: options.limits.max_elements,
    };
    let tree = parse::parse_storage(storage, limits);
    if let Some(space_key) = &options.space_key {
        include::expand(
            &tree.document,
            space_key,
            included,
            limits,
            limit - storage.len(),
        );
    }
    let mut metadata = analyze::analyze(&tree.document, options);
    let markdown = render::render(&tree.document);
    metadata.word_count = text::word_count(&markdown);
    metadata.content_length = markdown.chars().count() as u64;
    Ok(Conversion {
        markdown,
        metadata,
        parse_mode: tree.mode,
    })
}

/// [`convert`] for raw bytes, which must be UTF-8.
pub fn convert_bytes(storage: &[u8], options: &ConvertOptions) -> Result<Conversion, ConvertError> {
    let limit = options.limits.max_input_bytes;
    if storage.len() > limit {
        return Err(ConvertError::TooLarge {
            size: storage.len(),
            limit,
        });
    }
    let storage = std::str::from_utf8(storage).map_err(|error| ConvertError::InvalidUtf8 {
        offset: error.valid_up_to(),
    })?;
    convert(storage, options)
}

/// Converts the body of a `page.changed` into the `page.converted` that follows it. The page's
/// comments follow the body under a `Comments` heading (see [`render_comments`]), then its
/// attachments' text under an `Attachments` heading (see [`render_attachments`]), so that they
/// are chunked, embedded and found with the page (a chunk's heading path names the comment or
/// the file), and shown with it.
pub fn convert_page(page: &PageChanged) -> Result<PageConverted, ConvertError> {
    let options = ConvertOptions::for_page(&page.page);
    let conversion = convert_including(&page.body_storage, &options, &page.included)?;
    let mut markdown = conversion.markdown;
    let mut metadata = conversion.metadata;
    let mut sections = Vec::new();
    if !page.comments.is_empty() {
        sections.push(render_comments(&page.comments, &options)?);
    }
    if !page.attachments.is_empty() {
        sections.push(render_attachments(&page.attachments));
    }
    if !sections.is_empty() {
        for section in sections {
            if !markdown.is_empty() && !markdown.ends_with("\n\n") {
                markdown.push_str(if markdown.ends_with('\n') {
                    "\n"
                } else {
                    "\n\n"
                });
            }
            markdown.push_str(&section);
        }
        metadata.word_count = text::word_count(&markdown);
        metadata.content_length = markdown.chars().count() as u64;
    }
    Ok(PageConverted {
        page: page.page.clone(),
        markdown,
        metadata,
    })
}

/// A page's attachments as Markdown: `## Attachments`, then one `###` section per file named by
/// its file name, with a link to it, its type, and the text extracted from it (each line kept,
/// Markdown syntax shown literally, so a heading inside a file cannot leave its section), or why
/// there is none.
pub fn render_attachments(attachments: &[PageAttachment]) -> String {
    let mut out = String::from("## Attachments\n");
    for attachment in attachments {
        let name = text::escape_markdown(&attachment.file_name);
        out.push_str(&format!(
            "\n### {name}\n\n[{name}]({})",
            attachment.url.replace(' ', "%20").replace(')', "%29")
        ));
        if let Some(media_type) = &attachment.media_type {
            out.push_str(&format!(" ({})", text::escape_markdown(media_type)));
        }
        out.push_str("\n\n");
        match &attachment.text {
            AttachmentText::Extracted(extracted) => {
                let body = text::escape_text_block(extracted);
                if !body.is_empty() {
                    out.push_str(&body);
                    out.push('\n');
                }
            }
            AttachmentText::Skipped(reason) => {
                out.push_str(&format!(
                    "*Text not extracted: {}.*\n",
                    text::escape_markdown(reason)
                ));
            }
            AttachmentText::Failed(reason) => {
                out.push_str(&format!(
                    "*Text could not be extracted: {}.*\n",
                    text::escape_markdown(reason)
                ));
            }
        }
    }
    out
}

/// A page's comments as Markdown: `## Comments`, then one `###` section per top-level comment
/// (who, when, whether inline and resolved, the text an inline one highlights) with its body
/// converted like a page's, and one `####` section per reply after it. Comments come in the
/// fetcher's order (threads, replies after their comment).
pub fn render_comments(
    comments: &[PageComment],
    options: &ConvertOptions,
) -> Result<String, ConvertError> {
    let mut out = String::from("## Comments\n");
    for comment in comments {
        let (level, kind) = match (comment.parent_id.is_some(), comment.location) {
            (true, _) => ("####", "Reply"),
            (false, CommentLocation::Footer) => ("###", "Comment"),
            (false, CommentLocation::Inline) => ("###", "Inline comment"),
        };
        let author = comment
            .author
            .as_ref()
            .and_then(|a| a.display_name.as_deref().or(a.account_id.as_deref()))
            .map_or_else(|| "unknown".to_owned(), text::escape_markdown);
        out.push_str(&format!("\n{level} {kind} by {author}"));
        if let Some(at) = comment.last_modified {
            out.push_str(&format!(" on {}", at.format("%Y-%m-%d")));
        }
        if comment.is_resolved() {
            out.push_str(" (resolved)");
        }
        out.push_str("\n\n");
        if let Some(selection) = comment.selection.as_deref() {
            out.push_str(&format!(
                "> {}\n\n",
                text::escape_markdown(&text::squash_whitespace(selection))
            ));
        }
        let body = convert(&comment.body_storage, options)?.markdown;
        let body = body.trim();
        if !body.is_empty() {
            out.push_str(body);
            out.push('\n');
        }
    }
    Ok(out)
}

pub mod service;
