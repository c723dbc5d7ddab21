//! Request bodies of the Ollama endpoints.

use crate::error::ApiError;
use crate::params::{SamplingFields, StopField};
use mlx_models::text::structured::Grammar;
use serde::Deserialize;
use serde_json::Value;

/// `options`: the runner parameters this server reads (others are accepted and ignored:
/// they tune Ollama's runner, such as `num_thread` or `num_gpu`, not the answer).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Options {
    /// Temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Top-k.
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Min-p.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// The sampler's seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Token limit (-1, -2 or absent: up to the context).
    #[serde(default)]
    pub num_predict: Option<i64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<StopField>,
    /// Repetition penalty.
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    /// Tokens the repetition penalty looks back over.
    #[serde(default)]
    pub repeat_last_n: Option<i64>,
    /// The request's context length (at most the server's).
    #[serde(default)]
    pub num_ctx: Option<i64>,
}

impl Options {
    /// The sampling fields.
    pub fn sampling(&self) -> SamplingFields {
        SamplingFields {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            repetition_context: self.repeat_last_n,
            seed: self.seed,
        }
    }

    /// The token limit: `None` (up to the context) for a negative, zero or absent
    /// `num_predict`.
    pub fn max_tokens(&self) -> Option<usize> {
        self.num_predict
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
    }

    /// The stop strings.
    pub fn stop(&self) -> Result<Vec<String>, ApiError> {
        self.stop
            .as_ref()
            .map_or(Ok(Vec::new()), StopField::strings)
    }
}

/// A message as Ollama sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct OllamaMessage {
    /// `system`, `user`, `assistant`, `tool`.
    pub role: String,
    /// The text.
    #[serde(default)]
    pub content: Option<String>,
    /// Images (not supported: 400 when present).
    #[serde(default)]
    pub images: Option<Vec<Value>>,
    /// Tool calls of an assistant turn: `[{"function": {"name", "arguments"}}]`.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// The tool a `tool` message answers.
    #[serde(default)]
    pub tool_name: Option<String>,
}

/// `POST /api/chat`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The model's name (absent: the served model).
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation (empty: just report the model loaded).
    #[serde(default)]
    pub messages: Vec<OllamaMessage>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// `"json"` or a JSON schema.
    #[serde(default)]
    pub format: Option<Value>,
    /// Runner options.
    #[serde(default)]
    pub options: Option<Options>,
    /// Stream NDJSON lines (the default) or answer once.
    #[serde(default)]
    pub stream: Option<bool>,
    /// How long the model stays loaded (see [`crate::ollama`] for what this server does).
    #[serde(default)]
    pub keep_alive: Option<Value>,
    /// Separate thinking output (only `false` is accepted).
    #[serde(default)]
    pub think: Option<Value>,
}

/// `POST /api/generate`.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerateRequest {
    /// The model's name (absent: the served model).
    #[serde(default)]
    pub model: Option<String>,
    /// The prompt (empty: just report the model loaded, or unloaded with `keep_alive: 0`).
    #[serde(default)]
    pub prompt: Option<String>,
    /// Fill-in-the-middle suffix (not supported).
    #[serde(default)]
    pub suffix: Option<String>,
    /// A system prompt for the chat template.
    #[serde(default)]
    pub system: Option<String>,
    /// A prompt template in Ollama's Go syntax (only `{{ .System }}`, `{{ .Prompt }}` and
    /// `{{ .Response }}` are understood).
    #[serde(default)]
    pub template: Option<String>,
    /// Token ids of an earlier exchange to continue from (the `context` of its answer).
    #[serde(default)]
    pub context: Option<Vec<u32>>,
    /// Use the prompt as it is, without a template.
    #[serde(default)]
    pub raw: Option<bool>,
    /// `"json"` or a JSON schema.
    #[serde(default)]
    pub format: Option<Value>,
    /// Runner options.
    #[serde(default)]
    pub options: Option<Options>,
    /// Stream NDJSON lines (the default) or answer once.
    #[serde(default)]
    pub stream: Option<bool>,
    /// How long the model stays loaded.
    #[serde(default)]
    pub keep_alive: Option<Value>,
    /// Images (not supported: 400 when present).
    #[serde(default)]
    pub images: Option<Vec<Value>>,
    /// Separate thinking output (only `false` is accepted).
    #[serde(default)]
    pub think: Option<Value>,
}

/// `POST /api/show`.
#[derive(Debug, Clone, Deserialize)]
pub struct ShowRequest {
    /// The model's name.
    #[serde(default)]
    pub model: Option<String>,
    /// The older name of `model`.
    #[serde(default)]
    pub name: Option<String>,
}

/// Whether a `keep_alive` value asks to unload now: `0`, `"0"`, or a zero duration such as
/// `"0s"` or `"0m"`.
///
/// ```
/// use mlx_server::ollama::types::keep_alive_is_zero;
/// use serde_json::json;
/// assert!(keep_alive_is_zero(Some(&json!(0))));
/// assert!(keep_alive_is_zero(Some(&json!("0s"))));
/// assert!(!keep_alive_is_zero(Some(&json!("5m"))));
/// assert!(!keep_alive_is_zero(Some(&json!(-1))));
/// assert!(!keep_alive_is_zero(None));
/// ```
pub fn keep_alive_is_zero(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => {
            let number = s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic());
            !number.is_empty() && number.parse::<f64>().is_ok_and(|v| v == 0.0)
        }
        _ => false,
    }
}

/// 400 for what this server does not implement: images, `think: true`.
pub fn check_supported(images: bool, think: Option<&Value>) -> Result<(), ApiError> {
    if images {
        return Err(ApiError::unsupported("images", "image input"));
    }
    match think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        Some(_) => Err(ApiError::unsupported("think", "separate thinking output")),
    }
}

/// The grammar of a `format` field (`"json"`, a JSON schema, or nothing). Errors: 400 for
/// another value.
pub fn format_grammar(format: Option<&Value>) -> Result<Option<Grammar>, ApiError> {
    match format {
        None => Ok(None),
        Some(f) => {
            Grammar::from_ollama_format(f).map_err(|e| ApiError::from(e).with_param("format"))
        }
    }
}
