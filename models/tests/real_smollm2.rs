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

/// `qwen_chat`'s multi-turn reuse: the second turn prefills only what it adds to the first
/// (the template's rendering of the reply may differ from the generated tokens; the longest
/// shared prefix is reused) and says the same as a cold engine.
#[test]
fn a_second_chat_turn_reuses_the_first_and_answers_the_same() {
    use mlx_models::model::{GenerateParams, LanguageModel};
    use mlx_models::text::ChatMessage;
    let (Some(mut warm), Some(mut cold)) = (engine(), engine()) else {
        return;
    };
    warm.set_prefix_cache_bytes(256 << 20);
    let params = GenerateParams {
        max_tokens: 12,
        ..GenerateParams::default()
    };
    let generate = |engine: &mut MlxEngine, messages: &[ChatMessage]| {
        let ids = engine
            .tokenizer()
            .apply_chat_template(messages, true)
            .unwrap();
        let mut out = Vec::new();
        let stats = engine
            .generate(&ids, &params, &mut |t| {
                out.push(t);
                Ok(true)
            })
            .unwrap();
        (ids, out, stats)
    };
    let mut messages = vec![ChatMessage::new("user", "What is the capital of France?")];
    let (first_ids, reply, stats) = generate(&mut warm, &messages);
    assert_eq!(stats.cached_tokens, 0);
    let text = warm.tokenizer().decode(&reply, true).unwrap();
    messages.push(ChatMessage::new("assistant", text));
    messages.push(ChatMessage::new("user", "And of Italy?"));
    let (second_ids, warm_out, stats) = generate(&mut warm, &messages);
    // At least the whole first prompt is shared, and at least one new token is prefilled.
    assert!(stats.cached_tokens >= first_ids.len(), "{stats}");
    assert!(stats.cached_tokens < second_ids.len());
    assert_eq!(warm.prefix_cache_stats().unwrap().hits, 1);
    let (_, cold_out, cold_stats) = generate(&mut cold, &messages);
    assert_eq!(cold_stats.cached_tokens, 0);
    assert_eq!(warm_out, cold_out);
}
