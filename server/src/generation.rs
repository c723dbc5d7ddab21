//! One request's generation: submitted to the engine thread, its tokens turned into text
//! chunks on the async side.
//!
//! [`start`] submits the prompt and spawns a task (the driver) that receives the request's
//! [`SequenceEvent`]s, decodes them with a [`StreamingDetokenizer`], matches the stop strings
//! on the text ([`StopStrings`] holds back text that could be the start of one) and sends
//! [`Chunk`]s to the handler through a [`Generation`]. A stop string ends the sequence through
//! [`Engine::stop`], so it still finishes with its summary and its KV state stays reusable.
//! When the handler or its response stream is dropped (the client went away), the driver
//! notices the closed channel and cancels the sequence at once. The driver writes the
//! request's one log line when it ends.

use crate::engine::Engine;
use crate::error::ApiError;
use mlx_models::model::{FinishReason, GenerateParams};
use mlx_models::runtime::constraint::TokenConstraint;
use mlx_models::runtime::generate::StopStrings;
use mlx_models::runtime::scheduler::{GeneratedToken, SequenceEvent, SequenceRequest};
use mlx_models::text::{StreamingDetokenizer, Tokenizer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What to generate.
#[derive(Debug)]
pub struct GenerationRequest {
    /// Prompt token ids (special tokens included).
    pub prompt: Vec<u32>,
    /// Length and sampling.
    pub params: GenerateParams,
    /// Stop strings, matched on the decoded text (never part of the output).
    pub stop: Vec<String>,
    /// With `Some(n)`: each token's log-probability and the `n` most likely alternatives.
    pub logprobs: Option<usize>,
    /// Tokens allowed at each step (JSON mode, a schema, a tool call grammar).
    pub constraint: Option<Box<dyn TokenConstraint>>,
    /// Drop the prefix cache and MLX's buffer cache once the request ends (Ollama's
    /// `keep_alive: 0`).
    pub clear_cache_after: bool,
    /// Generate through end-of-sequence tokens up to the limit (benchmarks).
    pub ignore_eos: bool,
    /// Keep special tokens in the text (tool call formats that mark calls with them).
    pub keep_special_tokens: bool,
}

/// Why a generation ended, as the APIs say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence token, a stop string, or a complete constrained output.
    Stop,
    /// The token limit (`max_tokens`, `num_predict`, or the context) was reached.
    Length,
}

impl Finish {
    /// `stop` or `length`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// The figures of a finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Why it ended.
    pub finish: Finish,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of those, tokens whose KV state came from the prefix cache.
    pub cached_tokens: usize,
    /// Tokens generated (a final end-of-sequence token included).
    pub generated_tokens: usize,
    /// From the request's arrival to the first generated token.
    pub time_to_first_token: Duration,
    /// From the request's arrival to the end.
    pub total_time: Duration,
    /// The generated token ids (a final end-of-sequence token excluded).
    pub token_ids: Vec<u32>,
}

/// What the driver sends to the handler.
#[derive(Debug)]
pub enum Chunk {
    /// New text, and the tokens that completed it (their log-probabilities when asked for).
    Text {
        /// The text (may be empty when only tokens are reported).
        text: String,
        /// The tokens since the previous chunk.
        tokens: Vec<GeneratedToken>,
    },
    /// The generation ended.
    Done(Outcome),
    /// The generation failed after it started.
    Failed(ApiError),
}

/// A running generation: its chunks, in order, ending with [`Chunk::Done`] or
/// [`Chunk::Failed`]. Dropping it cancels the sequence.
#[derive(Debug)]
pub struct Generation {
    chunks: mpsc::Receiver<Chunk>,
}

impl Generation {
    /// The next chunk; `None` after the last one.
    pub async fn next(&mut self) -> Option<Chunk> {
        self.chunks.recv().await
    }

