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
    fixture_model("gemma4_e2b")
}

/// The float32 fixture `tiny/<name>` built directly (no loader).
fn fixture_model(name: &str) -> mlx_models::nn::Decoder {
    let dir = common::fixture(&format!("tiny/{name}"));
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let (tensors, _) = load_safetensors(dir.join("model.safetensors")).unwrap();
    let weights = families::sanitize(&config, Weights::from_map(tensors)).unwrap();
    let options = BuildOptions {
        huge_pages: false,
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

/// The attention primitive (value norm, keys as values, reading the source layer's cache) and
/// the composed reference path give the same logits within float32 rounding, prefill then
/// decode, on the E2B-like (shared layers), 31B-like (keys as values) and MoE fixtures.
#[test]
fn native_attention_matches_the_composed_path() {
    for name in ["gemma4_e2b", "gemma4_31b", "gemma4_moe"] {
        let model = fixture_model(name);
        let run = |native: bool| -> Vec<f32> {
            let _guard = NATIVE.lock().unwrap_or_else(|e| e.into_inner());
            mlx_rs::native::set_native_ops(native);
            let mut cache = model.new_cache();
            let ids: Vec<i32> = (0..11).map(|i| i * 23 % 250 + 3).collect();
            let mut out = Vec::new();
            for chunk in [&ids[..7], &ids[7..8], &ids[8..9], &ids[9..]] {
                let t = Array::from_slice(chunk, &[1, chunk.len() as i32]).unwrap();
                out.extend(
                    model
                        .forward(&t, &mut cache)
                        .unwrap()
                        .to_vec::<f32>()
                        .unwrap(),
                );
            }
            mlx_rs::native::set_native_ops(true);
            out
        };
        let (native, composed) = (run(true), run(false));
        let scale = composed.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = native
            .iter()
            .zip(&composed)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{name}: max |native - composed| = {diff:.2e} (max |logit| {scale:.2})");
        // Both paths sit within 3e-5 (relative) of transformers' float32 logits on these
        // fixtures (the golden tests allow 1e-4): the same bound between them.
        assert!(diff <= 1e-4 * scale, "{name}: {diff}");
    }
}

/// The native-ops switch is process-wide: tests that set it take turns.
static NATIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The loader's whole path on the GGUF forms (header plan under the family's renames, the
/// `gemma4` tokenizer, the stop tokens, the build): the transformers logits of each fixture.
#[test]
fn the_loader_reads_gemma4_gguf_files() {
    use mlx_models::load::{self, LoadOptions};
    for name in ["gemma4_e2b", "gemma4_31b", "gemma4_moe"] {
        let path = common::fixture(&format!("tiny/{name}/model.gguf"));
        let options = LoadOptions {
            device: mlx_rs::Device::cpu(),
            ..Default::default()
        };
        let loaded = load::load(path.to_str().unwrap(), &options).unwrap();
        // `<eos>` and the end of turn `<turn|>` (id 6 in the fixtures' vocabulary).
        assert!(
            loaded.eos_token_ids.contains(&1) && loaded.eos_token_ids.contains(&6),
            "{name}: {:?}",
            loaded.eos_token_ids
        );
        let reference = common::json(&format!("tiny/{name}/reference.json"));
        let prompt = common::i32s(&reference["prompt"]);
        let tokens = Array::from_slice(&prompt, &[1, prompt.len() as i32]).unwrap();
        let mut cache = loaded.model.new_cache();
        let got = loaded
            .model
            .forward(&tokens, &mut cache)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let want = common::f32s(&reference["logits"]);
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-4 * scale, "{name}: {diff}");
    }
}
