//! Hugging Face folder loading against fixtures written by `scripts/fixtures/load_fixtures.py`
//! with the Python `safetensors` package; plus hub resolution offline and the dtype policy.

mod common;

use mlx_models::config::ModelConfig;
use mlx_models::families;
use mlx_models::load::{self, hf, hub, LoadOptions};
use mlx_models::weights::Weights;
use mlx_models::Error;
use mlx_rs::{Array, Device, Dtype};
use std::collections::HashMap;

fn expected() -> serde_json::Value {
    common::json("load/hf_sharded.json")
}

#[test]
fn shards_are_merged_and_consolidated_is_ignored() {
    let dir = common::fixture("load/hf_sharded");
    let weights = hf::load_hf_weights(&dir).unwrap();
    let expected = expected();
    let names: Vec<String> = expected.as_object().unwrap().keys().cloned().collect();
    // Both shards' tensors, and nothing from consolidated.safetensors.
    assert_eq!(weights.names(), names);
    for (name, t) in expected.as_object().unwrap() {
        let a = weights.get(name).unwrap();
        let shape: Vec<i32> = common::i32s(&t["shape"]);
        assert_eq!(a.shape(), shape, "{name}");
        assert_eq!(
            a.to_vec::<f32>().unwrap(),
            common::f32s(&t["values"]),
            "{name}"
        );
    }
}

#[test]
fn sanitize_drops_inv_freq_and_tied_lm_head() {
    let dir = common::fixture("load/hf_sharded");
    let (config, generation) = hf::load_hf_config(&dir).unwrap();
    assert!(config.tie_word_embeddings());
    assert_eq!(
        generation.unwrap().eos_token_id.unwrap().to_vec(),
        vec![2, 7]
    );
    let weights = hf::load_hf_weights(&dir).unwrap();
    assert!(weights.contains("lm_head.weight"));
    let weights = families::sanitize(&config, weights).unwrap();
    assert!(!weights.contains("lm_head.weight"));
    assert!(!weights.contains("model.layers.0.self_attn.rotary_emb.inv_freq"));
    assert_eq!(weights.len(), 5);

    // Untied: lm_head stays.
    let untied = r#"{"model_type":"llama","hidden_size":4,"num_hidden_layers":1,"intermediate_size":6,
        "num_attention_heads":2,"vocab_size":8,"tie_word_embeddings":false}"#;
    let config = ModelConfig::from_json(untied).unwrap();
    let weights = families::sanitize(&config, hf::load_hf_weights(&dir).unwrap()).unwrap();
    assert!(weights.contains("lm_head.weight"));
}

#[test]
fn a_tensor_in_two_shards_is_an_error() {
    let err = hf::load_hf_weights(&common::fixture("load/hf_duplicate")).unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("model.norm.weight")),
        "{err}"
    );
}

#[test]
fn missing_folder_or_files_name_the_folder() {
    let err = hf::load_hf_weights(std::path::Path::new("/no/such/folder")).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("folder")),
        "{err}"
    );
    // A folder with no safetensors (the fixtures root).
    let dir = common::fixture("load");
    let err = hf::load_hf_weights(&dir).unwrap_err();
    assert!(err.to_string().contains("model*.safetensors"), "{err}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    // No config.json.
    let err = hf::load_hf_config(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("config.json")),
        "{err}"
    );
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mlx_models_load_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn unknown_model_type_is_unsupported_before_reading_weights() {
    let dir = temp_dir("unknown_type");
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type":"gpt2","hidden_size":4,"num_hidden_layers":1,"intermediate_size":6,
            "num_attention_heads":2,"vocab_size":8}"#,
    )
    .unwrap();
    let err = load::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap_err();
    match err {
        Error::UnsupportedModel {
            model_type,
            supported,
        } => {
            assert_eq!(model_type, "gpt2");
            assert!(supported.contains(&"llama") && supported.contains(&"qwen3"));
        }
        other => panic!("{other}"),
    }
    // A missing config.json through the entry point.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unknown_hub_id_offline_says_how_to_pass_a_local_path() {
    let cache = temp_dir("hub_cache");
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_HUB_CACHE", &cache);
    let err = hub::resolve("no-such-org/no-such-model-xyz").unwrap_err();
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::remove_var("HF_HUB_CACHE");
    match &err {
        Error::Hub(m) => {
            assert!(m.contains("no-such-org/no-such-model-xyz"), "{m}");
            assert!(m.contains("HF_HUB_OFFLINE"), "{m}");
            assert!(m.contains("local folder") && m.contains(".gguf"), "{m}");
        }
        other => panic!("{other}"),
    }
    // Path-like strings that do not exist are I/O errors, not Hub look-ups.
    assert!(matches!(
        hub::resolve("/no/such/model.gguf"),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&cache).ok();
}

