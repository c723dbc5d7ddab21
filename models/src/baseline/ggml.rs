//! [`GgmlEngine`]: llama.cpp (ggml) behind [`LanguageModel`], on the same GGUF file, token ids,
//! sampling and prompt chunking as [`crate::runtime::engine::MlxEngine`].
//!
//! What is shared with the MLX path, so that a comparison measures the engines only:
//! - **the file checks**: [`crate::load::open_checked_gguf`] reads the header with the
//!   project's bounded reader and checks the declared tensors before llama.cpp opens the file
//!   (llama.cpp's own parser is not trusted with hostile files);
//! - **the tokenizer** and stop ids: ours, built from the file's metadata; llama.cpp only
//!   sees token ids;
//! - **sampling**: [`Sampler`] on the logits llama.cpp returns (greedy = argmax, first maximum
//!   wins, as MLX's);
//! - **prefill**: the prompt except its last token in chunks of
//!   [`GgmlOptions::prefill_chunk`] (logits off), then the last token alone, then one token per
//!   decode call; timed with the same definitions (`prompt_tps` up to the first token,
//!   `generation_tps` from the first token to the last).
//!
//! Each call creates its own llama.cpp context (KV cache sized for the call: prompt plus
//! `max_tokens`), before the clock starts. Flash attention is off unless asked for, the KV
//! cache is f16 (llama.cpp's default), and the thread count drives prefill and decode.
//!
//! Memory: llama.cpp has no allocator peak to report, so [`GenerationStats::peak_memory_mb`]
//! is the process's peak resident set during the call ([`crate::runtime::rss`]), which counts
//! the memory-mapped weights once their pages are touched.

use crate::error::{Error, Result};
use crate::load::{eos_token_ids, open_checked_gguf, prepare_tokenizer};
use crate::model::{FinishReason, GenerateParams, GenerationStats, LanguageModel};
use crate::runtime::clock::{stop_reason, GenerationClock};
use crate::runtime::engine::DEFAULT_PREFILL_CHUNK;
use crate::runtime::rss;
use crate::runtime::sample::Sampler;
use crate::text::Tokenizer;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use mlx_rs::{Array, Device};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;

/// How llama.cpp runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgmlOptions {
    /// Threads for prefill and decode (0: all the cores the process may use, as the MLX
    /// engine's kernels).
    pub threads: usize,
    /// Layers offloaded to the GPU (0: CPU only; `u32::MAX`: all). Only GPU builds (Metal on
    /// Apple silicon, the `cuda` feature) have a GPU.
    pub gpu_layers: u32,
    /// Prompt tokens per decode call (llama.cpp's `n_batch` and `n_ubatch`).
    pub prefill_chunk: usize,
    /// Memory-map the file (llama.cpp's default) instead of reading it.
    pub use_mmap: bool,
    /// llama.cpp's flash-attention kernels (off by default, as `llama-bench`).
    pub flash_attention: bool,
}

impl Default for GgmlOptions {
    fn default() -> Self {
        GgmlOptions {
            threads: 0,
            gpu_layers: 0,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            use_mmap: true,
            flash_attention: false,
        }
    }
}

impl GgmlOptions {
    /// The thread count llama.cpp gets: `threads`, or the available parallelism for 0.
    pub fn resolved_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// The process-wide llama.cpp backend (llama.cpp allows one; it lives until the process
/// ends). Its log lines are dropped unless `MLX_ZOO_GGML_LOG=1`.
fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            if std::env::var("MLX_ZOO_GGML_LOG").as_deref() != Ok("1") {
                backend.void_logs();
            }
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| Error::Ggml(format!("initialising the backend: {e}")))
}

