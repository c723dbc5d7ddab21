//! Tests of `mlx_rs::fast`, `mlx_rs::quant` and `mlx_rs::random`.
//!
//! Expected values of the fused kernels and of the quantized format come from
//! `scripts/fixtures/fast_quant.py` (plain numpy, written from the definitions).

use mlx_rs::fast::{self, AttentionMask};
use mlx_rs::{quant, random, Array, Dtype, Error};
use serde_json::Value;
use std::sync::OnceLock;

fn fixture() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/fast_quant.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
    })
}

fn shape_of(v: &Value) -> Vec<i32> {
    v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_i64().unwrap() as i32)
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn array(v: &Value) -> Array {
    Array::from_slice(&floats(v), &shape_of(v)).unwrap()
}

fn packed(v: &Value) -> Array {
    let data: Vec<u32> = ints(&v["data"]).into_iter().map(|x| x as u32).collect();
    Array::from_slice(&data, &shape_of(v)).unwrap()
}

fn u32s(v: &Value) -> Array {
    let data: Vec<u32> = ints(v).into_iter().map(|x| x as u32).collect();
    let n = data.len() as i32;
    Array::from_slice(&data, &[n]).unwrap()
}

/// Asserts `got` has `want`'s shape and values within `atol + rtol * |want|`.
#[track_caller]
fn assert_close(got: &Array, want: &Value, rtol: f32, atol: f32) {
    assert_eq!(got.shape(), shape_of(want), "shape");
    let g = got.to_vec::<f32>().unwrap();
    let w = floats(want);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= atol + rtol * b.abs(),
            "element {i}: got {a}, want {b}"
        );
    }
}

// ------------------------------------------------------------------------------ fast

#[test]
fn rms_norm_matches_numpy() {
    let f = &fixture()["rms_norm"];
    let x = array(&f["x"]);
    let w = array(&f["w"]);
    let eps = f["eps"].as_f64().unwrap() as f32;
    assert_close(
        &fast::rms_norm(&x, Some(&w), eps).unwrap(),
        &f["with_weight"],
        1e-5,
        1e-6,
    );
    assert_close(
        &fast::rms_norm(&x, None, eps).unwrap(),
        &f["no_weight"],
        1e-5,
        1e-6,
    );
}

#[test]
fn layer_norm_matches_numpy() {
    let f = &fixture()["layer_norm"];
    let (x, w, b) = (array(&f["x"]), array(&f["w"]), array(&f["b"]));
    let eps = f["eps"].as_f64().unwrap() as f32;
    let both = fast::layer_norm(&x, Some(&w), Some(&b), eps).unwrap();
    assert_close(&both, &f["both"], 1e-5, 1e-5);
    let wo = fast::layer_norm(&x, Some(&w), None, eps).unwrap();
    assert_close(&wo, &f["weight_only"], 1e-5, 1e-5);
    assert_close(
        &fast::layer_norm(&x, None, None, eps).unwrap(),
        &f["none"],
        1e-5,
        1e-5,
    );
}

#[test]
fn norms_reject_bad_parameters() {
    let x = Array::zeros(&[2, 4], Dtype::Float32).unwrap();
    let w3 = Array::ones(&[3], Dtype::Float32).unwrap();
    let w24 = Array::ones(&[2, 4], Dtype::Float32).unwrap();
    let w4 = Array::ones(&[4], Dtype::Float32).unwrap();
    assert!(matches!(
        fast::rms_norm(&x, Some(&w3), 1e-5),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        fast::rms_norm(&x, Some(&w24), 1e-5),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        fast::layer_norm(&x, Some(&w4), Some(&w3), 1e-5),
        Err(Error::Shape(_))
    ));
    let scalar = Array::scalar(1.0f32);
    assert!(matches!(
        fast::rms_norm(&scalar, None, 1e-5),
        Err(Error::Shape(_))
    ));
    // The process goes on and valid calls still work.
    assert_eq!(
        fast::rms_norm(&x, Some(&w4), 1e-5).unwrap().shape(),
        vec![2, 4]
    );
}

