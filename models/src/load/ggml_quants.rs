//! The project's own decoding of ggml block formats, from each format's definition: the GGUF
//! loader hands every quantized tensor's blocks to this module (MLX's `load_gguf` is never given
//! an untrusted file).
//!
//! Formats whose blocks map onto MLX's affine layout without loss are re-laid ([`to_affine`]):
//! `Q4_0`, `Q4_1` and `Q4_K` as 4-bit groups of 32, `Q8_0`, `Q5_0`, `Q5_1` and `Q5_K` as 8-bit
//! groups of 32 (a 5-bit code fits in 8 bits; each 32-weight block or sub-block is one group
//! with its own scale and bias). The others are decoded to floats ([`dequantize`]): `Q6_K`,
//! whose 16-weight sub-blocks have their own scales, `Q2_K` and `Q3_K`. Every block's `f16`
//! scales must be finite ([`Error::Gguf`] otherwise): a NaN scale would turn a whole row of
//! logits into NaN.
//!
//! `Q4_K` block (256 weights, 144 bytes): `d` (f16), `dmin` (f16), 12 bytes of packed 6-bit
//! scales and mins for 8 sub-blocks of 32 weights, then 128 bytes of 4-bit codes. Sub-blocks
//! come in pairs of 64 weights sharing 32 code bytes: the first 32 weights are the low
//! nibbles, the next 32 the high nibbles. Weight = `d * scale_j * q - dmin * min_j`.

use super::gguf_file::GgmlType;
use crate::error::{Error, Result};
use half::f16;

/// Weights per `Q4_K` block.
pub const QK_K: usize = 256;
/// Bytes per `Q4_K` block.
pub const Q4_K_BLOCK_BYTES: usize = 144;

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes.
fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Decodes whole `Q4_K` blocks into `out` (`out.len() == blocks.len() / 144 * 256`);
/// [`Error::Gguf`] for partial blocks or a NaN or infinite `d` / `dmin`.
pub fn dequantize_q4_k(blocks: &[u8], out: &mut [f32]) -> Result<()> {
    if !blocks.len().is_multiple_of(Q4_K_BLOCK_BYTES)
        || out.len() != blocks.len() / Q4_K_BLOCK_BYTES * QK_K
    {
        return Err(Error::Gguf(format!(
            "Q4_K: {} bytes do not hold whole blocks for {} weights",
            blocks.len(),
            out.len()
        )));
    }
    for (block, y) in blocks
        .chunks_exact(Q4_K_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = scale_f16(block, 0)?;
        let dmin = scale_f16(block, 2)?;
        let scales = &block[4..16];
        let qs = &block[16..];
        for pair in 0..4 {
            let (sc0, m0) = scale_min(2 * pair, scales);
            let (sc1, m1) = scale_min(2 * pair + 1, scales);
            let (d0, min0) = (d * f32::from(sc0), dmin * f32::from(m0));
            let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
            let q = &qs[pair * 32..pair * 32 + 32];
            let y = &mut y[pair * 64..pair * 64 + 64];
            for l in 0..32 {
                y[l] = d0 * f32::from(q[l] & 0x0f) - min0;
                y[32 + l] = d1 * f32::from(q[l] >> 4) - min1;
            }
        }
    }
    Ok(())
}

/// A matrix in MLX's affine quantized layout, groups of 32: `packed` holds
/// `[rows, cols * bits / 32]` words (code `e` of a row in bits `bits * (e % (32 / bits))` of
/// word `e / (32 / bits)`), `scales` and `biases` `[rows, cols / 32]`; weight =
/// `scale * code + bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine {
    /// Bits per code (4 or 8).
    pub bits: u32,
    /// Packed codes.
    pub packed: Vec<u32>,
    /// Per-group scales.
    pub scales: Vec<f32>,
    /// Per-group biases.
    pub biases: Vec<f32>,
}

