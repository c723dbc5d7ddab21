//! The native kernels that multiply GGUF blocks as stored (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`,
//! `Q8_0`, `Q4_K`, `Q5_K`, `Q6_K`)
//! ([`mlx_rs::quant::block_matmul`]) against the loader's decoder
//! ([`mlx_models::load::ggml_quants::dequantize`], itself checked against the `gguf` package's
//! numpy decoder in `gguf_kquants.rs`) and an f64 dot product: random blocks, awkward shapes,
//! decode (M ≤ 16, the integer kernels on AVX-512 VNNI CPUs) and prefill (M > 16: 8-bit
//! activations and integer dot products on AVX-512 VNNI CPUs, else dequantized tiles and
//! sgemm), the exact (f32) kernels, integer activations, the fused prologue and epilogue, and
//! the typed errors of shapes that do not fit. Where the kernels round x to 8 bits, the
//! reference multiplies x rounded the same way (written here from the schemes' definitions), so
//! the bound stays that of f32 accumulation: an offset that saw another x than the codes do
//! would show.

use mlx_models::load::ggml_quants::dequantize;
use mlx_models::load::gguf_file::GgmlType;
use mlx_rs::quant::{self, BlockFormat, BlockRun};
use mlx_rs::{Array, Dtype, Error};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The kernels' switches are process-wide: tests that flip them run one at a time.
static SWITCHES: Mutex<()> = Mutex::new(());

/// Holds the switches; puts them back to their defaults when dropped (also when a test fails
/// with one flipped, so that one failure does not become every test's).
struct Switches {
    _reset: ResetSwitches,
    _lock: std::sync::MutexGuard<'static, ()>,
}
struct ResetSwitches;
impl Drop for ResetSwitches {
    fn drop(&mut self) {
        quant::set_native_qmm_exact(false);
        quant::set_native_int8_activations(false);
        INT8_DECODE.store(false, Ordering::SeqCst);
    }
}
fn switches() -> Switches {
    let lock = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    Switches {
        _reset: ResetSwitches,
        _lock: lock,
    }
}

/// A deterministic generator (64-bit LCG, high bits).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn unit(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
    }
}

fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// `rows` rows of `cols / values_per_block` random blocks: random codes, scales and mins, and
/// block factors in [0.001, 0.01] (`Q4_1` / `Q5_1`'s offset m in [-0.01, 0.01]).
fn random_blocks(format: BlockFormat, rows: usize, cols: usize, rng: &mut Lcg) -> Vec<u8> {
    let bb = format.block_bytes();
    let mut out = vec![0u8; rows * cols / format.values_per_block() * bb];
    for block in out.chunks_exact_mut(bb) {
        for b in block.iter_mut() {
            *b = rng.next() as u8;
        }
        let mut factor = || f16_bytes(0.001 + 0.009 * (rng.unit() * 0.5 + 0.5));
        match format {
            BlockFormat::Q4K | BlockFormat::Q5K => {
                block[0..2].copy_from_slice(&factor());
                block[2..4].copy_from_slice(&factor());
            }
            BlockFormat::Q6K => block[208..210].copy_from_slice(&factor()),
            BlockFormat::Q3K => block[108..110].copy_from_slice(&factor()),
            BlockFormat::Q2K => {
                block[80..82].copy_from_slice(&factor());
                block[82..84].copy_from_slice(&factor());
            }
            BlockFormat::Q4_1 | BlockFormat::Q5_1 => {
                block[0..2].copy_from_slice(&factor());
                block[2..4].copy_from_slice(&f16_bytes(0.01 * rng.unit()));
            }
            BlockFormat::Q4_0 | BlockFormat::Q5_0 | BlockFormat::Q8_0 => {
                block[0..2].copy_from_slice(&factor())
            }
        }
    }
    out
}

fn ggml_type(format: BlockFormat) -> GgmlType {
    match format {
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
    }
}

/// The formats of 32 values.
const SMALL: [BlockFormat; 5] = [
    BlockFormat::Q4_0,
    BlockFormat::Q4_1,
    BlockFormat::Q5_0,
    BlockFormat::Q5_1,
    BlockFormat::Q8_0,
];

