//! Shared helpers of the server tests: the test model, an in-process server on an ephemeral
//! port (its own thread and runtime, so it outlives each test's runtime), an independent
//! reference (`mlx_models`' single-sequence generation loop), SSE/NDJSON parsing.
#![allow(dead_code)]

use mlx_models::load::{load, LoadOptions};
use mlx_models::model::{GenerateParams, LanguageModel};
use mlx_models::runtime::engine::MlxEngine;
use mlx_models::runtime::scheduler::SchedulerOptions;
use mlx_models::text::{ChatMessage, Tokenizer};
use mlx_server::engine::{Engine, EngineConfig};
use mlx_server::model::ServedModel;
use mlx_server::state::AppState;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The test model: SmolLM2-135M-Instruct, GGUF Q4_1, fetched and checked on first use
/// (`mlx_test_data::file`). `None` means skip (only with `MLX_ZOO_TEST_DATA_FETCH=0`).
pub fn model_path() -> Option<PathBuf> {
    mlx_test_data::file("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// How a test server runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub max_batch: usize,
    pub max_waiting: usize,
    pub prefix_cache_mib: usize,
    pub api_key: Option<String>,
    pub sse_keep_alive: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_batch: 16,
            max_waiting: 64,
            prefix_cache_mib: 256,
            api_key: None,
            sse_keep_alive: Some(mlx_server::streaming::DEFAULT_SSE_KEEP_ALIVE),
        }
    }
}

/// A running server.
#[derive(Debug, Clone)]
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The served model's id.
    pub model: String,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Starts a server on an ephemeral port; it runs until the test process ends.
pub fn start(options: Options) -> Option<TestServer> {
    let path = model_path()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let model = path.to_string_lossy().into_owned();
            let config = EngineConfig {
                model: model.clone(),
                load: LoadOptions::default(),
                scheduler: SchedulerOptions {
                    max_batch: options.max_batch,
                    max_waiting: options.max_waiting,
                    prefix_cache_bytes: options.prefix_cache_mib << 20,
                    ..SchedulerOptions::default()
                },
                context_length: None,
                chat_template: None,
                idle_release: Some(mlx_server::engine::DEFAULT_IDLE_RELEASE),
            };
            let (engine, info) = Engine::start(config).unwrap();
            let served = ServedModel::new(&model, None, vec![], info);
            let id = served.id.clone();
            let state = AppState::new(engine, served, options.api_key)
                .with_sse_keep_alive(options.sse_keep_alive);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tx.send(TestServer {
                base: format!("http://{address}"),
                model: id,
            })
            .unwrap();
            axum::serve(listener, mlx_server::router(state))
                .await
                .unwrap();
        });
    });
    Some(rx.recv().expect("the test server did not start"))
}

/// The test binary's shared server, checked against the reference's cold generations: its
/// prefix cache is off, so that each prompt is computed in the same pieces as the reference
/// computes it (whole, then one token at a time) whatever the other tests sent before. With
/// reuse, a prompt after a hit is computed as the cached prefix plus a short suffix, and the
/// default kernels round a long chunk's activations to 8 bits but a short one's to 21 bits
/// (`mlx_rs::quant::qmm_blocks`): the logits differ in the third digit, enough to tip a near
/// tie (SmolLM2's first token for "What is the capital of France?" is one, 0.05 apart). Batched
/// decoding is not affected: a sequence's decode rows compute the same, bit for bit, at every
/// batch size. Reuse is checked in `prefix_reuse.rs`.
pub fn shared() -> Option<TestServer> {
    static SERVER: OnceLock<Option<TestServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            start(Options {
                prefix_cache_mib: 0,
                ..Options::default()
            })
        })
        .clone()
}

/// A greedy generation the reference thread runs: prompt ids, token limit, where to answer.
type Job = (
    Vec<u32>,
    usize,
    std::sync::mpsc::Sender<(String, usize, bool)>,
);

