//! A GGUF file derived from a fetched one: every `Q4_1` tensor re-encoded as `Q8_0` blocks, the
//! rest (metadata, `Q8_0` and `F32` tensors) copied byte for byte. No registry ships SmolLM2 in
//! Q8_0; this gives the engines a Q8_0 file of the same model (the Q4_1 weights, which Q8_0
//! holds to within half a Q8_0 step).
//!
//! Written from the format's definition (ggml's `block_q4_1` and `block_q8_0`, GGUF v3), on
//! purpose independent of the readers under test in `mlx-models`:
//! - `Q4_1`, 32 weights in 20 bytes: f16 `d`, f16 `m`, 16 bytes of 4-bit codes (the low nibble
//!   of byte `j` is weight `j`, the high nibble weight `j + 16`); weight = `d * q + m`.
//! - `Q8_0`, 32 weights in 34 bytes: f16 `d = max|w| / 127`, then `round(w / d)` as i8 (ggml's
//!   reference quantizer, `quantize_row_q8_0_ref`).

use half::f16;
use std::io::Write;
use std::path::Path;

const Q4_1: u32 = 3;
const Q8_0: u32 = 8;
const BLOCK: usize = 32;

/// A little-endian reader over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u64()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    /// Skips one metadata value of GGUF type `ty`, returning it when it is a u32 (for
    /// `general.alignment`).
    fn skip_value(&mut self, ty: u32) -> Result<Option<u64>, String> {
        let fixed = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                self.string()?;
                return Ok(None);
            }
            9 => {
                let inner = self.u32()?;
                let count = self.u64()?;
                for _ in 0..count {
                    self.skip_value(inner)?;
                }
                return Ok(None);
            }
            other => return Err(format!("unknown metadata type {other}")),
        };
        let raw = self.take(fixed)?;
        Ok((ty == 4).then(|| u32::from_le_bytes(raw.try_into().unwrap()) as u64))
    }
}

struct Tensor {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    offset: u64,
}

/// ggml's byte size of `n` elements of type `ty` (the types the SmolLM2 file holds).
fn n_bytes(ty: u32, n: u64) -> Result<u64, String> {
    match ty {
        0 => Ok(n * 4),
        1 => Ok(n * 2),
        Q4_1 => Ok(n / 32 * 20),
        Q8_0 => Ok(n / 32 * 34),
        other => Err(format!("tensor type {other} is not handled")),
    }
}

/// Q4_1 blocks to Q8_0 blocks.
fn q4_1_to_q8_0_blocks(q4: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(q4.len() / 20 * 34);
    for block in q4.chunks_exact(20) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
        let mut w = [0f32; BLOCK];
        for j in 0..16 {
            w[j] = d * f32::from(block[4 + j] & 0x0f) + m;
            w[j + 16] = d * f32::from(block[4 + j] >> 4) + m;
        }
        let amax = w.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let d8 = amax / 127.0;
        let inv = if d8 > 0.0 { 1.0 / d8 } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d8).to_le_bytes());
        out.extend(w.iter().map(|&x| (x * inv).round() as i8 as u8));
    }
    out
}

/// Writes `output`: `input` with its Q4_1 tensors as Q8_0.
pub fn q4_1_to_q8_0(input: &Path, output: &Path) -> Result<(), String> {
    let bytes = std::fs::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let mut c = Cursor {
        bytes: &bytes,
        at: 0,
    };
    if c.take(4)? != b"GGUF" || c.u32()? != 3 {
        return Err(format!("{} is not a GGUF v3 file", input.display()));
    }
    let (n_tensors, n_kv) = (c.u64()?, c.u64()?);
    let meta_start = c.at;
    let mut alignment = 32;
    for _ in 0..n_kv {
        let key = c.string()?;
        let ty = c.u32()?;
        if let Some(v) = c.skip_value(ty)? {
            if key == "general.alignment" {
                alignment = v;
            }
        }
    }
    let meta = &bytes[meta_start..c.at];
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let name = c.string()?;
        let n_dims = c.u32()?;
        let dims = (0..n_dims)
            .map(|_| c.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let (ty, offset) = (c.u32()?, c.u64()?);
        tensors.push(Tensor {
            name,
            dims,
            ty,
            offset,
        });
    }
    let data_start = c.at.next_multiple_of(alignment as usize);

    let mut data = Vec::new();
    let mut infos = Vec::new();
    for t in &tensors {
        let n: u64 = t.dims.iter().product();
        let size = n_bytes(t.ty, n)? as usize;
        let begin = data_start + t.offset as usize;
        let src = bytes
            .get(begin..begin + size)
            .ok_or_else(|| format!("tensor {} lies outside the file", t.name))?;
        let (ty, encoded) = if t.ty == Q4_1 {
            (Q8_0, q4_1_to_q8_0_blocks(src))
        } else {
            (t.ty, src.to_vec())
        };
        data.resize(data.len().next_multiple_of(alignment as usize), 0);
        infos.extend((t.name.len() as u64).to_le_bytes());
        infos.extend(t.name.as_bytes());
        infos.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            infos.extend(d.to_le_bytes());
        }
        infos.extend(ty.to_le_bytes());
        infos.extend((data.len() as u64).to_le_bytes());
        data.extend(encoded);
    }
    let mut out = Vec::with_capacity(data_start + data.len());
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend(n_tensors.to_le_bytes());
    out.extend(n_kv.to_le_bytes());
    out.extend(meta);
    out.extend(infos);
    out.resize(out.len().next_multiple_of(alignment as usize), 0);
    out.extend(data);
    let mut file =
        std::fs::File::create(output).map_err(|e| format!("{}: {e}", output.display()))?;
    file.write_all(&out)
        .map_err(|e| format!("{}: {e}", output.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_q4_1_block_becomes_the_nearest_q8_0_block() {
        // d = 0.5, m = -4: weights -4 + 0.5 q for q = 0..15 (low nibbles), 15 - q (high).
        let mut block = Vec::new();
        block.extend(f16::from_f32(0.5).to_le_bytes());
        block.extend(f16::from_f32(-4.0).to_le_bytes());
        for j in 0..16u8 {
            block.push(j | ((15 - j) << 4));
        }
        let q8 = q4_1_to_q8_0_blocks(&block);
        assert_eq!(q8.len(), 34);
        // max |w| = 4 (q = 0) → d8 = 4 / 127; w = -4 → -127, w = 3.5 → round(3.5 · 127 / 4) = 111
        let d8 = f16::from_le_bytes([q8[0], q8[1]]).to_f32();
        assert!((d8 - 4.0 / 127.0).abs() < 1e-4);
        assert_eq!(q8[2] as i8, -127);
        assert_eq!(q8[2 + 15] as i8, 111);
        assert_eq!(q8[2 + 16] as i8, 111); // high nibble of byte 0: q = 15
        for (j, &code) in q8[2..].iter().enumerate() {
            let q = if j < 16 { j } else { 31 - j } as f32;
            let w = -4.0 + 0.5 * q;
            assert!(
                ((code as i8) as f32 * d8 - w).abs() <= d8 / 2.0 + 1e-3,
                "{j}"
            );
        }
    }
}
