#!/usr/bin/env python3
"""Build a search-relevance corpus from the Python HTML documentation.

Reads the Sphinx HTML of Debian's python3.11-doc package (usr/share/doc/python3.11/html) and
writes one JSON file holding

  pages:   a simulated Confluence space: one page per documentation page, bodies in Confluence
           storage format (XHTML with ac: macros), parents listed before their children;
  queries: a judged query set drawn from the documentation's own index (genindex): "api"
           queries name an object ("asyncio gather"), "concept" queries are index phrases
           ("garbage collection"); each lists the corpus pages the index entry points at.

ops/bench/relevance runs it. Standard library only, so it needs nothing but python3:

  relevance_corpus.py --html DIR --out corpus.json [--max-pages N] [--queries N] [--seed S]
"""

import argparse
import json
import posixpath
import random
import re
import sys
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

DOCS_URL = "https://docs.python.org/3.11/"

# Pages that are not documentation: generated indexes, search, legal and meta boilerplate.
SKIP_INDEX = {"search.html", "py-modindex.html"}
SKIP_BOILERPLATE = {"download.html", "copyright.html", "license.html", "bugs.html", "about.html"}
# The master table of contents is a generated list of every heading, like genindex; it would be
# an unjudged near-duplicate of every title.
SKIP_NAVIGATION = {"contents.html"}
# With --max-pages, these directories are filled first, in this order.
PREFERRED_DIRS = ["tutorial", "howto", "faq", "library"]

VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "source", "track", "wbr"}
DROP_TAGS = {"script", "style", "nav", "form", "input", "button", "noscript", "svg", "iframe",
             "colgroup", "col", "link", "meta", "template"}
BLOCK_TAGS = {"div", "section", "aside", "figure", "figcaption", "article", "header", "footer",
              "main", "caption", "center", "details", "summary", "address"}

# Sphinx highlight-<lexer> → Confluence code macro language. The CPython docs set
# highlight_language = python3, so "default" (doctest blocks) is Python too.
CODE_LANGUAGES = {
    "python3": "python", "python": "python", "pycon": "python", "py": "python",
    "default": "python", "ipython": "python",
    "sh": "bash", "bash": "bash", "shell": "bash", "shell-session": "bash", "console": "bash",
    "c": "cpp", "cpp": "cpp", "xml": "xml", "html": "xml", "sql": "sql", "yaml": "yaml",
    "json": "javascript", "js": "javascript", "javascript": "javascript",
}
# Sphinx admonition class → Confluence macro.
ADMONITION_MACROS = {
    "note": "note", "important": "note", "hint": "info", "tip": "info", "seealso": "info",
    "warning": "warning", "caution": "warning", "attention": "warning", "danger": "warning",
    "error": "warning",
}
# Description lists whose <dt> is an object signature.
API_DL_DOMAINS = {"py", "c", "cpp", "js"}

INVALID_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
WHITESPACE = re.compile(r"\s+")


# ----------------------------------------------------------------------------- HTML tree


class Node:
    __slots__ = ("tag", "attrs", "children")

    def __init__(self, tag, attrs):
        self.tag = tag
        self.attrs = attrs
        self.children = []

    @property
    def classes(self):
        return set((self.attrs.get("class") or "").split())

    def find(self, pred):
        """First descendant (depth first, self included) satisfying pred."""
        stack = [self]
        while stack:
            node = stack.pop()
            if pred(node):
                return node
            stack.extend(c for c in reversed(node.children) if isinstance(c, Node))
        return None


