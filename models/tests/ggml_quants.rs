//! The project's own Q4_K decoder and its lossless rewrite as an MLX affine triplet, against the
//! `gguf` package's reference decoding of random blocks (scripts/fixtures/ggml_quants.py →
//! tests/fixtures/q4_k_blocks.json).

mod common;

use mlx_models::load::ggml_quants::{dequantize_q4_k, q4_k_to_affine, Q4_K_BLOCK_BYTES, QK_K};

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

#[test]
fn read_q4_k_affine_reads_blocks_at_an_offset() {
    use mlx_models::load::ggml_quants::read_q4_k_affine;
    let (bytes, rows, cols, _) = fixture();
    let path =
        std::env::temp_dir().join(format!("mlx_models_q4_k_affine_{}.bin", std::process::id()));
    let mut file = vec![0xAAu8; 37];
    file.extend_from_slice(&bytes);
    std::fs::write(&path, &file).unwrap();
    let got = read_q4_k_affine(&path, 37, rows * cols).unwrap();
    assert_eq!(got, q4_k_to_affine(&bytes).unwrap());
    assert!(matches!(
        read_q4_k_affine(&path, 37, rows * cols - 1),
        Err(mlx_models::Error::Gguf(_))
    ));
    assert!(matches!(
        read_q4_k_affine(&path, 38, rows * cols),
        Err(mlx_models::Error::Io { .. })
    ));
    std::fs::remove_file(&path).ok();
}