fn config(quantization: &str) -> ModelConfig {
    ModelConfig::from_json(&format!(
        r#"{{"model_type":"llama","hidden_size":64,"num_hidden_layers":1,"intermediate_size":64,
            "num_attention_heads":2,"vocab_size":8{quantization}}}"#
    ))
    .unwrap()
}

#[test]
fn dtype_policy_defaults_by_device() {
    let cpu = LoadOptions {
        dtype: None,
        keep_quantized: None,
        device: Device::cpu(),
        ..Default::default()
    };
    assert_eq!(cpu.compute_dtype(), Dtype::Float32);
    // On the CPU, quantized weights stay quantized exactly when the native kernel is on.
    assert_eq!(
        cpu.keeps_quantized(),
        cfg!(target_arch = "x86_64") && mlx_rs::quant::native_qmm_enabled()
    );
    let forced = LoadOptions {
        keep_quantized: Some(false),
        ..cpu.clone()
    };
    assert!(!forced.keeps_quantized());
    let gpu = LoadOptions {
        device: Device::gpu(),
        ..cpu.clone()
    };
    assert_eq!(gpu.compute_dtype(), Dtype::Bfloat16);
    assert!(gpu.keeps_quantized());

    // Floating tensors converted; nothing quantized → no quantization passed on.
    let mut w = HashMap::new();
    w.insert(
        "a.weight".to_string(),
        Array::zeros(&[2, 2], Dtype::Float16).unwrap(),
    );
    let options = LoadOptions {
        dtype: Some(Dtype::Bfloat16),
        ..cpu
    };
    let (w, build) = load::prepare_weights(&config(""), Weights::from_map(w), &options).unwrap();
    assert_eq!(w.get("a.weight").unwrap().dtype(), Dtype::Bfloat16);
    assert_eq!(build.dtype, Dtype::Bfloat16);
    assert!(build.quantization.is_none());
}

/// A 1x64 row quantized by hand: 4 bits, group 32, scale s_g and bias b_g per group; packed
/// little-endian nibbles (element i of a word at bits 4*i).
fn hand_quantized() -> (Array, Array, Array, Vec<f32>) {
    let q: Vec<u32> = (0..64).map(|i| (i * 7 % 16) as u32).collect();
    let scales = [0.5f32, -0.25];
    let biases = [1.0f32, 3.0];
    let mut packed = vec![0u32; 8];
    for (i, v) in q.iter().enumerate() {
        packed[i / 8] |= v << (4 * (i % 8));
    }
    let dense: Vec<f32> = q
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f32 * scales[i / 32] + biases[i / 32])
        .collect();
    (
        Array::from_slice(&packed, &[1, 8]).unwrap(),
        Array::from_slice(&scales, &[1, 2]).unwrap(),
        Array::from_slice(&biases, &[1, 2]).unwrap(),
        dense,
    )
}

