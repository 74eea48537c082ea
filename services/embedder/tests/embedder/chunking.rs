use pagestream_embedder::{Chunker, EstimatedTokenCounter, TextChunk, TokenCounter, content_hash};

use super::support::FIXTURE;

const TITLE: &str = "Using REST for cloud logs";

fn chunk_fixture(counter: &EstimatedTokenCounter) -> Vec<TextChunk> {
    Chunker::new(counter).chunk(TITLE, FIXTURE)
}

/// The chunk's Markdown, without the heading context in front.
fn body(chunk: &TextChunk) -> &str {
    let context = format!("{}\n\n", chunk.heading_path.join(" > "));
    chunk
        .text
        .strip_prefix(&context)
        .expect("text starts with the heading path")
}

fn fixture_lines(from: &str, to: &str) -> Vec<&'static str> {
    FIXTURE
        .lines()
        .skip_while(|l| !l.starts_with(from))
        .skip(1)
        .take_while(|l| !l.starts_with(to))
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn every_chunk_fits_the_model_and_states_what_it_embeds() {
    let counter = EstimatedTokenCounter::new(256);
    let chunks = chunk_fixture(&counter);
    assert!(
        chunks.len() > 10,
        "the fixture is long: {} chunks",
        chunks.len()
    );
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.index as usize, i);
        assert!(chunk.token_count <= 256, "chunk {i}: {}", chunk.token_count);
        assert_eq!(
            chunk.token_count as usize,
            counter.count_tokens(&chunk.text)
        );
        assert_eq!(chunk.content_hash, content_hash(&chunk.text));
        assert_eq!(chunk.heading_path[0], TITLE);
        assert!(!body(chunk).trim().is_empty());
    }
}

#[test]
fn content_hash_is_hex_sha256() {
    assert_eq!(
        content_hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn same_markdown_gives_same_chunks() {
    let counter = EstimatedTokenCounter::new(256);
    assert_eq!(chunk_fixture(&counter), chunk_fixture(&counter));
}

#[test]
fn heading_paths_follow_the_outline() {
    let counter = EstimatedTokenCounter::new(256);
    let chunks = chunk_fixture(&counter);
    let containing = |needle: &str| {
        chunks
            .iter()
            .find(|c| c.text.contains(needle))
            .unwrap_or_else(|| panic!("no chunk contains {needle:?}"))
    };
    // Text before the first heading and under an h1 that repeats the title: the title alone.
    assert_eq!(containing("keeps the logs").heading_path, vec![TITLE]);
    assert_eq!(containing("rate limited").heading_path, vec![TITLE]);
    assert_eq!(
        containing("Create the new token first").heading_path,
        vec![TITLE, "Authentication", "Rotating tokens"]
    );
    // An h2 after an h3 climbs back up.
    assert_eq!(
        containing("newest entries first").heading_path,
        vec![TITLE, "Fetching logs"]
    );
    // A new section starts a new chunk.
    assert_ne!(
        containing("Tokens expire after 90 days").index,
        containing("Create the new token first").index
    );
}

#[test]
fn long_code_block_is_split_into_fenced_pieces_of_whole_lines() {
    let counter = EstimatedTokenCounter::new(256);
    let chunks = chunk_fixture(&counter);
    let code_chunks: Vec<&TextChunk> = chunks
        .iter()
        .filter(|c| c.text.contains("```bash"))
        .collect();
    assert!(code_chunks.len() > 3, "{} pieces", code_chunks.len());
    let mut lines = Vec::new();
    for chunk in &code_chunks {
        assert_eq!(chunk.heading_path, vec![TITLE, "Fetching logs"]);
        let code = body(chunk)
            .split_once("```bash\n")
            .map(|(_, code)| code)
            .expect("opening fence");
        let code = code.strip_suffix("\n```").expect("closing fence");
        lines.extend(code.lines());
    }
    assert_eq!(lines, fixture_lines("```bash", "```"));
}

#[test]
fn wide_table_is_split_at_rows_under_repeated_header() {
    let counter = EstimatedTokenCounter::new(256);
    let chunks = chunk_fixture(&counter);
    let table = fixture_lines("The table lists", "## Filters");
    let (header, rows) = table.split_at(2);
    let table_chunks: Vec<&TextChunk> = chunks
        .iter()
        .filter(|c| c.text.contains("| Logger |"))
        .collect();
    assert!(table_chunks.len() > 3, "{} pieces", table_chunks.len());
    let mut seen = Vec::new();
    for chunk in &table_chunks {
        let piece = body(chunk)
            .split_once(&header.join("\n"))
            .map(|(_, rows)| rows)
            .expect("every piece has the header rows");
        seen.extend(piece.lines().filter(|l| !l.is_empty()));
    }
    assert_eq!(seen, rows);
}

#[test]
fn long_list_is_split_between_items() {
    let counter = EstimatedTokenCounter::new(256);
    let chunks = chunk_fixture(&counter);
    let list_chunks: Vec<&TextChunk> = chunks
        .iter()
        .filter(|c| c.heading_path.last().map(String::as_str) == Some("Filters"))
        .collect();
    assert!(list_chunks.len() > 3);
    let mut items = Vec::new();
    for chunk in &list_chunks {
        for line in body(chunk).lines() {
            let number = line.split_once(". ").map(|(n, _)| n).unwrap_or_default();
            assert!(number.parse::<u32>().is_ok(), "line cut mid-item: {line:?}");
            items.push(line);
        }
    }
    assert_eq!(items, fixture_lines("## Filters", "## FAQ"));
}

#[test]
fn small_sections_are_merged_keeping_their_headings() {
    let counter = EstimatedTokenCounter::new(256);
    let chunks = chunk_fixture(&counter);
    let faq = chunks
        .iter()
        .find(|c| c.text.contains("Entries older than 30 days"))
        .expect("faq chunk");
    assert!(faq.text.contains("Not yet."), "{}", faq.text);
    assert!(faq.text.contains("### Can I stream logs?"));
    // The path keeps only what both merged sections share.
    assert!(
        !faq.heading_path
            .contains(&"Why are some entries missing?".to_owned())
    );
}

#[test]
fn nothing_is_lost() {
    let counter = EstimatedTokenCounter::new(256);
    let chunks = chunk_fixture(&counter);
    let all: String = chunks.iter().map(|c| c.text.as_str()).collect();
    for line in FIXTURE.lines().map(str::trim) {
        let structural = line.is_empty() || line.starts_with('#') || line.starts_with("```");
        if !structural {
            assert!(all.contains(line), "lost: {line:?}");
        }
    }
}

#[test]
fn code_block_that_fits_is_kept_whole_in_the_next_chunk() {
    let counter = EstimatedTokenCounter::new(128);
    // 6 × 14 estimated tokens of prose, then 6 × 12 of code: each fits alone, not both.
    let prose = "Alpha beta gamma delta epsilon zeta eta theta. ".repeat(6);
    let code = (0..6)
        .map(|i| format!("let value_{i} = compute({i});"))
        .collect::<Vec<_>>()
        .join("\n");
    let markdown = format!("## Setup\n\n{prose}\n\n```rust\n{code}\n```\n");
    let chunks = Chunker::new(&counter).chunk("Page", &markdown);
    assert_eq!(chunks.len(), 2, "{chunks:#?}");
    assert!(!chunks[0].text.contains("```"));
    assert_eq!(body(&chunks[1]), format!("```rust\n{code}\n```"));
}

#[test]
fn degenerate_pages() {
    let counter = EstimatedTokenCounter::new(32);
    let chunker = Chunker::new(&counter);
    assert!(chunker.chunk("Empty", "").is_empty());
    assert!(
        chunker
            .chunk("Headings", "# A\n\n## B\n\n### C\n")
            .is_empty()
    );
    // One enormous word: cut into pieces that fit, nothing dropped.
    let word = "x".repeat(5_000);
    let chunks = chunker.chunk("Blob", &word);
    assert!(chunks.len() > 1);
    assert!(chunks.iter().all(|c| c.token_count <= 32));
    let rejoined: String = chunks.iter().map(body).collect();
    assert_eq!(rejoined, word);
    // A title longer than the budget is cut in the embedded text but kept whole in the path.
    let title = "very long title ".repeat(40);
    let chunks = chunker.chunk(&title, "Some text.");
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].token_count <= 32);
    assert_eq!(chunks[0].heading_path, vec![title.trim().to_owned()]);
    assert!(chunks[0].text.ends_with("Some text."));
}

