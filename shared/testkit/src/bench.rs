//! What the benchmarks (`ops/bench/*`) share: settings from the environment, generated text and
//! vectors, percentiles, and cleanup.

use anyhow::Context;
use rand::Rng;
use rand::rngs::StdRng;
use sqlx::PgPool;

/// A number from the environment, or the default.
pub fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name} is not a number")),
        Err(_) => Ok(default),
    }
}

/// A vocabulary with a Zipf pick, so that common words match many chunks and rare ones few.
pub struct Words(pub Vec<String>);

impl Words {
    pub fn new(rng: &mut StdRng) -> Self {
        const SYLLABLES: [&str; 24] = [
            "ka", "lo", "mi", "ne", "ru", "ta", "ve", "zo", "pa", "qui", "sen", "dor", "bel",
            "fin", "gar", "hum", "jex", "mol", "nat", "pix", "rom", "sul", "tor", "wen",
        ];
        let mut words: Vec<String> = (0..4000)
            .map(|_| {
                (0..rng.random_range(2..4))
                    .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
                    .collect()
            })
            .collect();
        words.sort();
        words.dedup();
        Self(words)
    }

    pub fn pick<'a>(&'a self, rng: &mut StdRng) -> &'a str {
        // Zipf (exponent 1) over the vocabulary with the head cut off: the head of real text is
        // stopwords, which the `english` configuration drops. The commonest word is then in
        // about one chunk of six, as a common technical term is.
        const STOPWORDS: f64 = 50.0;
        let n = self.0.len() as f64 + STOPWORDS;
        let low = STOPWORDS.ln() / n.ln();
        let u = low + (1.0 - low) * rng.random::<f64>();
        let index = (n.powf(u) - STOPWORDS) as usize;
        &self.0[index.min(self.0.len() - 1)]
    }

    pub fn sentence(&self, rng: &mut StdRng, words: usize) -> String {
        (0..words)
            .map(|_| self.pick(rng))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn random_unit_vector(rng: &mut StdRng, dimension: usize) -> Vec<f32> {
    let mut vector: Vec<f32> = (0..dimension)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    vector.iter_mut().for_each(|v| *v /= norm);
    vector
}

/// The `p`th percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Two decimals, for figures people read.
pub fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The machine's load average (1, 5, 15 minutes): the machine may be shared.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// This process's resident memory in MiB (`VmRSS`; 0 where /proc cannot tell).
pub fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A benchmark's database is large: it goes when the run ends.
pub async fn drop_database(pool: PgPool, database_url: &str) -> anyhow::Result<()> {
    pool.close().await;
    let name = database_url.rsplit('/').next().unwrap_or_default();
    let admin = pagestream_store::connect(&crate::database_url(), 1).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    Ok(())
}

/// Deletes every stream and bucket under a benchmark's bus root (they hold its events).
pub async fn delete_streams(bus: &pagestream_bus::Bus) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let prefix = format!("{}_", bus.streams().prefix());
    let names: Vec<String> = bus.jetstream().stream_names().try_collect().await?;
    for name in names {
        // Buckets are streams too: KV_<bucket> and OBJ_<bucket>.
        let bare = name
            .strip_prefix("KV_")
            .or_else(|| name.strip_prefix("OBJ_"))
            .unwrap_or(&name);
        if bare.starts_with(&prefix) {
            bus.jetstream().delete_stream(&name).await?;
        }
    }
    Ok(())
}
