//! The native CPU quantized matmul (mlx-sys/kernels): values against an f64 evaluation of the
//! packed weights done here in Rust, against MLX's own op (f32 activations), on every
//! instruction set the CPU has, every supported bits/group/dtype, awkward shapes, poisoned
//! outputs, lazy graphs, async_eval, memory, threads.
mod common;

use common::{dequant_f64, quantize_weights, rand_vec, Quantized};
use mlx_rs::half::{bf16, f16};
use mlx_rs::{fast, quant, sys, Array, Dtype};
use std::ffi::CString;
use std::sync::Mutex;

/// The kernel's instruction set and enable switch are process-wide: tests take turns.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The instruction sets this CPU supports (generic first).
fn isas() -> Vec<i32> {
    // SAFETY: plain integer calls.
    let best = unsafe { sys::native_qmm::mlxrs_qmm_force_isa(0) };
    (1..=best).collect()
}

fn force_isa(isa: i32) {
    // SAFETY: plain integer call.
    let got = unsafe { sys::native_qmm::mlxrs_qmm_force_isa(isa) };
    assert_eq!(got, isa);
}

fn reset_isa() {
    // SAFETY: plain integer call.
    unsafe { sys::native_qmm::mlxrs_qmm_force_isa(0) };
}

fn make_weights(n: usize, k: usize, bits: i32, group: i32, sb: Dtype, seed: u64) -> Quantized {
    let w = Array::from_slice(&rand_vec(n * k, seed), &[n as i32, k as i32]).unwrap();
    quantize_weights(&w, bits, group, sb)
}

/// y = x @ wᵀ in f64, with the bound used for tolerances: sum |x||w| per output.
fn reference(x: &[f32], w: &[f64], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for e in 0..k {
                let p = x[i * k + e] as f64 * w[j * k + e];
                y[i * n + j] += p;
                mag[i * n + j] += p.abs();
            }
        }
    }
    (y, mag)
}

fn tolerance(out: Dtype, y: f64, mag: f64) -> f64 {
    let rounding = match out {
        Dtype::Bfloat16 => 1.0 / 128.0,
        Dtype::Float16 => 1.0 / 1024.0,
        _ => 0.0,
    };
    rounding * y.abs() + 2e-5 * mag + 1e-5
}

fn check_close(got: &[f32], want: &[f64], mag: &[f64], out: Dtype, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, (&w, &m))) in got.iter().zip(want.iter().zip(mag)).enumerate() {
        assert!(
            g.is_finite() && (g as f64 - w).abs() <= tolerance(out, w, m),
            "{what}: element {i}: got {g}, want {w} (sum |x w| = {m})"
        );
    }
}

fn native_count() -> u64 {
    // SAFETY: no arguments.
    unsafe { sys::native_qmm::mlxrs_qmm_native_count() }
}

/// MLX's own op, called directly through mlx-c (the kernel plays no part).
fn mlx_qmm(x: &Array, q: &Quantized) -> Array {
    let mode = CString::new("affine").unwrap();
    let stream = mlx_rs::Stream::current().unwrap();
    // SAFETY: valid handles; the result handle is fresh and owned by the returned Array.
    unsafe {
        let mut res = sys::mlx_array_new();
        let status = sys::mlx_quantized_matmul(
            &mut res,
            x.as_raw(),
            q.wq.as_raw(),
            q.scales.as_raw(),
            q.biases.as_raw(),
            true,
            sys::mlx_optional_int {
                value: q.group,
                has_value: true,
            },
            sys::mlx_optional_int {
                value: q.bits,
                has_value: true,
            },
            mode.as_ptr(),
            stream.as_raw(),
        );
        assert_eq!(status, 0);
        Array::from_raw(res)
    }
}

fn qmm(x: &Array, q: &Quantized) -> mlx_rs::Result<Array> {
    quant::quantized_matmul(x, &q.wq, &q.scales, &q.biases, true, q.group, q.bits)
}

const FLOATS: [Dtype; 3] = [Dtype::Float32, Dtype::Float16, Dtype::Bfloat16];

