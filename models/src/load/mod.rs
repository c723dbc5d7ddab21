//! Loading checkpoints: Hugging Face folders (sharded safetensors, MLX-quantized), GGUF files,
//! and model ids resolved through the Hugging Face Hub cache.
//!
//! [`load`] is the entry point: it reads the config, weights and tokenizer, applies the dtype
//! policy below, and builds the family's model.
//!
//! # Dtype policy
//!
//! - **Compute dtype** ([`LoadOptions::dtype`], default by device): `float32` on the CPU,
//!   `bfloat16` on a GPU. On x86 CPUs MLX is fast only in f32, where matmuls go to BLAS
//!   (OpenBLAS: ~200 GFLOP/s, 10-14 GB/s matvec); its f16/bf16 and quantized CPU kernels are
//!   single-threaded scalar code (bf16 matmul ~5 GFLOP/s). Measured on SmolLM2-135M with
//!   mlx-lm on MLX 0.32.2 (2-core x86): f32 + OpenBLAS 18.6 tok/s, bf16 7.7 tok/s
//!   (see `shared/reference/mlx-on-linux.md` and `test-weights.md`). Floating tensors are
//!   converted to the compute dtype at load.
//! - **Quantized weights** (MLX-quantized checkpoints; GGUF `Q4_0` / `Q4_1` / `Q8_0`, which MLX
//!   loads as `weight` / `scales` / `biases` triplets, and `Q4_K` / `Q6_K`, which
//!   [`gguf`] turns into such triplets) stay quantized by default: on a GPU for MLX's kernels,
//!   and on an x86 CPU for mlx-rs's native quantized matmul
//!   ([`mlx_rs::quant::native_qmm_enabled`]), which measures far faster than f32 + OpenBLAS
//!   (SmolLM2-135M, GGUF Q4_1, dev-cpu in BENCHMARKS.md: 8× the decode speed dequantized to
//!   f32 after a 512-token prompt, in a quarter of the memory). Half-precision scales and biases stay as stored under
//!   f32 compute (the kernel widens them in registers). Where that kernel is off
//!   (`MLX_RS_NATIVE_QMM=0`, or a non-x86 CPU) they are dequantized to the compute dtype at
//!   load instead, since MLX's own CPU `quantized_matmul` is slower than f32 (7.8 against
//!   18.6 tok/s with mlx-lm). [`LoadOptions::keep_quantized`] overrides either way.

pub mod budget;
pub mod files;
pub mod ggml_quants;
pub mod gguf;
pub mod gguf_file;
pub mod hf;
pub mod hub;
pub mod plan;
pub mod progress;
#[cfg(feature = "progress-bars")]
mod progress_bars;
pub mod safetensors_file;

pub use budget::MemoryBudget;
pub use progress::{ProgressEvent, ProgressHook};
#[cfg(feature = "progress-bars")]
pub use progress_bars::terminal_progress;

use crate::config::{GenerationConfig, ModelConfig, QuantizationConfig};
use crate::error::{Error, Result};
use crate::model::CausalLm;
use crate::text::Tokenizer;
use crate::weights::Weights;
use mlx_rs::{Device, DeviceType, Dtype};
use std::path::Path;

/// How a family builds its layers from the (prepared) weights.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Compute dtype: the floating tensors (weights, scales, biases) already have it.
    pub dtype: Dtype,
    /// Quantization of the weights left quantized (`None`: every weight is floating point).
    /// A module is quantized iff `<path>.scales` exists; its parameters come from
    /// [`QuantizationConfig::for_module`].
    pub quantization: Option<QuantizationConfig>,
    /// Put the weights that building creates on transparent huge pages, as
    /// [`LoadOptions::huge_pages`] does for the tensors as read: the fused q/k/v and gate/up
    /// projections (concatenations of the checkpoint's tensors) are advised, and a decoder
    /// layer's GGUF block matrices are copied into one buffer that they then view, so that
    /// small matrices and the edges of large ones are on huge pages too. Set by [`load`] from
    /// that option on the CPU, `false` on a GPU.
    pub huge_pages: bool,
}

