//! Streamed responses: a [`Generation`]'s chunks framed as server-sent events (OpenAI:
//! `data: {...}\n\n` … `data: [DONE]\n\n`) or as newline-delimited JSON (Ollama).
//!
//! The body owns the generation: when the client disconnects, the server drops the body, the
//! generation with it, and the driver cancels the sequence.
//!
//! An SSE stream that has nothing to send for a while (a request waiting in the queue, a long
//! prompt being prefilled) sends a comment line, `: keep-alive`, every
//! [`DEFAULT_SSE_KEEP_ALIVE`] (`--sse-keep-alive`), so that proxies and clients with read
//! timeouts keep the connection; SSE clients ignore comments. NDJSON has no comment syntax, and
//! Ollama's clients parse every line as JSON, so Ollama streams send nothing while waiting.

use crate::error::ApiError;
use crate::generation::{Chunk, Generation, Outcome};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use mlx_models::runtime::scheduler::GeneratedToken;
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;

/// How long an SSE stream stays silent before it sends a `: keep-alive` comment.
pub const DEFAULT_SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The comment an SSE stream sends while it waits.
pub const SSE_KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// How one API turns chunks into JSON messages.
pub trait StreamFormat: Send + 'static {
    /// Messages sent before any text (e.g. the assistant role).
    fn start(&mut self) -> Vec<Value> {
        Vec::new()
    }
    /// Messages for new text and the tokens behind it.
    fn text(&mut self, text: String, tokens: Vec<GeneratedToken>) -> Vec<Value>;
    /// The closing messages.
    fn done(&mut self, outcome: Outcome) -> Vec<Value>;
    /// Messages for a failure after the stream started.
    fn failed(&mut self, error: ApiError) -> Vec<Value>;
}

/// How messages are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `data: <json>\n\n` per message, then `data: [DONE]\n\n`.
    Sse,
    /// `<json>\n` per message.
    Ndjson,
}

impl Framing {
    /// `message` framed.
    ///
    /// ```
    /// use mlx_server::streaming::Framing;
    /// let m = serde_json::json!({"a": 1});
    /// assert_eq!(&Framing::Sse.frame(&m)[..], b"data: {\"a\":1}\n\n");
    /// assert_eq!(&Framing::Ndjson.frame(&m)[..], b"{\"a\":1}\n");
    /// ```
    pub fn frame(self, message: &Value) -> Bytes {
        match self {
            Framing::Sse => Bytes::from(format!("data: {message}\n\n")),
            Framing::Ndjson => Bytes::from(format!("{message}\n")),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::Sse => "text/event-stream",
            Framing::Ndjson => "application/x-ndjson",
        }
    }
}

/// The stream's state between two polls.
struct State<F> {
    generation: Option<Generation>,
    format: F,
    framing: Framing,
    queue: VecDeque<Bytes>,
    /// SSE only: the silence after which a keep-alive comment goes out.
    keep_alive: Option<Duration>,
}

impl<F: StreamFormat> State<F> {
    fn push(&mut self, messages: Vec<Value>) {
        for m in &messages {
            self.queue.push_back(self.framing.frame(m));
        }
    }

    fn end(&mut self, messages: Vec<Value>) {
        self.push(messages);
        if self.framing == Framing::Sse {
            self.queue
                .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        self.generation = None;
    }
}

/// A streamed 200 response of `generation`'s chunks, formatted by `format`; an SSE stream
/// sends a keep-alive comment after each `keep_alive` of silence (`None`: never).
pub fn response<F: StreamFormat>(
    generation: Generation,
    format: F,
    framing: Framing,
    keep_alive: Option<Duration>,
) -> Response {
    let mut state = State {
        generation: Some(generation),
        format,
        framing,
        queue: VecDeque::new(),
        keep_alive: keep_alive.filter(|d| framing == Framing::Sse && !d.is_zero()),
    };
    let start = state.format.start();
    state.push(start);
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(bytes) = state.queue.pop_front() {
                return Some((Ok::<Bytes, std::convert::Infallible>(bytes), state));
            }
            let generation = state.generation.as_mut()?;
            let next = match state.keep_alive {
                // `Generation::next` is a channel receive: cancelling it loses nothing.
                Some(every) => match tokio::time::timeout(every, generation.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        state.queue.push_back(Bytes::from_static(SSE_KEEP_ALIVE));
                        continue;
                    }
                },
                None => generation.next().await,
            };
            match next {
                Some(Chunk::Text { text, tokens }) => {
                    let messages = state.format.text(text, tokens);
                    state.push(messages);
                }
                Some(Chunk::Done(outcome)) => {
                    let messages = state.format.done(outcome);
                    state.end(messages);
                }
                Some(Chunk::Failed(e)) => {
                    let messages = state.format.failed(e);
                    state.end(messages);
                }
                None => {
                    let messages = state
                        .format
                        .failed(ApiError::internal("the generation ended without a result"));
                    state.end(messages);
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
