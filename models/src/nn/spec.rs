//! A decoder described as data: what each layer computes ([`BlockSpec`]) and what the model
//! adds around the layers ([`ModelSpec`]).
//!
//! Every path reads the same description: the reference decoder on MLX's ops
//! ([`super::decoder`]), the native CPU stack (which takes a layer only when its kernels
//! support every feature the spec uses, see [`BlockSpec::native_features`]) and the GPU (MLX's
//! ops on a GPU stream). A family ([`crate::families`]) turns its config into these specs; a new
//! numerical feature is a new field here, implemented once in the decoder.
//!
//! ```
//! use mlx_models::nn::spec::{Activation, LayerKind};
//! use mlx_models::config::ModelConfig;
//! use mlx_models::families;
//! let config = ModelConfig::from_json(r#"{"model_type":"gemma3_text","hidden_size":64,
//!     "intermediate_size":128,"num_hidden_layers":6,"num_attention_heads":4,
//!     "num_key_value_heads":2,"head_dim":32,"vocab_size":256,"sliding_window":4}"#)?;
//! let spec = families::model_spec(&config)?;
//! // The Gemma 3 pattern: every 6th layer is global, the others see 4 keys.
//! let kinds: Vec<_> = spec.layers.iter().map(|l| l.attention.kind).collect();
//! assert_eq!(kinds[4..], [LayerKind::Sliding, LayerKind::Full]);
//! assert_eq!(spec.layers[0].attention.window, Some(4));
//! assert_eq!(spec.layers[0].mlp.activation, Activation::GeluTanh);
//! # Ok::<(), mlx_models::Error>(())
//! ```

use crate::config::RopeScaling;

/// The gated MLP's activation of the gate: `down(act(gate(x)) * up(x))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x·sigmoid(x)` (SwiGLU: Llama, Qwen, Mistral).
    Silu,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (GeGLU: Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// How a norm's stored weight scales the normalised vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormWeight {
    /// `x̂ · w` (Llama, Qwen, Mistral; Gemma 3 GGUF files, which store `1 + w`).
    Direct,
    /// `x̂ · (1 + w)` (Gemma 3's zero-centred weights in Hugging Face checkpoints): folded
    /// into the weight at load, in float32, so every path then runs [`NormWeight::Direct`].
    OnePlus,
}

/// An RMSNorm: `x / sqrt(mean(x²) + eps)` times its weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormSpec {
    /// Added to the mean square.
    pub eps: f32,
    /// How the stored weight applies.
    pub weight: NormWeight,
}

/// The norms of one layer, each by the tensor name (relative to `model.layers.N`) it loads
/// from; the names differ between families (Llama's `post_attention_layernorm` is the norm
/// before the MLP, Gemma's is the norm of the attention output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerNorms {
    /// Before attention (`input_layernorm`).
    pub pre_attention: &'static str,
    /// On the attention output, before the residual add (Gemma's `post_attention_layernorm`).
    pub attention_out: Option<&'static str>,
    /// Before the MLP (Llama's `post_attention_layernorm`, Gemma's `pre_feedforward_layernorm`).
    pub pre_mlp: &'static str,
    /// On the MLP output, before the residual add (Gemma's `post_feedforward_layernorm`).
    pub mlp_out: Option<&'static str>,
}

impl LayerNorms {
    /// The pre-norm block of Llama, Qwen and Mistral.
    pub const PRE_NORM: LayerNorms = LayerNorms {
        pre_attention: "input_layernorm",
        attention_out: None,
        pre_mlp: "post_attention_layernorm",
        mlp_out: None,
    };

    /// Gemma's "sandwich": four norms per layer.
    pub const SANDWICH: LayerNorms = LayerNorms {
        pre_attention: "input_layernorm",
        attention_out: Some("post_attention_layernorm"),
        pre_mlp: "pre_feedforward_layernorm",
        mlp_out: Some("post_feedforward_layernorm"),
    };
}

/// Rotary position embedding of a layer (non-traditional "rotate half" pairs `(i, i + d/2)`).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    /// Base `θ`.
    pub theta: f32,
    /// Rotated dimensions (the head size).
    pub dims: i32,
    /// `linear`, `llama3` or `yarn` scaling, if any.
    pub scaling: Option<RopeScaling>,
}

