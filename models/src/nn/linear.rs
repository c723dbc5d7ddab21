//! Linear layers: dense (`y = x·Wᵀ + b`), MLX affine-quantized (`quantized_matmul`), or GGUF
//! blocks kept as stored (`block_matmul`).

use super::{take_float, RmsNorm};
use crate::config::QuantParams;
use crate::error::{Error, Result};
use crate::load::BuildOptions;
use crate::weights::Weights;
use mlx_rs::quant::{BlockFormat, BlockRun};
use mlx_rs::{native, quant, Array, Dtype};

/// The packed form of a `[rows, cols]` matrix in MLX's affine format: `weight` is `uint32`
/// `[rows, cols·bits/32]`, `scales` and `biases` are `[rows, cols/group_size]`.
#[derive(Debug, Clone)]
pub struct QuantizedMatrix {
    /// Packed codes.
    pub weight: Array,
    /// Per-group scales (compute dtype).
    pub scales: Array,
    /// Per-group biases (compute dtype); not the layer's own `bias`.
    pub biases: Array,
    /// Group size and bits, from the config entry of this module.
    pub params: QuantParams,
}

/// Scales or biases of a quantized matrix. Half-precision values (GGUF and most MLX
/// checkpoints store f16 or bf16) are kept as they are when the compute dtype is f32: widening
/// them adds no information, and the quantized matmul reads them directly (the native CPU
/// kernel converts them in registers; 0.625 instead of 0.75 bytes per 4-bit weight). Otherwise
/// they take the compute dtype, like every other floating tensor.
fn take_group_params(
    weights: &mut Weights,
    name: &str,
    shape: &[i32],
    options: &BuildOptions,
) -> Result<Array> {
    if options.dtype == Dtype::Float32 {
        if let Some(dtype) = weights.get(name).map(Array::dtype) {
            if matches!(dtype, Dtype::Float16 | Dtype::Bfloat16) {
                return weights.take_shaped(name, shape);
            }
        }
    }
    take_float(weights, name, shape, options)
}

impl QuantizedMatrix {
    /// Takes `<path>.{weight,scales,biases}` when `<path>.scales` exists (the MLX rule for "this
    /// module is quantized"); `Ok(None)` when it does not.
    pub fn load(
        weights: &mut Weights,
        path: &str,
        rows: i32,
        cols: i32,
        options: &BuildOptions,
    ) -> Result<Option<QuantizedMatrix>> {
        Self::load_stacked(weights, path, &[], rows, cols, options)
    }

    /// [`QuantizedMatrix::load`] for a stack of matrices `[lead..., rows, cols]` (the experts
    /// of a mixture: `lead = [experts]`).
    pub fn load_stacked(
        weights: &mut Weights,
        path: &str,
        lead: &[i32],
        rows: i32,
        cols: i32,
        options: &BuildOptions,
    ) -> Result<Option<QuantizedMatrix>> {
        if !weights.contains(&format!("{path}.scales")) {
            return Ok(None);
        }
        let params = options
            .quantization
            .as_ref()
            .and_then(|q| q.for_module(path))
            .ok_or_else(|| {
                Error::Config(format!(
                    "`{path}.scales` is present but the config's `quantization` does not quantize `{path}`"
                ))
            })?;
        let QuantParams { group_size, bits } = params;
        if group_size <= 0 || bits <= 0 || cols % group_size != 0 || (cols * bits) % 32 != 0 {
            return Err(Error::Config(format!(
                "`{path}`: {cols} input features cannot be quantized with group size {group_size} and {bits} bits"
            )));
        }
        let name = format!("{path}.weight");
        let shape = |last: [i32; 2]| [lead, &last[..]].concat();
        let weight = weights.take_shaped(&name, &shape([rows, cols * bits / 32]))?;
        if weight.dtype() != Dtype::Uint32 {
            return Err(Error::Config(format!(
                "quantized tensor `{name}` has dtype {}, expected uint32",
                weight.dtype()
            )));
        }
        let groups = shape([rows, cols / group_size]);
        let scales = take_group_params(weights, &format!("{path}.scales"), &groups, options)?;
        let biases = take_group_params(weights, &format!("{path}.biases"), &groups, options)?;
        Ok(Some(QuantizedMatrix {
            weight,
            scales,
            biases,
            params,
        }))
    }

    /// `x · dequantize(W)ᵀ`, read straight from the packed codes.
    pub fn matmul_t(&self, x: &Array) -> Result<Array> {
        Ok(quant::quantized_matmul(
            x,
            &self.weight,
            &self.scales,
            &self.biases,
            true,
            self.params.group_size,
            self.params.bits,
        )?)
    }
}

