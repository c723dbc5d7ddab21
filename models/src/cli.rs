//! Command-line flags for loading a model, for tools built on this crate (feature `cli`):
//! [`LoadArgs`] is a `clap` argument group that a tool flattens into its own parser, and
//! [`LoadArgs::load_options`] turns it into [`LoadOptions`]. The examples and `mlx-server`
//! take their model flags from here, so the flags mean the same everywhere.
//!
//! ```
//! use clap::Parser;
//! use mlx_models::cli::LoadArgs;
//!
//! #[derive(Parser)]
//! struct Tool {
//!     #[arg(long)]
//!     model: String,
//!     #[command(flatten)]
//!     load: LoadArgs,
//! }
//!
//! let tool = Tool::try_parse_from(["tool", "--model", "m.gguf", "--device", "cpu", "--dtype", "f16"]).unwrap();
//! let options = tool.load.load_options(None).unwrap();
//! assert_eq!(options.device, mlx_rs::Device::cpu());
//! assert_eq!(options.dtype, Some(mlx_rs::Dtype::Float16));
//! assert!(options.huge_pages && options.gguf_blocks);
//! ```

use crate::error::{Error, Result};
use crate::load::{LoadOptions, MemoryBudget};
use clap::{Args, ValueEnum};
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

impl From<DtypeArg> for Dtype {
    fn from(d: DtypeArg) -> Dtype {
        match d {
            DtypeArg::F32 => Dtype::Float32,
            DtypeArg::F16 => Dtype::Float16,
            DtypeArg::Bf16 => Dtype::Bfloat16,
        }
    }
}

/// What to do with quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantizedArg {
    /// Keep them quantized (quantized matmul).
    Keep,
    /// Dequantize them to the compute dtype at load.
    Dequantize,
}

/// How to load the model: device, dtype, quantization, memory, pages, chat template.
#[derive(Debug, Clone, Default, Args)]
pub struct LoadArgs {
    /// Device (default: MLX's default device).
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Compute dtype (default: float32 on the CPU, bfloat16 on a GPU).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Quantized checkpoints: keep the weights quantized, or dequantize them at load
    /// (default: the device's policy, see `mlx_models::load`).
    #[arg(long, value_enum)]
    pub quantized: Option<QuantizedArg>,
    /// Memory the weights and KV cache may take, in MiB (default: what the system reports
    /// as available); loading stops with an error naming both figures when over it.
    #[arg(long, value_name = "MIB", conflicts_with = "no_memory_check")]
    pub memory_budget: Option<u64>,
    /// Skip the memory budget check (e.g. with swap, or a model that will be paged in).
    #[arg(long)]
    pub no_memory_check: bool,
    /// Keep the weights on the system's default pages instead of transparent huge pages
    /// (CPU only; see `LoadOptions::huge_pages`).
    #[arg(long)]
    pub no_huge_pages: bool,
    /// Convert a GGUF file's Q4_K / Q5_K / Q6_K matrices to MLX's affine layout instead of keeping
    /// them as stored (CPU only; see `LoadOptions::gguf_blocks`).
    #[arg(long)]
    pub no_gguf_blocks: bool,
    /// A Jinja chat template file to use instead of the model's (for a checkpoint that has
    /// none, such as a base model's GGUF).
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// The dtype the KV cache stores (default: f16 for a quantized GGUF file under float32, as
    /// llama.cpp's default cache, else the compute dtype); `f16` under float32 halves the
    /// cache's memory and the bytes attention reads, `f32` keeps a GGUF model's cache exact
    /// (see `LoadOptions::kv_cache_dtype`).
    #[arg(long, value_enum)]
    pub kv_cache_dtype: Option<DtypeArg>,
}

impl LoadArgs {
    /// The chosen device, checked to exist. Errors: [`Error::Config`] for a device this MLX
    /// build lacks.
    pub fn device(&self) -> Result<Device> {
        let device = match self.device {
            None => Device::default_device()?,
            Some(DeviceArg::Cpu) => Device::cpu(),
            Some(DeviceArg::Gpu) => Device::gpu(),
        };
        if !device.is_available() {
            return Err(Error::Config(format!(
                "device {device} is not available in this MLX build"
            )));
        }
        Ok(device)
    }

    /// The memory budget the flags ask for.
    pub fn memory_budget(&self) -> MemoryBudget {
        MemoryBudget::from_flags(!self.no_memory_check, self.memory_budget)
    }

    /// The load options the flags describe, the memory budget counting a KV cache of
    /// `context_length` positions (`None`: the model's, at most 8192), with progress bars
    /// when stderr is a terminal and no distributed group. Errors: as [`Self::device`].
    pub fn load_options(&self, context_length: Option<usize>) -> Result<LoadOptions> {
        Ok(LoadOptions {
            device: self.device()?,
            dtype: self.dtype.map(Dtype::from),
            keep_quantized: self.quantized.map(|q| q == QuantizedArg::Keep),
            memory_budget: self.memory_budget(),
            context_length,
            huge_pages: !self.no_huge_pages,
            gguf_blocks: !self.no_gguf_blocks,
            progress: crate::load::terminal_progress(),
            parallel: None,
            kv_cache_dtype: self.kv_cache_dtype.map(Dtype::from),
        })
    }

    /// The flags that only an MLX load understands, by name, when given (for tools that also
    /// run other engines and refuse them there).
    pub fn mlx_only_flags_given(&self) -> Vec<&'static str> {
        [
            (self.dtype.is_some(), "--dtype"),
            (self.quantized.is_some(), "--quantized"),
            (self.chat_template.is_some(), "--chat-template"),
            (self.no_huge_pages, "--no-huge-pages"),
            (self.no_gguf_blocks, "--no-gguf-blocks"),
            (self.kv_cache_dtype.is_some(), "--kv-cache-dtype"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Tool {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<Tool, clap::Error> {
        Tool::try_parse_from(std::iter::once("tool").chain(args.iter().copied()))
    }

    #[test]
    fn flags_become_load_options() {
        let t = parse(&[
            "--device",
            "cpu",
            "--quantized",
            "dequantize",
            "--memory-budget",
            "512",
            "--no-huge-pages",
            "--no-gguf-blocks",
            "--kv-cache-dtype",
            "f16",
        ])
        .unwrap();
        let o = t.load.load_options(Some(1024)).unwrap();
        assert_eq!(o.device, Device::cpu());
        assert_eq!(o.dtype, None);
        assert_eq!(o.keep_quantized, Some(false));
        assert_eq!(o.memory_budget, MemoryBudget::Bytes(512 << 20));
        assert_eq!(o.context_length, Some(1024));
        assert!(!o.huge_pages && !o.gguf_blocks);
        assert_eq!(o.kv_cache_dtype, Some(Dtype::Float16));
        assert_eq!(
            t.load.mlx_only_flags_given(),
            [
                "--quantized",
                "--no-huge-pages",
                "--no-gguf-blocks",
                "--kv-cache-dtype"
            ]
        );
        let o = parse(&[]).unwrap().load.load_options(None).unwrap();
        assert_eq!(o.memory_budget, MemoryBudget::Available);
        assert!(o.huge_pages && o.gguf_blocks);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--dtype", "f64"]).is_err());
        assert!(parse(&["--memory-budget", "1", "--no-memory-check"]).is_err());
        assert!(parse(&["--device", "tpu"]).is_err());
    }
}
