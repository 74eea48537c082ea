//! Text extraction from attachments: PDF (`pdf-extract`), DOCX, PPTX and XLSX (their XML parts,
//! read with `zip` and `quick-xml`), and plain text, Markdown, CSV and JSON. Pure, blocking
//! functions with bounded memory: the caller runs them on a blocking thread with a file it read
//! under the size cap; a zip part is read up to [`MAX_PART_BYTES`] and the text kept is cut at
//! [`MAX_TEXT_BYTES`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Cursor, Read};
use std::str::FromStr;

use quick_xml::Reader;
use quick_xml::events::Event;

/// Most text kept from one attachment (the rest is cut at a character boundary): it travels in
/// the page's event and in the fetcher's state, which must stay well under NATS's message size.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;

/// Largest XML part of an Office file read (a zip bomb stops here, not at the memory limit).
pub const MAX_PART_BYTES: u64 = 64 * 1024 * 1024;

/// A file type text is extracted from; what the allow-list names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    Pdf,
    Docx,
    Pptx,
    Xlsx,
    Text,
    Markdown,
    Csv,
    Json,
}

impl FileKind {
    pub const ALL: [FileKind; 8] = [
        FileKind::Pdf,
        FileKind::Docx,
        FileKind::Pptx,
        FileKind::Xlsx,
        FileKind::Text,
        FileKind::Markdown,
        FileKind::Csv,
        FileKind::Json,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FileKind::Pdf => "pdf",
            FileKind::Docx => "docx",
            FileKind::Pptx => "pptx",
            FileKind::Xlsx => "xlsx",
            FileKind::Text => "txt",
            FileKind::Markdown => "md",
            FileKind::Csv => "csv",
            FileKind::Json => "json",
        }
    }

    /// What a file is, from its media type, else its file name's extension.
    pub fn of(file_name: &str, media_type: Option<&str>) -> Option<FileKind> {
        let media_type = media_type.map(|m| {
            m.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        let by_media = match media_type.as_deref() {
            Some("application/pdf") => Some(FileKind::Pdf),
            Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document") => {
                Some(FileKind::Docx)
            }
            Some("application/vnd.openxmlformats-officedocument.presentationml.presentation") => {
                Some(FileKind::Pptx)
            }
            Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet") => {
                Some(FileKind::Xlsx)
            }
            Some("text/markdown" | "text/x-markdown") => Some(FileKind::Markdown),
            Some("text/csv") => Some(FileKind::Csv),
            Some("application/json") => Some(FileKind::Json),
            Some("text/plain") => Some(FileKind::Text),
            _ => None,
        };
        // Confluence often says `application/octet-stream` or `text/plain` for what the name
        // tells better (a `.md` or `.csv` uploaded as plain text).
        let extension = file_name
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_ascii_lowercase());
        let by_name = match extension.as_deref() {
            Some("pdf") => Some(FileKind::Pdf),
            Some("docx") => Some(FileKind::Docx),
            Some("pptx") => Some(FileKind::Pptx),
            Some("xlsx") => Some(FileKind::Xlsx),
            Some("txt" | "text" | "log") => Some(FileKind::Text),
            Some("md" | "markdown") => Some(FileKind::Markdown),
            Some("csv") => Some(FileKind::Csv),
            Some("json") => Some(FileKind::Json),
            _ => None,
        };
        match (by_media, by_name) {
            (Some(FileKind::Text), Some(named)) => Some(named),
            (Some(kind), _) => Some(kind),
            (None, named) => named,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileKind {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim().trim_start_matches('.').to_ascii_lowercase();
        let value = match value.as_str() {
            "text" | "plain" => "txt",
            "markdown" => "md",
            other => other,
        };
        FileKind::ALL
            .into_iter()
            .find(|kind| kind.name() == value)
            .ok_or_else(|| {
                format!(
                    "unknown attachment type {value:?} (known: {})",
                    FileKind::ALL.map(FileKind::name).join(", ")
                )
            })
    }
}

/// Why a file's text could not be extracted: permanent for that version of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("not utf-8 text")]
    NotText,
    #[error("invalid json: {0}")]
    Json(String),
    #[error("not a readable {kind} file: {reason}")]
    Unreadable { kind: FileKind, reason: String },
    #[error("{kind} part {part} is over {limit} bytes uncompressed")]
    PartTooLarge {
        kind: FileKind,
        part: String,
        limit: u64,
    },
}

