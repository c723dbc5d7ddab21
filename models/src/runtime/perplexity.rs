//! Perplexity the llama.cpp way (`llama-perplexity`), so numbers compare across engines.
//!
//! The text is tokenized once (special tokens as the tokenizer defines them); window `i` is
//! `tokens[i·N .. (i+1)·N]`; when the tokenizer adds BOS, the first token of every window is
//! overwritten with BOS; each window is evaluated alone from an empty state, and positions
//! `j = N/2 ..= N−2` are scored predicting token `j + 1` (`N/2 − 1` tokens per window).
//! PPL = exp(mean negative log-likelihood over all scored tokens).

use crate::error::{Error, Result};
use crate::model::LanguageModel;

/// The smallest window: N/2 … N−2 must hold at least one position.
pub const MIN_WINDOW: usize = 4;

/// Perplexity of `text` under `model` with windows of `ctx` tokens; `chunks` = use only the
/// first K windows. Returns `(ppl, scored_tokens)`.
///
/// Errors: `ctx` below [`MIN_WINDOW`] or `chunks == Some(0)` ([`Error::InvalidArgument`]), a
/// text shorter than one window, `ctx` above the model's context length
/// ([`Error::ContextOverflow`]), tokenizer errors.
pub fn perplexity(
    model: &mut dyn LanguageModel,
    text: &str,
    ctx: usize,
    chunks: Option<usize>,
) -> Result<(f64, usize)> {
    let tokenizer = model.tokenizer();
    let tokens = tokenizer.encode(text, true)?;
    let bos = if tokenizer.adds_bos() {
        tokenizer.bos_token_id()
    } else {
        None
    };
    perplexity_of_tokens(model, &tokens, bos, ctx, chunks)
}

/// [`perplexity`] over already tokenized text; `bos` is the id written at the start of every
/// window (`None` when the tokenizer adds no BOS).
pub fn perplexity_of_tokens(
    model: &mut dyn LanguageModel,
    tokens: &[u32],
    bos: Option<u32>,
    ctx: usize,
    chunks: Option<usize>,
) -> Result<(f64, usize)> {
    if ctx < MIN_WINDOW {
        return Err(Error::InvalidArgument(format!(
            "perplexity: the window must be at least {MIN_WINDOW} tokens, got {ctx}"
        )));
    }
    if chunks == Some(0) {
        return Err(Error::InvalidArgument(
            "perplexity: --chunks must be positive".into(),
        ));
    }
    if ctx > model.context_length() {
        return Err(Error::ContextOverflow {
            prompt: ctx,
            requested: 0,
            context: model.context_length(),
        });
    }
    let available = tokens.len() / ctx;
    if available == 0 {
        return Err(Error::InvalidArgument(format!(
            "perplexity: the text has {} tokens, fewer than one window of {ctx}",
            tokens.len()
        )));
    }
    let windows = chunks.map_or(available, |k| k.min(available));
    let first = ctx / 2;
    let mut nll = 0.0f64;
    let mut count = 0usize;
    for i in 0..windows {
        let mut window = tokens[i * ctx..(i + 1) * ctx].to_vec();
        if let Some(bos) = bos {
            window[0] = bos;
        }
        let lp = model.token_log_probs(&window)?;
        if lp.len() != ctx - 1 {
            return Err(Error::InvalidArgument(format!(
                "perplexity: the model returned {} log-probabilities for {ctx} tokens",
                lp.len()
            )));
        }
        for &l in &lp[first..=ctx - 2] {
            nll -= f64::from(l);
            count += 1;
        }
    }
    Ok(((nll / count as f64).exp(), count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GenerateParams, GenerationStats};
    use crate::text::Tokenizer;

    /// log p(next | prefix) = −(next mod 3 + 1) / 4 at every position; records the windows.
    struct Fake {
        seen: Vec<Vec<u32>>,
    }

    impl LanguageModel for Fake {
        fn describe(&self) -> String {
            "fake".into()
        }
        fn tokenizer(&self) -> &Tokenizer {
            unreachable!("perplexity_of_tokens does not tokenize")
        }
        fn eos_token_ids(&self) -> &[u32] {
            &[]
        }
        fn context_length(&self) -> usize {
            16
        }
        fn set_eos_token_ids(&mut self, _: Vec<u32>) {}
        fn generate(
            &mut self,
            _: &[u32],
            _: &GenerateParams,
            _: &mut dyn FnMut(u32) -> Result<bool>,
        ) -> Result<GenerationStats> {
            unreachable!("not used")
        }
        fn token_log_probs(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
            self.seen.push(tokens.to_vec());
            Ok(tokens[1..]
                .iter()
                .map(|&t| -((t % 3) as f32 + 1.0) / 4.0)
                .collect())
        }
    }

    #[test]
    fn windows_bos_and_scored_positions_follow_llama_cpp() {
        // 14 tokens 0..14, windows of 6 → 2 windows (12 tokens), scored j = 3, 4 → next tokens
        // at 4, 5 of each window: window 0 = [9,1,2,3,4,5] → 4, 5; window 1 = [9,7,..,11] → 10, 11.
        // NLL terms: (4%3+1)/4 = 0.5, (5%3+1)/4 = 0.75, (10%3+1)/4 = 0.5, (11%3+1)/4 = 0.75.
        let tokens: Vec<u32> = (0..14).collect();
        let mut fake = Fake { seen: Vec::new() };
        let (ppl, count) = perplexity_of_tokens(&mut fake, &tokens, Some(9), 6, None).unwrap();
        assert_eq!(count, 4);
        assert!((ppl - 0.625f64.exp()).abs() < 1e-9, "{ppl}");
        assert_eq!(
            fake.seen,
            vec![vec![9, 1, 2, 3, 4, 5], vec![9, 7, 8, 9, 10, 11]]
        );

        // No BOS, first window only: scores 4 → 0.5 and 5 → 0.75 again.
        let mut fake = Fake { seen: Vec::new() };
        let (ppl, count) = perplexity_of_tokens(&mut fake, &tokens, None, 6, Some(1)).unwrap();
        assert_eq!((count, fake.seen.len()), (2, 1));
        assert_eq!(fake.seen[0][0], 0);
        assert!((ppl - 0.625f64.exp()).abs() < 1e-9);

        // N = 7 (odd): scored j = 3, 4, 5 → next tokens 4, 5, 6: (0.5 + 0.75 + 0.25) / 3 = 0.5.
        let mut fake = Fake { seen: Vec::new() };
        let (ppl, count) = perplexity_of_tokens(&mut fake, &tokens, None, 7, Some(1)).unwrap();
        assert_eq!(count, 3);
        assert!((ppl - 0.5f64.exp()).abs() < 1e-9);
    }

    #[test]
    fn bad_windows_are_errors() {
        let tokens: Vec<u32> = (0..10).collect();
        let mut fake = Fake { seen: Vec::new() };
        for (ctx, chunks) in [(3, None), (6, Some(0)), (11, None), (32, None)] {
            assert!(
                perplexity_of_tokens(&mut fake, &tokens, None, ctx, chunks).is_err(),
                "{ctx}"
            );
        }
        assert!(matches!(
            perplexity_of_tokens(&mut fake, &tokens, None, 32, None),
            Err(Error::ContextOverflow { .. })
        ));
    }
}
