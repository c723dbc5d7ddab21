//! The project's own CPU primitives for the small fused ops of a decoder step: RMS norm,
//! SwiGLU and GeGLU, and attention with RoPE, the KV-cache write (plain or ring caches),
//! sliding windows and logit soft caps.
//!
//! MLX 0.32.2 has no CPU kernels for its `fast` ops: on the CPU `fast::rms_norm`, `fast::rope`
//! and `fast::scaled_dot_product_attention` are composed from several primitives each, and
//! each primitive costs microseconds of scheduling. At decode, where every tensor is a few
//! hundred floats, that overhead was most of a step (on the 2-core development machine:
//! ~40 µs per RMS norm, ~120 µs per RoPE and ~100 µs per attention call, for a few µs of
//! arithmetic). Each op here is one MLX primitive whose CPU evaluation runs one loop
//! (`mlx-sys/kernels/ops_cpu.cpp`).
//!
//! Used for float32 on CPU streams; everything else (GPU streams, other dtypes) takes MLX's
//! own ops. [`crate::fast::rms_norm`], [`swiglu`] and [`gelu_tanh_glu`] pick the path
//! themselves;
//! [`cached_attention`], [`fused_quantized_matmul`] (the quantized matmul with an RMS-norm
//! prologue and a residual epilogue), [`decoder_layer`] (a whole decoder layer of quantized
//! projections built from the others, one primitive per layer) and [`decoder_stack`]
//! (consecutive such layers, one primitive per step) return `None` when the call is not
//! eligible, so that the caller can compose the step itself. Opt out with [`set_native_ops`]
//! or the environment variable
//! `MLX_RS_NATIVE_OPS=0` (the quantized matmul has its own switch,
//! [`crate::quant::set_native_qmm`]).

use crate::error::{Error, Result};
use crate::vector::VectorArray;
use crate::Array;
use mlx_sys as sys;
use std::sync::atomic::{AtomicU8, Ordering};

mod layer;
pub use layer::{
    decoder_layer, decoder_stack, decoder_stack_seqs, Activation, DecoderLayerOutput,
    DecoderLayerWeights, DecoderStackOutput, QuantizedProjection, StackHead, StackInput,
};

/// An on/off switch whose first reading may come from an environment variable (`0`, `false`
/// or `off` turn it off); [`Switch::set`] overrides it.
pub(crate) struct Switch {
    state: AtomicU8, // 0: not decided yet, 1: on, 2: off
    env: &'static str,
}

impl Switch {
    pub(crate) const fn new(env: &'static str) -> Switch {
        Switch {
            state: AtomicU8::new(0),
            env,
        }
    }

    pub(crate) fn set(&self, on: bool) {
        self.state.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> bool {
        match self.state.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let off = std::env::var(self.env).is_ok_and(|v| {
                    matches!(
                        v.trim().to_ascii_lowercase().as_str(),
                        "0" | "false" | "off"
                    )
                });
                // Only the first reader decides; a concurrent `set` wins.
                let _ = self.state.compare_exchange(
                    0,
                    if off { 2 } else { 1 },
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                self.state.load(Ordering::Relaxed) == 1
            }
        }
    }
}

static NATIVE_OPS: Switch = Switch::new("MLX_RS_NATIVE_OPS");

/// Turns the native primitives of this module on or off for the whole process (on by default,
/// unless `MLX_RS_NATIVE_OPS` is `0`, `false` or `off` when first consulted).
///
/// ```
/// use mlx_rs::{fast, native, Array};
/// let x = Array::from_slice(&[3.0f32, 4.0], &[1, 2])?;
/// let before = native::native_ops_enabled();
/// native::set_native_ops(false);
/// let mlx = fast::rms_norm(&x, None, 0.0)?.to_vec::<f32>()?;
/// native::set_native_ops(true);
/// let ours = fast::rms_norm(&x, None, 0.0)?.to_vec::<f32>()?;
/// native::set_native_ops(before);
/// // mean of squares 12.5: both give x / sqrt(12.5).
/// for v in mlx.iter().chain(&ours).zip([3.0f32, 4.0, 3.0, 4.0]) {
///     assert!((v.0 - v.1 / 12.5f32.sqrt()).abs() < 1e-6);
/// }
/// # Ok::<(), mlx_rs::Error>(())
/// ```
pub fn set_native_ops(enabled: bool) {
    NATIVE_OPS.set(enabled);
}

