//! The Ollama-compatible API: `POST /api/chat`, `POST /api/generate`, `GET /api/tags`,
//! `POST /api/show`, `GET /api/ps`, `GET /api/version`.
//!
//! Answers stream as NDJSON by default (`stream: false` for one object); the last line has
//! `done: true`, `done_reason`, and the counts and durations (nanoseconds):
//! `total_duration` (arrival to end), `load_duration` (0: the model stays loaded),
//! `prompt_eval_count` (all prompt tokens, prefix cache hits included),
//! `prompt_eval_duration` (arrival to the first token), `eval_count`, `eval_duration`.
//! Errors have Ollama's shape, `{"error": "..."}`. `format` (`"json"` or a JSON schema)
//! constrains the output ([`crate::structured`]); `tools` give `message.tool_calls`
//! ([`crate::tools`], the model chooses); images and `think: true` are 400.
//!
//! # `keep_alive`
//!
//! The server serves one model and keeps its weights loaded for its whole life. A request with
//! `keep_alive: 0` (or `"0"`, `"0s"`, ...) drops the prefix cache (the KV states kept for
//! reuse) and MLX's buffer cache once it ends, which frees all memory but the weights;
//! `/api/generate` with an empty prompt and `keep_alive: 0` does so at once and answers
//! `done_reason: "unload"`. Every other value is accepted and changes nothing.
//!
//! # Templates
//!
//! `/api/generate` renders `system` and `prompt` with the model's chat template (a model
//! without one gets the prompt as it is), `raw: true` encodes the prompt as it is, and a
//! `template` in Ollama's Go syntax is understood when it only uses `{{ .System }}`,
//! `{{ .Prompt }}` and `{{ .Response }}` (anything else is 400).

pub mod chat;
pub mod generate;
pub mod info;
pub mod types;

use crate::error::ApiError;
use crate::generation::{self, Generation, GenerationRequest, Outcome, RequestLabel};
use crate::params::{self, ApiDefaults};
use crate::state::AppState;
use axum::response::{IntoResponse, Response};
use mlx_models::model::GenerateParams;
use mlx_models::text::structured::Grammar;
use serde_json::{json, Value};
use std::time::Instant;
use types::Options;

/// The version `/api/version` reports: this crate's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Now, as Ollama writes times (RFC 3339, UTC, nanoseconds).
pub fn created_at() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The closing fields of an answer: `done`, `done_reason`, counts and durations.
///
/// ```
/// use mlx_server::generation::{Finish, Outcome};
/// use std::time::Duration;
/// let o = Outcome {
///     finish: Finish::Length, prompt_tokens: 5, cached_tokens: 0, generated_tokens: 3,
///     time_to_first_token: Duration::from_millis(2), total_time: Duration::from_millis(10),
///     token_ids: vec![],
/// };
/// let f = mlx_server::ollama::final_fields(&o);
/// assert_eq!(f["done_reason"], "length");
/// assert_eq!(f["eval_duration"], 8_000_000);
/// ```
pub fn final_fields(outcome: &Outcome) -> serde_json::Map<String, Value> {
    let ns = |d: std::time::Duration| d.as_nanos() as u64;
    let eval = outcome
        .total_time
        .saturating_sub(outcome.time_to_first_token);
    let fields = json!({
        "done": true,
        "done_reason": outcome.finish.as_str(),
        "total_duration": ns(outcome.total_time),
        "load_duration": 0,
        "prompt_eval_count": outcome.prompt_tokens,
        "prompt_eval_duration": ns(outcome.time_to_first_token),
        "eval_count": outcome.generated_tokens,
        "eval_duration": ns(eval),
    });
    match fields {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// What `/api/chat` and `/api/generate` hand to [`start`] once their prompt is ready.
pub(crate) struct Submission<'a> {
    pub prompt: Vec<u32>,
    pub options: &'a Options,
    pub grammar: Option<Grammar>,
    /// `keep_alive: 0`.
    pub clear_cache_after: bool,
    pub keep_special_tokens: bool,
    /// `chat` or `gen`: the log line's id is `ollama-<kind>-<suffix>`.
    pub kind: &'static str,
    pub endpoint: &'static str,
    pub arrived: Instant,
}

/// The token budget under `num_ctx`, sampling with Ollama's defaults, the stop strings and
/// the grammar of `submission`, then the engine: the running generation.
pub(crate) async fn start(
    state: &AppState,
    submission: Submission<'_>,
) -> Result<Generation, ApiError> {
    let model = state.model();
    let options = submission.options;
    let context = params::request_context(model, options.num_ctx);
    let max_tokens = params::token_budget(submission.prompt.len(), options.max_tokens(), context)?;
    let sampling = params::sampling(
        &options.sampling(),
        &model.info.generation,
        ApiDefaults::OLLAMA,
    )?;
    let label = RequestLabel {
        id: format!(
            "ollama-{}-{}",
            submission.kind,
            crate::openai::chat::response_suffix()
        ),
        endpoint: submission.endpoint,
        arrived: submission.arrived,
    };
    let request = GenerationRequest {
        prompt: submission.prompt,
        params: GenerateParams {
            max_tokens,
            sampling,
            stop_token_ids: Vec::new(),
        },
        stop: options.stop()?,
        logprobs: None,
        constraint: crate::structured::constraint(state, submission.grammar).await?,
        clear_cache_after: submission.clear_cache_after,
        keep_special_tokens: submission.keep_special_tokens,
        ignore_eos: false,
    };
    generation::start(state.engine(), &model.info.tokenizer, request, label).await
}

/// The answer to a request with nothing to generate (Ollama clients send one to load a
/// model, or with `keep_alive: 0` to unload it): `done_reason` `load`, or `unload` after the
/// caches are dropped; `empty` is the answer's empty text field (`message` or `response`).
pub(crate) fn load_answer(
    state: &AppState,
    clear_cache_after: bool,
    empty: (&str, Value),
) -> Response {
    if clear_cache_after {
        state.engine().clear_cache();
    }
    let mut answer = json!({
        "model": state.model().id,
        "created_at": created_at(),
        "done": true,
        "done_reason": if clear_cache_after { "unload" } else { "load" },
    });
    answer[empty.0] = empty.1;
    axum::Json(answer).into_response()
}

/// A streamed failure line.
pub fn failure_line(error: &ApiError) -> Value {
    error.ollama_body()
}
