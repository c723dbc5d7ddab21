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
//! `qmm_blocks_dram` decodes GGUF block matrices (every format) of Qwen2.5-1.5B's MLP shapes
//! from DRAM, read as stored (`quant::block_matmul`) against the same matrices as the loader
//! converts them without blocks (`ggml_quants::to_affine`: `Q4_0`, `Q4_1`, `Q4_K` to 4-bit,
//! `Q5_0`, `Q5_1`, `Q8_0`, `Q5_K` to 8-bit triplets, f16 scales and biases where exact;
//! `requantize_affine8`: `Q6_K` to 8-bit), time per call side by side; `qmm_blocks_cached`
//! the formats of 32 values on SmolLM2-135M's shapes, in the cache.
//!
//! `qmm_blocks_batched` multiplies 1, 4 and 16 rows of x (decode of that many sequences
//! together, which the decode kernels take up to 16) with block matrices in the cache:
//! SmolLM2-135M's `Q4_1` MLP shape and a `Q4_K` / `Q6_K` one of Qwen2.5-1.5B's attention.
//! Compute, not reading, bounds these; throughput is counted in multiply-adds.
//!
//! ```text
//! cargo bench --bench qmm_kernel
//! cargo bench --bench qmm_kernel -- qmm_kernel_dram
//! cargo bench --bench qmm_kernel -- qmm_blocks_dram
//! cargo bench --bench qmm_kernel -- qmm_blocks_cached
//! cargo bench --bench qmm_kernel -- qmm_blocks_batched
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

/// `rows x cols` random blocks of `format` (random codes, scales and mins; block factors in
/// [0.001, 0.01]; `Q4_1` / `Q5_1`'s offset m in [-0.01, 0.01]).
fn random_blocks(format: quant::BlockFormat, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    use quant::BlockFormat;
    let bb = format.block_bytes();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let n = rows * cols / format.values_per_block() * bb;
    let mut out: Vec<u8> = (0..n).map(|_| next() as u8).collect();
    for block in out.chunks_exact_mut(bb) {
        let mut factor = |scale: f32| {
            let v = 0.001 + 0.009 * (next() % 1000) as f32 / 1000.0;
            half::f16::from_f32(v * scale).to_le_bytes()
        };
        match format {
            BlockFormat::Q6K => block[208..210].copy_from_slice(&factor(1.0)),
            BlockFormat::Q3K => block[108..110].copy_from_slice(&factor(1.0)),
            BlockFormat::Q2K => {
                block[80..82].copy_from_slice(&factor(1.0));
                block[82..84].copy_from_slice(&factor(1.0));
            }
            BlockFormat::Q4_0 | BlockFormat::Q5_0 | BlockFormat::Q8_0 => {
                block[0..2].copy_from_slice(&factor(1.0))
            }
            BlockFormat::Q4_1 | BlockFormat::Q5_1 => {
                block[0..2].copy_from_slice(&factor(1.0));
                block[2..4].copy_from_slice(&factor(-1.0));
            }
            BlockFormat::Q4K | BlockFormat::Q5K => {
                block[0..2].copy_from_slice(&factor(1.0));
                block[2..4].copy_from_slice(&factor(1.0));
            }
        }
    }
    out
}