class TreeBuilder(HTMLParser):
    """Minimal DOM; Sphinx emits well-nested markup, so a stack with void handling suffices."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID_TAGS:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        # Close up to the matching open element; ignore stray end tags.
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_html(text):
    builder = TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def text_of(node):
    """Raw text of a subtree, without permalink anchors and scripts."""
    if isinstance(node, str):
        return node
    if node.tag in ("script", "style") or (node.tag == "a" and "headerlink" in node.classes):
        return ""
    return "".join(text_of(c) for c in node.children)


def collapse(text):
    return WHITESPACE.sub(" ", text)


def esc(text):
    text = INVALID_XML_CHARS.sub("", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def esc_attr(text):
    return esc(text).replace('"', "&quot;")


# ----------------------------------------------------------------------------- storage format


class StorageConverter:
    """Sphinx main-content HTML → Confluence storage format.

    Every handler returns a list of fragments (is_block, xml); containers decide how to join
    them, wrapping stray inline runs in <p> where storage format wants blocks.
    """

    def __init__(self, page_key):
        self.page_key = page_key
        self.title_dropped = False

    def convert(self, main):
        return self.flow(self.children(main))

    # -- joining

    def children(self, node):
        out = []
        for child in node.children:
            out.extend(self.node(child))
        return out

    @staticmethod
    def inline(frags):
        return re.sub(r" {2,}", " ", "".join(x for _, x in frags))

    def flow(self, frags):
        """Block context: blocks one per line, inline runs as paragraphs."""
        out, run = [], []

        def flush():
            text = self.inline(run).strip()
            if text:
                out.append(f"<p>{text}</p>")
            run.clear()

        for is_block, xml in frags:
            if is_block:
                flush()
                out.append(xml)
            else:
                run.append((is_block, xml))
        flush()
        return "\n".join(out)

    def mixed(self, frags):
        """List items and cells: plain inline content unless they hold blocks."""
        if any(is_block for is_block, _ in frags):
            return self.flow(frags)
        return self.inline(frags).strip()

    # -- helpers

    def href(self, href):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", href):
            return href
        path, _, fragment = href.partition("#")
        if path:
            path = posixpath.normpath(posixpath.join(posixpath.dirname(self.page_key), path))
        else:
            path = self.page_key
        return DOCS_URL + path + (f"#{fragment}" if fragment else "")

    @staticmethod
    def code_macro(text, language):
        text = INVALID_XML_CHARS.sub("", text).strip("\n")
        if not text.strip():
            return []
        # "]]>" cannot appear inside CDATA; close and reopen around it.
        body = text.replace("]]>", "]]]]><![CDATA[>")
        return [(True,
                 '<ac:structured-macro ac:name="code">'
                 f'<ac:parameter ac:name="language">{language}</ac:parameter>'
                 f"<ac:plain-text-body><![CDATA[{body}]]></ac:plain-text-body>"
                 "</ac:structured-macro>")]

    def wrap(self, tag, node):
        inner = self.inline(self.children(node))
        if not inner.strip():
            return [(False, inner)] if inner else []
        return [(False, f"<{tag}>{inner}</{tag}>")]

    # -- dispatch

    def node(self, node):
        if isinstance(node, str):
            text = collapse(node)
            return [(False, esc(text))] if text else []
        tag, cls = node.tag, node.classes
        if tag in DROP_TAGS or tag.startswith("#"):
            return []
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            return self.heading(node)
        if tag == "p":
            if "admonition-title" in cls:
                return []
            if "rubric" in cls:  # an unnumbered minor heading
                text = self.inline(self.children(node)).strip()
                return [(True, f"<p><strong>{text}</strong></p>")] if text else []
            frags = self.children(node)
            if any(is_block for is_block, _ in frags):
                return [(True, self.flow(frags))]
            text = self.inline(frags).strip()
            return [(True, f"<p>{text}</p>")] if text else []
        if tag == "div":
            lexer = next((c[len("highlight-"):] for c in cls if c.startswith("highlight-")), None)
            if lexer is not None:
                pre = node.find(lambda n: isinstance(n, Node) and n.tag == "pre")
                if pre is None:
                    return []
                return self.code_macro(text_of(pre), CODE_LANGUAGES.get(lexer, "none"))
            if "admonition" in cls:
                return self.admonition(node, cls)
            if "clearer" in cls or "sphinxsidebar" in cls:
                return []
        if tag == "pre":
            return self.code_macro(text_of(node), "none")
        if tag == "aside" and "sidebar" in cls:
            return []
        if tag in ("ul", "ol"):
            items = [f"<li>{self.mixed(self.children(c))}</li>"
                     for c in node.children if isinstance(c, Node) and c.tag == "li"]
            return [(True, f"<{tag}>{''.join(items)}</{tag}>")] if items else []
        if tag == "li":
            return [(True, self.flow(self.children(node)))]
        if tag == "table":
            return self.table(node)
        if tag == "dl":
            return self.description_list(node, cls)
        if tag == "blockquote":
            inner = self.flow(self.children(node))
            return [(True, f"<blockquote>{inner}</blockquote>")] if inner else []
        if tag in BLOCK_TAGS:
            inner = self.flow(self.children(node))
            return [(True, inner)] if inner else []
        if tag in ("code", "kbd", "tt", "samp") or (tag == "span" and "pre" in cls):
            text = collapse(text_of(node)).strip()
            return [(False, f"<code>{esc(text)}</code>")] if text else []
        if tag in ("em", "i", "cite", "dfn", "var"):
            return self.wrap("em", node)
        if tag in ("strong", "b"):
            return self.wrap("strong", node)
        if tag in ("sup", "sub"):
            return self.wrap(tag, node)
        if tag == "a":
            if "headerlink" in cls:
                return []
            frags = self.children(node)
            href = node.attrs.get("href")
            if not href:
                return frags
            inner = self.inline(frags).strip()
            if not inner:
                return []
            return [(False, f'<a href="{esc_attr(self.href(href))}">{inner}</a>')]
        if tag == "br":
            return [(False, "<br/>")]
        if tag == "hr":
            return [(True, "<hr/>")]
        if tag == "img":
            alt = collapse(node.attrs.get("alt", "")).strip()
            # Sphinx fills a missing alt with the image path; that is not text.
            if alt and not re.search(r"/|\.(png|jpe?g|gif|svg)$", alt, re.I):
                return [(True, f"<p>{esc(alt)}</p>")]
            return []
        # span, abbr, section wrappers and anything unknown: keep the content.
        return self.children(node)

    def heading(self, node):
        if node.tag == "h1" and not self.title_dropped:
            self.title_dropped = True  # it is the page title
            return []
        text = collapse(text_of(node)).strip().rstrip("¶").strip()
        return [(True, f"<{node.tag}>{esc(text)}</{node.tag}>")] if text else []

    def admonition(self, node, cls):
        name = next((ADMONITION_MACROS[c] for c in sorted(cls) if c in ADMONITION_MACROS), "info")
        body = self.flow(self.children(node))
        if not body:
            return []
        return [(True, f'<ac:structured-macro ac:name="{name}">'
                       f"<ac:rich-text-body>{body}</ac:rich-text-body></ac:structured-macro>")]

    def table(self, node):
        rows, before = [], []
        sections = [node] + [c for c in node.children
                             if isinstance(c, Node) and c.tag in ("thead", "tbody", "tfoot")]
        for section in sections:
            for tr in section.children:
                if not (isinstance(tr, Node) and tr.tag == "tr"):
                    continue
                cells = []
                for cell in tr.children:
                    if not (isinstance(cell, Node) and cell.tag in ("th", "td")):
                        continue
                    span = "".join(f' {a}="{esc_attr(cell.attrs[a])}"'
                                   for a in ("colspan", "rowspan")
                                   if cell.attrs.get(a, "").isdigit())
                    cells.append(f"<{cell.tag}{span}>{self.mixed(self.children(cell))}"
                                 f"</{cell.tag}>")
                if cells:
                    rows.append(f"<tr>{''.join(cells)}</tr>")
        for child in node.children:
            if isinstance(child, Node) and child.tag == "caption":
                caption = self.inline(self.children(child)).strip()
                if caption:
                    before.append((True, f"<p>{caption}</p>"))
        if not rows:
            return before
        return before + [(True, f"<table><tbody>{''.join(rows)}</tbody></table>")]

    def description_list(self, node, cls):
        api = bool(cls & API_DL_DOMAINS)
        out = []
        for child in node.children:
            if not isinstance(child, Node):
                continue
            if child.tag == "dt":
                if api or "sig" in child.classes:
                    sig = collapse(text_of(child)).strip()
                    if sig:
                        out.append((True, f"<p><strong><code>{esc(sig)}</code></strong></p>"))
                else:
                    term = self.inline(self.children(child)).strip()
                    if term:
                        out.append((True, f"<p><strong>{term}</strong></p>"))
            elif child.tag == "dd":
                body = self.flow(self.children(child))
                if body:
                    out.append((True, body))
        return out


def well_formed(body):
    try:
        ET.fromstring(f"<root xmlns:ac='a' xmlns:ri='r'>{body}</root>")
        return True
    except ET.ParseError:
        return False


def convert_page(html_root, key):
    """(page dict, None) or (None, skip reason)."""
    tree = parse_html((html_root / key).read_text(encoding="utf-8", errors="replace"))
    main = tree.find(lambda n: n.tag == "div" and n.attrs.get("role") == "main"
                     and "body" in n.classes)
    if main is None:
        main = tree.find(lambda n: n.tag == "body") or tree
    h1 = main.find(lambda n: n.tag == "h1")
    title = collapse(text_of(h1)).strip().rstrip("¶").strip() if h1 is not None else ""
    if not title:
        title_node = tree.find(lambda n: n.tag == "title")
        title = collapse(text_of(title_node)).strip() if title_node is not None else ""
        title = re.sub(r"\s+—\s+Python \S+ documentation$", "", title) or key
    body = StorageConverter(key).convert(main)
    if not well_formed(body):
        return None, "malformed body"
    return {"key": key, "title": title, "parent": None, "body": body,
            "labels": [key.split("/")[0]] if "/" in key else []}, None


# ----------------------------------------------------------------------------- page selection


def skip_reason(key):
    parts = key.split("/")
    name = parts[-1]
    if any(p.startswith("_") for p in parts[:-1]):
        return "asset directory"
    if name.startswith("genindex") or key in SKIP_INDEX:
        return "index/search"
    if key in SKIP_BOILERPLATE:
        return "boilerplate"
    if key in SKIP_NAVIGATION:
        return "navigation"
    if parts[0] == "includes":
        return "include fragment"
    return None


def dir_index(key):
    """The index page a page hangs under, by path: dir/index.html, or None for the root."""
    if "/" not in key:
        return None
    directory, name = key.rsplit("/", 1)
    return None if name == "index.html" else f"{directory}/index.html"


def priority(key):
    top = key.split("/")[0] if "/" in key else ""
    rank = PREFERRED_DIRS.index(top) if top in PREFERRED_DIRS else len(PREFERRED_DIRS)
    return rank, key


def select_pages(html_root, eligible, max_pages, skipped):
    """Convert the chosen pages; returns {key: page}."""
    pages = {}

    def load(key):
        page, reason = convert_page(html_root, key)
        if page is None:
            skipped[reason] = skipped.get(reason, 0) + 1
            print(f"relevance_corpus: skipped {key}: {reason}", file=sys.stderr)
        else:
            pages[key] = page

    if not max_pages:
        for key in sorted(eligible):
            load(key)
        return pages

    eligible_set = set(eligible)
    tried = set()
    if "index.html" in eligible_set:
        tried.add("index.html")
        load("index.html")
    for key in sorted(eligible, key=priority):
        if len(pages) >= max_pages:
            break
        if key in tried:
            continue
        parent = dir_index(key)
        # A directory's index page joins with its first kept page.
        need = [k for k in (parent, key) if k and k in eligible_set and k not in tried]
        if len(pages) + len(need) > max_pages:
            continue
        for k in need:
            tried.add(k)
            load(k)
    left = len(eligible_set - tried)
    if left:
        skipped["over --max-pages"] = left
    return pages


def order_pages(pages):
    """Root, root-level pages, then each directory's index followed by its pages."""
    root = "index.html" if "index.html" in pages else None

    def sort_key(key):
        if key == root:
            return (0, "", 0, "")
        if "/" not in key:
            return (1, "", 0, key)
        directory, name = key.rsplit("/", 1)
        return (2, directory, 0 if name == "index.html" else 1, name)

    ordered = []
    for key in sorted(pages, key=sort_key):
        page = pages[key]
        parent = dir_index(key)
        if key == root:
            page["parent"] = None
        elif parent in pages:
            page["parent"] = parent
        else:
            page["parent"] = root
        ordered.append(page)
    return ordered


