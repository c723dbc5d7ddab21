//! Sampling: parameters, logits processors and the [`Sampler`] (mlx-lm's `sample_utils`).
//!
//! The order is mlx-lm's: the repetition penalty rewrites the logits; the logits become
//! log-probabilities (`logits - logsumexp`); at temperature 0 the argmax is taken; otherwise the
//! filters run on the **un-tempered** log-probabilities in the order top-p → min-p → top-k, and
//! a token is drawn from `categorical(logprobs / temperature)`.

use crate::error::{Error, Result};
use mlx_rs::ops::where_;
use mlx_rs::{random, Array, Dtype};

/// How the next token is chosen. The default is greedy (temperature 0).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep tokens with probability ≥ `min_p` × the top probability (0 = off).
    pub min_p: f32,
    /// CTRL repetition penalty over the last `repetition_context_size` tokens (1 = off).
    pub repetition_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repetition_context_size: usize,
    /// Seed of the sampler's random stream (`None`: MLX's global generator).
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_context_size: 20,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Checks the ranges: `temperature ≥ 0`, `0 < top_p ≤ 1`, `0 ≤ min_p < 1`,
    /// `repetition_penalty > 0` (all finite).
    ///
    /// ```
    /// use mlx_models::runtime::sample::SamplingParams;
    /// assert!(SamplingParams::default().validate().is_ok());
    /// let bad = SamplingParams { top_p: 0.0, ..SamplingParams::default() };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.min_p >= 0.0 && self.min_p < 1.0) {
            return bad(format!("min_p must be in [0, 1), got {}", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    /// Whether the repetition penalty is on (≠ 1 over a non-empty context).
    pub fn uses_repetition_penalty(&self) -> bool {
        self.repetition_penalty != 1.0 && self.repetition_context_size > 0
    }
}

/// Logits as `[B, V]` (a 1-D `[V]` gets a batch axis), and whether one was added.
fn as_batch(logits: &Array) -> Result<(Array, bool)> {
    match logits.ndim() {
        1 => Ok((logits.expand_dims(&[0])?, true)),
        2 => Ok((logits.clone(), false)),
        _ => Err(Error::InvalidArgument(format!(
            "sampler: logits must be [V] or [B, V], got {:?}",
            logits.shape()
        ))),
    }
}

/// The CTRL repetition penalty: the logits of the `recent` tokens (1-D ids) become
/// `logit · penalty` where negative and `logit / penalty` otherwise. `logits` is `[V]` or
/// `[B, V]` (the same tokens for every row).
///
/// ```
/// use mlx_models::runtime::sample::apply_repetition_penalty;
/// use mlx_rs::Array;
/// let logits = Array::from_slice(&[2.0f32, -1.0, 3.0], &[3])?;
/// let recent = Array::from_slice(&[0u32, 1, 1], &[3])?;
/// let out = apply_repetition_penalty(&logits, &recent, 2.0)?;
/// assert_eq!(out.to_vec::<f32>()?, vec![1.0, -2.0, 3.0]);
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn apply_repetition_penalty(logits: &Array, recent: &Array, penalty: f32) -> Result<Array> {
    if recent.size() == 0 || penalty == 1.0 {
        return Ok(logits.clone());
    }
    let (batch, added) = as_batch(logits)?;
    let rows = batch.shape()[0];
    let idx = recent
        .reshape(&[1, -1])?
        .astype(Dtype::Int32)?
        .broadcast_to(&[rows, recent.size() as i32])?;
    let selected = batch.take_along_axis(&idx, -1)?;
    let penalized = where_(
        &selected.less(&Array::scalar(0.0f32).astype(selected.dtype())?)?,
        &selected.multiply(&Array::scalar(penalty).astype(selected.dtype())?)?,
        &selected.divide(&Array::scalar(penalty).astype(selected.dtype())?)?,
    )?;
    let out = batch.put_along_axis(&idx, &penalized, -1)?;
    Ok(if added { out.squeeze(0)? } else { out })
}

/// `-inf` of `like`'s dtype, for masking.
fn neg_inf(like: &Array) -> Result<Array> {
    Ok(Array::scalar(f32::NEG_INFINITY).astype(like.dtype())?)
}

/// Top-p (nucleus) filter on log-probabilities `[B, V]`: sorted ascending, a token is kept
/// when the cumulative probability up to and including it exceeds `1 - top_p` (so the
/// smallest set of most likely tokens whose mass reaches `top_p` survives); the rest become
/// `-inf`.
pub fn apply_top_p(logprobs: &Array, top_p: f32) -> Result<Array> {
    let (batch, added) = as_batch(logprobs)?;
    let probs = batch.exp()?;
    let order = batch.argsort(-1)?;
    let sorted = probs.take_along_axis(&order, -1)?;
    let cumulative = sorted.cumsum(-1, false, true)?;
    // Back to vocabulary order: scatter each cumulative value to its token.
    let cumulative = Array::zeros(&batch.shape(), cumulative.dtype())?.put_along_axis(
        &order,
        &cumulative,
        -1,
    )?;
    let keep = cumulative.greater(&Array::scalar(1.0 - top_p).astype(cumulative.dtype())?)?;
    let out = where_(&keep, &batch, &neg_inf(&batch)?)?;
    Ok(if added { out.squeeze(0)? } else { out })
}

/// Min-p filter on log-probabilities: keeps tokens with `logprob ≥ max + ln(min_p)` (the top
/// token always survives); the rest become `-inf`.
pub fn apply_min_p(logprobs: &Array, min_p: f32) -> Result<Array> {
    let threshold = logprobs
        .max(-1, true)?
        .add(&Array::scalar(min_p.ln()).astype(logprobs.dtype())?)?;
    Ok(where_(
        &logprobs.greater_equal(&threshold)?,
        logprobs,
        &neg_inf(logprobs)?,
    )?)
}

/// Top-k filter on log-probabilities: all but the `top_k` largest become `-inf` (no-op when
/// `top_k` is 0 or at least the vocabulary size).
pub fn apply_top_k(logprobs: &Array, top_k: usize) -> Result<Array> {
    let vocab = *logprobs.shape().last().unwrap_or(&0) as usize;
    if top_k == 0 || top_k >= vocab {
        return Ok(logprobs.clone());
    }
    let (batch, added) = as_batch(logprobs)?;
    let k = top_k as i32;
    let order = batch.negative()?.argpartition(k - 1, -1)?;
    let drop = order.slice(mlx_rs::s![.., k..])?;
    let out = batch.put_along_axis(&drop, &neg_inf(&batch)?, -1)?;
    Ok(if added { out.squeeze(0)? } else { out })
}

/// A sampler for one generation: the parameters and, with a seed, its own key stream (the key
/// is split at every draw, so the same seed gives the same sequence).
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    key: Option<Array>,
}

