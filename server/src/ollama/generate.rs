//! `POST /api/generate`.

use super::types::{check_supported, format_grammar, keep_alive_is_zero, GenerateRequest};
use super::{created_at, failure_line, final_fields};
use crate::error::{parse_json, ApiError, OllamaError};
use crate::generation::Outcome;
use crate::params;
use crate::state::AppState;
use crate::streaming::{self, Framing, StreamFormat};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use mlx_models::runtime::scheduler::GeneratedToken;
use mlx_models::text::{ChatMessage, Tokenizer};
use serde_json::{json, Value};
use std::time::Instant;

/// How the prompt becomes text (see [`crate::ollama`]'s docs).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PromptForm {
    /// As it is (`raw: true`, or a model without a chat template).
    Raw(String),
    /// Through the model's chat template.
    Chat(Vec<ChatMessage>),
}

/// Renders an Ollama Go template that only uses `{{ .System }}`, `{{ .Prompt }}` and
/// `{{ .Response }}` (the text from `{{ .Response }}` on is dropped: the answer goes there).
///
/// ```
/// use mlx_server::ollama::generate::render_go_template;
/// let t = "{{ if .System }}S:{{ .System }} {{ end }}U:{{.Prompt}} A:{{ .Response }}<end>";
/// assert!(render_go_template(t, "sys", "hi").is_err()); // `if` is not understood
/// assert_eq!(render_go_template("U:{{.Prompt}} A:{{ .Response }}!", "", "hi").unwrap(), "U:hi A:");
/// ```
pub fn render_go_template(template: &str, system: &str, prompt: &str) -> Result<String, ApiError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            ApiError::bad_request("`template`: unclosed `{{`").with_param("template")
        })?;
        let action = after[..end].trim_matches(|c: char| c == '-' || c.is_whitespace());
        match action {
            ".System" => out.push_str(system),
            ".Prompt" => out.push_str(prompt),
            ".Response" => return Ok(out),
            other => {
                return Err(ApiError::unsupported(
                    "template",
                    format!("the template action `{{{{ {other} }}}}` (only .System, .Prompt and .Response are)"),
                ))
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The prompt's token ids for `request`.
fn encode(tokenizer: &Tokenizer, request: &GenerateRequest) -> mlx_models::Result<Vec<u32>> {
    let prompt = request.prompt.clone().unwrap_or_default();
    let system = request.system.clone().unwrap_or_default();
    let form = if request.raw == Some(true) || tokenizer.chat_template().is_none() {
        PromptForm::Raw(prompt)
    } else {
        let mut messages = Vec::new();
        if !system.is_empty() {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", prompt));
        PromptForm::Chat(messages)
    };
    let continues = request.context.as_ref().is_some_and(|c| !c.is_empty());
    let mut ids = request.context.clone().unwrap_or_default();
    let extra = match request.think {
        Some(Value::Bool(false)) => json!({"enable_thinking": false}),
        _ => Value::Null,
    };
    // A continuation already starts with BOS.
    let new = match form {
        PromptForm::Raw(text) => tokenizer.encode(&text, !continues)?,
        PromptForm::Chat(messages) if continues => {
            let text = tokenizer.render_chat_template(&messages, true, &extra)?;
            tokenizer.encode(&text, false)?
        }
        PromptForm::Chat(messages) => {
            tokenizer.apply_chat_template_with(&messages, true, &extra)?
        }
    };
    ids.extend(new);
    Ok(ids)
}

/// Completion of a prompt: through the chat template (with `system`), as it is (`raw`), or
/// through a simple Go `template`; NDJSON lines, or one object with `stream: false`. The
/// last answer carries `context` (the prompt's and the answer's token ids) to continue from.
pub async fn generate(State(state): State<AppState>, body: Bytes) -> Result<Response, OllamaError> {
    let arrived = Instant::now();
    let mut request: GenerateRequest = parse_json(&body)?;
    let model = state.model();
    model.check(request.model.as_deref())?;
    check_supported(
        request.images.as_ref().is_some_and(|i| !i.is_empty()),
        request.think.as_ref(),
    )?;
    let grammar = format_grammar(request.format.as_ref())?;
    if request.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported("suffix", "`suffix` (fill in the middle)").into());
    }
    let clear_cache_after = keep_alive_is_zero(request.keep_alive.as_ref());
    let prompt_text = request.prompt.clone().unwrap_or_default();
    if prompt_text.is_empty() && request.context.as_ref().is_none_or(|c| c.is_empty()) {
        return Ok(super::load_answer(
            &state,
            clear_cache_after,
            ("response", json!("")),
        ));
    }
    if let Some(template) = request.template.as_deref().filter(|t| !t.is_empty()) {
        let system = request.system.clone().unwrap_or_default();
        request.prompt = Some(render_go_template(template, &system, &prompt_text)?);
        request.raw = Some(true);
    }
    let options = request.options.clone().unwrap_or_default();
    let tokenizer = &model.info.tokenizer;
    let for_encoding = request.clone();
    let prompt = params::on_tokenizer(tokenizer, move |t| encode(t, &for_encoding)).await?;
    let generation = super::start(
        &state,
        super::Submission {
            prompt: prompt.clone(),
            options: &options,
            grammar,
            clear_cache_after,
            keep_special_tokens: false,
            kind: "gen",
            endpoint: "/api/generate",
            arrived,
        },
    )
    .await?;
    let format = GenerateLines {
        model: model.id.clone(),
        prompt,
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
    let mut answer = format.line(&text);
    answer.extend(format.closing(&outcome));
    Ok(axum::Json(Value::Object(answer)).into_response())
}

/// `/api/generate`'s lines.
struct GenerateLines {
    model: String,
    prompt: Vec<u32>,
}

impl GenerateLines {
    fn line(&self, text: &str) -> serde_json::Map<String, Value> {
        let mut line = serde_json::Map::new();
        line.insert("model".into(), json!(self.model));
        line.insert("created_at".into(), json!(created_at()));
        line.insert("response".into(), json!(text));
        line.insert("done".into(), json!(false));
        line
    }

    fn closing(&self, outcome: &Outcome) -> serde_json::Map<String, Value> {
        let mut fields = final_fields(outcome);
        let context: Vec<u32> = self
            .prompt
            .iter()
            .chain(&outcome.token_ids)
            .copied()
            .collect();
        fields.insert("context".into(), json!(context));
        fields
    }
}

impl StreamFormat for GenerateLines {
    fn text(&mut self, text: String, _tokens: Vec<GeneratedToken>) -> Vec<Value> {
        if text.is_empty() {
            return Vec::new();
        }
        vec![Value::Object(self.line(&text))]
    }

    fn done(&mut self, outcome: Outcome) -> Vec<Value> {
        let mut line = self.line("");
        line.extend(self.closing(&outcome));
        vec![Value::Object(line)]
    }

    fn failed(&mut self, error: ApiError) -> Vec<Value> {
        vec![failure_line(&error)]
    }
}
