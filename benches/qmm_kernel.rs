//! Criterion benchmark of the native CPU quantized matmul (mlx-sys/kernels) against MLX's own
//! CPU op (the kernel switched off with `quant::set_native_qmm(false)`): 4-bit, group 64 (MLX
//! checkpoints), and 8-bit, group 32 (what GGUF `Q8_0` / `Q5_0` tensors load as; the largest
//! shape is Gemma 3 270M's tied 262144 x 640 head):
//! `native` is the kernel set the CPU selects (AVX-512 VNNI where available), `native-f32` the
//! same with activations kept in f32 (`quant::set_native_qmm_exact(true)`), `mlx` MLX's op.
//!
//! Throughput is the weight bytes read per call (packed codes + scales + biases), so the
//! figure for decode shapes reads as GB/s of weights. Weights stay in place between
//! iterations: the 896-wide matrices fit in the L3 cache and are flattered; the 4096 x 11008
//! one (about 28 MB in f32 scales) mostly comes from DRAM.
//!
//! `qmm_kernel_dram` reads 4-bit matrices of Gemma 4 E2B's MLP shapes from DRAM (copies that
//! together exceed the L3), as a real-size model's decode does.
//!
//! ```text
//! cargo bench --bench qmm_kernel
//! cargo bench --bench qmm_kernel -- qmm_kernel_dram
//! ```
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mlx_rs::{quant, random, with_device, Array, Device, Dtype};
use std::time::Duration;

fn input(shape: &[i32], dtype: Dtype, seed: u64) -> Array {
    let key = random::key(seed).expect("key");
    let x = random::normal(shape, Dtype::Float32, 0.0, 1.0, Some(&key)).expect("normal");
    let x = x.astype(dtype).expect("astype");
    x.eval().expect("eval");
    x
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("qmm_kernel");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    with_device(Device::cpu(), || {
        for &(m, n, k, bits, group) in &[
            (1, 11008, 4096, 4, 64),
            (1, 4864, 896, 4, 64),
            (1, 3072, 576, 4, 64),
            (1, 576, 1536, 4, 64),
            (8, 11008, 4096, 4, 64),
            (128, 4864, 896, 4, 64),
            (1, 262144, 640, 8, 32),
            (1, 2048, 640, 8, 32),
            (4, 2048, 640, 8, 32),
        ] {
            for dtype in [Dtype::Float32, Dtype::Bfloat16, Dtype::Float16] {
                // f16 scales are what GGUF Q8_0 loads as; the 4-bit shapes keep f32 and bf16.
                if (dtype == Dtype::Float16) != (bits == 8) && dtype != Dtype::Float32 {
                    continue;
                }
                let w = input(&[n, k], dtype, 1);
                let (wq, s, b) = quant::quantize(&w, group, bits).expect("quantize");
                mlx_rs::eval(&[&wq, &s, &b]).expect("eval");
                let x = input(&[m, k], dtype, 2);
                let bytes = (wq.nbytes() + s.nbytes() + b.nbytes()) as u64;
                g.throughput(Throughput::Bytes(bytes));
                for variant in ["native", "native-f32", "mlx"] {
                    let native = variant != "mlx";
                    // MLX's half-precision ops take seconds on the larger shapes.
                    if !native && dtype != Dtype::Float32 && m * n * k > 100_000_000 {
                        continue;
                    }
                    let id = BenchmarkId::new(
                        format!("{variant}/{dtype}/q{bits}g{group}"),
                        format!("{m}x{k}@{n}x{k}T"),
                    );
                    g.bench_function(id, |bch| {
                        quant::set_native_qmm(native);
                        quant::set_native_qmm_exact(variant == "native-f32");
                        bch.iter(|| {
                            let y = quant::quantized_matmul(&x, &wq, &s, &b, true, group, bits)
                                .expect("qmm");
                            y.eval().expect("eval");
                            y
                        })
                    });
                }
                quant::set_native_qmm(true);
                quant::set_native_qmm_exact(false);
            }
        }
    })
    .expect("cpu stream");
    g.finish();
}

/// Decode from DRAM: the shapes of Gemma 4 E2B's double-wide MLP (4-bit, group 64, f16 scales
/// as mlx-community checkpoints store them), in enough copies (about 400 MB) that each call
/// reads a matrix the previous calls have pushed out of a 300 MiB L3.
fn bench_dram(c: &mut Criterion) {
    let mut g = c.benchmark_group("qmm_kernel_dram");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    with_device(Device::cpu(), || {
        for &(n, k, copies) in &[(24576, 1536, 20), (1536, 12288, 20)] {
            let mats: Vec<(Array, Array, Array)> = (0..copies)
                .map(|i| {
                    let w = input(&[n, k], Dtype::Float16, 10 + i);
                    let (wq, s, b) = quant::quantize(&w, 64, 4).expect("quantize");
                    mlx_rs::eval(&[&wq, &s, &b]).expect("eval");
                    (wq, s, b)
                })
                .collect();
            let x = input(&[1, k], Dtype::Float32, 2);
            let (wq, s, b) = &mats[0];
            g.throughput(Throughput::Bytes(
                (wq.nbytes() + s.nbytes() + b.nbytes()) as u64,
            ));
            let mut next = 0;
            g.bench_function(
                BenchmarkId::new("native/f16/q4g64", format!("1x{k}@{n}x{k}T")),
                |bch| {
                    bch.iter(|| {
                        let (wq, s, b) = &mats[next % mats.len()];
                        next += 1;
                        let y = quant::quantized_matmul(&x, wq, s, b, true, 64, 4).expect("qmm");
                        y.eval().expect("eval");
                        y
                    })
                },
            );
        }
    })
    .expect("cpu stream");
    g.finish();
}

criterion_group!(benches, bench, bench_dram);
criterion_main!(benches);
