//! `config.json` and `generation_config.json`, parsed with serde under Hugging Face's field names,
//! with per-family defaults resolved by accessor methods.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The most decoder layers a config may declare (the largest released models have ~130).
const MAX_LAYERS: usize = 4096;

/// An `eos_token_id` field: one id or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` (or the newer `rope_parameters`) of a config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RopeScaling {
    /// `rope_type` (or the older `type`): `default`, `linear`, `llama3`, `yarn`, ...
    #[serde(alias = "type", default)]
    pub rope_type: Option<String>,
    /// Scaling factor.
    pub factor: Option<f32>,
    /// llama3: low-frequency factor (default 1).
    pub low_freq_factor: Option<f32>,
    /// llama3: high-frequency factor (default 4).
    pub high_freq_factor: Option<f32>,
    /// llama3/yarn: the context length the model was trained with.
    pub original_max_position_embeddings: Option<usize>,
    /// transformers 5.x writes `rope_theta` inside `rope_parameters`.
    pub rope_theta: Option<f32>,
    /// yarn: the fast boundary of the frequency ramp, in rotations (default 32).
    pub beta_fast: Option<f32>,
    /// yarn: the slow boundary of the frequency ramp, in rotations (default 1).
    pub beta_slow: Option<f32>,
    /// yarn: `mscale` of the attention factor.
    pub mscale: Option<f32>,
    /// yarn: `mscale_all_dim` of the attention factor.
    pub mscale_all_dim: Option<f32>,
    /// yarn: an explicit attention factor (multiplies cos and sin).
    pub attention_factor: Option<f32>,
    /// yarn: whether the ramp bounds are rounded outwards (default true).
    pub truncate: Option<bool>,
    /// proportional (Gemma 4): the share of the head's frequency pairs that rotate.
    pub partial_rotary_factor: Option<f32>,
    /// Ministral 3: `β` of the position-dependent query scaling
    /// `1 + β·ln(1 + floor(pos / original_max_position_embeddings))`.
    pub llama_4_scaling_beta: Option<f32>,
}

/// Where a checkpoint's weights come from: it decides conventions the tensors already carry
/// (Gemma's GGUF norms have the `+1` baked in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceFormat {
    /// Hugging Face safetensors (also MLX-quantized checkpoints).
    #[default]
    HuggingFace,
    /// A GGUF file (llama.cpp's conventions).
    Gguf,
}

/// Per-layer quantization parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantParams {
    /// Elements per group (32, 64 or 128).
    pub group_size: i32,
    /// Bits per element.
    pub bits: i32,
}

/// The `quantization` entry of an MLX-quantized (mlx-community) `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizationConfig {
    /// The default for every quantized layer.
    pub default: QuantParams,
    /// `mode`; only `affine` is supported.
    pub mode: String,
    /// Overrides by module path (`model.layers.0.mlp.down_proj`); `None` = not quantized.
    pub overrides: BTreeMap<String, Option<QuantParams>>,
}

impl QuantizationConfig {
    /// Parses the JSON object of `quantization` / `quantization_config`.
    pub fn from_value(value: &serde_json::Value) -> Result<QuantizationConfig> {
        let obj = value
            .as_object()
            .ok_or_else(|| Error::Config("`quantization` must be an object".into()))?;
        let params = |v: &serde_json::Value, what: &str| -> Result<QuantParams> {
            let get = |k: &str| {
                v.get(k)
                    .and_then(|x| x.as_i64())
                    .ok_or_else(|| Error::Config(format!("{what}: missing integer `{k}`")))
            };
            Ok(QuantParams {
                group_size: get("group_size")? as i32,
                bits: get("bits")? as i32,
            })
        };
        let default = params(value, "quantization")?;
        let mode = obj
            .get("mode")
            .and_then(|m| m.as_str())
            .unwrap_or("affine")
            .to_string();
        if mode != "affine" {
            return Err(Error::Config(format!(
                "quantization mode `{mode}` is not supported (only `affine`)"
            )));
        }
        let mut overrides = BTreeMap::new();
        for (key, v) in obj {
            match v {
                serde_json::Value::Object(_) => {
                    overrides.insert(key.clone(), Some(params(v, key)?));
                }
                serde_json::Value::Bool(false) => {
                    overrides.insert(key.clone(), None);
                }
                _ => {}
            }
        }
        Ok(QuantizationConfig {
            default,
            mode,
            overrides,
        })
    }

