//! The project's own GGML block decoders and their lossless rewrites as MLX affine triplets,
//! against the `gguf` package's reference decoding of random blocks
//! (scripts/fixtures/ggml_quants.py → tests/fixtures/q4_k_blocks.json for Q4_K,
//! scripts/fixtures/ggml_blocks.py → tests/fixtures/ggml_blocks.json for every type).

mod common;

use mlx_models::load::ggml_quants::{
    dequantize, dequantize_q4_k, has_affine_form, q4_k_to_affine, to_affine, Q4_K_BLOCK_BYTES, QK_K,
};
use mlx_models::load::gguf_file::GgmlType;

/// The fixture's raw blocks, rows, columns and reference values.
fn fixture() -> (Vec<u8>, usize, usize, Vec<f32>) {
    let fixture = common::json("q4_k_blocks.json");
    let hex = fixture["blocks_hex"].as_str().unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let rows = fixture["rows"].as_u64().unwrap() as usize;
    let cols = fixture["cols"].as_u64().unwrap() as usize;
    let values = common::f32s(&fixture["values"]);
    assert_eq!(values.len(), rows * cols);
    assert_eq!(bytes.len(), rows * cols / QK_K * Q4_K_BLOCK_BYTES);
    (bytes, rows, cols, values)
}

#[test]
fn q4_k_matches_the_reference_decoder() {
    let (bytes, _, _, expected) = fixture();
    let mut got = vec![0f32; expected.len()];
    dequantize_q4_k(&bytes, &mut got).unwrap();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (g - e).abs() <= 1e-6 * e.abs().max(1.0),
            "weight {i}: {g} vs {e}"
        );
    }
}

/// Every weight of the affine triplet, unpacked here (code `e` of a row in bits `4 (e % 8)` of
/// word `e / 8`, group `e / 32`), is `scale * code + bias` = the reference value, bit for bit.
#[test]
fn q4_k_to_affine_is_lossless_against_the_reference() {
    let (bytes, rows, cols, expected) = fixture();
    let t = q4_k_to_affine(&bytes).unwrap();
    assert_eq!(t.packed.len(), rows * cols / 8);
    assert_eq!(t.scales.len(), rows * cols / 32);
    assert_eq!(t.biases.len(), rows * cols / 32);
    let mut codes_seen = [false; 16];
    for r in 0..rows {
        for e in 0..cols {
            let word = t.packed[r * cols / 8 + e / 8];
            let code = (word >> (4 * (e % 8))) & 0xf;
            codes_seen[code as usize] = true;
            let g = r * cols / 32 + e / 32;
            let value = t.scales[g] * code as f32 + t.biases[g];
            let want = expected[r * cols + e];
            assert!(
                value.to_bits() == want.to_bits() || (value == 0.0 && want == 0.0),
                "[{r}, {e}]: {} * {code} + {} = {value} vs reference {want}",
                t.scales[g],
                t.biases[g]
            );
        }
    }
    assert!(codes_seen.iter().all(|&s| s), "every code value exercised");
}

#[test]
fn q4_k_to_affine_of_nothing_and_of_partial_blocks() {
    let (bytes, _, _, _) = fixture();
    let empty = q4_k_to_affine(&[]).unwrap();
    assert!(empty.packed.is_empty() && empty.scales.is_empty() && empty.biases.is_empty());
    for len in [
        1,
        100,
        Q4_K_BLOCK_BYTES - 1,
        Q4_K_BLOCK_BYTES + 1,
        2 * Q4_K_BLOCK_BYTES + 72,
    ] {
        assert!(
            matches!(
                q4_k_to_affine(&bytes[..len]),
                Err(mlx_models::Error::Gguf(_))
            ),
            "{len} bytes"
        );
    }
    // A whole block alone converts like the same block inside the buffer.
    let whole = q4_k_to_affine(&bytes).unwrap();
    let second = q4_k_to_affine(&bytes[Q4_K_BLOCK_BYTES..2 * Q4_K_BLOCK_BYTES]).unwrap();
    assert_eq!(second.packed, whole.packed[QK_K / 8..2 * QK_K / 8]);
    assert_eq!(second.scales, whole.scales[QK_K / 32..2 * QK_K / 32]);
    assert_eq!(second.biases, whole.biases[QK_K / 32..2 * QK_K / 32]);
}

