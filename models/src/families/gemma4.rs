//! Gemma 4 (`model_type` "gemma4_text"; "gemma4" and "gemma4_unified" wrap it in a
//! `text_config`), after model-families.md §5b, gemma-mistral-details.md and transformers 5.23's
//! `modeling_gemma4.py`:
//!
//! ```text
//! h = E[ids] · bf16(√hidden)                 (E2B/E4B: per-layer inputs P from ids and h)
//! per layer:  h = h + post_attention_norm(attn(input_norm(h)))
//!             f = mlp(pre_feedforward_norm(h))                    GELU-tanh
//!               (26B-A4B: f = post_ffw_norm_1(f) + post_ffw_norm_2(experts(pre_ffw_norm_2(h))))
//!             h = h + post_feedforward_norm(f)
//!               (E2B/E4B: h = h + post_ple_norm(ple_proj(gelu(ple_gate(h)) · P[layer])))
//!             h = h · layer_scalar
//! logits = 30·tanh((final_norm(h) · Eᵀ) / 30)
//! ```
//!
//! - Norms multiply by plain `w` (no `1 + w`), in Hugging Face and GGUF files alike.
//! - Attention scale 1.0; q and k have per-head RMSNorms before RoPE; values get a scale-free
//!   RMSNorm (`v_norm`) and no RoPE.
//! - Layer kinds from `layer_types` (default: every 6th layer full), the last layer always full.
//!   Sliding layers: `head_dim`, `num_key_value_heads`, the `sliding_attention` RoPE (θ 1e4).
//!   Full layers: `global_head_dim` (512), `num_global_key_value_heads` when
//!   `attention_k_eq_v` (else `num_key_value_heads`), the `full_attention` RoPE (proportional,
//!   θ 1e6, a quarter of the pairs rotating). A `per_layer_config` (keyed by layer index or
//!   layer type) overrides head size and key/value heads per layer.
//! - `attention_k_eq_v`: full layers have no `v_proj`; values are the raw `k_proj` output.
//! - `num_kv_shared_layers` = N: the last N layers compute only queries and reuse the keys and
//!   values of the last earlier layer of their kind (their own `k_proj`/`v_proj`/`k_norm`
//!   tensors, still in checkpoints, are dropped); with `use_double_wide_mlp` their MLP is twice
//!   as wide.
//! - `hidden_size_per_layer_input` > 0: per-layer embeddings (E2B/E4B).
//! - `enable_moe_block`: `num_experts` experts, `top_k_experts` per token, each
//!   `moe_intermediate_size` wide, beside the dense MLP.
//! - `final_logit_softcapping` (30 on every released size); tied head.

use super::gemma3::per_type_rope;
use super::llama::check_activation;
use super::{default_key, dim, text_model_name, Family, GgufConventions};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::load::gguf_file::{GgufFile, MetaValue};
use crate::nn::spec::{
    Activation, AttentionSpec, BlockSpec, KvSource, LayerKind, LayerNorms, MlpSpec, ModelSpec,
    MoeSpec, NormSpec, NormWeight, PerLayerEmbeddingSpec, RopeSpec,
};
use serde_json::{json, Map, Value};

/// The registry entry.
pub const FAMILY: Family = Family {
    name: "gemma4",
    model_types: &["gemma4_text", "gemma4", "gemma4_unified"],
    gguf_architectures: &["gemma4"],
    defaults,
    spec,
    rename,
    stop_tokens: &["<turn|>"],
    always_bos: true,
    gguf: GgufConventions {
        tensor_names: &[
            ("ffn_norm", "pre_feedforward_layernorm"),
            ("post_attention_norm", "post_attention_layernorm"),
            ("post_ffw_norm", "post_feedforward_layernorm"),
            ("pre_ffw_norm_2", "pre_feedforward_layernorm_2"),
            ("post_ffw_norm_1", "post_feedforward_layernorm_1"),
            ("post_ffw_norm_2", "post_feedforward_layernorm_2"),
            ("layer_output_scale", "layer_scalar"),
            ("inp_gate", "per_layer_input_gate"),
            ("proj", "per_layer_projection"),
            ("post_norm", "post_per_layer_input_norm"),
            ("ffn_gate_inp", "router.proj"),
            ("ffn_gate_up_exps", "experts.gate_up_proj"),
            ("ffn_down_exps", "experts.down_proj"),
        ],
        permuted_qk: false,
        metadata: gguf_metadata,
        reads_rope_freqs: true,
    },
};

