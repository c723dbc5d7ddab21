//! Golden tests of the Llama, Qwen2 and Qwen3 forward passes against Hugging Face transformers.
//!
//! The fixtures under `tests/fixtures/tiny/` (tiny random-weight checkpoints, float32) and their
//! reference logits / greedy continuations were produced by transformers with
//! `scripts/fixtures/tiny_models.py`; `llama_q4` is MLX-affine-quantized in numpy and its
//! reference ran on the dequantized weights. The checkpoints are read with
//! `mlx_rs::io::safetensors` and built with `families::build` directly (no loader involved).

mod common;

use mlx_models::config::ModelConfig;
use mlx_models::families::{self, build, BuildOptions};
use mlx_models::model::CausalLm;
use mlx_models::weights::Weights;
use mlx_models::Error;
use mlx_rs::io::safetensors::load_safetensors;
use mlx_rs::{quant, Array, Dtype};
use std::collections::HashMap;

/// `reference.json`.
struct Reference {
    prompt: Vec<i32>,
    vocab: usize,
    /// `[prompt_len, vocab]`, row-major.
    logits: Vec<f32>,
    greedy: Vec<i32>,
}

struct Fixture {
    config: ModelConfig,
    tensors: HashMap<String, Array>,
    reference: Reference,
}

fn fixture(name: &str) -> Fixture {
    let dir = common::fixture(&format!("tiny/{name}"));
    let config = ModelConfig::from_file(&dir.join("config.json")).expect("config.json");
    let (tensors, _) = load_safetensors(dir.join("model.safetensors")).expect("safetensors");
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("reference json");
    let ints = |key: &str| -> Vec<i32> { common::i32s(&v[key]) };
    let shape = ints("logits_shape");
    let logits: Vec<f32> = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(logits.len(), (shape[0] * shape[1]) as usize);
    let reference = Reference {
        prompt: ints("prompt"),
        vocab: shape[1] as usize,
        logits,
        greedy: ints("greedy"),
    };
    assert_eq!(reference.prompt.len(), shape[0] as usize);
    Fixture {
        config,
        tensors,
        reference,
    }
}

fn options(config: &ModelConfig) -> BuildOptions {
    BuildOptions {
        huge_pages: false,
        dtype: Dtype::Float32,
        quantization: config
            .quantization()
            .expect("quantization config")
            .map(|q| families::rename_quantization(config, q).unwrap()),
    }
}

/// The family's renames (wrapper prefixes, vision towers) then the build.
fn build_model(config: &ModelConfig, tensors: HashMap<String, Array>) -> Box<dyn CausalLm> {
    let weights = families::sanitize(config, Weights::from_map(tensors)).expect("sanitize");
    build(config, weights, &options(config)).expect("build")
}

fn tokens(ids: &[i32]) -> Array {
    Array::from_slice(ids, &[1, ids.len() as i32]).unwrap()
}

const TOLERANCE: f32 = 1e-4;

/// (1) the full-sequence logits match transformers at every position.
fn check_full_forward(model: &dyn CausalLm, r: &Reference) {
    let mut cache = model.new_cache();
    let logits = model.forward(&tokens(&r.prompt), &mut cache).unwrap();
    assert_eq!(
        logits.shape(),
        vec![1, r.prompt.len() as i32, r.vocab as i32]
    );
    let d = common::relative_diff(&logits.to_vec::<f32>().unwrap(), &r.logits);
    eprintln!("full forward: relative difference {d:.2e}");
    assert!(d < TOLERANCE, "full forward: relative difference {d}");
    assert_eq!(cache.offset(), r.prompt.len() as i32);
}

/// (3) greedy continuation equals transformers' `generate(do_sample=False)`.
fn check_greedy(model: &dyn CausalLm, r: &Reference) {
    let mut cache = model.new_cache();
    let logits = model
        .forward(&tokens(&r.prompt), &mut cache)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let mut next = common::argmax(&logits[logits.len() - r.vocab..]);
    let mut generated = vec![next];
    while generated.len() < r.greedy.len() {
        let logits = model
            .forward(&tokens(&[next]), &mut cache)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        next = common::argmax(&logits);
        generated.push(next);
    }
    assert_eq!(generated, r.greedy);
}

