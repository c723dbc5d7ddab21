//! Flags and printing shared by the examples (`#[path = "cli/mod.rs"] mod cli;`).
#![allow(dead_code)] // each example uses a part

use clap::{Args, Parser, ValueEnum};
#[cfg(feature = "ggml-baseline")]
use mlx_models::cli::DeviceArg;
use mlx_models::cli::LoadArgs;
use mlx_models::load::{load, LoadOptions};
use mlx_models::model::{GenerateParams, GenerationStats, LanguageModel};
use mlx_models::parallel::{self, Mode, Parallel};
use mlx_models::runtime::engine::MlxEngine;
use mlx_models::runtime::sample::SamplingParams;
use mlx_models::Error;
use mlx_rs::Device;
use std::process::ExitCode;

/// What the examples' `run` functions return.
pub type CliResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The model used when `--model` is not given.
pub const DEFAULT_MODEL: &str = "Qwen/Qwen2.5-0.5B-Instruct";

/// The engine that runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// This project's forward passes on MLX.
    Mlx,
    /// llama.cpp (ggml), the baseline: a local .gguf file; needs a build with
    /// `--features ggml-baseline`.
    Ggml,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Mlx => "mlx",
            Backend::Ggml => "ggml",
        })
    }
}

/// Which model, on which device.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Hugging Face repo id, local model folder, or .gguf file.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// The engine: mlx (this project), or ggml (llama.cpp, the baseline engine, on the same
    /// .gguf file with the same tokenizer and sampling).
    #[arg(long, value_enum, default_value_t = Backend::Mlx)]
    pub backend: Backend,
    /// Compute threads (MLX's native kernels and OpenBLAS, for MLX's f32 products; llama.cpp's
    /// prefill and decode); default: all the cores (OpenBLAS: OPENBLAS_NUM_THREADS if set).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// How to load the model.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Context length the memory budget counts the KV cache of (default: the model's,
    /// at most 8192).
    #[arg(long, value_name = "TOKENS")]
    pub budget_context: Option<usize>,
    /// Split every layer across the ranks of a distributed launch (`mlx-launch ... -- <this
    /// command>`): each rank holds a share of the heads, MLP columns and vocabulary.
    #[arg(long, conflicts_with = "pipeline")]
    pub tensor_parallel: bool,
    /// Split the layers across the ranks of a distributed launch: each rank holds a
    /// contiguous range of layers (and a share of the vocabulary).
    #[arg(long)]
    pub pipeline: bool,
    /// The distributed backend of --tensor-parallel / --pipeline: any, ring, mpi, nccl, jaccl.
    #[arg(long, value_name = "NAME", default_value = "any")]
    pub distributed_backend: String,
    /// With --tensor-parallel / --pipeline: how long the ranks may take to connect, and one
    /// step over the group may take (plus half a second per token of the step) before the
    /// rank gives up (a peer died or hangs).
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0)]
    pub step_timeout: f64,
}

impl ModelArgs {
    /// Loads the model into the engine `--backend` names.
    pub fn load_model(&self) -> CliResult<Box<dyn LanguageModel>> {
        match self.backend {
            Backend::Mlx => Ok(Box::new(self.load_engine()?)),
            Backend::Ggml => self.load_ggml(),
        }
    }

    /// The ggml baseline on `--model` (a local .gguf file).
    #[cfg(feature = "ggml-baseline")]
    fn load_ggml(&self) -> CliResult<Box<dyn LanguageModel>> {
        use mlx_models::baseline::ggml::{GgmlEngine, GgmlOptions};
        let mut refused = self.load.mlx_only_flags_given();
        if self.tensor_parallel {
            refused.push("--tensor-parallel");
        }
        if self.pipeline {
            refused.push("--pipeline");
        }
        if let Some(flag) = refused.first() {
            return Err(format!("{flag} applies to --backend mlx only").into());
        }
        let path = std::path::Path::new(&self.model);
        if !path.is_file() {
            return Err(format!(
                "--backend ggml runs a local .gguf file; {} is not one",
                self.model
            )
            .into());
        }
        let gpu = match self.load.device {
            Some(DeviceArg::Cpu) => false,
            Some(DeviceArg::Gpu) => true,
            None => Device::default_device()?.device_type() == mlx_rs::DeviceType::Gpu,
        };
        let options = GgmlOptions {
            threads: self.threads.map_or(0, usize::from),
            gpu_layers: if gpu { u32::MAX } else { 0 },
            ..GgmlOptions::default()
        };
        eprintln!("loading {} into llama.cpp ...", self.model);
        let started = std::time::Instant::now();
        let engine = GgmlEngine::load(path, options)?;
        eprintln!(
            "loaded {} in {:.1} s",
            engine.describe(),
            started.elapsed().as_secs_f64()
        );
        Ok(Box::new(engine))
    }

    /// Without the feature: the error that says how to build it.
    #[cfg(not(feature = "ggml-baseline"))]
    fn load_ggml(&self) -> CliResult<Box<dyn LanguageModel>> {
        Err(mlx_models::baseline::not_built().into())
    }

