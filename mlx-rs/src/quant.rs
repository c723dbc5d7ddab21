//! Affine quantization: packing weights into a few bits per value, and matrix products that
//! read them directly.
//!
//! MLX's affine format splits each row of a matrix into groups of `group_size` consecutive
//! values. A group is stored as one `scale` and one `bias` (in the weight's float dtype) and
//! `group_size` unsigned codes `q` of `bits` bits each; the value it stands for is
//! `scale * q + bias`. The codes are packed into `uint32` words as a little-endian bit stream:
//! the first code of a row sits in the lowest bits of the row's first word. A `[N, K]` float
//! matrix thus becomes a `[N, K * bits / 32]` `uint32` matrix plus `[N, K / group_size]` scales
//! and biases.
//!
//! Supported: `bits` in {2, 3, 4, 5, 6, 8} and `group_size` in {32, 64, 128}; other values
//! give [`Error::InvalidArgument`].
//!
//! ```
//! use mlx_rs::{quant, Array, Dtype};
//! let data: Vec<f32> = (0..64).map(|i| i as f32).collect();
//! let w = Array::from_slice(&data, &[2, 32])?;
//! let (wq, scales, biases) = quant::quantize(&w, 32, 8)?;
//! assert_eq!((wq.shape(), wq.dtype()), (vec![2, 8], Dtype::Uint32));
//! assert_eq!(scales.shape(), vec![2, 1]);
//! let back = quant::dequantize(&wq, &scales, &biases, 32, 8)?.to_vec::<f32>()?;
//! // Each group spans 31 over 255 steps: the error is at most half a step, 31 / 255 / 2.
//! assert!(back.iter().enumerate().all(|(i, v)| (v - i as f32).abs() <= 0.061));
//! # Ok::<(), mlx_rs::Error>(())
//! ```

mod blocks;

pub use blocks::{
    block_formats_available, block_matmul, block_matmul_fused, block_rows, BlockFormat, BlockRun,
    MAX_BLOCK_RUNS,
};

use crate::error::{Error, Result};
use crate::vector::VectorArray;
use crate::{Array, Dtype};
use mlx_sys as sys;
use std::ffi::CString;

const MODE: &str = "affine";

fn null_array() -> sys::mlx_array {
    sys::mlx_array {
        ctx: std::ptr::null_mut(),
    }
}

fn some_int(value: i32) -> sys::mlx_optional_int {
    sys::mlx_optional_int {
        value,
        has_value: true,
    }
}

/// Checks `group_size` and `bits` against the values MLX's affine mode supports.
fn check_params(group_size: i32, bits: i32) -> Result<()> {
    if ![2, 3, 4, 5, 6, 8].contains(&bits) {
        return Err(Error::InvalidArgument(format!(
            "quantization bits must be one of 2, 3, 4, 5, 6, 8; got {bits}"
        )));
    }
    if ![32, 64, 128].contains(&group_size) {
        return Err(Error::InvalidArgument(format!(
            "quantization group_size must be 32, 64 or 128; got {group_size}"
        )));
    }
    Ok(())
}

/// Checks a packed weight and its scales and biases against each other; returns the unpacked
/// `(rows, cols)` of the matrix it stands for (cols = the quantized axis).
pub(crate) fn check_packed(
    op: &str,
    w: &Array,
    scales: &Array,
    biases: &Array,
    group_size: i32,
    bits: i32,
) -> Result<(i32, i32)> {
    check_params(group_size, bits)?;
    if w.dtype() != Dtype::Uint32 {
        return Err(Error::DtypeMismatch {
            expected: Dtype::Uint32,
            found: w.dtype(),
        });
    }
    let ws = w.shape();
    if ws.len() < 2 {
        return Err(Error::Shape(format!(
            "{op}: the packed weight must have at least 2 dimensions, got {ws:?}"
        )));
    }
    let words = ws[ws.len() - 1];
    let cols = words * 32 / bits;
    if (words * 32) % bits != 0 || cols % group_size != 0 {
        return Err(Error::Shape(format!(
            "{op}: {words} packed words per row do not hold whole groups of {group_size} \
             {bits}-bit values"
        )));
    }
    let mut want = ws.clone();
    *want.last_mut().expect("at least 2 dims") = cols / group_size;
    for (name, a) in [("scales", scales), ("biases", biases)] {
        if a.shape() != want {
            return Err(Error::Shape(format!(
                "{op}: {name} must have shape {want:?} for a packed weight of shape {ws:?} \
                 ({bits} bits, groups of {group_size}), got {:?}",
                a.shape()
            )));
        }
    }
    Ok((ws[ws.len() - 2], cols))
}

