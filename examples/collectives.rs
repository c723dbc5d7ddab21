//! Latency and bandwidth of MLX's collectives over the group a launcher set up: `all_sum` of
//! the sizes a decode step exchanges (one token's hidden state of SmolLM2, Llama 3 8B and
//! 70B), and of larger buffers; `all_gather` of a vocabulary share of logits; a neighbour
//! `send`/`recv` round trip. Every rank runs it; rank 0 prints a table (median of the
//! repeats) and, with `--json-file`, writes it.
//!
//! ```text
//! cargo build --release -p mlx-launch --example collectives
//! target/release/mlx-launch -n 2 -- target/release/examples/collectives --repeats 200
//! ```

#[path = "cli/mod.rs"]
mod cli;

use clap::Parser;
use cli::CliResult;
use mlx_rs::distributed::{Backend, Group};
use mlx_rs::{Array, Dtype};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Collective latency over a distributed launch.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Timed repeats per size (after 10 untimed ones).
    #[arg(long, default_value_t = 100)]
    repeats: usize,
    /// The distributed backend: any, ring, mpi, nccl, jaccl.
    #[arg(long, default_value = "any")]
    backend: String,
    /// Also write the table as JSON (rank 0).
    #[arg(long, value_name = "FILE")]
    json_file: Option<std::path::PathBuf>,
}

/// One measured case.
#[derive(Debug, serde::Serialize)]
struct Case {
    op: &'static str,
    what: String,
    bytes: usize,
    median_us: f64,
    /// Bytes of the buffer per second of median time.
    algbw_gbps: f64,
}

fn median(mut t: Vec<Duration>) -> Duration {
    t.sort();
    t[t.len() / 2]
}

fn time(repeats: usize, mut step: impl FnMut() -> mlx_rs::Result<()>) -> CliResult<Duration> {
    for _ in 0..10 {
        step()?;
    }
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        step()?;
        times.push(start.elapsed());
    }
    Ok(median(times))
}

fn case(op: &'static str, what: String, bytes: usize, t: Duration) -> Case {
    let s = t.as_secs_f64();
    Case {
        op,
        what,
        bytes,
        median_us: s * 1e6,
        algbw_gbps: bytes as f64 / s / 1e9,
    }
}

fn run(cli: Cli) -> CliResult {
    if cli.repeats == 0 {
        return Err("--repeats must be positive".into());
    }
    let backend: Backend = cli.backend.parse()?;
    let group = Group::init_with_timeout(backend, Duration::from_secs(60))?;
    let (rank, size) = (group.rank(), group.size());
    if size < 2 {
        return Err("one rank: start this under mlx-launch (e.g. -n 2)".into());
    }
    let mut cases = Vec::new();
    // all_sum of f32 buffers: a token's hidden state (576: SmolLM2-135M, 4096: Llama 3 8B,
    // 8192: Llama 3 70B), a 32-token prefill chunk of the 70B, and bulk sizes.
    let sizes: [(String, i32); 6] = [
        ("hidden 576 (SmolLM2, 1 token)".into(), 576),
        ("hidden 4096 (Llama 3 8B, 1 token)".into(), 4096),
        ("hidden 8192 (Llama 3 70B, 1 token)".into(), 8192),
        ("hidden 8192 x 32 tokens".into(), 8192 * 32),
        ("4 MiB".into(), 1 << 20),
        ("64 MiB".into(), 1 << 24),
    ];
    for (what, n) in sizes {
        let x = Array::ones(&[n], Dtype::Float32)?;
        x.eval()?;
        let t = time(cli.repeats, || group.all_sum(&x)?.eval())?;
        cases.push(case("all_sum", what, n as usize * 4, t));
    }
    // all_gather of each rank's share of a vocabulary's logits (one token).
    for (what, vocab) in [("SmolLM2 logits", 49152), ("Llama 3 logits", 128256)] {
        let share = (vocab + size - 1) / size;
        let x = Array::ones(&[1, share], Dtype::Float32)?;
        x.eval()?;
        let t = time(cli.repeats, || group.all_gather(&x)?.eval())?;
        cases.push(case(
            "all_gather",
            format!("{what} ({vocab} / {size})"),
            (share * size) as usize * 4,
            t,
        ));
    }
    // A round trip between rank 0 and rank 1 (a pipeline's hand-over, there and back).
    let x = Array::ones(&[8192], Dtype::Float32)?;
    x.eval()?;
    let t = time(cli.repeats, || {
        match rank {
            0 => {
                group.send(&x, 1)?.eval()?;
                group.recv_like(&x, 1)?.eval()?;
            }
            1 => {
                let y = group.recv_like(&x, 0)?;
                y.eval()?;
                group.send(&y, 0)?.eval()?;
            }
            _ => {}
        }
        Ok(())
    })?;
    cases.push(case(
        "send+recv",
        "hidden 8192, rank 0 -> 1 -> 0".into(),
        8192 * 4,
        t,
    ));
    if rank == 0 {
        println!("{size} ranks, backend {backend}");
        println!(
            "{:<11} {:<38} {:>10} {:>12} {:>10}",
            "op", "buffer", "bytes", "median µs", "GB/s"
        );
        for c in &cases {
            println!(
                "{:<11} {:<38} {:>10} {:>12.1} {:>10.3}",
                c.op, c.what, c.bytes, c.median_us, c.algbw_gbps
            );
        }
        if let Some(path) = &cli.json_file {
            let json =
                serde_json::json!({ "ranks": size, "backend": backend.name(), "cases": cases });
            std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::main_with(run)
}
