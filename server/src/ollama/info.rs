//! `GET /api/tags`, `POST /api/show`, `GET /api/ps`, `GET /api/version`.

use super::types::ShowRequest;
use super::VERSION;
use crate::error::{parse_json, OllamaError};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// The model's `details` object.
fn details(state: &AppState) -> Value {
    let model = state.model();
    let family = &model.info.config.model_type;
    json!({
        "parent_model": "",
        "format": model.format,
        "family": family,
        "families": [family],
        "parameter_size": parameter_size(model.info.parameter_count),
        "quantization_level": model.quantization_level(),
    })
}

/// A parameter count as Ollama's listings write it: billions with one decimal, millions
/// with two, thousands with none, each without decimals when whole; empty when unknown (0).
///
/// ```
/// use mlx_server::ollama::info::parameter_size;
/// assert_eq!(parameter_size(134_515_008), "134.52M");
/// assert_eq!(parameter_size(1_543_714_304), "1.5B");
/// assert_eq!(parameter_size(7_000_000_000), "7B");
/// assert_eq!(parameter_size(50_000_000), "50M");
/// assert_eq!(parameter_size(12_345), "12K");
/// assert_eq!(parameter_size(999), "999");
/// assert_eq!(parameter_size(0), "");
/// ```
pub fn parameter_size(count: u64) -> String {
    let scaled = |unit: u64, decimals: usize, suffix: &str| {
        let x = count as f64 / unit as f64;
        if count.is_multiple_of(unit) {
            format!("{x:.0}{suffix}")
        } else {
            format!("{x:.decimals$}{suffix}")
        }
    };
    match count {
        0 => String::new(),
        1_000_000_000.. => scaled(1_000_000_000, 1, "B"),
        1_000_000.. => scaled(1_000_000, 2, "M"),
        1_000.. => scaled(1_000, 0, "K"),
        n => n.to_string(),
    }
}

/// The modification time of the listing: when the server loaded the model.
fn modified_at(state: &AppState) -> String {
    chrono::DateTime::from_timestamp(state.model().created as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `GET /api/tags`: the served model, named by its id with a `:latest` tag.
pub async fn tags(State(state): State<AppState>) -> Json<Value> {
    let model = state.model();
    let name = format!("{}:latest", model.id);
    Json(json!({"models": [{
        "name": name,
        "model": name,
        "modified_at": modified_at(&state),
        "size": model.size,
        "digest": "",
        "details": details(&state),
    }]}))
}

/// `GET /api/ps`: the served model, always loaded.
pub async fn ps(State(state): State<AppState>) -> Json<Value> {
    let model = state.model();
    let name = format!("{}:latest", model.id);
    let vram = state.engine().snapshot().map_or(0, |s| s.active_memory);
    Json(json!({"models": [{
        "name": name,
        "model": name,
        "size": model.size,
        "digest": "",
        "details": details(&state),
        "expires_at": "9999-12-31T23:59:59Z",
        "size_vram": vram,
        "context_length": model.info.context_length,
    }]}))
}

/// `POST /api/show`: the model's details, chat template and architecture figures.
pub async fn show(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, OllamaError> {
    let request: ShowRequest = parse_json(&body)?;
    let model = state.model();
    model.check(request.model.as_deref().or(request.name.as_deref()))?;
    let config = &model.info.config;
    let arch = &config.model_type;
    let template = model
        .info
        .tokenizer
        .chat_template()
        .map(|t| t.source().to_string())
        .unwrap_or_default();
    // Tool calls work with every template (described in a system message when the template
    // does not render tools).
    let capabilities = ["completion", "tools"];
    let mut model_info = serde_json::Map::new();
    model_info.insert("general.architecture".into(), json!(arch));
    for (key, value) in [
        ("context_length", model.info.context_length),
        ("embedding_length", config.hidden_size),
        ("block_count", config.num_hidden_layers),
        ("attention.head_count", config.num_attention_heads),
        ("vocab_size", config.vocab_size),
    ] {
        model_info.insert(format!("{arch}.{key}"), json!(value));
    }
    Ok(Json(json!({
        "license": "",
        "modelfile": format!("# served by mlx-server\nFROM {}\n", model.info.source),
        "parameters": "",
        "template": template,
        "details": details(&state),
        "model_info": model_info,
        "capabilities": capabilities,
        "modified_at": modified_at(&state),
    })))
}

/// `GET /api/version`: this server's version.
pub async fn version() -> Json<Value> {
    Json(json!({ "version": VERSION }))
}
