//! GGUF k-quants through the loader: a tiny qwen2 file with a `Q4_K` and a `Q6_K` matrix, and
//! one with a `Q5_K` matrix (blocks built by scripts/fixtures/gguf_kquants.py, reference values
//! from the `gguf` package's decoder). `Q4_K` must become a lossless 4-bit triplet, `Q6_K` an
//! 8-bit triplet within the 8-bit rounding bound, and the config's `quantization` entry must
//! describe both; kept as stored, all three multiply to the reference.

mod common;

use mlx_models::load::gguf::read_gguf_checkpoint;
use mlx_models::load::{prepare_weights, LoadOptions};
use mlx_rs::{Device, Dtype};

const Q4_K_MODULE: &str = "model.layers.0.self_attn.v_proj";
const Q6_K_MODULE: &str = "model.layers.0.mlp.up_proj";

/// The reference values and `[rows, cols]` of a tensor of the fixture (by GGUF name).
fn reference(name: &str) -> (Vec<f32>, usize, usize) {
    reference_in("gguf_kquants.json", name)
}

/// The reference values and `[rows, cols]` of a tensor (by GGUF name) of a fixture's JSON.
fn reference_in(json: &str, name: &str) -> (Vec<f32>, usize, usize) {
    let fixture = common::json(json);
    let t = &fixture[name];
    let shape = common::i32s(&t["shape"]);
    let hex = t["values_f32_hex"].as_str().unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (rows, cols) = (shape[0] as usize, shape[1] as usize);
    assert_eq!(values.len(), rows * cols);
    (values, rows, cols)
}

/// The triplet of `module`, checked for MLX's layout at `bits`, dequantized in f32.
fn dequantized(weights: &mlx_models::weights::Weights, module: &str, bits: i32) -> Vec<f32> {
    let w = weights.get(&format!("{module}.weight")).unwrap();
    let scales = weights.get(&format!("{module}.scales")).unwrap();
    let biases = weights.get(&format!("{module}.biases")).unwrap();
    let (rows, cols) = (scales.shape()[0], scales.shape()[1] * 32);
    assert_eq!(w.dtype(), Dtype::Uint32, "{module}");
    assert_eq!(w.shape(), vec![rows, cols * bits / 32], "{module}");
    assert_eq!(biases.shape(), scales.shape(), "{module}");
    mlx_rs::quant::dequantize(
        w,
        &scales.astype(Dtype::Float32).unwrap(),
        &biases.astype(Dtype::Float32).unwrap(),
        32,
        bits,
    )
    .unwrap()
    .to_vec::<f32>()
    .unwrap()
}

/// The bounds on how far the loader's 8-bit, group-32 requantization of the decoded `Q6_K`
/// values (`ggml_quants::requantize_affine8`) may move a weight of `group` (reference values),
/// as `(rounded, clipped)`. With `step = (max - min) / 255`: the bias is `min` rounded down to
/// f16 (at most `2^-11` of `|min|` below it, or f16's smallest subnormal step), the scale
/// `(max - bias) / 255` rounded up to f16 (at most `2^-10` relative above), so every value has a
/// code in 0..=255 and a rounded weight moves at most half the scale. `clipped` is the bound the
/// older requantization (MLX's `quantize`, which may clip the far extreme) kept: this one must
/// stay under `rounded` everywhere.
fn q6_k_bounds(group: &[f32]) -> (f32, f32) {
    let max = group.iter().copied().fold(f32::MIN, f32::max);
    let min = group.iter().copied().fold(f32::MAX, f32::min);
    let step = (max - min) / 255.0;
    let ulp = 2f32.powi(-11);
    let big = max.abs().max(min.abs());
    // The scale: the range widened by the bias's rounding, then rounded up to f16.
    let scale = (step + (min.abs() * ulp + 2f32.powi(-24)) / 255.0) * (1.0 + 2.0 * ulp);
    // f32 rounding of the decode and of scale * code + bias: a few units of 2^-24 of `big`.
    let f32_rounding = 8.0 * 2f32.powi(-24) * big;
    let old_scale = step * (1.0 + 1.0 / 127.0);
    let old_f16 = 255.0 * old_scale * ulp + 2.0 * (big * ulp + 2f32.powi(-24));
    (0.5 * scale + f32_rounding, (max - min) / 256.0 + old_f16)
}

