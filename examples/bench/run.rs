//! One engine's measurements: warm-up, then `repeats` generations of `gen` tokens after the
//! same prompt, with the engine's statistics and the process's memory.

use super::cli::CliResult;
use mlx_models::model::{GenerateParams, GenerationStats, LanguageModel};
use mlx_models::runtime::rss;
use serde::{Deserialize, Serialize};

/// English text repeated until it tokenizes to at least `n` tokens, cut to `n` (BOS kept
/// when the tokenizer adds one). Every engine gets these ids from our tokenizer.
pub fn prompt_ids(engine: &dyn LanguageModel, n: usize) -> CliResult<Vec<u32>> {
    const TEXT: &str = "The quick brown fox jumps over the lazy dog while the river runs \
        past the old mill, and the miller counts the sacks of flour before the market opens. ";
    let mut text = String::from(TEXT);
    loop {
        let ids = engine.tokenizer().encode(&text, true)?;
        if ids.len() >= n {
            return Ok(ids[..n].to_vec());
        }
        text.push_str(TEXT);
    }
}

/// One generation of `gen` tokens after `prompt` (stop ids must be cleared beforehand).
pub fn measure(
    engine: &mut dyn LanguageModel,
    prompt: &[u32],
    gen: usize,
) -> CliResult<GenerationStats> {
    let params = GenerateParams {
        max_tokens: gen,
        ..GenerateParams::default()
    };
    Ok(engine.generate(prompt, &params, &mut |_| Ok(true))?)
}

/// One measured generation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RunFigures {
    /// Prefill tokens per second.
    pub prompt_tps: f64,
    /// Decode tokens per second.
    pub decode_tps: f64,
    /// The engine's own peak memory figure (MLX: its allocator; ggml: resident set).
    pub engine_peak_mb: f64,
}

/// An engine's results: what `bench --json` prints, and what the comparison collects from
/// one child process per engine and round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineRun {
    /// `mlx` or `ggml`.
    pub backend: String,
    /// The engine's description (device, model, threads, build).
    pub description: String,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Generated tokens per run.
    pub gen_tokens: usize,
    /// The measured runs, in order.
    pub runs: Vec<RunFigures>,
    /// The process's peak resident set during the measured runs (the high-water mark is
    /// reset after the warm-up; it counts the weights' resident pages), in MB, where the OS
    /// can measure it (Linux).
    pub peak_rss_mb: Option<f64>,
    /// Bytes one decode step reads at the runs' mean depth, as the engine stores its
    /// weights and KV cache.
    pub bytes_per_token: Option<u64>,
}

impl EngineRun {
    /// Mean of a figure over the runs.
    pub fn mean(&self, f: impl Fn(&RunFigures) -> f64) -> f64 {
        self.runs.iter().map(f).sum::<f64>() / self.runs.len().max(1) as f64
    }

    /// The largest engine peak of the runs.
    pub fn engine_peak_mb(&self) -> f64 {
        self.runs
            .iter()
            .map(|r| r.engine_peak_mb)
            .fold(0.0, f64::max)
    }

    /// Appends `other`'s runs (the same engine in another round).
    pub fn merge(&mut self, other: EngineRun) {
        self.runs.extend(other.runs);
        self.peak_rss_mb = match (self.peak_rss_mb, other.peak_rss_mb) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A warm-up (32 prompt tokens, 8 generated), then `repeats` measured generations.
pub fn run_engine(
    backend: &str,
    engine: &mut dyn LanguageModel,
    prompt: &[u32],
    gen: usize,
    repeats: usize,
    mut each: impl FnMut(usize, &GenerationStats),
) -> CliResult<EngineRun> {
    engine.set_eos_token_ids(Vec::new());
    measure(engine, &prompt[..prompt.len().min(32)], 8.min(gen))?;
    let resettable = rss::reset_peak();
    let mut runs = Vec::new();
    for i in 0..repeats {
        let s = measure(engine, prompt, gen)?;
        each(i, &s);
        runs.push(RunFigures {
            prompt_tps: s.prompt_tps,
            decode_tps: s.generation_tps,
            engine_peak_mb: s.peak_memory_mb,
        });
    }
    Ok(EngineRun {
        backend: backend.to_string(),
        description: engine.describe(),
        prompt_tokens: prompt.len(),
        gen_tokens: gen,
        runs,
        peak_rss_mb: rss::peak_bytes()
            .filter(|_| resettable)
            .map(|b| b as f64 / 1e6),
        bytes_per_token: engine.decode_bytes_per_token(prompt.len() + gen / 2),
    })
}
