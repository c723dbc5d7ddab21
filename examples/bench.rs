//! Prompt (prefill) and decode throughput and peak memory, as a Markdown table for
//! BENCHMARKS.md. End-of-sequence tokens are ignored so every run decodes `--gen-tokens`.
//!
//! ```text
//! cargo run --release --example bench -- --model <id|dir|file.gguf> --prompt-tokens 512 --gen-tokens 128 --repeats 3
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

fn main() -> ExitCode {
    cli::main_with(run)
}
