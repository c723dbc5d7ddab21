//! [`Scheduler`]: continuous batching of independent sequences on one model.
//!
//! Each [`Scheduler::step`] does at most one prefill chunk of the oldest waiting request and one
//! decode step of every running sequence. Requests join the running batch between decode steps
//! and leave it when they finish or are cancelled; each keeps its own KV cache, position,
//! sampler (with its own seed) and optional [`TokenConstraint`]. The decode step is one
//! forward for the whole batch ([`CausalLm::forward_batch`]: the weights are read once per step,
//! not once per sequence). A request first looks for the longest prefix of its prompt in the
//! [`PrefixCache`] and prefills only the rest; a finished sequence leaves its KV state there.
//!
//! The scheduler is synchronous and owns the model: a server runs it on its own thread and
//! feeds it through channels.

use super::constraint::TokenConstraint;
use super::engine::check_token_ids;
use super::prefix_cache::{PrefixCache, PrefixCacheStats};
use super::sample::Sampler;
use crate::error::{Error, Result};
use crate::model::{token_ids, CausalLm, FinishReason, GenerateParams};
use crate::runtime::cache::KvCache;
use mlx_rs::{eval, memory, s, Array, Dtype};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A request's id, chosen by the caller.
pub type SequenceId = u64;

/// How the scheduler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Sequences decoded together at most; more wait.
    pub max_batch: usize,
    /// Requests waiting at most (running ones excluded); [`Scheduler::submit`] refuses more.
    pub max_waiting: usize,
    /// Prompt tokens per prefill forward pass.
    pub prefill_chunk: usize,
    /// Bytes of KV state the prefix cache may hold (0 turns it off).
    pub prefix_cache_bytes: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            max_batch: 16,
            max_waiting: 64,
            prefill_chunk: super::engine::DEFAULT_PREFILL_CHUNK,
            prefix_cache_bytes: 1 << 30,
        }
    }
}

/// What a sequence should generate.
#[derive(Debug)]
pub struct SequenceRequest {
    /// Prompt token ids (special tokens included as the tokenizer added them).
    pub prompt: Vec<u32>,
    /// Length, sampling and stop ids.
    pub params: GenerateParams,
    /// With `Some(n)`, every token comes with its log-probability and the `n` most likely
    /// alternatives.
    pub logprobs: Option<usize>,
    /// Tokens allowed at each step (a JSON schema, a grammar), if constrained.
    pub constraint: Option<Box<dyn TokenConstraint>>,
    /// Generate through the model's end-of-sequence tokens (they are reported as tokens)
    /// until `max_tokens` or a stop id of the params: fixed-length runs for benchmarks.
    pub ignore_eos: bool,
}

impl SequenceRequest {
    /// A request for `prompt` with `params`, no log-probabilities and no constraint.
    pub fn new(prompt: Vec<u32>, params: GenerateParams) -> SequenceRequest {
        SequenceRequest {
            prompt,
            params,
            logprobs: None,
            constraint: None,
            ignore_eos: false,
        }
    }
}

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    /// Its id.
    pub id: u32,
    /// `log p(id)` under the distribution it was drawn from (after the constraint's mask), when
    /// asked for.
    pub logprob: Option<f32>,
    /// The most likely tokens and their log-probabilities, most likely first, when asked for.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Figures of a finished sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequenceSummary {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of those, tokens whose KV state came from the prefix cache (not prefilled).
    pub cached_tokens: usize,
    /// Tokens generated (a final stop token included).
    pub generated_tokens: usize,
    /// From submission to the first generated token.
    pub time_to_first_token: Duration,
    /// From submission to the end.
    pub total_time: Duration,
}

/// What [`Scheduler::step`] reports about a sequence.
#[derive(Debug)]
pub enum SequenceEvent {
    /// A new token (stop tokens are not reported: the sequence finishes instead).
    Token(GeneratedToken),
    /// The sequence ended normally.
    Finished(SequenceSummary),
    /// The sequence failed (the others go on when they can).
    Failed(Error),
}

