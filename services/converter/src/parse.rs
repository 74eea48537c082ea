//! Storage format to a DOM tree.
//!
//! Storage format is XHTML with `ac:`/`ri:` elements, HTML entities and CDATA sections. The strict
//! parser reads it as XML (quick-xml, with HTML5 entities); when the body is not well formed it is
//! read again by a lenient one (the html5ever tokenizer, which never fails). Both feed one
//! [`TreeBuilder`], which keeps XML nesting (so macro bodies stay inside their macros, unlike the
//! HTML tree-construction rules), honours self-closing tags, drops active content at the source, and
//! bounds the tree: past `max_depth` open elements or `max_elements` elements it stops creating
//! elements and keeps their text in the deepest element, so that nothing later can recurse deeply
//! or blow up memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};
use html5ever::{Attribute, LocalName, QualName, TokenizerResult, ns};
use markup5ever_rcdom::{Handle, Node, NodeData};
use quick_xml::events::Event;
use quick_xml::events::attributes::Attribute as XmlAttribute;

/// Bounds on the tree built from one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// Open elements kept as elements; deeper ones are flattened into their text.
    pub max_depth: usize,
    /// Elements kept in the tree; later ones are flattened into their text.
    pub max_elements: usize,
}

/// Which parser produced the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseMode {
    Strict,
    Lenient,
}

pub struct ParsedTree {
    pub document: Handle,
    pub mode: ParseMode,
}

/// Parses a storage-format body, strictly if it is well formed, leniently otherwise.
pub fn parse_storage(input: &str, limits: TreeLimits) -> ParsedTree {
    match parse_strict(input, limits) {
        Some(document) => ParsedTree {
            document,
            mode: ParseMode::Strict,
        },
        None => ParsedTree {
            document: parse_lenient(input, limits),
            mode: ParseMode::Lenient,
        },
    }
}

/// Elements whose whole content is dropped: active or embedded content, and document metadata.
fn is_dropped_element(name: &str) -> bool {
    matches!(
        name,
        "script"
            | "style"
            | "iframe"
            | "frame"
            | "frameset"
            | "noframes"
            | "object"
            | "embed"
            | "applet"
            | "noscript"
            | "noembed"
            | "template"
            | "svg"
            | "math"
            | "canvas"
            | "audio"
            | "video"
            | "source"
            | "track"
            | "link"
            | "meta"
            | "base"
            | "head"
            | "title"
            | "xmp"
            | "plaintext"
    )
}

/// HTML void elements: never open, whatever the markup says.
fn is_void_element(name: &str) -> bool {
    matches!(
        name,
        "area" | "br" | "col" | "hr" | "img" | "input" | "wbr" | "param" | "keygen"
    )
}

/// Elements that browsers close implicitly when a sibling of the same kind starts.
fn closes_same_kind(name: &str) -> bool {
    matches!(
        name,
        "p" | "li" | "tr" | "td" | "th" | "dt" | "dd" | "option"
    )
}

fn closes_paragraph(name: &str) -> bool {
    matches!(
        name,
        "p" | "ul"
            | "ol"
            | "table"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "div"
            | "pre"
            | "blockquote"
            | "hr"
    )
}

enum Open {
    /// An element in the tree.
    Element(Handle),
    /// An element past the limits, flattened: only its name is kept to match its end tag.
    Flattened(LocalName),
    /// A dropped element: everything up to its end tag is discarded.
    Dropped(LocalName),
}

impl Open {
    fn name(&self) -> &LocalName {
        match self {
            Open::Element(handle) => element_name(handle),
            Open::Flattened(name) | Open::Dropped(name) => name,
        }
    }
}

pub fn element_name(handle: &Handle) -> &LocalName {
    static EMPTY: std::sync::OnceLock<LocalName> = std::sync::OnceLock::new();
    match &handle.data {
        NodeData::Element { name, .. } => &name.local,
        _ => EMPTY.get_or_init(|| LocalName::from("")),
    }
}

/// Builds the tree from start tags, end tags and text, in either parser's order.
struct TreeBuilder {
    document: Handle,
    /// Open elements, innermost last (the document itself is not in it).
    open: Vec<Open>,
    /// Lenient parsing only: how many of each name are open, so that an unmatched end tag is
    /// found without a scan. (The strict parser has checked that every end tag matches.)
    open_counts: Option<HashMap<LocalName, usize>>,
    /// Open `Dropped` elements: while any is open, text and tags are discarded.
    dropped_depth: usize,
    /// Open elements in the tree (not flattened, not dropped), innermost last.
    parents: Vec<Handle>,
    elements: usize,
    limits: TreeLimits,
    pending_text: String,
}

