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

    fn forward_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Array> {
        let logits = self.inner.forward_batch(tokens, caches)?;
        Ok(logits.slice(s![.., .., ..self.limit])?)
    }

    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }

    fn new_cache(&self) -> KvCache {
        self.inner.new_cache()
    }

    fn set_kv_cache_dtype(&mut self, dtype: Option<mlx_rs::Dtype>) -> Result<()> {
        self.inner.set_kv_cache_dtype(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::Dtype;

    /// Logits `0, 1, …, rows − 1` at every position.
    struct Ramp(ModelConfig);

    impl CausalLm for Ramp {
        fn forward(&self, tokens: &Array, _: &mut KvCache) -> Result<Array> {
            let l = tokens.shape()[1];
            let rows = self.0.vocab_size as f64;
            Ok(Array::arange(0.0, rows, 1.0, Dtype::Float32)?
                .reshape(&[1, 1, rows as i32])?
                .broadcast_to(&[1, l, rows as i32])?)
        }

        fn config(&self) -> &ModelConfig {
            &self.0
        }
    }

    fn ramp(rows: usize) -> Box<dyn CausalLm> {
        let config = ModelConfig::from_json(&format!(
            r#"{{"model_type":"llama","hidden_size":4,"num_hidden_layers":1,
                "intermediate_size":4,"num_attention_heads":1,"vocab_size":{rows}}}"#
        ))
        .unwrap();
        Box::new(Ramp(config))
    }

    #[test]
    fn logits_stop_at_the_tokenizer_s_vocabulary() {
        let model = VocabLimited::wrap(ramp(8), 5);
        let tokens = Array::from_slice(&[1i32, 2], &[1, 2]).unwrap();
        let logits = model.forward(&tokens, &mut model.new_cache()).unwrap();
        assert_eq!(logits.shape(), vec![1, 2, 5]);
        assert_eq!(
            logits.to_vec::<f32>().unwrap(),
            vec![0., 1., 2., 3., 4., 0., 1., 2., 3., 4.]
        );
        // A batch step is cut the same way.
        let mut caches = [model.new_cache(), model.new_cache()];
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let batch = model.forward_batch(&[1, 2], &mut refs).unwrap();
        assert_eq!(batch.shape(), vec![2, 1, 5]);
        // A tokenizer at least as large as the embedding leaves the model as it is.
        let same = VocabLimited::wrap(ramp(8), 8);
        let logits = same.forward(&tokens, &mut same.new_cache()).unwrap();
        assert_eq!(logits.shape(), vec![1, 2, 8]);
    }
}