/// Counters of a [`Scheduler`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerStats {
    /// Sequences decoding.
    pub running: usize,
    /// Requests waiting (one may be in its prefill).
    pub waiting: usize,
    /// Decode steps run.
    pub decode_steps: u64,
    /// Tokens generated over all sequences.
    pub generated_tokens: u64,
    /// Prompt tokens prefilled (not served from the prefix cache).
    pub prefilled_tokens: u64,
    /// The prefix cache's counters.
    pub prefix_cache: PrefixCacheStats,
}

/// A request before it runs: its prompt is prefilled chunk by chunk.
#[derive(Debug)]
struct Waiting {
    id: SequenceId,
    request: SequenceRequest,
    sampler: Sampler,
    submitted: Instant,
    /// Set once its prefill started: the cache and the prompt tokens already in it.
    cache: Option<(KvCache, usize)>,
    cached_tokens: usize,
}

/// A sequence in the running batch.
#[derive(Debug)]
struct Running {
    id: SequenceId,
    cache: KvCache,
    /// Tokens whose KV state is in `cache`.
    tokens: Vec<u32>,
    /// The token the next step feeds.
    next_input: u32,
    prompt_tokens: usize,
    cached_tokens: usize,
    generated: usize,
    params: GenerateParams,
    sampler: Sampler,
    logprobs: Option<usize>,
    constraint: Option<Box<dyn TokenConstraint>>,
    ignore_eos: bool,
    submitted: Instant,
    first_token: Option<Instant>,
}

/// Continuous batching over one [`CausalLm`] (see the module docs).
pub struct Scheduler {
    model: Box<dyn CausalLm>,
    eos: Vec<u32>,
    context_length: usize,
    options: SchedulerOptions,
    waiting: VecDeque<Waiting>,
    running: Vec<Running>,
    prefix: PrefixCache,
    decode_steps: u64,
    generated_tokens: u64,
    prefilled_tokens: u64,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler over `model`, stopping sequences at the ids of `eos`, with prompts plus
    /// generated tokens bounded by `context_length`.
    pub fn new(
        model: Box<dyn CausalLm>,
        eos: Vec<u32>,
        context_length: usize,
        options: SchedulerOptions,
    ) -> Scheduler {
        Scheduler {
            model,
            eos,
            context_length,
            prefix: PrefixCache::new(options.prefix_cache_bytes),
            options: SchedulerOptions {
                max_batch: options.max_batch.max(1),
                prefill_chunk: options.prefill_chunk.max(1),
                ..options
            },
            waiting: VecDeque::new(),
            running: Vec::new(),
            decode_steps: 0,
            generated_tokens: 0,
            prefilled_tokens: 0,
        }
    }

    /// The model.
    pub fn model(&self) -> &dyn CausalLm {
        self.model.as_ref()
    }

    /// The options.
    pub fn options(&self) -> &SchedulerOptions {
        &self.options
    }

    /// Queues a request. Errors (nothing queued): an empty prompt, a token outside the
    /// vocabulary, invalid sampling parameters ([`Error::InvalidArgument`]), a prompt plus
    /// `max_tokens` beyond the context ([`Error::ContextOverflow`]), a full queue
    /// ([`Error::Busy`]), an id already in use.
    pub fn submit(&mut self, id: SequenceId, request: SequenceRequest) -> Result<()> {
        if self.waiting.len() >= self.options.max_waiting {
            return Err(Error::Busy(format!(
                "{} requests are already waiting",
                self.waiting.len()
            )));
        }
        if self.contains(id) {
            return Err(Error::InvalidArgument(format!(
                "sequence id {id} is already in use"
            )));
        }
        let prompt = &request.prompt;
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        check_token_ids(self.model.as_ref(), prompt)?;
        let max_tokens = request.params.max_tokens;
        if prompt.len().saturating_add(max_tokens) > self.context_length {
            return Err(Error::ContextOverflow {
                prompt: prompt.len(),
                requested: max_tokens,
                context: self.context_length,
            });
        }
        let sampler = Sampler::new(&request.params.sampling)?;
        self.waiting.push_back(Waiting {
            id,
            request,
            sampler,
            submitted: Instant::now(),
            cache: None,
            cached_tokens: 0,
        });
        Ok(())
    }

