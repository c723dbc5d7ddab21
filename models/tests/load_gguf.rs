//! GGUF loading against llama.cpp's own converter (tiny llama / qwen2 checkpoints made with
//! transformers and converted by `convert_hf_to_gguf.py`, originals recorded as JSON), a numpy
//! decoding of SmolLM2's Q4_1 blocks, and hostile files. Fixtures:
//! `scripts/fixtures/load_fixtures.py`.

mod common;

use mlx_models::load::gguf::{load_gguf_checkpoint, read_gguf_checkpoint};
use mlx_models::load::{dequantize_weights, prepare_weights, LoadOptions};
use mlx_models::Error;
use mlx_rs::io::gguf::{save_gguf, Gguf, GgufValue};
use mlx_rs::{Array, Device, Dtype};
use std::path::PathBuf;

/// Every original HF tensor equals (exactly) the one read from the converted GGUF, and no other
/// tensor is present.
fn check_tiny(arch: &str) {
    let expected = common::json(&format!("load/tiny_{arch}.json"));
    let ck = read_gguf_checkpoint(&common::fixture(&format!("load/tiny_{arch}.gguf"))).unwrap();
    let tensors = expected["tensors"].as_object().unwrap();
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    assert_eq!(ck.weights.names(), names, "{arch}");
    for (name, t) in tensors {
        let a = ck.weights.get(name).unwrap();
        let shape: Vec<i32> = common::i32s(&t["shape"]);
        assert_eq!(a.shape(), shape, "{arch} {name}");
        assert_eq!(a.dtype(), Dtype::Float32, "{arch} {name}");
        assert!(
            a.to_vec::<f32>().unwrap() == common::f32s(&t["values"]),
            "{arch} {name} differs from the HF original"
        );
    }
    // Config against the HF config.json the GGUF came from.
    let hf = &expected["config"];
    let c = &ck.config;
    assert_eq!(c.model_type, arch);
    assert_eq!(c.hidden_size as u64, hf["hidden_size"].as_u64().unwrap());
    assert_eq!(
        c.num_hidden_layers as u64,
        hf["num_hidden_layers"].as_u64().unwrap()
    );
    assert_eq!(
        c.intermediate_size as u64,
        hf["intermediate_size"].as_u64().unwrap()
    );
    assert_eq!(
        c.num_attention_heads as u64,
        hf["num_attention_heads"].as_u64().unwrap()
    );
    assert_eq!(
        c.num_key_value_heads() as u64,
        hf["num_key_value_heads"].as_u64().unwrap()
    );
    assert_eq!(c.vocab_size as u64, hf["vocab_size"].as_u64().unwrap());
    assert_eq!(
        c.tie_word_embeddings(),
        hf["tie_word_embeddings"].as_bool().unwrap()
    );
    assert_eq!(
        c.rms_norm_eps(),
        hf["rms_norm_eps"].as_f64().unwrap() as f32
    );
    let theta = hf
        .get("rope_theta")
        .or_else(|| hf["rope_parameters"].get("rope_theta"))
        .unwrap();
    assert_eq!(c.rope_theta(), theta.as_f64().unwrap() as f32);
    assert_eq!(c.head_dim(), c.hidden_size / c.num_attention_heads);
}

#[test]
fn tiny_llama_gguf_unpermutes_q_and_k_to_the_hf_originals() {
    check_tiny("llama");
}

#[test]
fn tiny_qwen2_gguf_maps_names_and_biases_without_permutation() {
    check_tiny("qwen2");
}

