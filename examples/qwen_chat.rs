//! Interactive, streaming, multi-turn chat with a model's chat template.
//!
//! ```text
//! cargo run --release --example qwen_chat -- --model Qwen/Qwen2.5-0.5B-Instruct --temp 0.7
//! cargo run --release --example qwen_chat -- --prompt "Why is the sky blue?"
//! cargo run --release --features ggml-baseline --example qwen_chat -- --backend ggml --model <file.gguf>
//! ```
//! Commands at the prompt: `/reset` forgets the conversation, `/quit` (or end of input) leaves.
//! Each turn reuses the KV state of the conversation so far (`--prefix-cache-mib`): the stats
//! line shows how many prompt tokens were cached.

#[path = "cli/mod.rs"]
mod cli;

use clap::Parser;
use cli::Backend;
use cli::{CliResult, ModelArgs, SamplingArgs};
use mlx_models::model::{GenerateParams, LanguageModel};
use mlx_models::runtime::generate::generate_text;
use mlx_models::text::input::{check_input, input_limit, read_line_bounded};
use mlx_models::text::ChatMessage;
use std::io::Write;
use std::process::ExitCode;

/// Chat with a model.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// One non-interactive turn with this message.
    #[arg(long)]
    prompt: Option<String>,
    /// Memory kept for reusing the conversation's KV state between turns, in MiB (each turn
    /// then prefills only its new tokens; 0 turns it off).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    prefix_cache_mib: usize,
}

/// Runs one turn: streams the reply to stdout, records it, prints the stats line.
/// (Under a distributed launch every rank runs the turn; only rank 0, `primary`, prints.)
fn turn(
    engine: &mut dyn LanguageModel,
    messages: &mut Vec<ChatMessage>,
    params: &GenerateParams,
    stops: &[String],
    primary: bool,
) -> CliResult {
    let ids = engine.tokenizer().apply_chat_template(messages, true)?;
    let mut reply = String::new();
    let mut stdout = std::io::stdout();
    let stats = generate_text(engine, &ids, params, stops, &mut |text| {
        reply.push_str(text);
        if primary {
            print!("{text}");
            let _ = stdout.flush();
        }
    })?;
    if primary {
        println!();
        cli::print_stats(&stats);
    }
    messages.push(ChatMessage::new("assistant", reply));
    Ok(())
}

fn run(cli: Cli) -> CliResult {
    let params = cli.sampling.params()?;
    let mut engine: Box<dyn LanguageModel> = match cli.model.backend {
        Backend::Mlx => {
            let mut engine = cli.model.load_engine()?;
            engine.set_prefix_cache_bytes(cli.prefix_cache_mib.saturating_mul(1 << 20));
            Box::new(engine)
        }
        // llama.cpp starts every turn from an empty context (no prefix reuse).
        Backend::Ggml => cli.model.load_model()?,
    };
    if engine.tokenizer().chat_template().is_none() {
        return Err(
            "the model has no chat template (a base model's checkpoint carries none): \
                    pass --chat-template FILE (examples/templates/base-model-qa.jinja suits base \
                    models, with --stop \"Question:\")"
                .into(),
        );
    }
    // Input is bounded before it is kept or tokenized: a line longer than this cannot fit
    // in the context.
    let limit = input_limit(engine.context_length());
    for text in [&cli.system, &cli.prompt].into_iter().flatten() {
        check_input(text, limit)?;
    }
    let base: Vec<ChatMessage> = cli
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s.clone()))
        .collect();
    let mut messages = base.clone();
    if let Some(prompt) = &cli.prompt {
        messages.push(ChatMessage::new("user", prompt.clone()));
        let primary = cli.model.primary()?;
        return turn(
            engine.as_mut(),
            &mut messages,
            &params,
            &cli.sampling.stop,
            primary,
        );
    }
    // Under --tensor-parallel / --pipeline every rank runs this loop: rank 0 reads the input
    // and shares each line with the others, so all of them run the same turns.
    let group = cli.model.parallel()?.map(|p| p.group().clone());
    let reads_input = group.as_ref().is_none_or(|g| g.rank() == 0);
    if reads_input {
        eprintln!("type a message; /reset forgets the conversation, /quit leaves");
    }
    let mut stdin = std::io::stdin().lock();
    loop {
        let line = if reads_input {
            print!(">> ");
            std::io::stdout().flush()?;
            match read_line_bounded(&mut stdin, limit) {
                Ok(line) => line,
                Err(e) => {
                    eprintln!("error: {e}");
                    continue;
                }
            }
        } else {
            None
        };
        let line = match &group {
            Some(g) => mlx_models::parallel::broadcast_text(g, line.as_deref())?,
            None => line,
        };
        let Some(line) = line else { break };
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                messages = base.clone();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", line));
        if let Err(e) = turn(
            engine.as_mut(),
            &mut messages,
            &params,
            &cli.sampling.stop,
            reads_input,
        ) {
            // Keep the session: drop the turn that failed (e.g. the context is full).
            messages.pop();
            eprintln!("error: {e}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::main_with(run)
}