/// y = x · Wᵀ in f64 from the decoder's weights, and Σ |x||w| per output (the error scale).
struct Reference {
    y: Vec<f64>,
    scale: Vec<f64>,
}

fn reference(
    format: BlockFormat,
    blocks: &[u8],
    x: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> Reference {
    let mut w = vec![0f32; n * k];
    dequantize(ggml_type(format), blocks, &mut w).unwrap();
    // x as the kernels round it (when they do), written from the schemes' definitions.
    let rounded = match rounding(m) {
        Rounding::None => x.iter().map(|&v| v as f64).collect(),
        Rounding::Runs32 => round_runs32(x),
        Rounding::Digit8 => round_digit8(x, k, digit_groups_in(format)),
    };
    let mut r = Reference {
        y: vec![0f64; m * n],
        scale: vec![0f64; m * n],
    };
    for i in 0..m {
        for j in 0..n {
            for e in 0..k {
                let b = w[j * k + e] as f64;
                r.y[i * n + j] += rounded[i * k + e] * b;
                r.scale[i * n + j] += (x[i * k + e] as f64 * b).abs();
            }
        }
    }
    r
}

/// How the kernels round x for M rows: not at all (f32, or 21 bits, within [`EXACT_REL`]),
/// to 8 bits per run of 32 values (the integer prefill), or to one 8-bit digit per group of 8
/// values (integer activations at decode).
enum Rounding {
    None,
    Runs32,
    Digit8,
}

/// Whether the integer activations at decode are switched on (by this file's tests).
static INT8_DECODE: AtomicBool = AtomicBool::new(false);

fn rounding(m: usize) -> Rounding {
    if integer_prefill(m) {
        Rounding::Runs32
    } else if m <= 16 && INT8_DECODE.load(Ordering::SeqCst) {
        Rounding::Digit8
    } else {
        Rounding::None
    }
}

/// The integer prefill's rounding: per run of 32 values, s = max |x| / 127 (in f32) and
/// X = round(x / s) (ties to even, computed as x · (1 / s) in f32) in [-127, 127]; x ≈ X s.
fn round_runs32(x: &[f32]) -> Vec<f64> {
    x.chunks(32)
        .flat_map(|run| {
            let amax = run.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let s = amax / 127.0;
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            let inv = if inv.is_finite() { inv } else { 0.0 };
            run.iter()
                .map(move |&v| (v * inv).round_ties_even().clamp(-127.0, 127.0) as f64 * s as f64)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The decode kernels' one-digit rounding: per group of 8 values, with f the exponent field of
/// their largest magnitude (at least 24), X = round(x · 2^(133 − f)) in [-127, 127] and
/// x ≈ X · 2^(f − 133). The groups follow the runs of `run` values that share a weight scale:
/// values 4i .. 4i + 3 with run / 2 + 4i .. run / 2 + 4i + 3 of each run, for i < run / 8.
fn round_digit8(x: &[f32], k: usize, run: usize) -> Vec<f64> {
    let mut out = vec![0f64; x.len()];
    let groups: Vec<[usize; 8]> = (0..k / run)
        .flat_map(|t| {
            (0..run / 8).map(move |i| {
                let a = run * t + 4 * i;
                let b = a + run / 2;
                [a, a + 1, a + 2, a + 3, b, b + 1, b + 2, b + 3]
            })
        })
        .collect();
    for (row, out) in x.chunks(k).zip(out.chunks_mut(k)) {
        for g in &groups {
            let amax = g.iter().fold(0f32, |a, &e| a.max(row[e].abs()));
            let f = ((amax.to_bits() >> 23) & 0xFF).max(24);
            let up = f32::from_bits((133 + 127 - f) << 23);
            let e = f32::from_bits((f + 127 - 133) << 23);
            for &i in g {
                out[i] = (row[i] * up).round_ties_even().clamp(-127.0, 127.0) as f64 * e as f64;
            }
        }
    }
    out
}

/// The runs of values that share one weight scale (and so the decode kernels' groups of 8,
/// `round_digit8`): the sub-blocks of 16 of Q2_K, Q3_K and Q6_K, else 32 (the formats of 32
/// values, Q4_K's and Q5_K's sub-blocks).
fn digit_groups_in(format: BlockFormat) -> usize {
    match format {
        BlockFormat::Q2K | BlockFormat::Q3K | BlockFormat::Q6K => 16,
        _ => 32,
    }
}

/// Whether M rows of x take the integer prefill (more than 16 rows on an AVX-512 VNNI CPU
/// outside the exact mode).
fn integer_prefill(m: usize) -> bool {
    m > 16 && quant::native_qmm_isa() == quant::QmmIsa::Avx512Vnni
}

/// Runs one case and checks every output within `rel` of the error scale.
fn check(format: BlockFormat, m: usize, n: usize, k: usize, seed: u64, rel: f64) {
    let mut rng = Lcg(seed);
    let blocks = random_blocks(format, n, k, &mut rng);
    let x: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
    let Reference { y: want, scale } = reference(format, &blocks, &x, m, n, k);
    let w = Array::from_bytes(
        &blocks,
        &[n as i32, format.row_bytes(k).unwrap() as i32],
        Dtype::Uint8,
    )
    .unwrap();
    let xa = Array::from_slice(&x, &[m as i32, k as i32]).unwrap();
    let got = quant::block_matmul(&xa, &w, format)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(got.len(), m * n);
    for i in 0..m * n {
        let err = (got[i] as f64 - want[i]).abs();
        assert!(
            err <= rel * scale[i] + 1e-6,
            "{format} M={m} N={n} K={k} output {i}: {} vs {} (scale {})",
            got[i],
            want[i],
            scale[i]
        );
    }
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 256),
    (1, 4, 256),
    (1, 7, 512),
    (1, 37, 1280),
    (2, 5, 768),
    (3, 9, 256),
    (3, 6, 512),
    (3, 6, 768),
    (5, 18, 512),
    (8, 33, 1024),
    (16, 20, 256),
    (17, 24, 512), // prefill path (sgemm) where BLAS is present
    (40, 70, 768),
];

/// Rows of the formats of 32 values that are not whole 256s: odd block counts (one, three,
/// eighteen and a tail), SmolLM2's 576 and 1536, at decode, small M and prefill.
const SMALL_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 32),
    (1, 5, 96),
    (1, 9, 576),
    (1, 6, 1536),
    (2, 7, 160),
    (3, 5, 576),
    (4, 9, 224),
    (5, 3, 32),
    (16, 4, 96),
    (17, 10, 576),
    (40, 12, 96),
];

/// f32 accumulation of up to 1280 products, plus the activations' 21-bit rounding (2^-21 of a
/// block's largest magnitude, which bounds each term's error by 2^-21 Σ|x||w| at worst).
const EXACT_REL: f64 = 2e-6;

#[test]
fn q4_k_blocks_match_the_decoder() {
    let _g = switches();
    if !quant::block_formats_available() {
        return;
    }
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check(BlockFormat::Q4K, m, n, k, 11 + i as u64, EXACT_REL);
    }
}

