//! The project's own Q4_K decoder against the `gguf` package's reference decoding of random
//! blocks (scripts/fixtures/ggml_quants.py → tests/fixtures/q4_k_blocks.json).

mod common;

use mlx_models::load::ggml_quants::dequantize_q4_k;

#[test]
fn q4_k_matches_the_reference_decoder() {
    let fixture = common::json("q4_k_blocks.json");
    let hex = fixture["blocks_hex"].as_str().unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let expected = common::f32s(&fixture["values"]);
    let mut got = vec![0f32; expected.len()];
    dequantize_q4_k(&bytes, &mut got).unwrap();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (g - e).abs() <= 1e-6 * e.abs().max(1.0),
            "weight {i}: {g} vs {e}"
        );
    }
}
