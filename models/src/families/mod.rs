//! Model families, one small file each, and the registry ([`FAMILIES`]).
//!
//! Every family builds the same [`Decoder`] from a
//! [`ModelSpec`]: the family's file only says what its layers are.
//!
//! # Adding a family
//!
//! A family file holds one [`Family`] constant and the functions it points to:
//! - `model_types` (Hugging Face `config.json` aliases) and `gguf_architectures`
//!   (`general.architecture` values);
//! - `defaults`: the config keys its checkpoints may leave out (transformers' config class
//!   defaults), filled in before the config is parsed, so no family default lives in
//!   [`crate::config`];
//! - `spec`: the config turned into one [`BlockSpec`](crate::nn::spec::BlockSpec) per layer
//!   plus the model-level fields (embedding scale, tied head, final softcap);
//! - `rename`: the checkpoint's tensor names mapped onto the decoder's Llama-layout names
//!   (prefixes of multimodal wrappers stripped, vision towers dropped);
//! - `gguf`: the GGUF tensor names that differ from the common map, whether Q/K rows are
//!   permuted, and the architecture's metadata keys.
//!
//! A **new numerical feature** (a norm placement, an activation, a RoPE kind, a mask) is a
//! field of the spec, implemented once in [`crate::nn`]'s reference decoder; the native CPU
//! stack takes layers that use it only once its kernels implement it and
//! [`crate::nn::NATIVE_FEATURES`] says so, with a test against the reference path.

pub mod gemma3;
pub mod gemma4;
pub mod llama;
pub mod mistral;
pub mod qwen2;
pub mod qwen3;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::load::gguf_file::GgufFile;
use crate::load::plan::ExpectedTensor;
use crate::model::CausalLm;
use crate::nn::spec::ModelSpec;
use crate::nn::Decoder;
use crate::weights::Weights;
use serde_json::{json, Map, Value};

/// How a family builds its layers (defined with the loader, which prepares it).
pub use crate::load::BuildOptions;

/// A family's GGUF conventions.
#[derive(Debug, Clone, Copy)]
pub struct GgufConventions {
    /// Layer tensor parts (`blk.N.<part>`) whose Hugging Face module differs from the common
    /// map (`("ffn_norm", "pre_feedforward_layernorm")` for Gemma 3).
    pub tensor_names: &'static [(&'static str, &'static str)],
    /// llama.cpp reorders the Q/K rows of this architecture for interleaved RoPE.
    pub permuted_qk: bool,
    /// Reads the architecture's own metadata keys into the `config.json` object being built.
    pub metadata: fn(&GgufFile, &str, &mut Map<String, Value>) -> Result<()>,
    /// The family reads a `rope_freqs` tensor itself (Gemma 4's proportional RoPE); for the
    /// others it means Llama 3 scaling baked into a tensor, which is refused.
    pub reads_rope_freqs: bool,
}

impl GgufConventions {
    /// llama.cpp's common tensor names, Q/K rows as in the checkpoint, no extra metadata.
    pub const PLAIN: GgufConventions = GgufConventions {
        tensor_names: &[],
        permuted_qk: false,
        metadata: |_, _, _| Ok(()),
        reads_rope_freqs: false,
    };
}

/// One entry of the registry.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// A short name (`llama`, `gemma3`, ...).
    pub name: &'static str,
    /// The `model_type`s it builds.
    pub model_types: &'static [&'static str],
    /// The GGUF architectures it reads.
    pub gguf_architectures: &'static [&'static str],
    /// Fills the keys a checkpoint's config may leave out (and rewrites a wrapper's
    /// `model_type` to its text model's).
    pub defaults: fn(&mut Map<String, Value>),
    /// The model's description.
    pub spec: fn(&ModelConfig) -> Result<ModelSpec>,
    /// A checkpoint tensor's name under the decoder's layout, `None` to drop it.
    pub rename: fn(&ModelConfig, &str) -> Option<String>,
    /// Tokens that end a chat turn besides the end-of-sequence ids (Gemma's
    /// `<end_of_turn>`): generation stops on them when the tokenizer has them.
    pub stop_tokens: &'static [&'static str],
    /// Encoding with special tokens always starts with BOS, whatever the tokenizer files say
    /// (Gemma 4: its tokenizer config says not to add one, but quality collapses without it;
    /// llama.cpp forces it too).
    pub always_bos: bool,
    /// GGUF conventions.
    pub gguf: GgufConventions,
}

