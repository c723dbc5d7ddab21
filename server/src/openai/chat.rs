//! `POST /v1/chat/completions`.

use super::logprobs;
use super::types::{ChatRequest, CommonFields};
use crate::error::{parse_json, ApiError, OpenAiError};
use crate::generation::{self, Generation, GenerationRequest, Outcome, RequestLabel};
use crate::params::{self, ApiDefaults, SamplingFields};
use crate::state::AppState;
use crate::streaming::{self, Framing, StreamFormat};
use crate::tools::ToolSetup;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use mlx_models::model::GenerateParams;
use mlx_models::runtime::constraint::TokenConstraint;
use mlx_models::runtime::scheduler::GeneratedToken;
use mlx_models::text::structured::Grammar;
use mlx_models::text::tool_calls::ToolCallStream;
use mlx_models::text::Tokenizer;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// The most alternatives per token a request may ask for.
pub const MAX_TOP_LOGPROBS: i64 = 20;

/// Chat completion: the messages through the model's chat template, then generation; a JSON
/// answer, or server-sent events with `stream: true`.
pub async fn chat_completions(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let arrived = Instant::now();
    let request: ChatRequest = parse_json(&body)?;
    let model = state.model();
    model.check(request.common.model.as_deref())?;
    request.common.check_supported()?;
    if request.messages.is_empty() {
        return Err(ApiError::bad_request("`messages` must not be empty")
            .with_param("messages")
            .into());
    }
    let mut messages = request
        .messages
        .iter()
        .map(|m| m.to_chat())
        .collect::<Result<Vec<_>, _>>()?;
    let tokenizer = &model.info.tokenizer;
    let tools = ToolSetup::new(
        request.tools.as_deref(),
        request.tool_choice.as_ref(),
        model.tool_format,
    )?
    .map(|t| t.parallel(request.parallel_tool_calls.unwrap_or(true)));
    let mut grammar = response_format(request.response_format.as_ref())?;
    let mut extra = request.chat_template_kwargs.clone().unwrap_or_default();
    if let Some(tools) = &tools {
        if let Some(forced) = tools.grammar(tokenizer)? {
            if grammar.is_some() {
                return Err(ApiError::bad_request(
                    "a `response_format` and a `tool_choice` that forces a call exclude each other",
                )
                .with_param("response_format")
                .into());
            }
            grammar = Some(forced);
        }
        let template = tokenizer.chat_template().map(|t| t.source());
        tools.prepare(&mut messages, crate::tools::renders_tools(template));
        extra.insert("tools".into(), Value::Array(tools.tools.clone()));
    }
    let constraint = crate::structured::constraint(&state, grammar).await?;
    let extra = if extra.is_empty() {
        Value::Null
    } else {
        Value::Object(extra)
    };
    let prompt = params::on_tokenizer(tokenizer, move |t| {
        t.apply_chat_template_with(&messages, true, &extra)
    })
    .await?;
    let requested = request
        .max_completion_tokens
        .or(request.common.max_tokens)
        .map(|n| positive(n, "max_tokens"))
        .transpose()?;
    let max_tokens = params::token_budget(prompt.len(), requested, model.info.context_length)?;
    let logprobs = match (request.logprobs, request.top_logprobs) {
        (Some(true), top) => Some(top_logprobs(top)?),
        (_, Some(top)) if top > 0 => {
            return Err(
                ApiError::bad_request("`top_logprobs` needs `logprobs: true`")
                    .with_param("top_logprobs")
                    .into(),
            )
        }
        _ => None,
    };
    let (generation, meta) = submit(
        &state,
        &request.common,
        Submission {
            prompt,
            max_tokens,
            logprobs,
            constraint,
            keep_special_tokens: tools.is_some(),
            id_prefix: "chatcmpl",
            endpoint: "/v1/chat/completions",
            arrived,
        },
    )
    .await?;
    if request.common.streams() {
        let format = ChatStream {
            meta,
            tokenizer: Arc::clone(tokenizer),
            logprobs: logprobs.is_some(),
            include_usage: request.common.include_usage(),
            tools: tools.map(ToolSetup::into_streaming),
            held_tokens: Vec::new(),
        };
        return Ok(streaming::response(
            generation,
            format,
            Framing::Sse,
            state.sse_keep_alive(),
        ));
    }
    let (text, tokens, outcome) = generation.collect().await?;
    let logprobs = logprobs.map(|_| json!({"content": logprobs::chat_content(tokenizer, &tokens)}));
    let (message, finish) = answer(tools.as_ref(), text, &meta.id, outcome.finish.as_str());
    let choice = json!({
        "index": 0,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish,
    });
    Ok(response(meta, "chat.completion", choice, &outcome))
}