/// (2) the prompt in chunks of `sizes` (the last size repeats): a prefill then one token at
/// a time through the KV cache, multi-token appends that wrap a rotating cache, chunks longer
/// than the window; the same logits at every position.
fn check_chunked(model: &dyn CausalLm, r: &Reference, sizes: &[usize]) {
    let mut cache = model.new_cache();
    let mut found = Vec::new();
    let mut start = 0;
    let last = sizes.last().copied().unwrap_or(1);
    for n in sizes.iter().copied().chain(std::iter::repeat(last)) {
        if start >= r.prompt.len() {
            break;
        }
        let end = (start + n).min(r.prompt.len());
        let step = model
            .forward(&tokens(&r.prompt[start..end]), &mut cache)
            .unwrap();
        assert_eq!(step.shape(), vec![1, (end - start) as i32, r.vocab as i32]);
        found.extend(step.to_vec::<f32>().unwrap());
        start = end;
    }
    assert_eq!(cache.offset(), r.prompt.len() as i32);
    for (pos, (a, b)) in found
        .chunks(r.vocab)
        .zip(r.logits.chunks(r.vocab))
        .enumerate()
    {
        let d = common::relative_diff(a, b);
        assert!(
            d < TOLERANCE,
            "chunks {sizes:?}, position {pos}: relative difference {d}"
        );
    }
}

fn check_all(name: &str) {
    let f = fixture(name);
    let model = build_model(&f.config, f.tensors);
    check_full_forward(model.as_ref(), &f.reference);
    check_greedy(model.as_ref(), &f.reference);
    for sizes in [&[7usize, 1][..], &[3, 6], &[5, 2], &[1]] {
        check_chunked(model.as_ref(), &f.reference, sizes);
    }
}

#[test]
fn gemma3_text_matches_transformers() {
    check_all("gemma3_text");
}

#[test]
fn gemma3_sparse_text_config_matches_transformers() {
    check_all("gemma3");
}

#[test]
fn gemma3_quantized_matches_transformers_on_dequantized_weights() {
    check_all("gemma3_text_q4");
}

#[test]
fn mistral_sliding_window_matches_transformers() {
    check_all("mistral");
}

#[test]
fn mistral_quantized_matches_transformers_on_dequantized_weights() {
    check_all("mistral_q4");
}

#[test]
fn ministral3_yarn_and_query_scaling_match_transformers() {
    check_all("ministral3");
}

#[test]
fn the_window_matters_in_the_mistral_fixture() {
    // Guards the fixture: without its window the same weights give other logits.
    let f = fixture("mistral");
    let mut config = f.config.clone();
    config.sliding_window = None;
    let model = build_model(&config, f.tensors);
    let logits = model
        .forward(&tokens(&f.reference.prompt), &mut model.new_cache())
        .unwrap();
    let d = common::relative_diff(&logits.to_vec::<f32>().unwrap(), &f.reference.logits);
    assert!(d > 1e-2, "relative difference without the window only {d}");
}

#[test]
fn llama_untied_matches_transformers() {
    check_all("llama");
}

#[test]
fn llama_tied_with_llama3_rope_scaling_matches_transformers() {
    check_all("llama_rope3");
}

#[test]
fn llama3_rope_scaling_changes_the_logits() {
    // Guards the fixture: without its rope scaling the same weights give other logits, so the
    // test above exercises the scaling.
    let f = fixture("llama_rope3");
    let mut config = f.config.clone();
    config.rope_scaling = None;
    config.rope_parameters = None;
    let model = build_model(&config, f.tensors);
    let logits = model
        .forward(&tokens(&f.reference.prompt), &mut model.new_cache())
        .unwrap();
    let d = common::relative_diff(&logits.to_vec::<f32>().unwrap(), &f.reference.logits);
    assert!(d > 1e-2, "relative difference without scaling only {d}");
}

