//! The engine on real weights: SmolLM2-135M-Instruct (GGUF Q4_1), greedy completion and
//! perplexity against a transformers reference (scripts/reference_perplexity.py, recorded in
//! tests/fixtures/ppl_reference.json).

mod common;

use mlx_models::load::{load, LoadOptions};
use mlx_models::model::{FinishReason, GenerateParams, LanguageModel};
use mlx_models::runtime::engine::MlxEngine;
use mlx_models::runtime::generate::generate_text;
use mlx_models::runtime::perplexity::perplexity;
use mlx_rs::Device;

fn engine() -> Option<MlxEngine> {
    let path = common::test_data("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?;
    let options = LoadOptions {
        device: Device::cpu(),
        ..LoadOptions::default()
    };
    let loaded = load(path.to_str().expect("utf-8 path"), &options).expect("load SmolLM2");
    Some(MlxEngine::from_loaded(loaded, &options).expect("engine"))
}

#[test]
fn greedy_completion_knows_the_capital_of_france() {
    let Some(mut engine) = engine() else { return };
    let prompt = engine
        .tokenizer()
        .encode("The capital of France is", true)
        .unwrap();
    let params = GenerateParams {
        max_tokens: 16,
        ..GenerateParams::default()
    };
    let mut text = String::new();
    let stats = generate_text(&mut engine, &prompt, &params, &[], &mut |t| {
        text.push_str(t)
    })
    .unwrap();
    assert!(text.contains("Paris"), "completion: {text:?}");
    assert_eq!(stats.prompt_tokens, prompt.len());
    assert!(stats.generation_tokens >= 1 && stats.generation_tokens <= 16);

    // A stop string cuts the text before it: the reference completion is " Paris.\n\n...".
    let mut cut = String::new();
    let stats = generate_text(&mut engine, &prompt, &params, &[".".into()], &mut |t| {
        cut.push_str(t)
    })
    .unwrap();
    assert_eq!(cut.trim(), "Paris", "completion: {cut:?}");
    assert_eq!(stats.finish_reason, FinishReason::Callback);
}

#[test]
fn perplexity_matches_the_transformers_reference() {
    let Some(mut engine) = engine() else { return };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("ppl_reference.json")).unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(common::fixture("ppl_text.txt")).unwrap();
    let tokens = engine.tokenizer().encode(&text, true).unwrap();
    assert_eq!(
        tokens.len() as u64,
        reference["text_tokens"].as_u64().unwrap()
    );

    let ctx = reference["ctx"].as_u64().unwrap() as usize;
    let (ppl, count) = perplexity(&mut engine, &text, ctx, None).unwrap();
    let expected = reference["perplexity"].as_f64().unwrap();
    assert_eq!(count as u64, reference["scored_tokens"].as_u64().unwrap());
    assert!(
        (ppl - expected).abs() / expected < 0.02,
        "perplexity {ppl} vs reference {expected}"
    );
}
