//! [`ApiError`]: a failed request, rendered in the shape of the API that was called.
//!
//! - OpenAI: `{"error": {"message", "type", "param", "code"}}` ([`OpenAiError`]).
//! - Ollama: `{"error": "..."}` ([`OllamaError`]).
//!
//! Errors of the model crate map to statuses by what they mean for the caller: a full queue
//! is 503 with `Retry-After`, a prompt that does not fit the context or an invalid argument is
//! 400, an internal failure is 500.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A request that failed: its HTTP status and what the body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A message for the user.
    pub message: String,
    /// OpenAI's error `type` (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, when known.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, ...).
    pub code: Option<&'static str>,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `kind` and `message`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 `invalid_request_error`.
    ///
    /// ```
    /// let e = mlx_server::error::ApiError::bad_request("`n` must be 1").with_param("n");
    /// assert_eq!(e.status.as_u16(), 400);
    /// assert_eq!(e.param.as_deref(), Some("n"));
    /// ```
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 for a feature this server does not implement (never silently ignored).
    pub fn unsupported(param: &str, what: impl std::fmt::Display) -> ApiError {
        ApiError::bad_request(format!("{what} is not supported by this server"))
            .with_param(param)
            .with_code("unsupported")
    }

    /// 404 for a model this server does not serve.
    pub fn model_not_found(name: &str, served: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("model '{name}' not found: this server serves '{served}'"),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// 401 for a missing or wrong API key.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or invalid API key: send `Authorization: Bearer <key>`",
        )
        .with_code("invalid_api_key")
    }

    /// 503 with `Retry-After` when the queue is full.
    pub fn busy(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            .with_code("server_busy");
        e.retry_after = Some(1);
        e
    }

    /// 500 for a failure of the server itself.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// This error naming the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// This error with a machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// The OpenAI body: `{"error": {"message", "type", "param", "code"}}`.
    ///
    /// ```
    /// let body = mlx_server::error::ApiError::bad_request("bad").openai_body();
    /// assert_eq!(body["error"]["type"], "invalid_request_error");
    /// assert!(body["error"]["param"].is_null());
    /// ```
    pub fn openai_body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }

    /// The Ollama body: `{"error": "..."}`.
    pub fn ollama_body(&self) -> serde_json::Value {
        json!({ "error": self.message })
    }

    fn respond(&self, body: serde_json::Value) -> Response {
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<mlx_models::Error> for ApiError {
    /// Maps the model crate's errors: [`mlx_models::Error::Busy`] → 503, context overflow and
    /// invalid arguments, chat template and tokenizer failures on the request's input → 400,
    /// anything else → 500.
    fn from(e: mlx_models::Error) -> ApiError {
        use mlx_models::Error as E;
        match e {
            E::Busy(m) => ApiError::busy(format!("the server is busy: {m}; retry later")),
            E::InvalidSchema(_) => ApiError::bad_request(e.to_string()).with_code("invalid_schema"),
            E::ContextOverflow { .. } => {
                ApiError::bad_request(e.to_string()).with_code("context_length_exceeded")
            }
            E::InvalidArgument(_)
            | E::ChatTemplate(_)
            | E::TemplateLimit { .. }
            | E::Tokenizer(_) => ApiError::bad_request(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// An [`ApiError`] answered in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.respond(self.0.openai_body())
    }
}

impl<E: Into<ApiError>> From<E> for OpenAiError {
    fn from(e: E) -> OpenAiError {
        OpenAiError(e.into())
    }
}

/// An [`ApiError`] answered in Ollama's shape.
#[derive(Debug)]
pub struct OllamaError(pub ApiError);

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        self.0.respond(self.0.ollama_body())
    }
}

impl<E: Into<ApiError>> From<E> for OllamaError {
    fn from(e: E) -> OllamaError {
        OllamaError(e.into())
    }
}

/// Which API's shape a response takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `/v1/...` and the server's own endpoints.
    OpenAi,
    /// `/api/...`.
    Ollama,
}

impl Flavor {
    /// The flavor of a request path: `/api/...` is Ollama's, the rest OpenAI's.
    ///
    /// ```
    /// use mlx_server::error::Flavor;
    /// assert_eq!(Flavor::of_path("/api/chat"), Flavor::Ollama);
    /// assert_eq!(Flavor::of_path("/v1/models"), Flavor::OpenAi);
    /// ```
    pub fn of_path(path: &str) -> Flavor {
        if path == "/api" || path.starts_with("/api/") {
            Flavor::Ollama
        } else {
            Flavor::OpenAi
        }
    }

    /// `error` as a response in this flavor's shape.
    pub fn respond(self, error: ApiError) -> Response {
        match self {
            Flavor::OpenAi => OpenAiError(error).into_response(),
            Flavor::Ollama => OllamaError(error).into_response(),
        }
    }
}

/// Parses a JSON request body; malformed JSON and wrong types are 400 with serde's message
/// (which names the line and column, and the expected type).
///
/// ```
/// #[derive(Debug, serde::Deserialize)]
/// struct R { n: u32 }
/// let e = mlx_server::error::parse_json::<R>(br#"{"n": "x"}"#).unwrap_err();
/// assert_eq!(e.status.as_u16(), 400);
/// assert!(e.message.contains("invalid type"));
/// ```
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}
