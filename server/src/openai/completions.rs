//! `POST /v1/completions`: raw text completion (no chat template).

use super::chat::{positive, response_suffix, sampling_fields, top_logprobs, usage, Meta};
use super::logprobs;
use super::types::{CompletionRequest, Prompt};
use crate::error::{parse_json, ApiError, OpenAiError};
use crate::generation::{self, GenerationRequest, Outcome, RequestLabel};
use crate::params::{self, ApiDefaults};
use crate::state::AppState;
use crate::streaming::{self, Framing, StreamFormat};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use mlx_models::model::GenerateParams;
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
    let sampling = params::sampling(
        &sampling_fields(&request.common),
        &model.info.generation,
        ApiDefaults::OPENAI,
    )?;
    let logprobs = request
        .logprobs
        .map(|n| top_logprobs(Some(n)))
        .transpose()?;
    let stop = match &request.common.stop {
        Some(s) => s.strings()?,
        None => Vec::new(),
    };
    let id = format!("cmpl-{}", response_suffix());
    let label = RequestLabel {
        id: id.clone(),
        endpoint: "/v1/completions",
        arrived,
    };
    let generation = generation::start(
        state.engine(),
        tokenizer,
        GenerationRequest {
            prompt,
            params: GenerateParams {
                max_tokens,
                sampling,
                stop_token_ids: Vec::new(),
            },
            stop,
            logprobs,
            constraint,
            clear_cache_after: false,
            keep_special_tokens: false,
            ignore_eos: request.common.ignore_eos.unwrap_or(false),
        },
        label,
    )
    .await?;
    let meta = Meta {
        id,
        created: params::unix_now(),
        model: model.id.clone(),
    };
    if request.common.streams() {
        let format = CompletionStream {
            meta,
            tokenizer: Arc::clone(tokenizer),
            logprobs: logprobs.is_some(),
            include_usage: request.common.include_usage(),
            offset: 0,
        };
        return Ok(streaming::response(generation, format, Framing::Sse));
    }
    let (text, tokens, outcome) = generation.collect().await?;
    let logprobs = logprobs.map(|_| logprobs::completion(tokenizer, &tokens, 0));
    Ok(axum::Json(json!({
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": Value::Null,
        "choices": [{
            "index": 0,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": outcome.finish.as_str(),
        }],
        "usage": usage(&outcome),
    }))
    .into_response())
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
        let mut chunk = json!({
            "id": self.meta.id,
            "object": "text_completion",
            "created": self.meta.created,
            "model": self.meta.model,
            "system_fingerprint": Value::Null,
            "choices": [{
                "index": 0,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish,
            }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
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
            out.push(json!({
                "id": self.meta.id,
                "object": "text_completion",
                "created": self.meta.created,
                "model": self.meta.model,
                "system_fingerprint": Value::Null,
                "choices": [],
                "usage": usage(&outcome),
            }));
        }
        out
    }

    fn failed(&mut self, error: ApiError) -> Vec<Value> {
        vec![error.openai_body()]
    }
}
