//! One iterative pass over the tree before rendering: collects the metadata, resolves and
//! sanitizes every URL (so that the renderer only writes what this pass approved), turns no-break
//! spaces in prose into spaces, drops blank text between blocks, and merges adjacent identical
//! inline elements (which the renderer would otherwise merge in quadratic time).

use html5ever::tendril::StrTendril;
use html5ever::{Attribute, LocalName, QualName, ns};
use markup5ever_rcdom::{Handle, NodeData};
use pagestream_events::{ContentMetadata, Include, InternalLink, PageId};

use crate::ConvertOptions;
use crate::include::{INCLUDED, is_include_macro};
use crate::jira::{self, push_unique};
use crate::parse::element_name;
use crate::url::{UrlUse, encode_path_segment, sanitize_url};

/// The attribute in which this pass leaves a resolved, sanitized URL for the renderer. Its name
/// has a space, which no parser accepts in an attribute name, so the input cannot forge it.
pub const RESOLVED_URL: &str = "pagestream url";

/// An attribute's value, trimmed; `None` when absent or blank.
pub fn attr(node: &Handle, name: &str) -> Option<String> {
    match &node.data {
        NodeData::Element { attrs, .. } => attrs
            .borrow()
            .iter()
            .find(|attr| &*attr.name.local == name)
            .map(|attr| attr.value.trim().to_owned())
            .filter(|value| !value.is_empty()),
        _ => None,
    }
}

fn set_resolved_url(node: &Handle, url: Option<String>) {
    if let NodeData::Element { attrs, .. } = &node.data {
        let mut attrs = attrs.borrow_mut();
        attrs.retain(|attr| &*attr.name.local != RESOLVED_URL);
        if let Some(url) = url {
            attrs.push(Attribute {
                name: QualName::new(None, ns!(), LocalName::from(RESOLVED_URL)),
                value: StrTendril::from(url),
            });
        }
    }
}

/// Element children of `node`.
pub fn child_elements(node: &Handle) -> Vec<Handle> {
    node.children
        .borrow()
        .iter()
        .filter(|child| matches!(child.data, NodeData::Element { .. }))
        .cloned()
        .collect()
}

pub fn first_child_named(node: &Handle, name: &str) -> Option<Handle> {
    node.children
        .borrow()
        .iter()
        .find(|child| &**element_name(child) == name)
        .cloned()
}

/// The text of a node and its descendants, without recursion.
pub fn text_content(node: &Handle) -> String {
    let mut out = String::new();
    let mut stack = vec![node.clone()];
    while let Some(current) = stack.pop() {
        if let NodeData::Text { contents } = &current.data {
            out.push_str(&contents.borrow());
        }
        stack.extend(current.children.borrow().iter().rev().cloned());
    }
    out
}

/// The `ac:name` of a macro element, lowercased.
pub fn macro_name(node: &Handle) -> String {
    attr(node, "ac:name")
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// A macro's parameter by name (the unnamed default parameter has the name "").
pub fn macro_parameter(node: &Handle, name: &str) -> Option<Handle> {
    node.children
        .borrow()
        .iter()
        .find(|child| {
            &**element_name(child) == "ac:parameter"
                && attr(child, "ac:name").unwrap_or_default() == name
        })
        .cloned()
}

pub fn macro_parameter_text(node: &Handle, name: &str) -> Option<String> {
    macro_parameter(node, name)
        .map(|parameter| crate::text::squash_whitespace(&text_content(&parameter)))
        .filter(|value| !value.is_empty())
}

/// The page an include / excerpt-include macro pulls in: an `ri:page` in its parameters.
pub fn included_page(node: &Handle) -> Option<(String, Option<String>)> {
    let mut stack = child_elements(node);
    while let Some(current) = stack.pop() {
        if &**element_name(&current) == "ri:page" {
            let title = attr(&current, "ri:content-title")?;
            return Some((title, attr(&current, "ri:space-key")));
        }
        if &**element_name(&current) == "ac:parameter" || &**element_name(&current) == "ac:link" {
            stack.extend(child_elements(&current));
        }
    }
    None
}

/// The account id (Cloud), user key or user name (Data Center) of an `ri:user`.
pub fn user_id(node: &Handle) -> Option<String> {
    ["ri:account-id", "ri:userkey", "ri:username"]
        .iter()
        .find_map(|key| attr(node, key))
}

/// Macros that show one attachment, named by their `name` parameter.
pub fn is_file_macro(name: &str) -> bool {
    matches!(
        name,
        "view-file" | "viewpdf" | "viewdoc" | "viewxls" | "viewppt" | "multimedia"
    )
}

/// Elements whose text is code, not prose: no Jira keys are looked for there.
fn is_code_element(name: &str) -> bool {
    matches!(
        name,
        "pre" | "code" | "ac:plain-text-body" | "ac:parameter" | "ac:task-id" | "ac:task-uuid"
    )
}

struct Collector<'a> {
    options: &'a ConvertOptions,
    metadata: ContentMetadata,
}

