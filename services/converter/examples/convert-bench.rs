//! Benchmark driver for `ops/bench/convert`.
//!
//! `convert-bench generate DIR PAGES` writes a deterministic corpus of storage-format pages;
//! `convert-bench measure DIR SECONDS` converts them on this thread, round after round, for at
//! least SECONDS, and prints one JSON object with the throughput.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pagestream_converter::{ConvertOptions, convert};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [command, dir, pages] if command == "generate" => generate(Path::new(dir), pages.parse()?),
        [command, dir, seconds] if command == "measure" => {
            measure(Path::new(dir), seconds.parse()?)
        }
        _ => bail!("usage: convert-bench generate DIR PAGES | measure DIR SECONDS"),
    }
}

/// A small deterministic generator (xorshift), so that every run measures the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "deploy",
    "service",
    "cluster",
    "the",
    "a",
    "of",
    "configure",
    "token",
    "request",
    "user",
    "environment",
    "release",
    "snapshot",
    "log",
    "level",
    "instance",
    "package",
    "cockpit",
    "database",
    "migration",
    "rollback",
    "monitoring",
    "alert",
    "on-call",
    "runbook",
    "and",
    "to",
    "with",
    "for",
    "when",
    "API",
    "endpoint",
    "cache",
    "latency",
    "queue",
    "worker",
];

fn sentence(rng: &mut Rng) -> String {
    let mut out = String::new();
    let words = 6 + rng.below(14);
    for index in 0..words {
        if index > 0 {
            out.push(' ');
        }
        match rng.below(24) {
            0 => out.push_str(&format!("<strong>{}</strong>", rng.pick(WORDS))),
            1 => out.push_str(&format!("<code>{}</code>", rng.pick(WORDS))),
            2 => out.push_str(&format!(
                "<a href=\"https://docs.example.com/{}\">{}</a>",
                rng.pick(WORDS),
                rng.pick(WORDS)
            )),
            3 => out.push_str(&format!(
                "<ac:link><ri:page ri:content-title=\"{} {}\" /></ac:link>",
                rng.pick(WORDS),
                rng.pick(WORDS)
            )),
            4 => out.push_str(&format!("OPS-{}", 1 + rng.below(5000))),
            5 => out.push_str("&nbsp;"),
            6 => out.push_str(&format!("<em>{}</em>", rng.pick(WORDS))),
            _ => out.push_str(rng.pick(WORDS)),
        }
    }
    out.push('.');
    out
}

fn code(rng: &mut Rng) -> String {
    let mut out = String::new();
    for _ in 0..(3 + rng.below(20)) {
        out.push_str(&format!(
            "curl -H \"X-Auth: {}\" https://api.example.com/{}?a=1&b=2 | jq '.{}'\n",
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.pick(WORDS)
        ));
    }
    out
}