/// Whether the native primitives are used where they apply (see [`set_native_ops`]).
///
/// ```
/// mlx_rs::native::set_native_ops(true);
/// assert!(mlx_rs::native::native_ops_enabled());
/// ```
pub fn native_ops_enabled() -> bool {
    NATIVE_OPS.get()
}

/// The handle of `a`, or the null handle (`ctx == NULL`) that mlx-c and our shims read as
/// "absent".
fn raw_or_null(a: Option<&Array>) -> sys::mlx_array {
    a.map_or_else(null_array, Array::as_raw)
}

fn null_array() -> sys::mlx_array {
    sys::mlx_array {
        ctx: std::ptr::null_mut(),
    }
}

/// Runs a native builder when `enabled`; `None` when off or when the builder declined.
#[track_caller]
fn try_native(
    enabled: bool,
    build: impl FnOnce(*mut sys::mlx_array, sys::mlx_stream, *mut bool) -> std::ffi::c_int,
) -> Result<Option<Array>> {
    if !enabled {
        return Ok(None);
    }
    let mut used = false;
    let out = Array::try_op_stream(|res, s| build(res, s, &mut used))?;
    Ok(used.then_some(out))
}

/// The native RMS norm when it applies (CPU stream, float32 `x` and weight); `None` otherwise.
/// Shapes are checked by the caller ([`crate::fast::rms_norm`]).
#[track_caller]
pub(crate) fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Option<Array>> {
    let w = raw_or_null(weight);
    // SAFETY: valid handles (or the null handle for "no weight") and out-parameters we own.
    try_native(native_ops_enabled(), |res, s, used| unsafe {
        sys::native_ops::mlxrs_rms_norm(res, x.as_raw(), w, eps, s, used)
    })
}

/// The native argmax along the last axis when it applies (CPU stream, float32); `None`
/// otherwise. Emptiness is checked by the caller ([`Array::argmax`]).
#[track_caller]
pub(crate) fn argmax_last(x: &Array) -> Result<Option<Array>> {
    // SAFETY: a valid handle and out-parameters we own.
    try_native(native_ops_enabled(), |res, s, used| unsafe {
        sys::native_ops::mlxrs_argmax_last(res, x.as_raw(), s, used)
    })
}

/// Checks that the last axis of `x` can hold `[gate | up]` (a positive even length).
#[track_caller]
fn check_glu(op: &str, x: &Array) -> Result<()> {
    let last = x.shape().last().copied().unwrap_or(0);
    if x.ndim() == 0 || last == 0 || last % 2 != 0 {
        return Err(Error::Shape(format!(
            "{op}: the last axis must hold [gate | up] (a positive even length), got shape {:?}",
            x.shape()
        )));
    }
    Ok(())
}

/// The halves `[gate, up]` of `x`'s last axis (checked by [`check_glu`]).
#[track_caller]
fn glu_halves(x: &Array) -> Result<(Array, Array)> {
    let mut parts = x.split(2, -1)?.into_iter();
    match (parts.next(), parts.next()) {
        (Some(gate), Some(up)) => Ok((gate, up)),
        _ => Err(Error::Shape(format!(
            "splitting {:?} in two did not give two arrays",
            x.shape()
        ))),
    }
}

