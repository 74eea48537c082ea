//! Markdown-aware chunking (DESIGN §6).
//!
//! A page is cut at its headings into sections; each section's blocks (paragraphs, lists, code
//! blocks, tables, quotes) are packed into chunks that fit the model's input. A block that fits a
//! chunk on its own is never cut; one that does not is cut cleanly: a code block into fenced pieces
//! of whole lines, a table into pieces that each repeat the header rows, a list at its items, prose
//! at lines, then sentences, then words. A chunk smaller than `min_tokens` is merged into a
//! neighbour when the two fit together.
//!
//! The embedded text of a chunk is its heading path joined with ` > ` (page title first), a blank
//! line, then the chunk's Markdown. The heading path gives the model the context a bare paragraph
//! lacks ("Deployment > Rollback" for "run the previous release"). `Chunk::text` is exactly that
//! embedded text, its `content_hash` the hex SHA-256 of it and its `token_count` what the model
//! sees, special tokens included; the count never exceeds the model's maximum, so nothing is
//! truncated. Chunking is a pure function of the title and the Markdown.
//!
//! [`Chunker::chunk_page`] adds, after the sections' chunks, one chunk per top-level fenced code
//! block (the converter's rendering of `code` and `noformat` macros), with the block's language and
//! title: code is then searchable as a kind of its own, while the sections still hold it in
//! context.

use std::collections::VecDeque;

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use sha2::{Digest, Sha256};

use pagestream_events::CodeBlock;

use crate::tokens::TokenCounter;

/// A chunk before it is embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    pub index: u32,
    /// The embedded text: heading path as context, a blank line, then the Markdown.
    pub text: String,
    /// Page title, then each heading above the chunk.
    pub heading_path: Vec<String>,
    /// Hex SHA-256 of `text`.
    pub content_hash: String,
    /// Tokens the model sees for `text`, special tokens included.
    pub token_count: u32,
    /// Set on a chunk that is one code block (or a piece of one).
    pub code: Option<CodeBlock>,
}

impl TextChunk {
    pub fn with_vector(self, vector: Vec<f32>) -> pagestream_events::Chunk {
        pagestream_events::Chunk {
            index: self.index,
            text: self.text,
            heading_path: self.heading_path,
            content_hash: self.content_hash,
            token_count: self.token_count,
            vector: pagestream_events::Vector(vector),
            code: self.code,
        }
    }
}

fn text_chunk(
    index: usize,
    text: String,
    heading_path: Vec<String>,
    tokens: usize,
    code: Option<CodeBlock>,
) -> TextChunk {
    TextChunk {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        content_hash: content_hash(&text),
        text,
        heading_path,
        token_count: u32::try_from(tokens).unwrap_or(u32::MAX),
        code,
    }
}

/// The language of a fenced block: the first word of its info string, lowercase.
fn fence_language(source: &str) -> Option<String> {
    let opening = source.lines().next()?.trim_start();
    let info = opening.trim_start_matches(['`', '~']).trim();
    info.split_whitespace()
        .next()
        .map(str::to_ascii_lowercase)
        .filter(|language| !language.is_empty())
}

/// A paragraph that is one bold span (`**Title**`): the line and its text, unescaped.
fn bold_line(source: &str) -> Option<(String, String)> {
    let line = source.trim();
    let inner = line.strip_prefix("**")?.strip_suffix("**")?;
    if inner.is_empty() || inner.contains("**") || line.contains('\n') {
        return None;
    }
    let mut text = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                text.push(escaped);
            }
        } else {
            text.push(c);
        }
    }
    Some((line.to_owned(), text))
}

/// Hex SHA-256 of an embedded text.
pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

const PATH_SEPARATOR: &str = " > ";
const BLOCK_SEPARATOR: &str = "\n\n";

/// Splits Markdown into chunks sized by a model's tokenizer.
pub struct Chunker<'a> {
    counter: &'a dyn TokenCounter,
    max_tokens: usize,
    min_tokens: usize,
    special_tokens: usize,
}

