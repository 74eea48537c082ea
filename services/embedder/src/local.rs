//! `local`: a sentence-transformers BERT model (default all-MiniLM-L6-v2) run in-process with
//! candle on the CPU, with mean pooling and L2 normalisation as sentence-transformers does.
//!
//! The model directory holds `config.json`, `tokenizer.json`, `model.safetensors` and
//! `sentence_bert_config.json` (`ops/fetch-model` fills it). Inputs over the model's maximum
//! (`max_seq_length`, 256 word pieces for all-MiniLM-L6-v2) are refused, never truncated.
//!
//! Throughput (see `ops/bench/embed`):
//! - texts are sorted by length and batched by padded tokens, so little goes to padding;
//! - the linear layers are single 2-D matrix products over every token of a batch, with query,
//!   key and value fused into one;
//! - the element-wise work (bias, GELU, residual, layer norm, masked softmax) runs fused and in
//!   place on the products' outputs, with vectorisable loops;
//! - batches are shared out to one worker per core, each a single-threaded pool, so that every
//!   worker runs its batch from end to end without synchronising with the others;
//! - urgent work (search queries, the live lane's edits) runs on a worker of its own: a bulk call
//!   holds every batch worker until its last batch, and work behind it would wait for the whole
//!   call. The batch workers run at a lower priority (Linux `nice` +10): when urgent work, the
//!   other stages or Postgres want the cores a bulk call yields them, and alone it runs at full
//!   speed.
//!
//! The service's binary should use mimalloc as its global allocator: the activations are large
//! short-lived buffers, which the system allocator hands back to the kernel after each batch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, InplaceOp2, Layout, Tensor};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::{EmbedError, EmbeddingProvider, TokenCounter};

/// How much lower than the process's the batch workers' priority is (Linux `nice`).
const BATCH_WORKER_NICENESS: i32 = 10;

/// Tokens per batch: enough rows for the matrix products to run at full speed, few enough that
/// the activations stay in cache-friendly sizes.
const DEFAULT_BATCH_TOKENS: usize = 512;

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub model_dir: PathBuf,
    /// The name stored with every vector; defaults to the directory's name.
    pub model_name: Option<String>,
    /// Worker threads; defaults to the number of cores.
    pub threads: Option<usize>,
    /// Padded tokens per batch.
    pub batch_tokens: usize,
}

impl LocalConfig {
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            model_name: None,
            threads: None,
            batch_tokens: DEFAULT_BATCH_TOKENS,
        }
    }
}

#[derive(Debug, Deserialize)]
struct BertConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn default_hidden_act() -> String {
    "gelu".into()
}

#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

/// Vectors with the index of their text.
type Embedded = Vec<(usize, Vec<f32>)>;

/// The model as loaded: the provider hands it to blocking threads.
struct LocalModel {
    name: String,
    tokenizer: Tokenizer,
    encoder: Encoder,
    max_tokens: usize,
    /// One single-threaded pool per worker: candle's matrix products run on the pool they are
    /// called from, so each worker computes its batch alone, without synchronising with the
    /// others on every operation.
    workers: Vec<rayon::ThreadPool>,
    /// The worker of urgent work ([`EmbeddingProvider::embed_urgent`]), outside `workers`.
    urgent_worker: rayon::ThreadPool,
    batch_tokens: usize,
}

/// The `local` provider; cheap to clone.
#[derive(Clone)]
pub struct LocalProvider {
    model: Arc<LocalModel>,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider")
            .field("model", &self.model.name)
            .field("max_tokens", &self.model.max_tokens)
            .field("threads", &self.model.workers.len())
            .finish()
    }
}