#[test]
fn smollm2_q4_1_config_and_dequantized_rows() {
    let Some(path) = common::test_data("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let expected = common::json("load/smollm2_q4_1.json");
    let (config, mut weights, tokenizer) = load_gguf_checkpoint(&path).unwrap();
    // test-weights.md: 30 layers, d=576, 9/3 heads, head_dim 64, FFN 1536, vocab 49152,
    // theta 1e5, eps 1e-5, ctx 8192, tied.
    assert_eq!(config.model_type, "llama");
    assert_eq!(config.num_hidden_layers, 30);
    assert_eq!(config.hidden_size, 576);
    assert_eq!(
        (config.num_attention_heads, config.num_key_value_heads()),
        (9, 3)
    );
    assert_eq!(config.head_dim(), 64);
    assert_eq!(config.intermediate_size, 1536);
    assert_eq!(config.vocab_size, 49152);
    assert_eq!(config.rope_theta(), 1e5);
    assert_eq!(config.rms_norm_eps(), 1e-5);
    assert_eq!(config.context_length(), Some(8192));
    assert!(config.tie_word_embeddings());
    assert_eq!(tokenizer.vocab_size(), 49152);
    // The same values read independently by the `gguf` package.
    let want = &expected["config"];
    assert_eq!(
        config.num_hidden_layers as u64,
        want["num_hidden_layers"].as_u64().unwrap()
    );
    assert_eq!(
        config.vocab_size as u64,
        want["vocab_size"].as_u64().unwrap()
    );
    assert_eq!(
        config.rms_norm_eps(),
        want["rms_norm_eps"].as_f64().unwrap() as f32
    );

    // Q4_1 everywhere but token_embd (Q8_0): group size 32, default 4 bits, embed 8 bits.
    let q = config.quantization().unwrap().unwrap();
    assert_eq!((q.default.group_size, q.default.bits), (32, 4));
    let embed = q.for_module("model.embed_tokens").unwrap();
    assert_eq!((embed.group_size, embed.bits), (32, 8));
    let qw = weights
        .get("model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(qw.shape(), vec![576, 576 * 4 / 32]);
    assert_eq!(
        weights
            .get("model.layers.0.self_attn.q_proj.scales")
            .unwrap()
            .shape(),
        vec![576, 576 / 32]
    );
    assert!(!weights.contains("lm_head.weight"));

    dequantize_weights(&mut weights, &q, Dtype::Float32).unwrap();
    for (gguf_name, hf_name) in [
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ),
        (
            "blk.0.attn_k.weight",
            "model.layers.0.self_attn.k_proj.weight",
        ),
    ] {
        let rows = &expected["rows"][gguf_name];
        let w = weights.get(hf_name).unwrap();
        let shape: Vec<i32> = common::i32s(&rows["shape"]);
        assert_eq!(w.shape(), shape);
        let all = w.to_vec::<f32>().unwrap();
        let cols = shape[1] as usize;
        for (row, values) in rows["rows"].as_object().unwrap() {
            let r: usize = row.parse().unwrap();
            let got = &all[r * cols..(r + 1) * cols];
            for (c, (g, e)) in got.iter().zip(common::f32s(values)).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-6 * e.abs().max(1e-3),
                    "{hf_name}[{r}, {c}]: {g} vs numpy {e}"
                );
            }
        }
    }
}

