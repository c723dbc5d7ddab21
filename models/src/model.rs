//! The two seams of the zoo.
//!
//! - [`CausalLm`]: a family's MLX forward pass (tokens in, logits out, KV cache updated).
//! - [`LanguageModel`]: "a language model you can generate with and score text with", whatever
//!   engine stands behind it. The examples and benchmarks only use this trait, so another
//!   backend (the ggml baseline) can stand behind the same tools.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::runtime::cache::KvCache;
use crate::runtime::sample::SamplingParams;
use crate::text::Tokenizer;
use mlx_rs::Array;

/// A decoder-only transformer's forward pass on MLX.
pub trait CausalLm: Send {
    /// Runs `tokens` (`[B, L]`, int32), appending their keys and values to `cache` (whose
    /// offset is the position of the first token), and returns logits `[B, L, vocab]`.
    fn forward(&self, tokens: &Array, cache: &mut KvCache) -> Result<Array>;

    /// One decode step of `B` independent sequences: `tokens[b]` is the next token of the
    /// sequence whose cache is `caches[b]` (each at its own position); returns logits
    /// `[B, 1, vocab]`. This default runs the sequences one by one; the decoder runs the
    /// projections and MLPs once for the whole batch.
    fn forward_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Array> {
        if tokens.len() != caches.len() || tokens.is_empty() {
            return Err(crate::Error::InvalidArgument(format!(
                "a batch step needs one token per cache, got {} tokens and {} caches",
                tokens.len(),
                caches.len()
            )));
        }
        let rows = tokens
            .iter()
            .zip(caches.iter_mut())
            .map(|(&t, cache)| {
                let id = token_ids(&[t])?;
                self.forward(&Array::from_slice(&id, &[1, 1])?, cache)
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<&Array> = rows.iter().collect();
        Ok(mlx_rs::ops::concatenate(&rows, 0)?)
    }

    /// The parsed configuration.
    fn config(&self) -> &ModelConfig;

    /// A fresh, empty cache with one entry per layer.
    fn new_cache(&self) -> KvCache {
        KvCache::new(self.config().num_hidden_layers)
    }

    /// Makes [`CausalLm::new_cache`] store keys and values as `dtype` (`None`: the compute
    /// dtype), e.g. [`mlx_rs::Dtype::Float16`] under a float32 model on the CPU: half the KV
    /// memory and half the bytes attention reads per decoded token, at the cost of rounding
    /// each stored key and value to half precision (as llama.cpp's default f16 cache).
    /// [`crate::Error::InvalidArgument`] where the model does not support it (this default:
    /// anything but `None`) or for a non-floating dtype.
    fn set_kv_cache_dtype(&mut self, dtype: Option<mlx_rs::Dtype>) -> Result<()> {
        match dtype {
            None => Ok(()),
            Some(d) => Err(crate::Error::InvalidArgument(format!(
                "this model does not store its KV cache as {d:?}"
            ))),
        }
    }
}

/// Token ids as int32 model inputs ([`crate::Error::InvalidArgument`] for an id beyond
/// `i32::MAX`).
pub fn token_ids(tokens: &[u32]) -> Result<Vec<i32>> {
    tokens
        .iter()
        .map(|&t| {
            i32::try_from(t).map_err(|_| {
                crate::Error::InvalidArgument(format!("token id {t} does not fit int32"))
            })
        })
        .collect()
}

/// [`crate::Error::InvalidArgument`] for a token id outside a vocabulary of `vocab` tokens:
/// neither MLX's gather nor llama.cpp checks its indices, so every engine checks first.
///
/// ```
/// use mlx_models::model::check_vocab;
/// assert!(check_vocab(&[0, 9], 10).is_ok());
/// assert!(check_vocab(&[10], 10).is_err());
/// ```
pub fn check_vocab(tokens: &[u32], vocab: usize) -> Result<()> {
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(t) => Err(crate::Error::InvalidArgument(format!(
            "token id {t} is outside the vocabulary of {vocab} tokens"
        ))),
        None => Ok(()),
    }
}

/// What to generate: length limit, sampling and stop rules.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Maximum new tokens.
    pub max_tokens: usize,
    /// Sampling parameters (greedy by default).
    pub sampling: SamplingParams,
    /// Extra stop token ids (the model's eos ids always stop).
    pub stop_token_ids: Vec<u32>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop_token_ids: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence or stop token was produced (it is not passed to the callback).
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The callback asked to stop (e.g. a stop string matched).
    Callback,
}

