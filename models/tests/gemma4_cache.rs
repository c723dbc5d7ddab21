//! Gemma 4's caches on the tiny E2B-like fixture (scripts/fixtures/tiny_models_gemma4.py):
//! KV-shared layers store nothing, sliding layers keep a rotating buffer bounded by their
//! window, so a long chat's memory is bounded by the windows plus the global layers; the
//! model-level offset and trimming see only the layers that store.

mod common;

use mlx_models::config::ModelConfig;
use mlx_models::families::{self, BuildOptions};
use mlx_models::model::CausalLm;
use mlx_models::weights::Weights;
use mlx_rs::io::safetensors::load_safetensors;
use mlx_rs::{Array, Dtype};

fn e2b() -> mlx_models::nn::Decoder {
    let dir = common::fixture("tiny/gemma4_e2b");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let (tensors, _) = load_safetensors(dir.join("model.safetensors")).unwrap();
    let weights = families::sanitize(&config, Weights::from_map(tensors)).unwrap();
    let options = BuildOptions {
        dtype: Dtype::Float32,
        quantization: None,
    };
    families::build_decoder(&config, weights, &options).unwrap()
}

#[test]
fn shared_layers_store_nothing_and_sliding_layers_stay_within_their_window() {
    let model = e2b();
    let mut cache = model.new_cache();
    // 600 positions in chunks of 64: past two growth steps of a full layer's buffer.
    let ids: Vec<i32> = (0..600).map(|i| i * 37 % 250 + 5).collect();
    for chunk in ids.chunks(64) {
        let tokens = Array::from_slice(chunk, &[1, chunk.len() as i32]).unwrap();
        let logits = model.forward(&tokens, &mut cache).unwrap();
        assert!(logits
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite()));
    }
    assert_eq!(cache.offset(), 600);
    let kinds = model.spec().layers.clone();
    for (i, layer) in kinds.iter().enumerate() {
        let c = cache.layer_mut(i).unwrap();
        match (i >= 5, layer.attention.window) {
            // Layers 5..9 reuse layers 3 (sliding) and 4 (full).
            (true, _) => {
                assert!(c.is_unused(), "layer {i}");
                assert_eq!((c.capacity(), c.offset()), (0, 0), "layer {i}");
            }
            // Window 4, chunks of 64: at most 4 + 64 - 1 slots, rounded up to a step (256).
            (false, Some(4)) => assert_eq!(c.capacity(), 256, "layer {i}"),
            (false, _) => assert!(c.capacity() >= 600, "layer {i}: {}", c.capacity()),
        }
    }
    // Trimming sees the storing layers only (the shared ones, at offset 0, would allow none).
    assert_eq!(cache.trim(10), 10);
    assert_eq!(cache.offset(), 590);
}

#[test]
fn a_shared_layer_without_its_source_in_the_step_is_an_error() {
    let model = e2b();
    let layer = &model.layers()[6];
    let mut cache = model.new_cache();
    let x = Array::zeros(&[1, 2, 64], Dtype::Float32).unwrap();
    let err = layer.forward(&x, cache.layer_mut(6).unwrap()).unwrap_err();
    assert!(err.to_string().contains("layer 3"), "{err}");
}