#[test]
fn smollm2_kept_quantized_unpermutes_triplets_like_the_dense_rows() {
    let Some(path) = common::test_data("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let ck = read_gguf_checkpoint(&path).unwrap();
    let options = LoadOptions {
        dtype: Some(Dtype::Float32),
        keep_quantized: Some(true),
        device: Device::cpu(),
        ..Default::default()
    };
    let (weights, build) = prepare_weights(&ck.config, ck.weights, &options).unwrap();
    let q = build.quantization.unwrap();
    let name = "model.layers.0.self_attn.k_proj";
    // Kept quantized under f32 compute, the f16 scales and biases stay f16 (the kernels widen
    // them in registers); widened here, the rows must equal the dense ones.
    let scales = weights.get(&format!("{name}.scales")).unwrap();
    let biases = weights.get(&format!("{name}.biases")).unwrap();
    assert_eq!(
        (scales.dtype(), biases.dtype()),
        (Dtype::Float16, Dtype::Float16)
    );
    let dense = mlx_rs::quant::dequantize(
        weights.get(&format!("{name}.weight")).unwrap(),
        &scales.astype(Dtype::Float32).unwrap(),
        &biases.astype(Dtype::Float32).unwrap(),
        32,
        q.for_module(name).unwrap().bits,
    )
    .unwrap()
    .to_vec::<f32>()
    .unwrap();
    let expected = common::json("load/smollm2_q4_1.json");
    let row = &expected["rows"]["blk.0.attn_k.weight"]["rows"]["33"];
    for (g, e) in dense[33 * 576..34 * 576].iter().zip(common::f32s(row)) {
        assert!((g - e).abs() <= 1e-6 * e.abs().max(1e-3), "{g} vs {e}");
    }
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mlx_models_gguf_{}_{name}", std::process::id()))
}

/// A file cut anywhere (in the header, the tensor table, or the data) is a typed GGUF error
/// found by the header check, before any tensor data is read.
#[test]
fn truncated_gguf_is_a_gguf_error() {
    let bytes = std::fs::read(common::fixture("load/tiny_qwen2.gguf")).unwrap();
    let path = temp("truncated.gguf");
    for cut in [3, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = read_gguf_checkpoint(&path).unwrap_err();
        assert!(matches!(err, Error::Gguf(_)), "cut at {cut}: {err}");
    }
    std::fs::remove_file(&path).ok();
}

/// A type the loader does not decode is refused up front, naming the type and the tensor.
#[test]
fn a_type_the_loader_cannot_decode_is_named() {
    let err = read_gguf_checkpoint(&common::fixture("load/iq4_nl.gguf")).unwrap_err();
    match err {
        Error::Gguf(m) => assert!(m.contains("IQ4_NL") && m.contains("token_embd"), "{m}"),
        other => panic!("{other}"),
    }
}

/// Q5_0 (which MLX's own GGUF loader rejects) is re-laid as an 8-bit group-32 triplet whose
/// dequantization (by MLX) equals the blocks' values (decoded by the project's `Q5_0`
/// decoder, itself checked against the `gguf` package in tests/ggml_quants.rs).
#[test]
fn q5_0_loads_as_an_exact_8_bit_triplet() {
    use mlx_models::load::ggml_quants::dequantize as decode;
    use mlx_models::load::gguf_file::{GgmlType, GgufFile};
    let path = common::fixture("load/q5_0.gguf");
    let ck = read_gguf_checkpoint(&path).unwrap();
    let name = "model.embed_tokens";
    let q = ck.config.quantization().unwrap().unwrap();
    assert_eq!(q.for_module(name).unwrap().bits, 8);
    let get = |s: &str| ck.weights.get(&format!("{name}.{s}")).unwrap();
    let dense = mlx_rs::quant::dequantize(
        get("weight"),
        &get("scales").astype(Dtype::Float32).unwrap(),
        &get("biases").astype(Dtype::Float32).unwrap(),
        32,
        8,
    )
    .unwrap()
    .to_vec::<f32>()
    .unwrap();
    let file = GgufFile::open(&path).unwrap();
    let info = file.tensor("token_embd.weight").unwrap();
    assert_eq!(info.ggml_type, GgmlType::Q5_0);
    let mut want = vec![0f32; 8 * 32];
    decode(
        GgmlType::Q5_0,
        &file.read_tensor_data(info).unwrap(),
        &mut want,
    )
    .unwrap();
    assert_eq!(dense, want);
}

fn minimal_gguf(arch: &str, q_rows: i32) -> Gguf {
    let mut g = Gguf::default();
    let num = |v: u32| GgufValue::Array(Array::scalar(v));
    g.metadata.insert(
        "general.architecture".into(),
        GgufValue::String(arch.into()),
    );
    for (k, v) in [
        ("block_count", 1),
        ("embedding_length", 8),
        ("feed_forward_length", 16),
        ("attention.head_count", 2),
        ("attention.head_count_kv", 1),
    ] {
        g.metadata.insert(format!("{arch}.{k}"), num(v));
    }
    g.metadata.insert(
        "tokenizer.ggml.tokens".into(),
        GgufValue::Strings(vec!["a".into(), "b".into()]),
    );
    g.arrays.insert(
        "token_embd.weight".into(),
        Array::zeros(&[2, 8], Dtype::Float32).unwrap(),
    );
    g.arrays.insert(
        "blk.0.attn_q.weight".into(),
        Array::zeros(&[q_rows, 8], Dtype::Float32).unwrap(),
    );
    g
}

#[test]
fn unsupported_architecture_and_wrong_q_shape() {
    let path = temp("arch.gguf");
    save_gguf(&path, &minimal_gguf("falcon", 8)).unwrap();
    match read_gguf_checkpoint(&path).unwrap_err() {
        Error::UnsupportedModel {
            model_type,
            supported,
        } => {
            assert_eq!(model_type, "falcon");
            for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
                assert!(
                    supported.contains(&arch),
                    "{arch} missing from {supported:?}"
                );
            }
        }
        other => panic!("{other}"),
    }
    // 2 heads x head_dim 4 = 8 rows expected for attn_q; 6 given.
    save_gguf(&path, &minimal_gguf("llama", 6)).unwrap();
    match read_gguf_checkpoint(&path).unwrap_err() {
        Error::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "model.layers.0.self_attn.q_proj.weight");
            assert_eq!((expected, found), (vec![8, 8], vec![6, 8]));
        }
        other => panic!("{other}"),
    }
    // The right shape loads; a missing required key is a GGUF error.
    save_gguf(&path, &minimal_gguf("llama", 8)).unwrap();
    let ck = read_gguf_checkpoint(&path).unwrap();
    assert_eq!((ck.config.vocab_size, ck.config.head_dim()), (2, 4));
    let mut g = minimal_gguf("qwen3", 8);
    g.metadata.remove("qwen3.block_count");
    save_gguf(&path, &g).unwrap();
    assert!(matches!(
        read_gguf_checkpoint(&path),
        Err(Error::Gguf(m)) if m.contains("qwen3.block_count")
    ));
    std::fs::remove_file(&path).ok();
}