/// One type's case of `ggml_blocks.json`: its type, raw blocks, columns and reference values.
struct BlockCase {
    ty: GgmlType,
    bytes: Vec<u8>,
    cols: usize,
    values: Vec<f32>,
}

/// Every case of `ggml_blocks.json` (scripts/fixtures/ggml_blocks.py).
fn block_cases() -> Vec<BlockCase> {
    let fixture = common::json("ggml_blocks.json");
    let all = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];
    let cases: Vec<BlockCase> = fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["type"].as_str().unwrap();
            let ty = *all.iter().find(|t| t.name() == name).unwrap();
            let hex = c["blocks_hex"].as_str().unwrap();
            BlockCase {
                ty,
                bytes: (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect(),
                cols: c["cols"].as_u64().unwrap() as usize,
                values: common::f32s(&c["values"]),
            }
        })
        .collect();
    assert_eq!(cases.len(), all.len(), "one case per block type");
    cases
}

/// Every block type's decoder against the `gguf` package's, value by value.
#[test]
fn every_block_type_matches_the_reference_decoder() {
    for case in block_cases() {
        let mut got = vec![0f32; case.values.len()];
        dequantize(case.ty, &case.bytes, &mut got).unwrap();
        for (i, (g, e)) in got.iter().zip(&case.values).enumerate() {
            assert!(
                (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                "{} weight {i}: {g} vs {e}",
                case.ty
            );
        }
        // A partial block is an error, not a short read.
        let short = &case.bytes[..case.bytes.len() - 1];
        assert!(matches!(
            dequantize(case.ty, short, &mut got),
            Err(mlx_models::Error::Gguf(_))
        ));
    }
}

/// The types with an affine form re-lay without loss: unpacked here, `scale * code + bias`
/// equals the reference value (to f32 rounding of the reference's own arithmetic).
#[test]
fn affine_rewrites_reproduce_the_reference_values() {
    let mut checked = 0;
    for case in block_cases() {
        if !has_affine_form(case.ty) {
            assert!(to_affine(case.ty, &case.bytes).is_err(), "{}", case.ty);
            continue;
        }
        let t = to_affine(case.ty, &case.bytes).unwrap();
        let per_word = 32 / t.bits as usize;
        let mask = (1u32 << t.bits) - 1;
        let rows = case.values.len() / case.cols;
        assert_eq!(t.packed.len(), rows * case.cols / per_word, "{}", case.ty);
        assert_eq!(t.scales.len(), rows * case.cols / 32);
        for r in 0..rows {
            for e in 0..case.cols {
                let word = t.packed[(r * case.cols + e) / per_word];
                let code = (word >> (t.bits as usize * (e % per_word))) & mask;
                let g = (r * case.cols + e) / 32;
                let value = t.scales[g] * code as f32 + t.biases[g];
                let want = case.values[r * case.cols + e];
                assert!(
                    (value - want).abs() <= 1e-6 * want.abs().max(1e-3),
                    "{} [{r}, {e}]: {} * {code} + {} = {value} vs {want}",
                    case.ty,
                    t.scales[g],
                    t.biases[g]
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 7);
}

/// A NaN or infinite f16 scale is refused by the decoders and the rewrites alike.
#[test]
fn non_finite_scales_are_refused() {
    for case in block_cases() {
        let mut bytes = case.bytes.clone();
        let at = match case.ty {
            GgmlType::Q2K => 80,
            GgmlType::Q3K => 108,
            GgmlType::Q6K => 208,
            _ => 0,
        };
        for bad in [half::f16::NAN, half::f16::INFINITY] {
            bytes[at..at + 2].copy_from_slice(&bad.to_le_bytes());
            let mut out = vec![0f32; case.values.len()];
            assert!(
                matches!(
                    dequantize(case.ty, &bytes, &mut out),
                    Err(mlx_models::Error::Gguf(_))
                ),
                "{} with a {bad} scale",
                case.ty
            );
            if has_affine_form(case.ty) {
                assert!(to_affine(case.ty, &bytes).is_err());
            }
        }
    }
}
