//! GGUF (ggml) blocks multiplied as stored by the native CPU kernels ([`block_matmul`]): no
//! conversion to MLX's affine layout, so a `Q4_K` weight costs its 4.5 bits, a `Q4_0` weight
//! its 4.5, a `Q5_0` weight its 5.5, a `Q8_0` weight its 8.5 and a `Q3_K` weight its 3.44
//! bits, in memory and in every byte a decode step reads.

use crate::error::{Error, Result};
use crate::Array;
use mlx_sys as sys;
use std::fmt;

/// A GGUF block format the native CPU kernels read as stored: [`values_per_block`] weights per
/// block (32 for `Q4_0` … `Q8_0`, 256 for the K-quants), each row of a matrix `[N, K]` being
/// `K / values_per_block` blocks in the file's byte order (the bytes of a `uint8` array).
///
/// [`values_per_block`]: BlockFormat::values_per_block
///
/// ```
/// use mlx_rs::quant::BlockFormat;
/// assert_eq!(BlockFormat::Q4K.block_bytes(), 144);
/// assert_eq!(BlockFormat::Q6K.row_bytes(512), Some(420));
/// assert_eq!(BlockFormat::Q6K.row_bytes(100), None);
/// assert_eq!(BlockFormat::Q4K.to_string(), "Q4_K");
/// assert_eq!(BlockFormat::Q5K.row_bytes(768), Some(528));
/// // The formats of 32 values: a row of 576 is 18 blocks.
/// assert_eq!(BlockFormat::Q4_1.row_bytes(576), Some(18 * 20));
/// assert_eq!(BlockFormat::Q8_0.values_per_block(), 32);
/// assert_eq!(BlockFormat::from_block_bytes(22), Some(BlockFormat::Q5_0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// `Q4_0`: 4-bit codes `q`, one f16 factor `d` per 32 weights, weight `d (q - 8)` (18 bytes
    /// per 32 weights).
    Q4_0,
    /// `Q4_1`: 4-bit codes, f16 `d` and `m` per 32 weights, weight `d q + m` (20 bytes).
    Q4_1,
    /// `Q5_0`: 5-bit codes (a nibble and one bit of a 32-bit mask each), f16 `d` per 32
    /// weights, weight `d (q - 16)` (22 bytes).
    Q5_0,
    /// `Q5_1`: 5-bit codes, f16 `d` and `m` per 32 weights, weight `d q + m` (24 bytes).
    Q5_1,
    /// `Q8_0`: int8 codes, f16 `d` per 32 weights, weight `d q` (34 bytes).
    Q8_0,
    /// `Q2_K`: 2-bit codes, a 4-bit scale and a 4-bit min per 16 weights, two f16 factors per
    /// block (84 bytes per 256 weights).
    Q2K,
    /// `Q3_K`: 3-bit codes (two bits and one of a mask each), a 6-bit scale per 16 weights,
    /// one f16 factor per block (110 bytes per 256 weights).
    Q3K,
    /// `Q4_K`: 4-bit codes, a 6-bit scale and a 6-bit min per 32 weights, two f16 factors per
    /// block (144 bytes per 256 weights).
    Q4K,
    /// `Q5_K`: 5-bit codes (`Q4_K`'s nibbles and one high bit each), a 6-bit scale and a
    /// 6-bit min per 32 weights, two f16 factors per block (176 bytes per 256 weights).
    Q5K,
    /// `Q6_K`: 6-bit codes, an 8-bit scale per 16 weights, one f16 factor per block (210
    /// bytes per 256 weights).
    Q6K,
}

impl BlockFormat {
    /// Every format, in ggml's type order.
    pub const ALL: [BlockFormat; 10] = [
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q5_1,
        BlockFormat::Q8_0,
        BlockFormat::Q2K,
        BlockFormat::Q3K,
        BlockFormat::Q4K,
        BlockFormat::Q5K,
        BlockFormat::Q6K,
    ];

    /// Weights per block: 32, or 256 for the K-quants.
    pub const fn values_per_block(self) -> usize {
        match self {
            BlockFormat::Q4_0
            | BlockFormat::Q4_1
            | BlockFormat::Q5_0
            | BlockFormat::Q5_1
            | BlockFormat::Q8_0 => 32,
            _ => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q5_0 => 22,
            BlockFormat::Q5_1 => 24,
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q2K => 84,
            BlockFormat::Q3K => 110,
            BlockFormat::Q4K => 144,
            BlockFormat::Q5K => 176,
            BlockFormat::Q6K => 210,
        }
    }

