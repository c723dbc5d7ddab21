//! Whole decoder layers as one native primitive ([`decoder_layer`], [`decoder_stack`]).

use super::{native_outputs, raw_or_null, CachedAttentionParams};
use crate::error::{Error, Result};
use crate::Array;
use mlx_sys as sys;

/// A quantized projection of a [`DecoderLayerWeights`]: MLX's affine format, transposed as in
/// a linear layer (`weight` uint32 `[out, in·bits/32]`, `scales` and `biases`
/// `[out, in/group_size]`), as [`crate::quant::quantized_matmul`] takes it with `transpose`.
#[derive(Debug, Clone, Copy)]
pub struct QuantizedProjection<'a> {
    /// Packed codes.
    pub weight: &'a Array,
    /// Per-group scales.
    pub scales: &'a Array,
    /// Per-group biases.
    pub biases: &'a Array,
    /// Group size (32, 64 or 128 for the native kernel).
    pub group_size: i32,
    /// Bits per code (4 or 8 for the native kernel).
    pub bits: i32,
}

impl QuantizedProjection<'_> {
    fn raw(&self) -> sys::native_ops::mlxrs_quantized_projection {
        sys::native_ops::mlxrs_quantized_projection {
            weight: self.weight.as_raw(),
            scales: self.scales.as_raw(),
            biases: self.biases.as_raw(),
            group_size: self.group_size,
            bits: self.bits,
        }
    }
}