#[test]
fn qwen2_matches_transformers() {
    check_all("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check_all("qwen3");
}

#[test]
fn quantized_llama_matches_transformers_on_dequantized_weights() {
    let f = fixture("llama_q4");
    assert!(f.tensors["model.embed_tokens.weight"].dtype() == Dtype::Uint32);
    // The 8-bit override of the config is what makes this tensor's shape valid.
    assert_eq!(
        f.tensors["model.layers.1.mlp.down_proj.weight"].shape(),
        vec![64, 32]
    );
    check_all("llama_q4");
}

#[test]
fn quantized_llama_dequantized_at_load_matches_transformers() {
    let f = fixture("llama_q4");
    let quantization = f.config.quantization().unwrap().unwrap();
    let mut tensors = f.tensors;
    let modules: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".scales").map(str::to_string))
        .collect();
    assert_eq!(
        modules.len(),
        2 * 7 + 1,
        "7 projections per layer and the embedding"
    );
    for module in modules {
        let p = quantization.for_module(&module).unwrap();
        let w = tensors.remove(&format!("{module}.weight")).unwrap();
        let s = tensors.remove(&format!("{module}.scales")).unwrap();
        let b = tensors.remove(&format!("{module}.biases")).unwrap();
        let dense = quant::dequantize(&w, &s, &b, p.group_size, p.bits).unwrap();
        tensors.insert(format!("{module}.weight"), dense);
    }
    let mut config = f.config.clone();
    config.quantization = None;
    let model = build_model(&config, tensors);
    check_full_forward(model.as_ref(), &f.reference);
    check_greedy(model.as_ref(), &f.reference);
}

fn build_err(config: &ModelConfig, tensors: HashMap<String, Array>) -> Error {
    match build(config, Weights::from_map(tensors), &options(config)) {
        Ok(_) => panic!("build succeeded"),
        Err(e) => e,
    }
}

#[test]
fn missing_tensor_is_named() {
    let f = fixture("qwen3");
    let mut tensors = f.tensors;
    tensors
        .remove("model.layers.1.self_attn.k_norm.weight")
        .unwrap();
    match build_err(&f.config, tensors) {
        Error::MissingTensor(name) => assert_eq!(name, "model.layers.1.self_attn.k_norm.weight"),
        e => panic!("wrong error {e:?}"),
    }
}

#[test]
fn misshaped_tensor_is_named() {
    let f = fixture("qwen2");
    let mut tensors = f.tensors;
    // k_proj must be [kv_heads·head_dim, hidden] = [32, 64]; give it q_proj's [64, 64].
    tensors.insert(
        "model.layers.0.self_attn.k_proj.weight".into(),
        Array::zeros(&[64, 64], Dtype::Float32).unwrap(),
    );
    match build_err(&f.config, tensors) {
        Error::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "model.layers.0.self_attn.k_proj.weight");
            assert_eq!((expected, found), (vec![32, 64], vec![64, 64]));
        }
        e => panic!("wrong error {e:?}"),
    }
}

#[test]
fn extra_tensor_is_reported() {
    let f = fixture("llama");
    let mut tensors = f.tensors;
    // An o_proj bias the config (attention_bias: false) does not ask for.
    tensors.insert(
        "model.layers.0.self_attn.o_proj.bias".into(),
        Array::zeros(&[64], Dtype::Float32).unwrap(),
    );
    match build_err(&f.config, tensors) {
        Error::UnexpectedTensors(names) => {
            assert_eq!(
                names,
                vec!["model.layers.0.self_attn.o_proj.bias".to_string()]
            )
        }
        e => panic!("wrong error {e:?}"),
    }
}