/// Options of [`load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype; `None` = the device's default ([`default_dtype`]).
    pub dtype: Option<Dtype>,
    /// Keep quantized weights quantized; `None` = the default policy (quantized on a GPU,
    /// dequantized on the CPU; see the [module docs](self)).
    pub keep_quantized: Option<bool>,
    /// The device the model will run on.
    pub device: Device,
    /// The memory the weights and the KV cache may take ([`MemoryBudget::Available`] by
    /// default); checked from the declared tensor sizes before any tensor data is read.
    pub memory_budget: MemoryBudget,
    /// The context length the budget counts the KV cache of; `None` = the config's, at most
    /// [`budget::DEFAULT_BUDGET_CONTEXT`].
    pub context_length: Option<usize>,
    /// On the CPU, back the weights with transparent huge pages
    /// ([`mlx_rs::memory::advise_huge_pages`]; default `true`): decode streams every weight
    /// once per token, and 2 MiB pages take the TLB out of that path. Ignored on a GPU.
    pub huge_pages: bool,
    /// On a CPU whose native kernels multiply GGUF blocks on integer dot products (x86-64 with
    /// AVX-512 VNNI, [`mlx_rs::quant::QmmIsa::Avx512Vnni`] in use, the native kernel enabled),
    /// keep a GGUF file's block-quantized projection matrices (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`,
    /// `Q8_0`, `Q2_K`, `Q3_K`, `Q4_K`, `Q5_K`, `Q6_K`) as stored
    /// ([`gguf::GgufReadOptions::keep_blocks`]; default `true`): the file's bits per weight
    /// (`Q4_K` 4.5, `Q6_K` 6.56, `Q5_0` 5.5) instead of the affine conversion's (6, 9 and 9),
    /// and a prompt chunk multiplies them on 8-bit activations. `false`, and on other CPUs (where only the portable block kernel would run, far slower than the
    /// affine kernels) or in the exact mode ([`mlx_rs::quant::set_native_qmm_exact`]): convert
    /// them as the [`gguf`] module docs say. Ignored on a GPU.
    pub gguf_blocks: bool,
    /// Where [`load`] reports its progress (downloads from the Hub, tensors read; see
    /// [`progress`]); `None` (the default): nowhere, the library draws nothing itself.
    ///
    /// ```
    /// use mlx_models::load::{LoadOptions, ProgressEvent, ProgressHook};
    /// let options = LoadOptions {
    ///     progress: Some(ProgressHook::new(|e: &ProgressEvent| eprintln!("{e:?}"))),
    ///     ..LoadOptions::default()
    /// };
    /// assert!(format!("{options:?}").contains("ProgressHook"));
    /// ```
    pub progress: Option<ProgressHook>,
    /// Spread the model over the ranks of a distributed group ([`crate::parallel`]); each
    /// rank keeps only its share of the weights. `None` (the default): the whole model here.
    ///
    /// A pipeline stage reads only its own layers; a tensor-parallel rank reads the whole file
    /// but cuts each layer to its share as soon as the layer's last tensor is read
    /// ([`crate::parallel::ReadCut`]), so loading holds about the share plus one layer and
    /// the embedding. Either way the memory budget counts this rank's part, and a model
    /// larger than one machine loads across several.
    pub parallel: Option<crate::parallel::Parallel>,
    /// The dtype the KV cache stores keys and values in; `None` (the default): chosen by
    /// [`LoadOptions::resolved_kv_cache_dtype`], float16 for a GGUF file of quantized weights
    /// under a float32 model (the CPU's default), else the compute dtype. [`mlx_rs::Dtype::Float16`] under a
    /// float32 model halves the cache's memory and the bytes attention reads per token,
    /// rounding each stored key and value to half precision as llama.cpp's default cache
    /// does; the native attention reads it directly. Applied with
    /// [`crate::model::CausalLm::set_kv_cache_dtype`]; the memory budget counts the cache in
    /// it. `Some(Float32)` keeps a GGUF model's cache in float32.
    pub kv_cache_dtype: Option<Dtype>,
}

