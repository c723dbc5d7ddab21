//! `POST /v1/completions`: raw text completion (no chat template).

use super::chat::{positive, response, submit, top_logprobs, Meta, Submission};
use super::logprobs;
use super::types::{CompletionRequest, Prompt};
use crate::error::{parse_json, ApiError, OpenAiError};
use crate::generation::Outcome;
use crate::params;
use crate::state::AppState;
use crate::streaming::{self, Framing, StreamFormat};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use mlx_models::runtime::scheduler::GeneratedToken;
use mlx_models::text::Tokenizer;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// The default token limit of a completion without `max_tokens` (OpenAI's is 16).
pub const DEFAULT_MAX_TOKENS: usize = 16;

/// Completion of a text prompt (encoded with the tokenizer's special tokens, i.e. BOS when
/// the model uses one) or of token ids as given.
pub async fn completions(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let arrived = Instant::now();
    let request: CompletionRequest = parse_json(&body)?;
    let model = state.model();
    model.check(request.common.model.as_deref())?;
    request.common.check_supported()?;
    if request.echo == Some(true) {
        return Err(ApiError::unsupported("echo", "`echo: true`").into());
    }
    if request.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported("suffix", "`suffix`").into());
    }
    if request.best_of.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported("best_of", "`best_of` other than 1").into());
    }
    let constraint = crate::structured::constraint(
        &state,
        super::chat::response_format(request.response_format.as_ref())?,
    )
    .await?;
    let tokenizer = &model.info.tokenizer;
    let prompt = match Prompt::parse(&request.prompt)? {
        Prompt::Tokens(ids) => ids,
        Prompt::Text(text) => {
            params::on_tokenizer(tokenizer, move |t| t.encode(&text, true)).await?
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty")
            .with_param("prompt")
            .into());
    }
    let requested = match request.common.max_tokens {
        Some(n) => positive(n, "max_tokens")?,
        None => DEFAULT_MAX_TOKENS,
    };
    let max_tokens =
        params::token_budget(prompt.len(), Some(requested), model.info.context_length)?;
    let logprobs = request
        .logprobs
        .map(|n| top_logprobs(Some(n)))
        .transpose()?;
    let (generation, meta) = submit(
        &state,
        &request.common,
        Submission {
            prompt,
            max_tokens,
            logprobs,
            constraint,
            keep_special_tokens: false,
            id_prefix: "cmpl",
            endpoint: "/v1/completions",
            arrived,
        },
    )
    .await?;
    if request.common.streams() {
        let format = CompletionStream {
            meta,
            tokenizer: Arc::clone(tokenizer),
            logprobs: logprobs.is_some(),
            include_usage: request.common.include_usage(),
            offset: 0,
        };
        return Ok(streaming::response(
            generation,
            format,
            Framing::Sse,
            state.sse_keep_alive(),
        ));
    }
    let (text, tokens, outcome) = generation.collect().await?;
    let logprobs = logprobs.map(|_| logprobs::completion(tokenizer, &tokens, 0));
    let choice = json!({
        "index": 0,
        "text": text,
        "logprobs": logprobs,
        "finish_reason": outcome.finish.as_str(),
    });
    Ok(response(meta, "text_completion", choice, &outcome))
}

/// Completions' streamed chunks.
struct CompletionStream {
    meta: Meta,
    tokenizer: Arc<Tokenizer>,
    logprobs: bool,
    include_usage: bool,
    /// Bytes of completion text sent so far (the next `text_offset`).
    offset: usize,
}

impl CompletionStream {
    fn chunk(&self, text: &str, logprobs: Value, finish: Option<&str>) -> Value {
        let choice = json!({
            "index": 0,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish,
        });
        let usage = self.include_usage.then_some(Value::Null);
        self.meta.object("text_completion", json!([choice]), usage)
    }
}

impl StreamFormat for CompletionStream {
    fn text(&mut self, text: String, tokens: Vec<GeneratedToken>) -> Vec<Value> {
        if text.is_empty() && (!self.logprobs || tokens.is_empty()) {
            return Vec::new();
        }
        let logprobs = if self.logprobs {
            logprobs::completion(&self.tokenizer, &tokens, self.offset)
        } else {
            Value::Null
        };
        self.offset += text.len();
        vec![self.chunk(&text, logprobs, None)]
    }

    fn done(&mut self, outcome: Outcome) -> Vec<Value> {
        let mut out = vec![self.chunk("", Value::Null, Some(outcome.finish.as_str()))];
        if self.include_usage {
            out.push(self.meta.usage_chunk("text_completion", &outcome));
        }
        out
    }

    fn failed(&mut self, error: ApiError) -> Vec<Value> {
        vec![error.openai_body()]
    }
}
