//! Fused kernels for transformer building blocks: normalisations, rotary embeddings and
//! attention (`mlx::core::fast`).
//!
//! Each function computes the same values as its plain composition of ops, in one kernel where
//! the device has one. Shapes are checked here, before MLX sees them, so that bad input comes
//! back as [`Error::Shape`] or [`Error::InvalidArgument`].
//!
//! ```
//! use mlx_rs::{fast, Array};
//! let x = Array::from_slice(&[3.0f32, 4.0], &[1, 2])?;
//! // rms(x) = sqrt((9 + 16) / 2); the output has unit root-mean-square.
//! let y = fast::rms_norm(&x, None, 0.0)?.to_vec::<f32>()?;
//! let r = (12.5f32).sqrt();
//! assert!((y[0] - 3.0 / r).abs() < 1e-6 && (y[1] - 4.0 / r).abs() < 1e-6);
//! # Ok::<(), mlx_rs::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::Array;
use mlx_sys as sys;
use std::ffi::CString;

/// The "none" handle mlx-c accepts for its `/* may be null */` array arguments.
fn null_array() -> sys::mlx_array {
    sys::mlx_array {
        ctx: std::ptr::null_mut(),
    }
}

fn opt_raw(a: Option<&Array>) -> sys::mlx_array {
    a.map_or_else(null_array, Array::as_raw)
}

/// Checks that an optional affine parameter (`weight` or `bias`) is 1-D with the size of `x`'s
/// last axis.
fn check_param(name: &str, op: &str, x: &Array, p: Option<&Array>) -> Result<()> {
    let Some(p) = p else { return Ok(()) };
    let last = *x.shape().last().unwrap_or(&0);
    if p.shape() != [last] {
        return Err(Error::Shape(format!(
            "{op}: {name} must have shape [{last}] (the last axis of x, shape {:?}), got {:?}",
            x.shape(),
            p.shape()
        )));
    }
    Ok(())
}

fn check_has_axes(op: &str, x: &Array, min: usize) -> Result<()> {
    if x.ndim() < min {
        return Err(Error::Shape(format!(
            "{op}: x must have at least {min} dimension(s), got shape {:?}",
            x.shape()
        )));
    }
    Ok(())
}

/// Root-mean-square normalisation over the last axis:
/// `x / sqrt(mean(x², -1) + eps) * weight`.
///
/// `weight`, when given, must be 1-D with the size of `x`'s last axis; `None` means no scaling.
///
/// ```
/// use mlx_rs::{fast, Array, Error};
/// let x = Array::from_slice(&[1.0f32, -1.0, 1.0, -1.0], &[2, 2])?;
/// let w = Array::from_slice(&[2.0f32, 3.0], &[2])?;
/// let y = fast::rms_norm(&x, Some(&w), 0.0)?.to_vec::<f32>()?;
/// assert_eq!(y, vec![2.0, -3.0, 2.0, -3.0]);
/// let bad = Array::from_slice(&[1.0f32; 3], &[3])?;
/// assert!(matches!(fast::rms_norm(&x, Some(&bad), 1e-5), Err(Error::Shape(_))));
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Array> {
    check_has_axes("rms_norm", x, 1)?;
    check_param("weight", "rms_norm", x, weight)?;
    if let Some(y) = crate::native::rms_norm(x, weight, eps)? {
        return Ok(y);
    }
    // SAFETY: valid handles, or the null handle mlx-c documents as "none".
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_fast_rms_norm(res, x.as_raw(), opt_raw(weight), eps, s)
    })
}

/// Layer normalisation over the last axis:
/// `(x - mean) / sqrt(var + eps) * weight + bias`.
///
/// `weight` and `bias`, when given, must be 1-D with the size of `x`'s last axis.
///
/// ```
/// use mlx_rs::{fast, Array};
/// let x = Array::from_slice(&[1.0f32, 3.0], &[1, 2])?;
/// let b = Array::from_slice(&[10.0f32, 10.0], &[2])?;
/// // mean 2, variance 1: normalised values are -1 and 1.
/// let y = fast::layer_norm(&x, None, Some(&b), 0.0)?.to_vec::<f32>()?;
/// assert!((y[0] - 9.0).abs() < 1e-6 && (y[1] - 11.0).abs() < 1e-6);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn layer_norm(
    x: &Array,
    weight: Option<&Array>,
    bias: Option<&Array>,
    eps: f32,
) -> Result<Array> {
    check_has_axes("layer_norm", x, 1)?;
    check_param("weight", "layer_norm", x, weight)?;
    check_param("bias", "layer_norm", x, bias)?;
    // SAFETY: valid handles, or the null handle mlx-c documents as "none".
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_fast_layer_norm(res, x.as_raw(), opt_raw(weight), opt_raw(bias), eps, s)
    })
}