# ----------------------------------------------------------------------------- index → queries


class IndexParser(HTMLParser):
    """Sphinx genindex entries; handles both the <ul><li> and the older <dl><dt><dd> layouts.

    Each entry is (text, hrefs, parent entry or None); level-2 entries are sub-entries.
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.in_table = False
        self.depth = 0
        self.current = None
        self.top = None
        self.entries = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "indextable" in (attrs.get("class") or "").split():
            self.in_table, self.depth = True, 0
            return
        if not self.in_table:
            return
        if tag in ("ul", "dl"):
            self.depth += 1
            self.current = None
        elif tag in ("li", "dt"):
            entry = {"text": "", "hrefs": [], "parent": None}
            if self.depth <= 1:
                self.top = entry
            else:
                entry["parent"] = self.top
            self.entries.append(entry)
            self.current = entry
        elif tag == "a" and self.current is not None and attrs.get("href"):
            self.current["hrefs"].append(attrs["href"])

    def handle_endtag(self, tag):
        if not self.in_table:
            return
        if tag == "table":
            self.in_table = False
        elif tag in ("ul", "dl"):
            self.depth -= 1
            self.current = None
        elif tag in ("li", "dt"):
            self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.current["text"] += data


OBJECT_ANCHOR = re.compile(r"^[A-Za-z_]\w*(?:\.\w+)+$")


def read_index(html_root):
    """[(parts, pages, is_object)]: parts is [term] or [term, subentry]; pages are html paths;
    is_object when a target is an object's anchor (#binascii.Incomplete), not a prose spot."""
    files = [html_root / "genindex-all.html"]
    if not files[0].exists():
        files = sorted(html_root.glob("genindex*.html"))
    entries = []
    for path in files:
        parser = IndexParser()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        entries.extend(parser.entries)
    out = []
    for entry in entries:
        # Extra targets render as ", [1], [2]" after the entry text.
        text = re.sub(r",?\s*\[\d+\]", "", collapse(entry["text"])).strip().rstrip(",").strip()
        entry["clean"] = text
    for entry in entries:
        pages, is_object = set(), False
        for href in entry["hrefs"]:
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", href):
                continue
            path, _, fragment = href.partition("#")
            is_object = is_object or bool(OBJECT_ANCHOR.match(fragment))
            if path:
                pages.add(posixpath.normpath(path))
        parent = entry["parent"]
        parts = [parent["clean"], entry["clean"]] if parent else [entry["clean"]]
        if pages and all(parts):
            out.append((parts, pages, is_object))
    return out


