//! Multi-turn chat reuses the first turn's KV state (the prefix cache), and the second turn
//! answers exactly as a server without any reuse does.
//!
//! The comparison runs the kernels in the exact mode (`mlx_rs::quant::set_native_qmm_exact`,
//! f32 activations; this test binary's servers all run in this process). The default mode
//! rounds a long chunk's activations to 8 bits but a short one's to 21 bits, and the warm
//! server computes the second turn's short suffix where the cold one computes the whole
//! prompt: their logits then differ in the third digit, enough to tip a near tie. With f32
//! activations the two differ only in the order of f32 sums (and in how those move the f16
//! cache's roundings), far below any tie SmolLM2 meets here.

mod common;

use common::post_json;
use serde_json::{json, Value};

async fn chat(server: &common::TestServer, messages: &Value) -> Value {
    let (status, body) = post_json(
        &server.url("/v1/chat/completions"),
        &json!({"messages": messages, "max_tokens": 24, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_second_turn_reuses_the_first_and_answers_as_a_cold_server() {
    mlx_rs::quant::set_native_qmm_exact(true);
    let Some(warm) = common::start(common::Options::default()) else {
        return;
    };
    let cold = common::start(common::Options {
        prefix_cache_mib: 0,
        ..common::Options::default()
    })
    .unwrap();
    let first = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let reply = chat(&warm, &first).await;
    let answer = reply["choices"][0]["message"]["content"].as_str().unwrap();
    let first_prompt = reply["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(reply["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let second = json!([
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And of Italy?"},
    ]);
    let reused_before = common::metric(&warm, "mlx_server_prefix_cache_reused_tokens_total").await;
    let warm_reply = chat(&warm, &second).await;
    let cached = warm_reply["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    // At least the whole first prompt came from the cache, and /metrics counted it.
    assert!(
        cached >= first_prompt,
        "{cached} cached of a first prompt of {first_prompt}"
    );
    let reused = common::metric(&warm, "mlx_server_prefix_cache_reused_tokens_total").await;
    assert_eq!(reused - reused_before, cached as f64);
    let cold_reply = chat(&cold, &second).await;
    assert_eq!(
        cold_reply["usage"]["prompt_tokens_details"]["cached_tokens"],
        0
    );
    assert_eq!(
        warm_reply["choices"][0]["message"]["content"],
        cold_reply["choices"][0]["message"]["content"]
    );
    assert_eq!(
        warm_reply["usage"]["prompt_tokens"],
        cold_reply["usage"]["prompt_tokens"]
    );
}

#[tokio::test]
async fn keep_alive_zero_drops_the_prefix_cache() {
    let Some(server) = common::start(common::Options::default()) else {
        return;
    };
    let (status, _) = post_json(
        &server.url("/api/chat"),
        &json!({"messages": [{"role": "user", "content": "Hi"}], "stream": false,
                "options": {"num_predict": 4}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        common::metric(&server, "mlx_server_prefix_cache_entries").await,
        1.0
    );
    let (status, body) = post_json(
        &server.url("/api/generate"),
        &json!({"model": server.model, "keep_alive": 0}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["done_reason"], "unload");
    common::wait_for_metric(
        &server,
        "mlx_server_prefix_cache_entries",
        0.0,
        std::time::Duration::from_secs(10),
    )
    .await;
}
