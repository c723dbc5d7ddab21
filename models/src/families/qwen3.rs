//! Qwen3 (`model_type` "qwen3"): the Llama block with per-head q/k norms.
//!
//! Quirks (model-families.md §3):
//! - `self_attn.q_norm` / `self_attn.k_norm`: RMSNorm over head_dim (weights `[head_dim]`,
//!   eps `rms_norm_eps`) applied per head after the reshape and before RoPE.
//! - No attention bias, whatever `attention_bias` says; no MLP bias.
//! - `head_dim` is explicit (128 in the released models) and usually differs from
//!   hidden / heads: q_proj is `[heads·head_dim, hidden]`, o_proj `[hidden, heads·head_dim]`.

use super::llama::Llama;
use super::BuildOptions;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::nn::AttentionSpec;
use crate::weights::Weights;

/// The attention of Qwen3: no biases, per-head q/k RMSNorm.
pub const ATTENTION: AttentionSpec = AttentionSpec {
    qkv_bias: false,
    o_bias: false,
    qk_norm: true,
};

/// Builds a Qwen3 model (the [`Llama`] decoder with [`ATTENTION`]).
pub fn build(config: &ModelConfig, weights: Weights, options: &BuildOptions) -> Result<Llama> {
    Llama::build(config, weights, options, ATTENTION, false)
}