/// llama.cpp's description of its build: the CPU features it was compiled with (`AVX2 = 1`,
/// `AVX512 = 1`, ...), OpenMP, repacking, and the GPU backend when there is one.
///
/// ```no_run
/// # #[cfg(feature = "ggml-baseline")]
/// println!("{}", mlx_models::baseline::ggml::system_info());
/// ```
pub fn system_info() -> String {
    // SAFETY: llama_print_system_info takes no arguments and returns a pointer to a static,
    // NUL-terminated buffer that llama.cpp owns (valid until the next call; copied at once).
    let info = unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) };
    info.to_string_lossy().into_owned()
}

/// Whether this build of llama.cpp has a GPU backend with a device present (Metal on Apple
/// silicon, CUDA with the `cuda` feature): what [`GgmlOptions::gpu_layers`] can use.
///
/// Errors: [`Error::Ggml`] when the backend cannot be initialised.
pub fn gpu_available() -> Result<bool> {
    Ok(backend()?.supports_gpu_offload())
}

/// The features [`system_info`] lists as on (`AVX2 F16C FMA OPENMP ...`).
fn enabled_features(info: &str) -> String {
    info.split('|')
        .filter_map(|f| {
            let (name, value) = f.split_once('=')?;
            let name = name.rsplit(':').next()?.trim();
            (value.trim() == "1").then_some(name)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// llama.cpp's own performance counters of the last [`LanguageModel::generate`] call
/// (`llama_perf_context`): the time inside `llama_decode` only, no sampling or bookkeeping.
/// llama.cpp counts a call of more than one token as prompt work and a one-token call as
/// decode, so the last prompt token (run alone, as the MLX engine runs it) is a decode here.
/// A cross-check of [`GenerationStats`], which both engines measure alike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlamaCounters {
    /// Tokens in multi-token calls.
    pub prompt_tokens: usize,
    /// Their rate.
    pub prompt_tps: f64,
    /// One-token calls.
    pub decode_tokens: usize,
    /// Their rate.
    pub decode_tps: f64,
}

/// A GGUF model in llama.cpp, with our tokenizer and stop ids.
pub struct GgmlEngine {
    model: LlamaModel,
    tokenizer: Tokenizer,
    eos_token_ids: Vec<u32>,
    context_length: usize,
    n_vocab: usize,
    config: crate::config::ModelConfig,
    lookup_table_bytes: u64,
    last_counters: Option<LlamaCounters>,
    options: GgmlOptions,
    description: String,
}

impl std::fmt::Debug for GgmlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgmlEngine")
            .field("description", &self.description)
            .field("options", &self.options)
            .field("eos_token_ids", &self.eos_token_ids)
            .finish_non_exhaustive()
    }
}

