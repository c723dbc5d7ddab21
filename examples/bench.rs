//! Prompt (prefill) and decode throughput and peak memory, as a Markdown table for
//! BENCHMARKS.md. End-of-sequence tokens are ignored so every run decodes `--gen-tokens`.
//!
//! ```text
//! cargo run --release --example bench -- --model <id|dir|file.gguf> --prompt-tokens 512 --gen-tokens 128 --repeats 3
//! cargo run --release --example bench -- --model <...> --prompt-tokens 64 --gen-tokens 128 --streams 1,4,16
//! cargo run --release --features ggml-baseline --example bench -- --model <file.gguf> --backends mlx,ggml --plot cmp.svg
//! ```
//!
//! `--backends mlx,ggml` compares this project's MLX engine with llama.cpp (ggml) on the same
//! file, prompt ids, greedy sampling, prompt chunking and thread count (see `bench/compare.rs`):
//! tokens/s and their ratio, peak resident memory, bytes read per decoded token and their share
//! of the read bandwidth the example measures itself. `--json` prints JSON instead.

#[path = "cli/mod.rs"]
mod cli;
#[path = "bench/compare.rs"]
mod compare;
#[path = "cli/machine.rs"]
mod machine;
#[path = "bench/run.rs"]
mod run;

use clap::Parser;
use cli::{Backend, CliResult, ModelArgs};
use mlx_models::model::{GenerateParams, LanguageModel};
use mlx_models::runtime::engine::MlxEngine;
use std::path::PathBuf;
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
    /// Measured runs (after one short warm-up); with --backends, interleaved rounds.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Instead of one generation: aggregate decode throughput of this many concurrent
    /// streams through the continuous-batching scheduler (comma-separated, e.g. `1,4,16`);
    /// each stream has its own prompt of `--prompt-tokens` tokens.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "N,...",
        conflicts_with = "backends"
    )]
    streams: Vec<usize>,
    /// Compare engines on the same file and prompt (e.g. `mlx,ggml`): one process per engine
    /// and round, rounds interleaved; prints the comparison table.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "BACKEND,...")]
    backends: Vec<Backend>,
    /// With --backends: run every engine in this process instead of one process each.
    #[arg(long, requires = "backends")]
    same_process: bool,
    /// Print the results as JSON (one object) instead of Markdown.
    #[arg(long)]
    json: bool,
    /// With --backends: also write the results as JSON into this file.
    #[arg(long, value_name = "FILE.json", requires = "backends")]
    json_file: Option<PathBuf>,
    /// With --backends: also draw the tokens/s as an SVG bar chart into this file.
    #[arg(long, value_name = "FILE.svg", requires = "backends")]
    plot: Option<PathBuf>,
    /// Size of the read-bandwidth probe in MiB (0: no probe).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    bandwidth_mib: usize,
}

fn run(cli: Cli) -> CliResult {
    if cli.prompt_tokens == 0 || cli.gen_tokens == 0 || cli.repeats == 0 {
        return Err("--prompt-tokens, --gen-tokens and --repeats must be positive".into());
    }
    if !cli.backends.is_empty() {
        return backends(&cli);
    }
    if !cli.streams.is_empty() {
        let engine = cli.model.load_engine()?;
        let prompt = run::prompt_ids(&engine, cli.prompt_tokens)?;
        return streams(engine, &cli, &prompt);
    }
    let mut engine = cli.model.load_model()?;
    let prompt = run::prompt_ids(engine.as_ref(), cli.prompt_tokens)?;
    // Under a distributed launch every rank runs the benchmark; rank 0 prints it.
    let primary = cli.model.primary()?;
    let quiet = cli.json || !primary;
    if !quiet {
        println!("{}", engine.describe());
        println!();
        println!("| run | prompt tokens | prompt tok/s | generated tokens | decode tok/s | peak memory (MB) |");
        println!("|---|---:|---:|---:|---:|---:|");
    }
    let result = run::run_engine(
        &cli.model.backend.to_string(),
        engine.as_mut(),
        &prompt,
        cli.gen_tokens,
        cli.repeats,
        |i, s| {
            if !quiet {
                println!(
                    "| {} | {} | {:.1} | {} | {:.1} | {:.1} |",
                    i + 1,
                    s.prompt_tokens,
                    s.prompt_tps,
                    s.generation_tokens,
                    s.generation_tps,
                    s.peak_memory_mb
                );
            }
        },
    )?;
    if !primary {
        return Ok(());
    }
    if cli.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "| mean | {} | {:.1} | {} | {:.1} | {:.1} |",
            cli.prompt_tokens,
            result.mean(|r| r.prompt_tps),
            cli.gen_tokens,
            result.mean(|r| r.decode_tps),
            result.engine_peak_mb()
        );
    }
    Ok(())
}

