//! `bench --backends mlx,ggml`: the engines side by side on one file, one prompt, one
//! thread count; the table for BENCHMARKS.md, as Markdown, JSON or an SVG chart.
//!
//! By default every engine runs in its own process, once per round, and the rounds
//! interleave the engines (mlx, ggml, mlx, ggml, ...), so that a drifting machine (a shared
//! VM) shifts both alike; `--same-process` loads all engines into this process instead (to
//! see whether their thread pools interfere). The read-bandwidth probe runs before and after
//! the rounds; the higher figure is the ceiling the decode rates are compared with.

use super::cli::{Backend, CliResult};
use super::machine::{read_bandwidth, Bandwidth, Machine, Pages};
use super::run::{EngineRun, RunFigures};
use serde::Serialize;
use std::process::Command;

/// One figure of a run (prefill or decode tokens/s).
type Figure = fn(&RunFigures) -> f64;

/// The two tests of a comparison, named as llama-bench names them, with their figure.
fn tests(prompt: usize, gen: usize) -> [(String, Figure); 2] {
    [
        (format!("prefill pp{prompt}"), |r| r.prompt_tps),
        (format!("decode tg{gen} @ d{prompt}"), |r| r.decode_tps),
    ]
}

/// Everything one comparison measured.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The model file or id.
    pub model: String,
    /// The CPU, its count and last-level cache.
    pub machine: Machine,
    /// Threads given to both engines (`None`: each engine's default, all cores).
    pub threads: Option<u16>,
    /// Whether all engines ran in one process.
    pub same_process: bool,
    /// Read-bandwidth probes (before and after the rounds, and on 2 MiB pages).
    pub bandwidth: Vec<Bandwidth>,
    /// One entry per engine, in the order asked for, with every round's runs.
    pub engines: Vec<EngineRun>,
}

impl Comparison {
    /// The read bandwidth the decode rates are compared with: the best default-page probe.
    pub fn ceiling(&self) -> Option<f64> {
        self.bandwidth
            .iter()
            .filter(|b| b.pages == Pages::Default)
            .map(|b| b.gb_per_s)
            .reduce(f64::max)
    }

    fn engine(&self, backend: Backend) -> Option<&EngineRun> {
        self.engines
            .iter()
            .find(|e| e.backend == backend.to_string())
    }

