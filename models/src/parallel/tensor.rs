//! Tensor parallelism: which heads and MLP columns each rank holds, and its share of the
//! weights.
//!
//! Query heads are split in contiguous ranges. When the key/value heads divide among the ranks
//! they are split too (each rank's queries follow their group); otherwise each rank keeps the
//! key/value heads its queries read, duplicated when its range cuts a group (grouped-query
//! attention with fewer key/value heads than ranks works, at the price of a larger cache).
//! The MLP's intermediate columns, and each expert's of a mixture, are split in units of the
//! quantization's group (or the GGUF block, 256 values), so that `down_proj`'s column slices
//! stay whole groups; the router is replicated, so every rank picks the same experts.
//!
//! ```
//! use mlx_models::parallel::tensor::HeadShard;
//! // SmolLM2-135M: 9 query heads in 3 groups of 3, over 2 ranks: the key/value heads do
//! // not divide, so the queries split 4/5; rank 0 reads key heads 0 and 1 (cut group:
//! // one key head per query head), rank 1 reads 1 and 2.
//! let s0 = HeadShard::new(9, 3, 0, 2)?;
//! assert_eq!((s0.queries.clone(), s0.kv_heads.clone()), (0..4, vec![0, 0, 0, 1]));
//! let s1 = HeadShard::new(9, 3, 1, 2)?;
//! assert_eq!((s1.queries.clone(), s1.kv_heads.clone()), (4..9, vec![1, 1, 2, 2, 2]));
//! // 4 key/value heads over 2 ranks: two whole groups each.
//! let s = HeadShard::new(8, 4, 1, 2)?;
//! assert_eq!((s.queries, s.kv_heads), (4..8, vec![2, 3]));
//! # Ok::<(), mlx_models::Error>(())
//! ```

use super::{balanced_range, keep_along, parts};
use crate::error::{Error, Result};
use crate::nn::spec::{BlockSpec, KvSource, ModelSpec};
use crate::weights::Weights;
use mlx_rs::{Array, Dtype};
use std::ops::Range;

/// One rank's attention heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadShard {
    /// Its query heads.
    pub queries: Range<i32>,
    /// The key/value heads it holds, in order (a head may repeat when the query range cuts
    /// a group: then one per query head).
    pub kv_heads: Vec<i32>,
}

impl HeadShard {
    /// The heads of `rank` out of `size` for `heads` query heads in `kv_heads` groups.
    ///
    /// Errors: [`Error::Config`] when there are fewer query heads than ranks.
    pub fn new(heads: i32, kv_heads: i32, rank: i32, size: i32) -> Result<HeadShard> {
        if heads < size || kv_heads <= 0 || heads % kv_heads != 0 {
            return Err(Error::Config(format!(
                "tensor parallel: {heads} query heads ({kv_heads} key/value heads) cannot be split across {size} ranks"
            )));
        }
        let group = heads / kv_heads;
        if kv_heads % size == 0 {
            let kv = balanced_range(kv_heads, size, rank);
            return Ok(HeadShard {
                queries: kv.start * group..kv.end * group,
                kv_heads: kv.collect(),
            });
        }
        let queries = balanced_range(heads, size, rank);
        let kv_heads = if queries.start % group == 0 && queries.end % group == 0 {
            (queries.start / group..queries.end / group).collect()
        } else if queries.start / group == (queries.end - 1) / group {
            vec![queries.start / group]
        } else {
            queries.clone().map(|q| q / group).collect()
        };
        Ok(HeadShard { queries, kv_heads })
    }
}

/// Keeps `rank`'s share of every layer in `weights` (under the decoder's names) and returns
/// the spec of that share (local head counts and MLP widths). The embedding, the norms and
/// the LM head stay whole.
///
/// Errors: [`Error::Config`] for a layer that cannot be split (fewer heads than ranks, a
/// column split that would cut a quantization group or GGUF block), and the errors of
/// reading the tensors ([`Error::MissingTensor`], [`Error::Mlx`]).
pub fn shard(spec: &ModelSpec, weights: &mut Weights, rank: i32, size: i32) -> Result<ModelSpec> {
    let mut local = spec.clone();
    for (i, (layer, out)) in spec.layers.iter().zip(&mut local.layers).enumerate() {
        *out = if weights.pre_cut().layers.contains(&i) {
            cut_layer_spec(layer, i, weights, rank, size)?
        } else {
            shard_layer(layer, i, weights, rank, size)?
        };
    }
    Ok(local)
}