    /// The format whose blocks take `bytes` bytes (every format's differ).
    pub fn from_block_bytes(bytes: usize) -> Option<BlockFormat> {
        Self::ALL.into_iter().find(|f| f.block_bytes() == bytes)
    }

    /// Bytes of one row of `cols` weights, or `None` when `cols` is not a positive multiple
    /// of [`Self::values_per_block`].
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        let per = self.values_per_block();
        (cols > 0 && cols.is_multiple_of(per)).then(|| cols / per * self.block_bytes())
    }

    pub(crate) fn raw(self) -> i32 {
        use sys::native_qmm as q;
        match self {
            BlockFormat::Q4_0 => q::FORMAT_Q4_0,
            BlockFormat::Q4_1 => q::FORMAT_Q4_1,
            BlockFormat::Q5_0 => q::FORMAT_Q5_0,
            BlockFormat::Q5_1 => q::FORMAT_Q5_1,
            BlockFormat::Q8_0 => q::FORMAT_Q8_0,
            BlockFormat::Q2K => q::FORMAT_Q2_K,
            BlockFormat::Q3K => q::FORMAT_Q3_K,
            BlockFormat::Q4K => q::FORMAT_Q4_K,
            BlockFormat::Q5K => q::FORMAT_Q5_K,
            BlockFormat::Q6K => q::FORMAT_Q6_K,
        }
    }
}

impl fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q4_1 => "Q4_1",
            BlockFormat::Q5_0 => "Q5_0",
            BlockFormat::Q5_1 => "Q5_1",
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::Q2K => "Q2_K",
            BlockFormat::Q3K => "Q3_K",
            BlockFormat::Q4K => "Q4_K",
            BlockFormat::Q5K => "Q5_K",
            BlockFormat::Q6K => "Q6_K",
        })
    }
}

/// Whether [`block_matmul`] can run here: the native kernels exist for this CPU (x86-64).
/// The computation must also be on a CPU stream; there is no GPU implementation, so a loader
/// keeps blocks as stored only where this holds and the model runs on the CPU. They are fast
/// on [`crate::quant::QmmIsa::Avx512Vnni`] (integer dot products at decode and prefill);
/// elsewhere the portable kernel dequantizes each row to f32 per call, many times slower than
/// the affine kernels.
///
/// ```
/// use mlx_rs::quant;
/// assert_eq!(quant::block_formats_available(), cfg!(target_arch = "x86_64"));
/// ```
pub fn block_formats_available() -> bool {
    crate::quant::native_qmm_isa() != crate::quant::QmmIsa::None
}

/// `x · Wᵀ` with `W` `[N, K]` in a GGUF block format, read as stored (`w`: `uint8`, any shape,
/// holding `N · format.row_bytes(K)` bytes); `x` is `[..., K]` in any float dtype and the result
/// `[..., N]` has `x`'s dtype. On CPUs with AVX-512 VNNI the activations are rounded as in
/// [`crate::quant::QmmIsa::Avx512Vnni`] (21 bits per group of 8 values;
/// [`crate::quant::set_native_int8_activations`] makes it 8 bits), the groups taken within the
/// runs of values that share one weight scale (runs of 32 for the formats of 32 values, Q4_K
/// and Q5_K, of 16 for Q2_K, Q3_K and Q6_K: values `4i..4i+4` with `S/2+4i..S/2+4i+4` of each
/// run of `S`, for `i < S/8`); elsewhere each row is
/// dequantized to f32 by the format's definition. More than 16 rows of `x` (prefill)
/// multiply on 8-bit activations on AVX-512 VNNI (error at most a 32-value run's largest
/// |x| / 254 per value; the formats' offsets meet the same rounded values as the codes, so the
/// product is exactly that of the rounded `x` with the weights), else dequantized f32 tiles
/// with the BLAS sgemm. [`crate::quant::set_native_qmm_exact`] keeps f32 activations.
///
/// Errors: [`Error::Shape`] when the shapes do not fit, [`Error::Mlx`] on a GPU stream or a
/// CPU other than x86-64 ([`block_formats_available`]).
///
/// ```
/// use mlx_rs::quant::{self, BlockFormat};
/// use mlx_rs::{Array, Dtype};
/// if quant::block_formats_available() {
///     // One Q4_K block: d = 1, dmin = 0, every sub-block scale 1 and min 0, every code 1.
///     let mut block = vec![0u8; 144];
///     block[..2].copy_from_slice(&half::f16::ONE.to_le_bytes());
///     block[4..8].fill(1); // scales 0..3
///     block[12..16].fill(1); // scales 4..7 (low nibbles), mins 4..7 (high nibbles) 0
///     block[16..].fill(0x11); // codes
///     let w = Array::from_bytes(&block, &[1, 144], Dtype::Uint8)?;
///     let x = Array::ones(&[1, 256], Dtype::Float32)?;
///     let y = quant::block_matmul(&x, &w, BlockFormat::Q4K)?;
///     assert_eq!(y.to_vec::<f32>()?, vec![256.0]);
/// }
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn block_matmul(x: &Array, w: &Array, format: BlockFormat) -> Result<Array> {
    let rows = w.shape().first().copied().unwrap_or(0);
    block_matmul_fused(x, w, &[BlockRun { format, rows }], None, None)
}

