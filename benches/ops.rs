//! Criterion benchmarks of the core MLX ops through mlx-rs, per dtype and per device.
//!
//! Groups are named `mlx_<op>`, each benchmark `<device>/<dtype>/<shape>`; every iteration
//! builds the op's graph and evaluates it, so the timing ends with the result computed.
//! The GPU is benchmarked where the MLX build has one (CUDA or Metal).
//!
//! ```text
//! cargo bench --bench ops                 # everything
//! cargo bench --bench ops -- mlx_matmul   # one group
//! ```
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mlx_rs::fast::{self, AttentionMask};
use mlx_rs::{quant, random, with_device, Array, Device, Dtype};
use std::time::Duration;

const DTYPES: [Dtype; 3] = [Dtype::Float32, Dtype::Float16, Dtype::Bfloat16];

fn devices() -> Vec<Device> {
    [Device::cpu(), Device::gpu()]
        .into_iter()
        .filter(Device::is_available)
        .collect()
}

fn input(shape: &[i32], dtype: Dtype, seed: u64) -> Array {
    let key = random::key(seed).expect("key");
    let x = random::normal(shape, Dtype::Float32, 0.0, 1.0, Some(&key)).expect("normal");
    let x = x.astype(dtype).expect("astype");
    x.eval().expect("eval");
    x
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g
}

/// Dense matrix products: a square 256³ product and a decode-style matrix-vector product.
fn matmul(c: &mut Criterion) {
    let mut g = configure(c, "mlx_matmul");
    for device in devices() {
        for dtype in DTYPES {
            with_device(device, || {
                let a = input(&[256, 256], dtype, 1);
                let b = input(&[256, 256], dtype, 2);
                g.throughput(Throughput::Elements(2 * 256 * 256 * 256));
                g.bench_function(
                    BenchmarkId::new(format!("{device}/{dtype}"), "256x256x256"),
                    |bench| bench.iter(|| a.matmul(&b).and_then(|y| y.eval()).expect("matmul")),
                );
                let x = input(&[1, 2048], dtype, 3);
                let w = input(&[2048, 2048], dtype, 4);
                g.throughput(Throughput::Bytes(w.nbytes() as u64));
                g.bench_function(
                    BenchmarkId::new(format!("{device}/{dtype}"), "1x2048 @ (2048x2048)^T"),
                    |bench| {
                        bench.iter(|| {
                            w.t()
                                .and_then(|wt| x.matmul(&wt))
                                .and_then(|y| y.eval())
                                .expect("matvec")
                        })
                    },
                );
            })
            .expect("device");
        }
    }
    g.finish();
}

/// 4-bit affine quantized matrix-vector product (group 64), per activation dtype.
fn quantized_matmul(c: &mut Criterion) {
    let mut g = configure(c, "mlx_quantized_matmul");
    for device in devices() {
        for dtype in DTYPES {
            with_device(device, || {
                let w = input(&[2048, 2048], Dtype::Float32, 5);
                let (wq, scales, biases) = quant::quantize(&w, 64, 4).expect("quantize");
                let (scales, biases) =
                    (scales.astype(dtype).unwrap(), biases.astype(dtype).unwrap());
                mlx_rs::eval(&[&wq, &scales, &biases]).expect("eval");
                let x = input(&[1, 2048], dtype, 6);
                let bytes = wq.nbytes() + scales.nbytes() + biases.nbytes();
                g.throughput(Throughput::Bytes(bytes as u64));
                g.bench_function(
                    BenchmarkId::new(format!("{device}/{dtype}"), "q4g64 1x2048 @ (2048x2048)^T"),
                    |bench| {
                        bench.iter(|| {
                            quant::quantized_matmul(&x, &wq, &scales, &biases, true, 64, 4)
                                .and_then(|y| y.eval())
                                .expect("qmm")
                        })
                    },
                );
            })
            .expect("device");
        }
    }
    g.finish();
}

/// RMS normalisation of 32 rows of 2048.
fn rms_norm(c: &mut Criterion) {
    let mut g = configure(c, "mlx_rms_norm");
    for device in devices() {
        for dtype in DTYPES {
            with_device(device, || {
                let x = input(&[32, 2048], dtype, 7);
                let w = input(&[2048], dtype, 8);
                g.throughput(Throughput::Bytes(x.nbytes() as u64));
                g.bench_function(
                    BenchmarkId::new(format!("{device}/{dtype}"), "32x2048"),
                    |bench| {
                        bench.iter(|| {
                            fast::rms_norm(&x, Some(&w), 1e-5)
                                .and_then(|y| y.eval())
                                .expect("rms_norm")
                        })
                    },
                );
            })
            .expect("device");
        }
    }
    g.finish();
}

/// Causal attention, 8 query heads over 2 key/value heads (grouped-query), 128 positions.
fn sdpa(c: &mut Criterion) {
    let mut g = configure(c, "mlx_sdpa");
    for device in devices() {
        for dtype in DTYPES {
            with_device(device, || {
                let q = input(&[1, 8, 128, 64], dtype, 9);
                let k = input(&[1, 2, 128, 64], dtype, 10);
                let v = input(&[1, 2, 128, 64], dtype, 11);
                let scale = 1.0 / 8.0;
                g.bench_function(
                    BenchmarkId::new(format!("{device}/{dtype}"), "B1 Hq8 Hkv2 L128 D64 causal"),
                    |bench| {
                        bench.iter(|| {
                            fast::scaled_dot_product_attention(
                                &q,
                                &k,
                                &v,
                                scale,
                                AttentionMask::Causal,
                            )
                            .and_then(|y| y.eval())
                            .expect("sdpa")
                        })
                    },
                );
            })
            .expect("device");
        }
    }
    g.finish();
}

criterion_group!(benches, matmul, quantized_matmul, rms_norm, sdpa);
criterion_main!(benches);
