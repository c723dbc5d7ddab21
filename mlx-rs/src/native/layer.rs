//! Whole decoder layers as one native primitive ([`decoder_layer`], [`decoder_stack`]).

use super::{native_outputs, null_array, raw_or_null, softcap_raw, CachedAttentionParams};
use crate::error::{Error, Result};
use crate::Array;
use mlx_sys as sys;

/// A quantized projection of a [`DecoderLayerWeights`], transposed as in a linear layer: MLX's
/// affine format (`weight` uint32 `[out, in·bits/32]`, `scales` and `biases`
/// `[out, in/group_size]`, as [`crate::quant::quantized_matmul`] takes it with `transpose`), or,
/// when `blocks` is not empty, GGUF blocks as stored (`weight` uint8 holding the runs' bytes, as
/// [`crate::quant::block_matmul_fused`] takes it; `scales`, `biases`, `group_size` and `bits`
/// are then not read: pass the weight and zeros).
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
    /// The runs of GGUF blocks (at most [`crate::quant::MAX_BLOCK_RUNS`]); empty for MLX's
    /// affine layout.
    pub blocks: &'a [crate::quant::BlockRun],
}

/// Four entries of `f(0..4)` (the C struct's fixed run arrays; the kernels refuse more runs).
fn fill(f: impl Fn(usize) -> i32) -> [i32; 4] {
    [f(0), f(1), f(2), f(3)]
}

impl QuantizedProjection<'_> {
    fn raw(&self) -> sys::native_ops::mlxrs_quantized_projection {
        sys::native_ops::mlxrs_quantized_projection {
            weight: self.weight.as_raw(),
            scales: self.scales.as_raw(),
            biases: self.biases.as_raw(),
            group_size: self.group_size,
            bits: self.bits,
            block_parts: self.blocks.len() as i32,
            block_formats: fill(|i| self.blocks.get(i).map_or(0, |r| r.format.raw())),
            block_rows: fill(|i| self.blocks.get(i).map_or(0, |r| r.rows)),
        }
    }
}

/// The activation of a decoder layer's gated MLP, applied to the gate half of the fused
/// gate/up projection's output and multiplied by the up half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `silu(gate) * up` (SwiGLU: Llama, Qwen, Mistral); see [`super::swiglu`].
    #[default]
    Silu,
    /// `gelu_tanh(gate) * up` (GeGLU with GELU's tanh approximation: Gemma); see
    /// [`super::gelu_tanh_glu`].
    GeluTanh,
}

impl Activation {
    fn raw(self) -> sys::native_ops::mlxrs_activation {
        match self {
            Activation::Silu => sys::native_ops::MLXRS_ACTIVATION_SILU,
            Activation::GeluTanh => sys::native_ops::MLXRS_ACTIVATION_GELU_TANH,
        }
    }
}