fn model_error(path: &Path, error: impl std::fmt::Display) -> EmbedError {
    EmbedError::Model(format!("{}: {error}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let bytes = std::fs::read(path).map_err(|e| model_error(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| model_error(path, e))
}

impl LocalProvider {
    /// Loads the model; blocking (reads about 90 MB), so call it before serving or from
    /// `spawn_blocking`.
    pub fn load(config: &LocalConfig) -> Result<Self, EmbedError> {
        let dir = &config.model_dir;
        let bert: BertConfig = read_json(&dir.join("config.json"))?;
        let sentence: SentenceBertConfig = read_json(&dir.join("sentence_bert_config.json"))?;
        if bert.hidden_act != "gelu" {
            return Err(model_error(
                &dir.join("config.json"),
                format!("hidden_act {} is not supported", bert.hidden_act),
            ));
        }
        if bert.num_attention_heads == 0
            || !bert.hidden_size.is_multiple_of(bert.num_attention_heads)
        {
            return Err(model_error(
                &dir.join("config.json"),
                "hidden_size is not a multiple of num_attention_heads",
            ));
        }
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| model_error(&tokenizer_path, e))?;
        // tokenizer.json ships with truncation at 128 and fixed padding; the provider counts
        // and pads itself, and refuses what is too long instead of truncating it.
        tokenizer
            .with_truncation(None)
            .map_err(|e| model_error(&tokenizer_path, e))?;
        tokenizer.with_padding(None);
        let weights_path = dir.join("model.safetensors");
        let weights = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .map_err(|e| model_error(&weights_path, e))?;
        let encoder = Encoder::load(&weights, &bert).map_err(|e| model_error(&weights_path, e))?;
        let name = config.model_name.clone().unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "local".into())
        });
        let threads = config
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let workers = (0..threads)
            .map(|i| worker(format!("embed-{i}"), BATCH_WORKER_NICENESS))
            .collect::<Result<Vec<_>, _>>()?;
        let urgent_worker = worker("embed-urgent".into(), 0)?;
        Ok(Self {
            model: Arc::new(LocalModel {
                name,
                tokenizer,
                encoder,
                max_tokens: sentence.max_seq_length.min(bert.max_position_embeddings),
                workers,
                urgent_worker,
                batch_tokens: config.batch_tokens.max(1),
            }),
        })
    }

    /// Worker threads embedding in parallel.
    pub fn threads(&self) -> usize {
        self.model.workers.len()
    }

    /// Embeds on the provider's worker threads, blocking the caller; for callers already off
    /// the async runtime.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.model.embed(&self.model.workers, texts)
    }

    /// Runs `embed` on the given workers off the async runtime.
    async fn embed_off_runtime(
        &self,
        texts: Vec<String>,
        workers: fn(&LocalModel) -> &[rayon::ThreadPool],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || model.embed(workers(&model), &texts))
            .await
            .map_err(|e| EmbedError::Inference(format!("embedding task failed: {e}")))?
    }
}

/// A single-threaded pool whose thread runs `niceness` lower than the process.
fn worker(name: String, niceness: i32) -> Result<rayon::ThreadPool, EmbedError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(move |_| name.clone())
        .start_handler(move |_| lower_this_threads_priority(niceness))
        .build()
        .map_err(|e| EmbedError::Model(format!("starting worker threads: {e}")))
}

/// Lowers the calling thread's priority by `niceness` (Linux: a thread's nice value is its
/// own); where it cannot, the thread runs at the process's.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority(niceness: i32) {
    if niceness <= 0 {
        return;
    }
    let thread = Some(rustix::thread::gettid());
    let current = rustix::process::getpriority_process(thread).unwrap_or(0);
    if let Err(error) = rustix::process::setpriority_process(thread, current + niceness) {
        tracing::debug!(%error, "cannot lower a batch worker's priority");
    }
}

/// Elsewhere every worker runs at the process's priority.
#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority(_niceness: i32) {}

