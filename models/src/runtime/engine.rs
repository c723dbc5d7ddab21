//! [`MlxEngine`]: a [`CausalLm`] with its tokenizer behind the [`LanguageModel`] seam.
//!
//! The loop is mlx-lm's `generate_step`: chunked prefill (evaluating the cache and clearing
//! MLX's buffer cache between chunks), then a decode loop that builds and `async_eval`s step
//! n + 1 before blocking on token n, so the device computes the next token while the host
//! handles the current one. All MLX work of a call runs on the engine's own stream.

use crate::error::{Error, Result};
use crate::load::{LoadOptions, LoadedModel};
use crate::model::{CausalLm, FinishReason, GenerateParams, GenerationStats, LanguageModel};
use crate::runtime::cache::KvCache;
use crate::runtime::clock::{stop_reason, GenerationClock};
use crate::runtime::prefix_cache::PrefixCache;
use crate::runtime::sample::Sampler;
use crate::runtime::scheduler::{Scheduler, SchedulerOptions};
use crate::text::Tokenizer;
use mlx_rs::ops::concatenate;
use mlx_rs::{async_eval, eval, memory, s, with_stream, Array, Device, DeviceType, Dtype, Stream};

/// `cpu` or `gpu`.
trait DeviceName {
    fn device_type_name(&self) -> &'static str;
}

impl DeviceName for Device {
    fn device_type_name(&self) -> &'static str {
        match self.device_type() {
            DeviceType::Cpu => "cpu",
            DeviceType::Gpu => "gpu",
        }
    }
}

/// Prompt tokens run per forward pass during prefill (and per pass when scoring).
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

/// Decode steps between two `clear_cache` calls (as mlx-lm).
const CLEAR_CACHE_EVERY: usize = 256;

/// Token ids as an int32 `[1, L]` model input.
fn input_ids(tokens: &[u32]) -> Result<Array> {
    let ids = crate::model::token_ids(tokens)?;
    Ok(Array::from_slice(&ids, &[1, ids.len() as i32])?)
}

/// Token ids must index the model's vocabulary: MLX's gather does not check its indices, so an
/// out-of-range id would read outside the embedding matrix.
pub(crate) fn check_token_ids(model: &dyn CausalLm, tokens: &[u32]) -> Result<()> {
    crate::model::check_vocab(tokens, model.config().vocab_size)
}

/// Runs the prompt except its last token through `model` in chunks of `chunk`, evaluating the
/// cache after each chunk; returns the tokens still to process (at least one).
fn prefill<'a>(
    model: &dyn CausalLm,
    cache: &mut KvCache,
    prompt: &'a [u32],
    chunk: usize,
) -> Result<&'a [u32]> {
    let mut rest = prompt;
    while rest.len() > 1 {
        let n = chunk.min(rest.len() - 1);
        model.forward(&input_ids(&rest[..n])?, cache)?;
        eval(&cache.state())?;
        memory::clear_cache()?;
        rest = &rest[n..];
    }
    Ok(rest)
}

/// The last `n` entries of a 1-D array.
fn last_n(tokens: &Array, n: usize) -> Result<Array> {
    let len = tokens.size();
    Ok(if len > n {
        tokens.slice(s![(len - n) as i32..])?
    } else {
        tokens.clone()
    })
}

/// The generation loop over a bare [`CausalLm`] (what [`MlxEngine::generate`] runs, on the
/// engine's stream): prefill in chunks of `prefill_chunk`, then decode until a token of `eos`
/// or `params.stop_token_ids` (not passed to `on_token`), `params.max_tokens`, or `on_token`
/// returning `Ok(false)`.
///
/// Errors: an empty prompt, a token id outside the vocabulary or a zero chunk
/// ([`Error::InvalidArgument`]), invalid sampling
/// parameters, `prompt.len() + max_tokens > context_length` ([`Error::ContextOverflow`]).
pub fn generate_tokens(
    model: &dyn CausalLm,
    prompt: &[u32],
    params: &GenerateParams,
    eos: &[u32],
    context_length: usize,
    prefill_chunk: usize,
    on_token: &mut dyn FnMut(u32) -> Result<bool>,
) -> Result<GenerationStats> {
    let limits = GenerationLimits {
        eos,
        context_length,
        prefill_chunk,
    };
    generate_tokens_reusing(model, None, prompt, params, &limits, on_token)
}