    /// Whether `id` is waiting or running.
    pub fn contains(&self, id: SequenceId) -> bool {
        self.waiting.iter().any(|w| w.id == id) || self.running.iter().any(|r| r.id == id)
    }

    /// Drops request `id` (waiting or running) and frees its cache at once; returns whether
    /// it was there.
    pub fn cancel(&mut self, id: SequenceId) -> bool {
        let before = self.waiting.len() + self.running.len();
        self.waiting.retain(|w| w.id != id);
        self.running.retain(|r| r.id != id);
        let found = self.waiting.len() + self.running.len() < before;
        if found && self.is_idle() {
            let _ = memory::clear_cache();
        }
        found
    }

    /// Ends request `id` early, as its caller decided (a stop string matched in its text):
    /// a running sequence finishes with [`FinishReason::Callback`] and, like any finished
    /// sequence, leaves its KV state in the prefix cache (so the next turn of a chat that was
    /// cut at a stop string still reuses it); its summary is returned. A waiting request is
    /// dropped as by [`cancel`](Self::cancel) and `None` is returned, as for an unknown id.
    pub fn stop(&mut self, id: SequenceId) -> Option<SequenceSummary> {
        let Some(at) = self.running.iter().position(|r| r.id == id) else {
            self.cancel(id);
            return None;
        };
        let r = self.running.remove(at);
        let summary = Self::finish(&mut self.prefix, r, FinishReason::Callback, Instant::now());
        Some(summary)
    }