#[test]
fn q5_k_blocks_match_the_decoder() {
    let _g = switches();
    if !quant::block_formats_available() {
        return;
    }
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check(BlockFormat::Q5K, m, n, k, 51 + i as u64, EXACT_REL);
    }
}

#[test]
fn q2_k_and_q3_k_blocks_match_the_decoder() {
    let _g = switches();
    if !quant::block_formats_available() {
        return;
    }
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check(BlockFormat::Q2K, m, n, k, 201 + i as u64, EXACT_REL);
        check(BlockFormat::Q3K, m, n, k, 301 + i as u64, EXACT_REL);
    }
}

#[test]
fn q6_k_blocks_match_the_decoder() {
    let _g = switches();
    if !quant::block_formats_available() {
        return;
    }
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check(BlockFormat::Q6K, m, n, k, 101 + i as u64, EXACT_REL);
    }
}

/// Each format of 32 values on [`SMALL_SHAPES`] and on the K-quants' [`SHAPES`].
#[test]
fn small_formats_match_the_decoder() {
    let _g = switches();
    if !quant::block_formats_available() {
        return;
    }
    for (f, format) in SMALL.into_iter().enumerate() {
        for (i, &(m, n, k)) in SMALL_SHAPES.iter().chain(SHAPES).enumerate() {
            check(format, m, n, k, 1000 * f as u64 + i as u64, EXACT_REL);
        }
    }
}