    /// Runs to the end: all the text, the tokens, and the outcome.
    pub async fn collect(mut self) -> Result<(String, Vec<GeneratedToken>, Outcome), ApiError> {
        let mut text = String::new();
        let mut tokens = Vec::new();
        while let Some(chunk) = self.next().await {
            match chunk {
                Chunk::Text { text: t, tokens: g } => {
                    text.push_str(&t);
                    tokens.extend(g);
                }
                Chunk::Done(outcome) => return Ok((text, tokens, outcome)),
                Chunk::Failed(e) => return Err(e),
            }
        }
        Err(ApiError::internal("the generation ended without a result"))
    }
}

/// Labels of the request's log line.
#[derive(Debug, Clone)]
pub struct RequestLabel {
    /// The response id (`chatcmpl-…`, `cmpl-…`, `ollama-…`).
    pub id: String,
    /// The endpoint path.
    pub endpoint: &'static str,
    /// When the request arrived.
    pub arrived: Instant,
}

/// Submits `request` to the engine and starts its driver. Errors: the scheduler's refusal
/// (503 busy, 400 context overflow or invalid argument).
pub async fn start(
    engine: &Engine,
    tokenizer: &Arc<Tokenizer>,
    request: GenerationRequest,
    label: RequestLabel,
) -> Result<Generation, ApiError> {
    let id = engine.next_id();
    let (events_tx, events) = mpsc::unbounded_channel();
    let prompt_tokens = request.prompt.len();
    let sequence = SequenceRequest {
        prompt: request.prompt,
        params: request.params,
        logprobs: request.logprobs,
        constraint: request.constraint,
        ignore_eos: request.ignore_eos,
    };
    engine.submit(id, sequence, events_tx).await?;
    let (chunks_tx, chunks) = mpsc::channel(64);
    let driver = Driver {
        engine: engine.clone(),
        id,
        label,
        prompt_tokens,
        out: chunks_tx,
        clear_cache_after: request.clear_cache_after,
    };
    let tokenizer = Arc::clone(tokenizer);
    let stop = request.stop;
    let skip_special = !request.keep_special_tokens;
    tokio::spawn(async move { driver.run(events, tokenizer, stop, skip_special).await });
    Ok(Generation { chunks })
}

/// The task between the engine's events and the handler.
struct Driver {
    engine: Engine,
    id: u64,
    label: RequestLabel,
    prompt_tokens: usize,
    out: mpsc::Sender<Chunk>,
    clear_cache_after: bool,
}

/// What the driver saw of the tokens.
#[derive(Default)]
struct Progress {
    ids: Vec<u32>,
    first_token: Option<Instant>,
    /// Tokens not yet sent with a chunk.
    pending: Vec<GeneratedToken>,
    /// A stop string matched: the sequence was asked to stop.
    stopped: bool,
}