/// Rewrites `Q4_K` blocks as an MLX affine 4-bit, group-32 triplet, without loss: each
/// 32-weight sub-block of a `Q4_K` super-block is one group with scale `d * sc` and bias
/// `-dmin * m` (exact in f32: an f16 times a 6-bit integer), and the codes are re-packed
/// from `Q4_K`'s split-nibble order (the low nibbles of 32 bytes are one sub-block, the high
/// nibbles the next) into MLX's sequential nibbles. Blocks follow each other row by row, so
/// the outputs are row-major like the tensor.
///
/// ```
/// use mlx_models::load::ggml_quants::{dequantize_q4_k, q4_k_to_affine, Q4_K_BLOCK_BYTES, QK_K};
/// let mut block = vec![0u8; Q4_K_BLOCK_BYTES];
/// block[0..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes()); // d
/// block[4] = 3; // sub-block 0: scale 3
/// block[16] = 0x21; // codes 1 (sub-block 0, weight 0) and 2 (sub-block 1, weight 32)
/// let t = q4_k_to_affine(&block)?;
/// assert_eq!((t.packed.len(), t.scales.len()), (QK_K / 8, QK_K / 32));
/// assert_eq!((t.packed[0] & 0xf, t.scales[0], t.biases[0]), (1, 1.5, 0.0));
/// let mut dense = vec![0f32; QK_K];
/// dequantize_q4_k(&block, &mut dense)?;
/// assert_eq!(dense[0], t.scales[0] * 1.0 + t.biases[0]);
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn q4_k_to_affine(blocks: &[u8]) -> Result<Affine> {
    to_affine(GgmlType::Q4K, blocks)
}

/// The `f16` at `block[at..at + 2]` as `f32`; [`Error::Gguf`] when it is NaN or infinite.
pub(crate) fn scale_f16(block: &[u8], at: usize) -> Result<f32> {
    let v = f16::from_le_bytes([block[at], block[at + 1]]);
    if v.is_finite() {
        Ok(v.to_f32())
    } else {
        Err(Error::Gguf(format!(
            "a block scale is {v} (must be finite)"
        )))
    }
}

/// `(elements, bytes)` of one block of `ty`, or [`Error::Gguf`] for a type without a block
/// layout here.
fn layout(ty: GgmlType) -> Result<(usize, usize)> {
    match ty.block_layout() {
        Some((n, b)) => Ok((n as usize, b as usize)),
        None => Err(Error::Gguf(format!("tensor type {ty} cannot be decoded"))),
    }
}

/// Checks that `blocks` holds whole blocks of `ty`; returns the number of blocks.
fn whole_blocks(ty: GgmlType, blocks: &[u8]) -> Result<usize> {
    let (_, bytes) = layout(ty)?;
    if !blocks.len().is_multiple_of(bytes) {
        return Err(Error::Gguf(format!(
            "{ty}: {} bytes are not whole {bytes}-byte blocks",
            blocks.len()
        )));
    }
    Ok(blocks.len() / bytes)
}

/// Appends the 32 codes of one group to `packed` in MLX's order (`bits` = 4 or 8).
fn pack_group(packed: &mut Vec<u32>, bits: u32, codes: &[u8; 32]) {
    let per_word = (32 / bits) as usize;
    for word in codes.chunks_exact(per_word) {
        packed.push(word.iter().enumerate().fold(0u32, |acc, (k, &c)| {
            acc | u32::from(c) << (bits as usize * k)
        }));
    }
}

/// Whether [`to_affine`] re-lays `ty` without loss.
pub fn has_affine_form(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q4K
            | GgmlType::Q5K
    )
}