pub fn analyze(document: &Handle, options: &ConvertOptions) -> ContentMetadata {
    let mut collector = Collector {
        options,
        metadata: ContentMetadata::default(),
    };
    collector.walk(document);
    collector.metadata
}

impl Collector<'_> {
    /// Records what the subtree of `root` says, without recursion (included pages aside, whose
    /// depth is bounded).
    fn walk(&mut self, root: &Handle) {
        // (node, inside code)
        let mut stack = vec![(root.clone(), false)];
        while let Some((node, in_code)) = stack.pop() {
            match &node.data {
                NodeData::Text { contents } if !in_code => {
                    // Confluence pads prose with no-break spaces; Markdown wants plain ones.
                    if contents.borrow().contains('\u{a0}') {
                        let plain = contents.borrow().replace('\u{a0}', " ");
                        *contents.borrow_mut() = StrTendril::from(plain);
                    }
                    jira::keys_in_text(&contents.borrow(), &mut self.metadata.jira_issue_links);
                }
                NodeData::Element { .. } | NodeData::Document => {
                    normalize_children(&node);
                    let name = element_name(&node).clone();
                    let descend = self.element(&node, &name);
                    if descend {
                        let in_code = in_code || is_code_element(&name);
                        let children = node.children.borrow();
                        stack.extend(children.iter().rev().map(|child| (child.clone(), in_code)));
                    }
                }
                _ => {}
            }
        }
    }

    /// Records what `node` says; false when its subtree holds nothing more to record.
    fn element(&mut self, node: &Handle, name: &str) -> bool {
        match name {
            "ac:structured-macro" | "ac:macro" => return self.macro_element(node),
            "ac:link" => self.link(node),
            "ac:image" => self.image(node),
            "ri:attachment" => {
                if let Some(file) = attr(node, "ri:filename") {
                    push_unique(&mut self.metadata.attachments, file);
                }
            }
            "ri:user" => {
                if let Some(user) = user_id(node) {
                    push_unique(&mut self.metadata.user_mentions, user);
                }
            }
            "a" => self.anchor(node),
            "img" => {
                let src = attr(node, "src").and_then(|src| sanitize_url(&src, UrlUse::Image));
                set_resolved_url(node, src);
            }
            _ => {}
        }
        true
    }

    fn macro_element(&mut self, node: &Handle) -> bool {
        let name = macro_name(node);
        if name.is_empty() {
            return true;
        }
        push_unique(&mut self.metadata.macros_used, name.clone());
        match name.as_str() {
            "jira" => {
                let key =
                    macro_parameter_text(node, "key").and_then(|key| jira::normalize_key(&key));
                let url = key.as_ref().and_then(|key| {
                    let base = self.options.jira_base_url.as_deref()?;
                    sanitize_url(
                        &format!("{}/browse/{key}", base.trim_end_matches('/')),
                        UrlUse::Link,
                    )
                });
                set_resolved_url(node, url);
                if let Some(key) = key {
                    push_unique(&mut self.metadata.jira_issue_links, key);
                }
                false
            }
            name if is_include_macro(name) => {
                if let Some((title, space_key)) = included_page(node) {
                    let include = Include {
                        macro_name: name.to_owned(),
                        title,
                        space_key,
                    };
                    if !self.metadata.includes.contains(&include) {
                        self.metadata.includes.push(include);
                    }
                }
                // Its own content is the reference, recorded above; the page it pulls in, if
                // the fetcher carried it, is read like the page's own.
                if let Some(included) = first_child_named(node, INCLUDED) {
                    self.walk(&included);
                }
                false
            }
            name if is_file_macro(name) => {
                let url = macro_parameter(node, "name")
                    .and_then(|parameter| first_child_named(&parameter, "ri:attachment"))
                    .and_then(|attachment| self.attachment_url(&attachment));
                set_resolved_url(node, url);
                true
            }
            _ => true,
        }
    }

    fn link(&mut self, node: &Handle) {
        let anchor = attr(node, "ac:anchor");
        let anchor = anchor.as_deref();
        let resource = child_elements(node)
            .into_iter()
            .find(|child| element_name(child).starts_with("ri:"));
        let url = match &resource {
            Some(resource) => match &**element_name(resource) {
                "ri:page" | "ri:blog-post" => {
                    let title = attr(resource, "ri:content-title").unwrap_or_default();
                    let space = attr(resource, "ri:space-key").or(self.options.space_key.clone());
                    let space = space.as_deref();
                    if !title.is_empty() {
                        let link = InternalLink {
                            title: title.clone(),
                            space_key: space.map(str::to_owned),
                            page_id: None,
                        };
                        if !self.metadata.internal_links.contains(&link) {
                            self.metadata.internal_links.push(link);
                        }
                    }
                    self.page_url(&title, space, anchor)
                }
                "ri:content-entity" => {
                    let id = attr(resource, "ri:content-id").unwrap_or_default();
                    if let Ok(page_id) = PageId::new(id) {
                        let link = InternalLink {
                            title: String::new(),
                            space_key: None,
                            page_id: Some(page_id),
                        };
                        if !self.metadata.internal_links.contains(&link) {
                            self.metadata.internal_links.push(link);
                        }
                    }
                    None
                }
                "ri:attachment" => self.attachment_url(resource),
                "ri:url" => {
                    let value = attr(resource, "ri:value").unwrap_or_default();
                    self.external(&value)
                }
                _ => None,
            },
            None => anchor.map(|anchor| format!("#{}", encode_path_segment(anchor))),
        };
        set_resolved_url(node, url);
    }

    fn page_url(&self, title: &str, space: Option<&str>, anchor: Option<&str>) -> Option<String> {
        let fragment = anchor
            .map(|anchor| format!("#{}", encode_path_segment(anchor)))
            .unwrap_or_default();
        if title.is_empty() {
            // A link to an anchor on this page.
            return anchor.map(|_| fragment);
        }
        let base = self.options.confluence_base_url.as_deref()?;
        let space = space?;
        let url = format!(
            "{}/display/{}/{}{fragment}",
            base.trim_end_matches('/'),
            encode_path_segment(space),
            encode_path_segment(title)
        );
        sanitize_url(&url, UrlUse::Link)
    }

    fn attachment_url(&self, resource: &Handle) -> Option<String> {
        let file = attr(resource, "ri:filename")?;
        // An attachment of another page (`ri:page` inside) has no address known here.
        let on_this_page = first_child_named(resource, "ri:page").is_none()
            && first_child_named(resource, "ri:blog-post").is_none();
        let url = match (
            &self.options.confluence_base_url,
            &self.options.page_id,
            on_this_page,
        ) {
            (Some(base), Some(page_id), true) => format!(
                "{}/download/attachments/{}/{}",
                base.trim_end_matches('/'),
                encode_path_segment(page_id),
                encode_path_segment(&file)
            ),
            // Relative: the file name, as exports lay attachments out beside the page.
            _ => encode_path_segment(&file),
        };
        sanitize_url(&url, UrlUse::Link)
    }

    fn image(&mut self, node: &Handle) {
        let resource = child_elements(node)
            .into_iter()
            .find(|child| element_name(child).starts_with("ri:"));
        let url = resource.and_then(|resource| match &**element_name(&resource) {
            "ri:attachment" => self.attachment_url(&resource),
            "ri:url" => sanitize_url(
                &attr(&resource, "ri:value").unwrap_or_default(),
                UrlUse::Image,
            ),
            _ => None,
        });
        set_resolved_url(node, url);
    }

    fn anchor(&mut self, node: &Handle) {
        let raw = attr(node, "href");
        let href = raw
            .as_deref()
            .and_then(|href| sanitize_url(href, UrlUse::Link));
        if let Some(raw) = raw {
            self.classify_href(&raw);
        }
        set_resolved_url(node, href);
    }

    /// Sorts a hyperlink into internal link, external link and Jira key.
    fn classify_href(&mut self, href: &str) {
        if sanitize_url(href, UrlUse::Link).is_none() {
            return;
        }
        let href = href.trim();
        if let Some(key) = jira::key_from_browse_url(href) {
            push_unique(&mut self.metadata.jira_issue_links, key);
        }
        if let Some(link) = self.internal_page_link(href) {
            if !self.metadata.internal_links.contains(&link) {
                self.metadata.internal_links.push(link);
            }
            return;
        }
        let lower = href.get(..8).unwrap_or(href).to_ascii_lowercase();
        if ["http://", "https://", "mailto:", "ftp://"]
            .iter()
            .any(|scheme| lower.starts_with(scheme))
        {
            push_unique(&mut self.metadata.external_links, href.to_owned());
        }
    }

    fn external(&mut self, url: &str) -> Option<String> {
        self.classify_href(url);
        sanitize_url(url, UrlUse::Link)
    }

    /// A hyperlink to a page of this Confluence: relative, or under the known base URL.
    fn internal_page_link(&self, href: &str) -> Option<InternalLink> {
        let path = match self.options.confluence_base_url.as_deref() {
            Some(base) if href.starts_with(base) => &href[base.len()..],
            _ if href.starts_with('/') && !href.starts_with("//") => href,
            _ => return None,
        };
        let path = path.split('#').next().unwrap_or_default();
        // /spaces/KEY/pages/ID[/Title]
        if let Some(rest) = path.strip_prefix("/spaces/").or_else(|| {
            path.find("/spaces/")
                .map(|at| &path[at + "/spaces/".len()..])
        }) {
            let mut parts = rest.split('/');
            let space = parts.next().filter(|s| !s.is_empty())?;
            if parts.next() == Some("pages") {
                let page_id = parts
                    .next()
                    .and_then(|id| PageId::new(id.split('?').next()?).ok())?;
                let title = parts.next().map(decode_title).unwrap_or_default();
                return Some(InternalLink {
                    title,
                    space_key: Some(space.to_owned()),
                    page_id: Some(page_id),
                });
            }
        }
        // /pages/viewpage.action?pageId=ID
        if path.contains("/pages/viewpage.action")
            && let Some((_, query)) = path.split_once("pageId=")
        {
            let page_id = PageId::new(query.split('&').next()?).ok()?;
            return Some(InternalLink {
                title: String::new(),
                space_key: None,
                page_id: Some(page_id),
            });
        }
        // /display/KEY/Title
        if let Some(at) = path.find("/display/") {
            let mut parts = path[at + "/display/".len()..].split('/');
            let space = parts.next().filter(|s| !s.is_empty())?;
            let title = parts.next().map(decode_title).filter(|t| !t.is_empty())?;
            return Some(InternalLink {
                title,
                space_key: Some(space.to_owned()),
                page_id: None,
            });
        }
        None
    }
}