impl Driver {
    async fn run(
        self,
        mut events: mpsc::UnboundedReceiver<SequenceEvent>,
        tokenizer: Arc<Tokenizer>,
        stop: Vec<String>,
        skip_special: bool,
    ) {
        let mut detok = StreamingDetokenizer::new(&tokenizer).skip_special_tokens(skip_special);
        let mut stops = StopStrings::new(&stop);
        let mut progress = Progress::default();
        let result = loop {
            let event = tokio::select! {
                biased;
                _ = self.out.closed() => {
                    self.engine.cancel(self.id);
                    break Err("client went away".to_string());
                }
                event = events.recv() => event,
            };
            match event {
                Some(SequenceEvent::Token(token)) => {
                    if progress.stopped {
                        continue;
                    }
                    progress.first_token.get_or_insert_with(Instant::now);
                    progress.ids.push(token.id);
                    let id = token.id;
                    progress.pending.push(token);
                    let piece = match detok.push(id) {
                        Ok(Some(piece)) => piece,
                        Ok(None) => continue,
                        Err(e) => {
                            self.engine.cancel(self.id);
                            break self.fail(ApiError::internal(e.to_string())).await;
                        }
                    };
                    let (text, hit) = stops.push(&piece);
                    if hit {
                        progress.stopped = true;
                        self.engine.stop(self.id);
                    }
                    if (!text.is_empty() || hit) && !self.send_text(text, &mut progress).await {
                        self.engine.cancel(self.id);
                        break Err("client went away".to_string());
                    }
                }
                Some(SequenceEvent::Finished(summary)) => {
                    if !progress.stopped {
                        let rest = match detok.finish() {
                            Ok(rest) => rest,
                            Err(e) => break self.fail(ApiError::internal(e.to_string())).await,
                        };
                        let (mut text, hit) = stops.push(&rest);
                        if hit {
                            progress.stopped = true;
                        } else {
                            text.push_str(&stops.finish());
                        }
                        if (!text.is_empty() || !progress.pending.is_empty())
                            && !self.send_text(text, &mut progress).await
                        {
                            break Err("client went away".to_string());
                        }
                    }
                    let finish = match (progress.stopped, summary.finish_reason) {
                        (false, FinishReason::Length) => Finish::Length,
                        _ => Finish::Stop,
                    };
                    let outcome = self.outcome(
                        finish,
                        summary.cached_tokens,
                        summary.generated_tokens,
                        &mut progress,
                    );
                    break self.finish(outcome).await;
                }
                Some(SequenceEvent::Failed(e)) => break self.fail(e.into()).await,
                None if progress.stopped => {
                    // The sequence ended on its own before the stop reached it.
                    let generated = progress.ids.len();
                    let outcome = self.outcome(Finish::Stop, 0, generated, &mut progress);
                    break self.finish(outcome).await;
                }
                None => {
                    break self
                        .fail(ApiError::internal("the engine dropped the request"))
                        .await
                }
            }
        };
        if self.clear_cache_after {
            self.engine.clear_cache();
        }
        match result {
            Ok(o) => tracing::info!(
                id = %self.label.id,
                endpoint = self.label.endpoint,
                prompt_tokens = o.prompt_tokens,
                cached_tokens = o.cached_tokens,
                generated_tokens = o.generated_tokens,
                ttft_ms = o.time_to_first_token.as_millis() as u64,
                total_ms = o.total_time.as_millis() as u64,
                finish_reason = o.finish.as_str(),
                "request done"
            ),
            Err(why) => tracing::info!(
                id = %self.label.id,
                endpoint = self.label.endpoint,
                prompt_tokens = self.prompt_tokens,
                generated_tokens = progress.ids.len(),
                total_ms = self.label.arrived.elapsed().as_millis() as u64,
                finish_reason = "aborted",
                reason = %why,
                "request ended early"
            ),
        }
    }

    fn outcome(
        &self,
        finish: Finish,
        cached_tokens: usize,
        generated_tokens: usize,
        progress: &mut Progress,
    ) -> Outcome {
        let now = Instant::now();
        Outcome {
            finish,
            prompt_tokens: self.prompt_tokens,
            cached_tokens,
            generated_tokens,
            time_to_first_token: progress.first_token.unwrap_or(now) - self.label.arrived,
            total_time: now - self.label.arrived,
            token_ids: std::mem::take(&mut progress.ids),
        }
    }

    /// Sends `text` with the pending tokens; false when the client is gone.
    async fn send_text(&self, text: String, progress: &mut Progress) -> bool {
        let tokens = std::mem::take(&mut progress.pending);
        self.out.send(Chunk::Text { text, tokens }).await.is_ok()
    }

    async fn finish(&self, outcome: Outcome) -> Result<Outcome, String> {
        let _ = self.out.send(Chunk::Done(outcome.clone())).await;
        Ok(outcome)
    }

    async fn fail(&self, e: ApiError) -> Result<Outcome, String> {
        let why = e.message.clone();
        let _ = self.out.send(Chunk::Failed(e)).await;
        Err(why)
    }
}