/// Quantizes `w` along its last axis: returns `(packed, scales, biases)`.
///
/// `w` is floating with at least 2 dimensions and a last axis divisible by `group_size`.
/// `packed` is `uint32` with the last axis `K * bits / 32`; `scales` and `biases` have `w`'s
/// dtype and the last axis `K / group_size`. Each group gets `scale ≈ (max - min) / (2^bits - 1)`
/// and `bias` = the group's extreme of larger magnitude, adjusted so that it is represented
/// exactly; codes are `round((w - bias) / scale)` clipped to `[0, 2^bits - 1]`.
///
/// ```
/// use mlx_rs::{quant, Array, Error};
/// let w = Array::from_slice(&[0.0f32; 64], &[1, 64])?;
/// assert!(matches!(quant::quantize(&w, 32, 7), Err(Error::InvalidArgument(_))));
/// assert!(matches!(quant::quantize(&w, 48, 4), Err(Error::InvalidArgument(_))));
/// let bad = Array::from_slice(&[0.0f32; 40], &[1, 40])?; // 40 is not a multiple of 32
/// assert!(matches!(quant::quantize(&bad, 32, 4), Err(Error::Shape(_))));
/// let (wq, s, b) = quant::quantize(&w, 32, 4)?;
/// assert_eq!((wq.shape(), s.shape(), b.shape()), (vec![1, 8], vec![1, 2], vec![1, 2]));
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn quantize(w: &Array, group_size: i32, bits: i32) -> Result<(Array, Array, Array)> {
    check_params(group_size, bits)?;
    let shape = w.shape();
    if shape.len() < 2 || shape[shape.len() - 1] % group_size != 0 {
        return Err(Error::Shape(format!(
            "quantize: w must have at least 2 dimensions and a last axis divisible by \
             group_size {group_size}, got {shape:?}"
        )));
    }
    if !w.dtype().is_floating() {
        return Err(Error::InvalidArgument(format!(
            "quantize: w must be floating, got {}",
            w.dtype()
        )));
    }
    let mode = CString::new(MODE).expect("no NUL in a literal");
    // SAFETY: valid handles, a NUL-terminated mode that outlives the call, and a null global
    // scale (affine mode has none). mlx-c writes the result into the vector we own.
    let parts = VectorArray::try_op_stream(|out, s| unsafe {
        sys::mlx_quantize(
            out,
            w.as_raw(),
            some_int(group_size),
            some_int(bits),
            mode.as_ptr(),
            null_array(),
            s,
        )
    })?;
    let mut parts = parts.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(wq), Some(scales), Some(biases)) => Ok((wq, scales, biases)),
        _ => Err(Error::InvalidArgument(
            "quantize: MLX returned fewer than three arrays".into(),
        )),
    }
}