#[test]
fn exact_kernels_and_integer_activations_match_the_decoder() {
    let _g = switches();
    if !quant::block_formats_available() {
        return;
    }
    // The portable kernels (f32 activations).
    quant::set_native_qmm_exact(true);
    for format in BlockFormat::ALL {
        check(format, 1, 9, 512, 7, 1e-6);
        check(format, 3, 5, 256, 8, 1e-6);
        if format.values_per_block() == 32 {
            check(format, 2, 7, 96, 6, 1e-6);
        }
    }
    quant::set_native_qmm_exact(false);
    // One 8-bit digit per value: the product of the rounded x (round_digit8), offsets included.
    if quant::set_native_int8_activations(true) {
        INT8_DECODE.store(true, Ordering::SeqCst);
        for format in BlockFormat::ALL {
            check(format, 1, 9, 512, 9, EXACT_REL);
            check(format, 4, 6, 768, 10, EXACT_REL);
            if format.values_per_block() == 32 {
                check(format, 1, 5, 608, 11, EXACT_REL);
            }
        }
    }
    quant::set_native_int8_activations(false);
    INT8_DECODE.store(false, Ordering::SeqCst);
}

#[test]
fn prologue_and_epilogue_are_applied() {
    let _g = switches();
    if !quant::block_formats_available() {
        return;
    }
    let mut rng = Lcg(5);
    let (m, n, k) = (2usize, 6usize, 512usize);
    let format = BlockFormat::Q4K;
    let blocks = random_blocks(format, n, k, &mut rng);
    let x: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
    let norm_w: Vec<f32> = (0..k).map(|_| 1.0 + 0.5 * rng.unit()).collect();
    let residual: Vec<f32> = (0..m * n).map(|_| rng.unit()).collect();
    let eps = 1e-5f32;
    // The normalised x by hand, in f64.
    let mut xn = vec![0f32; m * k];
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / k as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for e in 0..k {
            xn[i * k + e] = (row[e] as f64 * inv * norm_w[e] as f64) as f32;
        }
    }
    let Reference { y: want, scale, .. } = reference(format, &blocks, &xn, m, n, k);
    let w = Array::from_bytes(
        &blocks,
        &[n as i32, format.row_bytes(k).unwrap() as i32],
        Dtype::Uint8,
    )
    .unwrap();
    let got = quant::block_matmul_fused(
        &Array::from_slice(&x, &[m as i32, k as i32]).unwrap(),
        &w,
        &[BlockRun {
            format,
            rows: n as i32,
        }],
        Some((&Array::from_slice(&norm_w, &[k as i32]).unwrap(), eps)),
        Some(&Array::from_slice(&residual, &[m as i32, n as i32]).unwrap()),
    )
    .unwrap()
    .to_vec::<f32>()
    .unwrap();
    for i in 0..m * n {
        let err = (got[i] as f64 - want[i] - residual[i] as f64).abs();
        assert!(
            err <= 1e-5 * scale[i] + 1e-5,
            "output {i}: {} vs {}",
            got[i],
            want[i] + residual[i] as f64
        );
    }
}

/// A fused projection stored in two formats (q and k in `Q4_K` or `Q5_K`, v in `Q6_K`): the
/// runs' bytes one after the other, each output row as its own format gives it, at decode and
/// prefill.
#[test]
fn runs_of_two_formats_are_one_matrix() {
    let _g = switches();
    if !quant::block_formats_available() {
        return;
    }
    check_runs(BlockFormat::Q4K, BlockFormat::Q6K, 512, 77);
    check_runs(BlockFormat::Q5K, BlockFormat::Q6K, 512, 78);
    // A format of 32 values beside a K-quant (x prepared both ways), and two of them on rows
    // that are no whole 256s (Gemma 3's Q5_0 / Q8_0 parts).
    check_runs(BlockFormat::Q5_0, BlockFormat::Q4K, 512, 79);
    check_runs(BlockFormat::Q8_0, BlockFormat::Q6K, 768, 80);
    check_runs(BlockFormat::Q5_0, BlockFormat::Q8_0, 640, 81);
    // As a Q3_K_M file stores them.
    check_runs(BlockFormat::Q3K, BlockFormat::Q5K, 512, 82);
    check_runs(BlockFormat::Q2K, BlockFormat::Q3K, 768, 83);
}

