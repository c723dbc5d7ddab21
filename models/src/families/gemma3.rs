//! Gemma 3 (`model_type` "gemma3_text"; "gemma3" wraps it in a sparse `text_config`), after
//! model-families.md §5a and gemma-mistral-details.md:
//!
//! ```text
//! h = E[ids] · bf16(√hidden)
//! per layer:  h = h + post_attention_norm(attn(input_norm(h)))      q/k RMSNorm before RoPE
//!             h = h + post_feedforward_norm(down(gelu_tanh(gate(m)) · up(m))),  m = pre_feedforward_norm(h)
//! logits = final_norm(h) · Eᵀ
//! ```
//!
//! - Every norm (the four per layer, q/k, final) multiplies by `1 + w` in Hugging Face
//!   checkpoints ([`NormWeight::OnePlus`], folded at load); GGUF files store `1 + w` already.
//! - Attention scale `query_pre_attn_scalar^-0.5` (168 on the 27B, not `head_dim`).
//! - Layer kinds from `layer_types`, else every `sliding_window_pattern`-th layer (6) is
//!   global; sliding layers see `sliding_window` keys and rotate with `rope_local_base_freq`
//!   (1e4), unscaled; global layers use `rope_theta` (1e6) with `rope_scaling` (linear ×8 on
//!   4B+). A per-layer-type `rope_parameters` (`full_attention` / `sliding_attention`) wins.
//! - Tied head; no softcaps in Gemma 3 (`attn_logit_softcapping` / `final_logit_softcapping`
//!   are honoured when a config sets them).
//! - `gemma3` checkpoints: weights under `language_model.model.*` or
//!   `model.language_model.*`, vision tower and projector dropped; the embedding has 262208
//!   rows for a 262144-token vocabulary (generation never samples an id past the tokenizer's).
//! - GGUF arch `gemma3`: `ffn_norm` is the pre-feed-forward norm, `post_attention_norm` and
//!   `post_ffw_norm` the output norms; Q/K not permuted; `gemma3.rope.freq_base_swa` (default
//!   1e4); no `query_pre_attn_scalar` key: `hidden / heads` on the 62-layer 27B, else
//!   `head_dim` (llama.cpp's rule).

use super::llama::check_activation;
use super::{default_key, default_rope_theta, dim, text_model_name, Family, GgufConventions};
use crate::config::{ModelConfig, SourceFormat};
use crate::error::{Error, Result};
use crate::load::gguf_file::GgufFile;
use crate::nn::spec::{
    Activation, AttentionSpec, BlockSpec, KvSource, LayerKind, LayerNorms, MlpSpec, ModelSpec,
    NormSpec, NormWeight, RopeSpec,
};
use serde_json::{json, Map, Value};

/// The registry entry.
pub const FAMILY: Family = Family {
    name: "gemma3",
    model_types: &["gemma3_text", "gemma3"],
    gguf_architectures: &["gemma3"],
    defaults,
    spec,
    rename,
    stop_tokens: &["<end_of_turn>"],
    always_bos: false,
    gguf: GgufConventions {
        tensor_names: &[
            ("ffn_norm", "pre_feedforward_layernorm"),
            ("post_attention_norm", "post_attention_layernorm"),
            ("post_ffw_norm", "post_feedforward_layernorm"),
        ],
        permuted_qk: false,
        metadata: gguf_metadata,
        reads_rope_freqs: false,
    },
};

/// `Gemma3TextConfig`'s defaults (transformers 5.23), for sparse `text_config`s.
fn defaults(config: &mut Map<String, Value>) {
    config.insert("model_type".into(), json!("gemma3_text"));
    for (key, value) in [
        ("vocab_size", json!(262208)),
        ("hidden_size", json!(2304)),
        ("intermediate_size", json!(9216)),
        ("num_hidden_layers", json!(26)),
        ("num_attention_heads", json!(8)),
        ("num_key_value_heads", json!(4)),
        ("head_dim", json!(256)),
        ("hidden_activation", json!("gelu_pytorch_tanh")),
        ("max_position_embeddings", json!(131072)),
        ("rms_norm_eps", json!(1e-6)),
        ("rope_local_base_freq", json!(10_000.0)),
        ("query_pre_attn_scalar", json!(256)),
        ("sliding_window", json!(4096)),
        ("sliding_window_pattern", json!(6)),
        ("tie_word_embeddings", json!(true)),
    ] {
        default_key(config, key, value);
    }
    default_rope_theta(config, 1_000_000.0);
}

fn rename(_: &ModelConfig, name: &str) -> Option<String> {
    text_model_name(name)
}

