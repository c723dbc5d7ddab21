//! Multi-head attention with grouped-query heads, RoPE and a KV cache.

use super::mlp::NativeMlpWeights;
use super::{dim, FusedLinear, Linear, RmsNorm, Rope};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::load::BuildOptions;
use crate::runtime::cache::LayerCache;
use crate::weights::Weights;
use mlx_rs::fast::{scaled_dot_product_attention, AttentionMask};
use mlx_rs::native::{Activation, CachedAttentionParams, DecoderLayerWeights};
use mlx_rs::Array;

/// The per-family differences of the attention block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttentionSpec {
    /// Bias on q_proj, k_proj and v_proj.
    pub qkv_bias: bool,
    /// Bias on o_proj.
    pub o_bias: bool,
    /// Per-head RMSNorm of queries and keys over head_dim, after the reshape and before RoPE
    /// (`self_attn.q_norm` / `self_attn.k_norm`, Qwen3).
    pub qk_norm: bool,
}

/// `self_attn` of a decoder layer.
#[derive(Debug, Clone)]
pub struct Attention {
    /// q, k and v projections, fused into one product when their storage allows.
    qkv_proj: FusedLinear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    rope: Rope,
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    scale: f32,
}

impl Attention {
    /// Takes `<path>.{q,k,v,o}_proj` (and `<path>.{q,k}_norm` with `spec.qk_norm`). Widths are
    /// `heads · head_dim` (queries, output) and `kv_heads · head_dim` (keys, values), which
    /// differ from `hidden_size` when `head_dim` is explicit.
    pub fn load(
        weights: &mut Weights,
        path: &str,
        config: &ModelConfig,
        spec: AttentionSpec,
        rope: Rope,
        options: &BuildOptions,
    ) -> Result<Attention> {
        let hidden = dim("hidden_size", config.hidden_size)?;
        let heads = dim("num_attention_heads", config.num_attention_heads)?;
        let kv_heads = dim("num_key_value_heads", config.num_key_value_heads())?;
        let head_dim = dim("head_dim", config.head_dim())?;
        let q_width = heads * head_dim;
        let kv_width = kv_heads * head_dim;
        let proj = |w: &mut Weights, name: &str, inp: i32, out: i32, bias: bool| {
            Linear::load(w, &format!("{path}.{name}"), inp, out, bias, options)
        };
        let q_proj = proj(weights, "q_proj", hidden, q_width, spec.qkv_bias)?;
        let k_proj = proj(weights, "k_proj", hidden, kv_width, spec.qkv_bias)?;
        let v_proj = proj(weights, "v_proj", hidden, kv_width, spec.qkv_bias)?;
        let o_proj = proj(weights, "o_proj", q_width, hidden, spec.o_bias)?;
        let (q_norm, k_norm) = if spec.qk_norm {
            let eps = config.rms_norm_eps();
            let norm = |w: &mut Weights, name: &str| {
                RmsNorm::load(w, &format!("{path}.{name}"), head_dim, eps, options)
            };
            (
                Some(norm(weights, "q_norm")?),
                Some(norm(weights, "k_norm")?),
            )
        } else {
            (None, None)
        };
        let qkv_proj =
            FusedLinear::fuse(vec![q_proj, k_proj, v_proj], &[q_width, kv_width, kv_width])?;
        Ok(Attention {
            qkv_proj,
            o_proj,
            q_norm,
            k_norm,
            rope,
            heads,
            kv_heads,
            head_dim,
            scale: (head_dim as f32).powf(-0.5),
        })
    }