/// A `[rows, cols]` matrix of GGUF blocks kept as stored (`Q4_0` … `Q8_0`, `Q2_K` … `Q6_K`;
/// see [`mlx_rs::quant::block_matmul_fused`]): `weight` is `uint8` holding the runs'
/// rows one after the other (`[rows, cols / values per block, block bytes]` for one run). Only
/// the native CPU kernels multiply it; the GGUF loader keeps blocks only where they run.
#[derive(Debug, Clone)]
pub struct BlockMatrix {
    /// The blocks' bytes.
    pub weight: Array,
    /// Runs of rows and their formats (one, or one per part of a fused projection).
    pub runs: Vec<BlockRun>,
}

impl BlockMatrix {
    /// Takes `<path>.blocks` when it exists (`Ok(None)` otherwise): `uint8` `[rows, blocks per
    /// row, block bytes]`, the format following from the block's bytes (every format's differ:
    /// 18 `Q4_0`, 20 `Q4_1`, 22 `Q5_0`, 24 `Q5_1`, 34 `Q8_0`, 84 `Q2_K`, 110 `Q3_K`, 144
    /// `Q4_K`, 176 `Q5_K`, 210 `Q6_K`; [`BlockFormat::from_block_bytes`]) and the blocks
    /// covering `cols`.
    ///
    /// Errors: [`Error::ShapeMismatch`] when the tensor is not such a matrix.
    ///
    /// ```
    /// use mlx_models::nn::BlockMatrix;
    /// use mlx_models::weights::Weights;
    /// use mlx_rs::quant::BlockFormat;
    /// use mlx_rs::{Array, Dtype};
    /// let mut w = Weights::default();
    /// w.insert("p.blocks", Array::from_bytes(&[0u8; 3 * 420], &[3, 2, 210], Dtype::Uint8)?);
    /// w.insert("s.blocks", Array::from_bytes(&[0u8; 3 * 360], &[3, 18, 20], Dtype::Uint8)?);
    /// let m = BlockMatrix::load(&mut w, "p", 3, 512)?.unwrap();
    /// assert_eq!(m.runs[0].format, BlockFormat::Q6K);
    /// let m = BlockMatrix::load(&mut w, "s", 3, 576)?.unwrap();
    /// assert_eq!(m.runs[0].format, BlockFormat::Q4_1);
    /// assert!(BlockMatrix::load(&mut w, "q", 3, 512)?.is_none());
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn load(
        weights: &mut Weights,
        path: &str,
        rows: i32,
        cols: i32,
    ) -> Result<Option<BlockMatrix>> {
        let name = format!("{path}.blocks");
        if !weights.contains(&name) {
            return Ok(None);
        }
        let weight = weights.take(&name)?;
        let shape = weight.shape();
        let format = match shape[..] {
            [r, blocks, bytes] if r == rows && weight.dtype() == Dtype::Uint8 => {
                usize::try_from(bytes)
                    .ok()
                    .and_then(BlockFormat::from_block_bytes)
                    .filter(|f| {
                        i64::from(blocks) * f.values_per_block() as i64 == i64::from(cols)
                            && cols > 0
                    })
            }
            _ => None,
        };
        match format {
            Some(format) => Ok(Some(BlockMatrix {
                weight,
                runs: vec![BlockRun { format, rows }],
            })),
            None => Err(Error::ShapeMismatch {
                name,
                // rows, blocks of 256 (or 32) values, a format's block bytes
                expected: vec![rows, cols / 256, -1],
                found: shape,
            }),
        }
    }

    /// `x · Wᵀ` (with an optional RMS-norm prologue and residual epilogue), read straight from
    /// the blocks.
    pub fn matmul_t_fused(
        &self,
        x: &Array,
        norm: Option<&RmsNorm>,
        residual: Option<&Array>,
    ) -> Result<Array> {
        Ok(quant::block_matmul_fused(
            x,
            &self.weight,
            &self.runs,
            norm.map(|n| (n.weight(), n.eps())),
            residual,
        )?)
    }
}

/// The weight of a [`Linear`].
#[derive(Debug, Clone)]
pub(crate) enum LinearWeight {
    /// `Wᵀ`, `[in, out]` (a transposed view of the checkpoint's `[out, in]`).
    Dense(Array),
    /// Packed `[out, in]`.
    Quantized(QuantizedMatrix),
    /// GGUF blocks `[out, in]` as stored.
    Blocks(BlockMatrix),
}