impl<'a> Chunker<'a> {
    /// Chunks as large as the model takes, merging those under an eighth of that.
    pub fn new(counter: &'a dyn TokenCounter) -> Self {
        let max_tokens = counter.max_tokens();
        Self::with_limits(counter, max_tokens, max_tokens / 8)
    }

    /// `max_tokens` is capped at the model's maximum.
    pub fn with_limits(
        counter: &'a dyn TokenCounter,
        max_tokens: usize,
        min_tokens: usize,
    ) -> Self {
        let special_tokens = counter.count_tokens("");
        let max_tokens = max_tokens.min(counter.max_tokens()).max(special_tokens + 1);
        Self {
            counter,
            max_tokens,
            min_tokens: min_tokens.min(max_tokens),
            special_tokens,
        }
    }

    /// The chunks of a page's sections, in page order; `title` heads every heading path.
    pub fn chunk(&self, title: &str, markdown: &str) -> Vec<TextChunk> {
        let sections = parse_sections(title, markdown);
        self.section_chunks(title, &sections)
            .into_iter()
            .enumerate()
            .map(|(index, (text, heading_path, tokens))| {
                text_chunk(index, text, heading_path, tokens, None)
            })
            .collect()
    }

    /// What the embedder indexes for a page: the sections' chunks ([`Chunker::chunk`]), then one
    /// chunk per top-level code block (pieces of whole lines if it is too large), with the
    /// block's language and title.
    pub fn chunk_page(&self, title: &str, markdown: &str) -> Vec<TextChunk> {
        let sections = parse_sections(title, markdown);
        let prose = self
            .section_chunks(title, &sections)
            .into_iter()
            .map(|(text, path, tokens)| (text, path, tokens, None));
        let code = sections
            .iter()
            .flat_map(|section| self.code_chunks(title, section));
        prose
            .chain(code)
            .enumerate()
            .map(|(index, (text, heading_path, tokens, code))| {
                text_chunk(index, text, heading_path, tokens, code)
            })
            .collect()
    }