#[test]
fn every_isa_bits_group_and_dtype_against_f64() {
    let _g = lock();
    quant::set_native_qmm(true);
    let ms = [1usize, 2, 3, 5, 8, 9, 17, 64];
    let mut case = 0u64;
    for isa in isas() {
        force_isa(isa);
        for bits in [4, 8] {
            for group in [32, 64, 128] {
                for sb in FLOATS {
                    let (n, k) = (37, group as usize * 3);
                    let q = make_weights(n, k, bits, group, sb, case);
                    let w = dequant_f64(&q);
                    for xdt in FLOATS {
                        case += 1;
                        let m = ms[case as usize % ms.len()];
                        let x =
                            Array::from_slice(&rand_vec(m * k, 1000 + case), &[m as i32, k as i32])
                                .unwrap()
                                .astype(xdt)
                                .unwrap();
                        let xs = x.astype(Dtype::Float32).unwrap().to_vec::<f32>().unwrap();
                        let before = native_count();
                        let y = qmm(&x, &q).unwrap();
                        assert_eq!(native_count(), before + 1, "the native kernel was not used");
                        let out = if xdt == sb { xdt } else { Dtype::Float32 };
                        assert_eq!(y.dtype(), out);
                        assert_eq!(y.shape(), vec![m as i32, n as i32]);
                        let got = y.astype(Dtype::Float32).unwrap().to_vec::<f32>().unwrap();
                        let (want, mag) = reference(&xs, &w, m, n, k);
                        let what =
                            format!("isa {isa} bits {bits} group {group} sb {sb} x {xdt} m {m}");
                        check_close(&got, &want, &mag, out, &what);
                    }
                }
            }
        }
    }
    reset_isa();
}

#[test]
fn awkward_shapes_match_mlx_and_f64() {
    let _g = lock();
    quant::set_native_qmm(true);
    for isa in isas() {
        force_isa(isa);
        for (i, &(m, n, k, bits, group)) in [
            (1usize, 1usize, 32usize, 4, 32),
            (1, 7, 160, 4, 32),
            (1, 13, 192, 8, 64),
            (3, 5, 384, 4, 128),
            (4, 9, 96, 8, 32),
            (7, 33, 320, 4, 64),
            (16, 11, 224, 4, 32),
            (33, 6, 256, 8, 128),
            (64, 19, 96, 4, 32),
        ]
        .iter()
        .enumerate()
        {
            let q = make_weights(n, k, bits, group, Dtype::Float32, 50 + i as u64);
            let xv = rand_vec(m * k, 60 + i as u64);
            // A batch axis too: [2, m, k] flattens to 2m rows.
            let x = Array::from_slice(&[xv.clone(), xv.clone()].concat(), &[2, m as i32, k as i32])
                .unwrap();
            let y = qmm(&x, &q).unwrap();
            assert_eq!(y.shape(), vec![2, m as i32, n as i32]);
            let got = y.to_vec::<f32>().unwrap();
            let mlx = mlx_qmm(&x, &q).to_vec::<f32>().unwrap();
            let (want, mag) = reference(&[xv.clone(), xv].concat(), &dequant_f64(&q), 2 * m, n, k);
            let what = format!("isa {isa} m {m} n {n} k {k} bits {bits} group {group}");
            check_close(&got, &want, &mag, Dtype::Float32, &what);
            check_close(&mlx, &want, &mag, Dtype::Float32, &format!("MLX, {what}"));
        }
    }
    reset_isa();
}

