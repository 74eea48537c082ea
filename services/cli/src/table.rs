//! Readable output: aligned tables and plain-text snippets.

use std::io::Write;

/// A table of left-aligned columns; cells longer than `max_width` are cut with `…`.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    max_width: usize,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Self {
            headers,
            rows: Vec::new(),
            max_width: 60,
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|cell| truncate(&cell.replace(['\n', '\t'], " "), self.max_width))
                .collect(),
        );
    }

    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| -> String {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        writeln!(out, "{}", line(self.headers.clone()))?;
        for row in &self.rows {
            writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
        }
        Ok(())
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The api's HTML snippet as plain text, the matched terms between `emphasis` marks.
pub fn plain_snippet(html: &str, emphasis: (&str, &str)) -> String {
    html.replace("<mark>", emphasis.0)
        .replace("</mark>", emphasis.1)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_long_cells_are_cut() {
        let mut table = Table::new(vec!["key", "title"]);
        table.row(vec!["a".into(), "x".repeat(100)]);
        table.row(vec!["long-key".into(), "short\ntext".into()]);
        let mut out = Vec::new();
        table.write(&mut out).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "key       title");
        assert!(lines[1].starts_with("a         xxx"));
        assert!(lines[1].ends_with('…'));
        assert_eq!(lines[1].chars().count(), 10 + 60);
        assert_eq!(lines[2], "long-key  short text");
    }

    #[test]
    fn snippets_lose_their_html() {
        assert_eq!(
            plain_snippet("use <mark>&lt;b&gt;</mark> &amp; co", ("[", "]")),
            "use [<b>] & co"
        );
    }
}