impl LocalModel {
    /// Embeds `texts`, sharing their batches out to `workers`.
    fn embed(
        &self,
        workers: &[rayon::ThreadPool],
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| EmbedError::Inference(format!("tokenizing: {e}")))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        if let Some((index, too_long)) = ids
            .iter()
            .enumerate()
            .find(|(_, ids)| ids.len() > self.max_tokens)
        {
            return Err(EmbedError::InputTooLong {
                index,
                tokens: too_long.len(),
                max: self.max_tokens,
            });
        }
        // Longest first, so that each batch holds texts of about the same length.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut batches: Vec<Vec<usize>> = Vec::new();
        for index in order {
            match batches.last_mut() {
                // The first text of a batch is its longest: the batch costs its length per row.
                Some(batch) if (batch.len() + 1) * ids[batch[0]].len() <= self.batch_tokens => {
                    batch.push(index);
                }
                _ => batches.push(vec![index]),
            }
        }
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); ids.len()];
        let next = AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                let rows: Vec<&[u32]> = batch.iter().map(|&i| ids[i]).collect();
                let pooled = self
                    .encoder
                    .embed_batch(&rows)
                    .map_err(|e| EmbedError::Inference(e.to_string()))?;
                done.extend(batch.iter().copied().zip(pooled));
            }
            Ok(done)
        };
        let used = workers.len().min(batches.len());
        let results: Vec<Result<Embedded, EmbedError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = workers[..used]
                .iter()
                .map(|pool| scope.spawn(|| pool.install(work)))
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(EmbedError::Inference("worker panicked".into())))
                })
                .collect()
        });
        for result in results {
            for (index, vector) in result? {
                vectors[index] = vector;
            }
        }
        Ok(vectors)
    }
}

impl TokenCounter for LocalModel {
    fn count_tokens(&self, text: &str) -> usize {
        // A text the tokenizer cannot take counts as its byte length: over any budget it is
        // then cut until it can be taken, never passed on whole.
        self.tokenizer
            .encode(text, true)
            .map_or(text.len(), |encoding| encoding.len())
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}

#[async_trait]
impl EmbeddingProvider for LocalProvider {
    fn model(&self) -> &str {
        &self.model.name
    }

    fn dimension(&self) -> usize {
        self.model.encoder.hidden_size
    }

    fn token_counter(&self) -> &dyn TokenCounter {
        self.model.as_ref()
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_off_runtime(texts, |model| &model.workers).await
    }

    async fn embed_urgent(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_off_runtime(texts, |model| std::slice::from_ref(&model.urgent_worker))
            .await
    }
}

/// Layer norm parameters.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

/// A linear layer: the weight as an (in, out) tensor for the matrix product, the bias as plain
/// values for the fused element-wise passes.
struct Linear {
    weight: Tensor,
    bias: Vec<f32>,
}

struct Layer {
    /// Query (pre-scaled by 1/sqrt(head size)), key and value in one product.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

struct Encoder {
    /// (vocabulary, hidden), row-major.
    word_embeddings: Vec<f32>,
    /// (positions, hidden), with the embedding of token type 0 (single-text inputs) added.
    position_embeddings: Vec<f32>,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    hidden_size: usize,
    heads: usize,
    vocab_size: usize,
}

struct Weights<'a>(&'a HashMap<String, Tensor>);

impl Weights<'_> {
    fn get(&self, name: &str) -> candle_core::Result<Tensor> {
        self.0
            .get(name)
            .or_else(|| self.0.get(&format!("bert.{name}")))
            .map(|t| t.to_dtype(DType::F32))
            .unwrap_or_else(|| Err(candle_core::Error::Msg(format!("no tensor {name}"))))
    }

    fn values(&self, name: &str) -> candle_core::Result<Vec<f32>> {
        self.get(name)?.flatten_all()?.to_vec1()
    }

    fn norm(&self, prefix: &str, eps: f64) -> candle_core::Result<Norm> {
        Ok(Norm {
            gamma: self.values(&format!("{prefix}.weight"))?,
            beta: self.values(&format!("{prefix}.bias"))?,
            eps: eps as f32,
        })
    }

    fn linear(&self, prefix: &str) -> candle_core::Result<Linear> {
        Ok(Linear {
            weight: self.get(&format!("{prefix}.weight"))?.t()?.contiguous()?,
            bias: self.values(&format!("{prefix}.bias"))?,
        })
    }
}