enum EndTag {
    Matched,
    Unmatched,
}

impl TreeBuilder {
    fn new(limits: TreeLimits, mode: ParseMode) -> Self {
        Self {
            document: Node::new(NodeData::Document),
            open: Vec::new(),
            open_counts: (mode == ParseMode::Lenient).then(HashMap::new),
            dropped_depth: 0,
            parents: Vec::new(),
            elements: 0,
            limits,
            pending_text: String::new(),
        }
    }

    fn current_parent(&self) -> &Handle {
        self.parents.last().unwrap_or(&self.document)
    }

    fn flush_text(&mut self) {
        if self.pending_text.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.pending_text);
        append(
            self.current_parent(),
            Node::new(NodeData::Text {
                contents: RefCell::new(StrTendril::from(text)),
            }),
        );
    }

    fn text(&mut self, text: &str) {
        if self.dropped_depth == 0 {
            self.pending_text.push_str(text);
        }
    }

    /// A start tag; `self_closing` elements are not left open.
    fn start(&mut self, name: LocalName, attrs: Vec<Attribute>, self_closing: bool) {
        if self.dropped_depth > 0 || is_dropped_element(&name) {
            if !self_closing && !is_void_element(&name) {
                self.dropped_depth += 1;
                self.push_open(Open::Dropped(name));
            }
            return;
        }
        let opens = !self_closing && !is_void_element(&name);
        if self.parents.len() >= self.limits.max_depth || self.elements >= self.limits.max_elements
        {
            // Keep words apart where the flattened markup separated them.
            if !self.pending_text.ends_with(char::is_whitespace) {
                self.pending_text.push(' ');
            }
            if opens {
                self.push_open(Open::Flattened(name));
            }
            return;
        }
        self.flush_text();
        self.elements += 1;
        let element = Node::new(NodeData::Element {
            name: QualName::new(None, ns!(html), name),
            attrs: RefCell::new(attrs),
            template_contents: RefCell::new(None),
            mathml_annotation_xml_integration_point: false,
        });
        append(self.current_parent(), element.clone());
        if opens {
            self.parents.push(element.clone());
            self.push_open(Open::Element(element));
        }
    }

    fn push_open(&mut self, open: Open) {
        if let Some(counts) = &mut self.open_counts {
            *counts.entry(open.name().clone()).or_default() += 1;
        }
        self.open.push(open);
    }

    fn pop_open(&mut self) {
        let Some(open) = self.open.pop() else {
            return;
        };
        match &open {
            Open::Element(_) => {
                self.parents.pop();
            }
            Open::Dropped(_) => self.dropped_depth -= 1,
            Open::Flattened(name) => {
                if !is_void_element(name) && !self.pending_text.ends_with(char::is_whitespace) {
                    self.pending_text.push(' ');
                }
            }
        }
        if let Some(counts) = &mut self.open_counts
            && let Some(count) = counts.get_mut(open.name())
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(open.name());
            }
        }
    }

    /// An end tag. In the strict parser it always matches the innermost open element; in the
    /// lenient one it closes the innermost open element of its name, or is ignored.
    fn end(&mut self, name: &LocalName) -> EndTag {
        let is_open = match &self.open_counts {
            Some(counts) => counts.contains_key(name),
            None => self.open.last().is_some_and(|open| open.name() == name),
        };
        if !is_open {
            return EndTag::Unmatched;
        }
        self.flush_text();
        while let Some(open) = self.open.last() {
            let is_match = open.name() == name;
            self.pop_open();
            if is_match {
                break;
            }
        }
        EndTag::Matched
    }

    /// Browsers close an open `p`, `li`, `td`... when the next one starts.
    fn close_implied(&mut self, name: &LocalName) {
        // A block starting inside an open paragraph ends the paragraph.
        if closes_paragraph(name) && self.open.last().is_some_and(|open| &**open.name() == "p") {
            let _ = self.end(&LocalName::from("p"));
        }
        if !closes_same_kind(name) {
            return;
        }
        let closes = |open: &LocalName| match &**name {
            "td" | "th" => matches!(&**open, "td" | "th"),
            "tr" => matches!(&**open, "td" | "th" | "tr"),
            "dt" | "dd" => matches!(&**open, "dt" | "dd"),
            _ => open == name,
        };
        while let Some(innermost) = self.open.last().map(|open| open.name().clone()) {
            if !closes(&innermost) {
                break;
            }
            let _ = self.end(&innermost);
            if innermost == *name {
                break;
            }
        }
    }

    fn finish(mut self) -> Handle {
        self.flush_text();
        self.document
    }
}