/// Whether a layer attends to every earlier position or to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Every earlier position (`full_attention`).
    Full,
    /// The last `window` positions (`sliding_attention`).
    Sliding,
}

/// Where a layer's keys and values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvSource {
    /// Its own `k_proj` and `v_proj`.
    Projected,
    /// Values are the raw `k_proj` output (before the key norm and RoPE); there is no
    /// `v_proj` (Gemma 4's `attention_k_eq_v` global layers).
    KeysAsValues,
    /// No key/value projections and no cache of its own: the layer attends to the keys and
    /// values layer `source` (an earlier layer of the same kind) stored in this step, after its
    /// cache update, at the same positions (Gemma 4's KV sharing).
    Shared {
        /// The index of the layer whose keys and values are reused.
        source: usize,
    },
}

/// Ministral 3's position-dependent query scaling, after RoPE:
/// `q · (1 + β·ln(1 + floor(pos / original)))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryScaling {
    /// `β` (`llama_4_scaling_beta`).
    pub beta: f32,
    /// `original_max_position_embeddings`.
    pub original: i32,
}

/// A layer's attention.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionSpec {
    /// Query heads.
    pub heads: i32,
    /// Key/value heads (`heads` is a multiple).
    pub kv_heads: i32,
    /// Per-head width (even).
    pub head_dim: i32,
    /// Bias on q, k and v.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Per-head RMSNorm of queries and keys before RoPE (`self_attn.q_norm` / `k_norm`).
    pub qk_norm: Option<NormSpec>,
    /// Multiplies `q·k`.
    pub scale: f32,
    /// Positions.
    pub rope: RopeSpec,
    /// Full or sliding (informative: [`AttentionSpec::window`] decides).
    pub kind: LayerKind,
    /// Key `j` is visible from query `i` iff `0 ≤ i − j < window` (W keys including its own);
    /// `None`: every `j ≤ i`.
    pub window: Option<i32>,
    /// Scores become `c·tanh(s/c)` before the mask and softmax.
    pub logit_softcap: Option<f32>,
    /// Ministral 3's query scaling.
    pub query_scaling: Option<QueryScaling>,
    /// A scale-free RMSNorm of the values with this epsilon (Gemma 4's `v_norm`).
    pub value_norm: Option<f32>,
    /// Where keys and values come from.
    pub kv: KvSource,
}

/// A layer's gated MLP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlpSpec {
    /// Width of the gate and up projections.
    pub intermediate: i32,
    /// Bias on the three projections.
    pub bias: bool,
    /// The gate's activation.
    pub activation: Activation,
}

/// A mixture-of-experts block beside the dense MLP (Gemma 4 26B-A4B):
///
/// ```text
/// p = softmax(router(norm(h) · scale · hidden^-½))       float32, over every expert
/// top-k of p, renormalised to sum 1, times per_expert_scale[e]
/// e(x) = down_e(act(gate_e(x)) · up_e(x))                 gathered matmuls, never a loop
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeSpec {
    /// Experts.
    pub experts: i32,
    /// Experts chosen per token.
    pub top_k: i32,
    /// Each expert's intermediate width.
    pub intermediate: i32,
    /// The experts' gate activation.
    pub activation: Activation,
}

/// One decoder layer:
///
/// ```text
/// h = x + attention_out(attention(pre_attention(x)))     (attention_out optional)
/// f = mlp(pre_mlp(h))
///   (with moe: f = mlp_out_1(f) + mlp_out_2(experts(pre_mlp_2(h)), router(h)))
/// y = h + mlp_out(f)                                      (mlp_out optional)
///   (with per_layer_input P: y = y + ple_norm(ple_proj(act(ple_gate(y)) · P_layer)))
///   (with layer_scalar s: y = y · s)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    /// The attention.
    pub attention: AttentionSpec,
    /// The MLP.
    pub mlp: MlpSpec,
    /// Which norms exist and where their weights are.
    pub norms: LayerNorms,
    /// The form and epsilon of the layer norms.
    pub norm: NormSpec,
    /// A mixture of experts beside the MLP.
    pub moe: Option<MoeSpec>,
    /// The width of this layer's slice of the per-layer embeddings (Gemma 4 E2B/E4B): the
    /// gate, projection and norm after the MLP residual.
    pub per_layer_input: Option<i32>,
    /// The layer's output is multiplied by its stored `layer_scalar` (`[1]`).
    pub layer_scalar: bool,
}

