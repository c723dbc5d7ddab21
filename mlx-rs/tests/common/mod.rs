//! Helpers shared by the test binaries: a deterministic data generator and quantized weights
//! with an f64 unpacking of the packed words done here in Rust (independent of the kernels
//! under test). Not every binary uses every helper.
#![allow(dead_code)]

use mlx_rs::{quant, Array, Dtype};

/// Deterministic pseudo-random values in [-1, 1) (a 64-bit LCG). Every step is exact in f32
/// (a 24-bit integer scaled by powers of two), so the values do not depend on the precision
/// the arithmetic is done in.
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The values of an array, as f32.
pub fn f32s(a: &Array) -> Vec<f32> {
    a.astype(Dtype::Float32).unwrap().to_vec::<f32>().unwrap()
}

/// Weights `[n, k]` quantized by MLX (affine, transposed layout).
pub struct Quantized {
    pub wq: Array,
    pub scales: Array,
    pub biases: Array,
    pub n: usize,
    pub k: usize,
    pub bits: i32,
    pub group: i32,
}

/// Quantizes the float weights `w` (`[n, k]`) after a cast to `sb`, the dtype the scales and
/// biases come out in.
pub fn quantize_weights(w: &Array, bits: i32, group: i32, sb: Dtype) -> Quantized {
    let shape = w.shape();
    assert_eq!(shape.len(), 2, "weights are [n, k]");
    let w = w.astype(sb).unwrap();
    let (wq, scales, biases) = quant::quantize(&w, group, bits).unwrap();
    assert_eq!(scales.dtype(), sb);
    Quantized {
        wq,
        scales,
        biases,
        n: shape[0] as usize,
        k: shape[1] as usize,
        bits,
        group,
    }
}

/// The codes `[n, k]` of `q`, unpacked here: the codes of each row are a little-endian bit
/// stream over the uint32 words (3 bits cross word boundaries).
pub fn codes_f64(q: &Quantized) -> Vec<f64> {
    let words = q.wq.to_vec::<u32>().unwrap();
    let bits = q.bits as usize;
    let mask = (1u64 << bits) - 1;
    let mut out = vec![0f64; q.n * q.k];
    for r in 0..q.n {
        let row = r * q.k * bits / 32;
        for c in 0..q.k {
            let bit = c * bits;
            let lo = words[row + bit / 32] as u64;
            let hi = words.get(row + bit / 32 + 1).map_or(0, |&v| v as u64);
            out[r * q.k + c] = (((hi << 32 | lo) >> (bit % 32)) & mask) as f64;
        }
    }
    out
}

/// The weights `[n, k]` in f64: value = scale·q + bias, with the codes of [`codes_f64`].
/// Also, per element, |scale·q| + |bias| (for tolerances).
pub fn dequant_f64_with_mag(q: &Quantized) -> (Vec<f64>, Vec<f64>) {
    let codes = codes_f64(q);
    let s = f32s(&q.scales);
    let b = f32s(&q.biases);
    let ng = q.k / q.group as usize;
    let mut out = vec![0f64; q.n * q.k];
    let mut mag = vec![0f64; q.n * q.k];
    for r in 0..q.n {
        for c in 0..q.k {
            let code = codes[r * q.k + c];
            let g = r * ng + c / q.group as usize;
            out[r * q.k + c] = s[g] as f64 * code + b[g] as f64;
            mag[r * q.k + c] = (s[g] as f64 * code).abs() + (b[g] as f64).abs();
        }
    }
    (out, mag)
}

/// The weights `[n, k]` in f64 (see [`dequant_f64_with_mag`]).
pub fn dequant_f64(q: &Quantized) -> Vec<f64> {
    dequant_f64_with_mag(q).0
}

/// [`dequant_f64`], and a check that the unpacking agrees with MLX's own dequantize (a check
/// of this reference only; MLX computes in the scales' dtype: two roundings of the terms).
pub fn dequant_f64_checked(q: &Quantized) -> Vec<f64> {
    let (out, mag) = dequant_f64_with_mag(q);
    let rel = match q.scales.dtype() {
        Dtype::Float16 => 2.0 / 1024.0,
        Dtype::Bfloat16 => 2.0 / 128.0,
        _ => 1e-6,
    };
    let mlx = f32s(&quant::dequantize(&q.wq, &q.scales, &q.biases, q.group, q.bits).unwrap());
    for (i, ((&a, &b), &m)) in out.iter().zip(&mlx).zip(&mag).enumerate() {
        assert!((a - b as f64).abs() <= rel * m, "dequant {i}: {a} vs {b}");
    }
    out
}
