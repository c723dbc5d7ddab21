//! An OpenAI- and Ollama-compatible HTTP server over `mlx-models`' continuous-batching
//! scheduler: one model, many concurrent requests decoded together, prompt prefixes reused.
//!
//! - [`engine`]: the thread that loads the model and owns the scheduler (all MLX work).
//! - [`generation`]: one request's tokens → text chunks, stop strings, cancellation.
//! - [`openai`], [`ollama`]: the two APIs; [`streaming`]: SSE and NDJSON bodies.
//! - [`metrics`]: `/metrics` (Prometheus); `/health`.
//! - [`cli`]: the `mlx-server` command line.
//!
//! With an API key, every endpoint but `/health` (and `/`) needs
//! `Authorization: Bearer <key>`; without it the answer is 401 in the API's error shape.
//!
//! ```no_run
//! # async fn f(state: mlx_server::state::AppState) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! mlx_server::serve(listener, state).await
//! # }
//! ```
#![warn(missing_docs)]

pub mod cli;
pub mod engine;
pub mod error;
pub mod generation;
pub mod metrics;
pub mod model;
pub mod ollama;
pub mod openai;
pub mod params;
pub mod state;
pub mod streaming;
pub mod structured;
pub mod tools;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::{ApiError, Flavor};
use state::AppState;

/// The largest request body accepted (a long conversation in JSON stays far below).
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// The server's routes over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat::chat_completions))
        .route("/v1/completions", post(openai::completions::completions))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::get_model))
        .route("/api/chat", post(ollama::chat::chat))
        .route("/api/generate", post(ollama::generate::generate))
        .route("/api/tags", get(ollama::info::tags))
        .route("/api/show", post(ollama::info::show))
        .route("/api/ps", get(ollama::info::ps))
        .route("/api/version", get(ollama::info::version))
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .route("/", get(root))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Serves [`router`] on `listener` until the process is interrupted (Ctrl-C).
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

/// Paths that need no API key.
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/")
}

/// The bearer key check (see the crate docs).
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if let Some(key) = state.api_key() {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        if !is_public(&path) && !given.is_some_and(|g| same_key(g.as_bytes(), key.as_bytes())) {
            return Flavor::of_path(&path).respond(ApiError::unauthorized());
        }
    }
    next.run(request).await
}

/// Compares keys in time that depends on their lengths only.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts every answered request by endpoint and status.
async fn count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    state.requests().record(&path, response.status().as_u16());
    response
}

/// `GET /metrics`.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let text = metrics::render(
        state.requests(),
        state.engine().snapshot(),
        &state.model().id,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /health`: 200 `{"status": "ok"}` while the engine thread runs, else 503.
async fn health(State(state): State<AppState>) -> Response {
    if state.engine().is_alive() {
        Json(serde_json::json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "engine stopped"})),
        )
            .into_response()
    }
}

/// `GET /`: a line saying the server runs (clients of Ollama probe it).
async fn root() -> &'static str {
    "mlx-server is running"
}

/// Unknown paths: 404 in the shape of the API the path belongs to.
async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    Flavor::of_path(path).respond(
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no such endpoint: {} {path}", request.method()),
        )
        .with_code("unknown_url"),
    )
}