/// `Gemma4TextConfig`'s defaults (transformers 5.23), for sparse `text_config`s.
fn defaults(config: &mut Map<String, Value>) {
    config.insert("model_type".into(), json!("gemma4_text"));
    for (key, value) in [
        ("vocab_size", json!(262_144)),
        ("hidden_size", json!(2304)),
        ("intermediate_size", json!(9216)),
        ("num_hidden_layers", json!(30)),
        ("num_attention_heads", json!(8)),
        ("num_key_value_heads", json!(4)),
        ("head_dim", json!(256)),
        ("hidden_activation", json!("gelu_pytorch_tanh")),
        ("max_position_embeddings", json!(131_072)),
        ("rms_norm_eps", json!(1e-6)),
        ("sliding_window", json!(512)),
        ("tie_word_embeddings", json!(true)),
        ("vocab_size_per_layer_input", json!(262_144)),
        ("hidden_size_per_layer_input", json!(256)),
        ("global_head_dim", json!(512)),
        ("attention_k_eq_v", json!(false)),
        ("num_kv_shared_layers", json!(0)),
        ("enable_moe_block", json!(false)),
        ("use_double_wide_mlp", json!(false)),
        (
            "rope_parameters",
            json!({
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                   "rope_theta": 1_000_000.0}
            }),
        ),
    ] {
        default_key(config, key, value);
    }
}

/// Drops the multimodal towers, the clipped-linear buffers and, for KV-shared layers, the key
/// and value tensors they never use; strips the wrappers' prefixes; names the experts' bare
/// stacks as `.weight`s.
fn rename(config: &ModelConfig, name: &str) -> Option<String> {
    if let Some(n) = gguf_name(name) {
        return n;
    }
    const DROPPED: &[&str] = &[
        "model.audio_tower.",
        "model.embed_audio.",
        "model.embed_vision.",
        "model.vision_embedder.",
        "audio_tower.",
        "embed_audio.",
        "embed_vision.",
        "vision_embedder.",
    ];
    if DROPPED.iter().any(|p| name.starts_with(p))
        || [".input_min", ".input_max", ".output_min", ".output_max"]
            .iter()
            .any(|s| name.ends_with(s))
    {
        return None;
    }
    let name = text_model_name(name)?;
    if let Some(first) = first_shared_layer(config) {
        if let Some(rest) = name.strip_prefix("model.layers.") {
            let (index, part) = rest.split_once('.')?;
            let shared = index.parse::<usize>().is_ok_and(|i| i >= first);
            let unused = ["k_proj.", "v_proj.", "k_norm.", "v_norm."]
                .iter()
                .any(|p| {
                    part.strip_prefix("self_attn.")
                        .is_some_and(|r| r.starts_with(p))
                });
            if shared && unused {
                return None;
            }
        }
    }
    // Hugging Face stores the expert stacks as bare parameters (`experts.gate_up_proj`): under
    // the decoder's names they are `.weight`s, as GGUF files and quantized triplets have them.
    if name.ends_with(".experts.gate_up_proj") || name.ends_with(".experts.down_proj") {
        return Some(format!("{name}.weight"));
    }
    Some(name)
}

/// The GGUF names the common map leaves alone (model-level tensors, the router's scales) or
/// gives a `.weight` the decoder does not use; `None` for any other name.
fn gguf_name(name: &str) -> Option<Option<String>> {
    let top = match name {
        // Gemma 4's proportional RoPE, as llama.cpp bakes it in: read from the metadata.
        "rope_freqs.weight" => return Some(None),
        "per_layer_token_embd.weight" => "model.embed_tokens_per_layer.weight",
        "per_layer_model_proj.weight" => "model.per_layer_model_projection.weight",
        "per_layer_proj_norm.weight" => "model.per_layer_projection_norm.weight",
        _ => "",
    };
    if !top.is_empty() {
        return Some(Some(top.to_string()));
    }
    if let Some(rest) = name.strip_prefix("blk.") {
        let (layer, part) = rest.split_once('.')?;
        let module = match part {
            "ffn_gate_inp.scale" => "router.scale",
            "ffn_down_exps.scale" => "router.per_expert_scale",
            _ => return None,
        };
        return Some(Some(format!("model.layers.{layer}.{module}")));
    }
    name.strip_suffix(".layer_scalar.weight")
        .map(|stem| Some(format!("{stem}.layer_scalar")))
}