/// The stop ids and sizes [`generate_tokens_reusing`] runs under.
#[derive(Debug, Clone, Copy)]
pub struct GenerationLimits<'a> {
    /// Ids that end generation.
    pub eos: &'a [u32],
    /// Prompt plus new tokens at most.
    pub context_length: usize,
    /// Prompt tokens per forward pass.
    pub prefill_chunk: usize,
}

/// [`generate_tokens`] with a [`PrefixCache`]: the prompt's longest stored prefix is not
/// prefilled again, and the KV state of the prompt and the tokens fed after it is stored at
/// the end (the next turn of a chat then prefills only its new tokens). Same errors.
pub fn generate_tokens_reusing(
    model: &dyn CausalLm,
    mut prefix: Option<&mut PrefixCache>,
    prompt: &[u32],
    params: &GenerateParams,
    limits: &GenerationLimits<'_>,
    on_token: &mut dyn FnMut(u32) -> Result<bool>,
) -> Result<GenerationStats> {
    let GenerationLimits {
        eos,
        context_length,
        prefill_chunk,
    } = *limits;
    let mut sampler = Sampler::new(&params.sampling)?;
    let mut stats =
        GenerationStats::begin(prompt, params, model.config().vocab_size, context_length)?;
    if prefill_chunk == 0 {
        return Err(Error::InvalidArgument(
            "the prefill chunk must be positive".into(),
        ));
    }
    if params.max_tokens == 0 {
        return Ok(stats);
    }
    memory::reset_peak_memory()?;
    let mut clock = GenerationClock::start();

    let context = params.sampling.repetition_context_size;
    let penalize = params.sampling.uses_repetition_penalty();
    let mut recent = if penalize {
        let tail = &prompt[prompt.len().saturating_sub(context)..];
        Some(Array::from_slice(tail, &[tail.len() as i32])?)
    } else {
        None
    };

    let (cached, mut cache) = match prefix.as_deref_mut() {
        Some(store) => store.lookup(prompt)?,
        None => None,
    }
    .unwrap_or_else(|| (0, model.new_cache()));
    stats.cached_tokens = cached;
    let rest = prefill(model, &mut cache, &prompt[cached..], prefill_chunk)?;
    // The tokens whose keys and values the cache holds: the prompt, then each generated
    // token that a later step fed back.
    let mut fed = prompt.to_vec();
    let mut fed_generated = 0usize;

    // One decode step: logits of the last position → next token id, `[1]` uint32 (lazy).
    let mut step =
        |input: &Array, cache: &mut KvCache, recent: &mut Option<Array>| -> Result<Array> {
            let logits = model.forward(input, cache)?;
            let last = logits.slice(s![.., -1, ..])?;
            let token = sampler.sample(&last, recent.as_ref())?;
            if let Some(r) = recent.as_mut() {
                *r = last_n(&concatenate(&[&*r, &token.astype(r.dtype())?], 0)?, context)?;
            }
            Ok(token)
        };

    let mut y = step(&input_ids(rest)?, &mut cache, &mut recent)?;
    async_eval(&[&y])?;
    loop {
        // Build and launch the next step before blocking on this one.
        let next = if stats.generation_tokens + 1 < params.max_tokens {
            let input = y.reshape(&[1, 1])?.astype(Dtype::Int32)?;
            let next = step(&input, &mut cache, &mut recent)?;
            async_eval(&[&next])?;
            fed_generated += 1;
            Some(next)
        } else {
            None
        };
        let token = y.item::<u32>()?;
        if fed.len() < prompt.len() + fed_generated {
            fed.push(token);
        }
        clock.token(&mut stats, prompt.len() - cached);
        if let Some(reason) = stop_reason(token, eos, params, on_token)? {
            stats.finish_reason = reason;
            break;
        }
        match next {
            Some(next) => y = next,
            None => {
                stats.finish_reason = FinishReason::Length;
                break;
            }
        }
        if stats.generation_tokens.is_multiple_of(CLEAR_CACHE_EVERY) {
            memory::clear_cache()?;
        }
    }
    stats.peak_memory_mb = memory::peak_memory()? as f64 / 1e6;
    if let Some(store) = prefix {
        if cache.offset() as usize == fed.len() {
            // A failed insert only loses the reuse.
            store.insert(fed, cache)?;
        }
    }
    Ok(stats)
}

