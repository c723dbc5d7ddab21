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

/// The attention parameters of [`attention_composed`].
#[derive(Debug, Clone, Copy)]
pub struct AttnSpec {
    pub heads: i32,
    pub kv_heads: i32,
    pub head_dim: i32,
    pub scale: f32,
    /// Epsilon of the per-head norms.
    pub eps: f32,
    pub window: Option<i32>,
    pub softcap: Option<f32>,
}

/// One cached-attention step composed from MLX's ops (call with native ops off for MLX's own
/// kernels): `qkv` `[B, L, (H + 2 Hkv) D]` split into heads, the optional per-head RMS norms
/// (`fast::rms_norm`), rotate-half RoPE with the frequencies `inv_freq` (`fast::rope` with
/// `freqs = 1 / inv_freq`) at `offset`, the new keys and values written at positions
/// `offset..offset + L` of the *linear* caches `k_lin` / `v_lin` (`[B, Hkv, capacity, D]`,
/// slot = position, `slice_update`), scores `scale · q kᵀ` over positions `0..offset + L`
/// (`matmul`), soft-capped (`c · tanh(s / c)`), masked to the positions each query sees
/// (`j <= i` and, with a window `w`, `i - j < w`; `where_` with `-inf`), `softmax`, times the
/// values. Returns the output `[B, L, H D]` and the updated linear caches.
#[allow(clippy::too_many_arguments)]
pub fn attention_composed(
    qkv: &Array,
    k_lin: &Array,
    v_lin: &Array,
    inv_freq: &Array,
    q_norm: Option<&Array>,
    k_norm: Option<&Array>,
    spec: AttnSpec,
    offset: i32,
) -> (Array, Array, Array) {
    use mlx_rs::{fast, ops::where_, s};
    let shape = qkv.shape();
    let (b, l) = (shape[0], shape[1]);
    let (h, hkv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    let g = h / hkv;
    let x = qkv.reshape(&[b, l, h + 2 * hkv, d]).unwrap();
    let parts = x.split_at(&[h, h + hkv], 2).unwrap();
    let heads = |a: &Array| a.transpose(&[0, 2, 1, 3]).unwrap(); // [B, heads, L, D]
    let (mut q, mut k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
    if let Some(w) = q_norm {
        q = fast::rms_norm(&q, Some(w), spec.eps).unwrap();
    }
    if let Some(w) = k_norm {
        k = fast::rms_norm(&k, Some(w), spec.eps).unwrap();
    }
    let freqs = inv_freq.reciprocal().unwrap();
    let q = fast::rope(&q, d, false, None, 1.0, offset, Some(&freqs)).unwrap();
    let k = fast::rope(&k, d, false, None, 1.0, offset, Some(&freqs)).unwrap();
    let (start, stop) = ([0, 0, offset, 0], [b, hkv, offset + l, d]);
    let k_lin = k_lin.slice_update(&k, &start, &stop, &[1; 4]).unwrap();
    let v_lin = v_lin.slice_update(&v, &start, &stop, &[1; 4]).unwrap();
    let t = offset + l;
    let keys = k_lin.slice(s![.., .., ..t, ..]).unwrap();
    let values = v_lin.slice(s![.., .., ..t, ..]).unwrap();
    // Query head j·g + i uses key/value head j: the group's rows are contiguous.
    let qg = q
        .reshape(&[b, hkv, g * l, d])
        .unwrap()
        .multiply(&Array::scalar(spec.scale))
        .unwrap();
    let mut scores = qg.matmul(&keys.transpose(&[0, 1, 3, 2]).unwrap()).unwrap();
    if let Some(c) = spec.softcap {
        let c = Array::scalar(c);
        scores = scores
            .divide(&c)
            .unwrap()
            .tanh()
            .unwrap()
            .multiply(&c)
            .unwrap();
    }
    let mut visible = Vec::with_capacity((g * l * t) as usize);
    for r in 0..g * l {
        let i = offset + r % l;
        for j in 0..t {
            visible.push(j <= i && spec.window.is_none_or(|w| i - j < w));
        }
    }
    let mask = Array::from_slice(&visible, &[g * l, t]).unwrap();
    let scores = where_(&mask, &scores, &Array::scalar(f32::NEG_INFINITY)).unwrap();
    let p = scores.softmax(-1, true).unwrap();
    let o = p
        .matmul(&values)
        .unwrap()
        .reshape(&[b, h, l, d])
        .unwrap()
        .transpose(&[0, 2, 1, 3])
        .unwrap()
        .reshape(&[b, l, h * d])
        .unwrap();
    (o, k_lin, v_lin)
}