#[test]
fn quantized_weights_are_dequantized_on_cpu_and_kept_on_request() {
    let q = r#","quantization":{"group_size":32,"bits":4}"#;
    let triplet = || {
        let (w, s, b, dense) = hand_quantized();
        let mut m = HashMap::new();
        m.insert("m.weight".to_string(), w);
        m.insert("m.scales".to_string(), s.astype(Dtype::Float16).unwrap());
        m.insert("m.biases".to_string(), b.astype(Dtype::Float16).unwrap());
        (Weights::from_map(m), dense)
    };
    let cpu = LoadOptions {
        dtype: None,
        keep_quantized: Some(false),
        device: Device::cpu(),
        ..Default::default()
    };
    let (weights, dense) = triplet();
    let (w, build) = load::prepare_weights(&config(q), weights, &cpu).unwrap();
    assert!(build.quantization.is_none());
    assert_eq!(w.names(), vec!["m.weight"]);
    let got = w.get("m.weight").unwrap();
    assert_eq!((got.shape(), got.dtype()), (vec![1, 64], Dtype::Float32));
    assert_eq!(got.to_vec::<f32>().unwrap(), dense);

    let keep = LoadOptions {
        keep_quantized: Some(true),
        ..cpu.clone()
    };
    let (weights, _) = triplet();
    let (w, build) = load::prepare_weights(&config(q), weights, &keep).unwrap();
    assert_eq!(build.quantization.unwrap().default.bits, 4);
    assert_eq!(w.names(), vec!["m.biases", "m.scales", "m.weight"]);
    // Kept under f32 compute, half-precision scales and biases stay as stored.
    assert_eq!(w.get("m.scales").unwrap().dtype(), Dtype::Float16);
    assert_eq!(w.get("m.biases").unwrap().dtype(), Dtype::Float16);
    assert_eq!(w.get("m.weight").unwrap().dtype(), Dtype::Uint32);

    // Quantized tensors without a quantization entry, or a triplet missing its biases.
    let (weights, _) = triplet();
    assert!(matches!(
        load::prepare_weights(&config(""), weights, &cpu),
        Err(Error::Config(_))
    ));
    let (mut weights, _) = triplet();
    weights.take("m.biases").unwrap();
    assert!(matches!(
        load::prepare_weights(&config(q), weights, &cpu),
        Err(Error::MissingTensor(n)) if n == "m.biases"
    ));
}

/// The tiny HF llama (transformers' own folder) through the entry point: logits equal
/// transformers' (recorded in tiny_llama.json by the fixture script).
#[test]
fn load_entry_point_on_a_hf_folder() {
    let dir = common::fixture("load/tiny_llama_hf");
    let options = LoadOptions {
        dtype: None,
        keep_quantized: None,
        device: Device::cpu(),
        ..Default::default()
    };
    let loaded = load::load(dir.to_str().unwrap(), &options).unwrap();
    assert_eq!(loaded.eos_token_ids, vec![2]);
    assert_eq!(loaded.config.num_hidden_layers, 2);
    // By hand from config.json: embed_tokens and lm_head 266 x 32, a final norm of 32, and two
    // layers of q, o 32 x 32, k, v 16 x 32, gate, up, down 48 x 32 and two norms of 32.
    let layer = 2 * 32 * 32 + 2 * 16 * 32 + 3 * 48 * 32 + 2 * 32;
    assert_eq!(loaded.parameter_count, 2 * 266 * 32 + 32 + 2 * layer);
    let text = std::fs::read_to_string(common::fixture("load/tiny_llama.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tokens: Vec<i32> = common::i32s(&expected["tokens"]);
    let input = Array::from_slice(&tokens, &[1, tokens.len() as i32]).unwrap();
    let mut cache = loaded.model.new_cache();
    let logits = loaded.model.forward(&input, &mut cache).unwrap();
    assert_eq!(logits.dtype(), Dtype::Float32);
    let got = logits.to_vec::<f32>().unwrap();
    let want = common::f32s(&expected["logits"]);
    let max_err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert_eq!(got.len(), want.len());
    assert!(max_err < 1e-3, "max |logit - transformers| = {max_err}");
}

#[test]
fn eos_ids_prefer_generation_config_then_config_then_tokenizer() {
    let tokenizer =
        mlx_models::text::Tokenizer::from_dir(&common::fixture("load/tiny_llama_hf")).unwrap();
    let (config, generation) = hf::load_hf_config(&common::fixture("load/hf_sharded")).unwrap();
    assert_eq!(
        load::eos_token_ids(&config, generation.as_ref(), &tokenizer),
        vec![2, 7]
    );
    assert_eq!(load::eos_token_ids(&config, None, &tokenizer), vec![2]);
    let mut no_eos = config.clone();
    no_eos.eos_token_id = None;
    // tokenizer_config.json of the tiny llama names `</s>` (id 2) as eos.
    assert_eq!(
        load::eos_token_ids(&no_eos, None, &tokenizer),
        tokenizer.eos_token_ids()
    );
    assert_eq!(tokenizer.token_to_id("</s>"), Some(2));
    assert!(tokenizer.eos_token_ids().contains(&2));
}