/// `silu(gate) * up` where the last axis of `x` is `[gate | up]`: the activation of a SwiGLU
/// MLP whose gate and up projections are fused into one matmul. The result's last axis is half
/// of `x`'s. One native primitive on CPU streams in float32; MLX's ops otherwise.
///
/// ```
/// use mlx_rs::{native, Array};
/// let x = Array::from_slice(&[0.0f32, 2.0, 5.0, 7.0], &[1, 4])?; // gate [0, 2], up [5, 7]
/// let y = native::swiglu(&x)?.to_vec::<f32>()?;
/// // silu(0) = 0; silu(2) = 2 / (1 + e^-2).
/// let want = 2.0f32 / (1.0 + (-2.0f32).exp()) * 7.0;
/// assert!(y[0] == 0.0 && (y[1] - want).abs() < 1e-5);
/// assert!(native::swiglu(&Array::from_slice(&[1.0f32; 3], &[3])?).is_err());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn swiglu(x: &Array) -> Result<Array> {
    check_glu("swiglu", x)?;
    // SAFETY: a valid handle and out-parameters we own.
    if let Some(y) = try_native(native_ops_enabled(), |res, s, used| unsafe {
        sys::native_ops::mlxrs_swiglu(res, x.as_raw(), s, used)
    })? {
        return Ok(y);
    }
    let (gate, up) = glu_halves(x)?;
    gate.silu()?.multiply(&up)
}

/// `gelu_tanh(gate) * up` where the last axis of `x` is `[gate | up]`: the activation of a
/// GeGLU MLP (Gemma) whose gate and up projections are fused into one matmul, with the tanh
/// approximation of GELU, `gelu_tanh(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`. The
/// result's last axis is half of `x`'s. One native primitive on CPU streams in float32 (which
/// evaluates the equal `x·sigmoid(2·√(2/π)·(x + 0.044715·x³))`, free of cancellation for
/// negative `x`); MLX's ops composing the formula ([`Array::gelu_approx`]) otherwise.
///
/// ```
/// use mlx_rs::{native, Array};
/// let x = Array::from_slice(&[0.0f32, 1.0, 5.0, 7.0], &[1, 4])?; // gate [0, 1], up [5, 7]
/// let y = native::gelu_tanh_glu(&x)?.to_vec::<f32>()?;
/// // gelu_tanh(0) = 0; gelu_tanh(1) = 0.5 (1 + tanh(√(2/π) · 1.044715)) ≈ 0.841192.
/// let u = (2.0f64 / std::f64::consts::PI).sqrt() * 1.044715;
/// let want = 0.5 * (1.0 + u.tanh()) * 7.0;
/// assert!(y[0] == 0.0 && (y[1] as f64 - want).abs() < 1e-5);
/// assert!(native::gelu_tanh_glu(&Array::from_slice(&[1.0f32; 3], &[3])?).is_err());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn gelu_tanh_glu(x: &Array) -> Result<Array> {
    check_glu("gelu_tanh_glu", x)?;
    // SAFETY: a valid handle and out-parameters we own.
    if let Some(y) = try_native(native_ops_enabled(), |res, s, used| unsafe {
        sys::native_ops::mlxrs_gelu_tanh_glu(res, x.as_raw(), s, used)
    })? {
        return Ok(y);
    }
    let (gate, up) = glu_halves(x)?;
    gate.gelu_approx()?.multiply(&up)
}

/// The parameters of [`cached_attention`] besides its arrays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CachedAttentionParams {
    /// Query heads.
    pub heads: i32,
    /// Key/value heads (`heads` is a multiple).
    pub kv_heads: i32,
    /// Size of each head (even).
    pub head_dim: i32,
    /// Position of the first new token.
    pub offset: i32,
    /// Multiplies `q · k` (usually `head_dim^-0.5`).
    pub scale: f32,
    /// Epsilon of the optional per-head RMS norms.
    pub norm_eps: f32,
    /// Sliding window: with `Some(w)` (`w >= 1`) the query at position `i` sees the keys at
    /// positions `j` with `0 <= i - j < w` (`w` keys including its own); `None`: every
    /// earlier position.
    pub window: Option<i32>,
    /// Soft cap of the attention logits: with `Some(c)` (`c > 0`, finite) the scores become
    /// `c·tanh(scores / c)` (after `scale`, before the softmax); `None`: none.
    pub logit_softcap: Option<f32>,
    /// What the fused projection holds besides the queries, and whether the caches are
    /// written.
    pub keys: AttentionKeys,
    /// Values are RMS-normalised without a weight (epsilon `norm_eps`) before they are stored
    /// (Gemma 4's `v_norm`).
    pub value_norm: bool,
}

