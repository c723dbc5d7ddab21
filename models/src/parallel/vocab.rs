//! The vocabulary split across ranks: each rank holds `ceil(vocab / size)` rows of the
//! embedding and of the LM head (the last rank's tail padded with zero rows). A token's row
//! comes from the rank that holds it (the others add zeros in an all-reduce); each rank
//! computes the logits of its rows and an all-gather joins them.
//!
//! ```
//! use mlx_models::parallel::vocab::VocabShard;
//! // 10 tokens over 4 ranks: 3, 3, 3 and 1 (padded to 3).
//! let last = VocabShard::new(10, 3, 4);
//! assert_eq!((last.start, last.rows, last.padded), (9, 1, 3));
//! ```

use super::keep_along;
use crate::error::Result;
use crate::nn::Embedding;
use crate::weights::Weights;
use mlx_rs::distributed::Group;
use mlx_rs::ops::where_;
use mlx_rs::{s, Array, Dtype};

/// One rank's rows of the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocabShard {
    /// Its first token id.
    pub start: i32,
    /// The token ids it holds (`start..start + rows`).
    pub rows: i32,
    /// Rows every rank stores (`ceil(vocab / size)`, the same on every rank).
    pub padded: i32,
    /// The whole vocabulary.
    pub vocab: i32,
}

impl VocabShard {
    /// Rank `rank`'s share of `vocab` rows over `size` ranks.
    pub fn new(vocab: i32, rank: i32, size: i32) -> VocabShard {
        let padded = (vocab + size - 1) / size;
        let start = (rank * padded).min(vocab);
        VocabShard {
            start,
            rows: (vocab - start).clamp(0, padded),
            padded,
            vocab,
        }
    }

    /// Keeps this shard's rows of every tensor of module `path` (`embed_tokens`, `lm_head`),
    /// padded with zero rows to [`VocabShard::padded`].
    pub fn keep(&self, weights: &mut Weights, path: &str) -> Result<()> {
        let rows: Vec<i32> = (self.start..self.start + self.rows).collect();
        keep_along(weights, path, 0, &rows, Some(self.padded))
    }

    /// The embedded rows of `tokens` (`[B, L]`, ids of the whole vocabulary) from `table`
    /// (this shard's rows), summed over the ranks.
    pub fn embed(&self, table: &Embedding, tokens: &Array, group: &Group) -> Result<Array> {
        let local = tokens
            .astype(Dtype::Int32)?
            .subtract(&Array::scalar(self.start))?;
        let inside = local
            .greater_equal(&Array::scalar(0))?
            .logical_and(&local.less(&Array::scalar(self.rows))?)?;
        let ids = where_(&inside, &local, &Array::scalar(0))?;
        let rows = table.forward(&ids)?;
        let keep = inside.astype(rows.dtype())?.expand_dims(&[-1])?;
        Ok(group.all_sum(&rows.multiply(&keep)?)?)
    }

    /// Every rank's logits `[B, L, padded]` joined into `[B, L, vocab]`.
    pub fn gather_logits(&self, local: &Array, group: &Group) -> Result<Array> {
        let shape = local.shape();
        let (b, l, p) = (shape[0], shape[1], shape[2]);
        let n = group.size();
        let all = group
            .all_gather(local)?
            .reshape(&[n, b, l, p])?
            .transpose(&[1, 2, 0, 3])?
            .reshape(&[b, l, n * p])?;
        Ok(if n * p == self.vocab {
            all
        } else {
            all.slice(s![.., .., ..self.vocab])?
        })
    }
}