/// The numerical features of a layer beyond the plain pre-norm Llama block, as the native
/// kernels declare what they support (see [`BlockSpec::native_features`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// A sliding window.
    pub window: bool,
    /// An attention-score softcap.
    pub attention_softcap: bool,
    /// Norms on the attention and MLP outputs.
    pub output_norms: bool,
    /// GELU-tanh gating.
    pub gelu: bool,
    /// Position-dependent query scaling.
    pub query_scaling: bool,
    /// A bias on the output or MLP projections.
    pub output_bias: bool,
    /// A scale-free norm of the values.
    pub value_norm: bool,
    /// Values that are the projected keys.
    pub keys_as_values: bool,
    /// Keys and values of an earlier layer.
    pub shared_kv: bool,
    /// Experts, per-layer inputs or a layer scalar (Gemma 4's additions around attention).
    pub layer_extras: bool,
}

impl Features {
    /// Whether every feature of `self` is in `supported`.
    pub fn within(self, supported: Features) -> bool {
        (!self.window || supported.window)
            && (!self.attention_softcap || supported.attention_softcap)
            && (!self.output_norms || supported.output_norms)
            && (!self.gelu || supported.gelu)
            && (!self.query_scaling || supported.query_scaling)
            && (!self.output_bias || supported.output_bias)
            && (!self.value_norm || supported.value_norm)
            && (!self.keys_as_values || supported.keys_as_values)
            && (!self.shared_kv || supported.shared_kv)
            && (!self.layer_extras || supported.layer_extras)
    }
}

impl AttentionSpec {
    /// The features the attention alone uses (part of [`BlockSpec::native_features`]).
    pub fn native_features(&self) -> Features {
        Features {
            window: self.window.is_some(),
            attention_softcap: self.logit_softcap.is_some(),
            query_scaling: self.query_scaling.is_some(),
            output_bias: self.o_bias,
            value_norm: self.value_norm.is_some(),
            keys_as_values: self.kv == KvSource::KeysAsValues,
            shared_kv: matches!(self.kv, KvSource::Shared { .. }),
            ..Features::default()
        }
    }
}

impl BlockSpec {
    /// The features this layer uses.
    pub fn native_features(&self) -> Features {
        let attention = self.attention.native_features();
        Features {
            output_norms: self.norms.attention_out.is_some() || self.norms.mlp_out.is_some(),
            gelu: self.mlp.activation == Activation::GeluTanh,
            output_bias: attention.output_bias || self.mlp.bias,
            layer_extras: self.moe.is_some() || self.per_layer_input.is_some() || self.layer_scalar,
            ..attention
        }
    }
}

/// A whole decoder-only model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Width of the residual stream.
    pub hidden: i32,
    /// Rows of the embedding (and of the LM head).
    pub vocab: i32,
    /// Multiplies the embedded rows (Gemma: `bf16(√hidden)`).
    pub embedding_scale: Option<f32>,
    /// The norm before the LM head (`model.norm`).
    pub final_norm: NormSpec,
    /// The LM head is the embedding matrix.
    pub tied: bool,
    /// Final logits become `c·tanh(l/c)`.
    pub final_softcap: Option<f32>,
    /// The layers, in order.
    pub layers: Vec<BlockSpec>,
    /// Per-layer embeddings (Gemma 4 E2B/E4B).
    pub per_layer_embedding: Option<PerLayerEmbeddingSpec>,
}

/// Gemma 4's per-layer embeddings: a second table of `width` values per layer and token,
/// mixed with a projection of the main embedding:
///
/// ```text
/// token   = E_pl[ids] · bf16(√width)                              [B, L, layers, width]
/// context = norm(per_layer_model_projection(h₀) · hidden^-½)     h₀ the scaled embedding
/// P       = (context + token) · 2^-½                              layer i reads P[.., i, :]
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerLayerEmbeddingSpec {
    /// Values per layer and token.
    pub width: i32,
    /// Rows of the per-layer table (`vocab_size_per_layer_input`).
    pub vocab: i32,
    /// The norm of the context projection (`per_layer_projection_norm`, over `width`).
    pub norm: NormSpec,
}