/// `log p(tokens[i + 1] | tokens[..=i])` for `i` in `0..tokens.len() - 1` from an empty cache,
/// running at most `chunk` tokens per forward pass (log-softmax in float32).
///
/// Errors: a zero chunk, or more tokens than `context_length` ([`Error::ContextOverflow`]).
pub fn score_tokens(
    model: &dyn CausalLm,
    tokens: &[u32],
    context_length: usize,
    chunk: usize,
) -> Result<Vec<f32>> {
    if chunk == 0 {
        return Err(Error::InvalidArgument(
            "the scoring chunk must be positive".into(),
        ));
    }
    if tokens.len() > context_length {
        return Err(Error::ContextOverflow {
            prompt: tokens.len(),
            requested: 0,
            context: context_length,
        });
    }
    check_token_ids(model, tokens)?;
    let n = tokens.len();
    let mut out = Vec::with_capacity(n.saturating_sub(1));
    let mut cache = model.new_cache();
    let mut start = 0;
    // Positions start..end are run; those with a next token (< n - 1) are scored.
    while start + 1 < n {
        let end = (start + chunk).min(n - 1);
        let logits = model.forward(&input_ids(&tokens[start..end])?, &mut cache)?;
        let logits = logits.astype(Dtype::Float32)?;
        let lse = logits.logsumexp(-1, true)?;
        let m = (end - start) as i32;
        let targets: Vec<i32> = tokens[start + 1..=end].iter().map(|&t| t as i32).collect();
        let targets = Array::from_slice(&targets, &[1, m, 1])?;
        let picked = logits.take_along_axis(&targets, -1)?.subtract(&lse)?;
        out.extend(picked.reshape(&[-1])?.to_vec::<f32>()?);
        eval(&cache.state())?;
        start = end;
    }
    Ok(out)
}

/// A model on MLX: forward pass, tokenizer, stop ids and context length, with its own stream.
pub struct MlxEngine {
    model: Box<dyn CausalLm>,
    tokenizer: Tokenizer,
    eos_token_ids: Vec<u32>,
    context_length: usize,
    stream: Stream,
    prefill_chunk: usize,
    description: String,
    prefix: Option<PrefixCache>,
    /// MLX's active memory once the model was loaded (its weights), and the KV cache dtype:
    /// what [`LanguageModel::decode_bytes_per_token`] counts.
    footprint: Option<(u64, Dtype)>,
}

impl std::fmt::Debug for MlxEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlxEngine")
            .field("description", &self.description)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("context_length", &self.context_length)
            .field("prefill_chunk", &self.prefill_chunk)
            .finish_non_exhaustive()
    }
}

impl MlxEngine {
    /// An engine over `model` whose work runs on a new stream of `device`.
    pub fn new(
        model: Box<dyn CausalLm>,
        tokenizer: Tokenizer,
        eos_token_ids: Vec<u32>,
        context_length: usize,
        device: Device,
    ) -> Result<MlxEngine> {
        let config = model.config();
        let description = format!(
            "mlx {} {} {}L",
            device.device_type_name(),
            config.model_type,
            config.num_hidden_layers
        );
        Ok(MlxEngine {
            stream: Stream::new(device)?,
            model,
            tokenizer,
            eos_token_ids,
            context_length,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            description,
            prefix: None,
            footprint: None,
        })
    }

