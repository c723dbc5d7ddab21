//! What both APIs share between a request body and the engine: sampling parameters with
//! their defaults, the token budget against the context, stop strings, and prompt encoding
//! off the async threads.
//!
//! # Defaults
//!
//! A sampling field the request leaves out takes the model's `generation_config.json` value
//! when it has one, else the API's documented default ([`ApiDefaults::OPENAI`],
//! [`ApiDefaults::OLLAMA`]).
//!
//! # Context
//!
//! Prompts are never truncated: a prompt that leaves no room for one generated token within
//! the context (the server's, or a request's smaller `num_ctx`) is 400
//! `context_length_exceeded`. A token limit beyond what the context leaves is lowered to it
//! (the generation then ends with `length`), and a request without a limit may fill the
//! context.

use crate::error::ApiError;
use crate::model::ServedModel;
use mlx_models::runtime::sample::SamplingParams;
use mlx_models::text::Tokenizer;
use std::sync::Arc;

/// The sampling fields a request may set.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplingFields {
    /// Temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Top-k (0 = off).
    pub top_k: Option<i64>,
    /// Min-p.
    pub min_p: Option<f32>,
    /// CTRL repetition penalty (1 = off).
    pub repetition_penalty: Option<f32>,
    /// Tokens the repetition penalty looks back over.
    pub repetition_context: Option<i64>,
    /// The sampler's seed.
    pub seed: Option<i64>,
}

/// An API's defaults for what neither the request nor the model's generation config sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiDefaults {
    /// Temperature.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Top-k.
    pub top_k: usize,
    /// Repetition penalty.
    pub repetition_penalty: f32,
    /// Repetition window.
    pub repetition_context: usize,
}

impl ApiDefaults {
    /// OpenAI's: temperature 1, top-p 1, no top-k, no repetition penalty.
    pub const OPENAI: ApiDefaults = ApiDefaults {
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        repetition_penalty: 1.0,
        repetition_context: 20,
    };
    /// Ollama's documented ones: temperature 0.8, top-p 0.9, top-k 40, repeat penalty 1.1
    /// over the last 64 tokens.
    pub const OLLAMA: ApiDefaults = ApiDefaults {
        temperature: 0.8,
        top_p: 0.9,
        top_k: 40,
        repetition_penalty: 1.1,
        repetition_context: 64,
    };
}

/// The sampling parameters of a request (see the module docs for the defaults), validated.
///
/// ```
/// use mlx_server::params::{sampling, ApiDefaults, SamplingFields};
/// let config = mlx_models::config::GenerationConfig::default();
/// let fields = SamplingFields { temperature: Some(0.0), seed: Some(7), ..Default::default() };
/// let p = sampling(&fields, &config, ApiDefaults::OLLAMA).unwrap();
/// assert_eq!((p.temperature, p.top_k, p.seed), (0.0, 40, Some(7)));
/// let bad = SamplingFields { top_p: Some(2.0), ..Default::default() };
/// assert_eq!(sampling(&bad, &config, ApiDefaults::OPENAI).unwrap_err().status.as_u16(), 400);
/// ```
pub fn sampling(
    fields: &SamplingFields,
    config: &mlx_models::config::GenerationConfig,
    defaults: ApiDefaults,
) -> Result<SamplingParams, ApiError> {
    let count = |v: Option<i64>, name: &str| -> Result<Option<usize>, ApiError> {
        v.map(|v| {
            usize::try_from(v)
                .map_err(|_| ApiError::bad_request(format!("`{name}` must be ≥ 0, got {v}")))
        })
        .transpose()
    };
    let greedy_model = config.do_sample == Some(false);
    let params = SamplingParams {
        temperature: fields.temperature.unwrap_or(if greedy_model {
            0.0
        } else {
            config.temperature.unwrap_or(defaults.temperature)
        }),
        top_p: fields
            .top_p
            .unwrap_or(config.top_p.unwrap_or(defaults.top_p)),
        top_k: count(fields.top_k, "top_k")?.unwrap_or(config.top_k.unwrap_or(defaults.top_k)),
        min_p: fields.min_p.unwrap_or(config.min_p.unwrap_or(0.0)),
        repetition_penalty: fields.repetition_penalty.unwrap_or(
            config
                .repetition_penalty
                .unwrap_or(defaults.repetition_penalty),
        ),
        repetition_context_size: count(fields.repetition_context, "repeat_last_n")?
            .unwrap_or(defaults.repetition_context),
        // A negative seed (some clients send -1 for "random") means no seed.
        seed: fields.seed.and_then(|s| u64::try_from(s).ok()),
    };
    params
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(params)
}