/// The assistant message of `text` and the finish reason: with tools, the calls parsed out
/// of the text (`content` null when nothing else was said, finish reason `tool_calls`).
fn answer(tools: Option<&ToolSetup>, text: String, id: &str, finish: &str) -> (Value, String) {
    let Some(tools) = tools else {
        return (
            json!({"role": "assistant", "content": text}),
            finish.to_string(),
        );
    };
    let parsed = tools.parse(&text);
    if parsed.tool_calls.is_empty() {
        return (
            json!({"role": "assistant", "content": parsed.content}),
            finish.to_string(),
        );
    }
    let content = Some(parsed.content).filter(|c| !c.is_empty());
    let calls = crate::tools::openai_calls(&parsed.tool_calls, call_prefix(id), false);
    (
        json!({"role": "assistant", "content": content, "tool_calls": calls}),
        "tool_calls".to_string(),
    )
}

/// The part of a response id that tool call ids reuse.
fn call_prefix(id: &str) -> &str {
    id.rsplit('-').next().unwrap_or(id)
}

/// What every response of a request carries.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Meta {
    /// A response object or streamed chunk: `object` (`chat.completion`,
    /// `chat.completion.chunk`, `text_completion`) with these `choices` (one, or none in the
    /// usage chunk), and `usage` when given (`Some(Value::Null)` for `null`).
    pub(crate) fn object(&self, object: &str, choices: Value, usage: Option<Value>) -> Value {
        let mut body = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": Value::Null,
            "choices": choices,
        });
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        body
    }

    /// The last streamed chunk with `stream_options.include_usage`: no choices, the usage.
    pub(crate) fn usage_chunk(&self, object: &str, outcome: &Outcome) -> Value {
        self.object(object, json!([]), Some(usage(outcome)))
    }
}

/// What both OpenAI endpoints hand to [`submit`] once their prompt is ready.
pub(crate) struct Submission {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub logprobs: Option<usize>,
    pub constraint: Option<Box<dyn TokenConstraint>>,
    pub keep_special_tokens: bool,
    /// `chatcmpl` or `cmpl`: the response id is `<prefix>-<suffix>`.
    pub id_prefix: &'static str,
    pub endpoint: &'static str,
    pub arrived: Instant,
}

/// The sampling parameters and stop strings of `common`, then the engine: the running
/// generation and its response's id, time and model.
pub(crate) async fn submit(
    state: &AppState,
    common: &CommonFields,
    submission: Submission,
) -> Result<(Generation, Meta), OpenAiError> {
    let model = state.model();
    let sampling = params::sampling(
        &sampling_fields(common),
        &model.info.generation,
        ApiDefaults::OPENAI,
    )?;
    let stop = match &common.stop {
        Some(s) => s.strings()?,
        None => Vec::new(),
    };
    let id = format!("{}-{}", submission.id_prefix, response_suffix());
    let label = RequestLabel {
        id: id.clone(),
        endpoint: submission.endpoint,
        arrived: submission.arrived,
    };
    let generation = generation::start(
        state.engine(),
        &model.info.tokenizer,
        GenerationRequest {
            prompt: submission.prompt,
            params: GenerateParams {
                max_tokens: submission.max_tokens,
                sampling,
                stop_token_ids: Vec::new(),
            },
            stop,
            logprobs: submission.logprobs,
            constraint: submission.constraint,
            clear_cache_after: false,
            keep_special_tokens: submission.keep_special_tokens,
            ignore_eos: common.ignore_eos.unwrap_or(false),
        },
        label,
    )
    .await?;
    let meta = Meta {
        id,
        created: params::unix_now(),
        model: model.id.clone(),
    };
    Ok((generation, meta))
}

/// A non-streamed response: `object` (`chat.completion`, `text_completion`) with one choice.
pub(crate) fn response(meta: Meta, object: &str, choice: Value, outcome: &Outcome) -> Response {
    axum::Json(meta.object(object, json!([choice]), Some(usage(outcome)))).into_response()
}

/// A unique enough response id suffix: the time in microseconds and a counter, in hex.
pub(crate) fn response_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{micros:x}{n:04x}")
}

/// OpenAI's usage object, with the prefix cache's reuse as `cached_tokens`.
pub(crate) fn usage(outcome: &Outcome) -> Value {
    json!({
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.generated_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": outcome.cached_tokens},
    })
}

