//! Qwen2 / Qwen2.5 (`model_type` "qwen2"): the Llama block with q/k/v biases.
//!
//! Quirks (model-families.md §2):
//! - q_proj, k_proj and v_proj always have a bias, o_proj never (fixed by the architecture, not
//!   read from `attention_bias`); the MLP has none.
//! - `use_sliding_window` / `sliding_window` / `max_window_layers` are ignored (plain causal
//!   attention, as mlx-lm and transformers with the released configs, which disable it).
//! - Defaults: `rope_theta` 1e6, `rms_norm_eps` 1e-6, tied embeddings.

use super::llama::{keep_name, LlamaBlock};
use super::{default_key, default_rope_theta, Family, GgufConventions};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::nn::spec::ModelSpec;
use serde_json::{json, Map, Value};

/// The registry entry.
pub const FAMILY: Family = Family {
    name: "qwen2",
    model_types: &["qwen2"],
    gguf_architectures: &["qwen2"],
    defaults,
    spec,
    rename: keep_name,
    stop_tokens: &[],
    always_bos: false,
    gguf: GgufConventions::PLAIN,
};

fn defaults(config: &mut Map<String, Value>) {
    default_key(config, "rms_norm_eps", json!(1e-6));
    default_rope_theta(config, 1e6);
    default_key(config, "tie_word_embeddings", json!(true));
}

fn spec(config: &ModelConfig) -> Result<ModelSpec> {
    LlamaBlock {
        qkv_bias: true,
        ..LlamaBlock::default()
    }
    .model_spec(config)
}