impl GgmlEngine {
    /// Loads a `.gguf` file into llama.cpp after the project's own checks of the file
    /// ([`open_checked_gguf`]); the tokenizer and stop ids come from the file's metadata, as
    /// [`crate::load::load`] builds them.
    ///
    /// Errors: those of [`open_checked_gguf`] (a missing, malformed, hostile or unsupported
    /// file), [`Error::Tokenizer`], [`Error::InvalidArgument`] for a zero prefill chunk or
    /// a path that is not a `.gguf` file, [`Error::Ggml`] when llama.cpp cannot load it or
    /// its vocabulary size differs from the tokenizer's.
    ///
    /// ```no_run
    /// use mlx_models::baseline::ggml::{GgmlEngine, GgmlOptions};
    /// use mlx_models::model::{GenerateParams, LanguageModel};
    /// let mut engine = GgmlEngine::load("model.gguf".as_ref(), GgmlOptions::default())?;
    /// let prompt = engine.tokenizer().encode("The capital of France is", true)?;
    /// let stats = engine.generate(&prompt, &GenerateParams::default(), &mut |_| Ok(true))?;
    /// println!("{stats}");
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn load(path: &Path, options: GgmlOptions) -> Result<GgmlEngine> {
        if options.prefill_chunk == 0 {
            return Err(Error::InvalidArgument(
                "the prefill chunk must be positive".into(),
            ));
        }
        if path.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "the ggml baseline runs GGUF files; {} is a folder",
                path.display()
            )));
        }
        let (file, config) = open_checked_gguf(path)?;
        let mut tokenizer = Tokenizer::from_gguf(&file)?;
        prepare_tokenizer(&config, &mut tokenizer);
        let eos = eos_token_ids(&config, None, &tokenizer);
        // Read one row per token: the token embedding when the file has its own LM head
        // (`output.weight`), and Gemma's per-layer embedding.
        let untied = file.tensor("output.weight").is_some();
        let lookup_table_bytes: u64 = file
            .tensors
            .iter()
            .filter(|t| {
                t.name == "per_layer_token_embd.weight" || (untied && t.name == "token_embd.weight")
            })
            .map(|t| t.n_bytes)
            .sum();
        drop(file);

        let backend = backend()?;
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(options.gpu_layers)
            .with_use_mmap(options.use_mmap);
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| Error::Ggml(format!("loading {}: {e}", path.display())))?;
        let n_vocab = usize::try_from(model.n_vocab()).unwrap_or(0);
        if n_vocab != tokenizer.vocab_size() {
            return Err(Error::Ggml(format!(
                "llama.cpp reads {n_vocab} tokens in {}, our tokenizer {}",
                path.display(),
                tokenizer.vocab_size()
            )));
        }
        let context_length = config
            .context_length()
            .unwrap_or(model.n_ctx_train() as usize);
        let device = if options.gpu_layers == 0 {
            "cpu".to_string()
        } else {
            llama_cpp_2::list_llama_ggml_backend_devices()
                .into_iter()
                .find(|d| d.device_type != llama_cpp_2::LlamaBackendDeviceType::Cpu)
                .map_or_else(|| "cpu (no GPU backend)".into(), |d| d.description)
        };
        let description = format!(
            "ggml {device} {} {:.2}B params {:.0} MB, {} threads [{}]",
            config.model_type,
            model.n_params() as f64 / 1e9,
            model.size() as f64 / 1e6,
            options.resolved_threads(),
            enabled_features(&system_info()),
        );
        Ok(GgmlEngine {
            model,
            tokenizer,
            eos_token_ids: eos,
            context_length,
            n_vocab,
            config,
            lookup_table_bytes,
            last_counters: None,
            options,
            description,
        })
    }

    /// The options the engine runs with.
    pub fn options(&self) -> &GgmlOptions {
        &self.options
    }

    /// llama.cpp's own tokenization of `text` (BOS and EOS as the vocabulary asks, when
    /// `add_special`; special tokens in the text not parsed), for checking that ours gives the
    /// same ids. The engine itself only ever sees our tokenizer's ids.
    pub fn llama_tokenize(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, false)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect()
    }

    /// llama.cpp's own counters of the last generation (`None` before the first).
    pub fn last_counters(&self) -> Option<LlamaCounters> {
        self.last_counters
    }

    /// The size of the model's tensors in bytes, as llama.cpp counts them.
    pub fn model_bytes(&self) -> u64 {
        self.model.size()
    }

    /// A context for `n_ctx` tokens with the engine's threads, chunk and attention settings.
    fn context(&self, n_ctx: usize) -> Result<LlamaContext<'_>> {
        let too_big = |what: &str, n: usize| Error::Ggml(format!("{what} of {n} overflows u32"));
        let n_ctx = u32::try_from(n_ctx).map_err(|_| too_big("a context", n_ctx))?;
        let chunk = self.options.prefill_chunk;
        let chunk = u32::try_from(chunk).map_err(|_| too_big("a chunk", chunk))?;
        let threads = i32::try_from(self.options.resolved_threads()).unwrap_or(i32::MAX);
        let gpu = self.options.gpu_layers > 0;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx.max(1)))
            .with_n_batch(chunk)
            .with_n_ubatch(chunk)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_no_perf(false)
            .with_offload_kqv(gpu)
            .with_op_offload(gpu)
            .with_flash_attention_policy(if self.options.flash_attention {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED
            } else {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
            });
        self.model
            .new_context(backend()?, params)
            .map_err(|e| Error::Ggml(format!("creating a context of {n_ctx} tokens: {e}")))
    }
}