fn check_runs(first: BlockFormat, second: BlockFormat, k: usize, seed: u64) {
    let mut rng = Lcg(seed);
    let (n4, n6) = (10usize, 6usize);
    let b4 = random_blocks(first, n4, k, &mut rng);
    let b6 = random_blocks(second, n6, k, &mut rng);
    let joined: Vec<u8> = b4.iter().chain(b6.iter()).copied().collect();
    let w = Array::from_bytes(&joined, &[joined.len() as i32], Dtype::Uint8).unwrap();
    let runs = [
        BlockRun {
            format: first,
            rows: n4 as i32,
        },
        BlockRun {
            format: second,
            rows: n6 as i32,
        },
    ];
    for m in [1usize, 3, 20] {
        let x: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
        let r4 = reference(first, &b4, &x, m, n4, k);
        let r6 = reference(second, &b6, &x, m, n6, k);
        let xa = Array::from_slice(&x, &[m as i32, k as i32]).unwrap();
        let got = quant::block_matmul_fused(&xa, &w, &runs, None, None)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let n = n4 + n6;
        assert_eq!(got.len(), m * n);
        for i in 0..m {
            for j in 0..n {
                let (r, at) = if j < n4 {
                    (&r4, i * n4 + j)
                } else {
                    (&r6, i * n6 + j - n4)
                };
                let (want, scale) = (r.y[at], r.scale[at]);
                let err = (got[i * n + j] as f64 - want).abs();
                assert!(
                    err <= EXACT_REL * scale + 1e-6,
                    "{first} M={m} row {i} output {j}: {} vs {want}",
                    got[i * n + j]
                );
            }
        }
    }
    // Runs that do not add up to the bytes are a typed error.
    let short = [runs[0]];
    assert!(matches!(
        quant::block_matmul_fused(
            &Array::ones(&[1, k as i32], Dtype::Float32).unwrap(),
            &w,
            &short,
            None,
            None
        ),
        Err(Error::Shape(_))
    ));
}

#[test]
fn shapes_that_do_not_fit_are_typed_errors() {
    let w = Array::from_bytes(&[0u8; 288], &[2, 144], Dtype::Uint8).unwrap();
    let bad_k = Array::ones(&[1, 512], Dtype::Float32).unwrap();
    assert!(matches!(
        quant::block_matmul(&bad_k, &w, BlockFormat::Q4K),
        Err(Error::Shape(_))
    ));
    let x = Array::ones(&[1, 256], Dtype::Float32).unwrap();
    assert!(matches!(
        quant::block_matmul(&x, &w, BlockFormat::Q6K),
        Err(Error::Shape(_))
    ));
    let not_bytes = Array::ones(&[2, 144], Dtype::Float32).unwrap();
    assert!(matches!(
        quant::block_matmul(&x, &not_bytes, BlockFormat::Q4K),
        Err(Error::Shape(_))
    ));
    let odd = Array::ones(&[1, 100], Dtype::Float32).unwrap();
    assert!(matches!(
        quant::block_matmul(&odd, &w, BlockFormat::Q4K),
        Err(Error::Shape(_))
    ));
    // 288 bytes are 16 Q4_0 blocks: 2 rows of 256 fit, 2 rows of 250 values do not; Q4_1's
    // 20-byte blocks do not divide them at all.
    let x256 = Array::ones(&[1, 256], Dtype::Float32).unwrap();
    if quant::block_formats_available() {
        let y = quant::block_matmul(&x256, &w, BlockFormat::Q4_0).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0; 2]); // zero bytes: d = 0
    }
    let x250 = Array::ones(&[1, 250], Dtype::Float32).unwrap();
    assert!(matches!(
        quant::block_matmul(&x250, &w, BlockFormat::Q4_0),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        quant::block_matmul(&x256, &w, BlockFormat::Q4_1),
        Err(Error::Shape(_))
    ));
}

