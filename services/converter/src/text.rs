//! Small text helpers shared by the analysis and the renderer.

/// Escapes text taken from attributes or parameters so that Markdown shows it literally: no
/// emphasis, links, code or raw HTML can come out of it.
pub fn escape_markdown(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 8);
    for ch in text.chars() {
        match ch {
            '\\' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '|' | '~' => {
                escaped.push('\\');
                escaped.push(ch);
            }
            // Attribute values are single-line labels.
            '\n' | '\r' | '\t' => escaped.push(' '),
            _ => escaped.push(ch),
        }
    }
    escaped
}

/// Plain text (an attachment's) as Markdown that shows it literally: inline syntax escaped as by
/// [`escape_markdown`], lines that would open a block (a heading, a list, a quote, a rule, a
/// fence) escaped at their start, paragraphs (blank lines) kept, runs of blank lines collapsed.
pub fn escape_text_block(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut blank = true;
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        blank = false;
        let line = escape_markdown(line.trim_start());
        if line.starts_with(['#', '-', '+', '=']) {
            out.push('\\');
        }
        // An ordered list marker (`1.` or `1)`) is shown literally by escaping its punctuation.
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        match line.as_bytes().get(digits) {
            Some(b'.' | b')') if digits > 0 => {
                out.push_str(&line[..digits]);
                out.push('\\');
                out.push_str(&line[digits..]);
            }
            _ => out.push_str(&line),
        }
    }
    out.trim_end().to_owned()
}

/// Collapses runs of whitespace and trims: parameter values are often padded with newlines.
pub fn squash_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Words of the Markdown: whitespace-separated tokens with at least one letter or digit, so that
/// list markers, quote markers, table rules and emoji do not count.
pub fn word_count(markdown: &str) -> u64 {
    let mut words = 0;
    let mut counted = false;
    for ch in markdown.chars() {
        if ch.is_whitespace() {
            counted = false;
        } else if !counted && ch.is_alphanumeric() {
            counted = true;
            words += 1;
        }
    }
    words
}

/// Prefixes every line with `prefix`, using `bare` for empty lines (so `> ` quotes leave no
/// trailing spaces).
pub fn prefix_lines(text: &str, prefix: &str, bare: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            out.push('\n');
        }
        if line.is_empty() {
            out.push_str(bare);
        } else {
            out.push_str(prefix);
            out.push_str(line);
        }
    }
    out
}

/// Indents every line but the first by `width` spaces (continuation lines of a list item).
pub fn indent_continuation(text: &str, width: usize) -> String {
    let pad = " ".repeat(width);
    let mut out = String::with_capacity(text.len() + 16);
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(&pad);
            }
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralises_markdown_and_html() {
        assert_eq!(
            escape_markdown("a*b_[c](d) <script> `x`\nnext"),
            "a\\*b\\_\\[c\\](d) \\<script\\> \\`x\\` next"
        );
    }

    #[test]
    fn word_count_ignores_markup_tokens() {
        assert_eq!(word_count("# Title\n\n- one two\n> three\n| --- |"), 4);
    }

    #[test]
    fn prefixing_and_indenting_keep_empty_lines_clean() {
        assert_eq!(prefix_lines("a\n\nb", "> ", ">"), "> a\n>\n> b");
        assert_eq!(indent_continuation("a\n\nb", 2), "a\n\n  b");
    }
}