    fn section_chunks(
        &self,
        title: &str,
        sections: &[Section<'_>],
    ) -> Vec<(String, Vec<String>, usize)> {
        let mut drafts = Vec::new();
        for section in sections {
            self.pack_section(title, section, &mut drafts);
        }
        let drafts = self.merge_small(title, drafts);
        drafts
            .into_iter()
            .flat_map(|draft| self.finish(title, draft))
            .collect()
    }

    /// Each fenced code block of a section as chunks of its own: the heading context, the
    /// block's title line if it has one, then the block.
    fn code_chunks(
        &self,
        title: &str,
        section: &Section<'_>,
    ) -> Vec<(String, Vec<String>, usize, Option<CodeBlock>)> {
        let mut chunks = Vec::new();
        let context = self.context_for(title, &section.headings);
        let path = heading_path(title, &section.headings);
        for (position, block) in section.blocks.iter().enumerate() {
            if !matches!(block.kind, BlockKind::FencedCode) {
                continue;
            }
            // The converter writes a macro's title as a bold paragraph right above the fence.
            let block_title = position
                .checked_sub(1)
                .and_then(|previous| section.blocks.get(previous))
                .and_then(|previous| bold_line(previous.source));
            let info = CodeBlock {
                language: fence_language(block.source),
                title: block_title.as_ref().map(|(_, text)| text.clone()),
            };
            let lead = block_title
                .map(|(line, _)| format!("{line}{BLOCK_SEPARATOR}"))
                .unwrap_or_default();
            let head = if context.is_empty() {
                lead
            } else {
                format!("{context}{BLOCK_SEPARATOR}{lead}")
            };
            let budget = (self.max_tokens - self.special_tokens)
                .saturating_sub(self.content_tokens(&head))
                .max(1);
            let pieces = if self.content_tokens(block.source) <= budget {
                vec![block.source.to_owned()]
            } else {
                self.split_fenced_code(block.source, budget)
            };
            for piece in pieces {
                let text = format!("{head}{piece}");
                let tokens = self.counter.count_tokens(&text);
                chunks.push((text, path.clone(), tokens, Some(info.clone())));
            }
        }
        chunks
    }

    /// Tokens of `text` without the special tokens.
    fn content_tokens(&self, text: &str) -> usize {
        self.counter
            .count_tokens(text)
            .saturating_sub(self.special_tokens)
    }

    /// The heading context in front of a chunk's body: its heading path joined with ` > `, cut
    /// to at most half the budget (in the embedded text only; `heading_path` stays whole).
    fn context_for(&self, title: &str, headings: &[Heading]) -> String {
        let context = heading_path(title, headings).join(PATH_SEPARATOR);
        if context.is_empty() {
            return context;
        }
        let budget = (self.max_tokens - self.special_tokens) / 2;
        let with_separator = format!("{context}{BLOCK_SEPARATOR}");
        if self.content_tokens(&with_separator) <= budget {
            return context;
        }
        self.split_chars(&context, budget)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// What the context leaves of the budget for the body.
    fn body_budget(&self, context: &str) -> usize {
        let context_tokens = if context.is_empty() {
            0
        } else {
            self.content_tokens(&format!("{context}{BLOCK_SEPARATOR}"))
        };
        (self.max_tokens - self.special_tokens)
            .saturating_sub(context_tokens)
            .max(1)
    }

    fn pack_section(&self, title: &str, section: &Section<'_>, drafts: &mut Vec<Draft>) {
        let context = self.context_for(title, &section.headings);
        let budget = self.body_budget(&context);
        let mut pieces = Vec::new();
        for block in &section.blocks {
            let tokens = self.content_tokens(block.source);
            if tokens <= budget {
                pieces.push((block.source.to_owned(), tokens));
            } else {
                for piece in self.split_block(block, budget) {
                    let tokens = self.content_tokens(&piece);
                    pieces.push((piece, tokens));
                }
            }
        }
        let separator_tokens = self.content_tokens(BLOCK_SEPARATOR);
        let mut body = String::new();
        let mut body_tokens = 0;
        for (piece, tokens) in pieces {
            if !body.is_empty() && body_tokens + separator_tokens + tokens > budget {
                drafts.push(Draft::new(&section.headings, std::mem::take(&mut body)));
                body_tokens = 0;
            }
            if !body.is_empty() {
                body.push_str(BLOCK_SEPARATOR);
                body_tokens += separator_tokens;
            }
            body.push_str(&piece);
            body_tokens += tokens;
        }
        if !body.is_empty() {
            drafts.push(Draft::new(&section.headings, body));
        }
    }

    /// Merges each chunk under `min_tokens` into its next neighbour, else its previous one, where
    /// the two fit together (but not a section's opening into the section before). Headings that the merged chunk's path no longer shows are kept in
    /// its body as Markdown headings.
    fn merge_small(&self, title: &str, drafts: Vec<Draft>) -> Vec<Draft> {
        let mut merged: Vec<Draft> = Vec::with_capacity(drafts.len());
        let mut pending: VecDeque<Draft> = drafts.into();
        while let Some(draft) = pending.pop_front() {
            // Small is judged on the chunk's own text: the heading context is there anyway.
            if self.content_tokens(&draft.body) >= self.min_tokens {
                merged.push(draft);
                continue;
            }
            if let Some(next) = pending.front() {
                let candidate = draft.merge(next);
                if self.fits(title, &candidate) {
                    // The merged chunk may still be small: it gets another round.
                    pending.pop_front();
                    pending.push_front(candidate);
                    continue;
                }
            }
            // Backwards only within the section, or with what is left of a section: a
            // section's opening must not move away from the rest of it.
            let rest_of_section = pending
                .front()
                .is_none_or(|next| next.headings != draft.headings);
            if let Some(previous) = merged
                .last()
                .filter(|p| rest_of_section || p.headings == draft.headings)
            {
                let candidate = previous.merge(&draft);
                if self.fits(title, &candidate) {
                    merged.pop();
                    merged.push(candidate);
                    continue;
                }
            }
            merged.push(draft);
        }
        merged
    }

    fn fits(&self, title: &str, draft: &Draft) -> bool {
        self.counter.count_tokens(&self.compose(title, draft)) <= self.max_tokens
    }

    fn compose(&self, title: &str, draft: &Draft) -> String {
        let context = self.context_for(title, &draft.headings);
        if context.is_empty() {
            draft.body.clone()
        } else {
            format!("{context}{BLOCK_SEPARATOR}{}", draft.body)
        }
    }

    /// The final text of a draft, checked against the model's limit with the real count. Sizes
    /// are added up per piece while packing; should a tokenizer not add up across the joins, the
    /// text is cut here rather than truncated by the model.
    fn finish(&self, title: &str, draft: Draft) -> Vec<(String, Vec<String>, usize)> {
        let path = heading_path(title, &draft.headings);
        let text = self.compose(title, &draft);
        let tokens = self.counter.count_tokens(&text);
        if tokens <= self.max_tokens {
            return vec![(text, path, tokens)];
        }
        let context = self.context_for(title, &draft.headings);
        let mut budget = self.body_budget(&context);
        loop {
            let pieces = self.split_text(&draft.body, budget);
            let finished: Vec<_> = pieces
                .into_iter()
                .map(|body| {
                    let text = if context.is_empty() {
                        body
                    } else {
                        format!("{context}{BLOCK_SEPARATOR}{body}")
                    };
                    let tokens = self.counter.count_tokens(&text);
                    (text, path.clone(), tokens)
                })
                .collect();
            if budget <= 1 || finished.iter().all(|(_, _, t)| *t <= self.max_tokens) {
                return finished;
            }
            budget = budget * 3 / 4;
        }
    }

    fn split_block(&self, block: &Block<'_>, budget: usize) -> Vec<String> {
        match &block.kind {
            BlockKind::FencedCode => self.split_fenced_code(block.source, budget),
            BlockKind::Table => self.split_table(block.source, budget),
            BlockKind::List { items } => {
                let items: Vec<&str> = items.iter().map(|item| item.trim_end()).collect();
                self.pack(&items, "\n", budget, &|item, budget| {
                    self.split_text(item, budget)
                })
            }
            BlockKind::Other => self.split_text(block.source, budget),
        }
    }

    /// Pieces of whole lines, each fenced like the original.
    fn split_fenced_code(&self, source: &str, budget: usize) -> Vec<String> {
        let mut lines: Vec<&str> = source.lines().collect();
        let opening = lines.first().copied().unwrap_or_default();
        let indent = opening.len() - opening.trim_start().len();
        let fence: String = opening
            .trim_start()
            .chars()
            .take_while(|c| *c == '`' || *c == '~')
            .collect();
        let closed = lines.len() > 1
            && lines.last().is_some_and(|line| {
                let line = line.trim();
                line.starts_with(fence.as_str()) && line.chars().all(|c| c == '`' || c == '~')
            });
        if closed {
            lines.pop();
        }
        let body = lines.get(1..).unwrap_or_default();
        let closing = format!("{}{fence}", &opening[..indent]);
        let overhead = self.content_tokens(&format!("{opening}\n\n{closing}"));
        let line_budget = budget.saturating_sub(overhead).max(1);
        self.pack(body, "\n", line_budget, &|line, budget| {
            self.split_chars(line, budget)
        })
        .into_iter()
        .map(|code| format!("{opening}\n{code}\n{closing}"))
        .collect()
    }

    /// Pieces of whole rows, each under the table's header and delimiter rows.
    fn split_table(&self, source: &str, budget: usize) -> Vec<String> {
        let lines: Vec<&str> = source.lines().collect();
        if lines.len() < 3 {
            return self.split_text(source, budget);
        }
        let header = lines[..2].join("\n");
        let row_budget = budget.saturating_sub(self.content_tokens(&header));
        if row_budget == 0 {
            return self.split_text(source, budget);
        }
        self.pack(&lines[2..], "\n", row_budget, &|row, budget| {
            self.split_text(row, budget)
        })
        .into_iter()
        .map(|rows| format!("{header}\n{rows}"))
        .collect()
    }

    /// Prose: lines, then sentences, then words, then characters.
    fn split_text(&self, text: &str, budget: usize) -> Vec<String> {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        self.pack(&lines, "\n", budget, &|line, budget| {
            let sentences = split_sentences(line);
            self.pack(&sentences, " ", budget, &|sentence, budget| {
                let words: Vec<&str> = sentence.split_whitespace().collect();
                self.pack(&words, " ", budget, &|word, budget| {
                    self.split_chars(word, budget)
                })
            })
        })
    }

    /// Packs units greedily into pieces of at most `budget` tokens, joined by `joiner`; a unit
    /// over the budget is cut by `split_unit` first.
    fn pack(
        &self,
        units: &[&str],
        joiner: &str,
        budget: usize,
        split_unit: &dyn Fn(&str, usize) -> Vec<String>,
    ) -> Vec<String> {
        let joiner_tokens = self.content_tokens(joiner);
        let mut pieces = Vec::new();
        let mut current = String::new();
        let mut current_tokens = 0;
        let mut push =
            |unit: &str, tokens: usize, current: &mut String, pieces: &mut Vec<String>| {
                if !current.is_empty() && current_tokens + joiner_tokens + tokens > budget {
                    pieces.push(std::mem::take(current));
                    current_tokens = 0;
                }
                if !current.is_empty() {
                    current.push_str(joiner);
                    current_tokens += joiner_tokens;
                }
                current.push_str(unit);
                current_tokens += tokens;
            };
        for unit in units {
            let tokens = self.content_tokens(unit);
            if tokens <= budget {
                push(unit, tokens, &mut current, &mut pieces);
            } else {
                for part in split_unit(unit, budget) {
                    let tokens = self.content_tokens(&part);
                    push(&part, tokens, &mut current, &mut pieces);
                }
            }
        }
        if !current.is_empty() {
            pieces.push(current);
        }
        pieces
    }

    /// The last resort for a single over-long word: the longest prefixes that fit, at least one
    /// character each.
    fn split_chars(&self, text: &str, budget: usize) -> Vec<String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let boundaries: Vec<usize> = rest
                .char_indices()
                .map(|(i, _)| i)
                .skip(1)
                .chain(std::iter::once(rest.len()))
                .collect();
            // Largest prefix that fits, by binary search over character boundaries.
            let (mut low, mut high) = (0usize, boundaries.len() - 1);
            while low < high {
                let mid = (low + high).div_ceil(2);
                if self.content_tokens(&rest[..boundaries[mid]]) <= budget {
                    low = mid;
                } else {
                    high = mid - 1;
                }
            }
            let end = boundaries[low];
            pieces.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
        pieces
    }
}

fn split_sentences(line: &str) -> Vec<&str> {
    let mut sentences = Vec::new();
    let mut start = 0;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?' | ';')
            && chars.peek().is_some_and(|(_, next)| next.is_whitespace())
        {
            let end = i + c.len_utf8();
            sentences.push(line[start..end].trim());
            start = end;
        }
    }
    sentences.push(line[start..].trim());
    sentences.retain(|s| !s.is_empty());
    sentences
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Heading {
    level: u8,
    text: String,
}

fn heading_path(title: &str, headings: &[Heading]) -> Vec<String> {
    let title = title.trim();
    (!title.is_empty())
        .then(|| title.to_owned())
        .into_iter()
        .chain(headings.iter().map(|h| h.text.clone()))
        .collect()
}

/// A chunk in the making: the headings above it and its Markdown body.
#[derive(Debug, Clone)]
struct Draft {
    headings: Vec<Heading>,
    body: String,
}

impl Draft {
    fn new(headings: &[Heading], body: String) -> Self {
        Self {
            headings: headings.to_vec(),
            body,
        }
    }