#[test]
fn q4_k_and_q6_k_become_affine_triplets() {
    let ck = read_gguf_checkpoint(&common::fixture("gguf_kquants.gguf")).unwrap();
    let mut names = ck.weights.names();
    names.sort();
    let mut want: Vec<String> = [Q4_K_MODULE, Q6_K_MODULE]
        .iter()
        .flat_map(|m| ["biases", "scales", "weight"].map(|s| format!("{m}.{s}")))
        .collect();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(ck.config.model_type, "qwen2");
    assert_eq!((ck.config.hidden_size, ck.config.vocab_size), (256, 4));

    // quantization: group 32; one 4-bit and one 8-bit module, the tie going to 4 bits as the
    // default and the Q6_K module listed as an 8-bit override.
    let q = ck.config.quantization().unwrap().unwrap();
    assert_eq!((q.default.group_size, q.default.bits), (32, 4));
    assert_eq!(q.mode, "affine");
    let p4 = q.for_module(Q4_K_MODULE).unwrap();
    let p6 = q.for_module(Q6_K_MODULE).unwrap();
    assert_eq!((p4.group_size, p4.bits), (32, 4));
    assert_eq!((p6.group_size, p6.bits), (32, 8));
    assert_eq!(q.overrides.len(), 1, "{:?}", q.overrides);
    assert!(q.overrides.contains_key(Q6_K_MODULE));

    // Q4_K: f32 scales and biases, [2, 256] → weight [2, 32], scales [2, 8]; exact.
    let (expected, rows, cols) = reference("blk.0.attn_v.weight");
    let scales = ck.weights.get(&format!("{Q4_K_MODULE}.scales")).unwrap();
    assert_eq!(scales.dtype(), Dtype::Float32);
    assert_eq!(scales.shape(), vec![rows as i32, cols as i32 / 32]);
    let got = dequantized(&ck.weights, Q4_K_MODULE, 4);
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            g == e,
            "Q4_K [{}, {}]: {g} vs reference {e}",
            i / cols,
            i % cols
        );
    }

    // Q6_K: requantized to 8 bits. Every weight is within a step of its group; all but the
    // clipped extremes (code 0 or 255) within half a step.
    let fixture = common::json("gguf_kquants.json");
    let q6_steps = common::f32s(&fixture["blk.0.ffn_up.weight"]["sub_block_steps"]);
    let (expected, rows, cols) = reference("blk.0.ffn_up.weight");
    let scales = ck.weights.get(&format!("{Q6_K_MODULE}.scales")).unwrap();
    assert_eq!(scales.shape(), vec![rows as i32, cols as i32 / 32]);
    let words = ck
        .weights
        .get(&format!("{Q6_K_MODULE}.weight"))
        .unwrap()
        .to_vec::<u32>()
        .unwrap();
    let got = dequantized(&ck.weights, Q6_K_MODULE, 8);
    assert_eq!(got.len(), expected.len());
    let (mut inexact, mut clipped) = (0, 0);
    // Per row: the largest error in units of Q6_K's own step of the weight's sub-block.
    let mut vs_q6_step = vec![0f32; rows];
    for (g0, (got, want)) in got.chunks(32).zip(expected.chunks(32)).enumerate() {
        let (rounded, clip) = q6_k_bounds(want);
        for (k, (g, e)) in got.iter().zip(want).enumerate() {
            let i = g0 * 32 + k;
            let (r, c) = (i / cols, i % cols);
            let code = (words[i / 4] >> (8 * (i % 4))) & 0xff;
            let err = (g - e).abs();
            inexact += usize::from(g != e);
            assert!(
                err <= clip,
                "Q6_K [{r}, {c}]: {g} vs reference {e} (error {err} > bound {clip})"
            );
            if err > rounded {
                clipped += 1;
                assert!(
                    code == 0 || code == 255,
                    "Q6_K [{r}, {c}]: {g} vs reference {e}: error {err} > half a step \
                     ({rounded}) at code {code}"
                );
            }
            let q6 = q6_steps[i / 16].abs();
            if q6 > 0.0 {
                vs_q6_step[r] = vs_q6_step[r].max(err / q6);
            }
        }
    }
    assert_eq!(clipped, 0, "no weight moves past half a step");
    eprintln!(
        "Q6_K: {inexact} of {} weights inexact, {clipped} clipped past half an 8-bit step; \
         largest error / Q6_K sub-block step per row: {vs_q6_step:?}",
        got.len()
    );
    assert!(
        inexact > 0,
        "an 8-bit requantization of Q6_K is not lossless in general"
    );
    // The docs' "about a quarter of Q6_K's step" holds where neighbouring sub-blocks have
    // similar scales (row 1, quantized from Gaussian values); row 0's random sub-block scales
    // show it is not a bound in general (0.26 and 0.73 on this fixture).
    assert!(vs_q6_step[1] <= 0.3, "{vs_q6_step:?}");
    assert!(vs_q6_step[0] > 0.5, "{vs_q6_step:?}");
}