/// The weights of a Llama-family decoder layer for [`decoder_layer`] (Llama; Qwen2 with its
/// q/k/v bias; Qwen3 with its per-head q/k norms), all float32 but the packed codes.
#[derive(Debug, Clone, Copy)]
pub struct DecoderLayerWeights<'a> {
    /// RMS-norm weight before attention, `[hidden]`, and its epsilon.
    pub input_norm: (&'a Array, f32),
    /// q, k and v projections fused along the outputs: `[(heads + 2 kv_heads)·head_dim, hidden]`.
    pub qkv: QuantizedProjection<'a>,
    /// Bias added to the fused q/k/v output (Qwen2), `[(heads + 2 kv_heads)·head_dim]`.
    pub qkv_bias: Option<&'a Array>,
    /// RoPE frequencies, `[head_dim / 2]` (see [`super::cached_attention`]).
    pub inv_freq: &'a Array,
    /// Per-head RMS-norm weights of queries and keys (Qwen3), `[head_dim]` each; their epsilon
    /// is [`CachedAttentionParams::norm_eps`].
    pub q_norm: Option<&'a Array>,
    /// See `q_norm`.
    pub k_norm: Option<&'a Array>,
    /// Output projection, `[hidden, heads·head_dim]`.
    pub o: QuantizedProjection<'a>,
    /// RMS-norm weight before the MLP, `[hidden]`, and its epsilon.
    pub post_attention_norm: (&'a Array, f32),
    /// Gate and up projections fused along the outputs: `[2·intermediate, hidden]`, gate rows
    /// first.
    pub gate_up: QuantizedProjection<'a>,
    /// Down projection, `[hidden, intermediate]`.
    pub down: QuantizedProjection<'a>,
}

/// The three arrays [`decoder_layer`] returns.
#[derive(Debug, Clone)]
pub struct DecoderLayerOutput {
    /// The layer's output, `x`'s shape.
    pub hidden: Array,
    /// The key cache with the new positions written.
    pub k_cache: Array,
    /// The value cache with the new positions written.
    pub v_cache: Array,
}

/// A whole pre-norm decoder layer with quantized projections as one primitive, for `L` new
/// tokens of `B` sequences (`x`: `[B, L, hidden]` float32) at position `params.offset`:
///
/// ```text
/// h = x + o(attention(qkv(rms_norm(x)) [+ qkv_bias]))
/// y = h + down(silu(gate) * up),   [gate | up] = gate_up(rms_norm(h))
/// ```
///
/// where `attention` is [`super::cached_attention`] with these caches and parameters (the
/// caches are written in place the same way). On the CPU this is the sequence the per-op
/// primitives ([`super::fused_quantized_matmul`], [`super::cached_attention`],
/// [`super::swiglu`]) compute, with the same numbers; as one primitive it saves MLX's
/// scheduling of five primitives per layer and most of the graph-building work, which at
/// decode on a small machine is a sizeable share of each token.
///
/// Returns `Ok(None)` when not eligible: not an x86-64 CPU stream, float arrays other than
/// float32, bits or group sizes the native quantized matmul does not take, or either switch
/// off ([`super::set_native_ops`], [`crate::quant::set_native_qmm`]); the caller then composes
/// the layer. Shapes that do not fit each other are an error.
///
/// ```
/// use mlx_rs::native::{decoder_layer, CachedAttentionParams, DecoderLayerWeights, QuantizedProjection};
/// use mlx_rs::{quant, Array, Dtype};
/// // hidden 32, one head of 32, intermediate 32; every projection quantizes all-zero weights,
/// // so both blocks add 0 and the layer returns its input.
/// let zeros = |rows| quant::quantize(&Array::zeros(&[rows, 32], Dtype::Float32)?, 32, 4);
/// let (qkv_w, qkv_s, qkv_b) = zeros(96)?;
/// let (o_w, o_s, o_b) = zeros(32)?;
/// let (gu_w, gu_s, gu_b) = zeros(64)?;
/// let (d_w, d_s, d_b) = zeros(32)?;
/// let proj = |weight, scales, biases| QuantizedProjection { weight, scales, biases, group_size: 32, bits: 4 };
/// let ones = Array::ones(&[32], Dtype::Float32)?;
/// let inv_freq = Array::ones(&[16], Dtype::Float32)?;
/// let weights = DecoderLayerWeights {
///     input_norm: (&ones, 1e-6),
///     qkv: proj(&qkv_w, &qkv_s, &qkv_b),
///     qkv_bias: None,
///     inv_freq: &inv_freq,
///     q_norm: None,
///     k_norm: None,
///     o: proj(&o_w, &o_s, &o_b),
///     post_attention_norm: (&ones, 1e-6),
///     gate_up: proj(&gu_w, &gu_s, &gu_b),
///     down: proj(&d_w, &d_s, &d_b),
/// };
/// let x = Array::from_slice(&(0..32).map(|i| i as f32).collect::<Vec<_>>(), &[1, 1, 32])?;
/// let cache = Array::zeros(&[1, 1, 4, 32], Dtype::Float32)?;
/// let p = CachedAttentionParams { heads: 1, kv_heads: 1, head_dim: 32, offset: 0, scale: 1.0, norm_eps: 1e-6 };
/// if let Some(out) = decoder_layer(&x, &cache, &cache, &weights, p)? {
///     assert_eq!(out.hidden.to_vec::<f32>()?, x.to_vec::<f32>()?);
/// }
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn decoder_layer(
    x: &Array,
    k_cache: &Array,
    v_cache: &Array,
    weights: &DecoderLayerWeights<'_>,
    params: CachedAttentionParams,
) -> Result<Option<DecoderLayerOutput>> {
    let out = decoder_stack(
        StackInput::Hidden(x),
        &[(k_cache, v_cache, *weights)],
        None,
        params,
    )?;
    Ok(out.map(|mut o| {
        let (k_cache, v_cache) = o.caches.remove(0);
        DecoderLayerOutput {
            hidden: o.output,
            k_cache,
            v_cache,
        }
    }))
}

/// What enters a [`decoder_stack`].
#[derive(Debug, Clone, Copy)]
pub enum StackInput<'a> {
    /// Hidden states `[B, L, hidden]`, float32.
    Hidden(&'a Array),
    /// Token ids `[B, L]` (int32 or uint32) looked up in a quantized embedding table
    /// `[vocab, hidden]` (rows dequantized to float32 in the primitive; an id outside the table
    /// gives a row of NaN).
    Tokens {
        /// The ids.
        ids: &'a Array,
        /// The table, in the layout of a quantized projection.
        table: QuantizedProjection<'a>,
    },
}

/// The head a [`decoder_stack`] may end with: `logits = projection(rms_norm(y, norm))`.
#[derive(Debug, Clone, Copy)]
pub struct StackHead<'a> {
    /// Final RMS-norm weight `[hidden]` (float32) and its epsilon.
    pub norm: (&'a Array, f32),
    /// The LM head `[vocab, hidden]`, quantized.
    pub projection: QuantizedProjection<'a>,
}

/// What [`decoder_stack`] returns.
#[derive(Debug, Clone)]
pub struct DecoderStackOutput {
    /// The last layer's output `[B, L, hidden]`, or with a head the logits `[B, L, vocab]`.
    pub output: Array,
    /// Each layer's key and value caches with the new positions written, in layer order.
    pub caches: Vec<(Array, Array)>,
}

/// Consecutive decoder layers as one primitive: `layers[i]` is layer `i`'s key cache, value
/// cache and weights; each layer computes what [`decoder_layer`] does and feeds the next, all
/// at position `params.offset` with the same head counts. The input may be token ids looked
/// up in a quantized embedding table ([`StackInput::Tokens`]) and the stack may end with the
/// final norm and a quantized LM head ([`StackHead`]), so that a whole decode step of a
/// quantized model is one primitive. The numbers are those of the embedding lookup,
/// [`decoder_layer`] layer after layer and [`super::fused_quantized_matmul`] for the head;
/// what changes is that MLX schedules one primitive per step instead of one per layer and
/// op.
///
/// `Ok(None)` when any part is not eligible (see [`decoder_layer`]; ids that are neither
/// int32 nor uint32); the caller then runs the parts one at a time. An empty `layers` or
/// shapes that do not fit are an error.
///
/// ```
/// use mlx_rs::native::{decoder_stack, CachedAttentionParams, DecoderLayerWeights, QuantizedProjection, StackInput};
/// use mlx_rs::{quant, Array, Dtype};
/// // Two layers whose projections all quantize zero weights: each returns its input.
/// let zeros = |rows| quant::quantize(&Array::zeros(&[rows, 32], Dtype::Float32)?, 32, 4);
/// let (qkv_w, qkv_s, qkv_b) = zeros(96)?;
/// let (o_w, o_s, o_b) = zeros(32)?;
/// let (gu_w, gu_s, gu_b) = zeros(64)?;
/// let (d_w, d_s, d_b) = zeros(32)?;
/// let proj = |weight, scales, biases| QuantizedProjection { weight, scales, biases, group_size: 32, bits: 4 };
/// let ones = Array::ones(&[32], Dtype::Float32)?;
/// let inv_freq = Array::ones(&[16], Dtype::Float32)?;
/// let w = DecoderLayerWeights {
///     input_norm: (&ones, 1e-6),
///     qkv: proj(&qkv_w, &qkv_s, &qkv_b),
///     qkv_bias: None,
///     inv_freq: &inv_freq,
///     q_norm: None,
///     k_norm: None,
///     o: proj(&o_w, &o_s, &o_b),
///     post_attention_norm: (&ones, 1e-6),
///     gate_up: proj(&gu_w, &gu_s, &gu_b),
///     down: proj(&d_w, &d_s, &d_b),
/// };
/// let x = Array::from_slice(&(0..32).map(|i| i as f32).collect::<Vec<_>>(), &[1, 1, 32])?;
/// let (k0, v0) = (Array::zeros(&[1, 1, 4, 32], Dtype::Float32)?, Array::zeros(&[1, 1, 4, 32], Dtype::Float32)?);
/// let (k1, v1) = (Array::zeros(&[1, 1, 4, 32], Dtype::Float32)?, Array::zeros(&[1, 1, 4, 32], Dtype::Float32)?);
/// let p = CachedAttentionParams { heads: 1, kv_heads: 1, head_dim: 32, offset: 0, scale: 1.0, norm_eps: 1e-6 };
/// let layers = [(&k0, &v0, w), (&k1, &v1, w)];
/// if let Some(out) = decoder_stack(StackInput::Hidden(&x), &layers, None, p)? {
///     assert_eq!(out.output.to_vec::<f32>()?, x.to_vec::<f32>()?);
///     assert_eq!(out.caches.len(), 2);
/// }
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn decoder_stack(
    input: StackInput<'_>,
    layers: &[(&Array, &Array, DecoderLayerWeights<'_>)],
    head: Option<StackHead<'_>>,
    params: CachedAttentionParams,
) -> Result<Option<DecoderStackOutput>> {
    if !super::native_ops_enabled() || !crate::quant::native_qmm_enabled() {
        return Ok(None);
    }
    let raw: Vec<sys::native_ops::mlxrs_decoder_layer_weights> = layers
        .iter()
        .map(
            |(k_cache, v_cache, w)| sys::native_ops::mlxrs_decoder_layer_weights {
                k_cache: k_cache.as_raw(),
                v_cache: v_cache.as_raw(),
                input_norm: w.input_norm.0.as_raw(),
                input_norm_eps: w.input_norm.1,
                post_attention_norm: w.post_attention_norm.0.as_raw(),
                post_norm_eps: w.post_attention_norm.1,
                qkv: w.qkv.raw(),
                qkv_bias: raw_or_null(w.qkv_bias),
                o: w.o.raw(),
                gate_up: w.gate_up.raw(),
                down: w.down.raw(),
                inv_freq: w.inv_freq.as_raw(),
                q_norm: raw_or_null(w.q_norm),
                k_norm: raw_or_null(w.k_norm),
            },
        )
        .collect();
    let (x, table) = match input {
        StackInput::Hidden(x) => (x, None),
        StackInput::Tokens { ids, table } => (ids, Some(table.raw())),
    };
    let head_projection = head.map(|h| h.projection.raw());
    let n_layers = i32::try_from(raw.len())
        .map_err(|_| Error::InvalidArgument("decoder_stack: too many layers".into()))?;
    let parts = native_outputs(|res, s, used| {
        // SAFETY: valid handles (null handles for the absent biases and norms) that outlive
        // the call, `raw` holds `n_layers` structs, the table and head structs (or null)
        // outlive it, and out-parameters we own; the shim validates shapes before building
        // anything.
        unsafe {
            sys::native_ops::mlxrs_decoder_stack(
                res,
                x.as_raw(),
                table.as_ref().map_or(std::ptr::null(), |t| t as *const _),
                raw.as_ptr(),
                n_layers,
                raw_or_null(head.map(|h| h.norm.0)),
                head.map_or(0.0, |h| h.norm.1),
                head_projection
                    .as_ref()
                    .map_or(std::ptr::null(), |h| h as *const _),
                params.norm_eps,
                params.scale,
                params.heads,
                params.kv_heads,
                params.head_dim,
                params.offset,
                s,
                used,
            )
        }
    })?;
    let Some(parts) = parts else {
        return Ok(None);
    };
    let mut parts = parts.into_iter();
    let output = parts.next();
    let mut caches = Vec::with_capacity(layers.len());
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        caches.push((k, v));
    }
    match output {
        Some(output) if caches.len() == layers.len() => {
            Ok(Some(DecoderStackOutput { output, caches }))
        }
        _ => Err(Error::InvalidArgument(format!(
            "decoder_stack: expected {} outputs from the native primitive",
            1 + 2 * layers.len()
        ))),
    }
}
