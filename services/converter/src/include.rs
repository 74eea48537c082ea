//! `include` and `excerpt-include` macros resolved to the pages the fetcher carried with the page
//! (`PageChanged.included`): before the analysis, each macro whose page was found gets that page's
//! content (or, for an excerpt, the body of its `excerpt` macro) grafted under it in a
//! [`INCLUDED`] element, which the analysis reads like the page's own content and the renderer
//! shows in place of the macro. Included pages are expanded in turn, to [`MAX_INCLUDE_DEPTH`]
//! levels (as deep as the fetcher resolves them); a page that includes itself through others, one past the depth, one missing, or one
//! past the size bound keeps the macro's marker.

use markup5ever_rcdom::Handle;
use pagestream_events::{IncludedContent, IncludedPage, MAX_INCLUDE_DEPTH};

use crate::analyze::{child_elements, first_child_named, included_page, macro_name};
use crate::parse::{self, TreeLimits, element_name};

/// The element that holds an included page's content under its macro. Its name has a space,
/// which no parser accepts in an element name, so the input cannot forge it.
pub const INCLUDED: &str = "pagestream included";

/// Whether a macro name pulls in another page.
pub fn is_include_macro(name: &str) -> bool {
    matches!(name, "include" | "excerpt-include")
}

/// What one expansion may still graft.
struct Budget<'a> {
    included: &'a [IncludedPage],
    limits: TreeLimits,
    /// Bytes of storage still allowed to be parsed (the page's own input bound).
    bytes_left: usize,
}

/// Grafts the included pages under their macros in `document`, a page of `space_key`.
pub fn expand(
    document: &Handle,
    space_key: &str,
    included: &[IncludedPage],
    limits: TreeLimits,
    max_bytes: usize,
) {
    if included.is_empty() {
        return;
    }
    let mut budget = Budget {
        included,
        limits,
        bytes_left: max_bytes,
    };
    let mut chain = Vec::new();
    expand_in(document, space_key, 0, &mut chain, &mut budget);
}

/// Expands the include macros in `root` (content of `space_key` at `depth`); `chain` holds the
/// pages being expanded above it, to break cycles.
fn expand_in(
    root: &Handle,
    space_key: &str,
    depth: usize,
    chain: &mut Vec<(String, String)>,
    budget: &mut Budget<'_>,
) {
    if depth >= MAX_INCLUDE_DEPTH {
        return;
    }
    for (node, name) in include_macros(root) {
        let Some((title, space)) = included_page(&node) else {
            continue;
        };
        let space = space.unwrap_or_else(|| space_key.to_owned());
        if chain.iter().any(|(s, t)| *s == space && *t == title) {
            continue;
        }
        let Some(IncludedContent::Found { body_storage, .. }) = budget
            .included
            .iter()
            .find(|page| page.is(&space, &title))
            .map(|page| &page.content)
        else {
            continue;
        };
        if body_storage.len() > budget.bytes_left {
            continue;
        }
        budget.bytes_left -= body_storage.len();
        let tree = parse::parse_storage(body_storage, budget.limits);
        let content = if name == "excerpt-include" {
            match excerpt_body(&tree.document) {
                Some(body) => body,
                None => continue,
            }
        } else {
            tree.document
        };
        let holder = parse::new_element(INCLUDED);
        for child in content.children.take() {
            parse::append(&holder, child);
        }
        parse::append(&node, holder.clone());
        chain.push((space.clone(), title));
        expand_in(&holder, &space, depth + 1, chain, budget);
        chain.pop();
    }
}

/// The include macros in `root` (not inside another include macro), with their names.
fn include_macros(root: &Handle) -> Vec<(Handle, String)> {
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        let name = element_name(&node);
        if &**name == "ac:structured-macro" || &**name == "ac:macro" {
            let macro_name = macro_name(&node);
            if is_include_macro(&macro_name) {
                found.push((node, macro_name));
                continue;
            }
        }
        stack.extend(node.children.borrow().iter().rev().cloned());
    }
    found
}

/// The rich-text body of the first `excerpt` macro of a page, as Confluence's excerpt-include
/// shows it.
fn excerpt_body(document: &Handle) -> Option<Handle> {
    let mut stack = vec![document.clone()];
    while let Some(node) = stack.pop() {
        let name = element_name(&node);
        if (&**name == "ac:structured-macro" || &**name == "ac:macro")
            && macro_name(&node) == "excerpt"
        {
            return first_child_named(&node, "ac:rich-text-body");
        }
        stack.extend(child_elements(&node).into_iter().rev());
    }
    None
}