#[test]
fn raw_kernel_writes_every_output_of_a_poisoned_buffer() {
    let _g = lock();
    use sys::native_qmm::{mlxrs_qmm_raw, BF16, F16, F32};
    for isa in isas() {
        force_isa(isa);
        for (i, &(m, n, k, bits, group)) in [
            (1usize, 45usize, 192usize, 4, 64),
            (6, 23, 256, 8, 32),
            (1, 37, 160, 8, 32),
            (40, 70, 128, 4, 128),
        ]
        .iter()
        .enumerate()
        {
            let q = make_weights(n, k, bits, group, Dtype::Float32, 80 + i as u64);
            let words = q.wq.to_vec::<u32>().unwrap();
            let s = q.scales.to_vec::<f32>().unwrap();
            let b = q.biases.to_vec::<f32>().unwrap();
            let x = rand_vec(m * k, 90 + i as u64);
            let (want, mag) = reference(&x, &dequant_f64(&q), m, n, k);
            let run = |y: *mut std::ffi::c_void, dt| {
                // SAFETY: buffers of the sizes the call describes, alive for the call.
                unsafe {
                    mlxrs_qmm_raw(
                        x.as_ptr().cast(),
                        F32,
                        words.as_ptr(),
                        s.as_ptr().cast(),
                        b.as_ptr().cast(),
                        F32,
                        y,
                        dt,
                        m as i32,
                        n as i32,
                        k as i32,
                        bits,
                        group,
                    )
                }
            };
            let mut y = vec![f32::NAN; m * n + 3];
            assert_eq!(run(y.as_mut_ptr().cast(), F32), 0);
            assert!(y[m * n..].iter().all(|v| v.is_nan()), "wrote past the end");
            check_close(&y[..m * n], &want, &mag, Dtype::Float32, "raw f32");
            let mut yb = vec![bf16::NAN; m * n];
            assert_eq!(run(yb.as_mut_ptr().cast(), BF16), 0);
            let yb: Vec<f32> = yb.iter().map(|v| v.to_f32()).collect();
            check_close(&yb, &want, &mag, Dtype::Bfloat16, "raw bf16");
            let mut yh = vec![f16::NAN; m * n];
            assert_eq!(run(yh.as_mut_ptr().cast(), F16), 0);
            let yh: Vec<f32> = yh.iter().map(|v| v.to_f32()).collect();
            check_close(&yh, &want, &mag, Dtype::Float16, "raw f16");
            // Unsupported parameters are refused, not run.
            let mut z = vec![0f32; m * n];
            // SAFETY: refused before any buffer is read.
            let refused = unsafe {
                mlxrs_qmm_raw(
                    x.as_ptr().cast(),
                    F32,
                    words.as_ptr(),
                    s.as_ptr().cast(),
                    b.as_ptr().cast(),
                    F32,
                    z.as_mut_ptr().cast(),
                    F32,
                    m as i32,
                    n as i32,
                    k as i32,
                    3,
                    group,
                )
            };
            assert_eq!(refused, 1);
        }
    }
    reset_isa();
}

#[test]
fn lazy_graph_rms_norm_qmm_silu() {
    let _g = lock();
    quant::set_native_qmm(true);
    let (n, k) = (48usize, 256usize);
    let q = make_weights(n, k, 4, 64, Dtype::Float32, 7);
    let xv = rand_vec(k, 8);
    let x = Array::from_slice(&xv, &[1, k as i32]).unwrap();
    let before = native_count();
    let y = qmm(&fast::rms_norm(&x, None, 1e-5).unwrap(), &q)
        .unwrap()
        .silu()
        .unwrap();
    assert_eq!(native_count(), before + 1);
    let got = y.to_vec::<f32>().unwrap();
    let rms = (xv.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / k as f64 + 1e-5).sqrt();
    let xn: Vec<f32> = xv.iter().map(|v| (*v as f64 / rms) as f32).collect();
    let (z, mag) = reference(&xn, &dequant_f64(&q), 1, n, k);
    for i in 0..n {
        let want = z[i] / (1.0 + (-z[i]).exp());
        assert!(
            (got[i] as f64 - want).abs() <= 1e-4 * mag[i] + 1e-4,
            "{i}: {} vs {want}",
            got[i]
        );
    }
    // The same graph with the kernel off gives the same values (MLX's f32 path).
    quant::set_native_qmm(false);
    let off = qmm(&fast::rms_norm(&x, None, 1e-5).unwrap(), &q)
        .unwrap()
        .silu()
        .unwrap();
    assert_eq!(native_count(), before + 1);
    quant::set_native_qmm(true);
    for (a, b) in got.iter().zip(off.to_vec::<f32>().unwrap()) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()));
    }
}