/// Where a [`cached_attention`] step's keys and values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionKeys {
    /// `qkv` holds q, k and v heads; k and v are written to the caches.
    #[default]
    Projected,
    /// `qkv` holds q and k heads; the values are the keys as projected (before the key norm
    /// and RoPE), written to the caches (Gemma 4's `attention_k_eq_v`).
    AsValues,
    /// `qkv` holds q heads only; the caches already hold this step's keys and values (another
    /// layer wrote them) and are only read (Gemma 4's KV sharing).
    Shared,
}

impl CachedAttentionParams {
    /// The C struct of these parameters; a window below 1 or a soft cap that is not positive
    /// and finite is an error.
    pub(crate) fn raw(&self) -> Result<sys::native_ops::mlxrs_attention_params> {
        let window = match self.window {
            None => 0,
            Some(w) if w >= 1 => w,
            Some(w) => {
                return Err(Error::InvalidArgument(format!(
                    "attention window must be at least 1, got {w}"
                )))
            }
        };
        Ok(sys::native_ops::mlxrs_attention_params {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            offset: self.offset,
            scale: self.scale,
            qk_norm_eps: self.norm_eps,
            window,
            logit_softcap: softcap_raw("attention logit soft cap", self.logit_softcap)?,
            kv_mode: match self.keys {
                AttentionKeys::Projected => 0,
                AttentionKeys::AsValues => 1,
                AttentionKeys::Shared => 2,
            },
            value_norm: i32::from(self.value_norm),
        })
    }
}

/// A soft cap as the C side takes it: 0 for none; `Some(c)` must be positive and finite.
pub(crate) fn softcap_raw(what: &str, cap: Option<f32>) -> Result<f32> {
    match cap {
        None => Ok(0.0),
        Some(c) if c > 0.0 && c.is_finite() => Ok(c),
        Some(c) => Err(Error::InvalidArgument(format!(
            "{what} must be positive and finite, got {c}"
        ))),
    }
}

/// The three arrays [`cached_attention`] returns.
#[derive(Debug, Clone)]
pub struct CachedAttentionOutput {
    /// `[B, L, heads * head_dim]`, ready for the output projection.
    pub attention: Array,
    /// The key cache with the new positions written.
    pub k_cache: Array,
    /// The value cache with the new positions written.
    pub v_cache: Array,
}