/// Extracts the text of a file of a known kind (at most [`MAX_TEXT_BYTES`]).
pub fn extract(kind: FileKind, data: &[u8]) -> Result<String, ExtractError> {
    let text = match kind {
        FileKind::Text | FileKind::Markdown | FileKind::Csv => plain(data)?,
        FileKind::Json => {
            let text = plain(data)?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|error| ExtractError::Json(error.to_string()))?;
            // One member a line: the chunker cuts prose at lines, not inside a long one.
            serde_json::to_string_pretty(&value).unwrap_or(text)
        }
        FileKind::Pdf => pdf(data)?,
        FileKind::Docx => {
            let mut zip = Package::open(kind, data)?;
            let xml = zip.part("word/document.xml")?;
            paragraphs(kind, &xml, "p", "t")?
        }
        FileKind::Pptx => {
            let mut zip = Package::open(kind, data)?;
            let mut slides = Vec::new();
            for name in zip.numbered("ppt/slides/slide") {
                let xml = zip.part(&name)?;
                slides.push(paragraphs(kind, &xml, "p", "t")?);
            }
            slides.join("\n\n")
        }
        FileKind::Xlsx => xlsx(data)?,
    };
    Ok(truncate(text.trim().to_owned(), MAX_TEXT_BYTES))
}

fn plain(data: &[u8]) -> Result<String, ExtractError> {
    let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let text = std::str::from_utf8(data).map_err(|_| ExtractError::NotText)?;
    if text.contains('\0') {
        return Err(ExtractError::NotText);
    }
    Ok(text.to_owned())
}

/// Cuts text to at most `limit` bytes at a character boundary.
fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn pdf(data: &[u8]) -> Result<String, ExtractError> {
    let pages = pdf_extract::extract_text_from_mem_by_pages(data).map_err(|error| {
        ExtractError::Unreadable {
            kind: FileKind::Pdf,
            reason: error.to_string(),
        }
    })?;
    let mut text = String::new();
    for page in pages {
        let page = page.trim();
        if page.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(page);
        if text.len() > MAX_TEXT_BYTES {
            break;
        }
    }
    Ok(text)
}

/// An Office Open XML package.
struct Package<'a> {
    kind: FileKind,
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
}

impl<'a> Package<'a> {
    fn open(kind: FileKind, data: &'a [u8]) -> Result<Self, ExtractError> {
        let zip =
            zip::ZipArchive::new(Cursor::new(data)).map_err(|error| ExtractError::Unreadable {
                kind,
                reason: error.to_string(),
            })?;
        Ok(Self { kind, zip })
    }

    /// A part's text, read up to [`MAX_PART_BYTES`].
    fn part(&mut self, name: &str) -> Result<String, ExtractError> {
        let kind = self.kind;
        let unreadable = |reason: String| ExtractError::Unreadable { kind, reason };
        let entry = self
            .zip
            .by_name(name)
            .map_err(|error| unreadable(format!("{name}: {error}")))?;
        let mut xml = String::new();
        let read = entry
            .take(MAX_PART_BYTES + 1)
            .read_to_string(&mut xml)
            .map_err(|error| unreadable(format!("{name}: {error}")))?;
        if read as u64 > MAX_PART_BYTES {
            return Err(ExtractError::PartTooLarge {
                kind,
                part: name.to_owned(),
                limit: MAX_PART_BYTES,
            });
        }
        Ok(xml)
    }

    /// The parts named `{prefix}{n}.xml`, by `n` (slides and sheets in their order).
    fn numbered(&self, prefix: &str) -> Vec<String> {
        let mut found: BTreeMap<u32, String> = BTreeMap::new();
        for name in self.zip.file_names().flatten() {
            if let Some(n) = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(".xml"))
                .and_then(|n| n.parse().ok())
            {
                found.insert(n, name.into_owned());
            }
        }
        found.into_values().collect()
    }
}

fn xml_error(kind: FileKind, error: impl fmt::Display) -> ExtractError {
    ExtractError::Unreadable {
        kind,
        reason: format!("invalid xml: {error}"),
    }
}