#[test]
fn rope_matches_numpy_in_both_layouts() {
    let f = &fixture()["rope"];
    let x = array(&f["x"]);
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for c in cases {
        let dims = c["dims"].as_i64().unwrap() as i32;
        let trad = c["traditional"].as_bool().unwrap();
        let base = c["base"].as_f64().unwrap() as f32;
        let scale = c["scale"].as_f64().unwrap() as f32;
        let offset = c["offset"].as_i64().unwrap() as i32;
        let y = fast::rope(&x, dims, trad, Some(base), scale, offset, None).unwrap();
        assert_close(&y, &c["expected"], 1e-5, 1e-5);
        // The offset as an array gives the same values.
        let off = Array::scalar(offset);
        let y = fast::rope_dynamic(&x, dims, trad, Some(base), scale, &off, None).unwrap();
        assert_close(&y, &c["expected"], 1e-5, 1e-5);
    }
}

#[test]
fn rope_with_explicit_frequencies() {
    let f = &fixture()["rope"];
    let x = array(&f["x"]);
    let freqs = array(&f["freqs"]);
    let y = fast::rope(&x, 16, false, None, 1.0, 2, Some(&freqs)).unwrap();
    assert_close(&y, &f["freqs_expected"], 1e-5, 1e-5);
}

#[test]
fn rope_rejects_bad_arguments() {
    let x = Array::zeros(&[1, 4, 8], Dtype::Float32).unwrap();
    let freqs = Array::ones(&[4], Dtype::Float32).unwrap();
    let freqs3 = Array::ones(&[3], Dtype::Float32).unwrap();
    let inv = |r: mlx_rs::Result<Array>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(inv(fast::rope(&x, 3, false, Some(1e4), 1.0, 0, None)));
    assert!(inv(fast::rope(&x, 10, false, Some(1e4), 1.0, 0, None)));
    assert!(inv(fast::rope(&x, 0, false, Some(1e4), 1.0, 0, None)));
    assert!(inv(fast::rope(&x, 8, false, None, 1.0, 0, None)));
    assert!(inv(fast::rope(
        &x,
        8,
        false,
        Some(1e4),
        1.0,
        0,
        Some(&freqs)
    )));
    assert!(matches!(
        fast::rope(&x, 8, false, None, 1.0, 0, Some(&freqs3)),
        Err(Error::Shape(_))
    ));
    let x2 = Array::zeros(&[4, 8], Dtype::Float32).unwrap();
    assert!(matches!(
        fast::rope(&x2, 8, false, Some(1e4), 1.0, 0, None),
        Err(Error::Shape(_))
    ));
    assert!(fast::rope(&x, 8, false, None, 1.0, 0, Some(&freqs)).is_ok());
}