/// `prepare_weights` with the config's quantization: kept quantized, the Q6_K scales stay
/// f16 (as `quantize` made them from MLX's f16 decoding) and the Q4_K ones f32; dequantized at
/// load (each module at its own bits), the dense weights equal the triplets' dequantization.
#[test]
fn prepare_weights_uses_each_modules_bits() {
    let ck = read_gguf_checkpoint(&common::fixture("gguf_kquants.gguf")).unwrap();
    let (q4_ref, _, _) = reference("blk.0.attn_v.weight");
    let q6_triplet = dequantized(&ck.weights, Q6_K_MODULE, 8);
    let options = |keep| LoadOptions {
        dtype: Some(Dtype::Float32),
        keep_quantized: Some(keep),
        device: Device::cpu(),
        ..Default::default()
    };

    let again = read_gguf_checkpoint(&common::fixture("gguf_kquants.gguf")).unwrap();
    let (kept, build) = prepare_weights(&again.config, again.weights, &options(true)).unwrap();
    assert!(build.quantization.is_some());
    let dtype = |w: &mlx_models::weights::Weights, n: &str| w.get(n).unwrap().dtype();
    assert_eq!(
        dtype(&kept, &format!("{Q4_K_MODULE}.scales")),
        Dtype::Float32
    );
    assert_eq!(
        dtype(&kept, &format!("{Q4_K_MODULE}.biases")),
        Dtype::Float32
    );
    assert_eq!(
        dtype(&kept, &format!("{Q6_K_MODULE}.scales")),
        Dtype::Float16
    );
    assert_eq!(
        dtype(&kept, &format!("{Q6_K_MODULE}.biases")),
        Dtype::Float16
    );

    let (dense, build) = prepare_weights(&ck.config, ck.weights, &options(false)).unwrap();
    assert!(build.quantization.is_none());
    let mut names = dense.names();
    names.sort();
    assert_eq!(
        names,
        vec![
            format!("{Q6_K_MODULE}.weight"),
            format!("{Q4_K_MODULE}.weight")
        ]
    );
    let v = dense.get(&format!("{Q4_K_MODULE}.weight")).unwrap();
    assert_eq!((v.dtype(), v.shape()), (Dtype::Float32, vec![2, 256]));
    assert!(
        v.to_vec::<f32>().unwrap() == q4_ref,
        "Q4_K dense != reference"
    );
    let d = dense.get(&format!("{Q6_K_MODULE}.weight")).unwrap();
    assert_eq!((d.dtype(), d.shape()), (Dtype::Float32, vec![2, 256]));
    assert!(
        d.to_vec::<f32>().unwrap() == q6_triplet,
        "Q6_K dense != its triplet"
    );
}

/// Kept as stored (`GgufReadOptions::keep_blocks`): each K-quant projection becomes `P.blocks`,
/// the file's bytes untouched, and multiplying one-hot rows through the native kernels gives
/// back the `gguf` package's decoded weights (prefill path: dequantized tiles and sgemm, exact;
/// decode path: the integer kernels, within their activation rounding).
#[test]
fn k_quants_kept_as_stored_multiply_to_the_reference() {
    use mlx_rs::quant::BlockFormat;
    check_kept(
        "gguf_kquants",
        &[
            (Q4_K_MODULE, "blk.0.attn_v.weight", BlockFormat::Q4K),
            (Q6_K_MODULE, "blk.0.ffn_up.weight", BlockFormat::Q6K),
        ],
    );
    check_kept(
        "gguf_q5_k",
        &[(
            "model.layers.0.mlp.gate_proj",
            "blk.0.ffn_gate.weight",
            BlockFormat::Q5K,
        )],
    );
}