    /// The group of a distributed launch, when `--tensor-parallel` or `--pipeline` asks for
    /// one (`None`: run alone, also when the launch has one rank). Joining twice returns the
    /// same group.
    pub fn parallel(&self) -> CliResult<Option<Parallel>> {
        let mode = match (self.tensor_parallel, self.pipeline) {
            (true, _) => Mode::Tensor,
            (_, true) => Mode::Pipeline,
            _ => return Ok(None),
        };
        if !(self.step_timeout.is_finite() && self.step_timeout > 0.0) {
            return Err(
                format!("--step-timeout must be positive, got {}", self.step_timeout).into(),
            );
        }
        let timeout = std::time::Duration::from_secs_f64(self.step_timeout);
        parallel::set_step_timeout(timeout);
        let backend: mlx_rs::distributed::Backend = self.distributed_backend.parse()?;
        let joined = parallel::join(
            mode,
            backend,
            timeout.max(parallel::DEFAULT_CONNECT_TIMEOUT),
        )?;
        if joined.is_none() {
            eprintln!("one rank in the group: running the whole model here");
        }
        Ok(joined)
    }

    /// Whether this process prints the results: alone, or rank 0 of a distributed launch
    /// (under `mpirun` every rank's stdout reaches the terminal; `mlx-launch` shows rank 0's).
    pub fn primary(&self) -> CliResult<bool> {
        Ok(self.parallel()?.is_none_or(|p| p.rank() == 0))
    }

    /// Loads the model into an [`MlxEngine`] (progress on stderr: two lines, and progress bars
    /// when stderr is a terminal).
    pub fn load_engine(&self) -> CliResult<MlxEngine> {
        if self.backend != Backend::Mlx {
            return Err(format!("this tool runs --backend mlx only, not {}", self.backend).into());
        }
        if let Some(threads) = self.threads {
            mlx_rs::quant::set_native_qmm_threads(usize::from(threads));
            // The prefill path's sgemm: as many threads, so the two never oversubscribe.
            mlx_rs::quant::set_blas_threads(usize::from(threads));
        }
        let options = LoadOptions {
            parallel: self.parallel()?,
            ..self.load.load_options(self.budget_context)?
        };
        Device::set_default(options.device)?;
        if let Some(p) = &options.parallel {
            eprintln!("{p}");
        }
        eprintln!("loading {} ...", self.model);
        let started = std::time::Instant::now();
        let mut loaded = load(&self.model, &options).map_err(with_local_model_hint)?;
        if let Some(path) = &self.load.chat_template {
            let template = mlx_models::text::ChatTemplate::from_file(path)?;
            loaded.tokenizer = loaded.tokenizer.with_chat_template(template);
        }
        let engine = MlxEngine::from_loaded(loaded, &options)?;
        eprintln!(
            "loaded {} in {:.1} s",
            engine.describe(),
            started.elapsed().as_secs_f64()
        );
        Ok(engine)
    }
}

/// The small model the test data holds (`scripts/fetch_test_data.sh`, run by the tests).
const TEST_MODEL: &str = "test-data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// A Hub error (no network, or offline with nothing cached) with, when the tests have fetched
/// their data in this checkout, the one flag that runs the example on that local model.
fn with_local_model_hint(e: mlx_models::Error) -> Box<dyn std::error::Error> {
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(TEST_MODEL);
    match e {
        mlx_models::Error::Hub(_) if local.is_file() => format!(
            "{e}\n  to run on the small model the tests fetched: --model {}",
            local.display()
        )
        .into(),
        other => other.into(),
    }
}

/// Sampling and length flags.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Maximum new tokens.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Temperature (0 = greedy).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub temp: f32,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep tokens with probability ≥ min_p × the top probability (0 = off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub min_p: f32,
    /// CTRL repetition penalty (1 = off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = 20)]
    pub repetition_context_size: usize,
    /// Seed of the sampler (default: MLX's global generator).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when this text appears (repeatable); the text is not printed.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// The generation parameters, validated.
    pub fn params(&self) -> Result<GenerateParams, Error> {
        let sampling = SamplingParams {
            temperature: self.temp,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            repetition_context_size: self.repetition_context_size,
            seed: self.seed,
        };
        sampling.validate()?;
        Ok(GenerateParams {
            max_tokens: self.max_tokens,
            sampling,
            stop_token_ids: Vec::new(),
        })
    }
}

/// Parses the command line; `--help` / `--version` print and exit 0, bad flags print the error
/// and exit 1.
pub fn parse<T: Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        let code = if e.use_stderr() { 1 } else { 0 };
        let _ = e.print();
        ExitCode::from(code)
    })
}

/// Runs an example's body: an error is printed and the exit code is 1.
pub fn main_with<T: Parser>(run: impl FnOnce(T) -> CliResult) -> ExitCode {
    // OpenBLAS's kernels for this CPU (the process may start again once).
    mlx_models::runtime::openblas::ensure_core_type();
    let args = match parse::<T>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The statistics line printed after each generation.
pub fn print_stats(stats: &GenerationStats) {
    println!("{stats}");
}
