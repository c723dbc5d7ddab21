//! Token embeddings (dense, MLX-quantized or GGUF blocks as stored), usable as the tied LM
//! head.

use super::linear::{BlockMatrix, Linear, QuantizedMatrix};
use super::take_float;
use crate::error::Result;
use crate::load::BuildOptions;
use crate::weights::Weights;
use mlx_rs::{quant, Array, Dtype};

/// The embedding matrix `[vocab, dim]`.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// Float rows.
    Dense(Array),
    /// Packed rows (`QuantizedEmbedding`): rows are gathered packed, then dequantized to the
    /// compute dtype `dtype`.
    Quantized {
        /// The packed matrix.
        matrix: QuantizedMatrix,
        /// The compute dtype of the gathered rows.
        dtype: Dtype,
    },
    /// GGUF blocks of one format as stored (`[vocab, dim / values per block, block bytes]`):
    /// rows are dequantized by the format's definition when looked up
    /// ([`quant::block_rows`]), and the tied head multiplies the blocks directly.
    Blocks {
        /// The blocks.
        matrix: BlockMatrix,
        /// The compute dtype of the looked-up rows.
        dtype: Dtype,
    },
}

impl Embedding {
    /// Takes `<path>.weight` (`[vocab, dim]`), the quantization triplet when `<path>.scales`
    /// exists, or GGUF blocks of one format when `<path>.blocks` does
    /// ([`BlockMatrix::load`]).
    pub fn load(
        weights: &mut Weights,
        path: &str,
        vocab: i32,
        dim: i32,
        options: &BuildOptions,
    ) -> Result<Embedding> {
        if let Some(matrix) = BlockMatrix::load(weights, path, vocab, dim)? {
            return Ok(Embedding::Blocks {
                matrix,
                dtype: options.dtype,
            });
        }
        Ok(
            match QuantizedMatrix::load(weights, path, vocab, dim, options)? {
                Some(matrix) => Embedding::Quantized {
                    matrix,
                    dtype: options.dtype,
                },
                None => Embedding::Dense(take_float(
                    weights,
                    &format!("{path}.weight"),
                    &[vocab, dim],
                    options,
                )?),
            },
        )
    }

    /// The rows of `ids` (`[...]`, integer): `[..., dim]`.
    pub fn forward(&self, ids: &Array) -> Result<Array> {
        Ok(match self {
            Embedding::Dense(w) => w.take(ids, 0)?,
            Embedding::Quantized { matrix: q, dtype } => {
                let weight = q.weight.take(ids, 0)?;
                // The rows' scales and biases in the compute dtype (the matrix may keep them
                // in half precision, see `QuantizedMatrix::load`).
                let scales = q.scales.take(ids, 0)?.astype(*dtype)?;
                let biases = q.biases.take(ids, 0)?.astype(*dtype)?;
                let rows = quant::dequantize(
                    &weight,
                    &scales,
                    &biases,
                    q.params.group_size,
                    q.params.bits,
                )?;
                if rows.dtype() == *dtype {
                    rows
                } else {
                    rows.astype(*dtype)?
                }
            }
            Embedding::Blocks { matrix, dtype } => {
                let rows = quant::block_rows(&matrix.weight, ids, matrix.runs[0].format)?;
                if rows.dtype() == *dtype {
                    rows
                } else {
                    rows.astype(*dtype)?
                }
            }
        })
    }

    /// The table as the native decoder stack looks it up
    /// ([`mlx_rs::native::StackInput::Tokens`]): `Some` when it is quantized (MLX's affine
    /// layout or GGUF blocks) and its rows are computed in float32.
    pub fn quantized_table(&self) -> Option<mlx_rs::native::QuantizedProjection<'_>> {
        match self {
            Embedding::Quantized {
                matrix: q,
                dtype: Dtype::Float32,
            } => Some(mlx_rs::native::QuantizedProjection {
                weight: &q.weight,
                scales: &q.scales,
                biases: &q.biases,
                group_size: q.params.group_size,
                bits: q.params.bits,
                blocks: &[],
            }),
            Embedding::Blocks {
                matrix,
                dtype: Dtype::Float32,
            } => Some(mlx_rs::native::QuantizedProjection {
                weight: &matrix.weight,
                scales: &matrix.weight,
                biases: &matrix.weight,
                group_size: 0,
                bits: 0,
                blocks: &matrix.runs,
            }),
            _ => None,
        }
    }

    /// The same matrix as a linear layer `x·Eᵀ` (`dim → vocab`): the LM head of models with
    /// `tie_word_embeddings`.
    pub fn as_linear(&self) -> Result<Linear> {
        Ok(match self {
            Embedding::Dense(w) => Linear::from_dense_transposed(w.t()?),
            Embedding::Quantized { matrix, .. } => Linear::from_quantized(matrix.clone()),
            Embedding::Blocks { matrix, .. } => Linear::from_blocks(matrix.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_tied_head() {
        // E = [[1, 0], [0, 1], [2, 3]]; ids [2, 0] -> rows; x·Eᵀ for x = [1, 1] is [1, 1, 5].
        let mut w = Weights::default();
        w.insert(
            "e.weight",
            Array::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 2.0, 3.0], &[3, 2]).unwrap(),
        );
        let options = BuildOptions {
            huge_pages: false,
            dtype: Dtype::Float32,
            quantization: None,
        };
        let e = Embedding::load(&mut w, "e", 3, 2, &options).unwrap();
        let ids = Array::from_slice(&[2i32, 0], &[1, 2]).unwrap();
        let rows = e.forward(&ids).unwrap();
        assert_eq!(rows.shape(), vec![1, 2, 2]);
        assert_eq!(rows.to_vec::<f32>().unwrap(), vec![2.0, 3.0, 1.0, 0.0]);
        let x = Array::from_slice(&[1.0f32, 1.0], &[1, 2]).unwrap();
        let logits = e.as_linear().unwrap().forward(&x).unwrap();
        assert_eq!(logits.to_vec::<f32>().unwrap(), vec![1.0, 1.0, 5.0]);
    }
}
