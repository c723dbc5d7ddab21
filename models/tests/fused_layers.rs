//! `Linear::forward_fused` (norm prologue, residual epilogue) and `FusedLinear::forward_joined`
//! followed by `split`, against the same layers' plain ops composed by hand. Layers are built
//! through the public loading API (`Linear::load`, `RmsNorm::load` from a `Weights` map): the
//! direct constructors `Linear::from_quantized` and `from_dense_transposed` are crate-private.
use mlx_models::config::QuantizationConfig;
use mlx_models::load::BuildOptions;
use mlx_models::nn::{FusedLinear, Linear, RmsNorm};
use mlx_models::weights::Weights;
use mlx_rs::{quant, random, sys, Array, Dtype};
use std::sync::Mutex;

/// The native-kernel call counter is process-wide: the tests that read it take turns.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    quant::set_native_qmm(true);
    g
}

fn native_count() -> u64 {
    // SAFETY: no arguments.
    unsafe { sys::native_qmm::mlxrs_qmm_native_count() }
}

const IN: i32 = 128;

/// `Some((group_size, bits, scales dtype))` for a quantized layer, `None` for a dense one.
type Quant = Option<(i32, i32, Dtype)>;
/// A part of a `FusedLinear`: its storage and whether it has a bias.
type Kind = (Quant, bool);
const EPS: f32 = 1e-5;

fn uniform(shape: &[i32], low: f32, high: f32, seed: u64) -> Array {
    let key = random::key(seed).unwrap();
    random::uniform(low, high, shape, Dtype::Float32, Some(&key)).unwrap()
}

fn options(group_size: i32, bits: i32) -> BuildOptions {
    let q = QuantizationConfig::from_value(
        &serde_json::json!({"group_size": group_size, "bits": bits}),
    )
    .unwrap();
    BuildOptions {
        huge_pages: false,
        dtype: Dtype::Float32,
        quantization: Some(q),
    }
}

/// Puts `<path>.weight` (quantized to `<path>.{weight,scales,biases}` when `quantized`, with
/// scales of dtype `sb`) and `<path>.bias` when `bias` into `w`.
fn insert_linear(w: &mut Weights, path: &str, out: i32, quantized: Quant, bias: bool, seed: u64) {
    let dense = uniform(&[out, IN], -1.0, 1.0, seed);
    match quantized {
        Some((group, bits, sb)) => {
            let (wq, s, b) = quant::quantize(&dense.astype(sb).unwrap(), group, bits).unwrap();
            w.insert(format!("{path}.weight"), wq);
            w.insert(format!("{path}.scales"), s);
            w.insert(format!("{path}.biases"), b);
        }
        None => w.insert(format!("{path}.weight"), dense),
    }
    if bias {
        w.insert(format!("{path}.bias"), uniform(&[out], -0.5, 0.5, seed + 1));
    }
}

fn linear(out: i32, quantized: Quant, bias: bool, seed: u64) -> Linear {
    let (group, bits) = quantized.map_or((64, 4), |(g, b, _)| (g, b));
    let mut w = Weights::default();
    insert_linear(&mut w, "p", out, quantized, bias, seed);
    let lin = Linear::load(&mut w, "p", IN, out, bias, &options(group, bits)).unwrap();
    w.finish().unwrap();
    assert_eq!(lin.is_quantized(), quantized.is_some());
    lin
}

fn norm(seed: u64) -> RmsNorm {
    let mut w = Weights::default();
    w.insert("n.weight", uniform(&[IN], 0.5, 1.5, seed));
    let n = RmsNorm::load(&mut w, "n", IN, EPS, &options(64, 4)).unwrap();
    w.finish().unwrap();
    n
}

fn f32s(a: &Array) -> Vec<f32> {
    a.astype(Dtype::Float32).unwrap().to_vec::<f32>().unwrap()
}