/// One step of grouped-query attention over a KV cache as a single primitive: takes the
/// fused q/k/v projection of `L` new tokens (1 when decoding, more for a prefill chunk),
/// applies the optional per-head RMS norms (`q_norm`, `k_norm`, as Qwen3) and RoPE in the
/// "rotate half" layout (token `l` at position `offset + l`, `angle_i = position *
/// inv_freq[i]`), writes k and v of position `p` into cache slot `p % capacity` and returns
/// causal attention `softmax(q kᵀ * scale) v`: token `l` at position `i = offset + l` sees
/// positions `max(0, i - window + 1)..=i` (all of `0..=i` without a window), each read from its
/// slot, with the scores soft-capped first when `logit_softcap` is set. Long chunks go through
/// BLAS (`cblas_sgemm`) per key/value head; decode spreads the heads over the native kernels'
/// threads.
///
/// - `qkv`: `[B, L, (heads + 2 kv_heads) * head_dim]`, q heads then k heads then v heads
///   (without the v heads for [`AttentionKeys::AsValues`], q heads only for
///   [`AttentionKeys::Shared`], whose caches are returned unchanged);
/// - `k_cache`, `v_cache`: `[B, kv_heads, capacity, head_dim]`, either a plain cache
///   (`offset + L <= capacity`: slot = position) or, with a window `w`, a ring of
///   `capacity >= w + L - 1` slots (then no write of the chunk overwrites a key that one of
///   its earlier queries still sees); anything else is an error;
/// - `inv_freq`: `[head_dim / 2]`; `q_norm`, `k_norm`: `[head_dim]`.
///
/// Returns `[B, L, heads * head_dim]`, ready for the output projection, and the caches.
/// The caches are written in place: the returned cache arrays share the input caches' buffers,
/// so other handles to the same caches see the new positions too (no other slot is changed).
/// Returns `Ok(None)` when the call is not eligible for the native primitive (not a CPU
/// stream, not float32, native ops off): the caller then composes the step from MLX's ops.
/// Inconsistent shapes, a window below 1 and a soft cap that is not positive and finite are
/// errors.
///
/// ```
/// use mlx_rs::native::{cached_attention, CachedAttentionParams};
/// use mlx_rs::{Array, Dtype};
/// // One head of size 2, at position 1; position 0 holds k = (1, 0), v = (0, 0).
/// let qkv = Array::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 4.0, 8.0], &[1, 1, 6])?;
/// let k = Array::from_slice(&[1.0f32, 0.0, 0.0, 0.0], &[1, 1, 2, 2])?;
/// let v = Array::zeros(&[1, 1, 2, 2], Dtype::Float32)?;
/// let inv_freq = Array::from_slice(&[0.0f32], &[1])?; // no rotation
/// let p = CachedAttentionParams {
///     heads: 1, kv_heads: 1, head_dim: 2, offset: 1, scale: 1.0, norm_eps: 1e-6,
///     window: None, logit_softcap: None, keys: Default::default(), value_norm: false,
/// };
/// if let Some(out) = cached_attention(&qkv, &k, &v, &inv_freq, None, None, p)? {
///     // Both keys equal q: equal weights, so the output is the mean of (0, 0) and (4, 8).
///     assert_eq!(out.attention.to_vec::<f32>()?, vec![2.0, 4.0]);
///     assert_eq!(out.v_cache.to_vec::<f32>()?, vec![0.0, 0.0, 4.0, 8.0]);
/// }
/// // A window of 1: the token sees only itself.
/// let p1 = CachedAttentionParams { window: Some(1), ..p };
/// let k = Array::from_slice(&[1.0f32, 0.0, 0.0, 0.0], &[1, 1, 2, 2])?;
/// let v = Array::zeros(&[1, 1, 2, 2], Dtype::Float32)?;
/// if let Some(out) = cached_attention(&qkv, &k, &v, &inv_freq, None, None, p1)? {
///     assert_eq!(out.attention.to_vec::<f32>()?, vec![4.0, 8.0]);
/// }
/// // A ring of one slot holds position 1 in slot 1 % 1 = 0.
/// let ring = Array::zeros(&[1, 1, 1, 2], Dtype::Float32)?;
/// if let Some(out) = cached_attention(&qkv, &ring, &ring, &inv_freq, None, None, p1)? {
///     assert_eq!(out.v_cache.to_vec::<f32>()?, vec![4.0, 8.0]);
/// }
/// // Without the window the one slot cannot hold positions 0 and 1.
/// assert!(cached_attention(&qkv, &ring, &ring, &inv_freq, None, None, p).is_err());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn cached_attention(
    qkv: &Array,
    k_cache: &Array,
    v_cache: &Array,
    inv_freq: &Array,
    q_norm: Option<&Array>,
    k_norm: Option<&Array>,
    params: CachedAttentionParams,
) -> Result<Option<CachedAttentionOutput>> {
    let raw = params.raw()?;
    if !native_ops_enabled() {
        return Ok(None);
    }
    let parts = three_outputs("cached_attention", |res, s, used| {
        // SAFETY: valid handles (or null handles for absent norms) and out-parameters we own;
        // the shim validates shapes and parameters before building anything.
        unsafe {
            sys::native_ops::mlxrs_cached_attention(
                res,
                qkv.as_raw(),
                k_cache.as_raw(),
                v_cache.as_raw(),
                inv_freq.as_raw(),
                raw_or_null(q_norm),
                raw_or_null(k_norm),
                raw,
                s,
                used,
            )
        }
    })?;
    Ok(
        parts.map(|(attention, k_cache, v_cache)| CachedAttentionOutput {
            attention,
            k_cache,
            v_cache,
        }),
    )
}