/// The float matrix a quantized one stands for: `scale * q + bias` per group, in the dtype of
/// `scales`.
///
/// ```
/// use mlx_rs::{quant, Array};
/// // 8-bit codes 0, 1, 2, ... 31 packed four per word, lowest byte first.
/// let words: Vec<u32> = (0..8u32)
///     .map(|j| (0..4).map(|i| (4 * j + i) << (8 * i)).sum())
///     .collect();
/// let wq = Array::from_slice(&words, &[1, 8])?;
/// let scales = Array::from_slice(&[0.5f32], &[1, 1])?;
/// let biases = Array::from_slice(&[-1.0f32], &[1, 1])?;
/// let w = quant::dequantize(&wq, &scales, &biases, 32, 8)?.to_vec::<f32>()?;
/// assert_eq!(w[..3], [-1.0, -0.5, 0.0]);
/// assert_eq!(w[31], 14.5);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn dequantize(
    w: &Array,
    scales: &Array,
    biases: &Array,
    group_size: i32,
    bits: i32,
) -> Result<Array> {
    check_packed("dequantize", w, scales, biases, group_size, bits)?;
    let mode = CString::new(MODE).expect("no NUL in a literal");
    let no_dtype = sys::mlx_optional_dtype {
        value: Dtype::Float32.to_sys(),
        has_value: false,
    };
    // SAFETY: valid handles, a NUL-terminated mode that outlives the call, a null global scale.
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_dequantize(
            res,
            w.as_raw(),
            scales.as_raw(),
            biases.as_raw(),
            some_int(group_size),
            some_int(bits),
            mode.as_ptr(),
            null_array(),
            no_dtype,
            s,
        )
    })
}

/// `x @ dequantize(w)ᵀ` (with `transpose = true`, `w` packed from an `[N, K]` matrix) or
/// `x @ dequantize(w)` (with `transpose = false`, `w` packed from `[K, N]`), without
/// materialising the float weight. `x`'s last axis must be `K`.
///
/// On CPU streams of x86-64 machines, with `transpose = true`, 4 or 8 bits, a 2-D weight and
/// float `x`/scales/biases (scales and biases of one dtype), this runs the project's own
/// multi-threaded SIMD kernel (see [`set_native_qmm`]) instead of MLX's single-threaded scalar
/// one: f32 accumulation for every activation dtype, the result in the dtype MLX would give
/// (the promotion of `x`'s and the scales' dtypes). On CPUs with AVX-512 VNNI, 4-bit and
/// 8-bit codes at decode and small `M` are multiplied with integer dot products on activations
/// rounded to 21 bits per block of 8 ([`QmmIsa::Avx512Vnni`] gives the bound;
/// [`set_native_qmm_exact`] keeps them in f32). Everything else, the GPU included, runs MLX's op. GGUF Q4_0/Q4_1/Q8_0 weights loaded through MLX's GGUF reader (affine, group 32,
/// f16 scales) take the native path.
///
/// ```
/// use mlx_rs::{quant, Array, Dtype, Error};
/// // A [2, 32] weight of codes 1 with scale 1 and bias 0 (4 bits): every entry is 1.
/// let wq = Array::from_slice(&[0x1111_1111u32; 8], &[2, 4])?;
/// let s = Array::from_slice(&[1.0f32, 1.0], &[2, 1])?;
/// let b = Array::from_slice(&[0.0f32, 0.0], &[2, 1])?;
/// let x = Array::ones(&[1, 32], Dtype::Float32)?;
/// let y = quant::quantized_matmul(&x, &wq, &s, &b, true, 32, 4)?;
/// assert_eq!(y.to_vec::<f32>()?, vec![32.0, 32.0]);
/// let x16 = Array::ones(&[1, 16], Dtype::Float32)?;
/// assert!(matches!(quant::quantized_matmul(&x16, &wq, &s, &b, true, 32, 4), Err(Error::Shape(_))));
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn quantized_matmul(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    transpose: bool,
    group_size: i32,
    bits: i32,
) -> Result<Array> {
    let (rows, cols) = check_packed("quantized_matmul", w, scales, biases, group_size, bits)?;
    check_x("quantized_matmul", x, transpose, rows, cols)?;
    if native_qmm_enabled() {
        // SAFETY: valid handles; a null `used_native`. The shim falls back to MLX's op for
        // calls its kernel does not take (GPU streams, `transpose = false`, other bits, ...).
        return Array::try_op_stream(|res, s| unsafe {
            sys::native_qmm::mlxrs_quantized_matmul(
                res,
                x.as_raw(),
                w.as_raw(),
                scales.as_raw(),
                biases.as_raw(),
                transpose,
                group_size,
                bits,
                s,
                std::ptr::null_mut(),
            )
        });
    }
    let mode = CString::new(MODE).expect("no NUL in a literal");
    // SAFETY: valid handles and a NUL-terminated mode that outlives the call.
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_quantized_matmul(
            res,
            x.as_raw(),
            w.as_raw(),
            scales.as_raw(),
            biases.as_raw(),
            transpose,
            some_int(group_size),
            some_int(bits),
            mode.as_ptr(),
            s,
        )
    })
}