impl Encoder {
    fn load(weights: &HashMap<String, Tensor>, config: &BertConfig) -> candle_core::Result<Self> {
        let w = Weights(weights);
        let hidden = config.hidden_size;
        let head_size = hidden / config.num_attention_heads;
        let scale = 1.0 / (head_size as f64).sqrt();
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                let query = w.linear(&format!("{p}.attention.self.query"))?;
                let key = w.linear(&format!("{p}.attention.self.key"))?;
                let value = w.linear(&format!("{p}.attention.self.value"))?;
                let qkv = Linear {
                    weight: Tensor::cat(&[(query.weight * scale)?, key.weight, value.weight], 1)?
                        .contiguous()?,
                    bias: query
                        .bias
                        .iter()
                        .map(|b| b * scale as f32)
                        .chain(key.bias)
                        .chain(value.bias)
                        .collect(),
                };
                Ok(Layer {
                    qkv,
                    attention_out: w.linear(&format!("{p}.attention.output.dense"))?,
                    attention_norm: w.norm(
                        &format!("{p}.attention.output.LayerNorm"),
                        config.layer_norm_eps,
                    )?,
                    intermediate: w.linear(&format!("{p}.intermediate.dense"))?,
                    output: w.linear(&format!("{p}.output.dense"))?,
                    output_norm: w.norm(&format!("{p}.output.LayerNorm"), config.layer_norm_eps)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let word_embeddings = w.values("embeddings.word_embeddings.weight")?;
        let token_type = w
            .get("embeddings.token_type_embeddings.weight")?
            .get(0)?
            .to_vec1::<f32>()?;
        let mut position_embeddings = w.values("embeddings.position_embeddings.weight")?;
        for row in position_embeddings.chunks_exact_mut(hidden) {
            row.iter_mut().zip(&token_type).for_each(|(p, t)| *p += t);
        }
        Ok(Self {
            vocab_size: word_embeddings.len() / hidden,
            word_embeddings,
            position_embeddings,
            embeddings_norm: w.norm("embeddings.LayerNorm", config.layer_norm_eps)?,
            layers,
            hidden_size: hidden,
            heads: config.num_attention_heads,
        })
    }

    /// Mean-pooled, L2-normalised embeddings of token id rows (special tokens included).
    ///
    /// The matrix products are candle's; everything element-wise runs fused and in place on
    /// their outputs (bias, GELU, residual, layer norm, masked softmax), which saves the
    /// temporaries and passes over memory a chain of tensor operations would make.
    fn embed_batch(&self, rows: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let hidden = self.hidden_size;
        let batch = rows.len();
        let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let lengths: Vec<usize> = rows.iter().map(|r| r.len().max(1)).collect();
        let mut embeddings = vec![0f32; batch * seq * hidden];
        for (b, row) in rows.iter().enumerate() {
            for t in 0..seq {
                // Padding embeds token 0; attention and pooling ignore it.
                let id = row.get(t).map_or(0, |&id| id as usize);
                if id >= self.vocab_size {
                    candle_core::bail!("token id {id} outside the vocabulary");
                }
                let out = &mut embeddings[(b * seq + t) * hidden..][..hidden];
                let word = &self.word_embeddings[id * hidden..][..hidden];
                let position = &self.position_embeddings[t * hidden..][..hidden];
                for ((o, w), p) in out.iter_mut().zip(word).zip(position) {
                    *o = w + p;
                }
                layer_norm(out, &self.embeddings_norm);
            }
        }
        let mut xs = Tensor::from_vec(embeddings, (batch * seq, hidden), &Device::Cpu)?;
        let head_size = hidden / self.heads;
        for layer in &self.layers {
            let qkv = xs.matmul(&layer.qkv.weight)?;
            qkv.inplace_op1(&AddBias(&layer.qkv.bias))?;
            let qkv = qkv
                .reshape((batch, seq, 3, self.heads, head_size))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let scores = q.matmul(&k.t()?)?;
            scores.inplace_op1(&MaskedSoftmax {
                lengths: &lengths,
                rows_per_text: self.heads * seq,
                seq,
            })?;
            let context = scores
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch * seq, hidden))?;
            let attended = context.matmul(&layer.attention_out.weight)?;
            attended.inplace_op2(
                &xs,
                &AddResidualNorm {
                    bias: &layer.attention_out.bias,
                    norm: &layer.attention_norm,
                },
            )?;
            let intermediate = attended.matmul(&layer.intermediate.weight)?;
            intermediate.inplace_op1(&AddBiasGelu(&layer.intermediate.bias))?;
            let output = intermediate.matmul(&layer.output.weight)?;
            output.inplace_op2(
                &attended,
                &AddResidualNorm {
                    bias: &layer.output.bias,
                    norm: &layer.output_norm,
                },
            )?;
            xs = output;
        }
        let states = xs.flatten_all()?.to_vec1::<f32>()?;
        Ok(lengths
            .iter()
            .enumerate()
            .map(|(b, &tokens)| {
                let mut mean = vec![0f32; hidden];
                for token in states[b * seq * hidden..].chunks_exact(hidden).take(tokens) {
                    mean.iter_mut().zip(token).for_each(|(m, x)| *m += x);
                }
                let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt() / tokens as f32;
                // As torch.nn.functional.normalize: divide by max(norm, 1e-12).
                let scale = 1.0 / (tokens as f32 * norm.max(1e-12));
                mean.iter_mut().for_each(|m| *m *= scale);
                mean
            })
            .collect())
    }
}

