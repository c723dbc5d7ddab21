//! Request bodies of the OpenAI endpoints (the fields this server reads; others are ignored
//! when they change nothing, and refused with 400 when they would: see the handlers).

use crate::error::ApiError;
use crate::params::StopField;
use mlx_models::text::chat::{ChatMessage, ToolCall};
use serde::Deserialize;
use serde_json::Value;

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage (and `usage: null` on the others).
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The fields both completion endpoints share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonFields {
    /// The model's name (absent: the served model).
    #[serde(default)]
    pub model: Option<String>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Choices to generate: only 1.
    #[serde(default)]
    pub n: Option<i64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<StopField>,
    /// Token limit.
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// Temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Top-k (an extension several servers accept).
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Min-p (extension).
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Repetition penalty (extension).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// OpenAI's presence penalty: only 0.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// OpenAI's frequency penalty: only 0.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Logit biases: only none.
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    /// The sampler's seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Generate through end-of-sequence tokens up to the token limit (an extension, as in
    /// llama.cpp's and vLLM's servers: fixed-length runs for benchmarks).
    #[serde(default)]
    pub ignore_eos: Option<bool>,
}

impl CommonFields {
    /// 400 for the fields this server cannot honour: `n` ≠ 1, non-zero presence or frequency
    /// penalties, logit biases.
    pub fn check_supported(&self) -> Result<(), ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::bad_request(format!(
                    "`n` must be 1 on this server, got {n}"
                ))
                .with_param("n"));
            }
        }
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::unsupported(name, format!("a non-zero `{name}`")));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(ApiError::unsupported("logit_bias", "`logit_bias`"));
        }
        Ok(())
    }

    /// Whether to stream.
    pub fn streams(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<InMessage>,
    /// Shared fields.
    #[serde(flatten)]
    pub common: CommonFields,
    /// The newer name of `max_tokens` (wins over it).
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    /// Return log-probabilities of the output tokens.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// Alternatives per token (0–20), with `logprobs`.
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {...}}`.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// `none`, `auto`, `required` or `{"type": "function", "function": {"name"}}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// `false`: at most one tool call (default `true`).
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Extra chat template variables (as vLLM's `chat_template_kwargs`, e.g.
    /// `{"enable_thinking": false}`).
    #[serde(default)]
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
}

/// A message of the conversation as OpenAI sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct InMessage {
    /// `system`, `developer`, `user`, `assistant`, `tool`.
    pub role: String,
    /// A string, a list of content parts, or null (an assistant turn with tool calls).
    #[serde(default)]
    pub content: Option<Value>,
    /// A participant's or tool's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Tool calls of an assistant turn.
    #[serde(default)]
    pub tool_calls: Option<Vec<InToolCall>>,
    /// The call a tool message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// A tool call in a request's assistant message.
#[derive(Debug, Clone, Deserialize)]
pub struct InToolCall {
    /// The call's id.
    #[serde(default)]
    pub id: Option<String>,
    /// The function.
    pub function: InFunctionCall,
}

/// The function of an [`InToolCall`].
#[derive(Debug, Clone, Deserialize)]
pub struct InFunctionCall {
    /// Its name.
    pub name: String,
    /// Its arguments: a JSON-encoded string (OpenAI) or an object.
    #[serde(default)]
    pub arguments: Value,
}

/// The text of a content field: a string, or the `text` parts of a list joined. Errors: 400
/// for non-text parts (images, audio) and other shapes.
///
/// ```
/// use mlx_server::openai::types::content_text;
/// let parts = serde_json::json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
/// assert_eq!(content_text(Some(&parts), "messages").unwrap(), "ab");
/// assert_eq!(content_text(None, "messages").unwrap(), "");
/// assert!(content_text(Some(&serde_json::json!([{"type": "image_url"}])), "messages").is_err());
/// ```
pub fn content_text(content: Option<&Value>, param: &str) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::unsupported(
                            param,
                            format!("content part type {}", kind.unwrap_or("(none)")),
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "message content must be a string or a list of parts, got {other}"
        ))
        .with_param(param)),
    }
}

impl InMessage {
    /// The message as the chat template sees it: `developer` becomes `system`, tool call
    /// arguments given as JSON strings become JSON values.
    pub fn to_chat(&self) -> Result<ChatMessage, ApiError> {
        let role = match self.role.as_str() {
            "developer" => "system",
            r => r,
        };
        let mut message = ChatMessage::new(role, content_text(self.content.as_ref(), "messages")?);
        message.name = self.name.clone();
        message.tool_call_id = self.tool_call_id.clone();
        message.tool_calls = self.tool_calls.as_ref().map(|calls| {
            calls
                .iter()
                .map(|c| {
                    let arguments = match &c.function.arguments {
                        Value::String(s) => {
                            serde_json::from_str(s).unwrap_or(Value::String(s.clone()))
                        }
                        other => other.clone(),
                    };
                    let mut call = ToolCall::function(c.function.name.clone(), arguments);
                    call.id = c.id.clone();
                    call
                })
                .collect()
        });
        Ok(message)
    }
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// A string, a list of one string, a list of token ids, or a list of one such list.
    pub prompt: Value,
    /// Shared fields.
    #[serde(flatten)]
    pub common: CommonFields,
    /// The legacy form: alternatives per token (0–20), with the chosen token's log-probability.
    #[serde(default)]
    pub logprobs: Option<i64>,
    /// Echo the prompt: only false.
    #[serde(default)]
    pub echo: Option<bool>,
    /// Text after the completion: not supported.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Server-side best-of: only 1.
    #[serde(default)]
    pub best_of: Option<i64>,
    /// Structured output, as in chat (an extension for completions).
    #[serde(default)]
    pub response_format: Option<Value>,
}

/// A completion prompt: text, or token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Text, encoded with the tokenizer's special tokens (BOS).
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

impl Prompt {
    /// The one prompt of a `prompt` field. Errors: 400 for several prompts (a batch) or
    /// another shape.
    ///
    /// ```
    /// use mlx_server::openai::types::Prompt;
    /// assert_eq!(Prompt::parse(&serde_json::json!(["hi"])).unwrap(), Prompt::Text("hi".into()));
    /// assert_eq!(Prompt::parse(&serde_json::json!([1, 2])).unwrap(), Prompt::Tokens(vec![1, 2]));
    /// assert!(Prompt::parse(&serde_json::json!(["a", "b"])).is_err());
    /// ```
    pub fn parse(value: &Value) -> Result<Prompt, ApiError> {
        let bad = || {
            ApiError::bad_request(
                "`prompt` must be a string, a list of token ids, or a list of one of those \
                 (one prompt per request on this server)",
            )
            .with_param("prompt")
        };
        let ids = |items: &[Value]| -> Option<Vec<u32>> {
            items
                .iter()
                .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect()
        };
        match value {
            Value::String(s) => Ok(Prompt::Text(s.clone())),
            Value::Array(items) if items.len() == 1 && !items[0].is_number() => match &items[0] {
                Value::String(s) => Ok(Prompt::Text(s.clone())),
                Value::Array(inner) => ids(inner).map(Prompt::Tokens).ok_or_else(bad),
                _ => Err(bad()),
            },
            Value::Array(items) if items.iter().all(Value::is_number) => {
                ids(items).map(Prompt::Tokens).ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }
}
