//! Structured output: generation constrained to a JSON schema, to any JSON object, or to a
//! Lark-like grammar (forced tool calls), with [llguidance] computing the token masks.
//!
//! - [`GrammarCompiler`]: built once per model from its [`Tokenizer`] (a trie of every
//!   token's bytes, [`Tokenizer::token_bytes`], special tokens kept apart from text, the
//!   end-of-sequence ids); cheap to clone and share across requests and threads.
//! - [`Grammar`]: what one request asks for, read from OpenAI's `response_format` or
//!   Ollama's `format`.
//! - [`GrammarConstraint`]: one request's matcher, a
//!   [`TokenConstraint`](crate::runtime::constraint::TokenConstraint) the sampler consults
//!   before each token.
//!
//! JSON follows llguidance's defaults: any JSON whitespace between items (a schema's
//! `"x-guidance"` object can change that, e.g. `{"whitespace_flexible": false}`),
//! properties in the schema's order.
//!
//! ```
//! use mlx_models::runtime::constraint::TokenConstraint;
//! use mlx_models::text::structured::{Grammar, GrammarCompiler};
//! use mlx_models::text::Tokenizer;
//! # fn f(tokenizer: &Tokenizer) -> mlx_models::Result<()> {
//! let compiler = GrammarCompiler::new(tokenizer, &tokenizer.eos_token_ids())?; // once per model
//! let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}});
//! let mut constraint = compiler.compile(&Grammar::JsonSchema(schema))?; // once per request
//! for token in tokenizer.encode("{\"n\": 42}", false)? {
//!     let mask = constraint.mask()?.expect("a grammar always masks");
//!     assert!(mask.allows(token));
//!     constraint.consume(token)?;
//! }
//! assert!(constraint.is_finished());
//! # Ok(())
//! # }
//! ```
//!
//! [llguidance]: https://github.com/guidance-ai/llguidance

mod constraint;
mod grammar;
mod vocab;

pub use constraint::GrammarConstraint;
pub use grammar::Grammar;

use crate::text::Tokenizer;
use crate::{Error, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use std::sync::Arc;
use toktrie::TokEnv;
use vocab::VocabEnv;

/// Compiles [`Grammar`]s into [`GrammarConstraint`]s over one tokenizer's vocabulary. Build it
/// once per model; clones share it.
#[derive(Clone)]
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
    eos: Vec<u32>,
    vocab_size: usize,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("vocab_size", &self.vocab_size)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl GrammarCompiler {
    /// The compiler of `tokenizer`'s vocabulary, generation ending at `eos_ids` (the
    /// model's end-of-sequence ids: [`Tokenizer::eos_token_ids`] plus those of its
    /// `generation_config.json`; empty: the tokenizer's own).
    ///
    /// Walks the whole vocabulary: in release builds on a 2-core x86, 0.14 s for SmolLM2's
    /// 49k tokens, 0.74 s for Gemma 3's 262k (a compile then takes under a millisecond, and
    /// a mask and a step some 20 µs for a small JSON schema).
    ///
    /// Errors: [`Error::InvalidArgument`] without any end-of-sequence id, or with one outside
    /// the vocabulary; [`Error::Tokenizer`] when the grammar engine refuses the vocabulary.
    pub fn new(tokenizer: &Tokenizer, eos_ids: &[u32]) -> Result<GrammarCompiler> {
        let eos = if eos_ids.is_empty() {
            tokenizer.eos_token_ids()
        } else {
            eos_ids.to_vec()
        };
        let env = VocabEnv::new(tokenizer, &eos)?;
        let env: TokEnv = Arc::new(env);
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::Tokenizer(format!("grammar engine: {e}")))?;
        factory.quiet();
        Ok(GrammarCompiler {
            factory: Arc::new(factory),
            eos,
            vocab_size: tokenizer.vocab_size(),
        })
    }

    /// The number of tokens the masks cover (the tokenizer's vocabulary; logits beyond it are
    /// never allowed).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The end-of-sequence ids the constraints allow where the grammar accepts.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos
    }

    /// A fresh constraint for one sequence.
    ///
    /// Errors: [`Error::InvalidSchema`] for a schema or grammar llguidance cannot compile (a
    /// malformed schema, an unknown special token, a Lark syntax error).
    pub fn compile(&self, grammar: &Grammar) -> Result<GrammarConstraint> {
        let top = match grammar {
            Grammar::JsonSchema(schema) => TopLevelGrammar::from_json_schema(schema.clone()),
            Grammar::JsonObject => {
                TopLevelGrammar::from_json_schema(serde_json::json!({"type": "object"}))
            }
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        };
        let parser = self
            .factory
            .create_parser(top)
            .map_err(|e| Error::InvalidSchema(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::InvalidSchema(e));
        }
        Ok(GrammarConstraint::new(matcher, self.eos.clone()))
    }
}