#[test]
fn attention_matches_numpy_with_gqa_and_masks() {
    let f = &fixture()["sdpa"];
    let (q, k, v) = (array(&f["q"]), array(&f["k"]), array(&f["v"]));
    // Grouped-query: 4 query heads over 2 key/value heads.
    assert_eq!((q.shape()[1], k.shape()[1]), (4, 2));
    let scale = f["scale"].as_f64().unwrap() as f32;
    let sdpa = |m| fast::scaled_dot_product_attention(&q, &k, &v, scale, m).unwrap();
    assert_close(&sdpa(AttentionMask::None), &f["none"], 1e-5, 1e-5);
    assert_close(&sdpa(AttentionMask::Causal), &f["causal"], 1e-5, 1e-5);
    let add = array(&f["add_mask"]);
    assert_close(
        &sdpa(AttentionMask::Array(&add)),
        &f["additive"],
        1e-5,
        1e-5,
    );
    let keep: Vec<bool> = f["keep_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_bool().unwrap())
        .collect();
    let keep_shape: Vec<i32> = ints(&f["keep_shape"]).iter().map(|&d| d as i32).collect();
    let keep = Array::from_slice(&keep, &keep_shape).unwrap();
    assert_close(
        &sdpa(AttentionMask::Array(&keep)),
        &f["boolean"],
        1e-5,
        1e-5,
    );

    let (q, k, v) = (array(&f["q_sq"]), array(&f["k_sq"]), array(&f["v_sq"]));
    let y = fast::scaled_dot_product_attention(&q, &k, &v, 0.7, AttentionMask::Causal).unwrap();
    assert_close(&y, &f["causal_sq"], 1e-5, 1e-5);
}

#[test]
fn attention_rejects_bad_shapes() {
    let z = |s: &[i32]| Array::zeros(s, Dtype::Float32).unwrap();
    let shape_err = |q: &Array, k: &Array, v: &Array| {
        matches!(
            fast::scaled_dot_product_attention(q, k, v, 1.0, AttentionMask::None),
            Err(Error::Shape(_))
        )
    };
    // 3-D operands
    assert!(shape_err(&z(&[2, 3, 4]), &z(&[2, 3, 4]), &z(&[2, 3, 4])));
    // 3 query heads over 2 kv heads
    assert!(shape_err(
        &z(&[1, 3, 2, 4]),
        &z(&[1, 2, 2, 4]),
        &z(&[1, 2, 2, 4])
    ));
    // head dims differ between q and k
    assert!(shape_err(
        &z(&[1, 2, 2, 4]),
        &z(&[1, 2, 2, 8]),
        &z(&[1, 2, 2, 8])
    ));
    // k and v lengths differ
    assert!(shape_err(
        &z(&[1, 2, 2, 4]),
        &z(&[1, 2, 3, 4]),
        &z(&[1, 2, 5, 4])
    ));
    // batch differs
    assert!(shape_err(
        &z(&[2, 2, 2, 4]),
        &z(&[1, 2, 2, 4]),
        &z(&[1, 2, 2, 4])
    ));
    // A mask that does not broadcast is refused by MLX, as an error.
    let (q, k) = (z(&[1, 2, 2, 4]), z(&[1, 2, 3, 4]));
    let bad = z(&[5, 7]);
    let r = fast::scaled_dot_product_attention(&q, &k, &k, 1.0, AttentionMask::Array(&bad));
    assert!(r.is_err());
    // A value head dimension different from the query's is fine.
    let v = z(&[1, 2, 3, 6]);
    let y = fast::scaled_dot_product_attention(&q, &k, &v, 1.0, AttentionMask::Causal).unwrap();
    assert_eq!(y.shape(), vec![1, 2, 2, 6]);
}

// ------------------------------------------------------------------------------ quant

fn qparams(c: &Value) -> (i32, i32) {
    (
        c["group_size"].as_i64().unwrap() as i32,
        c["bits"].as_i64().unwrap() as i32,
    )
}

#[test]
fn dequantize_and_qmm_match_hand_packed_weights() {
    let cases = fixture()["quant"]["dequantize"].as_array().unwrap();
    assert_eq!(cases.len(), 18); // bits 2,3,4,5,6,8 × groups 32,64,128
    for c in cases {
        let (group, bits) = qparams(c);
        let (w, s, b) = (
            packed(&c["packed"]),
            array(&c["scales"]),
            array(&c["biases"]),
        );
        let d = quant::dequantize(&w, &s, &b, group, bits).unwrap();
        assert_close(&d, &c["dequantized"], 1e-6, 1e-6);
        let x = array(&c["x"]);
        let y = quant::quantized_matmul(&x, &w, &s, &b, true, group, bits).unwrap();
        assert_close(&y, &c["x_wt"], 1e-5, 1e-5);
    }
}

#[test]
fn quantized_matmul_without_transpose() {
    let c = &fixture()["quant"]["no_transpose"];
    let (group, bits) = qparams(c);
    let (w, s, b) = (
        packed(&c["packed"]),
        array(&c["scales"]),
        array(&c["biases"]),
    );
    let x = array(&c["x"]);
    let y = quant::quantized_matmul(&x, &w, &s, &b, false, group, bits).unwrap();
    assert_close(&y, &c["x_w"], 1e-5, 1e-5);
    // With transpose the same x (64 features) does not fit a weight of 128 quantized columns.
    assert!(matches!(
        quant::quantized_matmul(&x, &w, &s, &b, true, group, bits),
        Err(Error::Shape(_))
    ));
}

#[test]
fn gather_qmm_picks_experts() {
    let c = &fixture()["quant"]["gather"];
    let (group, bits) = qparams(c);
    let (w, s, b) = (
        packed(&c["packed"]),
        array(&c["scales"]),
        array(&c["biases"]),
    );
    let x = array(&c["x"]);
    let rhs = u32s(&c["rhs_indices"]);
    let y = quant::gather_qmm(&x, &w, &s, &b, None, Some(&rhs), true, group, bits, false).unwrap();
    assert_close(&y, &c["expected"], 1e-5, 1e-5);
    let lhs = u32s(&c["lhs_indices"]);
    let rhs2 = u32s(&c["rhs_indices2"]);
    let y = quant::gather_qmm(
        &x,
        &w,
        &s,
        &b,
        Some(&lhs),
        Some(&rhs2),
        true,
        group,
        bits,
        false,
    )
    .unwrap();
    assert_close(&y, &c["expected2"], 1e-5, 1e-5);
    let float_idx = Array::from_slice(&[0.0f32; 4], &[4]).unwrap();
    assert!(matches!(
        quant::gather_qmm(
            &x,
            &w,
            &s,
            &b,
            None,
            Some(&float_idx),
            true,
            group,
            bits,
            false
        ),
        Err(Error::InvalidArgument(_))
    ));
}

/// Unpacks `bits`-bit codes from little-endian bit-stream `uint32` rows (independent of MLX).
fn unpack(words: &[u32], words_per_row: usize, bits: usize) -> Vec<i64> {
    let per_row = words_per_row * 32 / bits;
    let mut out = Vec::new();
    for row in words.chunks(words_per_row) {
        for j in 0..per_row {
            let (wi, sh) = ((j * bits) / 32, (j * bits) % 32);
            let mut v = (row[wi] as u64) >> sh;
            if sh + bits > 32 {
                v |= (row[wi + 1] as u64) << (32 - sh);
            }
            out.push((v & ((1u64 << bits) - 1)) as i64);
        }
    }
    out
}

#[test]
fn quantize_follows_mlx_affine_rule() {
    let cases = fixture()["quant"]["quantize"].as_array().unwrap();
    for c in cases {
        let (group, bits) = qparams(c);
        let w = array(&c["w"]);
        let (wq, s, b) = quant::quantize(&w, group, bits).unwrap();
        let words_per_row = 256 * bits as usize / 32;
        assert_eq!(wq.shape(), vec![2, words_per_row as i32]);
        assert_eq!(wq.dtype(), Dtype::Uint32);
        assert_close(&s, &c["scales"], 1e-6, 0.0);
        assert_close(&b, &c["biases"], 1e-6, 0.0);
        let codes = unpack(&wq.to_vec::<u32>().unwrap(), words_per_row, bits as usize);
        let want = ints(&c["codes"]);
        // Codes may differ by one where a value sits on a rounding boundary (f32 ties).
        let off: Vec<_> = codes.iter().zip(&want).filter(|(a, b)| a != b).collect();
        assert!(
            off.iter().all(|(a, b)| (*a - *b).abs() == 1),
            "{bits} bits: {off:?}"
        );
        assert!(
            off.len() <= 2,
            "{bits} bits, group {group}: {} codes differ",
            off.len()
        );
        // Round trip: the values the codes stand for, within one step of the original.
        let back = quant::dequantize(&wq, &s, &b, group, bits).unwrap();
        assert_close(&back, &c["reconstructed"], 1e-6, 1e-6);
        let back = back.to_vec::<f32>().unwrap();
        let step = floats(&c["step"]);
        let orig = floats(&c["w"]);
        for (i, (x, y)) in back.iter().zip(&orig).enumerate() {
            let h = step[i / group as usize];
            assert!((x - y).abs() <= h, "element {i}: {x} vs {y}");
        }
    }
}

#[test]
fn quant_rejects_bad_parameters() {
    let w = Array::zeros(&[2, 128], Dtype::Float32).unwrap();
    for bits in [1, 7, 9, 16] {
        assert!(matches!(
            quant::quantize(&w, 64, bits),
            Err(Error::InvalidArgument(_))
        ));
    }
    for group in [16, 48, 256] {
        assert!(matches!(
            quant::quantize(&w, group, 4),
            Err(Error::InvalidArgument(_))
        ));
    }
    let v = Array::zeros(&[128], Dtype::Float32).unwrap();
    assert!(matches!(quant::quantize(&v, 64, 4), Err(Error::Shape(_))));
    let odd = Array::zeros(&[2, 96], Dtype::Float32).unwrap();
    assert!(matches!(quant::quantize(&odd, 64, 4), Err(Error::Shape(_))));
    let ints = Array::zeros(&[2, 128], Dtype::Int32).unwrap();
    assert!(quant::quantize(&ints, 64, 4).is_err());

    let (wq, s, b) = quant::quantize(&w, 64, 4).unwrap();
    assert_eq!(wq.shape(), vec![2, 16]);
    // Scales of the wrong shape, a float "packed" weight, mismatched bits.
    let s_bad = Array::zeros(&[2, 1], Dtype::Float32).unwrap();
    assert!(matches!(
        quant::dequantize(&wq, &s_bad, &b, 64, 4),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        quant::dequantize(&w, &s, &b, 64, 4),
        Err(Error::DtypeMismatch { .. })
    ));
    assert!(matches!(
        quant::dequantize(&wq, &s, &b, 64, 8),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        quant::dequantize(&wq, &s, &b, 64, 7),
        Err(Error::InvalidArgument(_))
    ));
    let x = Array::zeros(&[3, 100], Dtype::Float32).unwrap();
    assert!(matches!(
        quant::quantized_matmul(&x, &wq, &s, &b, true, 64, 4),
        Err(Error::Shape(_))
    ));
    let x = Array::ones(&[3, 128], Dtype::Float32).unwrap();
    let y = quant::quantized_matmul(&x, &wq, &s, &b, true, 64, 4).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0; 6]);
}