    /// The Markdown tables: throughput with the MLX / ggml ratio, then memory and bandwidth.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let first = &self.engines[0];
        let (p, g) = (first.prompt_tokens, first.gen_tokens);
        let name = std::path::Path::new(&self.model)
            .file_name()
            .map_or(self.model.clone(), |n| n.to_string_lossy().into_owned());
        out += &format!("### {name}\n\n");
        out += &format!(
            "Machine: {}. Threads: {}. Runs: {} per engine, {}.\n",
            self.machine,
            self.threads
                .map_or("all cores (each engine's default)".into(), |t| t
                    .to_string()),
            first.runs.len(),
            if self.same_process {
                "all engines in one process"
            } else {
                "one process per engine and round, rounds interleaved"
            }
        );
        for b in &self.bandwidth {
            out += &format!("Read bandwidth: {b}.\n");
        }
        out += "\n";
        let ratio = self.engine(Backend::Mlx).zip(self.engine(Backend::Ggml));
        out += "| test |";
        for e in &self.engines {
            out += &format!(" {} tok/s |", e.backend);
        }
        if ratio.is_some() {
            out += " mlx / ggml |";
        }
        out += "\n|---|";
        out += &"---:|".repeat(self.engines.len() + usize::from(ratio.is_some()));
        out += "\n";
        for (test, figure) in tests(p, g) {
            out += &format!("| {test} |");
            for e in &self.engines {
                out += &format!(" {:.1} |", e.mean(figure));
            }
            if let Some((mlx, ggml)) = ratio {
                out += &format!(" **{:.2}×** |", mlx.mean(figure) / ggml.mean(figure));
            }
            out += "\n";
        }
        out += "\n| engine | peak RSS, generation (MB) | engine's peak (MB) | bytes read per token (MB) | decode read rate (GB/s) | share of read bandwidth |\n";
        out += "|---|---:|---:|---:|---:|---:|\n";
        for e in &self.engines {
            let decode = e.mean(|r| r.decode_tps);
            let rate = e.bytes_per_token.map(|b| b as f64 * decode / 1e9);
            let share = rate.zip(self.ceiling()).map(|(r, c)| r / c * 100.0);
            out += &format!(
                "| {} | {} | {:.1} | {} | {} | {} |\n",
                e.backend,
                e.peak_rss_mb.map_or("–".into(), |m| format!("{m:.0}")),
                e.engine_peak_mb(),
                e.bytes_per_token
                    .map_or("–".into(), |b| format!("{:.1}", b as f64 / 1e6)),
                rate.map_or("–".into(), |r| format!("{r:.1}")),
                share.map_or("–".into(), |s| format!("{s:.0}%")),
            );
        }
        out += "\n";
        for e in &self.engines {
            out += &format!("- {}: {}\n", e.backend, e.description);
        }
        out
    }

    /// A bar chart of prefill and decode tokens/s per engine (two panels: their scales
    /// differ), as SVG.
    pub fn plot(&self, path: &std::path::Path) -> CliResult {
        use plotters::prelude::*;
        let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, 2));
        let first = &self.engines[0];
        let tests = tests(first.prompt_tokens, first.gen_tokens);
        let colors = [
            RGBColor(31, 119, 180),
            RGBColor(255, 127, 14),
            RGBColor(44, 160, 44),
        ];
        for (panel, (test, figure)) in panels.iter().zip(tests) {
            let title = format!("{test} (tok/s)");
            let values: Vec<f64> = self.engines.iter().map(|e| e.mean(figure)).collect();
            let top = values.iter().copied().fold(0.0, f64::max) * 1.15;
            let n = self.engines.len();
            let mut chart = ChartBuilder::on(panel)
                .caption(&title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(55)
                .build_cartesian_2d((0..n).into_segmented(), 0.0..top.max(1.0))?;
            let names: Vec<String> = self.engines.iter().map(|e| e.backend.clone()).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .light_line_style(WHITE)
                .x_label_formatter(&|x| match x {
                    SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .draw()?;
            chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
                let color = colors[i % colors.len()];
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), v),
                    ],
                    color.filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            }))?;
            chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
                Text::new(
                    format!("{v:.1}"),
                    (SegmentValue::CenterOf(i), v + top * 0.02),
                    ("sans-serif", 14),
                )
            }))?;
        }
        root.present()?;
        Ok(())
    }
}

/// What the children are told: the flags that select and size the work.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    /// `--model`, `--device`, `--threads`, and MLX's own flags, ready to pass on.
    pub model_flags: Vec<String>,
    /// MLX-only flags (`--dtype`, `--quantized`, ...), passed to MLX children only.
    pub mlx_flags: Vec<String>,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub gen_tokens: usize,
}

/// Runs `backend` once in a child process of this executable (`--json`), returning its
/// results.
pub fn run_child(backend: Backend, args: &ChildArgs, repeats: usize) -> CliResult<EngineRun> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .args(&args.model_flags)
        .args(["--backend", &backend.to_string()])
        .args(["--prompt-tokens", &args.prompt_tokens.to_string()])
        .args(["--gen-tokens", &args.gen_tokens.to_string()])
        .args(["--repeats", &repeats.to_string()])
        .args(["--bandwidth-mib", "0", "--json"]);
    if backend == Backend::Mlx {
        command.args(&args.mlx_flags);
    }
    let output = command.output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "the {backend} engine's process failed ({}): {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("the {backend} engine's process printed no result"))?;
    Ok(serde_json::from_str(line)?)
}

/// The probes around the rounds: default pages and 2 MiB pages before, default pages after.
pub fn probe(mib: usize, threads: usize, before: bool) -> Vec<Bandwidth> {
    if mib == 0 {
        return Vec::new();
    }
    let mut probes = vec![read_bandwidth(mib, 5, threads, Pages::Default)];
    if before {
        probes.push(read_bandwidth(mib, 5, threads, Pages::Huge));
    }
    probes
}