    /// An engine over a checkpoint loaded with `options` (whose device it runs on). The
    /// context length is the config's (no limit when the config names none).
    pub fn from_loaded(loaded: LoadedModel, options: &LoadOptions) -> Result<MlxEngine> {
        let context = loaded.config.context_length().unwrap_or(usize::MAX);
        let kv_dtype = loaded.kv_cache_dtype;
        let model =
            super::vocab_limit::VocabLimited::wrap(loaded.model, loaded.tokenizer.vocab_size());
        let mut engine = MlxEngine::new(
            model,
            loaded.tokenizer,
            loaded.eos_token_ids,
            context,
            options.device,
        )?;
        let kv = if kv_dtype == options.compute_dtype() {
            String::new()
        } else {
            format!(" (KV cache {kv_dtype})")
        };
        engine.description = format!(
            "mlx {} {}{kv} {} {}L ({})",
            options.device.device_type_name(),
            options.compute_dtype(),
            loaded.config.model_type,
            loaded.config.num_hidden_layers,
            loaded.source
        );
        let weights = (memory::active_memory()? as u64).saturating_sub(loaded.lookup_table_bytes);
        engine.footprint = Some((weights, kv_dtype));
        Ok(engine)
    }

    /// Sets the prefill chunk (tokens per forward pass over the prompt); must be positive.
    pub fn set_prefill_chunk(&mut self, chunk: usize) -> Result<()> {
        if chunk == 0 {
            return Err(Error::InvalidArgument(
                "the prefill chunk must be positive".into(),
            ));
        }
        self.prefill_chunk = chunk;
        Ok(())
    }

    /// Replaces the ids that end generation (an empty list makes benchmarks run to
    /// `max_tokens`).
    pub fn set_eos_token_ids(&mut self, ids: Vec<u32>) {
        self.eos_token_ids = ids;
    }

    /// Keeps the KV state of past calls for reuse, up to `bytes` (0, the default, keeps none):
    /// a chat's next turn then prefills only what it adds to the last one. Off by default so
    /// that repeated benchmark runs measure a full prefill. Replacing the budget drops what
    /// was kept.
    pub fn set_prefix_cache_bytes(&mut self, bytes: usize) {
        self.prefix = (bytes > 0).then(|| PrefixCache::new(bytes));
    }

    /// The prefix cache's counters, when it is on.
    pub fn prefix_cache_stats(&self) -> Option<crate::runtime::prefix_cache::PrefixCacheStats> {
        self.prefix.as_ref().map(PrefixCache::stats)
    }

    /// The engine's model as a continuous-batching [`Scheduler`] (same stop ids and context
    /// length; its work runs on the default stream of the thread that steps it), and the
    /// tokenizer.
    pub fn into_scheduler(self, options: SchedulerOptions) -> (Scheduler, Tokenizer) {
        let scheduler =
            Scheduler::new(self.model, self.eos_token_ids, self.context_length, options);
        (scheduler, self.tokenizer)
    }

    /// The forward pass.
    pub fn model(&self) -> &dyn CausalLm {
        self.model.as_ref()
    }
}

impl LanguageModel for MlxEngine {
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

    fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<GenerationStats> {
        let model = self.model.as_ref();
        let limits = GenerationLimits {
            eos: &self.eos_token_ids,
            context_length: self.context_length,
            prefill_chunk: self.prefill_chunk,
        };
        let prefix = self.prefix.as_mut();
        with_stream(&self.stream, || {
            let stats = generate_tokens_reusing(model, prefix, prompt, params, &limits, on_token);
            self.stream.synchronize()?;
            stats
        })
    }

    fn set_eos_token_ids(&mut self, ids: Vec<u32>) {
        MlxEngine::set_eos_token_ids(self, ids);
    }

    /// MLX's active memory right after loading (the weights as the kernels read them: every
    /// buffer the model holds) less the embedding tables a step reads one row of
    /// ([`LoadedModel::lookup_table_bytes`]), plus the KV cache up to `depth` in the dtype it
    /// stores ([`LoadOptions::resolved_kv_cache_dtype`]). `None` for an engine
    /// not built by [`MlxEngine::from_loaded`].
    fn decode_bytes_per_token(&self, depth: usize) -> Option<u64> {
        let (weights, dtype) = self.footprint?;
        let kv = crate::load::budget::kv_cache_bytes(self.model.config(), depth, dtype);
        Some(weights.saturating_add(kv))
    }