/// `Q2_K` and `Q3_K` kept as stored (before: decoded to f16).
#[test]
fn q2_k_and_q3_k_kept_as_stored_multiply_to_the_reference() {
    use mlx_rs::quant::BlockFormat;
    check_kept(
        "gguf_q23_k",
        &[
            (
                "model.layers.0.mlp.gate_proj",
                "blk.0.ffn_gate.weight",
                BlockFormat::Q2K,
            ),
            (
                "model.layers.0.mlp.up_proj",
                "blk.0.ffn_up.weight",
                BlockFormat::Q3K,
            ),
        ],
    );
}

/// The formats of 32 values kept as stored, as the K-quants are: rows of three blocks (an odd
/// count, the decode kernels' tail), each format against the `gguf` package's decoder.
#[test]
fn small_block_formats_kept_as_stored_multiply_to_the_reference() {
    use mlx_rs::quant::BlockFormat;
    check_kept(
        "gguf_small_blocks",
        &[
            (
                "model.layers.0.self_attn.q_proj",
                "blk.0.attn_q.weight",
                BlockFormat::Q8_0,
            ),
            (
                "model.layers.0.self_attn.k_proj",
                "blk.0.attn_k.weight",
                BlockFormat::Q4_0,
            ),
            (
                "model.layers.0.self_attn.v_proj",
                "blk.0.attn_v.weight",
                BlockFormat::Q4_1,
            ),
            (
                "model.layers.0.mlp.gate_proj",
                "blk.0.ffn_gate.weight",
                BlockFormat::Q5_0,
            ),
            (
                "model.layers.0.mlp.up_proj",
                "blk.0.ffn_up.weight",
                BlockFormat::Q5_1,
            ),
        ],
    );
}

/// [`k_quants_kept_as_stored_multiply_to_the_reference`] on `fixture`.gguf / .json, whose
/// tensors are exactly `kept` (module, GGUF name, format).
fn check_kept(fixture: &str, kept: &[(&str, &str, mlx_rs::quant::BlockFormat)]) {
    use mlx_models::load::gguf::{open_gguf, read_gguf_weights_with_options, GgufReadOptions};
    use mlx_rs::quant;
    use mlx_rs::Array;
    if !quant::block_formats_available() {
        return;
    }
    let (file, config) = open_gguf(&common::fixture(&format!("{fixture}.gguf"))).unwrap();
    let keep = GgufReadOptions { keep_blocks: true };
    let weights = read_gguf_weights_with_options(&file, &config, None, keep).unwrap();
    let mut names = weights.names();
    names.sort();
    let mut want: Vec<String> = kept.iter().map(|(m, _, _)| format!("{m}.blocks")).collect();
    want.sort();
    assert_eq!(names, want);
    let json = format!("{fixture}.json");
    for &(module, gguf_name, format) in kept {
        let info = file.tensors.iter().find(|t| t.name == gguf_name).unwrap();
        let blocks = weights.get(&format!("{module}.blocks")).unwrap();
        let (expected, rows, cols) = reference_in(&json, gguf_name);
        assert_eq!(blocks.dtype(), Dtype::Uint8);
        assert_eq!(
            blocks.shape(),
            vec![
                rows as i32,
                (cols / format.values_per_block()) as i32,
                format.block_bytes() as i32
            ]
        );
        assert_eq!(
            blocks.to_vec::<u8>().unwrap(),
            file.read_tensor_data(info).unwrap()
        );
        // x = the identity: y[k, n] = W[n, k]; exactly so on f32 activations (dequantized
        // tiles and sgemm), within the f32 rounding of the scale products on 8-bit integer
        // ones (a one-hot run quantizes without error; the rounding is relative to the terms
        // code · d · sc and the offset, bounded by the row's largest weight).
        let mut eye = vec![0f32; cols * cols];
        for k in 0..cols {
            eye[k * cols + k] = 1.0;
        }
        let x = Array::from_slice(&eye, &[cols as i32, cols as i32]).unwrap();
        for exact in [true, false] {
            quant::set_native_qmm_exact(exact);
            let y = quant::block_matmul(&x, blocks, format)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            quant::set_native_qmm_exact(false);
            for n in 0..rows {
                let row_max = expected[n * cols..(n + 1) * cols]
                    .iter()
                    .fold(0f32, |a, v| a.max(v.abs()));
                for k in 0..cols {
                    let (g, e) = (y[k * rows + n], expected[n * cols + k]);
                    if exact {
                        assert_eq!(g, e, "{gguf_name} [{n}, {k}]");
                    } else {
                        assert!(
                            (g - e).abs() <= 1e-6 * row_max,
                            "{gguf_name} [{n}, {k}]: {g} vs {e}"
                        );
                    }
                }
            }
        }
        // One row at a time: the decode kernels.
        for k in [0usize, 1, 37, cols - 1] {
            let row = Array::from_slice(&eye[k * cols..(k + 1) * cols], &[1, cols as i32]).unwrap();
            let y = quant::block_matmul(&row, blocks, format)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            for n in 0..rows {
                let e = expected[n * cols + k];
                assert!(
                    (y[n] - e).abs() <= 1e-6 * e.abs().max(1e-3),
                    "{gguf_name} [{n}, {k}]: {} vs {e}",
                    y[n]
                );
            }
        }
    }
}