/// The text runs (`text` elements) of an Office XML part, one line per `paragraph` element,
/// tabs and breaks kept.
fn paragraphs(
    kind: FileKind,
    xml: &str,
    paragraph: &str,
    text: &str,
) -> Result<String, ExtractError> {
    let mut reader = Reader::from_str(xml);
    let mut out = String::new();
    let mut in_text = false;
    loop {
        match reader
            .read_event()
            .map_err(|error| xml_error(kind, error))?
        {
            Event::Start(start) if start.local_name().as_ref() == text => in_text = true,
            Event::End(end) if end.local_name().as_ref() == text => in_text = false,
            Event::End(end) if end.local_name().as_ref() == paragraph => out.push('\n'),
            Event::Empty(empty) => match empty.local_name().as_ref() {
                "tab" => out.push('\t'),
                "br" | "cr" => out.push('\n'),
                _ => {}
            },
            Event::Text(run) if in_text => out.push_str(&run.xml10_content()),
            Event::CData(run) if in_text => out.push_str(&run.into_inner()),
            Event::GeneralRef(reference) if in_text => push_reference(&mut out, &reference),
            Event::Eof => break,
            _ => {}
        }
        if out.len() > MAX_TEXT_BYTES {
            break;
        }
    }
    Ok(out)
}

fn push_reference(out: &mut String, reference: &quick_xml::events::BytesRef<'_>) {
    if let Ok(Some(ch)) = reference.resolve_char_ref() {
        out.push(ch);
    } else if let Some(resolved) = quick_xml::escape::resolve_xml_entity(reference) {
        out.push_str(resolved);
    }
}

/// A workbook's sheets, one line per row, cells separated by tabs, sheets by a blank line.
fn xlsx(data: &[u8]) -> Result<String, ExtractError> {
    let kind = FileKind::Xlsx;
    let mut zip = Package::open(kind, data)?;
    let shared = if zip.zip.index_for_name("xl/sharedStrings.xml").is_some() {
        shared_strings(&zip.part("xl/sharedStrings.xml")?)?
    } else {
        Vec::new()
    };
    let mut sheets = Vec::new();
    for name in zip.numbered("xl/worksheets/sheet") {
        let xml = zip.part(&name)?;
        sheets.push(sheet(&xml, &shared)?);
    }
    Ok(sheets.join("\n\n"))
}