    /// The parameters for the module at `path` (`None`: kept in floating point).
    pub fn for_module(&self, path: &str) -> Option<QuantParams> {
        match self.overrides.get(path) {
            Some(o) => *o,
            None => Some(self.default),
        }
    }
}

/// A model's `config.json`, with the fields of the Llama-block families (Llama, Qwen2, Qwen3).
///
/// Optional fields are resolved by the accessor methods, with the family's defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    /// The family: `llama`, `qwen2`, `qwen3`, ...
    pub model_type: String,
    /// Model width.
    pub hidden_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (default: `num_attention_heads`).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width (default: `hidden_size / num_attention_heads`).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default)]
    pub rms_norm_eps: Option<f32>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RoPE base (may instead sit in `rope_parameters`).
    #[serde(default)]
    pub rope_theta: Option<f32>,
    /// RoPE scaling (`rope_scaling`, or a flat `rope_parameters` of transformers 5.x; see
    /// [`ModelConfig::rope_parameters`] for the per-layer-type form).
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers 5.x `rope_parameters`: one [`RopeScaling`], or one per layer type
    /// (`{"full_attention": {...}, "sliding_attention": {...}}`).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Sliding-window attention width in keys (Mistral, Gemma); `null` = none.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Per-layer attention kinds: `sliding_attention` or `full_attention`.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Gemma 2/3: every n-th layer is global (`(i + 1) % n == 0`) when `layer_types` is absent.
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    /// Gemma: the attention scale is `query_pre_attn_scalar^-0.5`.
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 3: RoPE base of the sliding layers.
    #[serde(default)]
    pub rope_local_base_freq: Option<f32>,
    /// Softcap of the attention scores (`c·tanh(s/c)`), if any.
    #[serde(default)]
    pub attn_logit_softcapping: Option<f32>,
    /// Softcap of the final logits, if any.
    #[serde(default)]
    pub final_logit_softcapping: Option<f32>,
    /// The MLP activation of Gemma configs (`gelu_pytorch_tanh`).
    #[serde(default)]
    pub hidden_activation: Option<String>,
    /// The MLP activation of most configs (`silu`).
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Where the weights come from (not a `config.json` field: set by the loader).
    #[serde(skip)]
    pub source_format: SourceFormat,
    /// Longest context the model supports.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Whether the LM head is the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// Bias on q/k/v/o projections (Llama); Qwen2 always has q/k/v bias, Qwen3 none.
    #[serde(default)]
    pub attention_bias: Option<bool>,
    /// Bias on the MLP projections.
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Beginning-of-sequence id (informative only: the tokenizer decides whether BOS is added).
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// MLX quantization (raw JSON; see [`ModelConfig::quantization`]).
    #[serde(default, alias = "quantization_config")]
    pub quantization: Option<serde_json::Value>,
    /// The checkpoint's dtype (`torch_dtype` or `dtype`).
    #[serde(default, alias = "torch_dtype")]
    pub dtype: Option<String>,
    /// Every other key of the config, for the family that reads it (Gemma 4's
    /// `global_head_dim`, `num_kv_shared_layers`, experts, ...: see its family file).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ModelConfig {
    /// Parses `config.json` text. A multimodal wrapper's `text_config` is used when present
    /// (its `model_type` if it has one, else the wrapper's; the wrapper's quantization and stop
    /// ids apply to it when it has none, and the wrapper's `tie_word_embeddings` always), then the family's defaults fill the keys the file leaves out
    /// ([`crate::families::Family::defaults`]).
    ///
    /// ```
    /// use mlx_models::config::ModelConfig;
    /// // A sparse Gemma 3 `text_config`: the family supplies heads, head_dim, RoPE bases...
    /// let c = ModelConfig::from_json(r#"{"model_type":"gemma3","text_config":{
    ///     "hidden_size":2560,"intermediate_size":10240,"num_hidden_layers":34}}"#)?;
    /// assert_eq!((c.model_type.as_str(), c.num_attention_heads, c.head_dim()), ("gemma3_text", 8, 256));
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn from_json(text: &str) -> Result<ModelConfig> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("config.json is not valid JSON: {e}")))?;
        let mut object = match value {
            serde_json::Value::Object(o) => o,
            _ => return Err(Error::Config("config.json must be a JSON object".into())),
        };
        if let Some(serde_json::Value::Object(mut inner)) = object.get("text_config").cloned() {
            for key in [
                "model_type",
                "quantization",
                "quantization_config",
                "eos_token_id",
            ] {
                if let Some(v) = object.get(key) {
                    inner.entry(key.to_string()).or_insert(v.clone());
                }
            }
            // The wrapper class owns the LM head: its tying decides (transformers ignores the
            // text config's).
            if let Some(v) = object.get("tie_word_embeddings") {
                inner.insert("tie_word_embeddings".into(), v.clone());
            }
            object = inner;
        }
        // Both spellings of the quantization entry are written by recent mlx-lm versions.
        if object.contains_key("quantization") {
            object.remove("quantization_config");
        }
        crate::families::apply_defaults(&mut object);
        let config: ModelConfig = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| Error::Config(format!("config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a `config.json` file (a regular file of at most 4 MiB, see
    /// [`crate::load::files`]).
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = crate::load::files::read_text(path, crate::load::files::FileKind::Config)?;
        ModelConfig::from_json(&text)
    }

    /// Checks the values that would otherwise fail deep inside the forward pass.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("vocab_size", self.vocab_size),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::Config(format!("`{name}` must be positive")));
            }
        }
        let kv = self.num_key_value_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(Error::Config(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({kv})",
                self.num_attention_heads
            )));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::Config(format!(
                "hidden_size ({}) is not divisible by num_attention_heads ({}) and no head_dim is given",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::Config(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim()
            )));
        }
        if let Some(q) = &self.quantization {
            QuantizationConfig::from_value(q)?;
        }
        self.validate_ranges()
    }

    /// The numeric sanity checks of [`ModelConfig::validate`]: every width fits MLX's `i32`
    /// shapes (and so do the projections' products), the layer count is plausible, and every
    /// epsilon, RoPE base, scaling factor and context length is finite and positive.
    fn validate_ranges(&self) -> Result<()> {
        let i32_max = i32::MAX as usize;
        let widths = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("vocab_size", self.vocab_size),
            ("head_dim", self.head_dim()),
            (
                "num_attention_heads * head_dim",
                self.num_attention_heads.saturating_mul(self.head_dim()),
            ),
        ];
        for (field, v) in widths {
            if v > i32_max {
                return Err(Error::ConfigValue {
                    field: field.into(),
                    value: v.to_string(),
                    expected: "at most 2^31 - 1 (MLX's shape type)",
                });
            }
        }
        if self.num_hidden_layers > MAX_LAYERS {
            return Err(Error::ConfigValue {
                field: "num_hidden_layers".into(),
                value: self.num_hidden_layers.to_string(),
                expected: "at most 4096",
            });
        }
        let positive_f32 = |field: &str, v: Option<f32>| -> Result<()> {
            match v {
                Some(x) if !(x.is_finite() && x > 0.0) => Err(Error::ConfigValue {
                    field: field.into(),
                    value: x.to_string(),
                    expected: "a finite, positive number",
                }),
                _ => Ok(()),
            }
        };
        positive_f32("rms_norm_eps", self.rms_norm_eps)?;
        positive_f32("rope_theta", self.rope_theta)?;
        for (field, r) in self.rope_entries()? {
            positive_f32(&format!("{field}.rope_theta"), r.rope_theta)?;
            positive_f32(&format!("{field}.factor"), r.factor)?;
            positive_f32(&format!("{field}.low_freq_factor"), r.low_freq_factor)?;
            positive_f32(&format!("{field}.high_freq_factor"), r.high_freq_factor)?;
            positive_f32(&format!("{field}.beta_fast"), r.beta_fast)?;
            positive_f32(&format!("{field}.beta_slow"), r.beta_slow)?;
            positive_f32(&format!("{field}.attention_factor"), r.attention_factor)?;
            if let Some(beta) = r.llama_4_scaling_beta {
                if !beta.is_finite() {
                    return Err(Error::ConfigValue {
                        field: format!("{field}.llama_4_scaling_beta"),
                        value: beta.to_string(),
                        expected: "a finite number",
                    });
                }
            }
            if r.original_max_position_embeddings == Some(0) {
                return Err(Error::ConfigValue {
                    field: format!("{field}.original_max_position_embeddings"),
                    value: "0".into(),
                    expected: "a positive token count",
                });
            }
        }
        positive_f32(
            "query_pre_attn_scalar",
            self.query_pre_attn_scalar.map(|v| v as f32),
        )?;
        positive_f32("rope_local_base_freq", self.rope_local_base_freq)?;
        positive_f32("attn_logit_softcapping", self.attn_logit_softcapping)?;
        positive_f32("final_logit_softcapping", self.final_logit_softcapping)?;
        for (field, v) in [
            ("sliding_window", self.sliding_window),
            ("sliding_window_pattern", self.sliding_window_pattern),
        ] {
            if let Some(v) = v {
                if v == 0 || v > i32::MAX as usize {
                    return Err(Error::ConfigValue {
                        field: field.into(),
                        value: v.to_string(),
                        expected: "a positive count of at most 2^31 - 1",
                    });
                }
            }
        }
        if let Some(types) = &self.layer_types {
            if types.len() != self.num_hidden_layers {
                return Err(Error::ConfigValue {
                    field: "layer_types".into(),
                    value: format!("{} entries", types.len()),
                    expected: "one entry per layer (num_hidden_layers)",
                });
            }
            if let Some(bad) = types
                .iter()
                .find(|t| !matches!(t.as_str(), "full_attention" | "sliding_attention"))
            {
                return Err(Error::ConfigValue {
                    field: "layer_types".into(),
                    value: bad.clone(),
                    expected: "`full_attention` or `sliding_attention`",
                });
            }
        }
        if self.max_position_embeddings == Some(0) {
            return Err(Error::ConfigValue {
                field: "max_position_embeddings".into(),
                value: "0".into(),
                expected: "a positive token count",
            });
        }
        Ok(())
    }

    /// Key/value heads.
    pub fn num_key_value_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// RMSNorm epsilon (family default when absent).
    pub fn rms_norm_eps(&self) -> f32 {
        self.rms_norm_eps.unwrap_or(1e-6)
    }

    /// RoPE base: the top-level `rope_theta`, else the one inside `rope_parameters`, else the
    /// family default.
    pub fn rope_theta(&self) -> f32 {
        self.rope_theta
            .or_else(|| self.rope_scaling_entry().and_then(|r| r.rope_theta))
            .unwrap_or(10_000.0)
    }

    /// The RoPE scaling in force, if any (a `default` type counts as none).
    pub fn rope_scaling(&self) -> Option<RopeScaling> {
        self.rope_scaling_entry()
            .filter(|r| r.rope_type.as_deref().is_some_and(|t| t != "default"))
    }

    /// Every RoPE entry of the config with the field it came from: `rope_scaling`, a flat
    /// `rope_parameters`, or each entry of a per-layer-type one. An entry that is not a RoPE
    /// object is a [`Error::ConfigValue`].
    fn rope_entries(&self) -> Result<Vec<(String, RopeScaling)>> {
        let mut entries = Vec::new();
        if let Some(r) = &self.rope_scaling {
            entries.push(("rope_scaling".to_string(), r.clone()));
        }
        let parse = |field: String, v: &serde_json::Value| -> Result<(String, RopeScaling)> {
            match serde_json::from_value(v.clone()) {
                Ok(r) => Ok((field, r)),
                Err(e) => Err(Error::ConfigValue {
                    field,
                    value: e.to_string(),
                    expected: "a RoPE parameters object",
                }),
            }
        };
        match (&self.rope_parameters, self.rope_parameters_by_layer_type()) {
            (_, Some(by_type)) => {
                for (k, v) in by_type {
                    entries.push(parse(format!("rope_parameters.{k}"), v)?);
                }
            }
            (Some(v), None) => entries.push(parse("rope_parameters".into(), v)?),
            (None, None) => {}
        }
        Ok(entries)
    }

    /// `rope_scaling`, else a flat `rope_parameters` (one entry for every layer).
    fn rope_scaling_entry(&self) -> Option<RopeScaling> {
        if let Some(r) = &self.rope_scaling {
            return Some(r.clone());
        }
        let params = self.rope_parameters.as_ref()?;
        if self.rope_parameters_by_layer_type().is_some() {
            return None;
        }
        serde_json::from_value(params.clone()).ok()
    }

    /// The entry of a per-layer-type `rope_parameters` for `layer_type`
    /// (`full_attention` / `sliding_attention`), when the config has that form.
    pub fn rope_parameters_for(&self, layer_type: &str) -> Option<RopeScaling> {
        let by_type = self.rope_parameters_by_layer_type()?;
        serde_json::from_value(by_type.get(layer_type)?.clone()).ok()
    }

    fn rope_parameters_by_layer_type(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        let object = self.rope_parameters.as_ref()?.as_object()?;
        object
            .values()
            .all(|v| v.is_object())
            .then_some(object)
            .filter(|o| !o.is_empty())
    }

    /// Whether the LM head shares the embedding matrix (family default when absent).
    pub fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings.unwrap_or(false)
    }

    /// The longest context, if the config says.
    pub fn context_length(&self) -> Option<usize> {
        self.max_position_embeddings
    }

    /// The parsed MLX quantization, if the checkpoint is quantized.
    pub fn quantization(&self) -> Result<Option<QuantizationConfig>> {
        self.quantization
            .as_ref()
            .map(QuantizationConfig::from_value)
            .transpose()
    }
}

