//! The Rust side of `ops/bench/embed`: generates pages, chunks them with the model's tokenizer,
//! writes the chunk texts (for the sentence-transformers side) and the `local` provider's vectors,
//! and prints one JSON object with its throughput.
//!
//! Usage: embed_bench MODEL_DIR CHUNKS TEXTS_OUT VECTORS_OUT

use std::time::Instant;

use anyhow::Context;
use pagestream_embedder::local::{LocalConfig, LocalProvider};
use pagestream_embedder::{Chunker, EmbeddingProvider};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORDS: &[&str] = &[
    "deployment",
    "service",
    "cluster",
    "release",
    "rollback",
    "database",
    "migration",
    "index",
    "query",
    "latency",
    "throughput",
    "incident",
    "runbook",
    "alert",
    "dashboard",
    "owner",
    "team",
    "quarter",
    "roadmap",
    "budget",
    "customer",
    "contract",
    "renewal",
    "invoice",
    "page",
    "search",
    "vector",
    "embedding",
    "model",
    "pipeline",
    "stream",
    "consumer",
    "retry",
    "backoff",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "for",
    "with",
    "on",
    "is",
    "are",
    "be",
    "this",
    "that",
    "when",
    "after",
    "before",
    "every",
    "each",
    "new",
    "old",
    "first",
    "last",
    "configuration",
];

/// A deterministic generator, so every run embeds the same text.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % bound as u64) as usize
    }

    fn sentence(&mut self) -> String {
        let len = 8 + self.next(14);
        let words: Vec<&str> = (0..len).map(|_| WORDS[self.next(WORDS.len())]).collect();
        let mut sentence = words.join(" ");
        sentence[..1].make_ascii_uppercase();
        sentence.push('.');
        sentence
    }

    fn page(&mut self, n: usize) -> String {
        let mut md = String::new();
        for section in 0..6 {
            md.push_str(&format!("## Section {n}.{section}\n\n"));
            // Enough per section that most chunks come near the model's 256-token limit.
            for _ in 0..5 {
                match self.next(6) {
                    0 => {
                        for _ in 0..4 {
                            md.push_str(&format!("- {}\n", self.sentence()));
                        }
                        md.push('\n');
                    }
                    1 => {
                        md.push_str("| Name | Owner | Notes |\n| --- | --- | --- |\n");
                        for _ in 0..5 {
                            md.push_str(&format!(
                                "| {} | {} | {} |\n",
                                WORDS[self.next(WORDS.len())],
                                WORDS[self.next(WORDS.len())],
                                self.sentence()
                            ));
                        }
                        md.push('\n');
                    }
                    _ => {
                        let sentences: Vec<String> = (0..6).map(|_| self.sentence()).collect();
                        md.push_str(&sentences.join(" "));
                        md.push_str("\n\n");
                    }
                }
            }
        }
        md
    }
}

/// User and system time of this process so far, from /proc/self/stat (in clock ticks of 1/100 s,
/// the value Linux reports for USER_HZ): on a shared machine, the CPU a run took is steadier than
/// its wall time.
fn process_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields
        .get(11..13)
        .context("/proc/self/stat fields")?
        .iter()
        .map(|f| f.parse::<f64>())
        .sum::<Result<f64, _>>()?;
    Ok(ticks / 100.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model_dir, count, texts_out, vectors_out] = args.as_slice() else {
        anyhow::bail!("usage: embed_bench MODEL_DIR CHUNKS TEXTS_OUT VECTORS_OUT");
    };
    let count: usize = count.parse().context("CHUNKS")?;
    let mut config = LocalConfig::new(model_dir);
    // Knobs for exploring the provider's settings; the defaults are what the service uses.
    if let Ok(threads) = std::env::var("EMBED_BENCH_THREADS") {
        config.threads = Some(threads.parse().context("EMBED_BENCH_THREADS")?);
    }
    if let Ok(tokens) = std::env::var("EMBED_BENCH_BATCH_TOKENS") {
        config.batch_tokens = tokens.parse().context("EMBED_BENCH_BATCH_TOKENS")?;
    }
    let provider = LocalProvider::load(&config)?;
    let chunker = Chunker::new(provider.token_counter());
    let mut rng = Lcg(42);
    let mut texts = Vec::with_capacity(count);
    let mut tokens = 0u64;
    let mut page = 0;
    while texts.len() < count {
        for chunk in chunker.chunk(&format!("Generated page {page}"), &rng.page(page)) {
            if texts.len() < count {
                tokens += u64::from(chunk.token_count);
                texts.push(chunk.text);
            }
        }
        page += 1;
    }
    std::fs::write(texts_out, serde_json::to_vec(&texts)?)?;
    // Warm-up outside the timing, as on the Python side.
    provider.embed(texts[..8].to_vec()).await?;
    let cpu_before = process_cpu_seconds()?;
    let started = Instant::now();
    let vectors = provider.embed(texts.clone()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds()? - cpu_before;
    std::fs::write(vectors_out, serde_json::to_vec(&vectors)?)?;
    let figures = serde_json::json!({
        "chunks": texts.len(),
        "pages": page,
        "mean_tokens": tokens as f64 / texts.len() as f64,
        "seconds": seconds,
        "chunks_per_second": texts.len() as f64 / seconds,
        "cpu_seconds": cpu_seconds,
        "threads": provider.threads(),
    });
    println!("{figures}");
    Ok(())
}