fn check_rope(x: &Array, dims: i32, base: Option<f32>, freqs: Option<&Array>) -> Result<()> {
    check_has_axes("rope", x, 3)?;
    let last = *x.shape().last().unwrap_or(&0);
    if dims <= 0 || dims % 2 != 0 || dims > last {
        return Err(Error::InvalidArgument(format!(
            "rope: dims must be even and in 1..={last} (x's last axis), got {dims}"
        )));
    }
    match (base, freqs) {
        (Some(_), Some(_)) => Err(Error::InvalidArgument(
            "rope: give either base or freqs, not both".into(),
        )),
        (None, None) => Err(Error::InvalidArgument(
            "rope: one of base or freqs is required".into(),
        )),
        (None, Some(f)) if f.shape() != [dims / 2] => Err(Error::Shape(format!(
            "rope: freqs must have shape [{}] (dims / 2), got {:?}",
            dims / 2,
            f.shape()
        ))),
        _ => Ok(()),
    }
}

/// Rotary positional embedding of the first `dims` features of `x`.
///
/// `x` has at least 3 dimensions, `[..., L, D]`: axis -2 is the sequence position (the row at
/// index `t` has position `offset + t`), axis -1 the features. Feature pairs are rotated by the
/// angle `position * scale * θᵢ` with `θᵢ = base^(-2i / dims)`, or `θᵢ = 1 / freqs[i]` when
/// `freqs` (shape `[dims / 2]`) is given; exactly one of `base` and `freqs` must be set.
/// `traditional = true` rotates adjacent pairs `(x[2i], x[2i+1])`; `false` rotates
/// `(x[i], x[i + dims/2])` (the two halves). Features past `dims` pass through unchanged.
///
/// ```
/// use mlx_rs::{fast, Array};
/// // One feature pair (1, 0) at positions 0 and 1, with θ = 1: rotated by 0 and 1 radian.
/// let x = Array::from_slice(&[1.0f32, 0.0, 1.0, 0.0], &[1, 2, 2])?;
/// let y = fast::rope(&x, 2, false, Some(10000.0), 1.0, 0, None)?.to_vec::<f32>()?;
/// let want = [1.0, 0.0, 1f32.cos(), 1f32.sin()];
/// assert!(y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6));
/// // dims must be even:
/// assert!(fast::rope(&x, 1, false, Some(10000.0), 1.0, 0, None).is_err());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn rope(
    x: &Array,
    dims: i32,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: i32,
    freqs: Option<&Array>,
) -> Result<Array> {
    check_rope(x, dims, base, freqs)?;
    let base = sys::mlx_optional_float {
        value: base.unwrap_or(0.0),
        has_value: base.is_some(),
    };
    // SAFETY: valid handles, or the null handle mlx-c documents as "none".
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_fast_rope(
            res,
            x.as_raw(),
            dims,
            traditional,
            base,
            scale,
            offset,
            opt_raw(freqs),
            s,
        )
    })
}

/// [`rope`] with the position offset given as an array (an integer scalar, or one offset per
/// batch entry, shape `[B]`), so that a compiled graph need not be rebuilt when it changes.
///
/// ```
/// use mlx_rs::{fast, Array};
/// let x = Array::from_slice(&[1.0f32, 0.0], &[1, 1, 2])?;
/// let off = Array::scalar(2i32);
/// let a = fast::rope_dynamic(&x, 2, true, Some(10000.0), 1.0, &off, None)?.to_vec::<f32>()?;
/// let b = fast::rope(&x, 2, true, Some(10000.0), 1.0, 2, None)?.to_vec::<f32>()?;
/// assert!((a[0] - 2f32.cos()).abs() < 1e-6 && (a[1] - 2f32.sin()).abs() < 1e-6);
/// assert_eq!(a, b);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn rope_dynamic(
    x: &Array,
    dims: i32,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: &Array,
    freqs: Option<&Array>,
) -> Result<Array> {
    check_rope(x, dims, base, freqs)?;
    if offset.ndim() > 1 {
        return Err(Error::Shape(format!(
            "rope: offset must be a scalar or 1-D, got shape {:?}",
            offset.shape()
        )));
    }
    let base = sys::mlx_optional_float {
        value: base.unwrap_or(0.0),
        has_value: base.is_some(),
    };
    // SAFETY: valid handles, or the null handle mlx-c documents as "none".
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_fast_rope_dynamic(
            res,
            x.as_raw(),
            dims,
            traditional,
            base,
            scale,
            offset.as_raw(),
            opt_raw(freqs),
            s,
        )
    })
}

