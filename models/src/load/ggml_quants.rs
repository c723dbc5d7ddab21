//! The project's own decoding of ggml block formats that MLX's `load_gguf` gets wrong.
//!
//! MLX 0.32.2 converts GGUF `Q4_K` tensors to f16 incorrectly (checked against the `gguf`
//! package's reference dequantizer on Qwen2.5-Coder-1.5B: errors as large as the values
//! themselves; its `Q6_K` conversion is right). [`read_q4_k_affine`] reads such a tensor's blocks
//! straight from the file and rewrites them, without loss, as an MLX affine 4-bit triplet
//! ([`q4_k_to_affine`]), which the quantized matmul reads directly; [`dequantize_q4_k`] is the
//! plain decoding (the reference the conversion is tested against).
//!
//! `Q4_K` block (256 weights, 144 bytes): `d` (f16), `dmin` (f16), 12 bytes of packed 6-bit
//! scales and mins for 8 sub-blocks of 32 weights, then 128 bytes of 4-bit codes. Sub-blocks
//! come in pairs of 64 weights sharing 32 code bytes: the first 32 weights are the low
//! nibbles, the next 32 the high nibbles. Weight = `d * scale_j * q - dmin * min_j`.

use crate::error::{Error, Result};
use half::f16;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

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

/// Decodes whole `Q4_K` blocks into `out` (`out.len() == blocks.len() / 144 * 256`).
pub fn dequantize_q4_k(blocks: &[u8], out: &mut [f32]) -> Result<()> {
    if blocks.len() % Q4_K_BLOCK_BYTES != 0 || out.len() != blocks.len() / Q4_K_BLOCK_BYTES * QK_K {
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
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let dmin = f16::from_le_bytes([block[2], block[3]]).to_f32();
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

/// Reads the `Q4_K` tensor of `count` weights stored at byte `offset` of `path` and decodes it.
/// A matrix in MLX's affine quantized layout (4 bits, groups of 32): `packed` holds
/// `[rows, cols / 8]` words (code `e` of a row in bits `4 (e % 8)` of word `e / 8`), `scales`
/// and `biases` `[rows, cols / 32]`; weight = `scale * code + bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct AffineQ4 {
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
pub fn q4_k_to_affine(blocks: &[u8]) -> Result<AffineQ4> {
    if blocks.len() % Q4_K_BLOCK_BYTES != 0 {
        return Err(Error::Gguf(format!(
            "Q4_K: {} bytes are not whole {Q4_K_BLOCK_BYTES}-byte blocks",
            blocks.len()
        )));
    }
    let n = blocks.len() / Q4_K_BLOCK_BYTES;
    let mut out = AffineQ4 {
        packed: Vec::with_capacity(n * QK_K / 8),
        scales: Vec::with_capacity(n * QK_K / 32),
        biases: Vec::with_capacity(n * QK_K / 32),
    };
    for block in blocks.chunks_exact(Q4_K_BLOCK_BYTES) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let dmin = f16::from_le_bytes([block[2], block[3]]).to_f32();
        let scales = &block[4..16];
        let qs = &block[16..];
        for sub in 0..8 {
            let (sc, m) = scale_min(sub, scales);
            out.scales.push(d * f32::from(sc));
            out.biases.push(-(dmin * f32::from(m)));
            let bytes = &qs[(sub / 2) * 32..(sub / 2) * 32 + 32];
            let code = |l: usize| -> u32 {
                u32::from(if sub % 2 == 0 {
                    bytes[l] & 0x0f
                } else {
                    bytes[l] >> 4
                })
            };
            for word in 0..4 {
                out.packed
                    .push((0..8).fold(0u32, |acc, k| acc | code(word * 8 + k) << (4 * k)));
            }
        }
    }
    Ok(out)
}

/// Reads `count` weights of `Q4_K` blocks at `offset` of `path` as an [`AffineQ4`] triplet.
pub fn read_q4_k_affine(path: &Path, offset: u64, count: usize) -> Result<AffineQ4> {
    q4_k_to_affine(&read_blocks(path, offset, count)?)
}

fn read_blocks(path: &Path, offset: u64, count: usize) -> Result<Vec<u8>> {
    if count % QK_K != 0 {
        return Err(Error::Gguf(format!(
            "Q4_K tensor of {count} weights is not whole blocks"
        )));
    }
    let mut bytes = vec![0u8; count / QK_K * Q4_K_BLOCK_BYTES];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
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
