//! `POST /api/chat`.

use super::types::{
    check_supported, format_grammar, keep_alive_is_zero, ChatRequest, OllamaMessage,
};
use super::{created_at, failure_line, final_fields};
use crate::error::{parse_json, ApiError, OllamaError};
use crate::generation::Outcome;
use crate::params;
use crate::state::AppState;
use crate::streaming::{self, Framing, StreamFormat};
use crate::tools::ToolSetup;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use mlx_models::runtime::scheduler::GeneratedToken;
use mlx_models::text::chat::{ChatMessage, ToolCall};
use mlx_models::text::tool_calls::{ParsedOutput, ToolCallStream};
use serde_json::{json, Value};
use std::time::Instant;

/// Chat: the messages through the model's chat template, then generation; NDJSON lines, or
/// one object with `stream: false`. No messages: an immediate `done_reason: "load"` answer.
pub async fn chat(State(state): State<AppState>, body: Bytes) -> Result<Response, OllamaError> {
    let arrived = Instant::now();
    let request: ChatRequest = parse_json(&body)?;
    let model = state.model();
    model.check(request.model.as_deref())?;
    let images = request
        .messages
        .iter()
        .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty()));
    check_supported(images, request.think.as_ref())?;
    let grammar = format_grammar(request.format.as_ref())?;
    let clear_cache_after = keep_alive_is_zero(request.keep_alive.as_ref());
    if request.messages.is_empty() {
        let empty = json!({"role": "assistant", "content": ""});
        return Ok(super::load_answer(
            &state,
            clear_cache_after,
            ("message", empty),
        ));
    }
    let mut messages = request
        .messages
        .iter()
        .map(to_chat)
        .collect::<Result<Vec<_>, _>>()?;
    let tools = ToolSetup::new(request.tools.as_deref(), None, model.tool_format)?;
    let mut extra = serde_json::Map::new();
    if let Some(Value::Bool(false)) = request.think {
        extra.insert("enable_thinking".into(), json!(false));
    }
    if let Some(tools) = &tools {
        let template = model.info.tokenizer.chat_template().map(|t| t.source());
        tools.prepare(&mut messages, crate::tools::renders_tools(template));
        extra.insert("tools".into(), Value::Array(tools.tools.clone()));
    }
    let extra = if extra.is_empty() {
        Value::Null
    } else {
        Value::Object(extra)
    };
    let options = request.options.clone().unwrap_or_default();
    let tokenizer = &model.info.tokenizer;
    let prompt = params::on_tokenizer(tokenizer, move |t| {
        t.apply_chat_template_with(&messages, true, &extra)
    })
    .await?;
    let generation = super::start(
        &state,
        super::Submission {
            prompt,
            options: &options,
            grammar,
            clear_cache_after,
            keep_special_tokens: tools.is_some(),
            kind: "chat",
            endpoint: "/api/chat",
            arrived,
        },
    )
    .await?;
    let format = ChatLines {
        model: model.id.clone(),
        tools: tools.map(ToolSetup::into_streaming),
    };
    if request.stream.unwrap_or(true) {
        return Ok(streaming::response(
            generation,
            format,
            Framing::Ndjson,
            None,
        ));
    }
    let (text, _, outcome) = generation.collect().await?;
    let parsed = match &format.tools {
        Some((tools, _)) => tools.parse(&text),
        None => ParsedOutput {
            content: text,
            tool_calls: Vec::new(),
        },
    };
    let mut answer = format.parsed_line(parsed);
    answer.extend(final_fields(&outcome));
    Ok(axum::Json(Value::Object(answer)).into_response())
}

/// An Ollama message as the chat template sees it (tool call arguments as given: Ollama sends
/// objects).
fn to_chat(message: &OllamaMessage) -> Result<ChatMessage, ApiError> {
    let mut out = ChatMessage::new(
        message.role.clone(),
        message.content.clone().unwrap_or_default(),
    );
    if let Some(calls) = &message.tool_calls {
        let calls = calls
            .iter()
            .map(|c| {
                let function = c.get("function").unwrap_or(c);
                let name = function
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::bad_request("a tool call needs `function.name`")
                            .with_param("messages")
                    })?;
                let arguments = function.get("arguments").cloned().unwrap_or(Value::Null);
                Ok(ToolCall::function(name, arguments))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        out.tool_calls = Some(calls);
    }
    out.name = message.tool_name.clone();
    Ok(out)
}

/// `/api/chat`'s lines.
struct ChatLines {
    model: String,
    /// With tools, the text from where a call may begin is held back until the end.
    tools: Option<(ToolSetup, ToolCallStream)>,
}

impl ChatLines {
    /// The line of parsed text: its content, and its tool calls.
    fn parsed_line(&self, parsed: ParsedOutput) -> serde_json::Map<String, Value> {
        let mut line = self.line(&parsed.content);
        if let Some(message) = line
            .get_mut("message")
            .filter(|_| !parsed.tool_calls.is_empty())
        {
            message["tool_calls"] = json!(crate::tools::ollama_calls(&parsed.tool_calls));
        }
        line
    }

    fn line(&self, text: &str) -> serde_json::Map<String, Value> {
        let mut line = serde_json::Map::new();
        line.insert("model".into(), json!(self.model));
        line.insert("created_at".into(), json!(created_at()));
        line.insert(
            "message".into(),
            json!({"role": "assistant", "content": text}),
        );
        line.insert("done".into(), json!(false));
        line
    }
}

impl StreamFormat for ChatLines {
    fn text(&mut self, text: String, _tokens: Vec<GeneratedToken>) -> Vec<Value> {
        let text = match &mut self.tools {
            Some((_, calls)) => calls.push(&text),
            None => text,
        };
        if text.is_empty() {
            return Vec::new();
        }
        vec![Value::Object(self.line(&text))]
    }

    fn done(&mut self, outcome: Outcome) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some((tools, calls)) = self.tools.take() {
            let parsed = tools.finish(calls);
            if !parsed.content.is_empty() || !parsed.tool_calls.is_empty() {
                out.push(Value::Object(self.parsed_line(parsed)));
            }
        }
        let mut line = self.line("");
        line.extend(final_fields(&outcome));
        out.push(Value::Object(line));
        out
    }

    fn failed(&mut self, error: ApiError) -> Vec<Value> {
        vec![failure_line(&error)]
    }
}