pub(crate) fn check_x(op: &str, x: &Array, transpose: bool, rows: i32, cols: i32) -> Result<()> {
    let k = if transpose { cols } else { rows };
    if x.ndim() == 0 || x.shape()[x.ndim() - 1] != k {
        return Err(Error::Shape(format!(
            "{op}: x's last axis must be {k} (the weight's {} axis), got shape {:?}",
            if transpose { "quantized" } else { "first" },
            x.shape()
        )));
    }
    Ok(())
}

/// [`quantized_matmul`] with gathered operands: batch entry `i` of the result is
/// `x[lhs_indices[i]] @ dequantize(w[rhs_indices[i]])ᵀ` (mixture-of-experts style), where
/// `x` is `[..., M, K]` and `w` is a stack of packed matrices `[E, N, K * bits / 32]`. Either
/// index array may be `None` (then the batch axes of that operand are used as they are).
/// `sorted_indices` promises that `rhs_indices` is sorted, which allows a faster kernel.
///
/// ```
/// use mlx_rs::{quant, Array, Dtype};
/// // Two "experts" of shape [1, 32], all codes 1, with scales 1 and 2 (4 bits).
/// let wq = Array::from_slice(&[0x1111_1111u32; 8], &[2, 1, 4])?;
/// let s = Array::from_slice(&[1.0f32, 2.0], &[2, 1, 1])?;
/// let b = Array::from_slice(&[0.0f32, 0.0], &[2, 1, 1])?;
/// let x = Array::ones(&[3, 1, 32], Dtype::Float32)?;
/// let idx = Array::from_slice(&[1u32, 0, 1], &[3])?;
/// let y = quant::gather_qmm(&x, &wq, &s, &b, None, Some(&idx), true, 32, 4, false)?;
/// assert_eq!(y.to_vec::<f32>()?, vec![64.0, 32.0, 64.0]);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn gather_qmm(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    transpose: bool,
    group_size: i32,
    bits: i32,
    sorted_indices: bool,
) -> Result<Array> {
    let (rows, cols) = check_packed("gather_qmm", w, scales, biases, group_size, bits)?;
    check_x("gather_qmm", x, transpose, rows, cols)?;
    if x.ndim() < 2 {
        return Err(Error::Shape(format!(
            "gather_qmm: x must have at least 2 dimensions [..., M, K], got {:?}",
            x.shape()
        )));
    }
    check_indices("gather_qmm", [lhs_indices, rhs_indices])?;
    let mode = CString::new(MODE).expect("no NUL in a literal");
    let raw = |a: Option<&Array>| a.map_or_else(null_array, Array::as_raw);
    // SAFETY: valid handles (or null for absent indices) and a NUL-terminated mode that
    // outlives the call.
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_gather_qmm(
            res,
            x.as_raw(),
            w.as_raw(),
            scales.as_raw(),
            biases.as_raw(),
            raw(lhs_indices),
            raw(rhs_indices),
            transpose,
            some_int(group_size),
            some_int(bits),
            mode.as_ptr(),
            sorted_indices,
            s,
        )
    })
}