/// The registry: every family the zoo builds.
pub const FAMILIES: &[Family] = &[
    llama::FAMILY,
    qwen2::FAMILY,
    qwen3::FAMILY,
    mistral::FAMILY,
    gemma3::FAMILY,
    gemma4::FAMILY,
];

/// Every supported `model_type`.
pub fn supported_model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect()
}

/// Every supported GGUF architecture.
pub fn supported_architectures() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.gguf_architectures.iter().copied())
        .collect()
}

/// The family of `model_type`; [`Error::UnsupportedModel`] when none builds it.
///
/// ```
/// use mlx_models::families::family;
/// assert_eq!(family("gemma3_text")?.name, "gemma3");
/// assert!(family("gpt2").is_err());
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn family(model_type: &str) -> Result<&'static Family> {
    FAMILIES
        .iter()
        .find(|f| f.model_types.contains(&model_type))
        .ok_or_else(|| Error::UnsupportedModel {
            model_type: model_type.to_string(),
            supported: supported_model_types(),
        })
}

/// The family reading GGUF architecture `arch`; [`Error::UnsupportedModel`] when none does.
pub fn family_for_architecture(arch: &str) -> Result<&'static Family> {
    FAMILIES
        .iter()
        .find(|f| f.gguf_architectures.contains(&arch))
        .ok_or_else(|| Error::UnsupportedModel {
            model_type: arch.to_string(),
            supported: supported_architectures(),
        })
}

/// Fills the family defaults into a config object (nothing for an unknown `model_type`: the
/// build then reports it).
pub(crate) fn apply_defaults(config: &mut Map<String, Value>) {
    let model_type = config.get("model_type").and_then(Value::as_str);
    if let Some(f) = model_type.and_then(|t| family(t).ok()) {
        (f.defaults)(config);
    }
}

/// Inserts `key: value` unless the config has the key (a `null` counts as set).
pub(crate) fn default_key(config: &mut Map<String, Value>, key: &str, value: Value) {
    config.entry(key.to_string()).or_insert(value);
}

/// The family's default RoPE base, unless the config gives one (top-level, or inside
/// `rope_parameters` / `rope_scaling`).
pub(crate) fn default_rope_theta(config: &mut Map<String, Value>, theta: f64) {
    let inside = |key: &str| config.get(key).and_then(|v| v.get("rope_theta")).is_some();
    if !inside("rope_parameters") && !inside("rope_scaling") {
        default_key(config, "rope_theta", json!(theta));
    }
}

/// The model description of `config`.
pub fn model_spec(config: &ModelConfig) -> Result<ModelSpec> {
    config.validate()?;
    (family(&config.model_type)?.spec)(config)
}

/// `name` under the decoder's layout for `config`'s family (`None`: dropped), after the
/// renames every family shares: RoPE buffers (`*.rotary_emb.inv_freq`) are dropped, and so is
/// `lm_head.*` when the embeddings are tied (some exporters write the duplicate).
pub fn rename(config: &ModelConfig, name: &str) -> Result<Option<String>> {
    let f = family(&config.model_type)?;
    Ok((f.rename)(config, name).filter(|n| {
        !(n.ends_with(".rotary_emb.inv_freq")
            || (config.tie_word_embeddings() && n.starts_with("lm_head.")))
    }))
}

/// Renames (and drops) `weights` by [`rename`].
pub fn sanitize(config: &ModelConfig, weights: Weights) -> Result<Weights> {
    let pre_cut = weights.pre_cut().clone();
    let mut out = std::collections::HashMap::with_capacity(weights.len());
    for (name, array) in weights.into_map() {
        if let Some(new) = rename(config, &name)? {
            out.insert(new, array);
        }
    }
    let mut renamed = Weights::from_map(out);
    renamed.set_pre_cut(pre_cut);
    Ok(renamed)
}

