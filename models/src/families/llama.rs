//! Llama (`model_type` "llama", Llama 2/3.x and the many models that reuse its block): the
//! baseline decoder of model-families.md §0, and the block Qwen2, Qwen3 and Mistral build with
//! their own differences ([`LlamaBlock`]).
//!
//! Per layer: `h = x + self_attn(input_layernorm(x))`, `out = h + mlp(post_attention_layernorm(h))`
//! (SwiGLU); then `model.norm` and the LM head (`lm_head`, or the embedding matrix when
//! `tie_word_embeddings`).
//!
//! Quirks: `attention_bias` puts a bias on all four projections and `mlp_bias` on the three MLP
//! projections (both false in released Llama 3); llama3 / linear RoPE scaling from
//! `rope_scaling` / `rope_parameters`. Defaults: `rms_norm_eps` 1e-5, `rope_theta` 1e4, untied.
//! GGUF: arch `llama`, Q/K rows permuted by the converter (undone at load).

use super::{default_key, dim, Family, GgufConventions};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::nn::spec::{
    Activation, AttentionSpec, BlockSpec, KvSource, LayerKind, LayerNorms, MlpSpec, ModelSpec,
    NormSpec, NormWeight, QueryScaling, RopeSpec,
};
use serde_json::{json, Map, Value};

/// The registry entry.
pub const FAMILY: Family = Family {
    name: "llama",
    model_types: &["llama"],
    gguf_architectures: &["llama"],
    defaults,
    spec,
    rename: keep_name,
    stop_tokens: &[],
    always_bos: false,
    gguf: GgufConventions {
        permuted_qk: true,
        ..GgufConventions::PLAIN
    },
};

fn defaults(config: &mut Map<String, Value>) {
    default_key(config, "rms_norm_eps", json!(1e-5));
}

fn spec(config: &ModelConfig) -> Result<ModelSpec> {
    let bias = config.attention_bias.unwrap_or(false);
    LlamaBlock {
        qkv_bias: bias,
        o_bias: bias,
        mlp_bias: config.mlp_bias.unwrap_or(false),
        ..LlamaBlock::default()
    }
    .model_spec(config)
}

/// Checkpoint names are the decoder's.
pub(crate) fn keep_name(_: &ModelConfig, name: &str) -> Option<String> {
    Some(name.to_string())
}

/// The Llama block with the variations of the families that reuse it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LlamaBlock {
    /// Bias on q, k and v.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// Per-head q/k RMSNorm (Qwen3).
    pub qk_norm: bool,
    /// Honour `sliding_window` (on every layer, or on the `sliding_attention` ones of
    /// `layer_types`): Mistral.
    pub sliding_window: bool,
}

impl LlamaBlock {
    /// The spec of `config`'s model with this block on every layer.
    pub fn model_spec(self, config: &ModelConfig) -> Result<ModelSpec> {
        check_activation(config, &["silu"])?;
        let hidden = dim("hidden_size", config.hidden_size)?;
        let head_dim = dim("head_dim", config.head_dim())?;
        let eps = config.rms_norm_eps();
        let norm = NormSpec {
            eps,
            weight: NormWeight::Direct,
        };
        let scaling = config.rope_scaling();
        let query_scaling = match &scaling {
            Some(s) => s
                .llama_4_scaling_beta
                .map(|beta| -> Result<QueryScaling> {
                    let original =
                        s.original_max_position_embeddings
                            .ok_or_else(|| Error::ConfigValue {
                                field: "rope_parameters.original_max_position_embeddings".into(),
                                value: "missing".into(),
                                expected: "a token count (needed by llama_4_scaling_beta)",
                            })?;
                    Ok(QueryScaling {
                        beta,
                        original: dim("original_max_position_embeddings", original)?,
                    })
                })
                .transpose()?,
            None => None,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| -> Result<BlockSpec> {
                let sliding = self.sliding_window
                    && config.sliding_window.is_some()
                    && config
                        .layer_types
                        .as_ref()
                        .is_none_or(|t| t[i] == "sliding_attention");
                let window = if sliding {
                    config
                        .sliding_window
                        .map(|w| dim("sliding_window", w))
                        .transpose()?
                } else {
                    None
                };
                Ok(BlockSpec {
                    attention: AttentionSpec {
                        heads: dim("num_attention_heads", config.num_attention_heads)?,
                        kv_heads: dim("num_key_value_heads", config.num_key_value_heads())?,
                        head_dim,
                        qkv_bias: self.qkv_bias,
                        o_bias: self.o_bias,
                        qk_norm: self.qk_norm.then_some(norm),
                        scale: (head_dim as f32).powf(-0.5),
                        rope: RopeSpec {
                            theta: config.rope_theta(),
                            dims: head_dim,
                            scaling: scaling.clone(),
                        },
                        kind: if window.is_some() {
                            LayerKind::Sliding
                        } else {
                            LayerKind::Full
                        },
                        window,
                        logit_softcap: None,
                        query_scaling,
                        value_norm: None,
                        kv: KvSource::Projected,
                    },
                    mlp: MlpSpec {
                        intermediate: dim("intermediate_size", config.intermediate_size)?,
                        bias: self.mlp_bias,
                        activation: Activation::Silu,
                    },
                    norms: LayerNorms::PRE_NORM,
                    norm,
                    moe: None,
                    per_layer_input: None,
                    layer_scalar: false,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelSpec {
            hidden,
            vocab: dim("vocab_size", config.vocab_size)?,
            embedding_scale: None,
            final_norm: norm,
            tied: config.tie_word_embeddings(),
            final_softcap: None,
            layers,
            per_layer_embedding: None,
        })
    }
}

/// [`Error::ConfigValue`] unless the config's MLP activation (`hidden_act` or
/// `hidden_activation`, when given) is one of `allowed`.
pub(crate) fn check_activation(config: &ModelConfig, allowed: &[&str]) -> Result<()> {
    for (field, value) in [
        ("hidden_act", &config.hidden_act),
        ("hidden_activation", &config.hidden_activation),
    ] {
        if let Some(v) = value {
            if !allowed.contains(&v.as_str()) {
                return Err(Error::ConfigValue {
                    field: field.into(),
                    value: v.clone(),
                    expected: "the family's activation (silu for Llama-style, gelu_pytorch_tanh for Gemma)",
                });
            }
        }
    }
    Ok(())
}
