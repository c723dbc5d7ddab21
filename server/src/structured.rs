//! Structured output: OpenAI's `response_format` and Ollama's `format` compiled into a
//! token constraint (`mlx_models::text::structured`, llguidance) that the scheduler applies
//! before each sampled token.
//!
//! The grammar compiler walks the whole vocabulary once, on the first request that asks for
//! structured output; schemas compile per request, off the async threads. A schema the
//! engine cannot compile is 400 `invalid_schema`.

use crate::error::ApiError;
use crate::state::AppState;
use mlx_models::runtime::constraint::TokenConstraint;
use mlx_models::text::structured::{Grammar, GrammarCompiler};

/// The constraint of `grammar` (none without one).
pub async fn constraint(
    state: &AppState,
    grammar: Option<Grammar>,
) -> Result<Option<Box<dyn TokenConstraint>>, ApiError> {
    let Some(grammar) = grammar else {
        return Ok(None);
    };
    let compiler = compiler(state).await?;
    let constraint = tokio::task::spawn_blocking(move || compiler.compile(&grammar))
        .await
        .map_err(|e| ApiError::internal(format!("the grammar task failed: {e}")))??;
    Ok(Some(Box::new(constraint)))
}

/// The model's grammar compiler, built on first use.
async fn compiler(state: &AppState) -> Result<GrammarCompiler, ApiError> {
    let cell = state.grammar_cell();
    let compiler = cell
        .get_or_try_init(|| async {
            let model = state.model();
            let tokenizer = std::sync::Arc::clone(&model.info.tokenizer);
            let eos = model.info.eos_token_ids.clone();
            tokio::task::spawn_blocking(move || GrammarCompiler::new(&tokenizer, &eos))
                .await
                .map_err(|e| ApiError::internal(format!("the grammar task failed: {e}")))?
                .map_err(ApiError::from)
        })
        .await?;
    Ok(compiler.clone())
}