#[test]
fn code_blocks_become_chunks_of_their_own_with_language_and_title() {
    let counter = EstimatedTokenCounter::new(256);
    let markdown = "Intro paragraph about deploying.\n\n## Deploy\n\nRun this:\n\n\
        **Deploy \\*script\\***\n\n```python\nimport deploy\ndeploy.run()\n```\n\n\
        Then check.\n\n```\nplain noformat text\n```\n";
    let sections = Chunker::new(&counter).chunk(TITLE, markdown);
    let page = Chunker::new(&counter).chunk_page(TITLE, markdown);
    // The sections' chunks come first, unchanged and without code information.
    assert_eq!(&page[..sections.len()], &sections[..]);
    assert!(sections.iter().all(|chunk| chunk.code.is_none()));
    let code: Vec<&TextChunk> = page[sections.len()..].iter().collect();
    assert_eq!(code.len(), 2, "{code:#?}");
    for (i, chunk) in page.iter().enumerate() {
        assert_eq!(chunk.index as usize, i);
        assert_eq!(chunk.content_hash, content_hash(&chunk.text));
    }
    let python = code[0].code.as_ref().expect("code info");
    assert_eq!(python.language.as_deref(), Some("python"));
    assert_eq!(python.title.as_deref(), Some("Deploy *script*"));
    assert_eq!(code[0].heading_path, vec![TITLE, "Deploy"]);
    assert!(
        code[0]
            .text
            .ends_with("```python\nimport deploy\ndeploy.run()\n```"),
        "{}",
        code[0].text
    );
    assert!(!code[0].text.contains("Then check"), "{}", code[0].text);
    let plain = code[1].code.as_ref().expect("code info");
    assert_eq!(plain.language, None);
    assert_eq!(plain.title, None);
    assert!(code[1].text.contains("plain noformat text"));
}