/// The reference: the same model loaded apart and run by `MlxEngine` (the single-sequence
/// loop `generate_tokens`) on a thread of its own (MLX streams belong to the thread that
/// made them), one job at a time; and its tokenizer.
fn reference() -> &'static (Mutex<std::sync::mpsc::Sender<Job>>, Tokenizer) {
    static REFERENCE: OnceLock<(Mutex<std::sync::mpsc::Sender<Job>>, Tokenizer)> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let path = model_path().expect("the model is there when a server started");
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (ready, tokenizer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let options = LoadOptions::default();
            let loaded = load(&path.to_string_lossy(), &options).unwrap();
            let mut engine = MlxEngine::from_loaded(loaded, &options).unwrap();
            ready.send(engine.tokenizer().clone()).unwrap();
            for (prompt, max_tokens, answer) in queue {
                let params = GenerateParams {
                    max_tokens,
                    ..GenerateParams::default()
                };
                let mut ids = Vec::new();
                let stats = engine
                    .generate(&prompt, &params, &mut |t| {
                        ids.push(t);
                        Ok(true)
                    })
                    .unwrap();
                let text = engine.tokenizer().decode(&ids, true).unwrap();
                let stopped = stats.finish_reason == mlx_models::model::FinishReason::Stop;
                let _ = answer.send((text, stats.generation_tokens, stopped));
            }
        });
        (Mutex::new(jobs), tokenizer.recv().unwrap())
    })
}

/// What the reference generates greedily after `prompt` (token ids): its text (special
/// tokens dropped), its token count (a final stop token included) and whether it stopped.
pub fn reference_generate(prompt: &[u32], max_tokens: usize) -> (String, usize, bool) {
    let (answer, result) = std::sync::mpsc::channel();
    let jobs = reference()
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    jobs.send((prompt.to_vec(), max_tokens, answer)).unwrap();
    result.recv().expect("the reference thread failed")
}

/// The reference's prompt ids of a raw text (BOS as the tokenizer adds it).
pub fn reference_encode(text: &str) -> Vec<u32> {
    reference().1.encode(text, true).unwrap()
}

/// The reference's prompt ids of a chat (the chat template with the generation prompt).
pub fn reference_chat_prompt(messages: &[(&str, &str)]) -> Vec<u32> {
    let messages: Vec<ChatMessage> = messages
        .iter()
        .map(|(r, c)| ChatMessage::new(*r, *c))
        .collect();
    reference().1.apply_chat_template(&messages, true).unwrap()
}

/// A client with a generous timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// POSTs `body` as JSON; returns the status and the parsed body.
pub async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let response = client().post(url).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

/// GETs `url`; returns the status and the text.
pub async fn get_text(url: &str) -> (u16, String) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The SSE events of a body: the payload of every `data: ` line, checking that events are
/// separated by blank lines (keep-alive comments, `: ...`, are skipped).
pub fn sse_events(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "an SSE body ends with a blank line");
    body.split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .map(|event| {
            let payload = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {event:?}"));
            assert!(!payload.contains('\n'), "one line per event: {event:?}");
            payload.to_string()
        })
        .collect()
}

/// The `delta.content` pieces of a chat completion's SSE events (`[DONE]` last), in order,
/// empty ones included.
pub fn chat_deltas(events: &[String]) -> Vec<String> {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The JSON lines of an NDJSON body.
pub fn ndjson_lines(body: &str) -> Vec<Value> {
    assert!(body.ends_with('\n'), "an NDJSON body ends with a newline");
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// One value of `/metrics` (a sample without labels).
pub async fn metric(server: &TestServer, name: &str) -> f64 {
    let (_, text) = get_text(&server.url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// Waits until `/metrics` shows `name` = `value` (at most `limit`).
pub async fn wait_for_metric(server: &TestServer, name: &str, value: f64, limit: Duration) {
    let start = Instant::now();
    loop {
        let now = metric(server, name).await;
        if now == value {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{name} stayed at {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