/// The shared strings table: each `si` item's text runs, concatenated.
fn shared_strings(xml: &str) -> Result<Vec<String>, ExtractError> {
    let mut reader = Reader::from_str(xml);
    let mut strings = Vec::new();
    let mut current = String::new();
    let mut in_text = false;
    loop {
        match reader
            .read_event()
            .map_err(|error| xml_error(FileKind::Xlsx, error))?
        {
            Event::Start(start) if start.local_name().as_ref() == "t" => in_text = true,
            Event::End(end) if end.local_name().as_ref() == "t" => in_text = false,
            Event::End(end) if end.local_name().as_ref() == "si" => {
                strings.push(std::mem::take(&mut current));
            }
            Event::Text(run) if in_text => current.push_str(&run.xml10_content()),
            Event::GeneralRef(reference) if in_text => push_reference(&mut current, &reference),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(strings)
}

/// One worksheet: each cell's value (`v`, or an inline string's `t`), a shared string's text
/// where the cell's type is `s`.
fn sheet(xml: &str, shared: &[String]) -> Result<String, ExtractError> {
    let mut reader = Reader::from_str(xml);
    let mut out = String::new();
    let mut row: Vec<String> = Vec::new();
    let mut cell_type: Option<String> = None;
    let mut value = String::new();
    let mut in_value = false;
    loop {
        match reader
            .read_event()
            .map_err(|error| xml_error(FileKind::Xlsx, error))?
        {
            Event::Start(start) => match start.local_name().as_ref() {
                "c" => {
                    cell_type = start
                        .try_get_attribute("t")
                        .ok()
                        .flatten()
                        .map(|a| a.value.into_owned());
                    value.clear();
                }
                "v" | "t" => in_value = true,
                _ => {}
            },
            Event::End(end) => match end.local_name().as_ref() {
                "v" | "t" => in_value = false,
                "c" => {
                    let text = match cell_type.as_deref() {
                        Some("s") => value
                            .trim()
                            .parse::<usize>()
                            .ok()
                            .and_then(|index| shared.get(index))
                            .cloned()
                            .unwrap_or_default(),
                        Some("b") => match value.trim() {
                            "1" => "TRUE".to_owned(),
                            _ => "FALSE".to_owned(),
                        },
                        _ => std::mem::take(&mut value),
                    };
                    if !text.is_empty() {
                        row.push(text);
                    }
                }
                "row" => {
                    if !row.is_empty() {
                        out.push_str(&row.join("\t"));
                        out.push('\n');
                        row.clear();
                    }
                    if out.len() > MAX_TEXT_BYTES {
                        break;
                    }
                }
                _ => {}
            },
            Event::Text(run) if in_value => value.push_str(&run.xml10_content()),
            Event::GeneralRef(reference) if in_value => push_reference(&mut value, &reference),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/attachments/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    #[test]
    fn office_files_and_pdfs_made_by_real_tools_give_their_text() {
        let pdf = extract(FileKind::Pdf, &fixture("report.pdf")).expect("pdf");
        assert!(
            pdf.contains("Quarterly zephyr forecast: revenue up 12%."),
            "{pdf}"
        );
        assert!(pdf.contains("second page of the report"), "{pdf}");
        let docx = extract(FileKind::Docx, &fixture("checklist.docx")).expect("docx");
        assert!(docx.contains("Onboarding checklist\n"), "{docx}");
        // Runs join, entities are resolved, table cells are kept.
        assert!(
            docx.contains("Collect your badge & laptop <on day one>."),
            "{docx}"
        );
        assert!(docx.contains("Owner") && docx.contains("HR team"), "{docx}");
        let pptx = extract(FileKind::Pptx, &fixture("roadmap.pptx")).expect("pptx");
        let roadmap = pptx.find("marzipan").expect("first slide");
        let launch = pptx.find("General availability").expect("second slide");
        assert!(roadmap < launch, "slides in order: {pptx}");
        let xlsx = extract(FileKind::Xlsx, &fixture("budget.xlsx")).expect("xlsx");
        assert!(xlsx.contains("nectarine crates\t1250\n"), "{xlsx}");
        assert!(xlsx.contains("Travel\t300.5"), "{xlsx}");
        assert!(xlsx.ends_with("Approved by finance"), "{xlsx}");
    }

    #[test]
    fn text_files_are_read_as_utf8_and_json_one_member_a_line() {
        assert_eq!(
            extract(FileKind::Csv, b"\xef\xbb\xbfname,value\nx,1\n").expect("csv"),
            "name,value\nx,1"
        );
        assert_eq!(
            extract(FileKind::Json, br#"{"a":[1,2],"b":"c"}"#).expect("json"),
            "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": \"c\"\n}"
        );
        assert_eq!(
            extract(FileKind::Text, b"\xff\xfe"),
            Err(ExtractError::NotText)
        );
        assert_eq!(
            extract(FileKind::Markdown, b"a\0b"),
            Err(ExtractError::NotText)
        );
        assert!(matches!(
            extract(FileKind::Json, b"{not json"),
            Err(ExtractError::Json(_))
        ));
    }

    #[test]
    fn broken_files_are_errors_not_panics() {
        let garbage = b"PK\x03\x04 this is not really a zip or a pdf";
        for kind in [
            FileKind::Pdf,
            FileKind::Docx,
            FileKind::Pptx,
            FileKind::Xlsx,
        ] {
            assert!(
                matches!(
                    extract(kind, garbage),
                    Err(ExtractError::Unreadable { kind: k, .. }) if k == kind
                ),
                "{kind}"
            );
        }
        // A real zip without the part a DOCX needs.
        let xlsx = fixture("budget.xlsx");
        let error = extract(FileKind::Docx, &xlsx).expect_err("not a docx");
        assert!(error.to_string().contains("word/document.xml"), "{error}");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_TEXT_BYTES);
        let cut = extract(FileKind::Text, text.as_bytes()).expect("text");
        assert!(cut.len() <= MAX_TEXT_BYTES && cut.len() > MAX_TEXT_BYTES - 2);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn kinds_come_from_the_media_type_or_the_file_name() {
        assert_eq!(
            FileKind::of("a.bin", Some("application/pdf")),
            Some(FileKind::Pdf)
        );
        assert_eq!(FileKind::of("Plan.DOCX", None), Some(FileKind::Docx));
        // A Markdown file uploaded as plain text is Markdown.
        assert_eq!(
            FileKind::of("notes.md", Some("text/plain; charset=utf-8")),
            Some(FileKind::Markdown)
        );
        assert_eq!(FileKind::of("photo.png", Some("image/png")), None);
        assert_eq!(FileKind::of("noextension", None), None);
        assert_eq!(".PDF".parse::<FileKind>(), Ok(FileKind::Pdf));
        assert_eq!("markdown".parse::<FileKind>(), Ok(FileKind::Markdown));
        assert!("exe".parse::<FileKind>().is_err());
    }
}