/// `quantization` with its per-module overrides renamed by [`rename`] (dropped modules'
/// overrides removed).
pub fn rename_quantization(
    config: &ModelConfig,
    mut quantization: crate::config::QuantizationConfig,
) -> Result<crate::config::QuantizationConfig> {
    let mut overrides = std::collections::BTreeMap::new();
    for (module, params) in std::mem::take(&mut quantization.overrides) {
        if let Some(name) = rename(config, &format!("{module}.weight"))? {
            let module = name.strip_suffix(".weight").unwrap_or(&name).to_string();
            overrides.insert(module, params);
        }
    }
    quantization.overrides = overrides;
    Ok(quantization)
}

/// The tensors the family of `config` takes, under the decoder's names with their dense
/// shapes (see [`crate::load::plan`]); [`Error::UnsupportedModel`] for an unknown
/// `model_type`.
pub fn expected_tensors(config: &ModelConfig) -> Result<Vec<ExpectedTensor>> {
    Ok(crate::nn::decoder::expected_tensors(&model_spec(config)?))
}

/// Builds the family of `config.model_type` from `weights` (already under the decoder's
/// names, see [`sanitize`]), consuming every tensor: a missing tensor is
/// [`Error::MissingTensor`], a mis-shaped one [`Error::ShapeMismatch`], a left-over one
/// [`Error::UnexpectedTensors`], and an unknown `model_type` [`Error::UnsupportedModel`].
///
/// ```
/// use mlx_models::config::ModelConfig;
/// use mlx_models::families::{build, BuildOptions};
/// use mlx_models::{weights::Weights, Error};
/// let config = ModelConfig::from_json(r#"{"model_type":"gpt2","hidden_size":8,
///     "num_hidden_layers":1,"intermediate_size":8,"num_attention_heads":2,"vocab_size":4}"#)?;
/// let options = BuildOptions { dtype: mlx_rs::Dtype::Float32, quantization: None, huge_pages: false };
/// let r = build(&config, Weights::default(), &options);
/// assert!(matches!(r, Err(Error::UnsupportedModel { .. })));
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn build(
    config: &ModelConfig,
    weights: Weights,
    options: &BuildOptions,
) -> Result<Box<dyn CausalLm>> {
    Ok(Box::new(build_decoder(config, weights, options)?))
}

/// [`build`] of this rank's share of the model when `parallel` spreads it over several
/// processes ([`Decoder::build_parallel`]).
pub fn build_parallel(
    config: &ModelConfig,
    weights: Weights,
    options: &BuildOptions,
    parallel: Option<&crate::parallel::Parallel>,
) -> Result<Box<dyn CausalLm>> {
    let spec = model_spec(config)?;
    Ok(Box::new(Decoder::build_parallel(
        config, spec, weights, options, parallel,
    )?))
}

/// [`build`], returning the concrete [`Decoder`].
pub fn build_decoder(
    config: &ModelConfig,
    weights: Weights,
    options: &BuildOptions,
) -> Result<Decoder> {
    let spec = model_spec(config)?;
    Decoder::build(config, spec, weights, options)
}

/// The tensor names of a multimodal wrapper's text model under the decoder's layout:
/// `language_model.model.*` and `model.language_model.*` become `model.*`,
/// `language_model.lm_head.*` becomes `lm_head.*`; vision towers and projectors are dropped.
pub(crate) fn text_model_name(name: &str) -> Option<String> {
    const DROPPED: &[&str] = &[
        "vision_tower.",
        "multi_modal_projector.",
        "model.vision_tower.",
        "model.multi_modal_projector.",
        "vision_model.",
    ];
    if DROPPED.iter().any(|p| name.starts_with(p)) {
        return None;
    }
    for (from, to) in [
        ("language_model.model.", "model."),
        ("model.language_model.", "model."),
        ("language_model.lm_head.", "lm_head."),
    ] {
        if let Some(rest) = name.strip_prefix(from) {
            return Some(format!("{to}{rest}"));
        }
    }
    Some(name.to_string())
}

/// A `usize` config value as MLX's `i32`, or a [`Error::ConfigValue`] naming the field.
pub(crate) fn dim(field: &str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| Error::ConfigValue {
        field: field.to_string(),
        value: value.to_string(),
        expected: "at most 2^31 - 1 (MLX's shape type)",
    })
}
