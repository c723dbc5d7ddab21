//! Logits restricted to the ids a tokenizer can decode.
//!
//! Some checkpoints have more embedding rows than their tokenizer has tokens (Gemma 3:
//! 262208 rows for 262144 tokens, padding for the vision tokens). The extra rows are never
//! trained targets, but a sampler could still pick one, and the tokenizer could not decode it.
//! [`VocabLimited`] cuts the logits to the tokenizer's size, so generation and scoring only
//! ever see decodable ids.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::model::CausalLm;
use crate::runtime::cache::KvCache;
use mlx_rs::{s, Array};

/// A model whose logits stop at `limit` ids.
pub struct VocabLimited {
    inner: Box<dyn CausalLm>,
    limit: i32,
}

impl std::fmt::Debug for VocabLimited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VocabLimited")
            .field("model_type", &self.inner.config().model_type)
            .field("limit", &self.limit)
            .finish()
    }
}

impl VocabLimited {
    /// `model`, with its logits cut to the first `tokenizer_vocab` ids when the model has more
    /// rows than that (otherwise `model` itself).
    ///
    /// ```
    /// # use mlx_models::runtime::vocab_limit::VocabLimited;
    /// # fn f(model: Box<dyn mlx_models::model::CausalLm>) -> Box<dyn mlx_models::model::CausalLm> {
    /// VocabLimited::wrap(model, 262144)
    /// # }
    /// ```
    pub fn wrap(model: Box<dyn CausalLm>, tokenizer_vocab: usize) -> Box<dyn CausalLm> {
        let rows = model.config().vocab_size;
        match i32::try_from(tokenizer_vocab) {
            Ok(limit) if tokenizer_vocab > 0 && tokenizer_vocab < rows => Box::new(VocabLimited {
                inner: model,
                limit,
            }),
            _ => model,
        }
    }
}

impl CausalLm for VocabLimited {
    fn forward(&self, tokens: &Array, cache: &mut KvCache) -> Result<Array> {
        let logits = self.inner.forward(tokens, cache)?;
        Ok(logits.slice(s![.., .., ..self.limit])?)
    }

    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }

    fn new_cache(&self) -> KvCache {
        self.inner.new_cache()
    }
}