API_NAME = re.compile(r"^([A-Za-z_][\w.]*)(?:\(\))?$")
API_QUALIFIERS = [
    re.compile(r"^in module ([\w.]+)$"),
    re.compile(r"^(?:class|exception|data|function) in ([\w.]+)$"),
    re.compile(r"^([\w.]+) (?:method|attribute|class method|static method|abstract method|"
               r"property|exception|data)$"),
    re.compile(r"^built-in (?:class|exception|variable|constant)$()"),
    re.compile(r"^C (?:function|member|type|var|macro|struct)$()"),
]
QUALIFIED = re.compile(r"^(.*?)\s*\(([^()]*)\)$")


def api_query(parts):
    """'gather() (in module asyncio)' → 'asyncio gather'; None when not an object entry."""
    if len(parts) == 2 and parts[1].startswith("("):
        # "(in module importlib.util)" under "cache_from_source() (in module imp)"
        name = QUALIFIED.match(parts[0]).group(1) if QUALIFIED.match(parts[0]) else parts[0]
        term = f"{name} {parts[1]}"
    elif len(parts) == 1:
        term = parts[0]
    else:
        return None, None
    match = QUALIFIED.match(term)
    if not match:
        return None, None
    name, qualifier = match.groups()
    name_match = API_NAME.match(name)
    if not name_match:
        return None, None
    for pattern in API_QUALIFIERS:
        q = pattern.match(qualifier)
        if q:
            context = [w for w in q.group(1).split(".") if w]
            words = [w for w in name_match.group(1).split(".") if w]
            # "Path.glob" in "pathlib.Path": don't repeat the shared "Path".
            overlap = max((k for k in range(min(len(context), len(words)) + 1)
                           if context[len(context) - k:] == words[:k]), default=0)
            return " ".join(context + words[overlap:]), term
    return None, None