/// A limit that must be ≥ 1.
pub(crate) fn positive(n: i64, name: &str) -> Result<usize, ApiError> {
    usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
        ApiError::bad_request(format!("`{name}` must be ≥ 1, got {n}")).with_param(name)
    })
}

/// The alternatives per token: 0 to [`MAX_TOP_LOGPROBS`].
pub(crate) fn top_logprobs(top: Option<i64>) -> Result<usize, ApiError> {
    match top {
        None => Ok(0),
        Some(n) if (0..=MAX_TOP_LOGPROBS).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::bad_request(format!(
            "`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {n}"
        ))
        .with_param("top_logprobs")),
    }
}

/// The sampling fields of a request.
pub(crate) fn sampling_fields(common: &CommonFields) -> SamplingFields {
    SamplingFields {
        temperature: common.temperature,
        top_p: common.top_p,
        top_k: common.top_k,
        min_p: common.min_p,
        repetition_penalty: common.repetition_penalty,
        repetition_context: None,
        seed: common.seed,
    }
}

/// The grammar of a `response_format` (`text` or absent: none). Errors: 400 for an unknown
/// type or a `json_schema` without a schema.
pub(crate) fn response_format(format: Option<&Value>) -> Result<Option<Grammar>, ApiError> {
    match format.filter(|f| !f.is_null()) {
        None => Ok(None),
        Some(f) => Grammar::from_openai_response_format(f)
            .map_err(|e| ApiError::from(e).with_param("response_format")),
    }
}

/// Chat's streamed chunks.
struct ChatStream {
    meta: Meta,
    tokenizer: Arc<Tokenizer>,
    logprobs: bool,
    include_usage: bool,
    /// With tools, the text from where a call may begin is held back until the end.
    tools: Option<(ToolSetup, ToolCallStream)>,
    /// The tokens behind text not yet sent (their log-probabilities go with it).
    held_tokens: Vec<GeneratedToken>,
}

impl ChatStream {
    /// A content chunk (none for empty text without log-probabilities to report).
    fn content(&self, text: String, tokens: Vec<GeneratedToken>) -> Vec<Value> {
        if text.is_empty() && (!self.logprobs || tokens.is_empty()) {
            return Vec::new();
        }
        let logprobs = if self.logprobs {
            json!({"content": logprobs::chat_content(&self.tokenizer, &tokens)})
        } else {
            Value::Null
        };
        vec![self.chunk(json!({"content": text}), logprobs, None)]
    }

    fn chunk(&self, delta: Value, logprobs: Value, finish: Option<&str>) -> Value {
        let choice = json!({
            "index": 0,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": finish,
        });
        let usage = self.include_usage.then_some(Value::Null);
        self.meta
            .object("chat.completion.chunk", json!([choice]), usage)
    }
}

impl StreamFormat for ChatStream {
    fn start(&mut self) -> Vec<Value> {
        vec![self.chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            None,
        )]
    }

    fn text(&mut self, text: String, tokens: Vec<GeneratedToken>) -> Vec<Value> {
        let Some((_, calls)) = &mut self.tools else {
            return self.content(text, tokens);
        };
        let sent = calls.push(&text);
        self.held_tokens.extend(tokens);
        if sent.is_empty() {
            return Vec::new();
        }
        let tokens = std::mem::take(&mut self.held_tokens);
        self.content(sent, tokens)
    }

    fn done(&mut self, outcome: Outcome) -> Vec<Value> {
        let mut out = Vec::new();
        let mut finish = outcome.finish.as_str();
        if let Some((tools, calls)) = self.tools.take() {
            let parsed = tools.finish(calls);
            let tokens = std::mem::take(&mut self.held_tokens);
            out.extend(self.content(parsed.content, tokens));
            if !parsed.tool_calls.is_empty() {
                let calls = crate::tools::openai_calls(
                    &parsed.tool_calls,
                    call_prefix(&self.meta.id),
                    true,
                );
                out.push(self.chunk(json!({"tool_calls": calls}), Value::Null, None));
                finish = "tool_calls";
            }
        }
        out.push(self.chunk(json!({}), Value::Null, Some(finish)));
        if self.include_usage {
            out.push(self.meta.usage_chunk("chat.completion.chunk", &outcome));
        }
        out
    }

    fn failed(&mut self, error: ApiError) -> Vec<Value> {
        vec![error.openai_body()]
    }
}