/// A page title from a URL path segment: `+` and `%20` are spaces.
fn decode_title(segment: &str) -> String {
    let segment = segment
        .split('?')
        .next()
        .unwrap_or_default()
        .replace('+', " ");
    percent_encoding::percent_decode_str(&segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// The elements that the renderer treats as blocks (CommonMark's HTML block names): those are
/// never merged.
fn is_block_element(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "base"
            | "basefont"
            | "blockquote"
            | "body"
            | "caption"
            | "center"
            | "col"
            | "colgroup"
            | "dd"
            | "details"
            | "dialog"
            | "dir"
            | "div"
            | "dl"
            | "dt"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "frame"
            | "frameset"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "head"
            | "header"
            | "hr"
            | "html"
            | "iframe"
            | "legend"
            | "li"
            | "link"
            | "main"
            | "menu"
            | "menuitem"
            | "nav"
            | "noframes"
            | "ol"
            | "optgroup"
            | "option"
            | "p"
            | "param"
            | "pre"
            | "script"
            | "search"
            | "section"
            | "style"
            | "summary"
            | "table"
            | "tbody"
            | "td"
            | "textarea"
            | "tfoot"
            | "th"
            | "thead"
            | "title"
            | "tr"
            | "track"
            | "ul"
    )
}

/// The parent of a node, if it is still in the tree.
pub fn parent(node: &Handle) -> Option<Handle> {
    let weak = node.parent.take();
    let parent = weak.as_ref().and_then(std::rc::Weak::upgrade);
    node.parent.set(weak);
    parent
}

/// Elements whose children are blocks: whitespace between those blocks is layout, not text.
pub fn holds_blocks(name: &str) -> bool {
    matches!(
        name,
        "" | "html"
            | "body"
            | "div"
            | "blockquote"
            | "ul"
            | "ol"
            | "table"
            | "thead"
            | "tbody"
            | "tfoot"
            | "tr"
            | "ac:rich-text-body"
            | "ac:layout"
            | "ac:layout-section"
            | "ac:layout-cell"
            | "ac:task-list"
            | "ac:task"
            | "ac:adf-extension"
            | "ac:adf-node"
            | "ac:adf-fallback"
            | "ac:structured-macro"
            | "ac:macro"
            | "ac:parameter"
    )
}

/// Whether a node is inline content, which whitespace next to it must keep apart from its
/// neighbours.
fn is_inline(node: &Handle) -> bool {
    match &node.data {
        NodeData::Text { .. } => true,
        NodeData::Element { name, .. } => match &*name.local {
            "ac:structured-macro" | "ac:macro" => {
                matches!(macro_name(node).as_str(), "status" | "jira" | "anchor")
            }
            // Only asked about children of block holders, where an image is a block.
            "ac:link" | "ac:emoticon" | "ac:inline-comment-marker" | "time" => true,
            name => !is_block_element(name) && !name.starts_with("ac:") && !name.starts_with("ri:"),
        },
        _ => false,
    }
}

fn is_blank_text(node: &Handle) -> bool {
    match &node.data {
        NodeData::Text { contents } => contents.borrow().chars().all(char::is_whitespace),
        _ => false,
    }
}

/// Merges runs like `<b>a</b><b>b</b>` into `<b>ab</b>`, exactly as the renderer would, but in
/// one linear pass; and drops blank text between blocks.
fn normalize_children(node: &Handle) {
    let mut children = node.children.borrow_mut();
    let blocks_around = holds_blocks(element_name(node));
    let needs_work = children
        .windows(2)
        .any(|pair| mergeable_text(&pair[0], &pair[1]).is_some())
        || blocks_around && children.iter().any(is_blank_text);
    if !needs_work {
        return;
    }
    let old = std::mem::take(&mut *children);
    let mut merged: Vec<Handle> = Vec::with_capacity(old.len());
    for (index, child) in old.iter().enumerate() {
        if blocks_around && is_blank_text(child) {
            let after_block = merged.last().is_none_or(|previous| !is_inline(previous));
            let before_block = old.get(index + 1).is_none_or(|next| !is_inline(next));
            if after_block || before_block {
                continue;
            }
        }
        let child = child.clone();
        if let Some(previous) = merged.last()
            && let Some(text) = mergeable_text(previous, &child)
        {
            if let Some(NodeData::Text { contents }) = previous
                .children
                .borrow()
                .first()
                .map(|text_node| &text_node.data)
            {
                contents.borrow_mut().push_tendril(&text);
            }
            continue;
        }
        merged.push(child);
    }
    *children = merged;
}

fn single_text(node: &Handle) -> Option<StrTendril> {
    let children = node.children.borrow();
    match (children.len(), children.first().map(|child| &child.data)) {
        (1, Some(NodeData::Text { contents })) => Some(contents.borrow().clone()),
        _ => None,
    }
}

fn mergeable_text(first: &Handle, second: &Handle) -> Option<StrTendril> {
    let (
        NodeData::Element {
            name: name1,
            attrs: attrs1,
            ..
        },
        NodeData::Element {
            name: name2,
            attrs: attrs2,
            ..
        },
    ) = (&first.data, &second.data)
    else {
        return None;
    };
    let (local1, local2) = (&*name1.local, &*name2.local);
    let same_kind = local1 == local2
        || matches!(
            (local1, local2),
            ("i", "em") | ("em", "i") | ("b", "strong") | ("strong", "b")
        );
    if is_block_element(local1)
        || local1 == "a"
        || !same_kind
        || *attrs1.borrow() != *attrs2.borrow()
    {
        return None;
    }
    single_text(first)?;
    single_text(second)
}