# Words, hyphenated words and short acronyms (ASCII, UTF-8); not identifiers such as uuid5.
CONCEPT_WORD = re.compile(r"^(?:[A-Za-z][a-z]*(?:['’-][A-Za-z0-9]+)*|[A-Z]{2,5}(?:-\d+)?)$")
ALLCAPS = re.compile(r"^[A-Z][A-Z0-9_]+$")
EXCLUDED_PARTS = {"module", "built-in function", "built-in module", "standard module"}


def concept_query(parts, modules):
    """'exception, handling' → 'handling exception'; None for identifiers, symbols, etc."""
    pieces = [p.strip() for part in parts for p in part.split(", ")]
    if len(pieces) > 2:  # "dictionary, type, operations on" has no natural reading
        return None
    for piece in pieces:
        if not piece or "(" in piece or ")" in piece or not piece[0].isalpha():
            return None
        if piece in EXCLUDED_PARTS or ALLCAPS.match(piece):  # ALLCAPS: environment variables
            return None
        if piece.endswith("command line option"):  # "-d, compileall command line option"
            return None
        if re.match(r"^(PEP|RFC) \d+", piece):
            return None
        words = piece.split()
        if len(words) == 2 and words[1] == "module" and words[0] in modules:
            return None
        if not all(CONCEPT_WORD.match(w) for w in words):
            return None
    query = " ".join(reversed(pieces))  # the index inverts phrases: "lock, interpreter"
    if not re.search(r"[A-Za-z]{4,}", query):
        return None
    return query