    fn token_log_probs(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let (model, context, chunk) =
            (self.model.as_ref(), self.context_length, self.prefill_chunk);
        with_stream(&self.stream, || score_tokens(model, tokens, context, chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::runtime::sample::SamplingParams;
    use std::sync::Mutex;

    const VOCAB: i32 = 16;

    /// A fake model: after token t it predicts t + 1 (mod 16) with logit 10, all others 0.
    /// It records (cache offset, chunk length) of every forward call.
    struct Counter {
        config: ModelConfig,
        calls: Mutex<Vec<(i32, i32)>>,
    }

    impl Counter {
        fn new() -> Counter {
            let config = ModelConfig::from_json(
                r#"{"model_type":"fake","hidden_size":8,"num_hidden_layers":1,
                   "intermediate_size":8,"num_attention_heads":1,"vocab_size":16}"#,
            )
            .unwrap();
            Counter {
                config,
                calls: Mutex::new(Vec::new()),
            }
        }
    }

    impl CausalLm for Counter {
        fn forward(&self, tokens: &Array, cache: &mut KvCache) -> Result<Array> {
            let len = tokens.shape()[1];
            self.calls.lock().unwrap().push((cache.offset(), len));
            let kv = Array::zeros(&[1, 1, len, 2], Dtype::Float32)?;
            cache.layer_mut(0)?.update_and_fetch(&kv, &kv)?;
            let next = tokens
                .add(&Array::scalar(1i32))?
                .remainder(&Array::scalar(VOCAB))?;
            let vocab = Array::arange(0.0, VOCAB as f64, 1.0, Dtype::Int32)?;
            let hit = next.expand_dims(&[-1])?.equal(&vocab)?;
            Ok(hit
                .astype(Dtype::Float32)?
                .multiply(&Array::scalar(10.0f32))?)
        }

        fn config(&self) -> &ModelConfig {
            &self.config
        }
    }

    fn run(
        model: &Counter,
        prompt: &[u32],
        max_tokens: usize,
        chunk: usize,
    ) -> (Vec<u32>, Result<GenerationStats>) {
        let params = GenerateParams {
            max_tokens,
            ..GenerateParams::default()
        };
        let mut out = Vec::new();
        let stats = generate_tokens(model, prompt, &params, &[7], 1000, chunk, &mut |t| {
            out.push(t);
            Ok(true)
        });
        (out, stats)
    }

    #[test]
    fn stops_on_eos_without_emitting_it() {
        let model = Counter::new();
        let (out, stats) = run(&model, &[1, 2, 3], 100, 512);
        let stats = stats.unwrap();
        assert_eq!(out, vec![4, 5, 6]);
        assert_eq!(stats.finish_reason, FinishReason::Stop);
        assert_eq!((stats.prompt_tokens, stats.generation_tokens), (3, 4));
    }

    #[test]
    fn stops_at_max_tokens() {
        let model = Counter::new();
        let (out, stats) = run(&model, &[8], 3, 512);
        assert_eq!(out, vec![9, 10, 11]);
        assert_eq!(stats.unwrap().finish_reason, FinishReason::Length);
    }

    #[test]
    fn a_second_turn_prefills_only_what_it_adds() {
        let model = Counter::new();
        let mut store = PrefixCache::new(1 << 20);
        let params = GenerateParams {
            max_tokens: 3,
            ..GenerateParams::default()
        };
        let limits = GenerationLimits {
            eos: &[7],
            context_length: 1000,
            prefill_chunk: 512,
        };
        let mut turn = |prompt: &[u32]| {
            let mut out = Vec::new();
            let stats = generate_tokens_reusing(
                &model,
                Some(&mut store),
                prompt,
                &params,
                &limits,
                &mut |t| {
                    out.push(t);
                    Ok(true)
                },
            )
            .unwrap();
            (out, stats)
        };
        let (out, stats) = turn(&[1, 2, 3]);
        assert_eq!((out, stats.cached_tokens), (vec![4, 5, 6], 0));
        // Turn 1 fed 1, 2, 3 (prompt), 4, 5 (the third token was never fed back).
        let (out, stats) = turn(&[1, 2, 3, 4, 5, 6, 9, 10]);
        assert_eq!((out, stats.cached_tokens), (vec![11, 12, 13], 5));
        let calls = model.calls.lock().unwrap().clone();
        // Turn 2 starts at offset 5: 6, 9 prefilled, then 10, then two decode steps.
        assert_eq!(calls[4..], [(5, 2), (7, 1), (8, 1), (9, 1)]);
        // Without a store, nothing is reused.
        let (_, stats) = run(&model, &[1, 2, 3, 4, 5, 6, 9, 10], 3, 512);
        assert_eq!(stats.unwrap().cached_tokens, 0);
    }

    #[test]
    fn prefill_runs_in_chunks_then_one_token_steps() {
        let model = Counter::new();
        let prompt: Vec<u32> = (0..11).map(|i| (i % 5) as u32 + 8).collect(); // ends with 8
        let (out, _) = run(&model, &prompt, 2, 4);
        assert_eq!(out, vec![9, 10]);
        // 11 tokens, chunk 4: 4 + 4 + 2 prefilled, the last prompt token, then one decode step
        // for the second token (the step after it is not built: max_tokens reached).
        let calls = model.calls.lock().unwrap().clone();
        assert_eq!(calls, vec![(0, 4), (4, 4), (8, 2), (10, 1), (11, 1)]);
    }

    #[test]
    fn callback_can_stop() {
        let model = Counter::new();
        let params = GenerateParams {
            max_tokens: 10,
            ..GenerateParams::default()
        };
        let mut seen = Vec::new();
        let stats = generate_tokens(&model, &[1], &params, &[], 1000, 512, &mut |t| {
            seen.push(t);
            Ok(seen.len() < 2)
        })
        .unwrap();
        assert_eq!(seen, vec![2, 3]);
        assert_eq!(stats.finish_reason, FinishReason::Callback);
    }

    #[test]
    fn bad_requests_are_errors() {
        let model = Counter::new();
        let params = GenerateParams {
            max_tokens: 10,
            ..GenerateParams::default()
        };
        let mut sink = |_| Ok(true);
        let overflow = generate_tokens(&model, &[1; 8], &params, &[], 17, 512, &mut sink);
        assert!(matches!(
            overflow,
            Err(Error::ContextOverflow {
                prompt: 8,
                requested: 10,
                context: 17
            })
        ));
        assert!(generate_tokens(&model, &[], &params, &[], 100, 512, &mut sink).is_err());
        let vocab = model.config().vocab_size as u32;
        assert!(matches!(
            generate_tokens(&model, &[1, vocab], &params, &[], 100, 512, &mut sink),
            Err(Error::InvalidArgument(m)) if m.contains("vocabulary")
        ));
        assert!(matches!(
            score_tokens(&model, &[vocab + 7, 1], 100, 512),
            Err(Error::InvalidArgument(_))
        ));
        let bad = GenerateParams {
            sampling: SamplingParams {
                temperature: -1.0,
                ..SamplingParams::default()
            },
            ..params
        };
        assert!(matches!(
            generate_tokens(&model, &[1], &bad, &[], 100, 512, &mut sink),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            score_tokens(&model, &[1; 5], 4, 512),
            Err(Error::ContextOverflow { .. })
        ));
    }

    #[test]
    fn scores_match_hand_computation_across_chunks() {
        let model = Counter::new();
        // ln(e^10 + 15): the normaliser of one hit (logit 10) and 15 misses (logit 0).
        let z = (10f64.exp() + 15.0).ln();
        let (hit, miss) = ((10.0 - z) as f32, (-z) as f32);
        let lp = score_tokens(&model, &[1, 2, 5, 6, 7], 100, 2).unwrap();
        let expected = [hit, miss, hit, hit];
        assert_eq!(lp.len(), 4);
        for (a, b) in lp.iter().zip(expected) {
            assert!((a - b).abs() < 1e-4, "{lp:?} vs {expected:?}");
        }
        assert_eq!(model.calls.lock().unwrap().clone(), vec![(0, 2), (2, 2)]);
        assert!(score_tokens(&model, &[3], 100, 2).unwrap().is_empty());
    }
}