/// Runs a native builder that writes a vector of arrays: `None` when it declined.
#[track_caller]
fn native_outputs(
    build: impl FnOnce(*mut sys::mlx_vector_array, sys::mlx_stream, *mut bool) -> std::ffi::c_int,
) -> Result<Option<Vec<Array>>> {
    let mut used = false;
    let parts = VectorArray::try_op_stream(|res, s| build(res, s, &mut used));
    if !used {
        return parts.map(|_| None);
    }
    parts.map(Some)
}

/// Runs a native builder that writes three arrays into a vector: `None` when it declined.
#[track_caller]
fn three_outputs(
    op: &str,
    build: impl FnOnce(*mut sys::mlx_vector_array, sys::mlx_stream, *mut bool) -> std::ffi::c_int,
) -> Result<Option<(Array, Array, Array)>> {
    let Some(parts) = native_outputs(build)? else {
        return Ok(None);
    };
    let mut parts = parts.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) => Ok(Some((a, b, c))),
        _ => Err(Error::InvalidArgument(format!(
            "{op}: the primitive returned fewer than three arrays"
        ))),
    }
}

/// `rms_norm(x) · dequantize(W)ᵀ + residual` as one native primitive: the quantized matmul of
/// [`crate::quant::quantized_matmul`] (`transpose = true`) with an optional RMS-norm prologue
/// (`norm = Some((weight, eps))`, weight `[K]` float32) and an optional residual added to the
/// result (`residual`, the output's shape). In a decoder layer this turns
/// `norm → projection` and `projection → + residual` into one MLX op each.
///
/// Returns `Ok(None)` when the native kernel does not take the call (not an x86-64 CPU
/// stream, unsupported bits or group size, the kernel switched off with
/// [`crate::quant::set_native_qmm`], a norm weight that is not float32): the caller then
/// composes the ops. Shapes are checked as for `quantized_matmul`; a norm weight or residual
/// of the wrong shape is an error.
///
/// ```
/// use mlx_rs::{native, quant, Array};
/// let wq = Array::from_slice(&[0x2222_2222u32; 4], &[1, 4])?; // [1, 32] of codes 2
/// let s = Array::from_slice(&[0.5f32], &[1, 1])?;
/// let b = Array::from_slice(&[1.0f32], &[1, 1])?; // every weight is 0.5 * 2 + 1 = 2
/// let x = Array::from_slice(&[3.0f32; 32], &[1, 32])?;
/// let w = Array::from_slice(&[1.0f32; 32], &[32])?;
/// let r = Array::from_slice(&[10.0f32], &[1, 1])?;
/// if let Some(y) = native::fused_quantized_matmul(&x, &wq, &s, &b, 32, 4, Some((&w, 0.0)), Some(&r))? {
///     // The norm maps every 3 to 1: 32 * 2 + 10.
///     assert!((y.item::<f32>()? - 74.0).abs() < 1e-4);
/// }
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn fused_quantized_matmul(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    group_size: i32,
    bits: i32,
    norm: Option<(&Array, f32)>,
    residual: Option<&Array>,
) -> Result<Option<Array>> {
    let (rows, cols) =
        crate::quant::check_packed("quantized_matmul", w, scales, biases, group_size, bits)?;
    crate::quant::check_x("quantized_matmul", x, true, rows, cols)?;
    let (norm_weight, eps) = norm.map_or((null_array(), 0.0), |(w, e)| (w.as_raw(), e));
    let residual = raw_or_null(residual);
    // SAFETY: valid handles (or null handles for the absent prologue / epilogue) and
    // out-parameters we own.
    try_native(crate::quant::native_qmm_enabled(), |res, s, used| unsafe {
        sys::native_qmm::mlxrs_quantized_matmul_fused(
            res,
            x.as_raw(),
            w.as_raw(),
            scales.as_raw(),
            biases.as_raw(),
            group_size,
            bits,
            norm_weight,
            eps,
            residual,
            s,
            used,
        )
    })
}
