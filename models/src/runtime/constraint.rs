//! Constrained decoding: a [`TokenConstraint`] says which tokens may come next (a grammar, a
//! JSON schema, a forced tool call), and the samplers only pick among them.

use crate::error::Result;
use mlx_rs::Array;

/// Which tokens may come next: a bitmask over the vocabulary, bit `t % 32` of word `t / 32` set
/// where token `t` is allowed (as llguidance and the other grammar engines lay it out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMask {
    words: Vec<u32>,
}

impl TokenMask {
    /// A mask from its words (bit `t % 32` of word `t / 32` for token `t`).
    pub fn from_words(words: Vec<u32>) -> TokenMask {
        TokenMask { words }
    }

    /// The words of the mask.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Whether token `t` is allowed (tokens beyond the mask are not).
    ///
    /// ```
    /// use mlx_models::runtime::constraint::TokenMask;
    /// let mask = TokenMask::from_words(vec![0b101]);
    /// assert!(mask.allows(0) && !mask.allows(1) && mask.allows(2) && !mask.allows(40));
    /// ```
    pub fn allows(&self, t: u32) -> bool {
        self.words
            .get((t / 32) as usize)
            .is_some_and(|w| w >> (t % 32) & 1 == 1)
    }

    /// The mask as a boolean `[vocab]` array (`true` where allowed), for `where`. Built a
    /// word at a time: a grammar's masks are mostly empty words, skipped whole.
    pub fn to_array(&self, vocab: usize) -> Result<Array> {
        Ok(Array::from_slice(&self.to_bools(vocab), &[vocab as i32])?)
    }

    /// [`Self::allows`] for tokens `0..vocab`.
    fn to_bools(&self, vocab: usize) -> Vec<bool> {
        let mut allowed = vec![false; vocab];
        for (chunk, &word) in allowed.chunks_mut(32).zip(&self.words) {
            if word == 0 {
                continue;
            }
            for (bit, slot) in chunk.iter_mut().enumerate() {
                *slot = word >> bit & 1 == 1;
            }
        }
        allowed
    }
}

/// A constraint on what a sequence may generate, consulted before each sampled token.
///
/// The scheduler calls [`TokenConstraint::mask`] before sampling, masks the logits with it, then
/// [`TokenConstraint::consume`] with the token it picked. A constraint whose grammar is complete
/// ends the sequence ([`TokenConstraint::is_finished`]).
pub trait TokenConstraint: Send + std::fmt::Debug {
    /// The tokens allowed next; `None` when any token is.
    fn mask(&mut self) -> Result<Option<TokenMask>>;

    /// Advances past `token` (one the last mask allowed).
    fn consume(&mut self, token: u32) -> Result<()>;

    /// Whether the constrained output is complete: nothing more may be generated (the
    /// sequence stops as at an end-of-sequence token).
    fn is_finished(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bools_are_allows_token_by_token() {
        let words = vec![0, u32::MAX, 0x8000_0001, 0, 0xdead_beef, 7];
        let mask = TokenMask::from_words(words);
        // Vocabularies shorter than, equal to, and longer than the mask, and not whole words.
        for vocab in [0, 1, 33, 70, 150, 192, 200, 1000] {
            let got = mask.to_bools(vocab);
            assert_eq!(got.len(), vocab);
            for (t, &b) in got.iter().enumerate() {
                assert_eq!(b, mask.allows(t as u32), "token {t} of {vocab}");
            }
        }
        // By hand: word 2 = bits 0 and 31 (tokens 64 and 95); word 5 = tokens 160..163.
        let got = mask.to_bools(192);
        let allowed: Vec<usize> = (0..192)
            .filter(|&t| got[t] && !(32..64).contains(&t))
            .collect();
        let beef: Vec<usize> = (0..32)
            .filter(|b| 0xdead_beef_u32 >> b & 1 == 1)
            .map(|b| 128 + b)
            .collect();
        let mut want = vec![64, 95];
        want.extend(beef);
        want.extend([160, 161, 162]);
        assert_eq!(allowed, want);
    }
}