fn layer_norm(row: &mut [f32], norm: &Norm) {
    let n = row.len() as f32;
    let mean = reduce_lanes(row, 0.0, |a, b| a + b, |x| x) / n;
    let variance = reduce_lanes(row, 0.0, |a, b| a + b, |x| (x - mean) * (x - mean)) / n;
    let inv = 1.0 / (variance + norm.eps).sqrt();
    for ((x, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
        *x = (*x - mean) * inv * g + b;
    }
}

/// The contiguous f32 values of an in-place operand.
fn values_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a mut [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(values), Some((start, end))) => Ok(&mut values[start..end]),
        _ => candle_core::bail!("{op}: expects contiguous f32"),
    }
}

/// x += bias, row by row.
struct AddBias<'a>(&'a [f32]);

impl InplaceOp1 for AddBias<'_> {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        for row in values_mut(storage, layout, self.name())?.chunks_exact_mut(self.0.len()) {
            row.iter_mut().zip(self.0).for_each(|(x, b)| *x += b);
        }
        Ok(())
    }
}

/// x = gelu(x + bias), GELU as erf (BERT's `gelu`).
struct AddBiasGelu<'a>(&'a [f32]);

impl InplaceOp1 for AddBiasGelu<'_> {
    fn name(&self) -> &'static str {
        "add-bias-gelu"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        for row in values_mut(storage, layout, self.name())?.chunks_exact_mut(self.0.len()) {
            for (x, b) in row.iter_mut().zip(self.0) {
                let v = *x + b;
                *x = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
        Ok(())
    }
}

/// x = layer_norm(x + bias + residual).
struct AddResidualNorm<'a> {
    bias: &'a [f32],
    norm: &'a Norm,
}

impl InplaceOp2 for AddResidualNorm<'_> {
    fn name(&self) -> &'static str {
        "add-residual-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let residual = match (s2, l2.contiguous_offsets()) {
            (CpuStorage::F32(values), Some((start, end))) => &values[start..end],
            _ => candle_core::bail!("{}: expects a contiguous f32 residual", self.name()),
        };
        let xs = values_mut(s1, l1, self.name())?;
        if xs.len() != residual.len() {
            candle_core::bail!("{}: shapes differ", self.name());
        }
        let width = self.bias.len();
        for (row, res) in xs.chunks_exact_mut(width).zip(residual.chunks_exact(width)) {
            for ((x, r), b) in row.iter_mut().zip(res).zip(self.bias) {
                *x += r + b;
            }
            layer_norm(row, self.norm);
        }
        Ok(())
    }
}