#[test]
fn async_eval_and_flat_memory_over_1000_calls() {
    let _g = lock();
    quant::set_native_qmm(true);
    let q = make_weights(64, 128, 4, 32, Dtype::Float32, 11);
    let x = Array::from_slice(&rand_vec(128, 12), &[1, 128]).unwrap();
    let first = qmm(&x, &q).unwrap();
    mlx_rs::async_eval(&[&first]).unwrap();
    let first = first.to_vec::<f32>().unwrap();
    let (want, mag) = reference(&x.to_vec::<f32>().unwrap(), &dequant_f64(&q), 1, 64, 128);
    check_close(&first, &want, &mag, Dtype::Float32, "async_eval");
    let mut base = 0;
    for i in 0..1000 {
        let y = qmm(&x, &q).unwrap();
        mlx_rs::async_eval(&[&y]).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), first, "call {i} differs");
        drop(y);
        let active = mlx_rs::memory::active_memory().unwrap();
        if i == 10 {
            base = active;
        } else if i > 10 {
            assert!(
                active <= base + 4096,
                "active memory grew: {active} after {i} calls, {base} at 10"
            );
        }
    }
}

#[test]
fn threads_issue_work_concurrently() {
    let _g = lock();
    quant::set_native_qmm(true);
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let stream = mlx_rs::Stream::new(mlx_rs::Device::cpu()).unwrap();
                mlx_rs::with_stream(&stream, || {
                    let q = make_weights(40 + t as usize, 192, 4, 64, Dtype::Float32, 20 + t);
                    let w = dequant_f64(&q);
                    for i in 0..20 {
                        let m = 1 + (i % 3) as usize;
                        let xv = rand_vec(m * 192, 100 * t + i);
                        let x = Array::from_slice(&xv, &[m as i32, 192]).unwrap();
                        let y = qmm(&x, &q).unwrap().to_vec::<f32>().unwrap();
                        let (want, mag) = reference(&xv, &w, m, q.n, 192);
                        check_close(&y, &want, &mag, Dtype::Float32, "threaded");
                    }
                })
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn thread_knob_and_fallbacks() {
    let _g = lock();
    quant::set_native_qmm(true);
    let q = make_weights(50, 128, 8, 32, Dtype::Float32, 30);
    let xv = rand_vec(3 * 128, 31);
    let x = Array::from_slice(&xv, &[3, 128]).unwrap();
    let (want, mag) = reference(&xv, &dequant_f64(&q), 3, 50, 128);
    for threads in [1, 2, 3, 0] {
        quant::set_native_qmm_threads(threads);
        if threads > 0 {
            assert_eq!(quant::native_qmm_threads(), threads);
        }
        let y = qmm(&x, &q).unwrap().to_vec::<f32>().unwrap();
        check_close(
            &y,
            &want,
            &mag,
            Dtype::Float32,
            &format!("{threads} threads"),
        );
    }
    // transpose = false and 3 bits go to MLX's op, and still give the right answer.
    let before = native_count();
    let q3 = make_weights(8, 64, 3, 32, Dtype::Float32, 32);
    let x3v = rand_vec(64, 33);
    let x3 = Array::from_slice(&x3v, &[1, 64]).unwrap();
    let y3 = qmm(&x3, &q3).unwrap().to_vec::<f32>().unwrap();
    let (want3, mag3) = reference(&x3v, &dequant_f64(&q3), 1, 8, 64);
    check_close(&y3, &want3, &mag3, Dtype::Float32, "3 bits");
    let wq_t = Array::from_slice(&[0x1111_1111u32; 128], &[32, 4]).unwrap();
    let s_t = Array::from_slice(&[1.0f32; 32], &[32, 1]).unwrap();
    let b_t = Array::from_slice(&[0.0f32; 32], &[32, 1]).unwrap();
    let x_t = Array::ones(&[1, 32], Dtype::Float32).unwrap();
    let y_t = quant::quantized_matmul(&x_t, &wq_t, &s_t, &b_t, false, 32, 4).unwrap();
    assert_eq!(y_t.to_vec::<f32>().unwrap(), vec![32.0; 32]);
    assert_eq!(native_count(), before);
    // Errors still come back as Err, not aborts.
    let bad = Array::ones(&[1, 100], Dtype::Float32).unwrap();
    assert!(qmm(&bad, &q).is_err());
}

/// The VNNI kernels' rounding of activations, as documented, done here in f64: in each block
/// of 8 (codes 8d .. 8d + 7), x becomes X 2^(E - 20) with X = round-half-even(x 2^(20 - E))
/// and 2^E the smallest power of two above the block's largest |x| (E at least -102).
fn vnni_round(x: &[f32]) -> Vec<f64> {
    x.chunks(8)
        .flat_map(|block| {
            let mx = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let f = ((mx.to_bits() >> 23) & 0xff).max(24) as i32; // exponent field
            let e = f - 126; // mx < 2^e
            block
                .iter()
                .map(move |&v| (v as f64 * 2f64.powi(20 - e)).round_ties_even() * 2f64.powi(e - 20))
        })
        .collect()
}

/// `bits`-bit weights `[n, k]` built code by code (random, except code 0 wherever `zero(i)`
/// holds for column i), f32 scales in [0.01, 0.02), biases 0.
fn weights_from_codes(
    n: usize,
    k: usize,
    bits: i32,
    group: i32,
    zero: impl Fn(usize) -> bool,
) -> Quantized {
    let r = rand_vec(n * k + n * k / group as usize, 21);
    let levels = 1u32 << bits;
    let codes: Vec<u32> = (0..n * k)
        .map(|i| {
            if zero(i % k) {
                0
            } else {
                ((r[i] + 1.0) * levels as f32 / 2.0) as u32 & (levels - 1)
            }
        })
        .collect();
    let per_word = 32 / bits as usize;
    let words: Vec<u32> = codes
        .chunks(per_word)
        .map(|c| c.iter().rev().fold(0u32, |w, &q| w << bits | q))
        .collect();
    let ng = k / group as usize;
    let scales: Vec<f32> = r[n * k..].iter().map(|v| 0.015 + 0.005 * v).collect();
    Quantized {
        wq: Array::from_slice(&words, &[n as i32, (k / per_word) as i32]).unwrap(),
        scales: Array::from_slice(&scales, &[n as i32, ng as i32]).unwrap(),
        biases: Array::from_slice(&vec![0f32; n * ng], &[n as i32, ng as i32]).unwrap(),
        n,
        k,
        bits,
        group,
    }
}

#[test]
fn vnni_rounds_activations_as_documented() {
    let _g = lock();
    quant::set_native_qmm(true);
    if !isas().contains(&sys::native_qmm::ISA_AVX512_VNNI) {
        eprintln!("skipped: this CPU has no AVX-512 VNNI");
        return;
    }
    // One activation per block of 8 is 1000x the others, and every weight it meets is 0: the
    // outputs come from the small values only, which the shared block exponent leaves with
    // about 11 of their bits, so the rounding shows far above f32's. K ends in half a chunk
    // (128 codes at 4 bits, 64 at 8: the masked tail) where the group size allows it.
    let outlier = |i: usize| i % 8 == 3;
    for (bits, group, k) in [
        (4, 32, 448usize),
        (4, 64, 448),
        (4, 128, 384),
        (8, 32, 480),
        (8, 64, 448),
        (8, 128, 384),
    ] {
        let n = 24usize;
        let q = weights_from_codes(n, k, bits, group, outlier);
        let w = dequant_f64(&q);
        let mut x = rand_vec(k, 8);
        for (i, v) in x.iter_mut().enumerate() {
            if outlier(i) {
                *v = 1000.0 * v.signum() * (1.0 + v.abs());
            }
        }
        let xa = Array::from_slice(&x, &[1, k as i32]).unwrap();
        let (want, mag) = reference(&x, &w, 1, n, k);
        let xr = vnni_round(&x);
        force_isa(sys::native_qmm::ISA_AVX512_VNNI);
        let vnni = qmm(&xa, &q).unwrap().to_vec::<f32>().unwrap();
        force_isa(sys::native_qmm::ISA_AVX512);
        let exact = qmm(&xa, &q).unwrap().to_vec::<f32>().unwrap();
        let mut visible = 0;
        for r in 0..n {
            // f32 rounding of the kernels' sums: a few units of 2^-24 of sum |x w|.
            let f32_sums = 16.0 * 2f64.powi(-24) * mag[r];
            // The rounded activations, summed in f64: what the VNNI kernel computes up to the
            // rounding of its sums.
            let wr = &w[r * k..(r + 1) * k];
            let rounded: f64 = wr.iter().zip(&xr).map(|(a, b)| a * b).sum();
            assert!(
                (vnni[r] as f64 - rounded).abs() <= f32_sums,
                "{bits} bits, group {group}, row {r}: VNNI {} vs rounded x {rounded} (exact {})",
                vnni[r],
                want[r]
            );
            assert!((exact[r] as f64 - want[r]).abs() <= f32_sums);
            if (vnni[r] as f64 - want[r]).abs() > 10.0 * f32_sums {
                visible += 1;
            }
        }
        assert!(
            visible > n / 2,
            "{bits} bits, group {group}: rounding visible in {visible} of {n} rows"
        );
    }
    reset_isa();
}

/// The integer activations' rounding, as documented, in f64: in each block of 8, x becomes
/// X 2^(E - 7) with X = round-half-even(x 2^(7 - E)) kept to [-127, 127] and 2^E the smallest
/// power of two above the block's largest |x| (E at least -102).
fn int8_round(x: &[f32]) -> Vec<f64> {
    x.chunks(8)
        .flat_map(|block| {
            let mx = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let f = ((mx.to_bits() >> 23) & 0xff).max(24) as i32;
            let e = f - 126;
            block.iter().map(move |&v| {
                let q = (v as f64 * 2f64.powi(7 - e))
                    .round_ties_even()
                    .clamp(-127.0, 127.0);
                q * 2f64.powi(e - 7)
            })
        })
        .collect()
}

#[test]
fn int8_activations_round_as_documented_within_their_bound() {
    let _g = lock();
    /// Switches the integer activations off however the test ends.
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            quant::set_native_int8_activations(false);
        }
    }
    let _off = Off;
    quant::set_native_qmm(true);
    if !quant::set_native_int8_activations(true) {
        quant::set_native_int8_activations(false);
        eprintln!("skipped: this CPU has no AVX-512 VNNI");
        return;
    }
    // Every block's largest value sits just below a power of two in some rows (the clamp of a
    // rounded 128), K ends in a partial chunk where the group allows, M = 1 and 6 (the kernel's
    // one-row and four-row blocks).
    for (bits, group, k) in [
        (4, 32, 448usize),
        (4, 64, 448),
        (4, 128, 384),
        (8, 32, 480),
        (8, 64, 448),
        (8, 128, 384),
    ] {
        let n = 20usize;
        // MLX's own quantization of random weights: biases near -2^(bits-1) scales, so a bias
        // term that met x's exact sums instead of the rounded values' would show.
        let q = make_weights(n, k, bits, group, Dtype::Float32, 31 + k as u64);
        let w = dequant_f64(&q);
        for m in [1usize, 6] {
            let mut x = rand_vec(m * k, 9 + m as u64);
            for (i, v) in x.iter_mut().enumerate() {
                if i % 16 == 5 {
                    *v = 0.999_99 * v.signum();
                }
            }
            let xa = Array::from_slice(&x, &[m as i32, k as i32]).unwrap();
            assert!(quant::set_native_int8_activations(true));
            let got = qmm(&xa, &q).unwrap().to_vec::<f32>().unwrap();
            let (want, mag) = reference(&x, &w, m, n, k);
            let xr = int8_round(&x);
            for i in 0..m {
                let row = &xr[i * k..(i + 1) * k];
                let block_max: Vec<f64> = x[i * k..(i + 1) * k]
                    .chunks(8)
                    .flat_map(|b| {
                        let mx = b.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
                        std::iter::repeat_n(mx, b.len())
                    })
                    .collect();
                for r in 0..n {
                    let wr = &w[r * k..(r + 1) * k];
                    let at = i * n + r;
                    let f32_sums = 16.0 * 2f64.powi(-24) * mag[at];
                    let rounded: f64 = wr.iter().zip(row).map(|(a, b)| a * b).sum();
                    assert!(
                        (got[at] as f64 - rounded).abs() <= f32_sums,
                        "{bits} bits, group {group}, m {m}, ({i}, {r}): {} vs rounded {rounded}",
                        got[at]
                    );
                    // The documented bound: |x - X 2^e| <= 2^-6 of the block's largest |x|.
                    let bound: f64 = wr
                        .iter()
                        .zip(&block_max)
                        .map(|(a, mx)| a.abs() * mx / 64.0)
                        .sum();
                    assert!((got[at] as f64 - want[at]).abs() <= bound + f32_sums);
                }
            }
            // Switched off: the default kernel again (21-bit activations).
            assert!(!quant::set_native_int8_activations(false));
            let again = qmm(&xa, &q).unwrap().to_vec::<f32>().unwrap();
            check_close(&again, &want, &mag, Dtype::Float32, "int8 switched off");
        }
    }
}

