//! The engine on real weights: SmolLM2-135M-Instruct (GGUF Q4_1), greedy completion and
//! perplexity against a transformers reference (scripts/reference_perplexity.py, recorded in
//! tests/fixtures/ppl_reference.json).

mod common;

use mlx_models::load::{load, LoadOptions};
use mlx_models::model::FinishReason;
use mlx_models::runtime::engine::MlxEngine;
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
    let (text, stats, prompt_len) = common::complete_capital_of_france(&mut engine, &[]);
    assert!(text.contains("Paris"), "completion: {text:?}");
    assert_eq!(stats.prompt_tokens, prompt_len);
    assert!(stats.generation_tokens >= 1 && stats.generation_tokens <= 16);

    // A stop string cuts the text before it: the reference completion is " Paris.\n\n...".
    let (cut, stats, _) = common::complete_capital_of_france(&mut engine, &[".".into()]);
    assert_eq!(cut.trim(), "Paris", "completion: {cut:?}");
    assert_eq!(stats.finish_reason, FinishReason::Callback);
}

#[test]
fn perplexity_matches_the_transformers_reference() {
    let Some(mut engine) = engine() else { return };
    common::check_perplexity(&mut engine, "ppl_reference.json");
}