/// The blocks of `format`, `n x k`, read as stored against what the loader makes of them
/// without blocks (`to_affine`, with f16 scales and biases where every one is exact in f16, as
/// the loader stores them; `requantize_affine8` for `Q6_K`), decode (M = 1), time per call side
/// by side. Each side cycles through copies that together take `set_bytes` (1: one copy).
fn compare_blocks(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    format: quant::BlockFormat,
    (n, k): (usize, usize),
    set_bytes: usize,
) {
    use mlx_models::load::ggml_quants;
    use mlx_models::load::gguf_file::GgmlType;
    use quant::BlockFormat;
    let ty = match format {
        BlockFormat::Q4_0 => GgmlType::Q4_0,
        BlockFormat::Q4_1 => GgmlType::Q4_1,
        BlockFormat::Q5_0 => GgmlType::Q5_0,
        BlockFormat::Q5_1 => GgmlType::Q5_1,
        BlockFormat::Q8_0 => GgmlType::Q8_0,
        BlockFormat::Q2K => GgmlType::Q2K,
        BlockFormat::Q3K => GgmlType::Q3K,
        BlockFormat::Q4K => GgmlType::Q4K,
        BlockFormat::Q5K => GgmlType::Q5K,
        BlockFormat::Q6K => GgmlType::Q6K,
    };
    let block_copies = set_bytes.div_ceil(n * format.row_bytes(k).unwrap());
    let raw: Vec<Vec<u8>> = (0..block_copies)
        .map(|i| random_blocks(format, n, k, 100 + i as u64))
        .collect();
    let mut affine: Vec<(Array, Array, Array, i32)> = Vec::new();
    let mut affine_bytes = 0;
    for b in raw.iter().cycle() {
        if affine_bytes >= set_bytes {
            break;
        }
        let t = if format == BlockFormat::Q6K {
            ggml_quants::requantize_affine8(ty, b, k).expect("requantize")
        } else {
            ggml_quants::to_affine(ty, b).expect("affine")
        };
        let packed = [n as i32, (k as u32 * t.bits / 32) as i32];
        let groups = [n as i32, (k / 32) as i32];
        let exact = |v: &[f32]| v.iter().all(|&x| half::f16::from_f32(x).to_f32() == x);
        let dtype = if exact(&t.scales) && exact(&t.biases) {
            Dtype::Float16
        } else {
            Dtype::Float32
        };
        let factors = |v: &[f32]| {
            Array::from_slice(v, &groups)
                .and_then(|a| a.astype(dtype))
                .expect("factors")
        };
        let m = (
            Array::from_slice(&t.packed, &packed).expect("packed"),
            factors(&t.scales),
            factors(&t.biases),
            t.bits as i32,
        );
        m.1.eval().expect("eval");
        m.2.eval().expect("eval");
        affine_bytes += m.0.nbytes() + m.1.nbytes() + m.2.nbytes();
        affine.push(m);
    }
    let blocks: Vec<Array> = raw
        .into_iter()
        .map(|b| {
            let shape = [n as i32, format.row_bytes(k).unwrap() as i32];
            Array::from_bytes(&b, &shape, Dtype::Uint8).expect("blocks")
        })
        .collect();
    let x = input(&[1, k as i32], Dtype::Float32, 2);
    let shape = format!("1x{k}@{n}x{k}T");
    g.throughput(Throughput::Bytes(blocks[0].nbytes() as u64));
    let mut next = 0;
    g.bench_function(
        BenchmarkId::new(format!("{format}/blocks"), &shape),
        |bch| {
            bch.iter(|| {
                let w = &blocks[next % blocks.len()];
                next += 1;
                let y = quant::block_matmul(&x, w, format).expect("blocks");
                y.eval().expect("eval");
                y
            })
        },
    );
    let (wq, sc, bi, bits) = &affine[0];
    g.throughput(Throughput::Bytes(
        (wq.nbytes() + sc.nbytes() + bi.nbytes()) as u64,
    ));
    let mut next = 0;
    g.bench_function(
        BenchmarkId::new(format!("{format}/affine{bits}"), &shape),
        |bch| {
            bch.iter(|| {
                let (wq, s, b, bits) = &affine[next % affine.len()];
                next += 1;
                let y = quant::quantized_matmul(&x, wq, s, b, true, 32, *bits).expect("qmm");
                y.eval().expect("eval");
                y
            })
        },
    );
}

/// GGUF blocks read as stored against their affine conversion, decode from DRAM (each side
/// cycles through copies that together take 640 MiB, over twice a 300 MiB L3), on
/// Qwen2.5-1.5B's MLP shapes; the formats of 32 values also on SmolLM2-135M's (in the cache, as
/// its decode reads them: one copy).
fn bench_blocks_dram(c: &mut Criterion) {
    use quant::BlockFormat;
    if !quant::block_formats_available() {
        return;
    }
    let mut g = c.benchmark_group("qmm_blocks_dram");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    with_device(Device::cpu(), || {
        // Q2_K and Q3_K have no affine form (without blocks the loader decodes them to f16).
        let affine = BlockFormat::ALL
            .into_iter()
            .filter(|f| !matches!(f, BlockFormat::Q2K | BlockFormat::Q3K));
        for format in affine {
            for shape in [(8960usize, 1536usize), (1536, 8960)] {
                compare_blocks(&mut g, format, shape, 640 << 20);
            }
        }
    })
    .expect("cpu stream");
    g.finish();
    let mut g = c.benchmark_group("qmm_blocks_cached");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    with_device(Device::cpu(), || {
        for format in BlockFormat::ALL.into_iter().take(5) {
            for shape in [(3072usize, 576usize), (576, 1536)] {
                compare_blocks(&mut g, format, shape, 1);
            }
        }
    })
    .expect("cpu stream");
    g.finish();
}

/// Several rows of x at once against block matrices in the cache: the decode kernels' compute
/// per row, which bounds how far decoding many sequences together gains.
fn bench_blocks_batched(c: &mut Criterion) {
    use quant::BlockFormat;
    if !quant::block_formats_available() {
        return;
    }
    let mut g = c.benchmark_group("qmm_blocks_batched");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    with_device(Device::cpu(), || {
        for (format, n, k) in [
            (BlockFormat::Q4_1, 1536usize, 576usize),
            (BlockFormat::Q4K, 1536, 1536),
            (BlockFormat::Q6K, 1536, 1536),
        ] {
            let shape = [n as i32, format.row_bytes(k).unwrap() as i32];
            let w = Array::from_bytes(&random_blocks(format, n, k, 7), &shape, Dtype::Uint8)
                .expect("blocks");
            for m in [1usize, 4, 16] {
                let x = input(&[m as i32, k as i32], Dtype::Float32, 3);
                g.throughput(Throughput::Elements((m * n * k) as u64));
                g.bench_function(
                    BenchmarkId::new(format!("{format}"), format!("{m}x{k}@{n}x{k}T")),
                    |bch| {
                        bch.iter(|| {
                            let y = quant::block_matmul(&x, &w, format).expect("blocks");
                            y.eval().expect("eval");
                            y
                        })
                    },
                );
            }
        }
    })
    .expect("cpu stream");
    g.finish();
}

criterion_group!(
    benches,
    bench,
    bench_dram,
    bench_blocks_dram,
    bench_blocks_batched
);
criterion_main!(benches);