/// Same shape, and row by row ‖a − b‖₂ ≤ rel·‖b‖₂ (rel = 0: bitwise equal).
fn assert_close(a: &Array, b: &Array, rel: f64, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    assert_eq!(a.dtype(), b.dtype(), "{what}: dtype");
    let (av, bv) = (f32s(a), f32s(b));
    if rel == 0.0 {
        assert_eq!(av, bv, "{what}");
        return;
    }
    let n = *b.shape().last().unwrap() as usize;
    for (i, (x, y)) in av.chunks(n).zip(bv.chunks(n)).enumerate() {
        assert!(
            x.iter().all(|v| v.is_finite()),
            "{what}: row {i} not finite"
        );
        let err = x
            .iter()
            .zip(y)
            .map(|(&p, &q)| (p as f64 - q as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let nrm = y.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        assert!(
            err <= rel * nrm + 1e-6,
            "{what}: row {i}: |err| {err}, |row| {nrm}"
        );
    }
}

/// `norm.forward → forward → add`, by hand.
fn by_hand(lin: &Linear, x: &Array, n: Option<&RmsNorm>, r: Option<&Array>) -> Array {
    let xn = match n {
        Some(n) => n.forward(x).unwrap(),
        None => x.clone(),
    };
    let y = lin.forward(&xn).unwrap();
    match r {
        Some(r) => y.add(r).unwrap(),
        None => y,
    }
}

#[test]
fn linear_forward_fused_is_norm_forward_add() {
    let _g = lock();
    let out = 40;
    let rms = norm(7);
    let kinds: [(&str, Quant, bool); 6] = [
        ("q4 g64 f32 no bias", Some((64, 4, Dtype::Float32)), false),
        ("q4 g32 f16 bias", Some((32, 4, Dtype::Float16)), true),
        ("q8 g128 f32 bias", Some((128, 8, Dtype::Float32)), true),
        ("q8 g64 bf16 no bias", Some((64, 8, Dtype::Bfloat16)), false),
        ("dense no bias", None, false),
        ("dense bias", None, true),
    ];
    for (i, (name, quantized, bias)) in kinds.into_iter().enumerate() {
        let lin = linear(out, quantized, bias, 100 + 10 * i as u64);
        for m in [1, 12] {
            for shape in [vec![m, IN], vec![1, m, IN]] {
                let x = uniform(&shape, -3.0, 5.0, 200 + m as u64);
                let mut rshape = shape.clone();
                *rshape.last_mut().unwrap() = out;
                let r = uniform(&rshape, -2.0, 2.0, 300 + m as u64);
                for (n, res) in [
                    (Some(&rms), Some(&r)),
                    (Some(&rms), None),
                    (None, Some(&r)),
                    (None, None),
                ] {
                    let what = format!(
                        "{name}, x {shape:?}, norm {}, residual {}",
                        n.is_some(),
                        res.is_some()
                    );
                    let before = native_count();
                    let got = lin.forward_fused(&x, n, res).unwrap();
                    let native = native_count() > before;
                    // Quantized layers take the native primitive on this CPU (x86-64); dense
                    // ones compose the very same ops.
                    if cfg!(target_arch = "x86_64") {
                        assert_eq!(native, quantized.is_some(), "{what}: native call");
                    }
                    let want = by_hand(&lin, &x, n, res);
                    // The native norm rounds differently from MLX's; the rest is exact.
                    let rel = if quantized.is_some() { 1e-5 } else { 0.0 };
                    assert_close(&got, &want, rel, &what);
                }
            }
        }
    }
}

#[test]
fn linear_forward_fused_with_native_qmm_off_composes() {
    let _g = lock();
    let lin = linear(24, Some((64, 4, Dtype::Float32)), false, 400);
    let rms = norm(401);
    let x = uniform(&[3, IN], -1.0, 1.0, 402);
    let r = uniform(&[3, 24], -1.0, 1.0, 403);
    let on = lin.forward_fused(&x, Some(&rms), Some(&r)).unwrap();
    quant::set_native_qmm(false);
    let off = lin.forward_fused(&x, Some(&rms), Some(&r));
    let want = by_hand(&lin, &x, Some(&rms), Some(&r));
    quant::set_native_qmm(true);
    let off = off.unwrap();
    // With the kernel off, forward_fused is MLX's own ops: exactly the hand composition.
    assert_close(&off, &want, 0.0, "native off");
    assert_close(&on, &off, 1e-5, "native on vs off");
}

fn fused_parts(kinds: &[Kind], widths: &[i32], seed: u64) -> FusedLinear {
    let parts = kinds
        .iter()
        .zip(widths)
        .enumerate()
        .map(|(i, (&(q, bias), &out))| linear(out, q, bias, seed + 10 * i as u64))
        .collect();
    FusedLinear::fuse(parts, widths).unwrap()
}

#[test]
fn fused_linear_forward_joined_and_split_is_forward() {
    let _g = lock();
    let q4 = Some((64, 4, Dtype::Float32));
    let q4h = Some((64, 4, Dtype::Float16));
    let q8 = Some((64, 8, Dtype::Float32));
    let widths = [32, 16, 16];
    let rms = norm(500);
    type Case<'a> = (&'a str, [Kind; 3], bool);
    let cases: [Case; 6] = [
        ("quantized qkv", [(q4, false); 3], true),
        ("quantized qkv with bias", [(q4, true); 3], true),
        ("quantized f16 scales", [(q4h, false); 3], true),
        ("dense qkv with bias", [(None, true); 3], true),
        ("mixed bits", [(q4, false), (q8, false), (q4, false)], false),
        (
            "dense + quantized",
            [(None, false), (q4, false), (q4, false)],
            false,
        ),
    ];
    for (ci, (name, kinds, fused)) in cases.into_iter().enumerate() {
        let fl = fused_parts(&kinds, &widths, 600 + 50 * ci as u64);
        assert_eq!(
            matches!(fl, FusedLinear::Fused { .. }),
            fused,
            "{name}: variant"
        );
        for m in [1, 12] {
            let x = uniform(&[1, m, IN], -3.0, 5.0, 700 + m as u64);
            for n in [Some(&rms), None] {
                let what = format!("{name}, M {m}, norm {}", n.is_some());
                let joined = fl.forward_joined(&x, n).unwrap();
                assert_eq!(joined.shape(), vec![1, m, 64], "{what}: joined shape");
                let got = fl.split(joined).unwrap();
                let xn = match n {
                    Some(n) => n.forward(&x).unwrap(),
                    None => x.clone(),
                };
                let want = fl.forward(&xn).unwrap();
                assert_eq!(got.len(), 3, "{what}: parts");
                assert_eq!(want.len(), 3, "{what}: parts");
                // A fused quantized product with a norm runs the native norm; else the ops
                // are the same, up to kernel dispatch.
                let rel = if fused && kinds[0].0.is_some() && n.is_some() {
                    1e-5
                } else {
                    1e-6
                };
                for (p, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.shape(), vec![1, m, widths[p]], "{what}: part {p}");
                    assert_close(g, w, rel, &format!("{what}: part {p}"));
                }
            }
        }
    }
}