/// Runs `tokens` at positions `first..` in one decode call; `logits` marks the positions whose
/// logits are kept (all, or only the last).
fn decode(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    tokens: &[u32],
    first: usize,
    all_logits: bool,
) -> Result<()> {
    batch.clear();
    for (i, &t) in tokens.iter().enumerate() {
        let id = i32::try_from(t).map_err(|_| Error::InvalidArgument(format!("token id {t}")))?;
        let pos = i32::try_from(first + i)
            .map_err(|_| Error::InvalidArgument(format!("position {}", first + i)))?;
        let keep = all_logits || i + 1 == tokens.len();
        batch
            .add(LlamaToken(id), pos, &[0], keep)
            .map_err(|e| Error::Ggml(e.to_string()))?;
    }
    ctx.decode(batch)
        .map_err(|e| Error::Ggml(format!("decoding {} tokens: {e}", tokens.len())))
}

/// The index of the first largest logit (NaN never wins).
fn first_argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// `log softmax(logits)[target]`, in f64.
fn log_prob(logits: &[f32], target: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    (logits[target] as f64 - max - sum.ln()) as f32
}

impl LanguageModel for GgmlEngine {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn set_eos_token_ids(&mut self, ids: Vec<u32>) {
        self.eos_token_ids = ids;
    }

    /// The model's tensor bytes (llama.cpp's `llama_model_size`, blocks as stored) less the
    /// embedding tables a step reads one row of (the token embedding when the file has its
    /// own LM head, per-layer embeddings), plus an f16 KV cache (llama.cpp's default) of
    /// `depth` positions.
    fn decode_bytes_per_token(&self, depth: usize) -> Option<u64> {
        let kv = crate::load::budget::kv_cache_bytes(&self.config, depth, mlx_rs::Dtype::Float16);
        let weights = self.model.size().saturating_sub(self.lookup_table_bytes);
        Some(weights.saturating_add(kv))
    }

    fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<GenerationStats> {
        let mut sampler = Sampler::new(&params.sampling)?;
        let mut stats = GenerationStats::begin(prompt, params, self.n_vocab, self.context_length)?;
        if params.max_tokens == 0 {
            return Ok(stats);
        }
        let chunk = self.options.prefill_chunk;
        let mut ctx = self.context(prompt.len() + params.max_tokens)?;
        let mut batch = LlamaBatch::new(chunk, 1);
        let penalize = params.sampling.uses_repetition_penalty();
        let window = params.sampling.repetition_context_size;
        let mut recent: Vec<u32> = prompt[prompt.len().saturating_sub(window)..].to_vec();
        rss::reset_peak();
        let mut clock = GenerationClock::start();

        let (head, last) = prompt.split_at(prompt.len() - 1);
        for (i, piece) in head.chunks(chunk).enumerate() {
            decode(&mut ctx, &mut batch, piece, i * chunk, false)?;
        }
        let mut input = last[0];
        let mut pos = head.len();
        let cpu = Device::cpu();
        // Greedy without a penalty: the argmax here, as MLX's argmax picks it (the first
        // maximum), without the cost of an MLX graph per token, which is neither engine's.
        let greedy = params.sampling.temperature == 0.0 && !penalize;
        loop {
            decode(&mut ctx, &mut batch, &[input], pos, false)?;
            pos += 1;
            let logits = ctx.get_logits_ith(0);
            let token = if greedy {
                first_argmax(logits)
            } else {
                mlx_rs::with_device(cpu, || -> Result<u32> {
                    let logits = Array::from_slice(logits, &[logits.len() as i32])?;
                    let recent = if penalize && !recent.is_empty() {
                        Some(Array::from_slice(&recent, &[recent.len() as i32])?)
                    } else {
                        None
                    };
                    Ok(sampler.sample(&logits, recent.as_ref())?.item::<u32>()?)
                })??
            };
            if penalize {
                recent.push(token);
                if recent.len() > window {
                    recent.remove(0);
                }
            }
            clock.token(&mut stats, prompt.len());
            if let Some(reason) = stop_reason(token, &self.eos_token_ids, params, on_token)? {
                stats.finish_reason = reason;
                break;
            }
            if stats.generation_tokens == params.max_tokens {
                stats.finish_reason = FinishReason::Length;
                break;
            }
            input = token;
        }
        stats.peak_memory_mb = rss::peak_bytes().unwrap_or(0) as f64 / 1e6;
        let t = ctx.timings();
        let rate = |n: i32, ms: f64| if ms > 0.0 { n as f64 / ms * 1e3 } else { 0.0 };
        let own = LlamaCounters {
            prompt_tokens: t.n_p_eval().max(0) as usize,
            prompt_tps: rate(t.n_p_eval(), t.t_p_eval_ms()),
            decode_tokens: t.n_eval().max(0) as usize,
            decode_tps: rate(t.n_eval(), t.t_eval_ms()),
        };
        drop(ctx);
        self.last_counters = Some(own);
        Ok(stats)
    }

