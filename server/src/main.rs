//! `mlx-server --model <path or Hugging Face id>`: see the crate docs of `mlx_server`.

use clap::Parser;
use mlx_server::cli::ServerArgs;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    // OpenBLAS's kernels for this CPU (the process may start again once).
    mlx_models::runtime::openblas::ensure_core_type();
    let args = ServerArgs::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(args.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
