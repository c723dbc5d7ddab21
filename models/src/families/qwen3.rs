//! Qwen3 (`model_type` "qwen3"): the Llama block with per-head q/k norms.
//!
//! Quirks (model-families.md §3):
//! - `self_attn.q_norm` / `self_attn.k_norm`: RMSNorm over head_dim (weights `[head_dim]`,
//!   eps `rms_norm_eps`) applied per head after the reshape and before RoPE.
//! - No attention bias, whatever `attention_bias` says; no MLP bias.
//! - `head_dim` is explicit (128 in the released models) and usually differs from
//!   hidden / heads: q_proj is `[heads·head_dim, hidden]`, o_proj `[hidden, heads·head_dim]`.
//! - Defaults: `rope_theta` 1e6, `rms_norm_eps` 1e-6.

use super::llama::{keep_name, LlamaBlock};
use super::{default_key, default_rope_theta, Family, GgufConventions};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::nn::spec::ModelSpec;
use serde_json::{json, Map, Value};

/// The registry entry.
pub const FAMILY: Family = Family {
    name: "qwen3",
    model_types: &["qwen3"],
    gguf_architectures: &["qwen3"],
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
}

fn spec(config: &ModelConfig) -> Result<ModelSpec> {
    LlamaBlock {
        qk_norm: true,
        ..LlamaBlock::default()
    }
    .model_spec(config)
}
