//! Malformed Gemma 3 and Mistral configs and checkpoints: each gets a typed error naming the
//! field or tensor (never a panic or a wrong model).

mod common;

use mlx_models::config::ModelConfig;
use mlx_models::families::{self, build, BuildOptions};
use mlx_models::weights::Weights;
use mlx_models::Error;
use mlx_rs::io::safetensors::load_safetensors;
use mlx_rs::Dtype;

const GEMMA: &str = r#"{"model_type":"gemma3_text","hidden_size":64,"intermediate_size":128,
    "num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,
    "vocab_size":256,"sliding_window":4,"query_pre_attn_scalar":24}"#;
const MISTRAL: &str = r#"{"model_type":"mistral","hidden_size":64,"intermediate_size":128,
    "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":24,
    "vocab_size":256,"sliding_window":5}"#;

/// `base` with `key` set to the JSON `value`.
fn with(base: &str, key: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
    v[key] = serde_json::from_str(value).unwrap();
    v.to_string()
}

/// The field a config error names.
fn field_of(text: &str) -> String {
    let err = ModelConfig::from_json(text)
        .and_then(|c| families::model_spec(&c).map(|_| ()))
        .expect_err("a malformed config must be refused");
    match err {
        Error::ConfigValue { field, .. } => field,
        other => panic!("expected ConfigValue, got {other:?}"),
    }
}

#[test]
fn malformed_gemma3_configs_name_the_field() {
    let cases = [
        (
            "layer_types",
            r#"["sliding_attention","full_attention"]"#,
            "layer_types",
        ),
        (
            "layer_types",
            r#"["sliding_attention","global","full_attention"]"#,
            "layer_types",
        ),
        ("sliding_window", "0", "sliding_window"),
        ("query_pre_attn_scalar", "-1.0", "query_pre_attn_scalar"),
        ("rope_local_base_freq", "0.0", "rope_local_base_freq"),
        ("hidden_activation", r#""relu""#, "hidden_activation"),
        (
            "final_logit_softcapping",
            "-30.0",
            "final_logit_softcapping",
        ),
        (
            "rope_parameters",
            r#"{"full_attention":{"rope_type":"linear","factor":-8.0},"sliding_attention":{}}"#,
            "rope_parameters.full_attention.factor",
        ),
        (
            "rope_parameters",
            r#"{"full_attention":{"rope_theta":"high"},"sliding_attention":{}}"#,
            "rope_parameters.full_attention",
        ),
    ];
    for (key, value, field) in cases {
        assert_eq!(field_of(&with(GEMMA, key, value)), field, "{key} = {value}");
    }
}

#[test]
fn malformed_mistral_configs_name_the_field() {
    assert_eq!(
        field_of(&with(MISTRAL, "sliding_window", "0")),
        "sliding_window"
    );
    assert_eq!(
        field_of(&with(MISTRAL, "hidden_act", r#""gelu""#)),
        "hidden_act"
    );
    // Ministral 3's query scaling needs the original context length.
    let ministral = with(
        &with(MISTRAL, "model_type", r#""ministral3""#),
        "rope_parameters",
        r#"{"rope_type":"yarn","factor":16.0,"llama_4_scaling_beta":0.1,"rope_theta":1e6}"#,
    );
    assert_eq!(
        field_of(&ministral),
        "rope_parameters.original_max_position_embeddings"
    );
    // An odd head_dim cannot rotate.
    assert!(matches!(
        ModelConfig::from_json(&with(MISTRAL, "head_dim", "25")),
        Err(Error::Config(_))
    ));
}

fn fixture_weights(name: &str) -> (ModelConfig, Weights) {
    let dir = common::fixture(&format!("tiny/{name}"));
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let (tensors, _) = load_safetensors(dir.join("model.safetensors")).unwrap();
    let weights = families::sanitize(&config, Weights::from_map(tensors)).unwrap();
    (config, weights)
}

fn build_err(config: &ModelConfig, weights: Weights) -> Error {
    let options = BuildOptions {
        huge_pages: false,
        dtype: Dtype::Float32,
        quantization: None,
    };
    build(config, weights, &options)
        .err()
        .expect("the build must fail")
}

#[test]
fn missing_and_misshaped_gemma3_tensors_are_named() {
    let (config, mut weights) = fixture_weights("gemma3");
    let name = "model.layers.2.post_feedforward_layernorm.weight";
    weights.take(name).unwrap();
    match build_err(&config, weights) {
        Error::MissingTensor(n) => assert_eq!(n, name),
        other => panic!("{other:?}"),
    }
    let (config, mut weights) = fixture_weights("gemma3_text");
    let q_norm = "model.layers.1.self_attn.q_norm.weight";
    weights.take(q_norm).unwrap();
    weights.insert(q_norm, mlx_rs::Array::zeros(&[16], Dtype::Float32).unwrap());
    match build_err(&config, weights) {
        Error::ShapeMismatch { name, .. } => assert_eq!(name, q_norm),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_vision_tower_is_dropped_but_other_extras_are_reported() {
    let (config, mut weights) = fixture_weights("ministral3");
    assert!(!weights.names().iter().any(|n| n.contains("vision")));
    weights.insert(
        "model.layers.0.self_attn.rotary_emb.extra",
        mlx_rs::Array::zeros(&[2], Dtype::Float32).unwrap(),
    );
    assert!(matches!(
        build_err(&config, weights),
        Error::UnexpectedTensors(names) if names.iter().any(|n| n.ends_with("rotary_emb.extra"))
    ));
}

#[test]
fn ministral_layer_types_put_the_window_on_sliding_layers_only() {
    let text = with(
        MISTRAL,
        "layer_types",
        r#"["sliding_attention","full_attention"]"#,
    );
    let text = with(&text, "model_type", r#""ministral""#);
    let spec = families::model_spec(&ModelConfig::from_json(&text).unwrap()).unwrap();
    let windows: Vec<_> = spec.layers.iter().map(|l| l.attention.window).collect();
    assert_eq!(windows, vec![Some(5), None]);
    assert_eq!(spec.layers[0].attention.head_dim, 24);
}

#[test]
fn both_wrapper_prefixes_reach_the_decoder_names() {
    let config = ModelConfig::from_json(&with(GEMMA, "model_type", r#""gemma3""#)).unwrap();
    for (checkpoint, decoder) in [
        (
            "language_model.model.layers.0.mlp.up_proj.weight",
            Some("model.layers.0.mlp.up_proj.weight"),
        ),
        (
            "model.language_model.layers.0.mlp.up_proj.weight",
            Some("model.layers.0.mlp.up_proj.weight"),
        ),
        (
            "model.language_model.norm.weight",
            Some("model.norm.weight"),
        ),
        (
            "vision_tower.vision_model.embeddings.patch_embedding.weight",
            None,
        ),
        ("model.vision_tower.encoder.layers.0.mlp.fc1.weight", None),
        ("multi_modal_projector.mm_input_projection_weight", None),
        // tied: the head's duplicate is dropped too
        ("language_model.lm_head.weight", None),
    ] {
        assert_eq!(
            families::rename(&config, checkpoint).unwrap().as_deref(),
            decoder,
            "{checkpoint}"
        );
    }
}