/// `--backends`: every engine on the same prompt, in interleaved rounds.
fn backends(cli: &Cli) -> CliResult {
    let mut order = Vec::new();
    for b in &cli.backends {
        if !order.contains(b) {
            order.push(*b);
        }
    }
    if order.contains(&Backend::Ggml) && !mlx_models::baseline::BASELINE_AVAILABLE {
        return Err(mlx_models::baseline::not_built().into());
    }
    let threads = cli
        .model
        .threads
        .map_or_else(|| machine::Machine::detect().cpus, usize::from);
    let mut bandwidth = compare::probe(cli.bandwidth_mib, threads, true);
    let mut engines: Vec<run::EngineRun> = Vec::new();
    if cli.same_process {
        let mut loaded = Vec::new();
        for &b in &order {
            let mut model = cli.model.clone();
            model.backend = b;
            loaded.push((b, model.load_model()?));
        }
        let prompt = run::prompt_ids(loaded[0].1.as_ref(), cli.prompt_tokens)?;
        for _ in 0..cli.repeats {
            for (b, engine) in &mut loaded {
                let r = run::run_engine(
                    &b.to_string(),
                    engine.as_mut(),
                    &prompt,
                    cli.gen_tokens,
                    1,
                    |_, _| {},
                )?;
                merge(&mut engines, r);
            }
        }
    } else {
        let args = child_args(cli);
        for round in 0..cli.repeats {
            for &b in &order {
                eprintln!("round {}/{}: {b}", round + 1, cli.repeats);
                merge(&mut engines, compare::run_child(b, &args, 1)?);
            }
        }
    }
    bandwidth.extend(compare::probe(cli.bandwidth_mib, threads, false));
    let comparison = compare::Comparison {
        model: cli.model.model.clone(),
        machine: machine::Machine::detect(),
        threads: cli.model.threads,
        same_process: cli.same_process,
        bandwidth,
        engines,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print!("{}", comparison.markdown());
    }
    if let Some(path) = &cli.json_file {
        std::fs::write(path, serde_json::to_string_pretty(&comparison)?)
            .map_err(|e| mlx_models::Error::io(path, e))?;
    }
    if let Some(path) = &cli.plot {
        comparison.plot(path)?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// Adds a round's result to its engine's entry (or a new entry).
fn merge(engines: &mut Vec<run::EngineRun>, r: run::EngineRun) {
    match engines.iter_mut().find(|e| e.backend == r.backend) {
        Some(e) => e.merge(r),
        None => engines.push(r),
    }
}

/// The flags a child process needs to load the same model the same way.
fn child_args(cli: &Cli) -> compare::ChildArgs {
    let m = &cli.model;
    let l = &m.load;
    let mut model_flags = vec!["--model".to_string(), m.model.clone()];
    if let Some(d) = l.device {
        model_flags.extend(["--device".into(), format!("{d:?}").to_lowercase()]);
    }
    if let Some(t) = m.threads {
        model_flags.extend(["--threads".into(), t.to_string()]);
    }
    let mut mlx_flags = Vec::new();
    if let Some(d) = l.dtype {
        mlx_flags.extend(["--dtype".into(), format!("{d:?}").to_lowercase()]);
    }
    if let Some(q) = l.quantized {
        mlx_flags.extend(["--quantized".into(), format!("{q:?}").to_lowercase()]);
    }
    if let Some(d) = l.kv_cache_dtype {
        mlx_flags.extend(["--kv-cache-dtype".into(), format!("{d:?}").to_lowercase()]);
    }
    if let Some(mib) = l.memory_budget {
        mlx_flags.extend(["--memory-budget".into(), mib.to_string()]);
    }
    for (on, flag) in [
        (l.no_memory_check, "--no-memory-check"),
        (l.no_huge_pages, "--no-huge-pages"),
        (l.no_gguf_blocks, "--no-gguf-blocks"),
    ] {
        if on {
            mlx_flags.push(flag.into());
        }
    }
    if let Some(c) = m.budget_context {
        mlx_flags.extend(["--budget-context".into(), c.to_string()]);
    }
    compare::ChildArgs {
        model_flags,
        mlx_flags,
        prompt_tokens: cli.prompt_tokens,
        gen_tokens: cli.gen_tokens,
    }
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