/// Softmax over each row of attention scores (batch, heads, seq, seq), attending only to the
/// text's own tokens: the padding columns get exactly zero.
struct MaskedSoftmax<'a> {
    lengths: &'a [usize],
    rows_per_text: usize,
    seq: usize,
}

impl InplaceOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let scores = values_mut(storage, layout, self.name())?;
        for (r, row) in scores.chunks_exact_mut(self.seq).enumerate() {
            let valid = self
                .lengths
                .get(r / self.rows_per_text)
                .copied()
                .unwrap_or(0);
            let (kept, padding) = row.split_at_mut(valid.min(self.seq));
            padding.fill(0.0);
            // Separate passes, each a plain loop the compiler vectorises; the reductions keep
            // eight partial results for the same reason.
            let max = reduce_lanes(kept, f32::NEG_INFINITY, f32::max, |x| x);
            kept.iter_mut().for_each(|x| *x = fast_exp(*x - max));
            let inv = 1.0 / reduce_lanes(kept, 0.0, |a, b| a + b, |x| x);
            kept.iter_mut().for_each(|x| *x *= inv);
        }
        Ok(())
    }
}

/// Combines `map` of every value, in eight interleaved partial results (a strict left fold
/// over floats cannot be vectorised).
fn reduce_lanes(
    values: &[f32],
    init: f32,
    combine: impl Fn(f32, f32) -> f32,
    map: impl Fn(f32) -> f32,
) -> f32 {
    let mut lanes = [init; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane = combine(*lane, map(*value));
        }
    }
    let partial = rest.iter().fold(init, |acc, v| combine(acc, map(*v)));
    lanes.into_iter().fold(partial, combine)
}

/// erf to f32 precision as a rational function (the approximation Eigen and XLA use): no
/// branches and no `exp`, so the compiler vectorises the GELU loop.
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_3e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_2e-3;
    q = x2 * q + -1.426_473_9e-2;
    x * p / q
}

/// e^x for x <= 0 (softmax after subtracting the maximum), to about 2 ulp: 2^n from the exponent
/// bits times a polynomial on the reduced range. Branch-free, so it vectorises.
fn fast_exp(x: f32) -> f32 {
    let x = x.max(-87.0);
    // Round x / ln 2 to the nearest integer with the 1.5 * 2^23 trick.
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    // x - n ln 2 in two steps (Cody-Waite) for precision.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n is in [-126, 0]: a valid exponent for a normal f32.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn batch_workers_run_at_a_lower_priority_than_the_urgent_one() {
        let priority = || rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        let batch = worker("batch".into(), BATCH_WORKER_NICENESS).expect("worker");
        let urgent = worker("urgent".into(), 0).expect("worker");
        let urgent_priority = urgent.install(priority).expect("priority");
        assert_eq!(urgent_priority, priority().expect("priority"));
        assert_eq!(
            batch.install(priority).expect("priority"),
            (urgent_priority + BATCH_WORKER_NICENESS).min(19)
        );
    }

    #[test]
    fn erf_matches_reference_values() {
        let cases = [
            (0.0, 0.0),
            (0.1, 0.112_462_92),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-1.5, -0.966_105_1),
            (2.0, 0.995_322_3),
            (3.5, 0.999_999_3),
            (10.0, 1.0),
        ];
        for (x, expected) in cases {
            assert!((erf(x) - expected).abs() < 2e-6, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn fast_exp_is_accurate_over_the_softmax_range() {
        let mut x = -90.0f32;
        while x <= 0.0 {
            let expected = x.exp();
            let got = fast_exp(x);
            let tolerance = expected * 1e-6 + 1e-37;
            assert!(
                (got - expected).abs() <= tolerance,
                "exp({x}): {got} vs {expected}"
            );
            x += 0.013;
        }
    }
}