impl Sampler {
    /// A sampler for `params` (validated first).
    pub fn new(params: &SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let key = match params.seed {
            Some(seed) => Some(random::key(seed)?),
            None => None,
        };
        Ok(Sampler {
            params: params.clone(),
            key,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Chooses the next token from `logits` (`[V]` or `[B, V]`), after the repetition penalty
    /// over `recent` (1-D token ids; the caller keeps it to the last
    /// `repetition_context_size`). Returns `uint32` ids, `[]` or `[B]`. Lazy: nothing is
    /// evaluated, so the draw can be chained into the next step's graph.
    ///
    /// ```
    /// use mlx_models::runtime::sample::{Sampler, SamplingParams};
    /// use mlx_rs::Array;
    /// let mut greedy = Sampler::new(&SamplingParams::default())?;
    /// let logits = Array::from_slice(&[0.1f32, 2.0, -1.0], &[3])?;
    /// assert_eq!(greedy.sample(&logits, None)?.item::<u32>()?, 1);
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn sample(&mut self, logits: &Array, recent: Option<&Array>) -> Result<Array> {
        let p = &self.params;
        if !(1..=2).contains(&logits.ndim()) {
            return Err(Error::InvalidArgument(format!(
                "sampler: logits must be [V] or [B, V], got {:?}",
                logits.shape()
            )));
        }
        let mut logits = logits.clone();
        if let Some(recent) = recent {
            if p.uses_repetition_penalty() {
                logits = apply_repetition_penalty(&logits, recent, p.repetition_penalty)?;
            }
        }
        if p.temperature == 0.0 {
            return Ok(logits.argmax(-1, false)?);
        }
        let logits = if logits.dtype() == Dtype::Float32 {
            logits
        } else {
            logits.astype(Dtype::Float32)?
        };
        let mut logprobs = logits.subtract(&logits.logsumexp(-1, true)?)?;
        if p.top_p > 0.0 && p.top_p < 1.0 {
            logprobs = apply_top_p(&logprobs, p.top_p)?;
        }
        if p.min_p > 0.0 {
            logprobs = apply_min_p(&logprobs, p.min_p)?;
        }
        if p.top_k > 0 {
            logprobs = apply_top_k(&logprobs, p.top_k)?;
        }
        let scaled = logprobs.multiply(&Array::scalar(1.0 / p.temperature))?;
        let key = match self.key.take() {
            Some(key) => {
                let (next, draw) = random::split(&key)?;
                self.key = Some(next);
                Some(draw)
            }
            None => None,
        };
        Ok(random::categorical(&scaled, -1, key.as_ref())?)
    }
}