/// The memory budget counts a matrix kept as stored at the file's bytes, not at its 8-bit
/// conversion's (by hand: the Q5_K fixture's one matrix is 2 x 256 weights in 2 blocks of 176
/// bytes).
#[test]
fn the_budget_counts_kept_blocks_at_their_size() {
    use mlx_models::load::gguf::{loaded_bytes, loaded_bytes_kept, open_gguf, GgufReadOptions};
    let (file, _) = open_gguf(&common::fixture("gguf_q5_k.gguf")).unwrap();
    let kept = GgufReadOptions { keep_blocks: true };
    // The blocks, and as much again while they are read.
    assert_eq!(
        loaded_bytes_kept(&file, Dtype::Float32, true, kept),
        2 * 352
    );
    // Converted: 512 8-bit codes, f32 scale and bias per 32, and the transient file bytes plus
    // an f32 copy of the 512 values.
    let converted = 512 + 512 / 32 * 8 + 352 + 512 * 4;
    assert_eq!(loaded_bytes(&file, Dtype::Float32, true), converted);
    let default = GgufReadOptions::default();
    assert_eq!(
        loaded_bytes_kept(&file, Dtype::Float32, true, default),
        converted
    );
}

/// A kept block whose f16 factor is NaN is refused at load with the tensor named, as the
/// affine conversion refuses it.
#[test]
fn a_non_finite_block_factor_is_a_typed_error() {
    use mlx_models::load::gguf::{open_gguf, read_gguf_weights_with_options, GgufReadOptions};
    use mlx_models::Error;
    let dir = std::env::temp_dir().join(format!("mlx-zoo-kquant-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nan.gguf");
    for (fixture, gguf_name, at) in [
        ("gguf_kquants.gguf", "blk.0.attn_v.weight", 2u64),
        ("gguf_kquants.gguf", "blk.0.ffn_up.weight", 208 + 210),
        ("gguf_q5_k.gguf", "blk.0.ffn_gate.weight", 176),
        ("gguf_small_blocks.gguf", "blk.0.attn_v.weight", 2),
        ("gguf_small_blocks.gguf", "blk.0.attn_q.weight", 34),
        ("gguf_small_blocks.gguf", "blk.0.ffn_gate.weight", 44),
        ("gguf_q23_k.gguf", "blk.0.ffn_gate.weight", 84 + 82),
        ("gguf_q23_k.gguf", "blk.0.ffn_up.weight", 108),
    ] {
        let (file, _) = open_gguf(&common::fixture(fixture)).unwrap();
        let info = file.tensors.iter().find(|t| t.name == gguf_name).unwrap();
        let mut bytes = std::fs::read(common::fixture(fixture)).unwrap();
        let o = (info.offset + at) as usize;
        bytes[o..o + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let (file, config) = open_gguf(&path).unwrap();
        for keep_blocks in [true, false] {
            let err = read_gguf_weights_with_options(
                &file,
                &config,
                None,
                GgufReadOptions { keep_blocks },
            )
            .unwrap_err();
            match err {
                Error::Gguf(m) => {
                    assert!(m.contains(gguf_name) && m.contains("must be finite"), "{m}")
                }
                other => panic!("{gguf_name}: {other:?}"),
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