/// The spec of layer `index`'s share when its tensors were cut while reading: the heads of
/// [`HeadShard`], the MLP width of the rows `gate_proj` kept.
fn cut_layer_spec(
    layer: &BlockSpec,
    index: usize,
    weights: &Weights,
    rank: i32,
    size: i32,
) -> Result<BlockSpec> {
    let mut out = layer.clone();
    let heads = HeadShard::new(layer.attention.heads, layer.attention.kv_heads, rank, size)?;
    out.attention.heads = heads.queries.len() as i32;
    out.attention.kv_heads = heads.kv_heads.len() as i32;
    let gate = format!("model.layers.{index}.mlp.gate_proj");
    let rows = ["weight", "blocks"]
        .iter()
        .find_map(|s| weights.get(&format!("{gate}.{s}")))
        .ok_or_else(|| Error::MissingTensor(format!("{gate}.weight")))?
        .dim(0)?;
    out.mlp.intermediate = rows;
    if let Some(moe) = out.moe.as_mut() {
        let p = format!("model.layers.{index}.experts");
        let (name, per) = if weights.contains(&format!("{p}.gate_up_proj.weight")) {
            (format!("{p}.gate_up_proj.weight"), 2)
        } else {
            (format!("{p}.switch_glu.gate_proj.weight"), 1)
        };
        let stack = weights
            .get(&name)
            .ok_or_else(|| Error::MissingTensor(name.clone()))?;
        moe.intermediate = stack.dim(1)? / per;
    }
    Ok(out)
}

/// Keeps `rank`'s share of layer `index` (`layer` in the whole model) in `weights` and returns
/// the spec of that share.
///
/// Errors: as [`shard`].
pub fn shard_layer(
    layer: &BlockSpec,
    index: usize,
    weights: &mut Weights,
    rank: i32,
    size: i32,
) -> Result<BlockSpec> {
    let i = index;
    let mut out = layer.clone();
    let a = &layer.attention;
    let heads = HeadShard::new(a.heads, a.kv_heads, rank, size)?;
    let hd = a.head_dim;
    let p = format!("model.layers.{i}");
    let q_rows: Vec<i32> = (heads.queries.start * hd..heads.queries.end * hd).collect();
    let kv_rows: Vec<i32> = heads
        .kv_heads
        .iter()
        .flat_map(|h| h * hd..(h + 1) * hd)
        .collect();
    keep_along(weights, &format!("{p}.self_attn.q_proj"), 0, &q_rows, None)?;
    if !matches!(a.kv, KvSource::Shared { .. }) {
        keep_along(weights, &format!("{p}.self_attn.k_proj"), 0, &kv_rows, None)?;
    }
    if a.kv == KvSource::Projected {
        keep_along(weights, &format!("{p}.self_attn.v_proj"), 0, &kv_rows, None)?;
    }
    let o = format!("{p}.self_attn.o_proj");
    keep_columns(
        weights,
        &o,
        a.heads * hd,
        heads.queries.start * hd..heads.queries.end * hd,
        rank,
    )?;
    out.attention.heads = heads.queries.len() as i32;
    out.attention.kv_heads = heads.kv_heads.len() as i32;

    let inter = layer.mlp.intermediate;
    let down = format!("{p}.mlp.down_proj");
    let cols = column_share(weights, &down, inter, rank, size)?;
    let rows: Vec<i32> = cols.clone().collect();
    keep_along(weights, &format!("{p}.mlp.gate_proj"), 0, &rows, None)?;
    keep_along(weights, &format!("{p}.mlp.up_proj"), 0, &rows, None)?;
    keep_columns(weights, &down, inter, cols.clone(), rank)?;
    out.mlp.intermediate = cols.len() as i32;
    if let (Some(moe), Some(local)) = (layer.moe, out.moe.as_mut()) {
        local.intermediate = shard_experts(weights, &p, moe.intermediate, rank, size)?;
    }
    Ok(out)
}

/// Keeps `rank`'s share of every expert's intermediate columns (the experts of layer path
/// `p`, `inter` wide): rows of the gate and up stacks (`[E, 2I, hidden]` fused, gate rows
/// first, or `[E, I, hidden]` each), columns of the down stack (`[E, hidden, I]`), in whole
/// quantization groups. Returns the local width.
fn shard_experts(weights: &mut Weights, p: &str, inter: i32, rank: i32, size: i32) -> Result<i32> {
    let fused = format!("{p}.experts.gate_up_proj");
    let (down, split) = if weights.contains(&format!("{fused}.weight")) {
        (format!("{p}.experts.down_proj"), None)
    } else {
        let split = format!("{p}.experts.switch_glu");
        (format!("{split}.down_proj"), Some(split))
    };
    let cols = column_share(weights, &down, inter, rank, size)?;
    match split {
        None => {
            let rows: Vec<i32> = cols
                .clone()
                .chain(inter + cols.start..inter + cols.end)
                .collect();
            keep_along(weights, &fused, 1, &rows, None)?;
        }
        Some(split) => {
            let rows: Vec<i32> = cols.clone().collect();
            keep_along(weights, &format!("{split}.gate_proj"), 1, &rows, None)?;
            keep_along(weights, &format!("{split}.up_proj"), 1, &rows, None)?;
        }
    }
    keep_columns(weights, &down, inter, cols.clone(), rank)?;
    Ok(cols.len() as i32)
}

