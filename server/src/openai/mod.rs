//! The OpenAI-compatible API: `POST /v1/chat/completions`, `POST /v1/completions`,
//! `GET /v1/models` (and `GET /v1/models/{id}`).
//!
//! Errors have OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`). Fields
//! that would change the answer but are not implemented (`n` ≠ 1, penalties other than 0,
//! `logit_bias`, `echo`, `suffix`, `best_of`) are 400, never ignored. `tools` and
//! `tool_choice` give `message.tool_calls` / streamed `delta.tool_calls` and finish reason
//! `tool_calls` ([`crate::tools`]). `response_format` (`text`, `json_object`, `json_schema`)
//! constrains the output ([`crate::structured`]). `top_k`, `min_p`, `repetition_penalty`,
//! `ignore_eos` and `chat_template_kwargs` are accepted as extensions (and `response_format` on
//! `/v1/completions`).

pub mod chat;
pub mod completions;
pub mod logprobs;
pub mod types;

use crate::error::OpenAiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

/// The model object of the listing.
fn model_object(state: &AppState) -> Value {
    let model = state.model();
    json!({
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": "mlx-zoo",
    })
}

/// `GET /v1/models`: the served model.
pub async fn list_models(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&state)]}))
}

/// `GET /v1/models/{id}`: the served model, if `id` names it (else 404).
pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    state.model().check(Some(&id))?;
    Ok(Json(model_object(&state)))
}