    /// The attention half of [`mlx_rs::native::DecoderLayerWeights`] (the norms and the MLP
    /// left as given) and the attention parameters (offset 0), when every projection is stored
    /// quantized with q, k and v fused and no bias on the output projection.
    pub(crate) fn native_layer_weights<'a>(
        &'a self,
        input_norm: &'a RmsNorm,
        rest: NativeMlpWeights<'a>,
    ) -> Option<(DecoderLayerWeights<'a>, CachedAttentionParams)> {
        let (qkv, qkv_bias) = self.qkv_proj.fused()?.quantized_projection()?;
        let (o, None) = self.o_proj.quantized_projection()? else {
            return None;
        };
        let weights = DecoderLayerWeights {
            input_norm: (input_norm.weight(), input_norm.eps()),
            qkv,
            qkv_bias,
            inv_freq: self.rope.inv_freq(),
            q_norm: self.q_norm.as_ref().map(RmsNorm::weight),
            k_norm: self.k_norm.as_ref().map(RmsNorm::weight),
            o,
            attention_out_norm: None,
            pre_mlp_norm: rest.pre_mlp_norm,
            gate_up: rest.gate_up,
            down: rest.down,
            mlp_out_norm: None,
            activation: Activation::Silu,
            attention: self.params(0),
        };
        Some((weights, self.params(0)))
    }

    fn params(&self, offset: i32) -> CachedAttentionParams {
        CachedAttentionParams {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            offset,
            scale: self.scale,
            norm_eps: self.q_norm.as_ref().map_or(0.0, RmsNorm::eps),
            window: None,
            logit_softcap: None,
        }
    }

    /// Attends `norm(x)` (`x`: `[B, L, hidden]`; no norm when `None`) to the cached positions
    /// and itself, appending this chunk's keys and values to `cache` (positions start at the
    /// cache's offset), and returns the output projection plus `residual` when given. The
    /// norm and the residual run inside the quantized projections where the native kernel
    /// serves them.
    pub fn forward(
        &self,
        x: &Array,
        norm: Option<&RmsNorm>,
        residual: Option<&Array>,
        cache: &mut LayerCache,
    ) -> Result<Array> {
        let shape = x.shape();
        let [b, l, _] = shape[..] else {
            return Err(Error::InvalidArgument(format!(
                "attention input must be [B, L, hidden], got {shape:?}"
            )));
        };
        // [B, L, H·hd] -> [B, L, H, hd]; the per-head norm (Qwen3) acts here, before the
        // transpose to [B, H, L, hd] and RoPE.
        // The fused projection, then one primitive for the norms, RoPE, the cache write and
        // the attention itself (CPU, float32); other cases compose MLX's ops below.
        let qkv = self.qkv_proj.forward_joined(x, norm)?;
        let params = self.params(cache.offset());
        if let Some(out) = cache.native_step(
            &qkv,
            self.rope.inv_freq(),
            self.q_norm.as_ref().map(RmsNorm::weight),
            self.k_norm.as_ref().map(RmsNorm::weight),
            params,
        )? {
            return self.o_proj.forward_fused(&out, None, residual);
        }
        let split = |y: Array, heads: i32, norm: Option<&RmsNorm>| -> Result<Array> {
            let y = y.reshape(&[b, l, heads, self.head_dim])?;
            let y = match norm {
                Some(n) => n.forward(&y)?,
                None => y,
            };
            Ok(y.transpose(&[0, 2, 1, 3])?)
        };
        let [q, k, v]: [Array; 3] =
            self.qkv_proj
                .split(qkv)?
                .try_into()
                .map_err(|parts: Vec<Array>| {
                    Error::InvalidArgument(format!("q/k/v projection gave {} outputs", parts.len()))
                })?;
        let q = split(q, self.heads, self.q_norm.as_ref())?;
        let k = split(k, self.kv_heads, self.k_norm.as_ref())?;
        let v = split(v, self.kv_heads, None)?;
        let offset = cache.offset();
        let q = self.rope.forward(&q, offset)?;
        let k = self.rope.forward(&k, offset)?;
        let (keys, values) = cache.update_and_fetch(&k, &v)?;
        // GQA: the fused kernel maps query head h to key/value head h / (H / H_kv) itself.
        let mask = if l > 1 {
            AttentionMask::Causal
        } else {
            AttentionMask::None
        };
        let out = scaled_dot_product_attention(&q, &keys, &values, self.scale, mask)?;
        let out = out
            .transpose(&[0, 2, 1, 3])?
            .reshape(&[b, l, self.heads * self.head_dim])?;
        self.o_proj.forward_fused(&out, None, residual)
    }
}
