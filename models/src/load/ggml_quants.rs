//! The project's own decoding of ggml block formats that MLX's `load_gguf` gets wrong.
//!
//! MLX 0.32.2 converts GGUF `Q4_K` tensors to f16 incorrectly (checked against the `gguf`
//! package's reference dequantizer on Qwen2.5-Coder-1.5B: errors as large as the values
//! themselves; its `Q6_K` conversion is right). [`read_q4_k`] reads such a tensor's blocks
//! straight from the file and decodes them here.
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
pub fn read_q4_k(path: &Path, offset: u64, count: usize) -> Result<Vec<f32>> {
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
    let mut out = vec![0f32; count];
    dequantize_q4_k(&bytes, &mut out)?;
    Ok(out)
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
