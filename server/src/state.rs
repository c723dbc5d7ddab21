//! [`AppState`]: what every handler shares.

use crate::engine::Engine;
use crate::metrics::RequestCounters;
use crate::model::ServedModel;
use mlx_models::text::structured::GrammarCompiler;
use std::sync::Arc;
use std::time::Duration;

/// The server's shared state: the engine handle, the served model, the API key and the
/// request counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    sse_keep_alive: Option<Duration>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    model: ServedModel,
    api_key: Option<String>,
    requests: RequestCounters,
    grammar: tokio::sync::OnceCell<GrammarCompiler>,
}

impl AppState {
    /// State over a started `engine` serving `model`; with `api_key`, every endpoint but
    /// `/health` requires `Authorization: Bearer <api_key>`.
    pub fn new(engine: Engine, model: ServedModel, api_key: Option<String>) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                engine,
                model,
                api_key: api_key.filter(|k| !k.is_empty()),
                requests: RequestCounters::default(),
                grammar: tokio::sync::OnceCell::new(),
            }),
            sse_keep_alive: Some(crate::streaming::DEFAULT_SSE_KEEP_ALIVE),
        }
    }

    /// The same state with SSE streams sending a keep-alive comment after `every` of silence
    /// (`None`: never); [`crate::streaming::DEFAULT_SSE_KEEP_ALIVE`] unless set.
    pub fn with_sse_keep_alive(mut self, every: Option<Duration>) -> AppState {
        self.sse_keep_alive = every;
        self
    }

    /// The silence after which an SSE stream sends a keep-alive comment.
    pub fn sse_keep_alive(&self) -> Option<Duration> {
        self.sse_keep_alive
    }

    /// The engine thread's handle.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The served model.
    pub fn model(&self) -> &ServedModel {
        &self.inner.model
    }

    /// The API key, if one is required.
    pub fn api_key(&self) -> Option<&str> {
        self.inner.api_key.as_deref()
    }

    /// The grammar compiler of structured output, once built (see [`crate::structured`]).
    pub fn grammar_cell(&self) -> &tokio::sync::OnceCell<GrammarCompiler> {
        &self.inner.grammar
    }

    /// Requests answered, by endpoint and status.
    pub fn requests(&self) -> &RequestCounters {
        &self.inner.requests
    }
}
