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
//!   `rope_theta` 1e4, untied. GGUF: Mistral 7B/Nemo files use arch `llama` (read by
//!   [`super::llama`], without a window, as llama.cpp runs them).

use super::llama::LlamaBlock;
use super::{default_key, default_rope_theta, text_model_name, Family, GgufConventions};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::nn::spec::ModelSpec;
use serde_json::{json, Map, Value};

/// The registry entry.
pub const FAMILY: Family = Family {
    name: "mistral",
    model_types: &["mistral", "ministral", "ministral3", "mistral3"],
    gguf_architectures: &[],
    defaults,
    spec,
    rename,
    stop_tokens: &[],
    gguf: GgufConventions {
        permuted_qk: true,
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