    /// Whether nothing is waiting or running.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            running: self.running.len(),
            waiting: self.waiting.len(),
            decode_steps: self.decode_steps,
            generated_tokens: self.generated_tokens,
            prefilled_tokens: self.prefilled_tokens,
            prefix_cache: self.prefix.stats(),
        }
    }

    /// Drops every prefix cache entry (and MLX's buffer cache).
    pub fn clear_prefix_cache(&mut self) -> Result<()> {
        self.prefix.clear();
        memory::clear_cache()?;
        Ok(())
    }

    /// One round: a prefill chunk of the oldest waiting request (when the batch has room),
    /// then one decode step of every running sequence. Returns what happened to each sequence
    /// touched. An error of the model's forward pass fails every sequence in that pass (they
    /// are reported as [`SequenceEvent::Failed`] and dropped); `Err` is reserved for failures
    /// that leave the scheduler unusable.
    pub fn step(&mut self) -> Result<Vec<(SequenceId, SequenceEvent)>> {
        let mut events = Vec::new();
        if self.running.len() < self.options.max_batch {
            if let Some(front) = self.waiting.pop_front() {
                let id = front.id;
                match self.prefill_chunk(front) {
                    Ok(Some(waiting)) => self.waiting.push_front(waiting),
                    Ok(None) => {}
                    Err(e) => events.push((id, SequenceEvent::Failed(e))),
                }
            }
        }
        if !self.running.is_empty() {
            self.decode(&mut events);
        }
        if self.is_idle() {
            memory::clear_cache()?;
        }
        Ok(events)
    }

    /// Runs the next chunk of `w`'s prompt (after a prefix cache lookup on its first chunk);
    /// returns it while prompt tokens remain, or moves it to the running batch.
    fn prefill_chunk(&mut self, mut w: Waiting) -> Result<Option<Waiting>> {
        let prompt_len = w.request.prompt.len();
        let (mut cache, done) = match w.cache.take() {
            Some(state) => state,
            None => match self.prefix.lookup(&w.request.prompt)? {
                Some((n, cache)) => {
                    w.cached_tokens = n;
                    (cache, n)
                }
                None => (self.model.new_cache(), 0),
            },
        };
        // The last prompt token runs in the first decode step.
        let end = (done + self.options.prefill_chunk).min(prompt_len - 1);
        if end > done {
            let ids = token_ids(&w.request.prompt[done..end])?;
            let input = Array::from_slice(&ids, &[1, ids.len() as i32])?;
            self.model.forward(&input, &mut cache)?;
            eval(&cache.state())?;
            self.prefilled_tokens += (end - done) as u64;
        }
        if end < prompt_len - 1 {
            w.cache = Some((cache, end));
            return Ok(Some(w));
        }
        let mut tokens = w.request.prompt;
        let next_input = tokens.pop().unwrap_or_default();
        self.running.push(Running {
            id: w.id,
            cache,
            tokens,
            next_input,
            prompt_tokens: prompt_len,
            cached_tokens: w.cached_tokens,
            generated: 0,
            params: w.request.params,
            sampler: w.sampler,
            logprobs: w.request.logprobs,
            constraint: w.request.constraint,
            ignore_eos: w.request.ignore_eos,
            submitted: w.submitted,
            first_token: None,
        });
        Ok(None)
    }

    /// The summary of a sequence that ends now (`reason`), whose KV state goes to the prefix
    /// cache.
    fn finish(
        prefix: &mut PrefixCache,
        r: Running,
        reason: FinishReason,
        now: Instant,
    ) -> SequenceSummary {
        let summary = SequenceSummary {
            finish_reason: reason,
            prompt_tokens: r.prompt_tokens,
            cached_tokens: r.cached_tokens,
            generated_tokens: r.generated,
            time_to_first_token: r.first_token.unwrap_or(now) - r.submitted,
            total_time: now - r.submitted,
        };
        // A failed insert only loses the reuse.
        let _ = prefix.insert(r.tokens, r.cache);
        summary
    }

    /// One decode step of the running batch.
    fn decode(&mut self, events: &mut Vec<(SequenceId, SequenceEvent)>) {
        let inputs: Vec<u32> = self.running.iter().map(|r| r.next_input).collect();
        let logits = {
            let mut caches: Vec<&mut KvCache> =
                self.running.iter_mut().map(|r| &mut r.cache).collect();
            self.model.forward_batch(&inputs, &mut caches)
        };
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                for r in self.running.drain(..) {
                    events.push((
                        r.id,
                        SequenceEvent::Failed(Error::StepFailed(e.to_string())),
                    ));
                }
                return;
            }
        };
        self.decode_steps += 1;
        let picked = self.sample_all(&logits);
        let mut keep = Vec::with_capacity(self.running.len());
        for (mut r, picked) in self.running.drain(..).zip(picked) {
            let token = match picked {
                Ok(t) => t,
                Err(e) => {
                    events.push((r.id, SequenceEvent::Failed(e)));
                    continue;
                }
            };
            let now = Instant::now();
            r.first_token.get_or_insert(now);
            r.generated += 1;
            self.generated_tokens += 1;
            r.tokens.push(r.next_input);
            r.next_input = token.id;
            let stop = (!r.ignore_eos && self.eos.contains(&token.id))
                || r.params.stop_token_ids.contains(&token.id);
            let finish = if stop {
                Some(FinishReason::Stop)
            } else {
                let id = token.id;
                events.push((r.id, SequenceEvent::Token(token)));
                let done = match r.constraint.as_mut().map(|c| c.consume(id)) {
                    Some(Err(e)) => {
                        events.push((r.id, SequenceEvent::Failed(e)));
                        continue;
                    }
                    _ => r.constraint.as_ref().is_some_and(|c| c.is_finished()),
                };
                if done {
                    Some(FinishReason::Stop)
                } else if r.generated >= r.params.max_tokens {
                    Some(FinishReason::Length)
                } else {
                    None
                }
            };
            match finish {
                Some(reason) => {
                    let id = r.id;
                    let summary = Self::finish(&mut self.prefix, r, reason, now);
                    events.push((id, SequenceEvent::Finished(summary)));
                }
                None => keep.push(r),
            }
        }
        self.running = keep;
    }

    /// Samples every running sequence's next token from its row of `logits` (`[B, 1, V]`),
    /// evaluating all draws at once.
    fn sample_all(&mut self, logits: &Array) -> Vec<Result<GeneratedToken>> {
        let vocab = self.model.config().vocab_size;
        let mut draws: Vec<Result<(Array, Option<Array>)>> = Vec::new();
        for (b, r) in self.running.iter_mut().enumerate() {
            draws.push((|| {
                let mut row = logits.slice(s![b as i32..b as i32 + 1, 0, ..])?;
                if let Some(c) = r.constraint.as_mut() {
                    if let Some(mask) = c.mask()? {
                        let allowed = mask.to_array(row.shape()[1] as usize)?;
                        row = mlx_rs::ops::where_(
                            &allowed,
                            &row.astype(Dtype::Float32)?,
                            &Array::scalar(f32::NEG_INFINITY),
                        )?;
                    }
                }
                let recent = if r.sampler.params().uses_repetition_penalty() {
                    let context = r.sampler.params().repetition_context_size;
                    // The last `context` tokens fed so far (the cache's, then the next input),
                    // without copying the whole sequence at every step.
                    let skip = (r.tokens.len() + 1).saturating_sub(context);
                    let tail: Vec<u32> = r
                        .tokens
                        .iter()
                        .chain([&r.next_input])
                        .skip(skip)
                        .copied()
                        .collect();
                    Some(Array::from_slice(&tail, &[tail.len() as i32])?)
                } else {
                    None
                };
                let token = r.sampler.sample(&row, recent.as_ref())?;
                let logprobs = match r.logprobs {
                    Some(_) => {
                        let row = row.astype(Dtype::Float32)?;
                        Some(row.subtract(&row.logsumexp(-1, true)?)?)
                    }
                    None => None,
                };
                Ok((token, logprobs))
            })());
        }
        let lazy: Vec<&Array> = draws
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .flat_map(|(t, l)| std::iter::once(t).chain(l.as_ref()))
            .collect();
        if let Err(e) = eval(&lazy) {
            let e = Error::from(e);
            return draws
                .iter()
                .map(|_| Err(Error::StepFailed(e.to_string())))
                .collect();
        }
        draws
            .into_iter()
            .zip(&self.running)
            .map(|(d, r)| {
                let (token, logprobs) = d?;
                let id = token.reshape(&[-1])?.to_vec::<u32>()?[0];
                if id as usize >= vocab {
                    return Err(Error::InvalidArgument(format!(
                        "sampled token {id} is outside the vocabulary of {vocab}"
                    )));
                }
                let (logprob, top_logprobs) = match (logprobs, r.logprobs) {
                    (Some(l), Some(n)) => {
                        let l = l.reshape(&[-1])?.to_vec::<f32>()?;
                        (l.get(id as usize).copied(), top_n(&l, n))
                    }
                    _ => (None, Vec::new()),
                };
                Ok(GeneratedToken {
                    id,
                    logprob,
                    top_logprobs,
                })
            })
            .collect()
    }
}

/// The `n` largest entries of `logprobs` with their indices, largest first (ties by index).
fn top_n(logprobs: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..logprobs.len() as u32).collect();
    let key = |i: &u32| logprobs[*i as usize];
    let n = n.min(idx.len());
    if n == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(n - 1, |a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
    idx.truncate(n);
    idx.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
    idx.into_iter().map(|i| (i, key(&i))).collect()
}