/// A run of rows of one [`BlockFormat`] in a matrix of GGUF blocks: a fused projection whose
/// parts were stored in different formats (q and k in `Q4_K`, v in `Q6_K`) is several runs,
/// their bytes one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRun {
    /// The format of these rows.
    pub format: BlockFormat,
    /// How many rows.
    pub rows: i32,
}

/// Most runs in one matrix.
pub const MAX_BLOCK_RUNS: usize = 4;

/// [`block_matmul`] for a matrix of one or more [`BlockRun`]s (at most [`MAX_BLOCK_RUNS`]; `w`
/// a `uint8` array of any shape holding their bytes in order), with an optional RMS-norm
/// prologue and residual epilogue in the same primitive: `rms_norm(x, weight, eps) · Wᵀ +
/// residual` (the norm weight float32 `[K]`, the residual a float array of the output's shape).
///
/// ```
/// use mlx_rs::quant::{self, BlockFormat, BlockRun};
/// use mlx_rs::{Array, Dtype};
/// if quant::block_formats_available() {
///     // One Q6_K block: d = 1, every scale 1, every code 33 (weight 1).
///     let mut block = vec![0u8; 210];
///     block[..128].fill(0x11); // low 4 bits of every code: 1
///     block[128..192].fill(0xAA); // high 2 bits of every code: 2, so the code is 33
///     block[192..208].fill(1);
///     block[208..].copy_from_slice(&half::f16::ONE.to_le_bytes());
///     let w = Array::from_bytes(&block, &[1, 210], Dtype::Uint8)?;
///     let x = Array::full(&[1, 256], 3.0f32, Dtype::Float32)?;
///     let norm = Array::ones(&[256], Dtype::Float32)?;
///     let r = Array::from_slice(&[10.0f32], &[1, 1])?;
///     let runs = [BlockRun { format: BlockFormat::Q6K, rows: 1 }];
///     let y = quant::block_matmul_fused(&x, &w, &runs, Some((&norm, 0.0)), Some(&r))?;
///     // The norm maps every 3 to 1: 256 + 10.
///     assert!((y.item::<f32>()? - 266.0).abs() < 1e-3);
/// }
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn block_matmul_fused(
    x: &Array,
    w: &Array,
    runs: &[BlockRun],
    norm: Option<(&Array, f32)>,
    residual: Option<&Array>,
) -> Result<Array> {
    let k = x.shape().last().copied().unwrap_or(0);
    let bytes: Option<usize> = runs.iter().try_fold(0usize, |acc, r| {
        let row = usize::try_from(k)
            .ok()
            .and_then(|k| r.format.row_bytes(k))?;
        acc.checked_add(row.checked_mul(usize::try_from(r.rows).ok().filter(|&n| n > 0)?)?)
    });
    let described = runs
        .iter()
        .map(|r| format!("{} x {}", r.rows, r.format))
        .collect::<Vec<_>>()
        .join(" + ");
    if runs.is_empty() || runs.len() > MAX_BLOCK_RUNS {
        return Err(Error::Shape(format!(
            "block_matmul: 1 to {MAX_BLOCK_RUNS} runs of blocks, got {}",
            runs.len()
        )));
    }
    if w.dtype() != crate::Dtype::Uint8 || bytes != Some(w.nbytes()) {
        return Err(Error::Shape(format!(
            "block_matmul: rows {described} of x's {k} features (x {:?}) need {} bytes of uint8, got {} {:?}",
            x.shape(),
            bytes.map_or_else(|| "whole blocks".to_string(), |b| b.to_string()),
            w.dtype(),
            w.shape()
        )));
    }
    let formats: Vec<i32> = runs.iter().map(|r| r.format.raw()).collect();
    let rows: Vec<i32> = runs.iter().map(|r| r.rows).collect();
    let null = sys::mlx_array {
        ctx: std::ptr::null_mut(),
    };
    let (norm_weight, eps) = norm.map_or((null, 0.0), |(w, e)| (w.as_raw(), e));
    let residual = residual.map_or(null, Array::as_raw);
    // SAFETY: valid handles (or null handles for the absent prologue / epilogue), and two
    // arrays of `runs.len()` ints that outlive the call; the shim reports every failure
    // through the error handler and returns 1.
    Array::try_op_stream(|res, s| unsafe {
        sys::native_qmm::mlxrs_block_matmul(
            res,
            x.as_raw(),
            w.as_raw(),
            formats.as_ptr(),
            rows.as_ptr(),
            runs.len() as i32,
            norm_weight,
            eps,
            residual,
            s,
        )
    })
}

