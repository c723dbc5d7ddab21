//! `native::fused_quantized_matmul` (rms-norm prologue, residual epilogue): values against an
//! f64 evaluation of the packed words done here, against MLX's own ops composed
//! (`fast::rms_norm` → `quant::quantized_matmul` → `add`), views as inputs, errors, and the
//! calls the native kernel declines (`Ok(None)`).
mod common;

use common::{dequant_f64_checked, f32s, quantize_weights, Quantized};
use mlx_rs::{fast, native, quant, random, Array, Dtype};
use std::sync::Mutex;

/// The native-qmm switch is process-wide: every test in this file takes this lock.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    quant::set_native_qmm(true);
    g
}

const EPS: f32 = 1e-5;

/// Uniform values in [low, high) from a fixed key.
fn uniform(shape: &[i32], low: f32, high: f32, seed: u64) -> Array {
    let key = random::key(seed).unwrap();
    random::uniform(low, high, shape, Dtype::Float32, Some(&key)).unwrap()
}

/// Weights `[n, k]` from uniform values in [-1, 1), quantized; unpacked with
/// [`dequant_f64_checked`] (which also checks the unpacking against MLX's dequantize).
fn make_weights(n: usize, k: usize, bits: i32, group: i32, sb: Dtype, seed: u64) -> Quantized {
    quantize_weights(
        &uniform(&[n as i32, k as i32], -1.0, 1.0, seed),
        bits,
        group,
        sb,
    )
}

/// The operands of one call, from the seeds `seed..seed + 4`: float32 weights `[n, k]`
/// quantized to 4 bits in groups of `group`, x `[m, k]`, a norm weight `[k]` and a residual
/// `[m, n]`.
fn operands(n: usize, k: usize, m: i32, group: i32, seed: u64) -> (Quantized, Array, Array, Array) {
    let q = make_weights(n, k, 4, group, Dtype::Float32, seed);
    let x = uniform(&[m, k as i32], -1.0, 1.0, seed + 1);
    let nw = uniform(&[k as i32], 0.5, 1.5, seed + 2);
    let r = uniform(&[m, n as i32], -1.0, 1.0, seed + 3);
    (q, x, nw, r)
}

/// `rms_norm(x, nw, eps) · wᵀ + r` in f64 (x `[m, k]` row-major values, w `[n, k]`), and per
/// output the sum of the magnitudes of its terms (for tolerances).
fn reference(
    x: &[f32],
    norm: Option<&[f32]>,
    w: &[f64],
    residual: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut xn: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    if let Some(nw) = norm {
        for i in 0..m {
            let row = &mut xn[i * k..(i + 1) * k];
            let ms = row.iter().map(|v| v * v).sum::<f64>() / k as f64;
            let inv = 1.0 / (ms + EPS as f64).sqrt();
            for (v, &g) in row.iter_mut().zip(nw) {
                *v *= inv * g as f64;
            }
        }
    }
    let mut y = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for e in 0..k {
                let p = xn[i * k + e] * w[j * k + e];
                y[i * n + j] += p;
                mag[i * n + j] += p.abs();
            }
            if let Some(r) = residual {
                y[i * n + j] += r[i * n + j] as f64;
                mag[i * n + j] += (r[i * n + j] as f64).abs();
            }
        }
    }
    (y, mag)
}

/// Row by row: ‖got − want‖₂ ≤ rel·‖want‖₂ (+ a tiny absolute floor), all finite.
fn check_rows(got: &[f32], want: &[f64], n: usize, rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.chunks(n).zip(want.chunks(n)).enumerate() {
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{what}: row {i} not finite"
        );
        let err = g
            .iter()
            .zip(w)
            .map(|(&a, &b)| (a as f64 - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = w.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(
            err <= rel * norm + 1e-6,
            "{what}: row {i}: |err| = {err}, |row| = {norm}, ratio {}",
            err / norm
        );
    }
}

/// Element by element, with a bound from the output's rounding and the terms' magnitudes.
fn check_elems(got: &[f32], want: &[f64], mag: &[f64], rounding: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, (&w, &m))) in got.iter().zip(want.iter().zip(mag)).enumerate() {
        let tol = rounding * w.abs() + 2e-5 * m + 1e-5;
        assert!(
            g.is_finite() && (g as f64 - w).abs() <= tol,
            "{what}: element {i}: got {g}, want {w} (tol {tol})"
        );
    }
}

