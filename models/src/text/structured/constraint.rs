//! [`GrammarConstraint`]: one request's llguidance matcher behind the
//! [`TokenConstraint`] seam.

use crate::runtime::constraint::{TokenConstraint, TokenMask};
use crate::{Error, Result};
use llguidance::Matcher;

/// The token masks of one [`Grammar`](super::Grammar) for one sequence, made by
/// [`GrammarCompiler::compile`](super::GrammarCompiler::compile).
///
/// The end-of-sequence tokens are allowed exactly where the grammar accepts the text so far;
/// [`is_finished`](TokenConstraint::is_finished) turns true once the grammar can only stop
/// (nothing may follow) or an end-of-sequence token was consumed. Once finished, the mask
/// allows only the end-of-sequence tokens.
pub struct GrammarConstraint {
    matcher: Matcher,
    /// The end-of-sequence ids (consumed without complaint once finished).
    eos: Vec<u32>,
}

impl std::fmt::Debug for GrammarConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarConstraint")
            .field("stopped", &self.matcher.is_stopped())
            .field("error", &self.matcher.get_error())
            .finish()
    }
}

impl GrammarConstraint {
    pub(crate) fn new(matcher: Matcher, eos: Vec<u32>) -> GrammarConstraint {
        GrammarConstraint { matcher, eos }
    }

    /// Whether the text so far is complete for the grammar (an end-of-sequence token may come
    /// next). Errors: [`Error::Constraint`] after an engine error.
    pub fn is_accepting(&mut self) -> Result<bool> {
        self.matcher.is_accepting().map_err(engine_error)
    }

    /// How many of `tokens` the grammar allows in a row from here, without consuming them
    /// (for checking a forced or drafted continuation). Errors: [`Error::Constraint`] after an
    /// engine error.
    pub fn validate_tokens(&mut self, tokens: &[u32]) -> Result<usize> {
        self.matcher.validate_tokens(tokens).map_err(engine_error)
    }
}

fn engine_error(e: impl std::fmt::Display) -> Error {
    Error::Constraint(e.to_string())
}

impl TokenConstraint for GrammarConstraint {
    fn mask(&mut self) -> Result<Option<TokenMask>> {
        let mask = self.matcher.compute_mask_or_eos().map_err(engine_error)?;
        Ok(Some(TokenMask::from_words(mask.as_slice().to_vec())))
    }

    /// An end-of-sequence token after the grammar finished is accepted (and changes nothing).
    /// Errors: [`Error::Constraint`] for a token the grammar does not allow here (the
    /// constraint is then unusable).
    fn consume(&mut self, token: u32) -> Result<()> {
        if self.matcher.is_stopped() && !self.matcher.is_error() && self.eos.contains(&token) {
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| Error::Constraint(format!("token {token} does not fit the grammar: {e}")))
    }

    fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}