fn page(rng: &mut Rng) -> String {
    let mut out = String::new();
    out.push_str("<p><ac:structured-macro ac:name=\"toc\" ac:schema-version=\"1\" /></p>");
    let sections = 3 + rng.below(10);
    for section in 0..sections {
        out.push_str(&format!("<h2>Section {section}: {}</h2>", rng.pick(WORDS)));
        for _ in 0..(1 + rng.below(4)) {
            match rng.below(9) {
                0 => out.push_str(&format!(
                    "<ac:structured-macro ac:name=\"code\" ac:schema-version=\"1\"><ac:parameter ac:name=\"language\">bash</ac:parameter><ac:plain-text-body><![CDATA[{}]]></ac:plain-text-body></ac:structured-macro>",
                    code(rng)
                )),
                1 => out.push_str(&format!(
                    "<ac:structured-macro ac:name=\"{}\" ac:schema-version=\"1\"><ac:rich-text-body><p>{}</p></ac:rich-text-body></ac:structured-macro>",
                    rng.pick(&["info", "note", "tip", "warning"]),
                    sentence(rng)
                )),
                2 => {
                    out.push_str("<table><tbody><tr><th>Name</th><th>Value</th><th>Notes</th></tr>");
                    for _ in 0..(2 + rng.below(8)) {
                        out.push_str(&format!(
                            "<tr><td><code>{}</code></td><td>{}</td><td><p>{}</p></td></tr>",
                            rng.pick(WORDS),
                            rng.below(1000),
                            sentence(rng)
                        ));
                    }
                    out.push_str("</tbody></table>");
                }
                3 => {
                    out.push_str("<ul>");
                    for _ in 0..(2 + rng.below(6)) {
                        out.push_str(&format!("<li>{}</li>", sentence(rng)));
                    }
                    out.push_str("</ul>");
                }
                4 => {
                    out.push_str("<ac:task-list>");
                    for id in 0..(1 + rng.below(4)) {
                        out.push_str(&format!(
                            "<ac:task><ac:task-id>{id}</ac:task-id><ac:task-status>{}</ac:task-status><ac:task-body><ac:link><ri:user ri:account-id=\"5b10a2844c20165700ede21g\" /></ac:link> {}</ac:task-body></ac:task>",
                            rng.pick(&["complete", "incomplete"]),
                            sentence(rng)
                        ));
                    }
                    out.push_str("</ac:task-list>");
                }
                5 => out.push_str(&format!(
                    "<ac:image ac:width=\"600\"><ri:attachment ri:filename=\"{}-{}.png\" /><ac:caption><p>{}</p></ac:caption></ac:image>",
                    rng.pick(WORDS),
                    rng.below(100),
                    rng.pick(WORDS)
                )),
                6 => out.push_str(&format!(
                    "<ac:structured-macro ac:name=\"expand\" ac:schema-version=\"1\"><ac:parameter ac:name=\"title\">Details</ac:parameter><ac:rich-text-body><p>{}</p><ac:structured-macro ac:name=\"code\" ac:schema-version=\"1\"><ac:parameter ac:name=\"language\">json</ac:parameter><ac:plain-text-body><![CDATA[{{\"status\": \"ok\", \"items\": [1, 2, 3]}}]]></ac:plain-text-body></ac:structured-macro></ac:rich-text-body></ac:structured-macro>",
                    sentence(rng)
                )),
                _ => out.push_str(&format!(
                    "<p>{} {} <ac:structured-macro ac:name=\"status\" ac:schema-version=\"1\"><ac:parameter ac:name=\"colour\">Green</ac:parameter><ac:parameter ac:name=\"title\">DONE</ac:parameter></ac:structured-macro> <ac:structured-macro ac:name=\"jira\" ac:schema-version=\"1\"><ac:parameter ac:name=\"key\">PLAT-{}</ac:parameter></ac:structured-macro></p>",
                    sentence(rng),
                    sentence(rng),
                    1 + rng.below(900)
                )),
            }
        }
    }
    out
}

fn generate(dir: &Path, pages: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for index in 0..pages {
        let path = dir.join(format!("page-{index:04}.xml"));
        std::fs::write(&path, page(&mut rng))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn corpus(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    paths
        .iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "xml"))
        .map(|path| {
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
        })
        .collect()
}

fn measure(dir: &Path, seconds: f64) -> anyhow::Result<()> {
    let pages = corpus(dir)?;
    if pages.is_empty() {
        bail!("no pages in {}", dir.display());
    }
    let bytes_per_round: usize = pages.iter().map(String::len).sum();
    let options = ConvertOptions::default();
    // One warm-up round.
    for page in &pages {
        convert(page, &options)?;
    }
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut rounds = 0u64;
    while rounds == 0 || started.elapsed() < budget {
        for page in &pages {
            std::hint::black_box(convert(std::hint::black_box(page), &options)?);
        }
        rounds += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total_bytes = bytes_per_round as f64 * rounds as f64;
    let total_pages = pages.len() as f64 * rounds as f64;
    println!(
        "{{\"pages\": {}, \"corpus_bytes\": {bytes_per_round}, \"rounds\": {rounds}, \"seconds\": {elapsed:.3}, \"mb_per_s\": {:.3}, \"pages_per_s\": {:.1}}}",
        pages.len(),
        total_bytes / 1e6 / elapsed,
        total_pages / elapsed
    );
    Ok(())
}