    /// Scored as [`crate::runtime::engine::score_tokens`] scores on MLX: chunks of
    /// [`GgmlOptions::prefill_chunk`] tokens from an empty context, every position's logits
    /// kept, log-softmax per row (in f64 here).
    fn token_log_probs(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.len() > self.context_length {
            return Err(Error::ContextOverflow {
                prompt: tokens.len(),
                requested: 0,
                context: self.context_length,
            });
        }
        crate::model::check_vocab(tokens, self.n_vocab)?;
        let n = tokens.len();
        if n < 2 {
            return Ok(Vec::new());
        }
        let chunk = self.options.prefill_chunk;
        let mut ctx = self.context(n)?;
        let mut batch = LlamaBatch::new(chunk, 1);
        let mut out = Vec::with_capacity(n - 1);
        let mut start = 0;
        while start + 1 < n {
            let end = (start + chunk).min(n - 1);
            decode(&mut ctx, &mut batch, &tokens[start..end], start, true)?;
            for (row, &target) in tokens[start + 1..=end].iter().enumerate() {
                out.push(log_prob(ctx.get_logits_ith(row as i32), target as usize));
            }
            start = end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prob_is_log_softmax() {
        // log softmax([0, ln 3]) = [ln 1/4, ln 3/4]
        let logits = [0.0f32, 3f32.ln()];
        assert!((log_prob(&logits, 0) - 0.25f32.ln()).abs() < 1e-6);
        assert!((log_prob(&logits, 1) - 0.75f32.ln()).abs() < 1e-6);
        // shift invariance, and no overflow on large logits
        let big = [1000.0f32, 1000.0 + 3f32.ln()];
        assert!((log_prob(&big, 1) - 0.75f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn first_argmax_takes_the_first_maximum() {
        assert_eq!(first_argmax(&[0.5, 2.0, -1.0, 2.0]), 1);
        assert_eq!(first_argmax(&[3.0, 2.0]), 0);
        assert_eq!(first_argmax(&[f32::NEG_INFINITY, -1.0]), 1);
    }

    #[test]
    fn enabled_features_keeps_the_ones_set() {
        let info = "CPU : SSE3 = 1 | AVX = 1 | AVX512 = 0 | OPENMP = 1 | REPACK = 1 | ";
        assert_eq!(enabled_features(info), "SSE3 AVX OPENMP REPACK");
    }

    #[test]
    fn zero_threads_means_every_core() {
        let all = std::thread::available_parallelism().unwrap().get();
        assert_eq!(GgmlOptions::default().resolved_threads(), all);
        let two = GgmlOptions {
            threads: 2,
            ..GgmlOptions::default()
        };
        assert_eq!(two.resolved_threads(), 2);
    }
}