/// [`Error::InvalidArgument`] unless every given index array is of an integer dtype.
fn check_indices(op: &str, indices: [Option<&Array>; 2]) -> Result<()> {
    for idx in indices.into_iter().flatten() {
        if idx.dtype().is_floating() || idx.dtype() == Dtype::Bool {
            return Err(Error::InvalidArgument(format!(
                "{op}: indices must be integers, got {}",
                idx.dtype()
            )));
        }
    }
    Ok(())
}

/// A matrix product with gathered operands (the float form of [`gather_qmm`]): batch entry `i`
/// of the result is `a[lhs_indices[i]] @ b[rhs_indices[i]]`, with `a` `[..., M, K]` and `b`
/// `[..., K, N]` (a stack of matrices, e.g. one per expert). Either index array may be `None`.
/// `sorted_indices` promises that `rhs_indices` is sorted.
///
/// ```
/// use mlx_rs::{quant, Array};
/// // Two "experts": 2·I and 3·I (2×2); tokens pick experts 1, 0, 1.
/// let b = Array::from_slice(&[2.0f32, 0.0, 0.0, 2.0, 3.0, 0.0, 0.0, 3.0], &[2, 2, 2])?;
/// let a = Array::from_slice(&[1.0f32, 1.0, 1.0, 2.0, 0.0, 1.0], &[3, 1, 2])?;
/// let idx = Array::from_slice(&[1u32, 0, 1], &[3])?;
/// let y = quant::gather_mm(&a, &b, None, Some(&idx), false)?;
/// assert_eq!(y.to_vec::<f32>()?, vec![3.0, 3.0, 2.0, 4.0, 0.0, 3.0]);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn gather_mm(
    a: &Array,
    b: &Array,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    sorted_indices: bool,
) -> Result<Array> {
    if a.ndim() < 2 || b.ndim() < 2 {
        return Err(Error::Shape(format!(
            "gather_mm: operands must be at least 2-D, got {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    check_indices("gather_mm", [lhs_indices, rhs_indices])?;
    let raw = |x: Option<&Array>| x.map_or_else(null_array, Array::as_raw);
    // SAFETY: valid handles, or null for absent indices.
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_gather_mm(
            res,
            a.as_raw(),
            b.as_raw(),
            raw(lhs_indices),
            raw(rhs_indices),
            sorted_indices,
            s,
        )
    })
}

// ------------------------------------------------------------------ native kernel knobs

static NATIVE_QMM: crate::native::Switch = crate::native::Switch::new("MLX_RS_NATIVE_QMM");

/// Turns the native CPU quantized-matmul kernel used by [`quantized_matmul`] on or off for the
/// whole process (MLX's own op is used while it is off). The default is on unless the
/// environment variable `MLX_RS_NATIVE_QMM` is `0`, `false` or `off` when first consulted.
///
/// ```
/// use mlx_rs::{quant, Array};
/// let wq = Array::from_slice(&[0x2222_2222u32; 4], &[1, 4])?; // [1, 32] of codes 2
/// let s = Array::from_slice(&[0.5f32], &[1, 1])?;
/// let b = Array::from_slice(&[1.0f32], &[1, 1])?;
/// let x = Array::from_slice(&[1.0f32; 32], &[1, 32])?;
/// let before = quant::native_qmm_enabled();
/// quant::set_native_qmm(false);
/// let mlx = quant::quantized_matmul(&x, &wq, &s, &b, true, 32, 4)?.to_vec::<f32>()?;
/// quant::set_native_qmm(true);
/// let ours = quant::quantized_matmul(&x, &wq, &s, &b, true, 32, 4)?.to_vec::<f32>()?;
/// quant::set_native_qmm(before);
/// // Every weight is 0.5 * 2 + 1 = 2: the row sums to 64 either way.
/// assert_eq!((mlx, ours), (vec![64.0], vec![64.0]));
/// # Ok::<(), mlx_rs::Error>(())
/// ```
pub fn set_native_qmm(enabled: bool) {
    NATIVE_QMM.set(enabled);
}

/// Whether [`quantized_matmul`] uses the native CPU kernel where it can (see
/// [`set_native_qmm`]).
///
/// ```
/// use mlx_rs::quant;
/// quant::set_native_qmm(true);
/// assert!(quant::native_qmm_enabled());
/// ```
pub fn native_qmm_enabled() -> bool {
    NATIVE_QMM.get()
}

/// The instruction sets the native kernel can run on (see [`native_qmm_isa`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QmmIsa {
    /// Not x86-64: [`quantized_matmul`] always uses MLX's own op.
    None,
    /// Portable C++.
    Generic,
    /// AVX2 + FMA, f32 arithmetic.
    Avx2,
    /// AVX-512F, f32 arithmetic.
    Avx512,
    /// AVX-512 with VNNI and VBMI: 4-bit and 8-bit codes at decode and small M go through
    /// integer dot products (`VPDPBUSD`), with each activation rounded to a 21-bit integer times a power of
    /// two shared by 8 consecutive values (error at most 2^-21 of the largest magnitude among
    /// the 8; f32 keeps 2^-24 of each value's own). An infinity or NaN among the 8 makes the
    /// outputs that use them NaN. Prefill (the sgemm path) uses the [`QmmIsa::Avx512`] kernels,
    /// except for GGUF blocks ([`block_matmul`]): their prefill (more than 16 rows) rounds each
    /// activation to 8 bits with one scale per 32 values (error at most 1/254 of the run's
    /// largest magnitude) and multiplies on integer dot products.
    /// [`set_native_qmm_exact`] opts out of both.
    Avx512Vnni,
}

/// The instruction set the native kernel uses now: the best this CPU supports, capped by
/// [`set_native_qmm_exact`].
///
/// ```
/// use mlx_rs::quant::{self, QmmIsa};
/// let isa = quant::native_qmm_isa();
/// if cfg!(target_arch = "x86_64") {
///     assert_ne!(isa, QmmIsa::None);
/// }
/// ```
pub fn native_qmm_isa() -> QmmIsa {
    // SAFETY: no arguments.
    match unsafe { sys::native_qmm::mlxrs_qmm_isa() } {
        sys::native_qmm::ISA_GENERIC => QmmIsa::Generic,
        sys::native_qmm::ISA_AVX2 => QmmIsa::Avx2,
        sys::native_qmm::ISA_AVX512 => QmmIsa::Avx512,
        sys::native_qmm::ISA_AVX512_VNNI => QmmIsa::Avx512Vnni,
        _ => QmmIsa::None,
    }
}

/// Keeps every activation in f32 (`true`: the [`QmmIsa::Avx512Vnni`] kernels are not used, at
/// about 0.6-0.7x their decode speed) or lets the kernel pick the fastest instruction set
/// (`false`, the default unless the environment variable `MLX_RS_QMM_EXACT` is `1`, `true` or
/// `on` at start-up). Waits for nothing: calls already running finish as they started.
///
/// ```
/// use mlx_rs::quant::{self, QmmIsa};
/// quant::set_native_qmm_exact(true);
/// assert_ne!(quant::native_qmm_isa(), QmmIsa::Avx512Vnni);
/// quant::set_native_qmm_exact(false);
/// ```
pub fn set_native_qmm_exact(exact: bool) {
    let cap = if exact {
        sys::native_qmm::ISA_AVX512
    } else {
        0 // the best the CPU has
    };
    // SAFETY: plain integer argument; the choice is an atomic inside.
    unsafe { sys::native_qmm::mlxrs_qmm_force_isa(cap) };
}

/// Sets how many threads the native kernel uses: the thread that runs the matmul plus
/// `threads - 1` persistent workers. `0` restores the default: the environment variable
/// `MLX_RS_QMM_THREADS` if set, else the CPUs this process may run on. The kernel never calls
/// BLAS from its workers, and its workers sleep before the prefill path's `sgemm`, so it does
/// not compete with OpenBLAS's own threads. Waits for a running kernel call to finish.
///
/// ```
/// use mlx_rs::quant;
/// quant::set_native_qmm_threads(1);
/// assert_eq!(quant::native_qmm_threads(), 1);
/// quant::set_native_qmm_threads(0);
/// assert!(quant::native_qmm_threads() >= 1);
/// ```
pub fn set_native_qmm_threads(threads: usize) {
    let n = i32::try_from(threads).unwrap_or(i32::MAX);
    // SAFETY: plain integer argument; the pool is guarded inside.
    unsafe { sys::native_qmm::mlxrs_qmm_set_num_threads(n) };
}

/// Sets OpenBLAS's thread count, which the prefill path's `sgemm` (and MLX's own f32
/// products) use, so that it matches [`set_native_qmm_threads`] and the two never ask for more
/// cores than the process was given. Returns whether it was set: `false` when the process's
/// BLAS is not OpenBLAS (OpenBLAS is looked up at run time) or `threads` is 0. The default is
/// OpenBLAS's own: `OPENBLAS_NUM_THREADS`, else every CPU.
///
/// ```
/// let set = mlx_rs::quant::set_blas_threads(2);
/// assert!(!mlx_rs::quant::set_blas_threads(0));
/// # let _ = set;
/// ```
pub fn set_blas_threads(threads: usize) -> bool {
    let n = i32::try_from(threads).unwrap_or(i32::MAX);
    // SAFETY: plain integer argument; OpenBLAS's setter is called only when present.
    unsafe { sys::native_qmm::mlxrs_blas_set_num_threads(n) != 0 }
}

/// Sets the row count above which the native kernel's prefill path (dequantized f32 tiles
/// multiplied by BLAS `sgemm`) replaces its small-M path (the packed weights read once for all
/// rows); `0` restores the default, 16. Both paths give the same products up to float rounding.
///
/// ```
/// mlx_rs::quant::set_native_gemm_threshold(32);
/// mlx_rs::quant::set_native_gemm_threshold(0);
/// ```
pub fn set_native_gemm_threshold(rows: usize) {
    let m = i32::try_from(rows).unwrap_or(i32::MAX);
    // SAFETY: plain integer argument stored in an atomic.
    unsafe { sys::native_qmm::mlxrs_qmm_set_gemm_threshold(m) };
}

/// Switches the native kernel's integer activations on or off: at decode and small M, on CPUs
/// with AVX-512 VNNI, each activation is rounded per block of 8 values to an 8-bit integer
/// times a power of two (error at most 2⁻⁶ of the block's largest magnitude) and multiplied
/// with one VNNI dot product per code pair instead of three (the default keeps 21 bits). Opt
/// in for throughput, as llama.cpp's 8-bit activations (the bias terms multiply the rounded
/// values' sums, so a product is exactly that of the rounded x with the weights); the prefill
/// path is unchanged. The environment variable `MLX_RS_QMM_INT8_ACTIVATIONS=1` turns it on at
/// start-up. Returns whether the integer kernels now run (false on other CPUs, or when
/// switched off).
///
/// ```
/// let _on = mlx_rs::quant::set_native_int8_activations(true);
/// assert!(!mlx_rs::quant::set_native_int8_activations(false));
/// ```
pub fn set_native_int8_activations(on: bool) -> bool {
    // SAFETY: plain integer argument stored in an atomic.
    unsafe { sys::native_qmm::mlxrs_qmm_set_int8_activations(i32::from(on)) != 0 }
}

/// The number of threads the native kernel uses (see [`set_native_qmm_threads`]).
///
/// ```
/// assert!(mlx_rs::quant::native_qmm_threads() >= 1);
/// ```
pub fn native_qmm_threads() -> usize {
    // SAFETY: no arguments; the pool is guarded inside.
    let n = unsafe { sys::native_qmm::mlxrs_qmm_num_threads() };
    usize::try_from(n).unwrap_or(1)
}