/// Re-lays blocks of `ty` as an MLX affine triplet with groups of 32, without loss: `Q4_0`,
/// `Q4_1`, `Q4_K` as 4 bits; `Q8_0` (code `q + 128`), `Q5_0`, `Q5_1`, `Q5_K` as 8 bits. Scales
/// and biases are computed in `f32` and exact: `Q4_0` has bias `-8 d`, `Q8_0` `-128 d`,
/// `Q5_0` `-16 d`, `Q4_1` / `Q5_1` the block's `m`, the K-quants `d * scale_j` and
/// `-dmin * min_j`; `scale * code + bias` then equals the format's value bit for bit.
///
/// Errors: [`Error::Gguf`] for partial blocks, a non-finite `f16` scale, or a type without an
/// affine form ([`has_affine_form`]).
///
/// ```
/// use mlx_models::load::ggml_quants::to_affine;
/// use mlx_models::load::gguf_file::GgmlType;
/// // One Q8_0 block: d = 0.5, codes -128, -1, 0, 1, 127, then zeros.
/// let mut block = half::f16::from_f32(0.5).to_le_bytes().to_vec();
/// block.extend([-128i8, -1, 0, 1, 127].map(|q| q as u8));
/// block.resize(34, 0);
/// let t = to_affine(GgmlType::Q8_0, &block)?;
/// assert_eq!((t.bits, t.scales[0], t.biases[0]), (8, 0.5, -64.0));
/// assert_eq!(t.packed[0].to_le_bytes(), [0, 127, 128, 129]);
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn to_affine(ty: GgmlType, blocks: &[u8]) -> Result<Affine> {
    if !has_affine_form(ty) {
        return Err(Error::Gguf(format!(
            "tensor type {ty} has no lossless affine form"
        )));
    }
    let n = whole_blocks(ty, blocks)?;
    let (block_len, block_bytes) = layout(ty)?;
    let groups = n * block_len / 32;
    let bits = if matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K) {
        4
    } else {
        8
    };
    let mut out = Affine {
        bits,
        packed: Vec::with_capacity(groups * bits as usize),
        scales: Vec::with_capacity(groups),
        biases: Vec::with_capacity(groups),
    };
    let mut codes = [0u8; 32];
    for block in blocks.chunks_exact(block_bytes) {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let d = scale_f16(block, 0)?;
                let (bias, qs) = if ty == GgmlType::Q4_0 {
                    (-8.0 * d, &block[2..18])
                } else {
                    (scale_f16(block, 2)?, &block[4..20])
                };
                for j in 0..16 {
                    codes[j] = qs[j] & 0x0f;
                    codes[j + 16] = qs[j] >> 4;
                }
                push(&mut out, d, bias, &codes);
            }
            GgmlType::Q8_0 => {
                let d = scale_f16(block, 0)?;
                for (c, &q) in codes.iter_mut().zip(&block[2..34]) {
                    *c = (q as i8 as i16 + 128) as u8;
                }
                push(&mut out, d, -128.0 * d, &codes);
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let d = scale_f16(block, 0)?;
                let (bias, rest) = if ty == GgmlType::Q5_0 {
                    (-16.0 * d, &block[2..])
                } else {
                    (scale_f16(block, 2)?, &block[4..])
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                for j in 0..16 {
                    let h0 = ((qh >> j) & 1) as u8;
                    let h1 = ((qh >> (j + 16)) & 1) as u8;
                    codes[j] = (qs[j] & 0x0f) | h0 << 4;
                    codes[j + 16] = (qs[j] >> 4) | h1 << 4;
                }
                push(&mut out, d, bias, &codes);
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                // Each 32-weight sub-block is one group: scale d * sc, bias -dmin * m. The
                // low nibbles of 32 bytes are one sub-block, the high nibbles the next; Q5_K
                // adds bit `sub` of `qh[l]` as each code's fifth bit.
                let d = scale_f16(block, 0)?;
                let dmin = scale_f16(block, 2)?;
                let scales = &block[4..16];
                let (qh, qs) = if ty == GgmlType::Q5K {
                    (Some(&block[16..48]), &block[48..176])
                } else {
                    (None, &block[16..144])
                };
                for sub in 0..8 {
                    let (sc, m) = scale_min(sub, scales);
                    let ql = &qs[(sub / 2) * 32..(sub / 2) * 32 + 32];
                    for l in 0..32 {
                        let low = if sub % 2 == 0 {
                            ql[l] & 0x0f
                        } else {
                            ql[l] >> 4
                        };
                        let high = qh.map_or(0, |h| (h[l] >> sub) & 1);
                        codes[l] = low | high << 4;
                    }
                    push(&mut out, d * f32::from(sc), -(dmin * f32::from(m)), &codes);
                }
            }
            _ => unreachable!("checked by has_affine_form"),
        }
    }
    Ok(out)
}