/// The first KV-shared layer, when the config shares any.
fn first_shared_layer(config: &ModelConfig) -> Option<usize> {
    let shared = extra_count(config, "num_kv_shared_layers").ok()??;
    (shared > 0).then(|| config.num_hidden_layers.saturating_sub(shared))
}

/// A non-negative integer key of the config's extra fields (`None` when absent or null).
fn extra_count(config: &ModelConfig, key: &str) -> Result<Option<usize>> {
    match config.extra.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| Error::ConfigValue {
                field: key.to_string(),
                value: v.to_string(),
                expected: "a non-negative integer",
            }),
    }
}

/// A boolean key of the config's extra fields (`false` when absent or null).
fn extra_flag(config: &ModelConfig, key: &str) -> Result<bool> {
    match config.extra.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(Error::ConfigValue {
            field: key.to_string(),
            value: v.to_string(),
            expected: "true or false",
        }),
    }
}

/// The overrides of `per_layer_config` for layer `index` of kind `kind`: `(head_dim,
/// num_key_value_heads)`, each optional. The object may be keyed by layer index or by layer
/// type, or be a list with one entry per layer.
fn per_layer_override(
    config: &ModelConfig,
    index: usize,
    kind: &str,
) -> Result<(Option<usize>, Option<usize>)> {
    let entry = match config.extra.get("per_layer_config") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => map.get(&index.to_string()).or_else(|| map.get(kind)),
        Some(Value::Array(list)) => list.get(index),
        Some(v) => {
            return Err(Error::ConfigValue {
                field: "per_layer_config".into(),
                value: v.to_string(),
                expected: "an object keyed by layer index or type, or a list",
            })
        }
    };
    let Some(entry) = entry.filter(|e| !e.is_null()) else {
        return Ok((None, None));
    };
    let count = |key: &str| -> Result<Option<usize>> {
        match entry.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| Some(n as usize))
                .ok_or_else(|| Error::ConfigValue {
                    field: format!("per_layer_config[{index}].{key}"),
                    value: v.to_string(),
                    expected: "a positive integer",
                }),
        }
    };
    Ok((count("head_dim")?, count("num_key_value_heads")?))
}