pub fn append(parent: &Handle, child: Handle) {
    child.parent.set(Some(Rc::downgrade(parent)));
    parent.children.borrow_mut().push(child);
}

/// An element without attributes, for content the converter adds to the tree.
pub fn new_element(name: &str) -> Handle {
    Node::new(NodeData::Element {
        name: QualName::new(None, ns!(html), LocalName::from(name)),
        attrs: RefCell::new(Vec::new()),
        template_contents: RefCell::new(None),
        mathml_annotation_xml_integration_point: false,
    })
}

fn lowercase_name(name: &str) -> LocalName {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        LocalName::from(name.to_ascii_lowercase())
    } else {
        LocalName::from(name)
    }
}

/// Reads well-formed XHTML; `None` as soon as the body is not.
fn parse_strict(input: &str, limits: TreeLimits) -> Option<Handle> {
    let mut reader = quick_xml::Reader::from_str(input);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.allow_unmatched_ends = false;
    config.trim_text(false);
    let mut builder = TreeBuilder::new(limits, ParseMode::Strict);
    loop {
        match reader.read_event().ok()? {
            Event::Start(start) => {
                let name = lowercase_name(start.name().as_ref());
                let attrs = strict_attributes(start.attributes())?;
                builder.start(name, attrs, false);
            }
            Event::Empty(start) => {
                let name = lowercase_name(start.name().as_ref());
                let attrs = strict_attributes(start.attributes())?;
                builder.start(name, attrs, true);
            }
            Event::End(end) => {
                let name = lowercase_name(end.name().as_ref());
                if let EndTag::Unmatched = builder.end(&name) {
                    return None;
                }
            }
            Event::Text(text) => builder.text(&text.xml10_content()),
            // CDATA is taken byte for byte: code macro bodies depend on it.
            Event::CData(cdata) => builder.text(&cdata.into_inner()),
            Event::GeneralRef(reference) => {
                if let Some(ch) = reference.resolve_char_ref().ok()? {
                    builder.text(ch.encode_utf8(&mut [0; 4]));
                } else {
                    builder.text(quick_xml::escape::resolve_html5_entity(&reference)?);
                }
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if !builder.open.is_empty() {
        return None;
    }
    Some(builder.finish())
}

fn strict_attributes(
    attributes: quick_xml::events::attributes::Attributes,
) -> Option<Vec<Attribute>> {
    let mut attrs = Vec::new();
    for attribute in attributes {
        let attribute: XmlAttribute = attribute.ok()?;
        let name = lowercase_name(attribute.key.as_ref());
        let value = attribute
            .normalized_value_with(
                quick_xml::XmlVersion::Implicit1_0,
                1,
                quick_xml::escape::resolve_html5_entity,
            )
            .ok()?;
        attrs.push(Attribute {
            name: QualName::new(None, ns!(), name),
            value: StrTendril::from(value.as_ref()),
        });
    }
    Some(attrs)
}

/// Reads anything: unclosed and misnested tags, stray `<` and `&`, unknown entities.
fn parse_lenient(input: &str, limits: TreeLimits) -> Handle {
    let sink = LenientSink {
        builder: RefCell::new(TreeBuilder::new(limits, ParseMode::Lenient)),
    };
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let queue = BufferQueue::default();
    queue.push_back(StrTendril::from(input));
    while let TokenizerResult::Script(_) = tokenizer.feed(&queue) {}
    tokenizer.end();
    tokenizer.sink.builder.into_inner().finish()
}

struct LenientSink {
    builder: RefCell<TreeBuilder>,
}

impl TokenSink for LenientSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line_number: u64) -> TokenSinkResult<()> {
        let mut builder = self.builder.borrow_mut();
        match token {
            Token::TagToken(tag) => match tag.kind {
                TagKind::StartTag => {
                    let raw_kind = match &*tag.name {
                        "script" => Some(RawKind::ScriptData),
                        "style" | "iframe" | "xmp" | "noembed" | "noframes" => {
                            Some(RawKind::Rawtext)
                        }
                        "textarea" | "title" => Some(RawKind::Rcdata),
                        _ => None,
                    };
                    builder.close_implied(&tag.name);
                    builder.start(tag.name, tag.attrs, tag.self_closing);
                    // Script and style bodies are text to the tokenizer, as in a browser; a
                    // self-closed one has none.
                    if let (Some(kind), false) = (raw_kind, tag.self_closing) {
                        return TokenSinkResult::RawData(kind);
                    }
                }
                TagKind::EndTag => {
                    let _ = builder.end(&tag.name);
                }
            },
            Token::CharacterTokens(text) => builder.text(&text),
            Token::NullCharacterToken => builder.text("\u{FFFD}"),
            Token::CommentToken(_)
            | Token::DoctypeToken(_)
            | Token::EOFToken
            | Token::ParseError(_) => {}
        }
        TokenSinkResult::Continue
    }

    /// Storage format uses CDATA sections everywhere (code bodies, link bodies); read them as
    /// text rather than as the bogus comments that HTML content would make of them.
    fn adjusted_current_node_present_but_not_in_html_namespace(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TreeLimits = TreeLimits {
        max_depth: 64,
        max_elements: 10_000,
    };

    fn outline(node: &Handle, out: &mut String) {
        match &node.data {
            NodeData::Element { name, .. } => {
                out.push('<');
                out.push_str(&name.local);
                out.push('>');
                for child in node.children.borrow().iter() {
                    outline(child, out);
                }
                out.push_str("</>");
            }
            NodeData::Text { contents } => out.push_str(&contents.borrow()),
            _ => {
                for child in node.children.borrow().iter() {
                    outline(child, out);
                }
            }
        }
    }

    fn parsed(input: &str) -> (String, ParseMode) {
        let tree = parse_storage(input, LIMITS);
        let mut out = String::new();
        outline(&tree.document, &mut out);
        (out, tree.mode)
    }

    #[test]
    fn well_formed_storage_is_read_strictly_with_entities_and_cdata() {
        let (tree, mode) = parsed(
            "<p>a&nbsp;b&amp;&#65;</p><ac:plain-text-body><![CDATA[x &amp; <y>]]></ac:plain-text-body><ri:page ri:content-title=\"T&eacute;\"/>",
        );
        assert_eq!(mode, ParseMode::Strict);
        assert_eq!(
            tree,
            "<p>a\u{a0}b&A</><ac:plain-text-body>x &amp; <y></><ri:page></>"
        );
    }

    #[test]
    fn malformed_storage_falls_back_to_the_lenient_parser_and_keeps_the_text() {
        let (tree, mode) = parsed(
            "<p>a < b &bogus; <b>bold</p><ac:plain-text-body><![CDATA[<x>]]></ac:plain-text-body><ri:user ri:account-id=\"1\"/>tail",
        );
        assert_eq!(mode, ParseMode::Lenient);
        assert_eq!(
            tree,
            "<p>a < b &bogus; <b>bold</></><ac:plain-text-body><x></><ri:user></>tail"
        );
    }

    #[test]
    fn implied_end_tags_close_list_items_and_cells() {
        let (tree, _) = parsed("<ul><li>a<li>b</ul><table><tr><td>1<td>2<tr><td>3</table>");
        assert_eq!(
            tree,
            "<ul><li>a</><li>b</></><table><tr><td>1</><td>2</></><tr><td>3</></></>"
        );
    }

    #[test]
    fn active_content_is_dropped_at_the_source() {
        let (tree, _) = parsed(
            "<p>keep</p><script>if (a<b) alert(1)</script><style>p{}</style><iframe src=x>t</iframe><svg><script>x</script></svg><p>after</p>",
        );
        assert_eq!(tree, "<p>keep</><p>after</>");
    }

    #[test]
    fn depth_past_the_limit_is_flattened_into_text() {
        let depth = 1000;
        let input = format!("{}deep{}", "<div>".repeat(depth), "</div>".repeat(depth));
        let tree = parse_storage(&input, LIMITS);
        assert_eq!(tree.mode, ParseMode::Strict);
        let mut node = tree.document.clone();
        let mut levels = 0;
        loop {
            let next = node
                .children
                .borrow()
                .iter()
                .find(|child| matches!(child.data, NodeData::Element { .. }))
                .cloned();
            match next {
                Some(child) => {
                    node = child;
                    levels += 1;
                }
                None => break,
            }
        }
        assert_eq!(levels, LIMITS.max_depth);
        let mut out = String::new();
        outline(&node, &mut out);
        assert!(out.contains("deep"), "{out}");
    }

    #[test]
    fn elements_past_the_limit_are_flattened_into_text() {
        let limits = TreeLimits {
            max_depth: 64,
            max_elements: 3,
        };
        let tree = parse_storage("<p>a</p><p>b</p><p>c</p><p>d</p><p>e</p>", limits);
        let mut out = String::new();
        outline(&tree.document, &mut out);
        assert_eq!(out, "<p>a</><p>b</><p>c</> d e ");
    }
}