/// Rank `rank`'s input features of `path` (`width` of them), in whole column groups
/// ([`column_unit`]) split as evenly as they go.
fn column_share(
    weights: &Weights,
    path: &str,
    width: i32,
    rank: i32,
    size: i32,
) -> Result<Range<i32>> {
    let unit = column_unit(weights, path, width)?;
    if width % unit != 0 || width / unit < size {
        return Err(Error::Config(format!(
            "tensor parallel: `{path}`'s {width} input features (groups of {unit}) cannot be split across {size} ranks"
        )));
    }
    let units = balanced_range(width / unit, size, rank);
    Ok(units.start * unit..units.end * unit)
}

/// The number of input features one stored column group of `path` covers: the quantization
/// group (`width / scales columns`), a GGUF block's values (32 or 256: `width` over the blocks
/// per row, the middle axis of `[rows, blocks, block bytes]`), 1 for a dense matrix.
fn column_unit(weights: &Weights, path: &str, width: i32) -> Result<i32> {
    if let Some(blocks) = weights.get(&format!("{path}.blocks")) {
        let per_row = blocks.dim(1)?;
        if blocks.ndim() != 3 || per_row <= 0 || width % per_row != 0 {
            return Err(Error::ShapeMismatch {
                name: format!("{path}.blocks"),
                expected: vec![-1, width / 256, -1],
                found: blocks.shape(),
            });
        }
        return Ok(width / per_row);
    }
    match weights.get(&format!("{path}.scales")) {
        Some(scales) => {
            let groups = scales.dim(-1)?;
            if groups <= 0 || width % groups != 0 {
                return Err(Error::ShapeMismatch {
                    name: format!("{path}.scales"),
                    expected: vec![-1, width],
                    found: scales.shape(),
                });
            }
            Ok(width / groups)
        }
        None => Ok(1),
    }
}

/// Replaces the matrix of `path` (`width` input features) by its columns `cols`, in each
/// form's own units; the `bias` stays on rank 0 only (zeros elsewhere), since the all-reduce
/// adds the ranks' outputs.
fn keep_columns(
    weights: &mut Weights,
    path: &str,
    width: i32,
    cols: Range<i32>,
    rank: i32,
) -> Result<()> {
    let unit = column_unit(weights, path, width)?;
    if cols.start % unit != 0 || cols.end % unit != 0 {
        return Err(Error::Config(format!(
            "tensor parallel: `{path}`'s input features {cols:?} would cut its groups of {unit} \
             (for GGUF files, --no-gguf-blocks converts the blocks to groups of 32)"
        )));
    }
    let names = parts(weights, path);
    if names.is_empty() {
        return Err(Error::MissingTensor(format!("{path}.weight")));
    }
    for name in names {
        let full = weights.take(&name)?;
        let part = if name.ends_with(".bias") {
            if rank == 0 {
                full
            } else {
                Array::zeros(&full.shape(), full.dtype())?
            }
        } else {
            // Each form stores the `width` inputs in `stored` columns, evenly per unit (GGUF
            // blocks: one block per unit, on the middle axis).
            let axis = if name.ends_with(".blocks") { 1 } else { -1 };
            let stored = full.dim(axis)?;
            let per_unit = stored as i64 * unit as i64 / width as i64;
            let (a, b) = (
                (cols.start / unit) as i64 * per_unit,
                (cols.end / unit) as i64 * per_unit,
            );
            let index = Array::arange(a as f64, b as f64, 1.0, Dtype::Int32)?;
            full.take(&index, axis)?
        };
        part.eval()?;
        weights.insert(name, part);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_head_reads_its_own_group() {
        for (heads, kv) in [(9, 3), (8, 2), (12, 2), (16, 8), (4, 1), (14, 2)] {
            for size in [2, 3, 4] {
                if heads < size {
                    continue;
                }
                let group = heads / kv;
                let mut covered = Vec::new();
                for rank in 0..size {
                    let s = HeadShard::new(heads, kv, rank, size).unwrap();
                    let local_group = s.queries.len() / s.kv_heads.len();
                    assert_eq!(s.queries.len() % s.kv_heads.len(), 0);
                    for (j, q) in s.queries.clone().enumerate() {
                        assert_eq!(
                            s.kv_heads[j / local_group],
                            q / group,
                            "{heads}/{kv}/{size}"
                        );
                    }
                    covered.extend(s.queries);
                }
                assert_eq!(covered, (0..heads).collect::<Vec<_>>());
            }
        }
        assert!(HeadShard::new(2, 1, 0, 4).is_err());
    }
}
