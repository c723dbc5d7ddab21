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

    /// The mask as a boolean `[vocab]` array (`true` where allowed), for `where`.
    pub fn to_array(&self, vocab: usize) -> Result<Array> {
        let allowed: Vec<bool> = (0..vocab as u32).map(|t| self.allows(t)).collect();
        Ok(Array::from_slice(&allowed, &[vocab as i32])?)
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