// ------------------------------------------------------------------------------ random

#[test]
fn keys_make_samplers_reproducible() {
    let k = random::key(123).unwrap();
    let a = random::normal(&[64], Dtype::Float32, 0.0, 1.0, Some(&k)).unwrap();
    let b = random::normal(&[64], Dtype::Float32, 0.0, 1.0, Some(&k)).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    let k2 = random::key(124).unwrap();
    let c = random::normal(&[64], Dtype::Float32, 0.0, 1.0, Some(&k2)).unwrap();
    assert_ne!(a.to_vec::<f32>().unwrap(), c.to_vec::<f32>().unwrap());

    let (s1, s2) = random::split(&k).unwrap();
    let keys = random::split_n(&k, 4).unwrap();
    assert_eq!(keys.len(), 4);
    let mut seen: Vec<Vec<u32>> = vec![k.to_vec().unwrap(), s1.to_vec().unwrap()];
    seen.push(s2.to_vec().unwrap());
    for key in &keys {
        assert_eq!(key.shape(), vec![2]);
        seen.push(key.to_vec().unwrap());
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    // split(k) and split_n(k, 2) may coincide; the rest are distinct.
    assert!(dedup.len() >= 6, "{seen:?}");
    for key in &keys[1..] {
        let x = random::uniform(0.0, 1.0, &[16], Dtype::Float32, Some(key)).unwrap();
        let y = random::uniform(0.0, 1.0, &[16], Dtype::Float32, Some(&keys[0])).unwrap();
        assert_ne!(x.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap());
    }

    random::seed(77).unwrap();
    let g1 = random::uniform(0.0, 1.0, &[8], Dtype::Float32, None).unwrap();
    let g1 = g1.to_vec::<f32>().unwrap();
    random::seed(77).unwrap();
    let g2 = random::uniform(0.0, 1.0, &[8], Dtype::Float32, None).unwrap();
    assert_eq!(g1, g2.to_vec::<f32>().unwrap());
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn normal_moments() {
    let k = random::key(2024).unwrap();
    let v = random::normal(&[100_000], Dtype::Float32, 0.0, 1.0, Some(&k))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let (m, s) = mean_std(&v);
    assert!(m.abs() < 0.02, "mean {m}");
    assert!((s - 1.0).abs() < 0.02, "std {s}");
    let v = random::normal(&[100_000], Dtype::Float32, 3.0, 2.0, Some(&k))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let (m, s) = mean_std(&v);
    assert!((m - 3.0).abs() < 0.04, "mean {m}");
    assert!((s - 2.0).abs() < 0.04, "std {s}");
}

#[test]
fn uniform_range_and_moments() {
    let k = random::key(5).unwrap();
    let v = random::uniform(-3.0, 5.0, &[100_000], Dtype::Float32, Some(&k))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert!(v.iter().all(|x| (-3.0..5.0).contains(x)));
    let (m, s) = mean_std(&v);
    assert!((m - 1.0).abs() < 0.05, "mean {m}");
    assert!((s - 8.0 / 12f64.sqrt()).abs() < 0.05, "std {s}");
    let b = random::uniform(0.0, 1.0, &[10, 20], Dtype::Float16, Some(&k)).unwrap();
    assert_eq!((b.shape(), b.dtype()), (vec![10, 20], Dtype::Float16));
}

#[test]
fn categorical_frequencies() {
    let k = random::key(11).unwrap();
    let dominant = Array::from_slice(&[0.0f32, 30.0, 0.0, 0.0], &[4]).unwrap();
    let c = random::categorical_n(&dominant, 0, 10_000, Some(&k)).unwrap();
    assert_eq!(c.shape(), vec![10_000]);
    assert!(c.to_vec::<u32>().unwrap().iter().all(|&i| i == 1));

    let even = Array::from_slice(&[0.5f32, 0.5, -1e9], &[1, 3]).unwrap();
    let c = random::categorical_n(&even, -1, 10_000, Some(&k)).unwrap();
    assert_eq!(c.shape(), vec![1, 10_000]);
    let c = c.to_vec::<u32>().unwrap();
    assert!(c.iter().all(|&i| i < 2));
    let zeros = c.iter().filter(|&&i| i == 0).count();
    assert!(
        (4500..=5500).contains(&zeros),
        "{zeros} of 10000 picked class 0"
    );

    // One sample per row, along axis 0 (columns are the distributions).
    let cols = Array::from_slice(&[0.0f32, -1e9, -1e9, 0.0], &[2, 2]).unwrap();
    let c = random::categorical(&cols, 0, Some(&k)).unwrap();
    assert_eq!(c.to_vec::<u32>().unwrap(), vec![0, 1]);
}

#[test]
fn bernoulli_and_randint() {
    let k = random::key(8).unwrap();
    let p = Array::scalar(0.25f32);
    let b = random::bernoulli(&p, &[20_000], Some(&k)).unwrap();
    assert_eq!(b.dtype(), Dtype::Bool);
    let ones = b.to_vec::<bool>().unwrap().iter().filter(|&&x| x).count();
    assert!((4500..=5500).contains(&ones), "{ones}");

    let r = random::randint(-2, 3, &[10_000], Dtype::Int32, Some(&k)).unwrap();
    let r = r.to_vec::<i32>().unwrap();
    for v in -2..3 {
        let n = r.iter().filter(|&&x| x == v).count();
        assert!((1700..=2300).contains(&n), "{v}: {n}");
    }
    assert!(r.iter().all(|x| (-2..3).contains(x)));
}

#[test]
fn random_rejects_bad_arguments() {
    let f_key = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    let long_key = Array::from_slice(&[1u32, 2, 3], &[3]).unwrap();
    assert!(matches!(
        random::normal(&[2], Dtype::Float32, 0.0, 1.0, Some(&f_key)),
        Err(Error::DtypeMismatch { .. })
    ));
    assert!(matches!(random::split(&long_key), Err(Error::Shape(_))));
    assert!(matches!(
        random::uniform(0.0, 1.0, &[-1], Dtype::Float32, None),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        random::uniform(0.0, 1.0, &[2], Dtype::Int32, None),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        random::randint(0, 3, &[2], Dtype::Float32, None),
        Err(Error::InvalidArgument(_))
    ));
    let logits = Array::zeros(&[2, 3], Dtype::Float32).unwrap();
    assert!(matches!(
        random::categorical(&logits, -3, None),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        random::categorical_n(&logits, 1, 0, None),
        Err(Error::InvalidArgument(_))
    ));
    assert!(random::categorical(&logits, 1, None).is_ok());
}