fn push(out: &mut Affine, scale: f32, bias: f32, codes: &[u8; 32]) {
    out.scales.push(scale);
    out.biases.push(bias);
    pack_group(&mut out.packed, out.bits, codes);
}

/// Decodes blocks of `ty` (any type with a layout here, floats included) into `out`, from each
/// format's definition in ggml: the reference the re-layouts are tested against, and the
/// loader's path for `Q6_K`, `Q2_K` and `Q3_K`.
///
/// Errors: [`Error::Gguf`] when `blocks` is not whole blocks for `out.len()` weights, or a
/// scale is not finite.
///
/// ```
/// use mlx_models::load::ggml_quants::dequantize;
/// use mlx_models::load::gguf_file::GgmlType;
/// // One Q4_0 block: d = 0.25; byte 0 holds codes 3 (weight 0) and 12 (weight 16).
/// let mut block = half::f16::from_f32(0.25).to_le_bytes().to_vec();
/// block.push(0xC3);
/// block.resize(18, 0x88);
/// let mut y = [0f32; 32];
/// dequantize(GgmlType::Q4_0, &block, &mut y)?;
/// assert_eq!((y[0], y[16], y[1]), ((3.0 - 8.0) * 0.25, (12.0 - 8.0) * 0.25, 0.0));
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn dequantize(ty: GgmlType, blocks: &[u8], out: &mut [f32]) -> Result<()> {
    let n = whole_blocks(ty, blocks)?;
    let (block_len, block_bytes) = layout(ty)?;
    if out.len() != n * block_len {
        return Err(Error::Gguf(format!(
            "{ty}: {} bytes hold {} weights, not {}",
            blocks.len(),
            n * block_len,
            out.len()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (y, b) in out.iter_mut().zip(blocks.chunks_exact(4)) {
                *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (y, b) in out.iter_mut().zip(blocks.chunks_exact(2)) {
                *y = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::Bf16 => {
            for (y, b) in out.iter_mut().zip(blocks.chunks_exact(2)) {
                *y = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::Q4K => dequantize_q4_k(blocks, out)?,
        GgmlType::Q6K => {
            for (block, y) in blocks
                .chunks_exact(block_bytes)
                .zip(out.chunks_exact_mut(QK_K))
            {
                dequantize_q6_k_block(block, y)?;
            }
        }
        GgmlType::Q2K => {
            for (block, y) in blocks
                .chunks_exact(block_bytes)
                .zip(out.chunks_exact_mut(QK_K))
            {
                dequantize_q2_k_block(block, y)?;
            }
        }
        GgmlType::Q3K => {
            for (block, y) in blocks
                .chunks_exact(block_bytes)
                .zip(out.chunks_exact_mut(QK_K))
            {
                dequantize_q3_k_block(block, y)?;
            }
        }
        t if has_affine_form(t) => {
            let a = to_affine(t, blocks)?;
            let per_word = 32 / a.bits as usize;
            let mask = (1u32 << a.bits) - 1;
            for (e, y) in out.iter_mut().enumerate() {
                let code = (a.packed[e / per_word] >> (a.bits as usize * (e % per_word))) & mask;
                *y = a.scales[e / 32] * code as f32 + a.biases[e / 32];
            }
        }
        t => {
            return Err(Error::Gguf(format!(
                "tensor type {t} cannot be decoded to floats"
            )))
        }
    }
    Ok(())
}

/// `Q6_K` (210 bytes): `ql[128]` low 4 bits, `qh[64]` high 2 bits, 16 `i8` scales, `d` (f16).
/// Weight = `d * scale[sub16] * (q - 32)`.
fn dequantize_q6_k_block(block: &[u8], y: &mut [f32]) -> Result<()> {
    let d = scale_f16(block, 208)?;
    for half in 0..2 {
        let ql = &block[half * 64..half * 64 + 64];
        let qh = &block[128 + half * 32..128 + half * 32 + 32];
        let sc = &block[192 + half * 8..192 + half * 8 + 8];
        let y = &mut y[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
    Ok(())
}

/// `Q2_K` (84 bytes): 16 bytes of 4-bit scale / 4-bit min pairs, `qs[64]` 2-bit codes, `d`,
/// `dmin` (f16). Weight = `d * scale - dmin * min` per 16-weight sub-block.
fn dequantize_q2_k_block(block: &[u8], y: &mut [f32]) -> Result<()> {
    let scales = &block[0..16];
    let d = scale_f16(block, 80)?;
    let dmin = scale_f16(block, 82)?;
    let mut is = 0;
    let mut out = 0;
    for half in 0..2 {
        let q = &block[16 + half * 32..16 + half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * f32::from(sc & 0x0f), dmin * f32::from(sc >> 4));
                for l in 0..16 {
                    y[out] = dl * f32::from((q[part * 16 + l] >> shift) & 3) - ml;
                    out += 1;
                }
            }
        }
    }
    Ok(())
}

/// `Q3_K` (110 bytes): `hmask[32]` high bits, `qs[64]` low 2 bits, 12 bytes of packed 6-bit
/// scales, `d` (f16). Weight = `d * (scale - 32) * (q - 4 * !high)`.
fn dequantize_q3_k_block(block: &[u8], y: &mut [f32]) -> Result<()> {
    let hmask = &block[0..32];
    let packed = &block[96..108];
    let d = scale_f16(block, 108)?;
    let mut scales = [0i8; 16];
    for (j, s) in scales.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0x0f
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *s = (low | high << 4) as i8 - 32;
    }
    let mut is = 0;
    let mut bit = 0;
    let mut out = 0;
    for half in 0..2 {
        let q = &block[32 + half * 32..32 + half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * f32::from(scales[is]);
                is += 1;
                for l in 0..16 {
                    let k = part * 16 + l;
                    let high = if hmask[k] & (1 << bit) != 0 { 0 } else { 4 };
                    y[out] = dl * (i32::from((q[k] >> shift) & 3) - high) as f32;
                    out += 1;
                }
            }
            bit += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One hand-built block: d = 0.5, dmin = 0.25; sub-block 0 has scale 2 and min 3, sub-block 5
    /// (high nibbles of the third pair) scale 33 and min 17, so that both packings are exercised.
    #[test]
    fn decodes_a_hand_built_block() {
        let mut block = vec![0u8; Q4_K_BLOCK_BYTES];
        block[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block[2..4].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        let s = &mut block[4..16];
        s[0] = 2; // scale_0 (6 bits)
        s[4] = 3; // min_0
                  // sub-block 5: scale = (s[9] & 15) | (s[1] >> 6) << 4; min = (s[9] >> 4) | (s[5] >> 6) << 4
                  // scale 33 = 0b10_0001 → low 4 bits 1, high 2 bits 2; min 17 = 0b01_0001 → low 1, high 1.
        s[9] = 0x11;
        s[1] = 2 << 6;
        s[5] = 1 << 6;
        // codes: first byte of pair 0 = 0x7 (low) / 0x9 (high); first byte of pair 2 = 0xA5.
        block[16] = 0x97;
        block[16 + 64] = 0xA5;
        let mut y = vec![0f32; QK_K];
        dequantize_q4_k(&block, &mut y).unwrap();
        assert_eq!(y[0], 0.5 * 2.0 * 7.0 - 0.25 * 3.0); // sub-block 0, low nibble
        assert_eq!(y[1], -0.25 * 3.0); // code 0
                                       // sub-block 1 (scale/min from s[1] & 63 = 0, s[5] & 63 = 0): high nibble 9 times 0
        assert_eq!(y[32], 0.0);
        // sub-block 5 = high nibbles of pair 2 (weights 160..192): code 0xA
        assert_eq!(y[160], 0.5 * 33.0 * 10.0 - 0.25 * 17.0);
        // sub-block 4 = low nibbles of pair 2: scale (s[8] & 15) | (s[0] >> 6) << 4 = 0
        assert_eq!(y[128], 0.0);
        assert!(dequantize_q4_k(&block[..100], &mut y).is_err());
    }
}

/// Decodes `blocks` (a tensor of rows of `row_len` weights, any block type [`dequantize`]
/// reads) one row at a time into `f16` values: the dense form of a type that has no affine
/// one, without an `f32` copy of the whole tensor. Values outside `f16`'s range become
/// infinite, as a cast would make them.
///
/// ```
/// use mlx_models::load::ggml_quants::dequantize_to_f16;
/// use mlx_models::load::gguf_file::GgmlType;
/// let mut block = half::f16::from_f32(0.25).to_le_bytes().to_vec(); // Q4_0, d = 0.25
/// block.resize(18, 0x9A); // codes 10 (low nibbles) and 9 (high)
/// let y = dequantize_to_f16(GgmlType::Q4_0, &block, 32)?;
/// assert_eq!((y[0].to_f32(), y[16].to_f32()), (0.5, 0.25));
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn dequantize_to_f16(ty: GgmlType, blocks: &[u8], row_len: usize) -> Result<Vec<f16>> {
    let mut out = Vec::new();
    for_each_row(ty, blocks, row_len, |row| {
        out.extend(row.iter().map(|&v| f16::from_f32(v)));
    })?;
    Ok(out)
}

/// Requantizes `blocks` (rows of `row_len` weights; `row_len` a multiple of 32) as an MLX
/// affine 8-bit, group-32 triplet, decoding one row at a time (no dense copy of the tensor).
/// For the types without a lossless affine form (`Q6_K`, whose 16-weight sub-blocks have
/// their own scales).
///
/// Per group of 32 decoded values with extremes `min` and `max`: the bias is `min` rounded
/// down to `f16`, the scale `(max - bias) / 255` rounded up to `f16` (so that every value has
/// a code in 0..=255 and none is clipped), and each code the nearest. A weight moves by at
/// most half the scale, plus `f32` rounding: half a step of its group's range, and the bias
/// and scale stay exact in `f16` (2 + 2 bytes per 32 weights). A group whose range does not
/// fit `f16` keeps an `f32` scale and bias (and then the tensor's are stored as `f32`).
///
/// ```
/// use mlx_models::load::ggml_quants::requantize_affine8;
/// use mlx_models::load::gguf_file::GgmlType;
/// // 32 f32 weights 0, 1, ..., 31: bias 0, scale 31 / 255, codes round(w * 255 / 31).
/// let row: Vec<u8> = (0..32).flat_map(|i| (i as f32).to_le_bytes()).collect();
/// let t = requantize_affine8(GgmlType::F32, &row, 32)?;
/// assert_eq!(t.biases[0], 0.0);
/// let code = |i: usize| (t.packed[i / 4] >> (8 * (i % 4))) & 0xff;
/// assert_eq!((code(0), code(31)), (0, 255));
/// assert!((t.scales[0] * code(7) as f32 - 7.0).abs() <= t.scales[0] / 2.0);
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn requantize_affine8(ty: GgmlType, blocks: &[u8], row_len: usize) -> Result<Affine> {
    if row_len == 0 || !row_len.is_multiple_of(32) {
        return Err(Error::Gguf(format!(
            "{ty}: rows of {row_len} weights are not whole groups of 32"
        )));
    }
    let mut t = Affine {
        bits: 8,
        packed: Vec::new(),
        scales: Vec::new(),
        biases: Vec::new(),
    };
    for_each_row(ty, blocks, row_len, |row| {
        for group in row.chunks_exact(32) {
            let (scale, bias) = affine8_params(group);
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut codes = [0u8; 32];
            for (c, &w) in codes.iter_mut().zip(group) {
                *c = ((w - bias) * inv).round().clamp(0.0, 255.0) as u8;
            }
            pack_group(&mut t.packed, 8, &codes);
            t.scales.push(scale);
            t.biases.push(bias);
        }
    })?;
    Ok(t)
}

/// Scale and bias of one 8-bit group (see [`requantize_affine8`]).
fn affine8_params(group: &[f32]) -> (f32, f32) {
    let min = group.iter().copied().fold(f32::INFINITY, f32::min);
    let max = group.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // The bias: min rounded down to f16.
    let mut bias = f16::from_f32(min);
    if bias.to_f32() > min {
        bias = next_down_f16(bias);
    }
    let bias_f = bias.to_f32();
    let mut scale = f16::from_f32((max - bias_f) / 255.0);
    if scale.to_f32() * 255.0 + bias_f < max {
        scale = next_up_f16(scale);
    }
    let (s, b) = (scale.to_f32(), bias_f);
    if s.is_finite() && b.is_finite() && s * 255.0 + b >= max {
        (s, b)
    } else {
        ((max - min) / 255.0, min)
    }
}

/// The next `f16` toward +infinity (of a finite or zero value).
fn next_up_f16(h: f16) -> f16 {
    let b = h.to_bits();
    if b & 0x7fff == 0 {
        f16::from_bits(1) // +0 or -0: the smallest subnormal
    } else if b & 0x8000 == 0 {
        f16::from_bits(b + 1)
    } else {
        f16::from_bits(b - 1)
    }
}

/// The next `f16` toward -infinity.
fn next_down_f16(h: f16) -> f16 {
    f16::from_bits(next_up_f16(f16::from_bits(h.to_bits() ^ 0x8000)).to_bits() ^ 0x8000)
}

/// Calls `f` with each row of `blocks` decoded to `f32` (`row_len` weights, a whole number of
/// the type's blocks).
fn for_each_row(
    ty: GgmlType,
    blocks: &[u8],
    row_len: usize,
    mut f: impl FnMut(&[f32]),
) -> Result<()> {
    let n = whole_blocks(ty, blocks)?;
    let (block_len, block_bytes) = layout(ty)?;
    if row_len == 0 || !row_len.is_multiple_of(block_len) || (n * block_len) % row_len != 0 {
        return Err(Error::Gguf(format!(
            "{ty}: rows of {row_len} weights do not split {} weights into whole blocks",
            n * block_len
        )));
    }
    let row_bytes = row_len / block_len * block_bytes;
    let mut row = vec![0f32; row_len];
    for chunk in blocks.chunks_exact(row_bytes) {
        dequantize(ty, chunk, &mut row)?;
        f(&row);
    }
    Ok(())
}

#[cfg(test)]
mod requantize_tests {
    use super::*;

    fn f32_row(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn decoded(t: &Affine) -> Vec<f32> {
        (0..t.packed.len() * 4)
            .map(|i| {
                let code = (t.packed[i / 4] >> (8 * (i % 4))) & 0xff;
                t.scales[i / 32] * code as f32 + t.biases[i / 32]
            })
            .collect()
    }

    #[test]
    fn every_weight_within_half_a_step_and_parameters_exact_in_f16() {
        // Two rows of two groups: a wide signed range, a narrow positive one, tiny values, and
        // a constant group.
        let mut values = Vec::new();
        values.extend((0..32).map(|i| -3.7 + 0.23 * i as f32));
        values.extend((0..32).map(|i| 1000.0 + 0.001 * i as f32));
        values.extend((0..32).map(|i| 1e-6 * (i as f32 - 16.0)));
        values.extend([0.3f32; 32]);
        let t = requantize_affine8(GgmlType::F32, &f32_row(&values), 64).unwrap();
        assert_eq!((t.packed.len(), t.scales.len()), (32, 4));
        let got = decoded(&t);
        for (g, group) in values.chunks(32).enumerate() {
            let (s, b) = (t.scales[g], t.biases[g]);
            assert_eq!(half::f16::from_f32(s).to_f32(), s, "group {g}: scale {s}");
            assert_eq!(half::f16::from_f32(b).to_f32(), b, "group {g}: bias {b}");
            let min = group.iter().copied().fold(f32::INFINITY, f32::min);
            assert!(b <= min, "group {g}: bias {b} above the minimum {min}");
            for (k, &w) in group.iter().enumerate() {
                let err = (got[g * 32 + k] - w).abs();
                let bound = s / 2.0 + 8.0 * f32::EPSILON * w.abs().max(b.abs());
                assert!(err <= bound, "group {g} [{k}]: {} vs {w}", got[g * 32 + k]);
            }
        }
        // The constant group: no spread, the value itself (it is exact in f16 within 2^-11).
        assert!((got[96] - 0.3).abs() <= 0.3 * 2f32.powi(-11));
    }

    #[test]
    fn ranges_beyond_f16_keep_f32_parameters() {
        let values: Vec<f32> = (0..32).map(|i| 1e6 * i as f32).collect();
        let t = requantize_affine8(GgmlType::F32, &f32_row(&values), 32).unwrap();
        assert!(t.scales[0] > 65504.0 && t.scales[0].is_finite(), "{t:?}");
        let got = decoded(&t);
        for (g, w) in got.iter().zip(&values) {
            assert!((g - w).abs() <= t.scales[0] / 2.0 + 1.0, "{g} vs {w}");
        }
    }

    #[test]
    fn bad_row_lengths_are_typed_errors() {
        let row = f32_row(&[0.0; 64]);
        assert!(matches!(
            requantize_affine8(GgmlType::F32, &row, 48),
            Err(Error::Gguf(_))
        ));
        assert!(matches!(
            requantize_affine8(GgmlType::F32, &row, 0),
            Err(Error::Gguf(_))
        ));
        assert!(matches!(
            dequantize_to_f16(GgmlType::F32, &row, 40),
            Err(Error::Gguf(_))
        ));
        assert!(matches!(
            dequantize_to_f16(GgmlType::F32, &row[..10], 1),
            Err(Error::Gguf(_))
        ));
    }

    #[test]
    fn f16_decode_matches_the_f32_decode_rounded() {
        // Two Q4_0 blocks (one row of 64): d = 0.25 and d = -3.0.
        let mut blocks = half::f16::from_f32(0.25).to_le_bytes().to_vec();
        blocks.extend((0..16u8).map(|i| i.wrapping_mul(37)));
        blocks.extend(half::f16::from_f32(-3.0).to_le_bytes());
        blocks.extend((0..16u8).map(|i| i.wrapping_mul(91)));
        let mut want = vec![0f32; 64];
        dequantize(GgmlType::Q4_0, &blocks, &mut want).unwrap();
        let got = dequantize_to_f16(GgmlType::Q4_0, &blocks, 64).unwrap();
        let want: Vec<half::f16> = want.iter().map(|&v| half::f16::from_f32(v)).collect();
        assert_eq!(got, want);
    }
}