/// Rows of a table of GGUF blocks, as an embedding lookup: `table` is `uint8`
/// `[rows, K / values per block, block bytes]` in `format`, `ids` `int32` or `uint32` of any
/// shape; the result is float32 `[ids..., K]`, each row dequantized by the format's definition
/// (the bytes are read as stored, never converted), and a row of NaN for an id outside
/// `[0, rows)`: never a read outside the table. CPU streams only.
///
/// Errors: [`Error::Shape`] when the table's shape does not name `format`'s blocks or the ids
/// are not 32-bit integers; [`Error::Mlx`] on a GPU stream.
///
/// ```
/// use mlx_rs::quant::{self, BlockFormat};
/// use mlx_rs::{Array, Dtype};
/// // Two Q8_0 rows of one block: d = 0.5 with codes 0, 1, 2, ... and d = 2 with every code -1.
/// let mut table = vec![0u8; 2 * 34];
/// table[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
/// for i in 0..32 {
///     table[2 + i] = i as u8;
/// }
/// table[34..36].copy_from_slice(&half::f16::from_f32(2.0).to_le_bytes());
/// table[36..].fill(0xFF);
/// let table = Array::from_bytes(&table, &[2, 1, 34], Dtype::Uint8)?;
/// let ids = Array::from_slice(&[1i32, 0, 7], &[3])?;
/// let rows = quant::block_rows(&table, &ids, BlockFormat::Q8_0)?;
/// assert_eq!(rows.shape(), vec![3, 32]);
/// let v = rows.to_vec::<f32>()?;
/// assert_eq!((v[0], v[32 + 3], v[32 + 31]), (-2.0, 1.5, 15.5));
/// assert!(v[64].is_nan()); // id 7 is outside the table
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn block_rows(table: &Array, ids: &Array, format: BlockFormat) -> Result<Array> {
    let shape = table.shape();
    let fits = table.dtype() == crate::Dtype::Uint8
        && matches!(shape[..], [r, b, bytes] if r > 0 && b > 0 && bytes as usize == format.block_bytes());
    if !fits {
        return Err(Error::Shape(format!(
            "block_rows: a table of {format} blocks is uint8 [rows, blocks, {}], got {:?} {:?}",
            format.block_bytes(),
            table.dtype(),
            shape
        )));
    }
    if !matches!(ids.dtype(), crate::Dtype::Int32 | crate::Dtype::Uint32) {
        return Err(Error::Shape(format!(
            "block_rows: ids must be int32 or uint32, got {:?}",
            ids.dtype()
        )));
    }
    // SAFETY: valid handles; the shim reports every failure through the error handler and
    // returns 1.
    Array::try_op_stream(|res, s| unsafe {
        sys::native_qmm::mlxrs_block_rows(res, table.as_raw(), ids.as_raw(), format.raw(), s)
    })
}