/// `generation_config.json`: stop ids and the model's sampling defaults.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationConfig {
    /// End-of-sequence id(s); these override `config.json`'s.
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Top-k.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Min-p.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Repetition penalty.
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Whether the model's authors sample (`false`: greedy).
    #[serde(default)]
    pub do_sample: Option<bool>,
}

impl GenerationConfig {
    /// Parses `generation_config.json` text.
    pub fn from_json(text: &str) -> Result<GenerationConfig> {
        serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("generation_config.json: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN: &str = r#"{"model_type":"qwen2","hidden_size":896,"num_hidden_layers":24,
        "intermediate_size":4864,"num_attention_heads":14,"num_key_value_heads":2,"vocab_size":151936,
        "rope_theta":1000000.0,"tie_word_embeddings":true,"eos_token_id":151645,"rms_norm_eps":1e-6}"#;

    #[test]
    fn parses_hf_names_and_resolves_defaults() {
        let c = ModelConfig::from_json(QWEN).unwrap();
        assert_eq!((c.head_dim(), c.num_key_value_heads()), (64, 2));
        assert!(c.tie_word_embeddings());
        assert_eq!(c.rope_theta(), 1e6);
        assert_eq!(c.eos_token_id, Some(TokenIds::One(151645)));
    }

    #[test]
    fn rope_theta_inside_rope_parameters_is_used() {
        let text = r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":1,"intermediate_size":128,
            "num_attention_heads":4,"vocab_size":10,"rope_parameters":{"rope_type":"default","rope_theta":100000.0}}"#;
        let c = ModelConfig::from_json(text).unwrap();
        assert_eq!(c.rope_theta(), 100000.0);
        assert!(c.rope_scaling().is_none());
    }

    #[test]
    fn inconsistent_heads_are_errors() {
        let text = QWEN.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3");
        assert!(matches!(
            ModelConfig::from_json(&text),
            Err(Error::Config(_))
        ));
        assert!(matches!(ModelConfig::from_json("{"), Err(Error::Config(_))));
        assert!(matches!(
            ModelConfig::from_json(r#"{"model_type":"llama"}"#),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn quantization_with_overrides() {
        let q = serde_json::json!({"group_size": 64, "bits": 4, "mode": "affine",
            "model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 8}, "lm_head": false});
        let q = QuantizationConfig::from_value(&q).unwrap();
        assert_eq!(
            q.for_module("model.layers.1.mlp.down_proj"),
            Some(QuantParams {
                group_size: 64,
                bits: 4
            })
        );
        assert_eq!(
            q.for_module("model.layers.0.mlp.down_proj"),
            Some(QuantParams {
                group_size: 32,
                bits: 8
            })
        );
        assert_eq!(q.for_module("lm_head"), None);
        let bad = serde_json::json!({"group_size": 64, "bits": 4, "mode": "mxfp4"});
        assert!(QuantizationConfig::from_value(&bad).is_err());
    }
}
