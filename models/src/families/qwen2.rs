//! Qwen2 / Qwen2.5 (`model_type` "qwen2"): the Llama block with q/k/v biases.
//!
//! Quirks (model-families.md §2):
//! - q_proj, k_proj and v_proj always have a bias, o_proj never (fixed by the architecture, not
//!   read from `attention_bias`); the MLP has none.
//! - `use_sliding_window` / `sliding_window` / `max_window_layers` are ignored (plain causal
//!   attention, as mlx-lm); defaults rope_theta 1e6, eps 1e-6, tied embeddings (see
//!   [`ModelConfig`]).

use super::llama::Llama;
use super::BuildOptions;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::nn::AttentionSpec;
use crate::weights::Weights;

/// The attention of Qwen2: biased q/k/v, unbiased output.
pub const ATTENTION: AttentionSpec = AttentionSpec {
    qkv_bias: true,
    o_bias: false,
    qk_norm: false,
};

/// Builds a Qwen2 model (the [`Llama`] decoder with [`ATTENTION`]).
pub fn build(config: &ModelConfig, weights: Weights, options: &BuildOptions) -> Result<Llama> {
    Llama::build(config, weights, options, ATTENTION, false)
}