#[test]
fn unknown_model_type_is_unsupported() {
    let f = fixture("llama");
    let mut config = f.config.clone();
    config.model_type = "mamba".into();
    match build_err(&config, f.tensors) {
        Error::UnsupportedModel {
            model_type,
            supported,
        } => {
            assert_eq!(model_type, "mamba");
            for family in [
                "llama",
                "qwen2",
                "qwen3",
                "mistral",
                "gemma3_text",
                "gemma3",
            ] {
                assert!(
                    supported.contains(&family),
                    "{family} missing from {supported:?}"
                );
            }
        }
        e => panic!("wrong error {e:?}"),
    }
}

#[test]
fn ministral3_gguf_as_llama_cpp_writes_it_matches_transformers() {
    // scripts/fixtures/ministral3_gguf.py: the same weights as llama.cpp's converter lays them
    // out (arch `mistral3`, Q/K permuted, yarn and temperature-scale keys).
    use mlx_models::load::gguf::read_gguf_checkpoint;
    let f = fixture("ministral3");
    let path = common::fixture("tiny/ministral3/model.gguf");
    let checkpoint = read_gguf_checkpoint(&path).expect("read the GGUF");
    assert_eq!(checkpoint.config.model_type, "ministral3");
    let weights = families::sanitize(&checkpoint.config, checkpoint.weights).unwrap();
    let model = build(&checkpoint.config, weights, &options(&checkpoint.config)).unwrap();
    check_full_forward(model.as_ref(), &f.reference);
    check_greedy(model.as_ref(), &f.reference);
}

#[test]
fn gemma4_e2b_like_matches_transformers() {
    // Per-layer embeddings, KV sharing across kinds, double-wide MLPs on shared layers, 4:1
    // layout with a window of 4, proportional RoPE on the global layers.
    check_all("gemma4_e2b");
}

#[test]
fn gemma4_wrapped_in_the_multimodal_checkpoint_matches_transformers() {
    check_all("gemma4");
}

#[test]
fn gemma4_31b_like_matches_transformers() {
    // Keys as values and fewer key/value heads on the global layers.
    check_all("gemma4_31b");
}

#[test]
fn gemma4_moe_matches_transformers() {
    // The 26B-A4B mixture: router, gathered experts, the dense MLP beside them.
    check_all("gemma4_moe");
}

/// A Gemma 4 fixture's GGUF form (scripts/fixtures/tiny_models_gemma4.py writes it as
/// llama.cpp's converter lays arch `gemma4` out) against the transformers reference.
fn check_gemma4_gguf(name: &str) {
    use mlx_models::load::gguf::read_gguf_checkpoint;
    let f = fixture(name);
    let path = common::fixture(&format!("tiny/{name}/model.gguf"));
    let checkpoint = read_gguf_checkpoint(&path).expect("read the GGUF");
    assert_eq!(checkpoint.config.model_type, "gemma4_text");
    let weights = families::sanitize(&checkpoint.config, checkpoint.weights).unwrap();
    let model = build(&checkpoint.config, weights, &options(&checkpoint.config)).unwrap();
    check_full_forward(model.as_ref(), &f.reference);
    check_greedy(model.as_ref(), &f.reference);
    check_chunked(model.as_ref(), &f.reference, &[5, 2]);
}

#[test]
fn gemma4_e2b_like_gguf_matches_transformers() {
    check_gemma4_gguf("gemma4_e2b");
}

#[test]
fn gemma4_31b_like_gguf_matches_transformers() {
    check_gemma4_gguf("gemma4_31b");
}

#[test]
fn gemma4_moe_gguf_matches_transformers() {
    check_gemma4_gguf("gemma4_moe");
}

#[test]
fn gemma4_moe_quantized_matches_transformers_on_dequantized_weights() {
    // mlx-lm's layout: experts split into `switch_glu.{gate,up,down}_proj` (gate and up
    // quantized, run through gather_qmm), the router at 8 bits with group 64.
    check_all("gemma4_moe_q4");
}

#[test]
fn gemma4_e2b_quantized_matches_transformers_on_dequantized_weights() {
    // Quantized embedding (tied head), per-layer model projection and gate, an 8-bit override.
    check_all("gemma4_e2b_q4");
}