/// The mask of [`scaled_dot_product_attention`].
#[derive(Debug, Clone, Copy)]
pub enum AttentionMask<'a> {
    /// Every query attends to every key.
    None,
    /// Query `i` attends to keys `j <= i + (L_k - L_q)` (aligned to the last key, as when
    /// the queries are the newest positions of a cached sequence).
    Causal,
    /// An explicit mask broadcastable to `[B, H_q, L_q, L_k]`: boolean (`true` = attend) or
    /// additive (floating, added to the scores before the softmax).
    Array(&'a Array),
}

/// Attention `softmax(scale · Q Kᵀ + mask) V`, fused.
///
/// `queries` is `[B, H_q, L_q, D]`, `keys` `[B, H_kv, L_k, D]`, `values` `[B, H_kv, L_k, D_v]`;
/// the result is `[B, H_q, L_q, D_v]`. Grouped-query attention: `H_q` may be a multiple of
/// `H_kv`, and query head `h` then uses key/value head `h / (H_q / H_kv)` (K and V are not
/// copied).
///
/// ```
/// use mlx_rs::fast::{scaled_dot_product_attention, AttentionMask};
/// use mlx_rs::{Array, Error};
/// // Two keys, one query; causal masking lets query 0 of 2 see only key 0.
/// let q = Array::from_slice(&[1.0f32, 0.0, 1.0, 0.0], &[1, 1, 2, 2])?;
/// let k = Array::from_slice(&[1.0f32, 0.0, 0.0, 1.0], &[1, 1, 2, 2])?;
/// let v = Array::from_slice(&[10.0f32, 20.0], &[1, 1, 2, 1])?;
/// let y = scaled_dot_product_attention(&q, &k, &v, 1.0, AttentionMask::Causal)?.to_vec::<f32>()?;
/// let p = 1.0 / (1.0 + (-1f32).exp()); // weight of key 0 for query 1
/// assert!((y[0] - 10.0).abs() < 1e-5 && (y[1] - (10.0 * p + 20.0 * (1.0 - p))).abs() < 1e-4);
/// // Three query heads cannot share two key/value heads:
/// let q3 = Array::zeros(&[1, 3, 2, 2], mlx_rs::Dtype::Float32)?;
/// let k2 = Array::zeros(&[1, 2, 2, 2], mlx_rs::Dtype::Float32)?;
/// let r = scaled_dot_product_attention(&q3, &k2, &k2, 1.0, AttentionMask::None);
/// assert!(matches!(r, Err(Error::Shape(_))));
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn scaled_dot_product_attention(
    queries: &Array,
    keys: &Array,
    values: &Array,
    scale: f32,
    mask: AttentionMask<'_>,
) -> Result<Array> {
    let (q, k, v) = (queries.shape(), keys.shape(), values.shape());
    if q.len() != 4 || k.len() != 4 || v.len() != 4 {
        return Err(Error::Shape(format!(
            "scaled_dot_product_attention: queries, keys and values must be 4-D [B, H, L, D], \
             got {q:?}, {k:?}, {v:?}"
        )));
    }
    if k[0] != q[0] || v[0] != q[0] {
        return Err(Error::Shape(format!(
            "scaled_dot_product_attention: batch sizes differ: {q:?}, {k:?}, {v:?}"
        )));
    }
    if k[3] != q[3] {
        return Err(Error::Shape(format!(
            "scaled_dot_product_attention: queries and keys need the same head dimension, \
             got {q:?} and {k:?}"
        )));
    }
    if v[1] != k[1] || v[2] != k[2] {
        return Err(Error::Shape(format!(
            "scaled_dot_product_attention: keys and values need the same heads and length, \
             got {k:?} and {v:?}"
        )));
    }
    if k[1] == 0 || q[1] % k[1] != 0 {
        return Err(Error::Shape(format!(
            "scaled_dot_product_attention: query heads ({}) must be a multiple of key/value \
             heads ({})",
            q[1], k[1]
        )));
    }
    let (mode, arr) = match mask {
        AttentionMask::None => ("", None),
        AttentionMask::Causal => ("causal", None),
        AttentionMask::Array(m) => {
            if m.ndim() > 4 {
                return Err(Error::Shape(format!(
                    "scaled_dot_product_attention: the mask must broadcast to \
                     [{}, {}, {}, {}], got {:?}",
                    q[0],
                    q[1],
                    q[2],
                    k[2],
                    m.shape()
                )));
            }
            ("array", Some(m))
        }
    };
    let mode = CString::new(mode).expect("no NUL in a literal");
    // SAFETY: valid handles, a NUL-terminated string that outlives the call, and null handles
    // for the absent mask and sinks.
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_fast_scaled_dot_product_attention(
            res,
            queries.as_raw(),
            keys.as_raw(),
            values.as_raw(),
            scale,
            mode.as_ptr(),
            opt_raw(arr),
            null_array(),
            false,
            s,
        )
    })
}