impl Default for LoadOptions {
    /// Default dtype and quantization policy on MLX's default device.
    fn default() -> Self {
        LoadOptions {
            dtype: None,
            keep_quantized: None,
            device: Device::default_device().unwrap_or_else(|_| Device::cpu()),
            memory_budget: MemoryBudget::default(),
            context_length: None,
            huge_pages: true,
            gguf_blocks: true,
            progress: None,
            parallel: None,
            kv_cache_dtype: None,
        }
    }
}

impl LoadOptions {
    /// The compute dtype in force.
    pub fn compute_dtype(&self) -> Dtype {
        self.dtype.unwrap_or_else(|| default_dtype(self.device))
    }

    /// The dtype the KV cache stores, for a checkpoint that is (`quantized_gguf`: its layers'
    /// matrices in a GGUF block format) or is not a GGUF file of quantized weights:
    /// [`LoadOptions::kv_cache_dtype`] when set; else float16 for such a file under a float32
    /// compute dtype, as llama.cpp's default cache (measured in BENCHMARKS.md, "A float16 KV
    /// cache": decode at depth +12–35%, perplexity within 0.15% (Qwen2.5-Coder-1.5B 11.838 →
    /// 11.822), the same bytes per token as llama.cpp), and the compute dtype otherwise: float
    /// GGUF files keep exact caches, so their logits match transformers' float32 references,
    /// and so do Hugging Face checkpoints, MLX-quantized ones included (this default follows
    /// llama.cpp's for its own file format; `kv_cache_dtype` asks for f16 anywhere).
    ///
    /// ```
    /// use mlx_models::load::LoadOptions;
    /// use mlx_rs::{Device, Dtype};
    /// let cpu = LoadOptions { device: Device::cpu(), ..LoadOptions::default() };
    /// assert_eq!(cpu.resolved_kv_cache_dtype(true), Dtype::Float16);
    /// assert_eq!(cpu.resolved_kv_cache_dtype(false), Dtype::Float32);
    /// let f32_cache = LoadOptions { kv_cache_dtype: Some(Dtype::Float32), ..cpu };
    /// assert_eq!(f32_cache.resolved_kv_cache_dtype(true), Dtype::Float32);
    /// ```
    pub fn resolved_kv_cache_dtype(&self, quantized_gguf: bool) -> Dtype {
        let compute = self.compute_dtype();
        self.kv_cache_dtype
            .unwrap_or(if quantized_gguf && compute == Dtype::Float32 {
                Dtype::Float16
            } else {
                compute
            })
    }

    /// Whether a GGUF file's K-quant matrices stay as stored ([`LoadOptions::gguf_blocks`] on a
    /// CPU whose native kernels multiply them, quantized weights kept).
    pub fn keeps_gguf_blocks(&self) -> bool {
        self.gguf_blocks
            && self.keeps_quantized()
            && self.device.device_type() == DeviceType::Cpu
            && native_cpu_kernel()
            && mlx_rs::quant::native_qmm_isa() == mlx_rs::quant::QmmIsa::Avx512Vnni
    }

    /// Whether quantized weights stay quantized: on a GPU always; on the CPU when mlx-rs's
    /// native quantized matmul kernel is enabled (see the module docs), else they are
    /// dequantized at load.
    pub fn keeps_quantized(&self) -> bool {
        self.keep_quantized
            .unwrap_or(self.device.device_type() == DeviceType::Gpu || native_cpu_kernel())
    }
}

