//! Perplexity of a text file, computed as llama.cpp's `llama-perplexity` does (windows of
//! `--ctx` tokens, the second half of each window scored). The last line is
//! `perplexity: <value> over <count> tokens`.
//!
//! ```text
//! cargo run --release --example perplexity -- --model <id|dir|file.gguf> --file wiki.test.raw --ctx 512 --chunks 20
//! cargo run --release --features ggml-baseline --example perplexity -- --backend ggml --model <file.gguf> --file ...
//! ```

#[path = "cli/mod.rs"]
mod cli;

use clap::Parser;
use cli::{CliResult, ModelArgs};
use mlx_models::runtime::perplexity::perplexity;
use std::path::PathBuf;
use std::process::ExitCode;

/// Perplexity of a text under a model.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    model: ModelArgs,
    /// The text file (UTF-8).
    #[arg(long)]
    file: PathBuf,
    /// Window size in tokens.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Use only the first K windows.
    #[arg(long)]
    chunks: Option<usize>,
}

fn run(cli: Cli) -> CliResult {
    let text =
        std::fs::read_to_string(&cli.file).map_err(|e| mlx_models::Error::io(&cli.file, e))?;
    let mut engine = cli.model.load_model()?;
    let started = std::time::Instant::now();
    let (ppl, count) = perplexity(engine.as_mut(), &text, cli.ctx, cli.chunks)?;
    eprintln!("scored in {:.1} s", started.elapsed().as_secs_f64());
    if cli.model.primary()? {
        println!("perplexity: {ppl:.4} over {count} tokens");
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::main_with(run)
}