fn spec(config: &ModelConfig) -> Result<ModelSpec> {
    check_activation(config, &["gelu_pytorch_tanh", "gelu_tanh", "gelu"])?;
    let hidden = dim("hidden_size", config.hidden_size)?;
    let head_dim = dim("head_dim", config.head_dim())?;
    let weight = match config.source_format {
        SourceFormat::HuggingFace => NormWeight::OnePlus,
        SourceFormat::Gguf => NormWeight::Direct,
    };
    let norm = NormSpec {
        eps: config.rms_norm_eps(),
        weight,
    };
    let pattern = config.sliding_window_pattern.unwrap_or(6).max(1);
    let scalar = config.query_pre_attn_scalar.unwrap_or(head_dim as f64);
    let window = config
        .sliding_window
        .map(|w| dim("sliding_window", w))
        .transpose()?;
    let layers = (0..config.num_hidden_layers)
        .map(|i| -> Result<BlockSpec> {
            let kind = match &config.layer_types {
                Some(types) if types[i] == "full_attention" => LayerKind::Full,
                Some(_) => LayerKind::Sliding,
                None if (i + 1) % pattern == 0 => LayerKind::Full,
                None => LayerKind::Sliding,
            };
            let rope = match kind {
                LayerKind::Full => RopeSpec {
                    theta: config.rope_theta(),
                    dims: head_dim,
                    scaling: config.rope_scaling(),
                },
                LayerKind::Sliding => RopeSpec {
                    theta: config.rope_local_base_freq.unwrap_or(10_000.0),
                    dims: head_dim,
                    scaling: None,
                },
            };
            let rope = per_type_rope(config, kind, rope);
            Ok(BlockSpec {
                attention: AttentionSpec {
                    heads: dim("num_attention_heads", config.num_attention_heads)?,
                    kv_heads: dim("num_key_value_heads", config.num_key_value_heads())?,
                    head_dim,
                    qkv_bias: config.attention_bias.unwrap_or(false),
                    o_bias: config.attention_bias.unwrap_or(false),
                    qk_norm: Some(norm),
                    scale: scalar.powf(-0.5) as f32,
                    rope,
                    kind,
                    window: if kind == LayerKind::Sliding {
                        window
                    } else {
                        None
                    },
                    logit_softcap: config.attn_logit_softcapping,
                    query_scaling: None,
                    value_norm: None,
                    kv: KvSource::Projected,
                },
                mlp: MlpSpec {
                    intermediate: dim("intermediate_size", config.intermediate_size)?,
                    bias: false,
                    activation: Activation::GeluTanh,
                },
                norms: LayerNorms::SANDWICH,
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
        embedding_scale: Some(half::bf16::from_f64((hidden as f64).sqrt()).to_f32()),
        final_norm: norm,
        tied: config.tie_word_embeddings(),
        final_softcap: config.final_logit_softcapping,
        layers,
        per_layer_embedding: None,
    })
}

/// `rope` with the entry of a per-layer-type `rope_parameters` for `kind` applied (its
/// `rope_theta` and scaling), when the config has one.
pub(crate) fn per_type_rope(config: &ModelConfig, kind: LayerKind, rope: RopeSpec) -> RopeSpec {
    let key = match kind {
        LayerKind::Full => "full_attention",
        LayerKind::Sliding => "sliding_attention",
    };
    match config.rope_parameters_for(key) {
        Some(entry) => RopeSpec {
            theta: entry.rope_theta.unwrap_or(rope.theta),
            dims: rope.dims,
            scaling: entry
                .rope_type
                .as_deref()
                .is_some_and(|t| t != "default")
                .then_some(entry),
        },
        None => rope,
    }
}

/// `gemma3.*` keys: the window and pattern, the sliding layers' RoPE base, and the attention
/// scale by llama.cpp's rule.
fn gguf_metadata(gguf: &GgufFile, arch: &str, config: &mut Map<String, Value>) -> Result<()> {
    let key = |k: &str| format!("{arch}.{k}");
    for (field, k) in [
        ("sliding_window", "attention.sliding_window"),
        ("sliding_window_pattern", "attention.sliding_window_pattern"),
    ] {
        let k = key(k);
        if let Some(v) = gguf.metadata_f64(&k)? {
            if !(v.is_finite() && v >= 1.0 && v.fract() == 0.0 && v <= i32::MAX as f64) {
                return Err(Error::Gguf(format!(
                    "metadata `{k}` = {v} is not a positive count"
                )));
            }
            config.insert(field.into(), json!(v as u64));
        }
    }
    let swa_base = gguf
        .metadata_f64(&key("rope.freq_base_swa"))?
        .unwrap_or(10_000.0);
    config.insert("rope_local_base_freq".into(), json!(swa_base));
    // llama.cpp's rules: the head size is `key_length`, else hidden / heads; the attention
    // scale is `(hidden / heads)^-0.5` on the 62-layer 27B, else `head_dim^-0.5`.
    let count = |config: &Map<String, Value>, k: &str| config.get(k).and_then(Value::as_u64);
    let hidden_per_head = match (
        count(config, "hidden_size"),
        count(config, "num_attention_heads"),
    ) {
        (Some(h), Some(n)) if n > 0 => Some(h / n),
        _ => None,
    };
    if let (None, Some(d)) = (count(config, "head_dim"), hidden_per_head) {
        config.insert("head_dim".into(), json!(d));
    }
    let scalar = match count(config, "num_hidden_layers") {
        Some(62) => hidden_per_head,
        _ => count(config, "head_dim"),
    };
    if let Some(s) = scalar {
        config.insert("query_pre_attn_scalar".into(), json!(s));
    }
    Ok(())
}