/// `gemma4.*` keys (llama.cpp's converter): layer kinds from the `sliding_window_pattern` bool
/// array; per-layer head sizes (`key_length` / `key_length_swa`) and key/value heads
/// (`head_count_kv`, per layer) as a `per_layer_config` list; the double-wide MLP from the
/// per-layer `feed_forward_length`; keys-as-values when full layers have no `attn_v`; KV
/// sharing, per-layer inputs, experts, softcap; the RoPE of both kinds, the full layers'
/// rotated share read from the `rope_freqs` divisors (1 rotates, 1e30 stands still).
fn gguf_metadata(gguf: &GgufFile, arch: &str, config: &mut Map<String, Value>) -> Result<()> {
    let key = |k: &str| format!("{arch}.{k}");
    let bad = |k: &str, what: &str| Error::Gguf(format!("metadata `{}` {what}", key(k)));
    let count = |k: &str| -> Result<Option<usize>> {
        match gguf.metadata_f64(&key(k))? {
            None => Ok(None),
            Some(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= i32::MAX as f64 => {
                Ok(Some(v as usize))
            }
            Some(v) => Err(bad(k, &format!("= {v} is not a count"))),
        }
    };
    let layers = config
        .get("num_hidden_layers")
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize;
    let per_layer = |k: &str| -> Result<Option<Vec<usize>>> {
        match gguf.get(&key(k)) {
            Some(MetaValue::Ints(v)) => {
                if v.len() != layers || v.iter().any(|&x| x < 0 || x > i32::MAX as i64) {
                    return Err(bad(k, &format!("must hold {layers} counts")));
                }
                Ok(Some(v.iter().map(|&x| x as usize).collect()))
            }
            _ => Ok(count(k)?.map(|v| vec![v; layers])),
        }
    };
    let sliding: Vec<bool> = match gguf.metadata_ints(&key("attention.sliding_window_pattern"))? {
        Some(v) if v.len() == layers => v.iter().map(|&b| b != 0).collect(),
        Some(_) => {
            return Err(bad(
                "attention.sliding_window_pattern",
                "must hold one flag per layer",
            ))
        }
        None => (0..layers).map(|i| (i + 1) % 6 != 0).collect(),
    };
    let types: Vec<&str> = sliding
        .iter()
        .map(|&s| {
            if s {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    config.insert("layer_types".into(), json!(types));
    if let Some(w) = count("attention.sliding_window")? {
        config.insert("sliding_window".into(), json!(w));
    }
    let full_dim = count("attention.key_length")?;
    let swa_dim = count("attention.key_length_swa")?.or(full_dim);
    let kv = per_layer("attention.head_count_kv")?;
    let entries: Vec<Value> = (0..layers)
        .map(|i| {
            let mut e = Map::new();
            let d = if sliding[i] { swa_dim } else { full_dim };
            if let Some(d) = d {
                e.insert("head_dim".into(), json!(d));
            }
            if let Some(kv) = &kv {
                e.insert("num_key_value_heads".into(), json!(kv[i]));
            }
            Value::Object(e)
        })
        .collect();
    config.insert("per_layer_config".into(), Value::Array(entries));
    if let Some(d) = swa_dim {
        config.insert("head_dim".into(), json!(d));
    }
    if let Some(d) = full_dim {
        config.insert("global_head_dim".into(), json!(d));
    }
    if let Some(kv) = &kv {
        if let Some(first) = sliding.iter().position(|&s| s) {
            config.insert("num_key_value_heads".into(), json!(kv[first]));
        }
    }
    let shared = count("attention.shared_kv_layers")?.unwrap_or(0);
    config.insert("num_kv_shared_layers".into(), json!(shared));
    if let Some(ff) = per_layer("feed_forward_length")? {
        let first_shared = layers.saturating_sub(shared);
        let base = ff.first().copied().unwrap_or(0);
        let double = shared > 0 && ff[first_shared..].iter().all(|&f| f == 2 * base);
        let matches = ff.iter().enumerate().all(|(i, &f)| {
            f == if double && i >= first_shared {
                2 * base
            } else {
                base
            }
        });
        if !matches {
            return Err(bad(
                "feed_forward_length",
                "varies by layer in a way Gemma 4 does not (only KV-shared layers may be twice as wide)",
            ));
        }
        config.insert("intermediate_size".into(), json!(base));
        config.insert("use_double_wide_mlp".into(), json!(double));
    }
    let first_full = sliding.iter().position(|&s| !s);
    let k_eq_v = first_full.is_some_and(|i| {
        i < layers.saturating_sub(shared)
            && gguf.tensor(&format!("blk.{i}.attn_v.weight")).is_none()
            && gguf.tensor(&format!("blk.{i}.attn_k.weight")).is_some()
    });
    config.insert("attention_k_eq_v".into(), json!(k_eq_v));
    let ple = count("embedding_length_per_layer_input")?.unwrap_or(0);
    config.insert("hidden_size_per_layer_input".into(), json!(ple));
    if let Some(t) = gguf.tensor("per_layer_token_embd.weight") {
        if let Some(&rows) = t.shape().first() {
            config.insert("vocab_size_per_layer_input".into(), json!(rows));
        }
    }
    let experts = count("expert_count")?.unwrap_or(0);
    if experts > 0 {
        config.insert("enable_moe_block".into(), json!(true));
        config.insert("num_experts".into(), json!(experts));
        if let Some(k) = count("expert_used_count")? {
            config.insert("top_k_experts".into(), json!(k));
        }
        if let Some(i) = count("expert_feed_forward_length")? {
            config.insert("moe_intermediate_size".into(), json!(i));
        }
    }
    if let Some(c) = gguf.metadata_f64(&key("final_logit_softcapping"))? {
        config.insert("final_logit_softcapping".into(), json!(c));
    }
    let theta = |k: &str, default: f64| -> Result<f64> {
        Ok(gguf.metadata_f64(&key(k))?.unwrap_or(default))
    };
    let full_theta = theta("rope.freq_base", 1e6)?;
    let swa_theta = theta("rope.freq_base_swa", 1e4)?;
    let share = match gguf.tensor("rope_freqs.weight") {
        Some(t) if t.ggml_type == crate::load::gguf_file::GgmlType::F32 => {
            let bytes = gguf.read_tensor_data(t)?;
            let divisors: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let rotated = divisors.iter().take_while(|&&d| d == 1.0).count();
            if divisors[rotated..].iter().any(|&d| d < 1e20) || divisors.is_empty() {
                return Err(Error::Gguf(
                    "`rope_freqs` must be divisors 1.0 (rotated pairs) then ≥ 1e20 (pairs that stand still), as llama.cpp writes Gemma 4's proportional RoPE".into(),
                ));
            }
            rotated as f64 / divisors.len() as f64
        }
        Some(_) => return Err(Error::Gguf("`rope_freqs` must be stored as F32".into())),
        None => match (count("rope.dimension_count")?, full_dim) {
            (Some(n), Some(d)) if d > 0 => n as f64 / d as f64,
            _ => 1.0,
        },
    };
    config.remove("rope_theta");
    config.insert(
        "rope_parameters".into(),
        json!({
            "sliding_attention": {"rope_type": "default", "rope_theta": swa_theta},
            "full_attention": {"rope_type": "proportional", "rope_theta": full_theta,
                               "partial_rotary_factor": share}
        }),
    );
    Ok(())
}

fn spec(config: &ModelConfig) -> Result<ModelSpec> {
    check_activation(config, &["gelu_pytorch_tanh", "gelu_tanh", "gelu"])?;
    let hidden = dim("hidden_size", config.hidden_size)?;
    let layers_n = config.num_hidden_layers;
    let norm = NormSpec {
        eps: config.rms_norm_eps(),
        weight: NormWeight::Direct,
    };
    let mut kinds: Vec<LayerKind> = match &config.layer_types {
        Some(types) => types
            .iter()
            .map(|t| match t.as_str() {
                "full_attention" => LayerKind::Full,
                _ => LayerKind::Sliding,
            })
            .collect(),
        None => (0..layers_n)
            .map(|i| {
                if (i + 1) % 6 == 0 {
                    LayerKind::Full
                } else {
                    LayerKind::Sliding
                }
            })
            .collect(),
    };
    // transformers forces the last layer to full attention.
    if let Some(last) = kinds.last_mut() {
        *last = LayerKind::Full;
    }
    let window = config
        .sliding_window
        .map(|w| dim("sliding_window", w))
        .transpose()?;
    let k_eq_v = extra_flag(config, "attention_k_eq_v")?;
    let double_wide = extra_flag(config, "use_double_wide_mlp")?;
    let global_head_dim = extra_count(config, "global_head_dim")?.unwrap_or(512);
    let global_kv = extra_count(config, "num_global_key_value_heads")?;
    let shared = extra_count(config, "num_kv_shared_layers")?.unwrap_or(0);
    if shared >= layers_n && shared > 0 {
        return Err(Error::ConfigValue {
            field: "num_kv_shared_layers".into(),
            value: shared.to_string(),
            expected: "fewer than num_hidden_layers",
        });
    }
    let first_shared = layers_n - shared;
    // The layer each kind's shared layers reuse: the last one of that kind before them.
    let source = |kind: LayerKind| -> Result<usize> {
        (0..first_shared)
            .rev()
            .find(|&j| kinds[j] == kind)
            .ok_or_else(|| {
                Error::Config(format!(
                    "num_kv_shared_layers = {shared}: no layer of kind {kind:?} before layer {first_shared} stores keys and values to share"
                ))
            })
    };
    let per_layer_width = extra_count(config, "hidden_size_per_layer_input")?.unwrap_or(0);
    let moe = if extra_flag(config, "enable_moe_block")? {
        let need = |key: &str| -> Result<i32> {
            let v = extra_count(config, key)?
                .ok_or_else(|| Error::Config(format!("`enable_moe_block` needs `{key}`")))?;
            dim(key, v)
        };
        Some(MoeSpec {
            experts: need("num_experts")?,
            top_k: need("top_k_experts")?,
            intermediate: need("moe_intermediate_size")?,
            activation: Activation::GeluTanh,
        })
    } else {
        None
    };
    let heads = dim("num_attention_heads", config.num_attention_heads)?;
    let layers = (0..layers_n)
        .map(|i| -> Result<BlockSpec> {
            let kind = kinds[i];
            let type_name = match kind {
                LayerKind::Full => "full_attention",
                LayerKind::Sliding => "sliding_attention",
            };
            let (base_head_dim, base_kv) = match kind {
                LayerKind::Sliding => (config.head_dim(), config.num_key_value_heads()),
                LayerKind::Full => (
                    global_head_dim,
                    match (k_eq_v, global_kv) {
                        (true, Some(kv)) => kv,
                        _ => config.num_key_value_heads(),
                    },
                ),
            };
            let (head_override, kv_override) = per_layer_override(config, i, type_name)?;
            let head_dim = dim("head_dim", head_override.unwrap_or(base_head_dim))?;
            let kv_heads = dim("num_key_value_heads", kv_override.unwrap_or(base_kv))?;
            if kv_heads == 0 || heads % kv_heads != 0 || head_dim % 2 != 0 {
                return Err(Error::Config(format!(
                    "layer {i}: {heads} heads over {kv_heads} key/value heads of width {head_dim} (heads must be a multiple, the width even)"
                )));
            }
            let kv = if i >= first_shared {
                KvSource::Shared {
                    source: source(kind)?,
                }
            } else if k_eq_v && kind == LayerKind::Full {
                KvSource::KeysAsValues
            } else {
                KvSource::Projected
            };
            let rope = per_type_rope(
                config,
                kind,
                RopeSpec {
                    theta: match kind {
                        LayerKind::Full => 1_000_000.0,
                        LayerKind::Sliding => 10_000.0,
                    },
                    dims: head_dim,
                    scaling: None,
                },
            );
            let intermediate = dim("intermediate_size", config.intermediate_size)?;
            Ok(BlockSpec {
                attention: AttentionSpec {
                    heads,
                    kv_heads,
                    head_dim,
                    qkv_bias: config.attention_bias.unwrap_or(false),
                    o_bias: config.attention_bias.unwrap_or(false),
                    qk_norm: Some(norm),
                    scale: 1.0,
                    rope,
                    kind,
                    window: if kind == LayerKind::Sliding {
                        window
                    } else {
                        None
                    },
                    logit_softcap: None,
                    query_scaling: None,
                    value_norm: (!matches!(kv, KvSource::Shared { .. })).then_some(norm.eps),
                    kv,
                },
                mlp: MlpSpec {
                    intermediate: if double_wide && i >= first_shared {
                        intermediate * 2
                    } else {
                        intermediate
                    },
                    bias: false,
                    activation: Activation::GeluTanh,
                },
                norms: LayerNorms::SANDWICH,
                norm,
                moe,
                per_layer_input: (per_layer_width > 0)
                    .then(|| dim("hidden_size_per_layer_input", per_layer_width))
                    .transpose()?,
                layer_scalar: true,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab = dim("vocab_size", config.vocab_size)?;
    let per_layer_embedding = if per_layer_width > 0 {
        let rows = extra_count(config, "vocab_size_per_layer_input")?.unwrap_or(config.vocab_size);
        if rows < config.vocab_size {
            return Err(Error::Config(format!(
                "vocab_size_per_layer_input ({rows}) is smaller than vocab_size ({}): some tokens would have no per-layer embedding",
                config.vocab_size
            )));
        }
        Some(PerLayerEmbeddingSpec {
            width: dim("hidden_size_per_layer_input", per_layer_width)?,
            vocab: dim("vocab_size_per_layer_input", rows)?,
            norm,
        })
    } else {
        None
    };
    Ok(ModelSpec {
        hidden,
        vocab,
        embedding_scale: Some(half::bf16::from_f64((hidden as f64).sqrt()).to_f32()),
        final_norm: norm,
        tied: config.tie_word_embeddings(),
        final_softcap: config.final_logit_softcapping,
        layers,
        per_layer_embedding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e2b_like() -> ModelConfig {
        ModelConfig::from_json(
            r#"{"model_type":"gemma4","text_config":{"model_type":"gemma4_text",
            "hidden_size":64,"intermediate_size":96,"num_hidden_layers":10,
            "num_attention_heads":2,"num_key_value_heads":1,"head_dim":32,"global_head_dim":64,
            "layer_types":["sliding_attention","sliding_attention","sliding_attention",
              "sliding_attention","full_attention","sliding_attention","sliding_attention",
              "sliding_attention","sliding_attention","sliding_attention"],
            "sliding_window":4,"vocab_size":256,"hidden_size_per_layer_input":16,
            "vocab_size_per_layer_input":256,"num_kv_shared_layers":4,
            "use_double_wide_mlp":true,"final_logit_softcapping":30.0}}"#,
        )
        .unwrap()
    }

    #[test]
    fn every_wrapper_reaches_the_text_decoder() {
        for wrapper in ["gemma4", "gemma4_unified"] {
            let c = ModelConfig::from_json(&format!(
                r#"{{"model_type":"{wrapper}","text_config":{{"hidden_size":64,
                "intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":2,
                "num_key_value_heads":1,"head_dim":32,"vocab_size":256,
                "hidden_size_per_layer_input":0}}}}"#
            ))
            .unwrap();
            assert_eq!(c.model_type, "gemma4_text", "{wrapper}");
            // The sparse text config takes Gemma4TextConfig's defaults: 512-wide global heads,
            // the last layer full.
            let spec = spec(&c).unwrap();
            assert_eq!(spec.layers[1].attention.head_dim, 512);
            assert_eq!(spec.layers[1].attention.kind, LayerKind::Full);
        }
    }

    #[test]
    fn kv_sharing_reuses_the_last_earlier_layer_of_each_kind() {
        let spec = spec(&e2b_like()).unwrap();
        let kv: Vec<KvSource> = spec.layers.iter().map(|l| l.attention.kv).collect();
        assert!(kv[..6].iter().all(|k| *k == KvSource::Projected));
        // Layers 6..8 are sliding and reuse layer 5; the last layer is forced full and reuses
        // layer 4.
        for (i, source) in [(6, 5), (7, 5), (8, 5), (9, 4)] {
            assert_eq!(kv[i], KvSource::Shared { source }, "layer {i}");
        }
        assert_eq!(spec.layers[9].attention.kind, LayerKind::Full);
        let widths: Vec<i32> = spec.layers.iter().map(|l| l.mlp.intermediate).collect();
        assert_eq!(widths, [96, 96, 96, 96, 96, 96, 192, 192, 192, 192]);
        // Shared layers have no value norm of their own; the others do.
        assert!(spec.layers[5].attention.value_norm.is_some());
        assert!(spec.layers[6].attention.value_norm.is_none());
    }

    #[test]
    fn full_layers_take_the_global_shapes_and_proportional_rope() {
        let spec = spec(&e2b_like()).unwrap();
        let (s, f) = (&spec.layers[0].attention, &spec.layers[4].attention);
        assert_eq!((s.head_dim, s.kv_heads, s.window), (32, 1, Some(4)));
        assert_eq!((f.head_dim, f.kv_heads, f.window), (64, 1, None));
        assert_eq!((s.rope.theta, f.rope.theta), (10_000.0, 1_000_000.0));
        let scaling = f.rope.scaling.as_ref().unwrap();
        assert_eq!(scaling.rope_type.as_deref(), Some("proportional"));
        assert_eq!(scaling.partial_rotary_factor, Some(0.25));
        assert_eq!(s.scale, 1.0);
        assert_eq!(spec.per_layer_embedding.unwrap().width, 16);
        assert_eq!(spec.final_softcap, Some(30.0));
    }

    #[test]
    fn keys_as_values_and_per_layer_config_set_the_global_kv_heads() {
        let base = r#"{"model_type":"gemma4_text","hidden_size":64,"intermediate_size":96,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "head_dim":16,"vocab_size":256,"hidden_size_per_layer_input":0,
            "layer_types":["sliding_attention","full_attention"],"#;
        let c = ModelConfig::from_json(&format!(
            r#"{base}"global_head_dim":32,"num_global_key_value_heads":1,"attention_k_eq_v":true}}"#
        ))
        .unwrap();
        let spec = spec(&c).unwrap();
        let f = &spec.layers[1].attention;
        assert_eq!(
            (f.head_dim, f.kv_heads, f.kv),
            (32, 1, KvSource::KeysAsValues)
        );
        assert_eq!(spec.layers[0].attention.kv, KvSource::Projected);
        assert!(spec.per_layer_embedding.is_none());
        // Without K=V the global layers keep num_key_value_heads (transformers' rule).
        let c = ModelConfig::from_json(&format!(
            r#"{base}"global_head_dim":32,"num_global_key_value_heads":1}}"#
        ))
        .unwrap();
        assert_eq!(spec_of(&c).layers[1].attention.kv_heads, 2);
        // A per_layer_config keyed by layer index wins.
        let c = ModelConfig::from_json(&format!(
            r#"{base}"per_layer_config":{{"1":{{"head_dim":48,"num_key_value_heads":4}}}}}}"#
        ))
        .unwrap();
        let f = &spec_of(&c).layers[1].attention;
        assert_eq!((f.head_dim, f.kv_heads), (48, 4));
    }

    fn spec_of(c: &ModelConfig) -> ModelSpec {
        spec(c).unwrap()
    }

    #[test]
    fn bad_sharing_and_moe_configs_are_config_errors() {
        let base = r#"{"model_type":"gemma4_text","hidden_size":64,"intermediate_size":96,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "head_dim":16,"vocab_size":256,"hidden_size_per_layer_input":0,"#;
        // Two layers, one shared: the shared last layer is full, and no earlier layer is full.
        let c = ModelConfig::from_json(&format!(
            r#"{base}"layer_types":["sliding_attention","full_attention"],"num_kv_shared_layers":1}}"#
        ))
        .unwrap();
        assert!(matches!(spec(&c), Err(Error::Config(_))));
        let c = ModelConfig::from_json(&format!(r#"{base}"enable_moe_block":true}}"#)).unwrap();
        let e = spec(&c).unwrap_err().to_string();
        assert!(e.contains("num_experts"), "{e}");
        let c = ModelConfig::from_json(&format!(r#"{base}"attention_k_eq_v":"yes"}}"#)).unwrap();
        assert!(matches!(spec(&c), Err(Error::ConfigValue { .. })));
    }

    #[test]
    fn shared_layers_drop_their_key_and_value_tensors() {
        let c = e2b_like();
        let r = |n: &str| rename(&c, n);
        assert_eq!(
            r("model.language_model.layers.9.self_attn.k_proj.weight"),
            None
        );
        assert_eq!(
            r("model.language_model.layers.6.self_attn.v_norm.weight"),
            None
        );
        assert_eq!(
            r("model.language_model.layers.5.self_attn.k_proj.weight").as_deref(),
            Some("model.layers.5.self_attn.k_proj.weight")
        );
        assert_eq!(
            r("model.language_model.layers.9.self_attn.q_proj.weight").as_deref(),
            Some("model.layers.9.self_attn.q_proj.weight")
        );
        assert_eq!(r("model.audio_tower.layers.0.weight"), None);
        assert_eq!(
            r("model.language_model.layers.2.experts.gate_up_proj").as_deref(),
            Some("model.layers.2.experts.gate_up_proj.weight")
        );
        assert_eq!(r("model.vision_tower.encoder.weight"), None);
    }
}
