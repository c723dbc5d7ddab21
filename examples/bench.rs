//! Prompt (prefill) and decode throughput and peak memory, as a Markdown table for
//! BENCHMARKS.md. End-of-sequence tokens are ignored so every run decodes `--gen-tokens`.
//!
//! ```text
//! cargo run --release --example bench -- --model <id|dir|file.gguf> --prompt-tokens 512 --gen-tokens 128 --repeats 3
//! cargo run --release --example bench -- --model <...> --prompt-tokens 64 --gen-tokens 128 --streams 1,4,16
//! ```

#[path = "cli/mod.rs"]
mod cli;

use clap::Parser;
use cli::{CliResult, ModelArgs};
use mlx_models::model::{GenerateParams, GenerationStats, LanguageModel};
use mlx_models::runtime::engine::MlxEngine;
use std::process::ExitCode;

/// Benchmark prefill and decode.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Measured runs (after one short warm-up).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Instead of one generation: aggregate decode throughput of this many concurrent
    /// streams through the continuous-batching scheduler (comma-separated, e.g. `1,4,16`);
    /// each stream has its own prompt of `--prompt-tokens` tokens.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    streams: Vec<usize>,
}

/// English text repeated until it tokenizes to at least `n` tokens, cut to `n` (BOS kept
/// when the tokenizer adds one).
fn prompt_ids(engine: &MlxEngine, n: usize) -> CliResult<Vec<u32>> {
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

fn measure(engine: &mut MlxEngine, prompt: &[u32], gen: usize) -> CliResult<GenerationStats> {
    let params = GenerateParams {
        max_tokens: gen,
        ..GenerateParams::default()
    };
    Ok(engine.generate(prompt, &params, &mut |_| Ok(true))?)
}

fn run(cli: Cli) -> CliResult {
    if cli.prompt_tokens == 0 || cli.gen_tokens == 0 || cli.repeats == 0 {
        return Err("--prompt-tokens, --gen-tokens and --repeats must be positive".into());
    }
    let mut engine = cli.model.load_engine()?;
    engine.set_eos_token_ids(Vec::new());
    let prompt = prompt_ids(&engine, cli.prompt_tokens)?;
    if !cli.streams.is_empty() {
        return streams(engine, &cli, &prompt);
    }
    measure(&mut engine, &prompt[..prompt.len().min(32)], 8)?; // warm-up

    println!("{}", engine.describe());
    println!();
    println!("| run | prompt tokens | prompt tok/s | generated tokens | decode tok/s | peak memory (MB) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut all = Vec::new();
    for i in 0..cli.repeats {
        let s = measure(&mut engine, &prompt, cli.gen_tokens)?;
        println!(
            "| {} | {} | {:.1} | {} | {:.1} | {:.1} |",
            i + 1,
            s.prompt_tokens,
            s.prompt_tps,
            s.generation_tokens,
            s.generation_tps,
            s.peak_memory_mb
        );
        all.push(s);
    }
    let mean = |f: fn(&GenerationStats) -> f64| all.iter().map(f).sum::<f64>() / all.len() as f64;
    println!(
        "| mean | {} | {:.1} | {} | {:.1} | {:.1} |",
        cli.prompt_tokens,
        mean(|s| s.prompt_tps),
        cli.gen_tokens,
        mean(|s| s.generation_tps),
        all.iter().map(|s| s.peak_memory_mb).fold(0.0, f64::max)
    );
    Ok(())
}

/// Aggregate decode throughput of `cli.streams` concurrent streams (see [`Cli::streams`]):
/// every stream's prompt is prefilled first, then the clock runs over the decode steps only.
fn streams(engine: MlxEngine, cli: &Cli, prompt: &[u32]) -> CliResult {
    use mlx_models::runtime::scheduler::{SchedulerOptions, SequenceEvent, SequenceRequest};
    let most = cli.streams.iter().copied().max().unwrap_or(1);
    let description = engine.describe();
    let vocab = engine.tokenizer().vocab_size() as u32;
    let (mut scheduler, _) = engine.into_scheduler(SchedulerOptions {
        max_batch: most,
        max_waiting: most,
        prefix_cache_bytes: 0,
        ..SchedulerOptions::default()
    });
    let params = GenerateParams {
        max_tokens: cli.gen_tokens,
        ..GenerateParams::default()
    };
    // Stream i's prompt: the shared text with its first tokens shifted, so no two agree.
    let prompt_of = |i: usize| -> Vec<u32> {
        let mut p = prompt.to_vec();
        let first = usize::from(p.len() > 1);
        p[first] = (p[first] + 97 * i as u32) % vocab;
        p
    };
    let mut run = |n: usize| -> CliResult<(f64, f64)> {
        for i in 0..n {
            scheduler.submit(i as u64, SequenceRequest::new(prompt_of(i), params.clone()))?;
        }
        // Prefill everyone (each join also runs a decode step of those already running).
        let mut generated = 0usize;
        while scheduler.stats().waiting > 0 {
            for (_, e) in scheduler.step()? {
                if let SequenceEvent::Failed(e) = e {
                    return Err(e.into());
                }
            }
        }
        let started = std::time::Instant::now();
        while !scheduler.is_idle() {
            for (_, e) in scheduler.step()? {
                match e {
                    SequenceEvent::Token(_) => generated += 1,
                    SequenceEvent::Finished(_) => generated += 1,
                    SequenceEvent::Failed(e) => return Err(e.into()),
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        Ok((generated as f64 / secs, secs))
    };
    run(1)?; // warm-up
    println!("{description}");
    println!();
    println!("| streams | decode tok/s (all streams) | per stream | vs 1 stream |");
    println!("|---:|---:|---:|---:|");
    let mut single = None;
    for &n in &cli.streams {
        let mut best = 0.0f64;
        for _ in 0..cli.repeats {
            best = best.max(run(n)?.0);
        }
        let base = *single.get_or_insert(if n == 1 { best } else { f64::NAN });
        println!(
            "| {n} | {best:.1} | {:.1} | {:.2}× |",
            best / n as f64,
            best / base
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::main_with(run)
}
