//! Opt-in (large): the engine on Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M, 1.1 GB; MLX loads its
//! K-quants as f16), greedy completion and perplexity against a transformers reference
//! (scripts/reference_perplexity.py, recorded in tests/fixtures/ppl_reference_qwen25_coder.json).
//!
//! ```text
//! bash scripts/fetch_test_data.sh --large
//! cargo test --release -p mlx-models --test real_qwen25_coder -- --ignored
//! ```

mod common;

use mlx_models::load::{load, LoadOptions};
use mlx_models::runtime::engine::MlxEngine;
use mlx_rs::Device;

fn engine() -> Option<MlxEngine> {
    let path = common::test_data_opt_in("qwen25-coder/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")?;
    let options = LoadOptions {
        device: Device::cpu(),
        ..LoadOptions::default()
    };
    let loaded = load(path.to_str().expect("utf-8 path"), &options).expect("load Qwen2.5-Coder");
    Some(MlxEngine::from_loaded(loaded, &options).expect("engine"))
}

#[test]
#[ignore = "large: needs scripts/fetch_test_data.sh --large"]
fn greedy_completion_knows_the_capital_of_france() {
    let Some(mut engine) = engine() else { return };
    let (text, stats, prompt_len) = common::complete_capital_of_france(&mut engine, &[]);
    assert!(text.contains("Paris"), "completion: {text:?}");
    assert_eq!(stats.prompt_tokens, prompt_len);
}

#[test]
#[ignore = "large: needs scripts/fetch_test_data.sh --large"]
fn perplexity_matches_the_transformers_reference() {
    let Some(mut engine) = engine() else { return };
    common::check_perplexity(&mut engine, "ppl_reference_qwen25_coder.json");
}