/// A linear layer `y = x·Wᵀ + b`, `W` being `[out_features, in_features]` as in Hugging Face
/// checkpoints; quantized when the checkpoint has `<path>.scales`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) weight: LinearWeight,
    pub(crate) bias: Option<Array>,
}

impl Linear {
    /// The arrays this layer reads: its weight (with the quantization's scales and biases),
    /// then its bias.
    pub(crate) fn arrays(&self) -> Vec<&Array> {
        let mut arrays = match &self.weight {
            LinearWeight::Dense(w) => vec![w],
            LinearWeight::Quantized(q) => vec![&q.weight, &q.scales, &q.biases],
            LinearWeight::Blocks(b) => vec![&b.weight],
        };
        arrays.extend(self.bias.as_ref());
        arrays
    }

    /// Takes `<path>.weight` (and `<path>.bias` when `bias`; the MLX quantization triplet when
    /// `<path>.scales` exists), checking shapes against `in_features`/`out_features`.
    pub fn load(
        weights: &mut Weights,
        path: &str,
        in_features: i32,
        out_features: i32,
        bias: bool,
        options: &BuildOptions,
    ) -> Result<Linear> {
        let weight = if let Some(b) = BlockMatrix::load(weights, path, out_features, in_features)? {
            LinearWeight::Blocks(b)
        } else if let Some(q) =
            QuantizedMatrix::load(weights, path, out_features, in_features, options)?
        {
            LinearWeight::Quantized(q)
        } else {
            let shape = [out_features, in_features];
            let w = take_float(weights, &format!("{path}.weight"), &shape, options)?;
            LinearWeight::Dense(w.t()?)
        };
        let bias = if bias {
            Some(take_float(
                weights,
                &format!("{path}.bias"),
                &[out_features],
                options,
            )?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A dense layer from `Wᵀ` (`[in, out]`) and an optional bias (for `as_linear`).
    pub(crate) fn from_dense_transposed(weight_t: Array) -> Linear {
        Linear {
            weight: LinearWeight::Dense(weight_t),
            bias: None,
        }
    }

    /// A quantized layer from a packed matrix (for `as_linear`).
    pub(crate) fn from_quantized(matrix: QuantizedMatrix) -> Linear {
        Linear {
            weight: LinearWeight::Quantized(matrix),
            bias: None,
        }
    }

    /// A layer reading GGUF blocks as stored (for `as_linear`).
    pub(crate) fn from_blocks(matrix: BlockMatrix) -> Linear {
        Linear {
            weight: LinearWeight::Blocks(matrix),
            bias: None,
        }
    }

    /// The packed matrix and the bias, when the weight is stored quantized (for
    /// [`mlx_rs::native::decoder_layer`]).
    pub(crate) fn quantized_projection(
        &self,
    ) -> Option<(mlx_rs::native::QuantizedProjection<'_>, Option<&Array>)> {
        match &self.weight {
            LinearWeight::Quantized(q) => Some((
                mlx_rs::native::QuantizedProjection {
                    weight: &q.weight,
                    scales: &q.scales,
                    biases: &q.biases,
                    group_size: q.params.group_size,
                    bits: q.params.bits,
                    blocks: &[],
                },
                self.bias.as_ref(),
            )),
            LinearWeight::Blocks(b) => Some((
                mlx_rs::native::QuantizedProjection {
                    weight: &b.weight,
                    scales: &b.weight,
                    biases: &b.weight,
                    group_size: 0,
                    bits: 0,
                    blocks: &b.runs,
                },
                self.bias.as_ref(),
            )),
            LinearWeight::Dense(_) => None,
        }
    }

    /// Whether the weight is a GGUF block matrix, kept in the file's own layout.
    pub(crate) fn is_blocks(&self) -> bool {
        matches!(self.weight, LinearWeight::Blocks(_))
    }

    /// Whether the weight is stored quantized (MLX's affine layout or GGUF blocks).
    pub fn is_quantized(&self) -> bool {
        matches!(
            self.weight,
            LinearWeight::Quantized(_) | LinearWeight::Blocks(_)
        )
    }

    /// Applies the layer to `x` (`[..., in_features]`).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = match (&self.weight, &self.bias) {
            (LinearWeight::Dense(wt), Some(b)) => return Ok(b.addmm(x, wt, 1.0, 1.0)?),
            (LinearWeight::Dense(wt), None) => return Ok(x.matmul(wt)?),
            (LinearWeight::Quantized(q), _) => q.matmul_t(x)?,
            (LinearWeight::Blocks(m), _) => m.matmul_t_fused(x, None, None)?,
        };
        Ok(match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }

    /// `self.forward(norm(x)) + residual`, with either part optional. A quantized layer on a
    /// CPU the native kernel serves runs it as one primitive
    /// ([`mlx_rs::native::fused_quantized_matmul`]; the residual is fused only without a
    /// bias, so that the additions keep their order); otherwise the ops are composed. The
    /// numbers are the same either way.
    pub fn forward_fused(
        &self,
        x: &Array,
        norm: Option<&RmsNorm>,
        residual: Option<&Array>,
    ) -> Result<Array> {
        // The residual goes into the primitive only without a bias (the additions keep their
        // order); the bias, and then a residual that stayed out, are added after it.
        let fused_residual = residual.filter(|_| self.bias.is_none());
        let fused = match &self.weight {
            LinearWeight::Blocks(m) => Some(m.matmul_t_fused(x, norm, fused_residual)?),
            LinearWeight::Quantized(q) => native::fused_quantized_matmul(
                x,
                &q.weight,
                &q.scales,
                &q.biases,
                q.params.group_size,
                q.params.bits,
                norm.map(|n| (n.weight(), n.eps())),
                fused_residual,
            )?,
            LinearWeight::Dense(_) => None,
        };
        if let Some(y) = fused {
            let y = match &self.bias {
                Some(b) => y.add(b)?,
                None => y,
            };
            return Ok(match (residual, fused_residual) {
                (Some(r), None) => y.add(r)?,
                _ => y,
            });
        }
        let y = self.forward(&RmsNorm::apply(norm, x)?)?;
        Ok(match residual {
            Some(r) => y.add(r)?,
            None => y,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuantizationConfig;

    fn options(quantization: Option<QuantizationConfig>) -> BuildOptions {
        BuildOptions {
            huge_pages: false,
            dtype: Dtype::Float32,
            quantization,
        }
    }

    #[test]
    fn dense_with_bias_is_x_wt_plus_b() {
        // W = [[1, 2], [3, 4], [5, 6]] (out 3, in 2), b = [1, 0, -1], x = [1, 1]:
        // y = [1+2+1, 3+4+0, 5+6-1] = [4, 7, 10].
        let mut w = Weights::default();
        w.insert(
            "p.weight",
            Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]).unwrap(),
        );
        w.insert(
            "p.bias",
            Array::from_slice(&[1.0f32, 0.0, -1.0], &[3]).unwrap(),
        );
        let lin = Linear::load(&mut w, "p", 2, 3, true, &options(None)).unwrap();
        w.finish().unwrap();
        let x = Array::from_slice(&[1.0f32, 1.0], &[1, 1, 2]).unwrap();
        let y = lin.forward(&x).unwrap();
        assert_eq!(y.shape(), vec![1, 1, 3]);
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![4.0, 7.0, 10.0]);
    }

    #[test]
    fn quantized_reads_codes_scales_and_biases() {
        // One row of 32 4-bit codes, all 1 (0x11111111 per word), scale 2, bias -1:
        // every weight is 2·1 - 1 = 1, so x = ones(32) gives 32.
        let mut w = Weights::default();
        w.insert(
            "p.weight",
            Array::from_slice(&[0x1111_1111u32; 4], &[1, 4]).unwrap(),
        );
        w.insert("p.scales", Array::from_slice(&[2.0f32], &[1, 1]).unwrap());
        w.insert("p.biases", Array::from_slice(&[-1.0f32], &[1, 1]).unwrap());
        let q = QuantizationConfig::from_value(&serde_json::json!({"group_size": 32, "bits": 4}))
            .unwrap();
        let lin = Linear::load(&mut w, "p", 32, 1, false, &options(Some(q))).unwrap();
        assert!(lin.is_quantized());
        let x = Array::ones(&[1, 32], Dtype::Float32).unwrap();
        assert_eq!(
            lin.forward(&x).unwrap().to_vec::<f32>().unwrap(),
            vec![32.0]
        );
    }

    #[test]
    fn scales_without_quantization_config_is_an_error() {
        let mut w = Weights::default();
        w.insert("p.weight", Array::from_slice(&[0u32; 4], &[1, 4]).unwrap());
        w.insert("p.scales", Array::from_slice(&[2.0f32], &[1, 1]).unwrap());
        w.insert("p.biases", Array::from_slice(&[-1.0f32], &[1, 1]).unwrap());
        let r = Linear::load(&mut w, "p", 32, 1, false, &options(None));
        assert!(matches!(r, Err(Error::Config(_))));
    }
}