/// The weights and attention parameters of a pre-norm decoder layer for [`decoder_layer`] and
/// [`decoder_stack`] (Llama; Qwen2 with its q/k/v bias; Qwen3 with its per-head q/k norms;
/// Gemma with its output norms, GeGLU, sliding windows and soft caps), all float32 but the
/// packed codes. RMS-norm weights are in the form `x / rms(x) * w` (a model whose norms
/// multiply by `1 + w` folds the 1 in when it loads them).
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
    /// Per-head RMS-norm weights of queries and keys (Qwen3, Gemma), `[head_dim]` each; their
    /// epsilon is [`CachedAttentionParams::norm_eps`].
    pub q_norm: Option<&'a Array>,
    /// See `q_norm`.
    pub k_norm: Option<&'a Array>,
    /// Output projection, `[hidden, heads·head_dim]`.
    pub o: QuantizedProjection<'a>,
    /// RMS norm of the output projection's result before the residual add (Gemma's
    /// `post_attention_layernorm`), `[hidden]`, and its epsilon.
    pub attention_out_norm: Option<(&'a Array, f32)>,
    /// RMS-norm weight before the MLP, `[hidden]`, and its epsilon (Llama's
    /// `post_attention_layernorm`, Gemma's `pre_feedforward_layernorm`).
    pub pre_mlp_norm: (&'a Array, f32),
    /// Gate and up projections fused along the outputs: `[2·intermediate, hidden]`, gate rows
    /// first.
    pub gate_up: QuantizedProjection<'a>,
    /// Down projection, `[hidden, intermediate]`.
    pub down: QuantizedProjection<'a>,
    /// RMS norm of the down projection's result before the residual add (Gemma's
    /// `post_feedforward_layernorm`), `[hidden]`, and its epsilon.
    pub mlp_out_norm: Option<(&'a Array, f32)>,
    /// The MLP's activation.
    pub activation: Activation,
    /// The layer's attention parameters: head counts, scale, q/k-norm epsilon, window, logit
    /// soft cap (its `offset` is ignored: [`decoder_layer`] and [`decoder_stack`] take the
    /// position).
    pub attention: CachedAttentionParams,
}

impl DecoderLayerWeights<'_> {
    /// The C struct of this layer with its caches.
    fn raw(
        &self,
        k_cache: &Array,
        v_cache: &Array,
    ) -> Result<sys::native_ops::mlxrs_decoder_layer_weights> {
        let norm =
            |n: Option<(&Array, f32)>| n.map_or((null_array(), 0.0), |(w, e)| (w.as_raw(), e));
        let (attention_out_norm, attention_out_norm_eps) = norm(self.attention_out_norm);
        let (mlp_out_norm, mlp_out_norm_eps) = norm(self.mlp_out_norm);
        Ok(sys::native_ops::mlxrs_decoder_layer_weights {
            k_cache: k_cache.as_raw(),
            v_cache: v_cache.as_raw(),
            attention: self.attention.raw()?,
            input_norm: self.input_norm.0.as_raw(),
            input_norm_eps: self.input_norm.1,
            qkv: self.qkv.raw(),
            qkv_bias: raw_or_null(self.qkv_bias),
            inv_freq: self.inv_freq.as_raw(),
            q_norm: raw_or_null(self.q_norm),
            k_norm: raw_or_null(self.k_norm),
            o: self.o.raw(),
            attention_out_norm,
            attention_out_norm_eps,
            pre_mlp_norm: self.pre_mlp_norm.0.as_raw(),
            pre_mlp_norm_eps: self.pre_mlp_norm.1,
            gate_up: self.gate_up.raw(),
            activation: self.activation.raw(),
            down: self.down.raw(),
            mlp_out_norm,
            mlp_out_norm_eps,
        })
    }
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
/// tokens of `B` sequences (`x`: `[B, L, hidden]` float32) at position `offset`:
///
/// ```text
/// a = o(attention(qkv(rms_norm(x, input_norm)) [+ qkv_bias]))
/// h = x + [rms_norm(·, attention_out_norm)](a)
/// m = down(act(gate) * up),   [gate | up] = gate_up(rms_norm(h, pre_mlp_norm))
/// y = h + [rms_norm(·, mlp_out_norm)](m)
/// ```
///
/// where `attention` is [`super::cached_attention`] with these caches and the layer's
/// [`DecoderLayerWeights::attention`] parameters at `offset` (window, ring caches and soft cap
/// included; the caches are written in place the same way), `act` is
/// [`DecoderLayerWeights::activation`] and the bracketed norms apply when given. On the CPU
/// this is the sequence the per-op primitives ([`super::fused_quantized_matmul`],
/// [`super::cached_attention`], [`super::swiglu`] or [`super::gelu_tanh_glu`], the RMS norm)
/// compute; as one primitive it saves MLX's scheduling of five or more primitives per layer
/// and most of the graph-building work, which at decode on a small machine is a sizeable
/// share of each token.
///
/// Returns `Ok(None)` when not eligible: not an x86-64 CPU stream, float arrays other than
/// float32, bits or group sizes the native quantized matmul does not take, or either switch
/// off ([`super::set_native_ops`], [`crate::quant::set_native_qmm`]); the caller then composes
/// the layer. Shapes that do not fit each other, a cache that cannot take the chunk, and
/// invalid windows or soft caps are errors.
///
/// ```
/// use mlx_rs::native::{decoder_layer, Activation, CachedAttentionParams, DecoderLayerWeights, QuantizedProjection};
/// use mlx_rs::{quant, Array, Dtype};
/// // hidden 32, one head of 32, intermediate 32; every projection quantizes all-zero weights,
/// // so both blocks add 0 and the layer returns its input.
/// let zeros = |rows| quant::quantize(&Array::zeros(&[rows, 32], Dtype::Float32)?, 32, 4);
/// let (qkv_w, qkv_s, qkv_b) = zeros(96)?;
/// let (o_w, o_s, o_b) = zeros(32)?;
/// let (gu_w, gu_s, gu_b) = zeros(64)?;
/// let (d_w, d_s, d_b) = zeros(32)?;
/// let proj = |weight, scales, biases| QuantizedProjection { weight, scales, biases, group_size: 32, bits: 4, blocks: &[] };
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
///     attention_out_norm: None,
///     pre_mlp_norm: (&ones, 1e-6),
///     gate_up: proj(&gu_w, &gu_s, &gu_b),
///     down: proj(&d_w, &d_s, &d_b),
///     mlp_out_norm: None,
///     activation: Activation::Silu,
///     attention: CachedAttentionParams {
///         heads: 1, kv_heads: 1, head_dim: 32, offset: 0, scale: 1.0, norm_eps: 1e-6,
///         window: None, logit_softcap: None, keys: Default::default(), value_norm: false,
///     },
/// };
/// let x = Array::from_slice(&(0..32).map(|i| i as f32).collect::<Vec<_>>(), &[1, 1, 32])?;
/// let cache = Array::zeros(&[1, 1, 4, 32], Dtype::Float32)?;
/// if let Some(out) = decoder_layer(&x, &cache, &cache, &weights, 0)? {
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
    offset: i32,
) -> Result<Option<DecoderLayerOutput>> {
    let out = decoder_stack(
        StackInput::Hidden(x),
        &[(k_cache, v_cache, *weights)],
        None,
        offset,
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
    /// `[vocab, hidden]` (rows dequantized to float32 in the primitive and multiplied by
    /// `scale`; an id outside the table gives a row of NaN).
    Tokens {
        /// The ids.
        ids: &'a Array,
        /// The table, in the layout of a quantized projection.
        table: QuantizedProjection<'a>,
        /// Multiplies every embedded row (1 for none; Gemma: `bf16(√hidden)`); finite.
        scale: f32,
    },
}

/// The head a [`decoder_stack`] may end with: `logits = projection(rms_norm(y, norm))`, then
/// `c·tanh(logits / c)` with a soft cap `c`.
#[derive(Debug, Clone, Copy)]
pub struct StackHead<'a> {
    /// Final RMS-norm weight `[hidden]` (float32) and its epsilon.
    pub norm: (&'a Array, f32),
    /// The LM head `[vocab, hidden]`, quantized.
    pub projection: QuantizedProjection<'a>,
    /// Soft cap of the logits (`Some(c)`: positive and finite; Gemma 2 and 4), or `None`.
    pub softcap: Option<f32>,
}

/// What [`decoder_stack`] returns.
#[derive(Debug, Clone)]
pub struct DecoderStackOutput {
    /// The last layer's output `[B, L, hidden]`, or with a head the logits `[B, L, vocab]`.
    pub output: Array,
    /// Each layer's key and value caches with the new positions written, in layer order
    /// (with several sequences, layer by layer and within a layer sequence by sequence).
    pub caches: Vec<(Array, Array)>,
}

/// Consecutive decoder layers as one primitive: `layers[i]` is layer `i`'s key cache, value
/// cache and weights; each layer computes what [`decoder_layer`] does with its own parameters
/// (head counts, window, soft cap, norms, activation, RoPE frequencies may differ from layer
/// to layer) and feeds the next, all at position `offset`. The input may be token ids looked
/// up in a quantized embedding table ([`StackInput::Tokens`], with a scale) and the stack may
/// end with the final norm and a quantized LM head ([`StackHead`], with an optional soft cap),
/// so that a whole decode step of a quantized model is one primitive. The numbers are those of
/// the embedding lookup, [`decoder_layer`] layer after layer and
/// [`super::fused_quantized_matmul`] for the head; what changes is that MLX schedules one
/// primitive per step instead of one per layer and op.
///
/// `Ok(None)` when any part is not eligible (see [`decoder_layer`]; ids that are neither
/// int32 nor uint32); the caller then runs the parts one at a time. An empty `layers`, shapes
/// that do not fit, and invalid parameters (windows, soft caps, a non-finite embedding scale)
/// are errors.
///
/// ```
/// use mlx_rs::native::{decoder_stack, Activation, CachedAttentionParams, DecoderLayerWeights, QuantizedProjection, StackInput};
/// use mlx_rs::{quant, Array, Dtype};
/// // Two layers whose projections all quantize zero weights: each returns its input.
/// let zeros = |rows| quant::quantize(&Array::zeros(&[rows, 32], Dtype::Float32)?, 32, 4);
/// let (qkv_w, qkv_s, qkv_b) = zeros(96)?;
/// let (o_w, o_s, o_b) = zeros(32)?;
/// let (gu_w, gu_s, gu_b) = zeros(64)?;
/// let (d_w, d_s, d_b) = zeros(32)?;
/// let proj = |weight, scales, biases| QuantizedProjection { weight, scales, biases, group_size: 32, bits: 4, blocks: &[] };
/// let ones = Array::ones(&[32], Dtype::Float32)?;
/// let inv_freq = Array::ones(&[16], Dtype::Float32)?;
/// let attention = CachedAttentionParams {
///     heads: 1, kv_heads: 1, head_dim: 32, offset: 0, scale: 1.0, norm_eps: 1e-6,
///     window: None, logit_softcap: None, keys: Default::default(), value_norm: false,
/// };
/// let w = DecoderLayerWeights {
///     input_norm: (&ones, 1e-6),
///     qkv: proj(&qkv_w, &qkv_s, &qkv_b),
///     qkv_bias: None,
///     inv_freq: &inv_freq,
///     q_norm: None,
///     k_norm: None,
///     o: proj(&o_w, &o_s, &o_b),
///     attention_out_norm: None,
///     pre_mlp_norm: (&ones, 1e-6),
///     gate_up: proj(&gu_w, &gu_s, &gu_b),
///     down: proj(&d_w, &d_s, &d_b),
///     mlp_out_norm: None,
///     activation: Activation::Silu,
///     attention,
/// };
/// // The second layer: a sliding window of 2 and GeGLU (its blocks add 0 all the same).
/// let w2 = DecoderLayerWeights {
///     activation: Activation::GeluTanh,
///     attention: CachedAttentionParams { window: Some(2), ..attention },
///     ..w
/// };
/// let x = Array::from_slice(&(0..32).map(|i| i as f32).collect::<Vec<_>>(), &[1, 1, 32])?;
/// let (k0, v0) = (Array::zeros(&[1, 1, 4, 32], Dtype::Float32)?, Array::zeros(&[1, 1, 4, 32], Dtype::Float32)?);
/// let (k1, v1) = (Array::zeros(&[1, 1, 2, 32], Dtype::Float32)?, Array::zeros(&[1, 1, 2, 32], Dtype::Float32)?);
/// let layers = [(&k0, &v0, w), (&k1, &v1, w2)];
/// if let Some(out) = decoder_stack(StackInput::Hidden(&x), &layers, None, 0)? {
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
    offset: i32,
) -> Result<Option<DecoderStackOutput>> {
    let weights: Vec<DecoderLayerWeights<'_>> = layers.iter().map(|l| l.2).collect();
    let caches: Vec<Vec<(&Array, &Array)>> = layers.iter().map(|l| vec![(l.0, l.1)]).collect();
    stack_call(input, &weights, &caches, head, &[offset])
}

/// [`decoder_stack`] for `B` independent sequences of one new token each (`input` `[B, 1, …]`):
/// sequence `b` is at position `offsets[b]` and has caches of its own, `caches[l][b]` for
/// layer `l` (each `[1, kv_heads, capacity_b, head_dim]`). The projections and MLPs run once
/// for the `B` rows (the weights are read once per step), the attention per sequence. The
/// output's caches are in the same order, flattened: layer 0's `B` pairs, then layer 1's, ….
/// `Ok(None)` and errors as [`decoder_stack`]; `caches` or `offsets` of the wrong size are
/// errors.
///
/// ```
/// # use mlx_rs::native::{decoder_stack_seqs, Activation, CachedAttentionParams, DecoderLayerWeights, QuantizedProjection, StackInput};
/// # use mlx_rs::{quant, Array, Dtype};
/// # let zeros = |rows| quant::quantize(&Array::zeros(&[rows, 32], Dtype::Float32)?, 32, 4);
/// # let (qkv_w, qkv_s, qkv_b) = zeros(96)?;
/// # let (o_w, o_s, o_b) = zeros(32)?;
/// # let (gu_w, gu_s, gu_b) = zeros(64)?;
/// # let (d_w, d_s, d_b) = zeros(32)?;
/// # let proj = |weight, scales, biases| QuantizedProjection { weight, scales, biases, group_size: 32, bits: 4, blocks: &[] };
/// # let ones = Array::ones(&[32], Dtype::Float32)?;
/// # let inv_freq = Array::ones(&[16], Dtype::Float32)?;
/// # let attention = CachedAttentionParams {
/// #     heads: 1, kv_heads: 1, head_dim: 32, offset: 0, scale: 1.0, norm_eps: 1e-6,
/// #     window: None, logit_softcap: None, keys: Default::default(), value_norm: false,
/// # };
/// // One layer whose projections quantize zero weights (it returns its input; see
/// // `decoder_stack`), two sequences at positions 3 and 0 with caches of their own.
/// let w = DecoderLayerWeights {
///     input_norm: (&ones, 1e-6), qkv: proj(&qkv_w, &qkv_s, &qkv_b), qkv_bias: None,
///     inv_freq: &inv_freq, q_norm: None, k_norm: None, o: proj(&o_w, &o_s, &o_b),
///     attention_out_norm: None, pre_mlp_norm: (&ones, 1e-6), gate_up: proj(&gu_w, &gu_s, &gu_b),
///     down: proj(&d_w, &d_s, &d_b), mlp_out_norm: None, activation: Activation::Silu, attention,
/// };
/// let x = Array::ones(&[2, 1, 32], Dtype::Float32)?;
/// let (k0, v0) = (Array::zeros(&[1, 1, 8, 32], Dtype::Float32)?, Array::zeros(&[1, 1, 8, 32], Dtype::Float32)?);
/// let (k1, v1) = (Array::zeros(&[1, 1, 4, 32], Dtype::Float32)?, Array::zeros(&[1, 1, 4, 32], Dtype::Float32)?);
/// let caches = [vec![(&k0, &v0), (&k1, &v1)]];
/// if let Some(out) = decoder_stack_seqs(StackInput::Hidden(&x), &[w], &caches, None, &[3, 0])? {
///     assert_eq!(out.output.to_vec::<f32>()?, vec![1.0; 64]);
///     assert_eq!(out.caches[1].0.shape(), vec![1, 1, 4, 32]);
/// }
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn decoder_stack_seqs(
    input: StackInput<'_>,
    layers: &[DecoderLayerWeights<'_>],
    caches: &[Vec<(&Array, &Array)>],
    head: Option<StackHead<'_>>,
    offsets: &[i32],
) -> Result<Option<DecoderStackOutput>> {
    stack_call(input, layers, caches, head, offsets)
}

/// Both stack entry points: one offset (the rows share each layer's caches,
/// `caches[l] = [(k, v)]`) or one per sequence (`caches[l][b]`).
#[track_caller]
fn stack_call(
    input: StackInput<'_>,
    layers: &[DecoderLayerWeights<'_>],
    caches: &[Vec<(&Array, &Array)>],
    head: Option<StackHead<'_>>,
    offsets: &[i32],
) -> Result<Option<DecoderStackOutput>> {
    let seqs = offsets.len();
    if seqs == 0 || caches.len() != layers.len() || caches.iter().any(|c| c.len() != seqs) {
        return Err(Error::InvalidArgument(format!(
            "decoder_stack: {} layers need as many cache lists, each of one (k, v) pair per \
             offset ({seqs})",
            layers.len()
        )));
    }
    let raw = layers
        .iter()
        .zip(caches)
        .map(|(w, c)| w.raw(c[0].0, c[0].1))
        .collect::<Result<Vec<_>>>()?;
    // Sequences 1.. of each layer, layer after layer.
    let more: Vec<sys::mlx_array> = caches
        .iter()
        .flat_map(|c| c[1..].iter().flat_map(|(k, v)| [k.as_raw(), v.as_raw()]))
        .collect();
    let (x, table, embed_scale) = match input {
        StackInput::Hidden(x) => (x, None, 1.0),
        StackInput::Tokens { ids, table, scale } => {
            if !scale.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "decoder_stack: the embedding scale must be finite, got {scale}"
                )));
            }
            (ids, Some(table.raw()), scale)
        }
    };
    let head_softcap = softcap_raw(
        "decoder_stack: the head's soft cap",
        head.and_then(|h| h.softcap),
    )?;
    if !super::native_ops_enabled() || !crate::quant::native_qmm_enabled() {
        return Ok(None);
    }
    let head_projection = head.map(|h| h.projection.raw());
    let n_layers = i32::try_from(raw.len())
        .map_err(|_| Error::InvalidArgument("decoder_stack: too many layers".into()))?;
    let n_seqs = i32::try_from(seqs)
        .map_err(|_| Error::InvalidArgument("decoder_stack: too many sequences".into()))?;
    let table_ptr = table.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    let head_ptr = head_projection
        .as_ref()
        .map_or(std::ptr::null(), |h| h as *const _);
    let (head_norm, head_eps) = (
        raw_or_null(head.map(|h| h.norm.0)),
        head.map_or(0.0, |h| h.norm.1),
    );
    let parts = native_outputs(|res, s, used| {
        // SAFETY: valid handles (null handles for the absent biases and norms) that outlive
        // the call, `raw` holds `n_layers` structs, `more` the 2 (n_seqs − 1) extra caches of
        // each layer, `offsets` n_seqs entries, the table and head structs (or null) outlive
        // it, and out-parameters we own; the shim validates shapes before building anything.
        unsafe {
            if seqs == 1 {
                sys::native_ops::mlxrs_decoder_stack(
                    res,
                    x.as_raw(),
                    table_ptr,
                    embed_scale,
                    raw.as_ptr(),
                    n_layers,
                    head_norm,
                    head_eps,
                    head_ptr,
                    head_softcap,
                    offsets[0],
                    s,
                    used,
                )
            } else {
                sys::native_ops::mlxrs_decoder_stack_seqs(
                    res,
                    x.as_raw(),
                    table_ptr,
                    embed_scale,
                    raw.as_ptr(),
                    n_layers,
                    more.as_ptr(),
                    offsets.as_ptr(),
                    n_seqs,
                    head_norm,
                    head_eps,
                    head_ptr,
                    head_softcap,
                    s,
                    used,
                )
            }
        }
    })?;
    let Some(parts) = parts else {
        return Ok(None);
    };
    let mut parts = parts.into_iter();
    let output = parts.next();
    let mut out_caches = Vec::with_capacity(layers.len() * seqs);
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        out_caches.push((k, v));
    }
    match output {
        Some(output) if out_caches.len() == layers.len() * seqs => Ok(Some(DecoderStackOutput {
            output,
            caches: out_caches,
        })),
        _ => Err(Error::InvalidArgument(format!(
            "decoder_stack: expected {} outputs from the native primitive",
            1 + 2 * layers.len() * seqs
        ))),
    }
}
