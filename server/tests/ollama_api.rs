//! The Ollama endpoints on the real SmolLM2-135M GGUF: NDJSON framing and the closing
//! fields, against `mlx_models`' own single-sequence generation of the same prompts.

mod common;

use common::{
    ndjson_lines, post_json, reference_chat_prompt, reference_encode, reference_generate,
};
use serde_json::{json, Value};

#[tokio::test]
async fn chat_streams_ndjson_lines_ending_with_the_figures() {
    let Some(server) = common::shared() else {
        return;
    };
    let question = "What is the capital of France?";
    let prompt = reference_chat_prompt(&[("user", question)]);
    let (expected, generated, stopped) = reference_generate(&prompt, 20);
    let response = common::client()
        .post(server.url("/api/chat"))
        .json(&json!({
            "model": format!("{}:latest", server.model),
            "messages": [{"role": "user", "content": question}],
            "options": {"temperature": 0, "num_predict": 20, "repeat_penalty": 1.0},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let lines = ndjson_lines(&response.text().await.unwrap());
    let (last, rest) = lines.split_last().unwrap();
    assert!(!rest.is_empty());
    for line in rest {
        assert_eq!(line["done"], false);
        assert_eq!(line["model"], server.model.as_str());
        assert_eq!(line["message"]["role"], "assistant");
        assert!(line["created_at"].as_str().unwrap().ends_with('Z'));
    }
    let text: String = rest
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, expected);
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], if stopped { "stop" } else { "length" });
    assert_eq!(last["prompt_eval_count"], prompt.len());
    assert_eq!(last["eval_count"], generated);
    let total = last["total_duration"].as_u64().unwrap();
    let prompt_eval = last["prompt_eval_duration"].as_u64().unwrap();
    let eval = last["eval_duration"].as_u64().unwrap();
    assert!(total > 0 && prompt_eval + eval == total, "{last}");
}