/// The number of tokens a request may generate: `requested` (or everything the context
/// leaves), lowered to what `context` leaves after `prompt` tokens. Errors: 400
/// `context_length_exceeded` when the prompt leaves no room (see the module docs).
///
/// ```
/// use mlx_server::params::token_budget;
/// assert_eq!(token_budget(10, Some(5), 100).unwrap(), 5);
/// assert_eq!(token_budget(10, Some(500), 100).unwrap(), 90);
/// assert_eq!(token_budget(10, None, 100).unwrap(), 90);
/// assert_eq!(token_budget(100, Some(1), 100).unwrap_err().status.as_u16(), 400);
/// ```
pub fn token_budget(
    prompt: usize,
    requested: Option<usize>,
    context: usize,
) -> Result<usize, ApiError> {
    if prompt >= context {
        return Err(ApiError::bad_request(format!(
            "the prompt is {prompt} tokens, and this request's context is {context} tokens: \
             it must leave room for at least one generated token (the server never truncates \
             prompts)"
        ))
        .with_code("context_length_exceeded"));
    }
    let room = context - prompt;
    Ok(requested.map_or(room, |n| n.min(room)))
}

/// The context a request runs in: the server's, or a smaller `num_ctx`.
pub fn request_context(model: &ServedModel, num_ctx: Option<i64>) -> usize {
    let served = model.info.context_length;
    match num_ctx {
        Some(n) if n > 0 => (n as usize).min(served),
        _ => served,
    }
}

/// A `stop` field: one string or a list (at most [`MAX_STOP_STRINGS`], none empty).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum StopField {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// The most stop strings a request may give.
pub const MAX_STOP_STRINGS: usize = 16;

impl StopField {
    /// The stop strings, checked. Errors: 400 for more than [`MAX_STOP_STRINGS`].
    ///
    /// ```
    /// use mlx_server::params::StopField;
    /// assert_eq!(StopField::One("\n".into()).strings().unwrap(), vec!["\n".to_string()]);
    /// assert!(StopField::Many(vec!["x".into(); 17]).strings().is_err());
    /// ```
    pub fn strings(&self) -> Result<Vec<String>, ApiError> {
        let list = match self {
            StopField::One(s) => vec![s.clone()],
            StopField::Many(v) => v.clone(),
        };
        if list.len() > MAX_STOP_STRINGS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_STOP_STRINGS} stop strings are allowed, got {}",
                list.len()
            ))
            .with_param("stop"));
        }
        Ok(list.into_iter().filter(|s| !s.is_empty()).collect())
    }
}

/// Runs `f` (template rendering, encoding) on the blocking pool: long prompts take
/// milliseconds to encode, which must not stall the async threads.
pub async fn on_tokenizer<T: Send + 'static>(
    tokenizer: &Arc<Tokenizer>,
    f: impl FnOnce(&Tokenizer) -> mlx_models::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let tokenizer = Arc::clone(tokenizer);
    tokio::task::spawn_blocking(move || f(&tokenizer))
        .await
        .map_err(|e| ApiError::internal(format!("the tokenizer task failed: {e}")))?
        .map_err(ApiError::from)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
