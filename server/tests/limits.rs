//! Limits and failure paths, each on a server of its own: a full queue is 503 with
//! `Retry-After`, a waiting SSE stream sends keep-alive comments (an NDJSON one nothing), a
//! client that goes away mid-stream frees its slot at once, an API key shuts out requests
//! without it.

mod common;

use common::{metric, post_json, wait_for_metric};
use serde_json::{json, Value};
use std::time::Duration;

/// A prompt the model continues for long (greedy), so that its sequence stays running.
const COUNTING: &str = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,";

/// Starts a streamed completion and returns its response once the first bytes arrived.
async fn streaming(server: &common::TestServer, max_tokens: usize) -> reqwest::Response {
    let mut response = common::client()
        .post(server.url("/v1/completions"))
        .json(&json!({
            "prompt": COUNTING, "max_tokens": max_tokens, "temperature": 0, "stream": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.chunk().await.unwrap().is_some());
    response
}

#[tokio::test]
async fn a_full_queue_is_503_with_retry_after_in_each_shape() {
    let Some(server) = common::start(common::Options {
        max_batch: 1,
        max_waiting: 1,
        ..common::Options::default()
    }) else {
        return;
    };
    // One running, one waiting: the queue is full.
    let running = streaming(&server, 2000).await;
    wait_for_metric(&server, "mlx_server_running", 1.0, Duration::from_secs(30)).await;
    let waiting = common::client()
        .post(server.url("/v1/completions"))
        .json(&json!({"prompt": COUNTING, "max_tokens": 2000, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(waiting.status(), 200);
    wait_for_metric(&server, "mlx_server_waiting", 1.0, Duration::from_secs(30)).await;
    let response = common::client()
        .post(server.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "server_busy");
    assert_eq!(body["error"]["type"], "server_error");
    let (status, body) = post_json(
        &server.url("/api/generate"),
        &json!({"prompt": "hi", "options": {"num_predict": 4}}),
    )
    .await;
    assert_eq!(status, 503);
    assert!(body["error"].is_string(), "{body}");
    // Both clients leave: the server is idle again, nothing finished.
    drop(running);
    drop(waiting);
    wait_for_metric(&server, "mlx_server_running", 0.0, Duration::from_secs(30)).await;
    wait_for_metric(&server, "mlx_server_waiting", 0.0, Duration::from_secs(30)).await;
    let (status, _) = post_json(
        &server.url("/v1/completions"),
        &json!({"prompt": "hi", "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_waiting_sse_stream_sends_keep_alive_comments_and_then_its_answer() {
    let Some(server) = common::start(common::Options {
        max_batch: 1,
        sse_keep_alive: Some(Duration::from_millis(100)),
        ..common::Options::default()
    }) else {
        return;
    };
    let question = "Name three colors.";
    let prompt = common::reference_chat_prompt(&[("user", question)]);
    let (expected, _, _) = common::reference_generate(&prompt, 8);
    let running = streaming(&server, 2000).await;
    wait_for_metric(&server, "mlx_server_running", 1.0, Duration::from_secs(30)).await;
    let sse = common::client()
        .post(server.url("/v1/chat/completions"))
        .json(&json!({
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 8, "temperature": 0, "stream": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let ndjson = common::client()
        .post(server.url("/api/generate"))
        .json(&json!({"prompt": question, "options": {"num_predict": 8, "temperature": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(ndjson.status(), 200);
    wait_for_metric(&server, "mlx_server_waiting", 2.0, Duration::from_secs(30)).await;
    // Both wait for at least five keep-alive periods.
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(running);
    let body = sse.text().await.unwrap();
    let comments = body.matches(": keep-alive\n\n").count();
    assert!(comments >= 3, "{comments} keep-alive comments in {body:?}");
    let first_content = body.find("\"content\":\"").unwrap();
    let content_after_role = body[first_content + 1..].find("\"content\":\"").unwrap();
    assert!(
        body.find(": keep-alive").unwrap() < first_content + 1 + content_after_role,
        "the comments come while waiting, before the answer: {body:?}"
    );
    // The events around them are the answer the request gives alone.
    let text = common::chat_deltas(&common::sse_events(&body)).concat();
    assert_eq!(text, expected);
    // NDJSON has no comments: every line of the Ollama stream is JSON.
    let lines = common::ndjson_lines(&ndjson.text().await.unwrap());
    assert_eq!(lines.last().unwrap()["done"], true);
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_frees_its_slot() {
    let Some(server) = common::start(common::Options::default()) else {
        return;
    };
    let mut response = streaming(&server, 3000).await;
    // A few more events, then the client disconnects.
    for _ in 0..3 {
        assert!(response.chunk().await.unwrap().is_some());
    }
    wait_for_metric(&server, "mlx_server_running", 1.0, Duration::from_secs(30)).await;
    drop(response);
    wait_for_metric(&server, "mlx_server_running", 0.0, Duration::from_secs(10)).await;
    // Cancelled long before its 3000 tokens.
    let generated = metric(&server, "mlx_server_generated_tokens_total").await;
    assert!(generated < 500.0, "{generated} tokens generated");
    // The same happens to a chat stream of the Ollama API.
    let mut response = common::client()
        .post(server.url("/api/generate"))
        .json(&json!({"prompt": COUNTING, "raw": true, "options": {"num_predict": 3000, "temperature": 0}}))
        .send()
        .await
        .unwrap();
    assert!(response.chunk().await.unwrap().is_some());
    drop(response);
    wait_for_metric(&server, "mlx_server_running", 0.0, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_api_key_is_required_except_for_health() {
    let Some(server) = common::start(common::Options {
        api_key: Some("sekret".into()),
        ..common::Options::default()
    }) else {
        return;
    };
    let client = common::client();
    let response = client.get(server.url("/v1/models")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    let response = client
        .get(server.url("/api/tags"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    let response = client
        .post(server.url("/v1/completions"))
        .json(&json!({"prompt": "hi", "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    for path in ["/v1/models", "/api/tags", "/metrics"] {
        let response = client
            .get(server.url(path))
            .bearer_auth("sekret")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let text = client
        .get(server.url("/metrics"))
        .bearer_auth("sekret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("mlx_server_requests_total{endpoint=\"/v1/models\",status=\"401\"} 1"),
        "{text}"
    );
}