#[tokio::test]
async fn generate_without_streaming_answers_once_with_context() {
    let Some(server) = common::shared() else {
        return;
    };
    let text = "The capital of France is";
    let prompt = reference_encode(text);
    let (expected, generated, _) = reference_generate(&prompt, 10);
    let (status, body) = post_json(
        &server.url("/api/generate"),
        &json!({
            "model": server.model, "prompt": text, "raw": true, "stream": false,
            "options": {"temperature": 0, "num_predict": 10, "seed": 1, "repeat_penalty": 1},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"], expected.as_str());
    assert_eq!(body["done"], true);
    assert_eq!(body["eval_count"], generated);
    assert_eq!(body["prompt_eval_count"], prompt.len());
    // `context`: the prompt's ids, then the answer's.
    let context: Vec<u64> = body["context"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let prompt_ids: Vec<u64> = prompt.iter().map(|&t| t as u64).collect();
    assert_eq!(&context[..prompt.len()], &prompt_ids[..]);
    // A Go template of the understood subset renders like the raw prompt.
    let (_, templated) = post_json(
        &server.url("/api/generate"),
        &json!({
            "prompt": "France is", "template": "The capital of {{ .Prompt }}{{ .Response }}",
            "stream": false, "options": {"temperature": 0, "num_predict": 10, "repeat_penalty": 1},
        }),
    )
    .await;
    assert_eq!(templated["response"], expected.as_str());
}

#[tokio::test]
async fn format_json_gives_a_json_object() {
    let Some(server) = common::shared() else {
        return;
    };
    let (status, body) = post_json(
        &server.url("/api/chat"),
        &json!({
            "messages": [{"role": "user", "content": "Give me a person as JSON."}],
            "format": "json", "stream": false,
            "options": {"temperature": 0, "num_predict": 60},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let content = body["message"]["content"].as_str().unwrap();
    let value: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(value.is_object(), "{content}");
    assert_eq!(body["done_reason"], "stop");
}

#[tokio::test]
async fn listings_describe_the_served_model() {
    let Some(server) = common::shared() else {
        return;
    };
    let (status, text) = common::get_text(&server.url("/api/tags")).await;
    assert_eq!(status, 200);
    let tags: Value = serde_json::from_str(&text).unwrap();
    let entry = &tags["models"][0];
    assert_eq!(entry["name"], format!("{}:latest", server.model));
    assert_eq!(entry["details"]["family"], "llama");
    assert_eq!(entry["details"]["format"], "gguf");
    assert_eq!(entry["details"]["quantization_level"], "Q4_1");
    let size = std::fs::metadata(common::model_path().unwrap())
        .unwrap()
        .len();
    assert_eq!(entry["size"], size);
    // SmolLM2-135M by hand: a tied 49152 x 576 embedding, a final norm of 576, and 30 layers
    // of q, o (576 x 576), k, v (192 x 576), gate, up, down (1536 x 576) and two norms.
    let layer = 2 * 576 * 576 + 2 * 192 * 576 + 3 * 1536 * 576 + 2 * 576;
    assert_eq!(49152 * 576 + 576 + 30 * layer, 134_515_008);
    assert_eq!(entry["details"]["parameter_size"], "134.52M");
    let (status, show) = post_json(&server.url("/api/show"), &json!({"model": server.model})).await;
    assert_eq!(status, 200, "{show}");
    assert!(show["template"].as_str().unwrap().contains("im_start"));
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    assert_eq!(show["model_info"]["llama.block_count"], 30);
    let (status, version) = common::get_text(&server.url("/api/version")).await;
    assert_eq!(status, 200);
    let version: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn bad_requests_get_ollama_error_shapes() {
    let Some(server) = common::shared() else {
        return;
    };
    let is_error =
        |body: &Value| body.as_object().is_some_and(|o| o.len() == 1) && body["error"].is_string();
    let cases = [
        (
            "/api/chat",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
            404,
        ),
        (
            "/api/chat",
            json!({"messages": [{"role": "user", "content": 5}]}),
            400,
        ),
        (
            "/api/chat",
            json!({"messages": [{"role": "user", "content": "hi"}], "format": "xml"}),
            400,
        ),
        (
            "/api/chat",
            json!({"messages": [{"role": "user", "content": "hi", "images": ["AAAA"]}]}),
            400,
        ),
        (
            "/api/generate",
            json!({"prompt": "hi", "options": {"temperature": -1}}),
            400,
        ),
        (
            "/api/generate",
            json!({"prompt": "hi", "template": "{{ if .System }}x{{ end }}"}),
            400,
        ),
        ("/api/show", json!({"model": "other"}), 404),
    ];
    for (path, request, status) in cases {
        let (got, body) = post_json(&server.url(path), &request).await;
        assert_eq!(got, status, "{path} {request} → {body}");
        assert!(is_error(&body), "{body}");
    }
    // A prompt over a request's own smaller context (num_ctx).
    let (status, body) = post_json(
        &server.url("/api/generate"),
        &json!({"prompt": "one two three four five six seven eight", "raw": true,
                "options": {"num_ctx": 4}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(is_error(&body));
    // Malformed JSON.
    let response = common::client()
        .post(server.url("/api/chat"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(is_error(&response.json().await.unwrap()));
    // An empty chat is a load probe.
    let (status, body) = post_json(&server.url("/api/chat"), &json!({"model": server.model})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["done"].clone(), body["done_reason"].clone()),
        (json!(true), json!("load"))
    );
}

#[tokio::test]
async fn tools_give_the_same_answer_streamed_or_not() {
    let Some(server) = common::shared() else {
        return;
    };
    let request = |stream: bool| {
        json!({
            "messages": [{"role": "user", "content": "What is the weather in Paris? Use the tool."}],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]},
            }}],
            "stream": stream,
            "options": {"temperature": 0, "num_predict": 40, "repeat_penalty": 1},
        })
    };
    let (status, whole) = post_json(&server.url("/api/chat"), &request(false)).await;
    assert_eq!(status, 200, "{whole}");
    let response = common::client()
        .post(server.url("/api/chat"))
        .json(&request(true))
        .send()
        .await
        .unwrap();
    let lines = ndjson_lines(&response.text().await.unwrap());
    // The content lines, then the calls (with whatever content followed them), then the
    // closing line: together the non-streamed message.
    let (last, messages) = lines.split_last().unwrap();
    assert_eq!(last["done"], true);
    let content: String = messages
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        content.trim(),
        whole["message"]["content"].as_str().unwrap().trim()
    );
    let calls: Vec<&Value> = messages
        .iter()
        .filter_map(|l| l["message"].get("tool_calls"))
        .collect();
    match whole["message"].get("tool_calls") {
        Some(whole_calls) => assert_eq!(calls, vec![whole_calls], "{lines:?}"),
        None => assert!(calls.is_empty(), "{lines:?}"),
    }
    if let Some(calls) = whole["message"]["tool_calls"].as_array() {
        assert!(calls[0]["function"]["arguments"].is_object());
    }
}