/// A matrix split by columns (as tensor parallelism splits o_proj and down_proj) gives, summed,
/// the whole matrix's product: the integer prefill quantizes x per run of 32 values, the same
/// runs either way.
#[test]
fn column_halves_add_up_to_the_whole() {
    let _g = switches();
    if !quant::block_formats_available() {
        return;
    }
    for format in [BlockFormat::Q4_1, BlockFormat::Q8_0, BlockFormat::Q4K] {
        let per = format.values_per_block();
        let (m, n) = (40usize, 24usize);
        let (ka, kb) = if per == 32 { (320, 256) } else { (512, 256) };
        let k = ka + kb;
        let mut rng = Lcg(90);
        let blocks = random_blocks(format, n, k, &mut rng);
        let x: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
        let bb = format.block_bytes();
        let (na, nb) = (ka / per, kb / per);
        let mut left = Vec::new();
        let mut right = Vec::new();
        for row in blocks.chunks_exact((na + nb) * bb) {
            left.extend_from_slice(&row[..na * bb]);
            right.extend_from_slice(&row[na * bb..]);
        }
        let xs = |lo: usize, hi: usize| {
            let v: Vec<f32> = (0..m)
                .flat_map(|i| x[i * k + lo..i * k + hi].to_vec())
                .collect();
            Array::from_slice(&v, &[m as i32, (hi - lo) as i32]).unwrap()
        };
        let mul = |x: &Array, w: &[u8]| {
            let w = Array::from_bytes(w, &[n as i32, (w.len() / n) as i32], Dtype::Uint8).unwrap();
            quant::block_matmul(x, &w, format)
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
        };
        let whole = mul(&xs(0, k), &blocks);
        let a = mul(&xs(0, ka), &left);
        let b = mul(&xs(ka, k), &right);
        for i in 0..m * n {
            let sum = a[i] + b[i];
            assert!(
                (sum - whole[i]).abs() <= 1e-4 * whole[i].abs().max(1.0),
                "{format} output {i}: {} + {} = {sum} vs {}",
                a[i],
                b[i],
                whole[i]
            );
        }
    }
}

/// Rows looked up from a table of blocks ([`quant::block_rows`], the embedding of a GGUF file
/// kept as stored) are the decoder's rows; ids outside the table give rows of NaN.
#[test]
fn block_rows_are_the_decoders_rows() {
    let (rows, k) = (7usize, 512usize);
    for (f, format) in BlockFormat::ALL.into_iter().enumerate() {
        let mut rng = Lcg(700 + f as u64);
        let blocks = random_blocks(format, rows, k, &mut rng);
        let mut want = vec![0f32; rows * k];
        dequantize(ggml_type(format), &blocks, &mut want).unwrap();
        let per = k / format.values_per_block();
        let table = Array::from_bytes(
            &blocks,
            &[rows as i32, per as i32, format.block_bytes() as i32],
            Dtype::Uint8,
        )
        .unwrap();
        let ids = [6i32, 0, 3, 3, -1, 7, 1];
        let got = quant::block_rows(
            &table,
            &Array::from_slice(&ids, &[1, ids.len() as i32]).unwrap(),
            format,
        )
        .unwrap();
        assert_eq!(got.shape(), vec![1, ids.len() as i32, k as i32]);
        let got = got.to_vec::<f32>().unwrap();
        for (i, &id) in ids.iter().enumerate() {
            let row = &got[i * k..(i + 1) * k];
            if !(0..rows as i32).contains(&id) {
                assert!(row.iter().all(|v| v.is_nan()), "{format}: id {id}");
                continue;
            }
            let expected = &want[id as usize * k..(id as usize + 1) * k];
            for (e, (&g, &w)) in row.iter().zip(expected).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                    "{format} row {id} value {e}: {g} vs {w}"
                );
            }
        }
    }
    // A table whose block bytes name another format, and float ids, are typed errors.
    let table = Array::from_bytes(&[0u8; 2 * 34], &[2, 1, 34], Dtype::Uint8).unwrap();
    let ids = Array::from_slice(&[0i32], &[1]).unwrap();
    assert!(matches!(
        quant::block_rows(&table, &ids, BlockFormat::Q4_0),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        quant::block_rows(
            &table,
            &Array::from_slice(&[0f32], &[1]).unwrap(),
            BlockFormat::Q8_0
        ),
        Err(Error::Shape(_))
    ));
}