    /// One draft of both: the common headings become the path; the others go into the body.
    fn merge(&self, next: &Draft) -> Draft {
        let common = self
            .headings
            .iter()
            .zip(&next.headings)
            .take_while(|(a, b)| a == b)
            .count();
        let mut body = String::new();
        for part in [
            self.with_headings_from(common),
            next.with_headings_from(common),
        ] {
            if !body.is_empty() {
                body.push_str(BLOCK_SEPARATOR);
            }
            body.push_str(&part);
        }
        Draft {
            headings: self.headings[..common].to_vec(),
            body,
        }
    }

    fn with_headings_from(&self, from: usize) -> String {
        let mut text = String::new();
        for heading in &self.headings[from..] {
            let level = usize::from(heading.level.clamp(1, 6));
            text.push_str(&format!(
                "{} {}{BLOCK_SEPARATOR}",
                "#".repeat(level),
                heading.text
            ));
        }
        text.push_str(&self.body);
        text
    }
}

#[derive(Debug)]
enum BlockKind {
    FencedCode,
    Table,
    List { items: Vec<String> },
    Other,
}

#[derive(Debug)]
struct Block<'m> {
    kind: BlockKind,
    source: &'m str,
}

#[derive(Debug)]
struct Section<'m> {
    headings: Vec<Heading>,
    blocks: Vec<Block<'m>>,
}