/// The loaded tiny model's logits equal transformers' (the un-permuted Q/K must meet the
/// families' HF-style RoPE for this to hold).
fn check_logits(arch: &str) {
    let expected = common::json(&format!("load/tiny_{arch}.json"));
    let ck = read_gguf_checkpoint(&common::fixture(&format!("load/tiny_{arch}.gguf"))).unwrap();
    let options = LoadOptions {
        dtype: Some(Dtype::Float32),
        keep_quantized: None,
        device: Device::cpu(),
        ..Default::default()
    };
    let (weights, build) = prepare_weights(&ck.config, ck.weights, &options).unwrap();
    let build = mlx_models::families::BuildOptions {
        huge_pages: false,
        dtype: build.dtype,
        quantization: build.quantization,
    };
    let model = mlx_models::families::build(&ck.config, weights, &build).unwrap();
    let tokens: Vec<i32> = common::i32s(&expected["tokens"]);
    let input = Array::from_slice(&tokens, &[1, tokens.len() as i32]).unwrap();
    let mut cache = model.new_cache();
    let logits = model.forward(&input, &mut cache).unwrap();
    let got = logits
        .astype(Dtype::Float32)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let want = common::f32s(&expected["logits"]);
    assert_eq!(got.len(), want.len());
    let max_err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_err < 1e-3,
        "{arch}: max |logit - transformers| = {max_err}"
    );
}

#[test]
fn tiny_llama_gguf_logits_match_transformers() {
    check_logits("llama");
}

#[test]
fn tiny_qwen2_gguf_logits_match_transformers() {
    check_logits("qwen2");
}

#[test]
fn load_entry_point_on_a_gguf_file() {
    let path = common::fixture("load/tiny_qwen2.gguf");
    let options = LoadOptions {
        dtype: None,
        keep_quantized: None,
        device: Device::cpu(),
        ..Default::default()
    };
    let loaded = mlx_models::load::load(path.to_str().unwrap(), &options).unwrap();
    let expected = common::json("load/tiny_qwen2.json");
    // The GGUF's eos (written by llama.cpp from the HF tokenizer's `<|im_end|>`, id 2).
    assert_eq!(
        loaded.eos_token_ids,
        vec![expected["config"]["eos_token_id"].as_u64().unwrap() as u32]
    );
    assert_eq!(loaded.config.model_type, "qwen2");
    assert_eq!(loaded.source, path.display().to_string());
    assert!(loaded.generation_config.eos_token_id.is_none());
}

/// The KV cache's default dtype follows the file: a float GGUF keeps the compute dtype (so its
/// logits keep matching transformers' float32 ones, as above); a GGUF of quantized weights
/// stores float16, as llama.cpp's default cache; `LoadOptions::kv_cache_dtype` overrides both.
#[test]
fn the_kv_cache_is_float16_by_default_for_quantized_gguf_only() {
    let cpu = LoadOptions {
        device: Device::cpu(),
        ..Default::default()
    };
    let load = |path: &std::path::Path, options: &LoadOptions| {
        mlx_models::load::load(path.to_str().unwrap(), options).unwrap()
    };
    let float = load(&common::fixture("load/tiny_qwen2.gguf"), &cpu);
    assert_eq!(float.kv_cache_dtype, Dtype::Float32);
    assert_eq!(float.model.new_cache().storage(), None);
    let half = LoadOptions {
        kv_cache_dtype: Some(Dtype::Float16),
        ..cpu.clone()
    };
    let float_asked = load(&common::fixture("load/tiny_qwen2.gguf"), &half);
    assert_eq!(float_asked.kv_cache_dtype, Dtype::Float16);
    assert_eq!(
        float_asked.model.new_cache().storage(),
        Some(Dtype::Float16)
    );
    let Some(path) = common::test_data("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let quantized = load(&path, &cpu);
    assert_eq!(quantized.kv_cache_dtype, Dtype::Float16);
    assert_eq!(quantized.model.new_cache().storage(), Some(Dtype::Float16));
    let exact = LoadOptions {
        kv_cache_dtype: Some(Dtype::Float32),
        ..cpu
    };
    let quantized_exact = load(&path, &exact);
    assert_eq!(quantized_exact.kv_cache_dtype, Dtype::Float32);
    assert_eq!(quantized_exact.model.new_cache().storage(), None);
    // The memory budget counts the cache in the dtype it will have: over a 1-byte budget the
    // two loads need amounts that differ by half the f32 cache of 1024 positions (SmolLM2: 30
    // layers, keys and values, 3 KV heads of 64: 2 bytes saved per value).
    let needed = |kv: Option<Dtype>| {
        let options = LoadOptions {
            kv_cache_dtype: kv,
            context_length: Some(1024),
            memory_budget: mlx_models::load::MemoryBudget::Bytes(1),
            ..exact.clone()
        };
        match mlx_models::load::load(path.to_str().unwrap(), &options) {
            Err(Error::MemoryBudget { needed, .. }) => needed,
            other => panic!("expected a memory budget error, got {:?}", other.err()),
        }
    };
    assert_eq!(
        needed(Some(Dtype::Float32)) - needed(None),
        30 * 2 * 3 * 64 * 1024 * 2
    );
}