#[test]
fn vnni_non_finite_activations_give_nan_only_where_they_are_used() {
    let _g = lock();
    quant::set_native_qmm(true);
    if !isas().contains(&sys::native_qmm::ISA_AVX512_VNNI) {
        eprintln!("skipped: this CPU has no AVX-512 VNNI");
        return;
    }
    force_isa(sys::native_qmm::ISA_AVX512_VNNI);
    let (n, k) = (8usize, 256usize);
    for bits in [4, 8] {
        let q = make_weights(n, k, bits, 32, Dtype::Float32, 11);
        let w = dequant_f64(&q);
        // Row 0 of x holds an infinity, row 1 a NaN, row 2 is finite (rows are independent).
        let mut x = rand_vec(3 * k, 12);
        x[5] = f32::INFINITY;
        x[k + 200] = f32::NAN;
        let y = qmm(&Array::from_slice(&x, &[3, k as i32]).unwrap(), &q)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert!(y[..2 * n].iter().all(|v| v.is_nan()), "{bits} bits: {y:?}");
        let (want, mag) = reference(&x[2 * k..], &w, 1, n, k);
        let what = format!("{bits} bits, finite row");
        check_close(&y[2 * n..], &want, &mag, Dtype::Float32, &what);
    }
    reset_isa();
}

#[test]
fn exact_switch_keeps_activations_in_f32() {
    let _g = lock();
    let best = isas().last().copied().unwrap_or(0);
    quant::set_native_qmm_exact(true);
    let capped = quant::native_qmm_isa();
    assert_ne!(capped, quant::QmmIsa::Avx512Vnni);
    if best >= sys::native_qmm::ISA_AVX512 {
        assert_eq!(capped, quant::QmmIsa::Avx512);
    }
    quant::set_native_qmm_exact(false);
    let expected = match best {
        sys::native_qmm::ISA_AVX512_VNNI => quant::QmmIsa::Avx512Vnni,
        sys::native_qmm::ISA_AVX512 => quant::QmmIsa::Avx512,
        sys::native_qmm::ISA_AVX2 => quant::QmmIsa::Avx2,
        sys::native_qmm::ISA_GENERIC => quant::QmmIsa::Generic,
        _ => quant::QmmIsa::None,
    };
    assert_eq!(quant::native_qmm_isa(), expected);
    reset_isa();
}