fn fused(
    x: &Array,
    q: &Quantized,
    norm: Option<&Array>,
    residual: Option<&Array>,
) -> mlx_rs::Result<Option<Array>> {
    native::fused_quantized_matmul(
        x,
        &q.wq,
        &q.scales,
        &q.biases,
        q.group,
        q.bits,
        norm.map(|w| (w, EPS)),
        residual,
    )
}

/// MLX's ops composed: `fast::rms_norm` → `quant::quantized_matmul` → `add`.
fn composed(x: &Array, q: &Quantized, norm: Option<&Array>, residual: Option<&Array>) -> Array {
    let xn = match norm {
        Some(w) => fast::rms_norm(x, Some(w), EPS).unwrap(),
        None => x.clone(),
    };
    let y =
        quant::quantized_matmul(&xn, &q.wq, &q.scales, &q.biases, true, q.group, q.bits).unwrap();
    match residual {
        Some(r) => y.add(r).unwrap(),
        None => y,
    }
}

#[test]
fn bits_groups_rows_dtypes_norm_and_residual_against_f64_and_composition() {
    let _g = lock();
    let n = 40; // not a multiple of the kernel's row blocks
    let mut seed = 1000u64;
    for bits in [4, 8] {
        for group in [32, 64, 128] {
            for sb in [Dtype::Float32, Dtype::Float16] {
                let k = group as usize * 3;
                seed += 1;
                let q = make_weights(n, k, bits, group, sb, seed);
                let w = dequant_f64_checked(&q);
                let nw = uniform(&[k as i32], 0.5, 1.5, seed + 7);
                let nw_v = f32s(&nw);
                for m in [1usize, 3, 9, 17] {
                    seed += 1;
                    // An offset and a scale the norm has to take out.
                    let x = uniform(&[m as i32, k as i32], -3.0, 5.0, seed);
                    let x_v = f32s(&x);
                    let r = uniform(&[m as i32, n as i32], -2.0, 2.0, seed + 11);
                    let r_v = f32s(&r);
                    for use_norm in [false, true] {
                        for use_res in [false, true] {
                            let what = format!(
                                "bits {bits} group {group} scales {sb:?} M {m} norm {use_norm} \
                                 residual {use_res}"
                            );
                            let norm = use_norm.then_some(&nw);
                            let res = use_res.then_some(&r);
                            let y = fused(&x, &q, norm, res)
                                .unwrap()
                                .unwrap_or_else(|| panic!("{what}: native kernel declined"));
                            assert_eq!(y.shape(), vec![m as i32, n as i32], "{what}");
                            assert_eq!(y.dtype(), Dtype::Float32, "{what}");
                            let got = y.to_vec::<f32>().unwrap();
                            let (want, mag) = reference(
                                &x_v,
                                use_norm.then_some(&nw_v[..]),
                                &w,
                                use_res.then_some(&r_v[..]),
                                m,
                                n,
                                k,
                            );
                            check_rows(&got, &want, n, 1e-4, &what);
                            check_elems(&got, &want, &mag, 0.0, &what);
                            let c = composed(&x, &q, norm, res).to_vec::<f32>().unwrap();
                            let c64: Vec<f64> = c.iter().map(|&v| v as f64).collect();
                            check_rows(&got, &c64, n, 1e-5, &format!("{what} vs composition"));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn batched_x_and_half_residual() {
    let _g = lock();
    let (n, k, b, m) = (24usize, 128usize, 2usize, 5usize);
    let q = make_weights(n, k, 4, 64, Dtype::Float16, 77);
    let w = dequant_f64_checked(&q);
    let x = uniform(&[b as i32, m as i32, k as i32], -1.0, 1.0, 78);
    let nw = uniform(&[k as i32], 0.5, 1.5, 79);
    let r = uniform(&[b as i32, m as i32, n as i32], -1.0, 1.0, 80)
        .astype(Dtype::Float16)
        .unwrap();
    let y = fused(&x, &q, Some(&nw), Some(&r)).unwrap().unwrap();
    assert_eq!(y.shape(), vec![b as i32, m as i32, n as i32]);
    assert_eq!(y.dtype(), Dtype::Float32);
    let (want, mag) = reference(
        &f32s(&x),
        Some(&f32s(&nw)),
        &w,
        Some(&f32s(&r)),
        b * m,
        n,
        k,
    );
    let got = y.to_vec::<f32>().unwrap();
    check_rows(&got, &want, n, 1e-4, "batched");
    check_elems(&got, &want, &mag, 0.0, "batched");
}

#[test]
fn views_as_x_and_residual() {
    let _g = lock();
    let (n, k) = (40usize, 192usize);
    let q = make_weights(n, k, 4, 64, Dtype::Float32, 5);
    let w = dequant_f64_checked(&q);
    let nw = uniform(&[k as i32], 0.5, 1.5, 6);
    let nw_v = f32s(&nw);
    for m in [1usize, 3, 17] {
        let (mi, ni, ki) = (m as i32, n as i32, k as i32);
        // x as the transpose of a row-major [k, m].
        let xt = uniform(&[ki, mi], -2.0, 2.0, 10 + m as u64);
        xt.eval().unwrap();
        let x = xt.t().unwrap();
        assert_eq!(x.shape(), vec![mi, ki]);
        let x_v = f32s(&x);
        // x as a lazy expression over that view.
        let lazy = x.add(&Array::from_slice(&[1.0f32], &[1]).unwrap()).unwrap();
        let lazy_v: Vec<f32> = x_v.iter().map(|v| v + 1.0).collect();

        // Residuals: a broadcast row, a transposed [n, m], a plain one.
        let row = uniform(&[1, ni], -1.0, 1.0, 30 + m as u64);
        let r_bcast = row.broadcast_to(&[mi, ni]).unwrap();
        let rt = uniform(&[ni, mi], -1.0, 1.0, 40 + m as u64);
        rt.eval().unwrap();
        let r_t = rt.t().unwrap();
        for (xa, xv, xname) in [(&x, &x_v, "transposed x"), (&lazy, &lazy_v, "lazy x")] {
            for (r, rname) in [
                (None, "no residual"),
                (Some(&r_bcast), "broadcast residual"),
                (Some(&r_t), "transposed residual"),
            ] {
                for use_norm in [false, true] {
                    let what = format!("M {m}, {xname}, {rname}, norm {use_norm}");
                    let y = fused(xa, &q, use_norm.then_some(&nw), r)
                        .unwrap()
                        .unwrap_or_else(|| panic!("{what}: declined"));
                    let r_v = r.map(f32s);
                    let (want, mag) = reference(
                        xv,
                        use_norm.then_some(&nw_v[..]),
                        &w,
                        r_v.as_deref(),
                        m,
                        n,
                        k,
                    );
                    let got = y.to_vec::<f32>().unwrap();
                    check_rows(&got, &want, n, 1e-4, &what);
                    check_elems(&got, &want, &mag, 0.0, &what);
                }
            }
        }
    }
}

#[test]
fn shape_errors_are_errors_and_the_process_goes_on() {
    let _g = lock();
    let (n, k, m) = (16usize, 64usize, 3i32);
    let (q, x, nw, r) = operands(n, k, m, 32, 90);

    let short_norm = uniform(&[k as i32 - 1], 0.5, 1.5, 94);
    assert!(
        fused(&x, &q, Some(&short_norm), None).is_err(),
        "norm [k-1]"
    );
    let long_norm = uniform(&[k as i32 + 32], 0.5, 1.5, 94);
    assert!(
        fused(&x, &q, Some(&long_norm), Some(&r)).is_err(),
        "norm [k+32]"
    );
    let norm_2d = uniform(&[1, k as i32], 0.5, 1.5, 94);
    assert!(fused(&x, &q, Some(&norm_2d), None).is_err(), "norm [1, k]");

    let wide_r = uniform(&[m, n as i32 + 1], -1.0, 1.0, 95);
    assert!(
        fused(&x, &q, None, Some(&wide_r)).is_err(),
        "residual [m, n+1]"
    );
    let tall_r = uniform(&[m + 1, n as i32], -1.0, 1.0, 95);
    assert!(
        fused(&x, &q, Some(&nw), Some(&tall_r)).is_err(),
        "residual [m+1, n]"
    );
    let int_r = Array::zeros(&[m, n as i32], Dtype::Int32).unwrap();
    assert!(fused(&x, &q, None, Some(&int_r)).is_err(), "int residual");

    let bad_x = uniform(&[m, k as i32 + 32], -1.0, 1.0, 96);
    assert!(fused(&bad_x, &q, None, None).is_err(), "x [m, k+32]");
    assert!(
        fused(&bad_x, &q, Some(&nw), Some(&r)).is_err(),
        "x [m, k+32] + norm"
    );

    // The process goes on, and the same call with good operands works.
    let y = fused(&x, &q, Some(&nw), Some(&r)).unwrap().unwrap();
    let (want, _) = reference(
        &f32s(&x),
        Some(&f32s(&nw)),
        &dequant_f64_checked(&q),
        Some(&f32s(&r)),
        m as usize,
        n,
        k,
    );
    check_rows(&y.to_vec::<f32>().unwrap(), &want, n, 1e-4, "after errors");
}

#[test]
fn declined_calls_return_none() {
    let _g = lock();
    let (n, k, m) = (16usize, 192usize, 2i32);
    let (q, x, nw, r) = operands(n, k, m, 64, 50);

    // Switched off (and back on).
    quant::set_native_qmm(false);
    let off = fused(&x, &q, Some(&nw), Some(&r));
    quant::set_native_qmm(true);
    assert!(off.unwrap().is_none(), "native qmm off");
    assert!(fused(&x, &q, Some(&nw), Some(&r)).unwrap().is_some());

    // A half-precision norm weight.
    for dt in [Dtype::Float16, Dtype::Bfloat16] {
        let nw_h = nw.astype(dt).unwrap();
        assert!(
            fused(&x, &q, Some(&nw_h), Some(&r)).unwrap().is_none(),
            "norm weight {dt:?}"
        );
    }

    // Bits the kernel does not serve (MLX itself does).
    for bits in [3, 6] {
        let qb = make_weights(n, k, bits, 64, Dtype::Float32, 54);
        assert!(
            fused(&x, &qb, Some(&nw), Some(&r)).unwrap().is_none(),
            "bits {bits}"
        );
        assert!(fused(&x, &qb, None, None).unwrap().is_none(), "bits {bits}");
    }
}

#[test]
fn bf16_x_against_f64() {
    let _g = lock();
    let (n, k) = (40usize, 256usize);
    for sb in [Dtype::Float32, Dtype::Bfloat16, Dtype::Float16] {
        for bits in [4, 8] {
            let q = make_weights(n, k, bits, 64, sb, 60 + bits as u64);
            let w = dequant_f64_checked(&q);
            let nw = uniform(&[k as i32], 0.5, 1.5, 61);
            let nw_v = f32s(&nw);
            for m in [1usize, 3, 17] {
                let x = uniform(&[m as i32, k as i32], -3.0, 5.0, 62 + m as u64)
                    .astype(Dtype::Bfloat16)
                    .unwrap();
                let r = uniform(&[m as i32, n as i32], -2.0, 2.0, 63 + m as u64)
                    .astype(Dtype::Bfloat16)
                    .unwrap();
                for use_norm in [false, true] {
                    let what =
                        format!("bf16 x, scales {sb:?}, bits {bits}, M {m}, norm {use_norm}");
                    let y = fused(&x, &q, use_norm.then_some(&nw), Some(&r))
                        .unwrap()
                        .unwrap_or_else(|| panic!("{what}: declined"));
                    // MLX promotes: bf16 with f16 or f32 is f32.
                    let out = if sb == Dtype::Bfloat16 {
                        Dtype::Bfloat16
                    } else {
                        Dtype::Float32
                    };
                    assert_eq!(y.dtype(), out, "{what}");
                    let (want, mag) = reference(
                        &f32s(&x),
                        use_norm.then_some(&nw_v[..]),
                        &w,
                        Some(&f32s(&r)),
                        m,
                        n,
                        k,
                    );
                    let rounding = if out == Dtype::Bfloat16 {
                        1.0 / 256.0
                    } else {
                        0.0
                    };
                    let got = f32s(&y);
                    check_elems(&got, &want, &mag, rounding, &what);
                    check_rows(&got, &want, n, 4e-3, &what);
                }
            }
        }
    }
}
