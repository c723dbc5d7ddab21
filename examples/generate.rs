//! One completion: raw text (or a chat turn with `--chat`), then the statistics line.
//!
//! ```text
//! cargo run --release --example generate -- --model <id|dir|file.gguf> --prompt "The capital of France is" --greedy
//! cargo run --release --features ggml-baseline --example generate -- --backend ggml --model <file.gguf> --prompt "..."
//! ```

#[path = "cli/mod.rs"]
mod cli;

use clap::Parser;
use cli::{CliResult, ModelArgs, SamplingArgs};
use mlx_models::runtime::generate::generate_text;
use mlx_models::text::ChatMessage;
use std::io::Write;
use std::process::ExitCode;

/// Generate a completion.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message in the chat template.
    #[arg(long)]
    chat: bool,
    /// System prompt (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Greedy decoding (overrides --temp).
    #[arg(long)]
    greedy: bool,
}

fn run(cli: Cli) -> CliResult {
    let mut params = cli.sampling.params()?;
    if cli.greedy {
        params.sampling.temperature = 0.0;
    }
    let mut engine = cli.model.load_model()?;
    let ids = if cli.chat {
        let mut messages: Vec<ChatMessage> = cli
            .system
            .iter()
            .map(|s| ChatMessage::new("system", s.clone()))
            .collect();
        messages.push(ChatMessage::new("user", cli.prompt.clone()));
        engine.tokenizer().apply_chat_template(&messages, true)?
    } else {
        engine.tokenizer().encode(&cli.prompt, true)?
    };
    // Under a distributed launch every rank generates the same text; rank 0 prints it.
    let primary = cli.model.primary()?;
    let mut stdout = std::io::stdout();
    let stats = generate_text(
        engine.as_mut(),
        &ids,
        &params,
        &cli.sampling.stop,
        &mut |text| {
            if primary {
                print!("{text}");
                let _ = stdout.flush();
            }
        },
    )?;
    if primary {
        println!();
        cli::print_stats(&stats);
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::main_with(run)
}