fn heading_level(level: pulldown_cmark::HeadingLevel) -> u8 {
    use pulldown_cmark::HeadingLevel::*;
    match level {
        H1 => 1,
        H2 => 2,
        H3 => 3,
        H4 => 4,
        H5 => 5,
        H6 => 6,
    }
}

/// The page as sections: the blocks under each heading, with the heading stack above them.
fn parse_sections<'m>(title: &str, markdown: &'m str) -> Vec<Section<'m>> {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let mut sections = vec![Section {
        headings: Vec::new(),
        blocks: Vec::new(),
    }];
    let mut stack: Vec<Heading> = Vec::new();
    let mut depth = 0usize;
    let mut block_start = 0usize;
    let mut kind = BlockKind::Other;
    let mut heading: Option<(u8, String)> = None;
    let mut item_start = 0usize;
    for (event, range) in Parser::new_ext(markdown, options).into_offset_iter() {
        match event {
            Event::Start(tag) => {
                if depth == 0 {
                    block_start = range.start;
                    kind = match &tag {
                        Tag::CodeBlock(CodeBlockKind::Fenced(_)) => BlockKind::FencedCode,
                        Tag::Table(_) => BlockKind::Table,
                        Tag::List(_) => BlockKind::List { items: Vec::new() },
                        _ => BlockKind::Other,
                    };
                    if let Tag::Heading { level, .. } = &tag {
                        heading = Some((heading_level(*level), String::new()));
                    }
                } else if depth == 1 && matches!(tag, Tag::Item) {
                    item_start = range.start;
                }
                depth += 1;
            }
            Event::End(end) => {
                depth = depth.saturating_sub(1);
                if depth == 1
                    && matches!(end, TagEnd::Item)
                    && let BlockKind::List { items } = &mut kind
                {
                    items.push(markdown[item_start..range.end].to_owned());
                }
                if depth > 0 {
                    continue;
                }
                if let Some((level, text)) = heading.take() {
                    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    while stack.last().is_some_and(|h| h.level >= level) {
                        stack.pop();
                    }
                    // A first heading that repeats the page title adds nothing to the path.
                    let repeats_title = stack.is_empty() && text == title.trim();
                    if !text.is_empty() && !repeats_title {
                        stack.push(Heading { level, text });
                    }
                    sections.push(Section {
                        headings: stack.clone(),
                        blocks: Vec::new(),
                    });
                    continue;
                }
                let source = markdown[block_start..range.end].trim_end();
                if !source.trim().is_empty() {
                    let block = Block {
                        kind: std::mem::replace(&mut kind, BlockKind::Other),
                        source,
                    };
                    if let Some(section) = sections.last_mut() {
                        section.blocks.push(block);
                    }
                }
            }
            Event::Text(text) | Event::Code(text) | Event::InlineMath(text) => {
                if let Some((_, heading_text)) = heading.as_mut() {
                    heading_text.push_str(&text);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some((_, heading_text)) = heading.as_mut() {
                    heading_text.push(' ');
                }
            }
            _ => {}
        }
    }
    sections.retain(|section| !section.blocks.is_empty());
    sections
}