/// Whether mlx-rs's native CPU quantized matmul serves this process (x86-64 only, and not
/// switched off with `MLX_RS_NATIVE_QMM=0` / `set_native_qmm(false)`).
fn native_cpu_kernel() -> bool {
    cfg!(target_arch = "x86_64") && mlx_rs::quant::native_qmm_enabled()
}

/// The default compute dtype of a device: `float32` on the CPU, `bfloat16` on a GPU.
///
/// ```
/// use mlx_models::load::default_dtype;
/// assert_eq!(default_dtype(mlx_rs::Device::cpu()), mlx_rs::Dtype::Float32);
/// assert_eq!(default_dtype(mlx_rs::Device::gpu()), mlx_rs::Dtype::Bfloat16);
/// ```
pub fn default_dtype(device: Device) -> Dtype {
    match device.device_type() {
        DeviceType::Cpu => Dtype::Float32,
        DeviceType::Gpu => Dtype::Bfloat16,
    }
}

/// A model ready to generate with.
pub struct LoadedModel {
    /// The forward pass.
    pub model: Box<dyn CausalLm>,
    /// The tokenizer (with its chat template).
    pub tokenizer: Tokenizer,
    /// The parsed config.
    pub config: ModelConfig,
    /// `generation_config.json` (default when absent, e.g. for GGUF files).
    pub generation_config: GenerationConfig,
    /// The ids that end generation.
    pub eos_token_ids: Vec<u32>,
    /// Where the model came from (the path, or the Hub id and its snapshot folder).
    pub source: String,
    /// Bytes of the embedding tables a decode step reads one row of (the token embedding
    /// unless the LM head shares it, per-layer embeddings), as loaded: what
    /// [`crate::model::LanguageModel::decode_bytes_per_token`] leaves out of the weights.
    pub lookup_table_bytes: u64,
    /// The checkpoint's parameters ([`plan::parameter_count`] of every tensor it declares):
    /// the whole model's, also on a rank that loads a share of it.
    pub parameter_count: u64,
    /// The dtype the model's KV caches store ([`LoadOptions::resolved_kv_cache_dtype`]).
    pub kv_cache_dtype: Dtype,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("config", &self.config)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Loads `model`: a local Hugging Face folder, a `.gguf` file, or a Hugging Face repo id
/// (see [`hub::resolve`]); builds the family on `options.device` with the dtype policy of the
/// [module docs](self). Downloads and tensor reads are reported to [`LoadOptions::progress`].
///
/// End-of-sequence ids: `generation_config.json`'s override `config.json`'s; without either,
/// the tokenizer's.
///
/// Model files are untrusted input: headers are read by the project's own bounded readers
/// ([`gguf_file`], [`safetensors_file`]), small files with size caps ([`files`]), and before
/// any tensor data is read the config is checked, the declared tensors are compared with what
/// the family takes ([`plan`]: missing, unexpected and mis-shaped tensors), and the memory the
/// weights and KV cache will need is compared with [`LoadOptions::memory_budget`].
///
/// Errors: [`Error::Io`] (missing files), [`Error::NotRegularFile`], [`Error::FileTooLarge`],
/// [`Error::Hub`], [`Error::Config`], [`Error::ConfigValue`], [`Error::UnsupportedModel`],
/// [`Error::Gguf`], [`Error::Safetensors`], [`Error::MissingTensor`],
/// [`Error::UnexpectedTensors`], [`Error::ShapeMismatch`], [`Error::MemoryBudget`],
/// [`Error::Tokenizer`], [`Error::ChatTemplate`].
pub fn load(model: &str, options: &LoadOptions) -> Result<LoadedModel> {
    let progress = options.progress.as_ref();
    let path = hub::resolve_with_progress(model, progress)?;
    let source = if Path::new(model).exists() {
        path.display().to_string()
    } else {
        format!("{model} ({})", path.display())
    };
    let dtype = options.compute_dtype();
    let keep = options.keeps_quantized();
    // Everything up to the budget check reads headers and small files only.
    // Whether the checkpoint is a GGUF file of quantized weights (its KV cache's default).
    let mut quantized_gguf = false;
    let (config, generation, weights, mut tokenizer, parameter_count) = if path.is_dir() {
        let (config, generation) = hf::load_hf_config(&path)?;
        check_supported(&config)?;
        let mut shards = hf::open_hf_shards(&path)?;
        let plan = crate::families::expected_tensors(&config)?;
        let declared = hf::declared_tensors(&config, &shards)?;
        plan::check_declared(&plan, &declared, true)?;
        let parameters = plan::parameter_count(&declared);
        // A pipeline stage reads (and budgets for) its own layers only.
        if let Some(stage) = pipeline_stage(&config, options)? {
            for shard in &mut shards {
                shard
                    .tensors
                    .retain(|t| hf_layer(&config, &t.name).is_none_or(|l| stage.contains(&l)));
            }
        }
        let bytes = rank_share(hf::loaded_bytes(&shards, dtype, keep), options);
        check_memory(&config, bytes, options, false)?;
        let tokenizer = Tokenizer::from_dir(&path)?;
        let weights = match &options.parallel {
            // Each rank cuts its vocabulary rows, and under tensor parallelism each layer to
            // its share, as soon as they are read.
            Some(p) => {
                let layers = shards.iter().flat_map(|s| &s.tensors);
                let layers = layers.map(|t| hf_layer(&config, &t.name));
                let mut cut = crate::parallel::ReadCut::new(&config, p, layers)?;
                hf::read_hf_weights_into(&shards, progress, &mut |name, array| {
                    cut.push(hf_layer(&config, &name), vec![(name, array)])
                })?;
                cut.finish()
            }
            None => hf::read_hf_weights_with_progress(&shards, progress)?,
        };
        (config, generation, weights, tokenizer, parameters)
    } else {
        let (mut file, config) = open_checked_gguf(&path)?;
        let parameters = plan::parameter_count(&gguf::declared_tensors(&file, &config)?);
        // Quantized weights: the layers' matrices in a block format (a float file whose
        // embedding alone is quantized keeps an exact cache); decided on the whole file, so
        // that every pipeline stage agrees.
        quantized_gguf = file.tensors.iter().any(|t| {
            gguf::layer_of(&t.name).is_some()
                && t.ggml_type
                    .block_layout()
                    .is_some_and(|(values, _)| values > 1)
        });
        if let Some(stage) = pipeline_stage(&config, options)? {
            file.tensors
                .retain(|t| gguf::layer_of(&t.name).is_none_or(|l| stage.contains(&l)));
        }
        let read = gguf::GgufReadOptions {
            keep_blocks: options.keeps_gguf_blocks(),
        };
        let bytes = rank_share(gguf::loaded_bytes_kept(&file, dtype, keep, read), options);
        check_memory(&config, bytes, options, quantized_gguf)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let weights = match &options.parallel {
            Some(p) => {
                let layers = file.tensors.iter().map(|t| gguf::layer_of(&t.name));
                let mut cut = crate::parallel::ReadCut::new(&config, p, layers)?;
                gguf::read_gguf_weights_into(&file, &config, progress, read, &mut |l, arrays| {
                    cut.push(l, arrays)
                })?;
                cut.finish()
            }
            None => gguf::read_gguf_weights_with_options(&file, &config, progress, read)?,
        };
        (config, None, weights, tokenizer, parameters)
    };
    prepare_tokenizer(&config, &mut tokenizer);
    let eos_token_ids = eos_token_ids(&config, generation.as_ref(), &tokenizer);
    let build = mlx_rs::with_device(options.device, || -> Result<_> {
        // Quantization overrides name the checkpoint's modules: apply them, then rename.
        let (weights, build) = prepare_weights(&config, weights, options)?;
        let weights = crate::families::sanitize(&config, weights)?;
        let lookup = lookup_table_bytes(&config, &weights);
        let huge_pages = options.huge_pages && options.device.device_type() == DeviceType::Cpu;
        if huge_pages {
            advise_huge_pages(&weights)?;
        }
        let build = crate::families::BuildOptions {
            huge_pages,
            dtype: build.dtype,
            quantization: build
                .quantization
                .map(|q| crate::families::rename_quantization(&config, q))
                .transpose()?,
        };
        let model =
            crate::families::build_parallel(&config, weights, &build, options.parallel.as_ref())?;
        if huge_pages {
            // The tensors as read, now copied into fused or shared buffers, are free: give
            // their pages back (MLX's cache and glibc's heap) rather than keep them resident.
            mlx_rs::memory::release_to_system()?;
        }
        Ok((model, lookup))
    })?;
    let (mut model, lookup_table_bytes) = build?;
    let kv_cache_dtype = options.resolved_kv_cache_dtype(quantized_gguf);
    model.set_kv_cache_dtype(
        (kv_cache_dtype != options.compute_dtype()).then_some(kv_cache_dtype),
    )?;
    Ok(LoadedModel {
        model,
        tokenizer,
        config,
        generation_config: generation.unwrap_or_default(),
        eos_token_ids,
        source,
        lookup_table_bytes,
        parameter_count,
        kv_cache_dtype,
    })
}

/// The decoder layer of a checkpoint tensor named `name` (after the family's renames).
fn hf_layer(config: &ModelConfig, name: &str) -> Option<usize> {
    crate::families::rename(config, name)
        .ok()
        .flatten()
        .and_then(|n| crate::parallel::pipeline::layer_of(&n))
}

/// The weight bytes a rank's budget counts: under tensor parallelism its share, plus a tenth
/// of the whole for what is held while cutting (the layer being read, the embedding read
/// whole); otherwise `bytes` (a pipeline stage's are already its own).
fn rank_share(bytes: u64, options: &LoadOptions) -> u64 {
    match &options.parallel {
        Some(crate::parallel::Parallel::Tensor(g)) => bytes / g.size().max(1) as u64 + bytes / 10,
        _ => bytes,
    }
}

/// The layers this rank reads when [`LoadOptions::parallel`] is a pipeline.
fn pipeline_stage(
    config: &ModelConfig,
    options: &LoadOptions,
) -> Result<Option<std::ops::Range<usize>>> {
    match &options.parallel {
        Some(crate::parallel::Parallel::Pipeline(g)) => Ok(Some(
            crate::parallel::pipeline::stage_layers(config.num_hidden_layers, g.rank(), g.size())?,
        )),
        _ => Ok(None),
    }
}

/// Bytes of the embedding tables among `weights` (named as the decoder takes them) that a
/// decode step reads one row of: `embed_tokens` unless the LM head is tied to it, and the
/// per-layer tables (`embed_tokens_per_layer`) always; their quantization scales included.
pub fn lookup_table_bytes(config: &ModelConfig, weights: &Weights) -> u64 {
    let tied = config.tie_word_embeddings();
    weights
        .names()
        .iter()
        .filter(|n| n.contains("embed_tokens_per_layer") || (!tied && n.contains("embed_tokens.")))
        .filter_map(|n| weights.get(n))
        .map(|a| a.nbytes() as u64)
        .sum()
}

/// Opens a GGUF file and checks it as [`load`] does before reading any tensor data: a valid
/// header (the bounded reader of [`gguf_file`]), a supported family, and the declared tensors
/// exactly those the family takes, with their shapes. Other engines that read the file (the
/// ggml baseline) run this first, so a hostile file is refused by the same checks.
///
/// Errors: as [`gguf::read_gguf_checkpoint`], and [`Error::MissingTensor`] /
/// [`Error::UnexpectedTensors`].
///
/// ```
/// use mlx_models::{load::open_checked_gguf, Error};
/// let err = open_checked_gguf(std::path::Path::new("/no/such.gguf")).unwrap_err();
/// assert!(matches!(err, Error::Io { .. }));
/// ```
pub fn open_checked_gguf(path: &Path) -> Result<(gguf_file::GgufFile, ModelConfig)> {
    let (file, config) = gguf::open_gguf(path)?;
    check_supported(&config)?;
    let plan = crate::families::expected_tensors(&config)?;
    plan::check_declared(&plan, &gguf::declared_tensors(&file, &config)?, true)?;
    Ok((file, config))
}

/// Sets up a checkpoint's tokenizer as [`load`] does: BOS always added for the families that
/// need it, and chat-template limits sized for the model's context.
pub fn prepare_tokenizer(config: &ModelConfig, tokenizer: &mut Tokenizer) {
    if crate::families::family(&config.model_type).is_ok_and(|f| f.always_bos) {
        tokenizer.always_add_bos();
    }
    tokenizer.set_template_limits(crate::text::sandbox::TemplateLimits::for_context(
        config
            .context_length()
            .unwrap_or(budget::DEFAULT_BUDGET_CONTEXT),
    ));
}

/// Backs the host buffers of `weights` with transparent huge pages where the OS allows, but
/// for the decoder layers' GGUF block projections, which building copies into one buffer per
/// layer and advises there ([`crate::nn::colocate::is_layer_projection_blocks`]).
fn advise_huge_pages(weights: &Weights) -> Result<mlx_rs::memory::HugePageAdvice> {
    let names = weights.names();
    let arrays: Vec<&mlx_rs::Array> = names
        .iter()
        .filter(|n| !crate::nn::colocate::is_layer_projection_blocks(n))
        .filter_map(|n| weights.get(n))
        .collect();
    Ok(mlx_rs::memory::advise_huge_pages(&arrays)?)
}

/// [`Error::MemoryBudget`] when `weight_bytes` plus the KV cache of the budgeted context
/// exceed `options.memory_budget`.
fn check_memory(
    config: &ModelConfig,
    weight_bytes: u64,
    options: &LoadOptions,
    quantized_gguf: bool,
) -> Result<()> {
    let context = budget::budget_context(config, options.context_length);
    let kv = budget::kv_cache_bytes(
        config,
        context,
        options.resolved_kv_cache_dtype(quantized_gguf),
    );
    budget::check_budget(weight_bytes.saturating_add(kv), options.memory_budget)
}

/// [`Error::UnsupportedModel`] unless a family implements `config.model_type`.
pub fn check_supported(config: &ModelConfig) -> Result<()> {
    crate::families::family(&config.model_type).map(|_| ())
}

/// The end-of-sequence ids: `generation_config.json`'s, else `config.json`'s, else the
/// tokenizer's; plus the family's end-of-turn tokens ([`crate::families::Family::stop_tokens`])
/// that the tokenizer has.
pub fn eos_token_ids(
    config: &ModelConfig,
    generation: Option<&GenerationConfig>,
    tokenizer: &Tokenizer,
) -> Vec<u32> {
    let mut ids = if let Some(ids) = generation.and_then(|g| g.eos_token_id.as_ref()) {
        ids.to_vec()
    } else if let Some(ids) = &config.eos_token_id {
        ids.to_vec()
    } else {
        tokenizer.eos_token_ids()
    };
    if let Ok(family) = crate::families::family(&config.model_type) {
        for token in family.stop_tokens {
            if let Some(id) = tokenizer.token_to_id(token) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
    ids
}

/// Applies the dtype policy: dequantizes quantized triplets unless they are kept, then converts
/// every floating tensor to the compute dtype. Returns the weights and the [`BuildOptions`]
/// that describe them.
///
/// Errors: [`Error::Config`] when a module has `.scales` but the config's quantization is
/// missing or excludes it; [`Error::MissingTensor`] for a triplet without `.weight` or
/// `.biases`; [`Error::Mlx`] for mismatched triplet shapes.
pub fn prepare_weights(
    config: &ModelConfig,
    mut weights: Weights,
    options: &LoadOptions,
) -> Result<(Weights, BuildOptions)> {
    let dtype = options.compute_dtype();
    let mut quantization = config.quantization()?;
    let quantized = weights.names().iter().any(|n| n.ends_with(".scales"));
    if quantized && quantization.is_none() {
        return Err(Error::Config(
            "the checkpoint holds quantized tensors (`*.scales`) but its config has no \
             `quantization` entry"
                .into(),
        ));
    }
    if quantized && !options.keeps_quantized() {
        if let Some(q) = &quantization {
            dequantize_weights(&mut weights, q, dtype)?;
        }
        quantization = None;
    }
    if !quantized {
        quantization = None;
    }
    // Half-precision scales and biases of kept quantized matrices stay as they are under f32
    // compute (see `nn::linear::QuantizedMatrix::load`).
    let keep_group_params = quantization.is_some() && dtype == Dtype::Float32;
    weights.convert_floats_except(dtype, |name, array| {
        keep_group_params
            && (name.ends_with(".scales") || name.ends_with(".biases"))
            && matches!(array.dtype(), Dtype::Float16 | Dtype::Bfloat16)
    })?;
    Ok((
        weights,
        BuildOptions {
            dtype,
            quantization,
            huge_pages: false,
        },
    ))
}

/// Replaces every quantized triplet `P.weight` / `P.scales` / `P.biases` with the dense
/// `P.weight` in `dtype`, using `quantization.for_module(P)`'s group size and bits (the
/// dequantization runs in f32).
///
/// Errors: as [`prepare_weights`].
pub fn dequantize_weights(
    weights: &mut Weights,
    quantization: &QuantizationConfig,
    dtype: Dtype,
) -> Result<()> {
    let modules: Vec<String> = weights
        .names()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".scales").map(str::to_string))
        .collect();
    for module in modules {
        let params = quantization.for_module(&module).ok_or_else(|| {
            Error::Config(format!(
                "`{module}` is quantized but the config's quantization excludes it"
            ))
        })?;
        let w = weights.take(&format!("{module}.weight"))?;
        let scales = weights.take(&format!("{module}.scales"))?;
        let biases = weights.take(&format!("{module}.biases"))?;
        let dense = mlx_rs::quant::dequantize(
            &w,
            &scales.astype(Dtype::Float32)?,
            &biases.astype(Dtype::Float32)?,
            params.group_size,
            params.bits,
        )?
        .astype(dtype)?;
        dense.eval()?;
        weights.insert(format!("{module}.weight"), dense);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::Array;

    fn config(tied: bool) -> ModelConfig {
        ModelConfig::from_json(&format!(
            r#"{{"model_type":"llama","hidden_size":8,"num_hidden_layers":1,
            "intermediate_size":16,"num_attention_heads":2,"num_key_value_heads":1,
            "vocab_size":32,"tie_word_embeddings":{tied}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn lookup_tables_are_the_untied_and_per_layer_embeddings() {
        let mut w = Weights::default();
        let zeros = |n: i32| Array::zeros(&[n], Dtype::Float32).unwrap();
        w.insert("model.embed_tokens.weight", zeros(256)); // 1024 bytes
        w.insert("model.embed_tokens.scales", zeros(8)); // 32
        w.insert("model.embed_tokens_per_layer.weight", zeros(64)); // 256
        w.insert("lm_head.weight", zeros(256));
        w.insert("model.layers.0.mlp.down_proj.weight", zeros(128));
        // Tied: the token embedding is the LM head, read whole; only the per-layer table not.
        assert_eq!(lookup_table_bytes(&config(true), &w), 256);
        assert_eq!(lookup_table_bytes(&config(false), &w), 1024 + 32 + 256);
    }
}
