//! The `mlx-server` command line: flags, model loading, listening.

use crate::engine::{Engine, EngineConfig};
use crate::model::ServedModel;
use crate::state::AppState;
use clap::{Parser, ValueEnum};
use mlx_models::load::{LoadOptions, MemoryBudget};
use mlx_models::runtime::scheduler::SchedulerOptions;
use mlx_rs::{Device, Dtype};
use std::path::PathBuf;

/// Where MLX runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU (float32 by default).
    Cpu,
    /// The GPU (Metal or CUDA builds; bfloat16 by default).
    Gpu,
}

/// Compute dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// float32
    F32,
    /// float16
    F16,
    /// bfloat16
    Bf16,
}

/// What to do with quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantizedArg {
    /// Keep them quantized (quantized matmul).
    Keep,
    /// Dequantize them to the compute dtype at load.
    Dequantize,
}

/// OpenAI- and Ollama-compatible HTTP server for one MLX model.
#[derive(Debug, Clone, Parser)]
#[command(name = "mlx-server", version, about)]
pub struct ServerArgs {
    /// Hugging Face repo id, local model folder, or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer <KEY>` on every endpoint but /health.
    #[arg(long, env = "MLX_SERVER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model's id in listings and responses (default: derived from --model).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Another name requests may use for the model (repeatable).
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Context length served, prompt plus generated tokens of one request (default: the
    /// model's, at most 8192).
    #[arg(long, value_name = "TOKENS")]
    pub ctx_size: Option<usize>,
    /// Sequences decoded together at most.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Requests waiting at most; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_waiting: usize,
    /// Prompt tokens per prefill forward pass.
    #[arg(long, default_value_t = mlx_models::runtime::engine::DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    /// Memory for KV states kept for prefix reuse, in MiB (0 turns reuse off).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub prefix_cache_mib: usize,
    /// Device (default: MLX's default device).
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Compute dtype (default: float32 on the CPU, bfloat16 on a GPU).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Quantized checkpoints: keep the weights quantized, or dequantize them at load.
    #[arg(long, value_enum)]
    pub quantized: Option<QuantizedArg>,
    /// Memory the weights and KV cache may take, in MiB (default: what is available).
    #[arg(long, value_name = "MIB", conflicts_with = "no_memory_check")]
    pub memory_budget: Option<u64>,
    /// Skip the load-time memory check.
    #[arg(long)]
    pub no_memory_check: bool,
    /// Keep the weights off transparent huge pages (CPU only).
    #[arg(long)]
    pub no_huge_pages: bool,
    /// Convert a GGUF file's Q4_K / Q6_K matrices to MLX's affine layout instead of keeping
    /// them as stored (CPU only).
    #[arg(long)]
    pub no_gguf_blocks: bool,
    /// A Jinja chat template file to use instead of the model's.
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
}

/// A failure before the server listens.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The device is not in this MLX build.
    #[error("device {0} is not available in this MLX build")]
    Device(String),
    /// MLX failed.
    #[error(transparent)]
    Mlx(#[from] mlx_rs::Error),
    /// Loading the model failed.
    #[error(transparent)]
    Model(#[from] mlx_models::Error),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ServerArgs {
    /// The device the flags ask for, checked to exist.
    pub fn device(&self) -> Result<Device, StartError> {
        let device = match self.device {
            None => Device::default_device()?,
            Some(DeviceArg::Cpu) => Device::cpu(),
            Some(DeviceArg::Gpu) => Device::gpu(),
        };
        if !device.is_available() {
            return Err(StartError::Device(device.to_string()));
        }
        Ok(device)
    }

    /// The engine configuration the flags describe (with load progress bars when stderr is a
    /// terminal).
    pub fn engine_config(&self) -> Result<EngineConfig, StartError> {
        let load = LoadOptions {
            device: self.device()?,
            dtype: self.dtype.map(|d| match d {
                DtypeArg::F32 => Dtype::Float32,
                DtypeArg::F16 => Dtype::Float16,
                DtypeArg::Bf16 => Dtype::Bfloat16,
            }),
            keep_quantized: self.quantized.map(|q| q == QuantizedArg::Keep),
            memory_budget: MemoryBudget::from_flags(!self.no_memory_check, self.memory_budget),
            context_length: self.ctx_size,
            huge_pages: !self.no_huge_pages,
            gguf_blocks: !self.no_gguf_blocks,
            progress: mlx_models::load::terminal_progress(),
            parallel: None,
        };
        Ok(EngineConfig {
            model: self.model.clone(),
            load,
            scheduler: SchedulerOptions {
                max_batch: self.max_batch,
                max_waiting: self.max_waiting,
                prefill_chunk: self.prefill_chunk,
                prefix_cache_bytes: self.prefix_cache_mib.saturating_mul(1 << 20),
            },
            context_length: self.ctx_size,
            chat_template: self.chat_template.clone(),
        })
    }

    /// Loads the model (on the engine thread) and returns the server's state.
    pub fn start_state(&self) -> Result<AppState, StartError> {
        let (engine, info) = Engine::start(self.engine_config()?)?;
        let model = ServedModel::new(
            &self.model,
            self.served_model_name.clone(),
            self.aliases.clone(),
            info,
        );
        Ok(AppState::new(engine, model, self.api_key.clone()))
    }

    /// Loads the model, listens and serves until Ctrl-C.
    pub async fn run(self) -> Result<(), StartError> {
        tracing::info!(model = %self.model, "loading");
        let started = std::time::Instant::now();
        let args = self.clone();
        let state = tokio::task::spawn_blocking(move || args.start_state())
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e)))??;
        let listener = tokio::net::TcpListener::bind((self.host.as_str(), self.port)).await?;
        tracing::info!(
            model = %state.model().id,
            source = %state.model().info.source,
            context = state.model().info.context_length,
            load_s = started.elapsed().as_secs_f64(),
            address = %listener.local_addr()?,
            auth = state.api_key().is_some(),
            "listening"
        );
        crate::serve(listener, state).await?;
        Ok(())
    }
}
