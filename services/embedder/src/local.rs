//! `local`: a sentence-transformers BERT model (default all-MiniLM-L6-v2) run in-process with
//! candle on the CPU, with mean pooling and L2 normalisation as sentence-transformers does.
//!
//! The model directory holds `config.json`, `tokenizer.json`, `model.safetensors` and
//! `sentence_bert_config.json` (`ops/fetch-model` fills it).
//!
//! Throughput: texts are sorted by length and batched so that little is spent on padding; the
//! linear layers run as single 2-D matrix products over every token of a batch (query, key and
//! value fused into one); batches are shared out to one worker thread per core, each running
//! its whole batch (matrix products, softmax, GELU, layer norms) so that the element-wise work is
//! parallel too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use candle_core::{D, DType, Device, Tensor};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::{EmbedError, EmbeddingProvider, TokenCounter};

/// Tokens per batch: enough rows for the matrix products to run at full speed, few enough that
/// the activations stay in cache-friendly sizes.
const DEFAULT_BATCH_TOKENS: usize = 2048;

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

/// The model as loaded: the provider hands it to blocking threads.
struct LocalModel {
    name: String,
    tokenizer: Tokenizer,
    encoder: Encoder,
    max_tokens: usize,
    threads: usize,
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
            .field("threads", &self.model.threads)
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
        if bert.num_attention_heads == 0 || bert.hidden_size % bert.num_attention_heads != 0 {
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
        Ok(Self {
            model: Arc::new(LocalModel {
                name,
                tokenizer,
                encoder,
                max_tokens: sentence.max_seq_length.min(bert.max_position_embeddings),
                threads,
                batch_tokens: config.batch_tokens.max(1),
            }),
        })
    }

    /// Embeds on the calling thread (and the provider's workers); for callers already off the
    /// async runtime.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.model.embed(texts)
    }
}

impl LocalModel {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
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
        let results: Vec<Result<Vec<(usize, Vec<f32>)>, EmbedError>> =
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..self.threads.min(batches.len()))
                    .map(|_| {
                        scope.spawn(|| {
                            let mut done = Vec::new();
                            loop {
                                let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed))
                                else {
                                    return Ok(done);
                                };
                                let rows: Vec<&[u32]> = batch.iter().map(|&i| ids[i]).collect();
                                let pooled = self
                                    .encoder
                                    .embed_batch(&rows)
                                    .map_err(|e| EmbedError::Inference(e.to_string()))?;
                                done.extend(batch.iter().copied().zip(pooled));
                            }
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|worker| {
                        worker.join().unwrap_or_else(|_| {
                            Err(EmbedError::Inference("worker panicked".into()))
                        })
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
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || model.embed(&texts))
            .await
            .map_err(|e| EmbedError::Inference(format!("embedding task failed: {e}")))?
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }
}

/// A linear layer with its weight stored as (in, out), the layout the matrix product reads
/// row by row.
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        xs.matmul(&self.weight)?.broadcast_add(&self.bias)
    }
}

struct Layer {
    /// Query (pre-scaled by 1/sqrt(head size)), key and value in one.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

struct Encoder {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embedding: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    hidden_size: usize,
    heads: usize,
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

    fn layer_norm(&self, prefix: &str, eps: f64) -> candle_core::Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.get(&format!("{prefix}.weight"))?,
            bias: self.get(&format!("{prefix}.bias"))?,
            eps: eps as f32,
        })
    }

    fn linear(&self, prefix: &str) -> candle_core::Result<Linear> {
        Ok(Linear {
            weight: self.get(&format!("{prefix}.weight"))?.t()?.contiguous()?,
            bias: self.get(&format!("{prefix}.bias"))?,
        })
    }
}

impl Encoder {
    fn load(weights: &HashMap<String, Tensor>, config: &BertConfig) -> candle_core::Result<Self> {
        let w = Weights(weights);
        let head_size = config.hidden_size / config.num_attention_heads;
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
                    bias: Tensor::cat(&[(query.bias * scale)?, key.bias, value.bias], 0)?,
                };
                Ok(Layer {
                    qkv,
                    attention_out: w.linear(&format!("{p}.attention.output.dense"))?,
                    attention_norm: w.layer_norm(
                        &format!("{p}.attention.output.LayerNorm"),
                        config.layer_norm_eps,
                    )?,
                    intermediate: w.linear(&format!("{p}.intermediate.dense"))?,
                    output: w.linear(&format!("{p}.output.dense"))?,
                    output_norm: w
                        .layer_norm(&format!("{p}.output.LayerNorm"), config.layer_norm_eps)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: w.get("embeddings.word_embeddings.weight")?,
            position_embeddings: w.get("embeddings.position_embeddings.weight")?,
            // Single-text inputs: every token has type 0.
            token_type_embedding: w.get("embeddings.token_type_embeddings.weight")?.get(0)?,
            embeddings_norm: w.layer_norm("embeddings.LayerNorm", config.layer_norm_eps)?,
            layers,
            hidden_size: config.hidden_size,
            heads: config.num_attention_heads,
        })
    }

    /// Mean-pooled, L2-normalised embeddings of token id rows (special tokens included).
    fn embed_batch(&self, rows: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch = rows.len();
        let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; batch * seq];
        let mut mask = vec![0f32; batch * seq];
        for (b, row) in rows.iter().enumerate() {
            ids[b * seq..b * seq + row.len()].copy_from_slice(row);
            mask[b * seq + row.len()..(b + 1) * seq].fill(-1e9);
        }
        let device = Device::Cpu;
        let ids = Tensor::from_vec(ids, batch * seq, &device)?;
        // Added to the attention scores: padding gets no attention.
        let mask = Tensor::from_vec(mask, (batch, 1, 1, seq), &device)?;
        let hidden = self.hidden_size;
        let embeddings = self
            .word_embeddings
            .index_select(&ids, 0)?
            .reshape((batch, seq, hidden))?
            .broadcast_add(&self.position_embeddings.narrow(0, 0, seq)?)?
            .broadcast_add(&self.token_type_embedding)?
            .reshape((batch * seq, hidden))?;
        let mut xs = self.embeddings_norm.forward(&embeddings)?;
        let head_size = hidden / self.heads;
        for layer in &self.layers {
            let qkv = layer
                .qkv
                .forward(&xs)?
                .reshape((batch, seq, 3, self.heads, head_size))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let scores = q.matmul(&k.t()?)?.broadcast_add(&mask)?;
            let probabilities = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probabilities
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch * seq, hidden))?;
            let attended = layer
                .attention_norm
                .forward(&(layer.attention_out.forward(&context)? + &xs)?)?;
            let intermediate = layer.intermediate.forward(&attended)?.gelu_erf()?;
            xs = layer
                .output_norm
                .forward(&(layer.output.forward(&intermediate)? + &attended)?)?;
        }
        let xs = xs.reshape((batch, seq, hidden))?;
        rows.iter()
            .enumerate()
            .map(|(b, row)| {
                let tokens = row.len().max(1);
                let mean = (xs.get(b)?.narrow(0, 0, tokens)?.sum(0)? / tokens as f64)?;
                let norm = mean
                    .sqr()?
                    .sum_keepdim(D::Minus1)?
                    .sqrt()?
                    .clamp(1e-12, f64::MAX)?;
                mean.broadcast_div(&norm)?.to_vec1::<f32>()
            })
            .collect()
    }
}
