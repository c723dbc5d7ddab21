//! What every engine does with each generated token, so that their figures mean the same:
//! the clock ([`GenerationClock`]: prefill up to the first token, decode from the first token
//! to the last) and the stop rules ([`stop_reason`]).

use crate::error::Result;
use crate::model::{FinishReason, GenerateParams, GenerationStats};
use std::time::Instant;

/// Times a generation into [`GenerationStats`].
///
/// ```
/// use mlx_models::model::{GenerateParams, GenerationStats};
/// use mlx_models::runtime::clock::GenerationClock;
/// let mut stats = GenerationStats::begin(&[1, 2, 3], &GenerateParams::default(), 10, 512)?;
/// let mut clock = GenerationClock::start();
/// for _ in 0..3 {
///     clock.token(&mut stats, 3);
/// }
/// assert_eq!(stats.generation_tokens, 3);
/// assert!(stats.prompt_tps > 0.0 && stats.generation_tps > 0.0);
/// # Ok::<(), mlx_models::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GenerationClock {
    start: Instant,
    first: Option<Instant>,
}

impl GenerationClock {
    /// Starts the clock: prefill begins now.
    pub fn start() -> GenerationClock {
        GenerationClock {
            start: Instant::now(),
            first: None,
        }
    }

    /// Records one generated token, now: the first ends prefill (`prompt_tps` = `prefilled`
    /// tokens over the time since [`GenerationClock::start`]); each later one extends decode
    /// (`generation_tps` = the tokens after the first over the time since the first).
    pub fn token(&mut self, stats: &mut GenerationStats, prefilled: usize) {
        let now = Instant::now();
        let first = *self.first.get_or_insert_with(|| {
            stats.prompt_tps = prefilled as f64 / now.duration_since(self.start).as_secs_f64();
            now
        });
        stats.generation_tokens += 1;
        if stats.generation_tokens > 1 {
            stats.generation_tps =
                (stats.generation_tokens - 1) as f64 / now.duration_since(first).as_secs_f64();
        }
    }
}

/// The stop rules for a new `token`: an end-of-sequence id (`eos`) or one of
/// `params.stop_token_ids` stops without passing it on ([`FinishReason::Stop`]); otherwise it
/// goes to `on_token`, whose `Ok(false)` stops ([`FinishReason::Callback`]). `None`: go on
/// (the length limit is the caller's).
///
/// ```
/// use mlx_models::model::{FinishReason, GenerateParams};
/// use mlx_models::runtime::clock::stop_reason;
/// let params = GenerateParams::default();
/// let mut seen = Vec::new();
/// let mut keep = |t| { seen.push(t); Ok(true) };
/// assert_eq!(stop_reason(2, &[2], &params, &mut keep)?, Some(FinishReason::Stop));
/// assert_eq!(stop_reason(5, &[2], &params, &mut keep)?, None);
/// assert_eq!(seen, [5]);
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn stop_reason(
    token: u32,
    eos: &[u32],
    params: &GenerateParams,
    on_token: &mut dyn FnMut(u32) -> Result<bool>,
) -> Result<Option<FinishReason>> {
    if eos.contains(&token) || params.stop_token_ids.contains(&token) {
        return Ok(Some(FinishReason::Stop));
    }
    Ok((!on_token(token)?).then_some(FinishReason::Callback))
}
