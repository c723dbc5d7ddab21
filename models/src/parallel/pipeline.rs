//! Pipeline parallelism: each rank holds a contiguous range of layers.
//!
//! ```
//! use mlx_models::parallel::pipeline::stage_layers;
//! // 30 layers over 4 ranks: 7, 7, 8, 8.
//! assert_eq!(stage_layers(30, 0, 4)?, 0..7);
//! assert_eq!(stage_layers(30, 3, 4)?, 22..30);
//! assert!(stage_layers(2, 0, 4).is_err());
//! # Ok::<(), mlx_models::Error>(())
//! ```

use super::balanced_range;
use crate::error::{Error, Result};
use crate::nn::spec::{KvSource, ModelSpec};
use crate::weights::Weights;
use std::ops::Range;

/// The layers of stage `rank` out of `size` for a model of `layers` layers.
///
/// Errors: [`Error::Config`] when there are fewer layers than ranks.
pub fn stage_layers(layers: usize, rank: i32, size: i32) -> Result<Range<usize>> {
    if (layers as i64) < size as i64 {
        return Err(Error::Config(format!(
            "pipeline: {layers} layers cannot be split across {size} ranks"
        )));
    }
    let r = balanced_range(layers as i32, size, rank);
    Ok(r.start as usize..r.end as usize)
}

/// Drops from `weights` the layers outside `rank`'s stage and returns the stage's layers.
///
/// Errors: [`Error::Config`] for a model a pipeline cannot split yet: per-layer embeddings
/// (every stage would need the token embedding), or a layer reusing the keys and values of a
/// layer on another stage.
pub fn stage(
    spec: &ModelSpec,
    weights: &mut Weights,
    rank: i32,
    size: i32,
) -> Result<Range<usize>> {
    if spec.per_layer_embedding.is_some() {
        return Err(Error::Config(
            "pipeline: models with per-layer embeddings are not split yet (use tensor parallel)"
                .into(),
        ));
    }
    let range = stage_layers(spec.layers.len(), rank, size)?;
    for (i, layer) in spec.layers.iter().enumerate() {
        if let KvSource::Shared { source } = layer.attention.kv {
            let n = spec.layers.len();
            let same_stage = (0..size).any(|r| {
                stage_layers(n, r, size).is_ok_and(|s| s.contains(&source) && s.contains(&i))
            });
            if !same_stage {
                return Err(Error::Config(format!(
                    "pipeline: layer {i} reuses the keys and values of layer {source}, which another stage holds"
                )));
            }
        }
    }
    weights.drop_where(|name| layer_of(name).is_some_and(|l| !range.contains(&l)));
    Ok(range)
}

/// The layer index of a tensor named `model.layers.N.…` (the decoder's names).
///
/// ```
/// use mlx_models::parallel::pipeline::layer_of;
/// assert_eq!(layer_of("model.layers.12.mlp.up_proj.weight"), Some(12));
/// assert_eq!(layer_of("model.norm.weight"), None);
/// ```
pub fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}
