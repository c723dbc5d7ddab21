//! Mistral (`model_type` "mistral": 7B v0.1–v0.3, Nemo, Small 24B; "ministral"; "ministral3",
//! the text model of "mistral3" checkpoints): the Llama block with a sliding window and an
//! explicit `head_dim` (model-families.md §6, gemma-mistral-details.md).
//!
//! Quirks:
//! - `sliding_window` is honoured exactly (mlx-lm ignores it): key `j` is visible from query `i`
//!   iff `0 ≤ i − j < W`, on every layer, or on the `sliding_attention` layers of
//!   `layer_types` (Ministral); the cache of such a layer is a rotating buffer of about `W`.
//! - `head_dim` may differ from hidden / heads (Nemo, Small 3: 128).
//! - Ministral 3: YaRN RoPE (`rope_parameters`) and the query scaling
//!   `q · (1 + β·ln(1 + floor(pos / original_max_position_embeddings)))` after RoPE, with
//!   `β = llama_4_scaling_beta`.
//! - `mistral3` multimodal checkpoints: the decoder in `text_config`, weights under
//!   `language_model.model.*` / `model.language_model.*`; the Pixtral tower and projector are
//!   dropped.
//! - Defaults (transformers' `MistralConfig`): `sliding_window` 4096, `rms_norm_eps` 1e-6,
//!   `rope_theta` 1e4, untied.
//! - GGUF: Mistral 7B/Nemo files use arch `llama` (read by [`super::llama`], without a window,
//!   as llama.cpp runs them); Ministral 3 / Mistral Small 3.1+ files use arch `mistral3`: the
//!   Llama layout (Q/K permuted) with `rope.scaling.yarn_beta_fast` / `_slow`,
//!   `yarn_log_multiplier` (= `mscale_all_dim`; `mscale` is not stored and taken as 1, as
//!   llama.cpp does) and `attention.temperature_scale` (= `llama_4_scaling_beta`, over
//!   `rope.scaling.original_context_length`).

use super::llama::LlamaBlock;
use super::{default_key, default_rope_theta, text_model_name, Family, GgufConventions};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::load::gguf_file::GgufFile;
use crate::nn::spec::ModelSpec;
use serde_json::{json, Map, Value};

/// The registry entry.
pub const FAMILY: Family = Family {
    name: "mistral",
    model_types: &["mistral", "ministral", "ministral3", "mistral3"],
    gguf_architectures: &["mistral3"],
    defaults,
    spec,
    rename,
    stop_tokens: &[],
    always_bos: false,
    gguf: GgufConventions {
        permuted_qk: true,
        metadata: gguf_metadata,
        ..GgufConventions::PLAIN
    },
};

fn defaults(config: &mut Map<String, Value>) {
    if config.get("model_type").and_then(Value::as_str) == Some("mistral3") {
        // A wrapper whose `text_config` names no model type: transformers' default text model.
        config.insert("model_type".into(), json!("mistral"));
    }
    default_key(config, "rms_norm_eps", json!(1e-6));
    default_rope_theta(config, 1e4);
    if config.get("model_type").and_then(Value::as_str) != Some("ministral3") {
        default_key(config, "sliding_window", json!(4096));
    }
}

fn spec(config: &ModelConfig) -> Result<ModelSpec> {
    LlamaBlock {
        sliding_window: true,
        ..LlamaBlock::default()
    }
    .model_spec(config)
}

fn rename(_: &ModelConfig, name: &str) -> Option<String> {
    text_model_name(name)
}

/// `mistral3.*` keys: the text model is Ministral 3's; yarn's ramp bounds and attention factor,
/// and the query scaling's `β`, go into the `rope_scaling` entry the common keys started.
fn gguf_metadata(gguf: &GgufFile, arch: &str, config: &mut Map<String, Value>) -> Result<()> {
    config.insert("model_type".into(), json!("ministral3"));
    let key = |k: &str| format!("{arch}.{k}");
    let mut extra = Map::new();
    for (field, k) in [
        ("beta_fast", "rope.scaling.yarn_beta_fast"),
        ("beta_slow", "rope.scaling.yarn_beta_slow"),
        ("mscale_all_dim", "rope.scaling.yarn_log_multiplier"),
        ("llama_4_scaling_beta", "attention.temperature_scale"),
    ] {
        let k = key(k);
        if let Some(v) = gguf.metadata_f64(&k)? {
            if !v.is_finite() {
                return Err(Error::Gguf(format!("metadata `{k}` = {v} is not finite")));
            }
            extra.insert(field.into(), json!(v));
        }
    }
    if extra.contains_key("mscale_all_dim") {
        extra.insert("mscale".into(), json!(1.0));
    }
    if extra.is_empty() {
        return Ok(());
    }
    match config.get_mut("rope_scaling") {
        Some(Value::Object(rope)) => rope.extend(extra),
        _ if extra.contains_key("llama_4_scaling_beta") => {
            return Err(Error::Gguf(format!(
                "`{}` needs the yarn keys `{}` and `{}`",
                key("attention.temperature_scale"),
                key("rope.scaling.type"),
                key("rope.scaling.original_context_length")
            )))
        }
        _ => {}
    }
    Ok(())
}