def build_queries(index, kept, count, seed):
    modules = set()
    for parts, _, _ in index:
        if len(parts) == 2 and parts[1] == "module":
            modules.add(parts[0])
    candidates = {}  # casefolded query → candidate
    for parts, pages, is_object in index:
        pages = pages & kept
        if not pages:
            continue
        query, term = api_query(parts)
        kind = "api"
        if query is None:
            if is_object:  # "Incomplete", "NNTPProtocolError": names, not concepts
                continue
            if any(p.endswith("(built-in function)") or p.endswith("(module)") for p in parts):
                continue
            query, term, kind = concept_query(parts, modules), ", ".join(parts), "concept"
        if not query:
            continue
        # Word order is a guess for inverted entries; "socket object" = "object socket".
        key = query.casefold()
        if kind == "concept":
            key = " ".join(sorted(key.split()))
        if key in candidates:
            # Several entries read the same: all their pages are relevant.
            candidates[key]["relevant"] |= pages
        else:
            candidates[key] = {"query": query, "kind": kind, "relevant": set(pages),
                               "term": term}
    by_kind = {"api": [], "concept": []}
    for key in sorted(candidates):
        cand = candidates[key]
        if 1 <= len(cand["relevant"]) <= 3:
            by_kind[cand["kind"]].append(cand)
    rng = random.Random(seed)
    n_api = min(len(by_kind["api"]), count // 2)
    n_concept = min(len(by_kind["concept"]), count - n_api)
    n_api = min(len(by_kind["api"]), count - n_concept)
    chosen = rng.sample(by_kind["api"], n_api) + rng.sample(by_kind["concept"], n_concept)
    rng.shuffle(chosen)
    queries = [{"query": c["query"], "kind": c["kind"], "relevant": sorted(c["relevant"]),
                "term": c["term"]} for c in chosen]
    return queries, {k: len(v) for k, v in by_kind.items()}


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", required=True, type=Path, help="python3.11-doc html root")
    ap.add_argument("--out", required=True, type=Path, help="JSON file to write")
    ap.add_argument("--max-pages", type=int, default=0, help="keep at most N pages (0: all)")
    ap.add_argument("--queries", type=int, default=200, help="queries to sample")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    started = time.monotonic()

    html_root = args.html
    if not (html_root / "index.html").is_file():
        sys.exit(f"relevance_corpus: {html_root}/index.html not found")
    skipped, eligible = {}, []
    for path in sorted(html_root.rglob("*.html")):
        key = path.relative_to(html_root).as_posix()
        reason = skip_reason(key)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        else:
            eligible.append(key)

    pages = order_pages(select_pages(html_root, eligible, args.max_pages, skipped))
    kept = {p["key"] for p in pages}
    queries, available = build_queries(read_index(html_root), kept, args.queries, args.seed)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"pages": pages, "queries": queries}, ensure_ascii=False),
                        encoding="utf-8")

    log = lambda *a: print(*a, file=sys.stderr)  # noqa: E731
    log(f"relevance_corpus: wrote {args.out} in {time.monotonic() - started:.1f}s")
    log(f"  pages kept: {len(pages)}")
    log(f"  pages skipped: {sum(skipped.values())} "
        + ", ".join(f"{r}: {n}" for r, n in sorted(skipped.items())))
    log(f"  body bytes: {sum(len(p['body'].encode()) for p in pages)}")
    for kind in ("api", "concept"):
        picked = [q for q in queries if q["kind"] == kind]
        log(f"  {kind} queries: {len(picked)} (of {available[kind]} candidates)")
        for q in picked[:5]:
            log(f"    {q['query']!r} <- {q['term']!r} -> {', '.join(q['relevant'])}")


if __name__ == "__main__":
    main()