/// Figures of one generation, printed by the tools as one line (see [`std::fmt::Display`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationStats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of those, tokens whose KV state was reused from an earlier call (not processed).
    pub cached_tokens: usize,
    /// Prompt tokens processed per second (prefill; cached tokens are not counted).
    pub prompt_tps: f64,
    /// Tokens generated (including a final stop token).
    pub generation_tokens: usize,
    /// Generated tokens per second (decode).
    pub generation_tps: f64,
    /// Peak memory of the engine during the call, in MB (10^6 bytes).
    pub peak_memory_mb: f64,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

impl GenerationStats {
    /// The checks every engine makes before it generates (a non-empty prompt of ids inside
    /// the vocabulary, prompt plus `max_tokens` within `context_length`), and the figures of
    /// a generation that has not started.
    ///
    /// Errors: [`crate::Error::InvalidArgument`], [`crate::Error::ContextOverflow`].
    ///
    /// ```
    /// use mlx_models::model::{GenerateParams, GenerationStats};
    /// let s = GenerationStats::begin(&[1, 2], &GenerateParams::default(), 10, 512)?;
    /// assert_eq!((s.prompt_tokens, s.generation_tokens), (2, 0));
    /// assert!(GenerationStats::begin(&[1, 2], &GenerateParams::default(), 10, 100).is_err());
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn begin(
        prompt: &[u32],
        params: &GenerateParams,
        vocab: usize,
        context_length: usize,
    ) -> Result<GenerationStats> {
        if prompt.is_empty() {
            return Err(crate::Error::InvalidArgument("the prompt is empty".into()));
        }
        check_vocab(prompt, vocab)?;
        if prompt.len().saturating_add(params.max_tokens) > context_length {
            return Err(crate::Error::ContextOverflow {
                prompt: prompt.len(),
                requested: params.max_tokens,
                context: context_length,
            });
        }
        Ok(GenerationStats {
            prompt_tokens: prompt.len(),
            cached_tokens: 0,
            prompt_tps: 0.0,
            generation_tokens: 0,
            generation_tps: 0.0,
            peak_memory_mb: 0.0,
            finish_reason: FinishReason::Length,
        })
    }
}

impl std::fmt::Display for GenerationStats {
    /// `prompt: <n> tokens[ (<k> cached)], <x> tok/s | generation: <m> tokens, <y> tok/s |
    /// peak memory: <z> MB`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "prompt: {} tokens", self.prompt_tokens)?;
        if self.cached_tokens > 0 {
            write!(f, " ({} cached)", self.cached_tokens)?;
        }
        write!(
            f,
            ", {:.1} tok/s | generation: {} tokens, {:.1} tok/s | peak memory: {:.1} MB",
            self.prompt_tps, self.generation_tokens, self.generation_tps, self.peak_memory_mb
        )
    }
}

/// A language model you can generate with: the seam between the tools and an engine.
pub trait LanguageModel {
    /// A short description of the engine and model (`mlx cpu f32 llama 30L`, ...).
    fn describe(&self) -> String;

    /// The tokenizer (with its chat template and special tokens).
    fn tokenizer(&self) -> &Tokenizer;

    /// Ids that end generation.
    fn eos_token_ids(&self) -> &[u32];

    /// The model's context length.
    fn context_length(&self) -> usize;

    /// Generates after `prompt` (token ids, special tokens included as the tokenizer added
    /// them), starting from an empty state, calling `on_token` with each new token; `on_token`
    /// returns `Ok(false)` to stop.
    fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<GenerationStats>;

    /// `log p(tokens[i + 1] | tokens[..=i])` for `i` in `0..tokens.len() - 1`, from an empty
    /// state (for perplexity).
    fn token_log_probs(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;

    /// Replaces the ids that end generation (an empty list makes benchmarks run to
    /// `max_tokens`).
    fn set_eos_token_ids(&mut self, ids: Vec<u32>);

    /// Bytes one decode step reads at `depth` tokens of context, as the engine stores them:
    /// its weights (every matrix is read once per token; the estimate also counts the token
    /// embedding table, which a step reads fully only when the LM head shares it) and the
    /// KV cache of `depth` positions. `None` when the engine cannot tell. The benchmarks
    /// divide tokens/s × this by the machine's read bandwidth.
    fn decode_bytes_per_token(&self, depth: usize) -> Option<u64> {
        let _ = depth;
        None
    }
}
