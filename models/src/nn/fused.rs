//! [`FusedLinear`]: several linear layers over the same input (q/k/v, gate/up) computed as one
//! matrix product along the output features, then split.
//!
//! One product instead of three (or two) saves a kernel call per projection per layer: on the
//! CPU each quantized call re-lays out `x` and wakes the kernel's threads, and every MLX op has
//! a fixed scheduling cost that dominates small-model decode. The numbers are the same: the
//! fused matrix is the row-wise concatenation of the originals, and each output is the
//! corresponding column slice.

use super::linear::{BlockMatrix, Linear, LinearWeight, QuantizedMatrix};
use super::RmsNorm;
use crate::error::Result;
use mlx_rs::ops::concatenate;
use mlx_rs::Array;

/// Linear layers sharing one input, fused where their storage allows it.
#[derive(Debug, Clone)]
pub enum FusedLinear {
    /// One product; outputs split after the listed output features.
    Fused {
        /// The concatenated layer.
        linear: Linear,
        /// Cumulative output widths at which to split (one fewer than the parts).
        split_at: Vec<i32>,
    },
    /// The layers could not be fused (mixed dense/quantized storage, different quantization
    /// parameters, or bias on some parts only): run them one by one.
    Separate {
        /// The layers.
        parts: Vec<Linear>,
        /// Cumulative output widths, as for [`FusedLinear::Fused`].
        split_at: Vec<i32>,
    },
}

impl FusedLinear {
    /// Fuses `parts` (their output widths in `out_features`) when they are all dense, or all
    /// quantized with the same group size and bits, and all or none have a bias.
    pub fn fuse(parts: Vec<Linear>, out_features: &[i32]) -> Result<FusedLinear> {
        let mut split_at = Vec::with_capacity(out_features.len().saturating_sub(1));
        let mut end = 0;
        for w in &out_features[..out_features.len().saturating_sub(1)] {
            end += w;
            split_at.push(end);
        }
        let same_bias =
            parts.iter().all(|p| p.bias.is_some()) || parts.iter().all(|p| p.bias.is_none());
        let weight = match parts.first().map(|p| &p.weight) {
            Some(LinearWeight::Dense(_)) if same_bias => {
                let ws: Option<Vec<&Array>> = parts
                    .iter()
                    .map(|p| match &p.weight {
                        LinearWeight::Dense(wt) => Some(wt),
                        _ => None,
                    })
                    .collect();
                // Dense weights are kept as transposed views of row-major [out, in] matrices
                // (the layout BLAS reads fastest for x·Wᵀ): join the [out, in] matrices along
                // the outputs and view the result transposed again.
                match ws {
                    Some(ws) => {
                        let rows = ws
                            .iter()
                            .map(|wt| wt.t())
                            .collect::<mlx_rs::Result<Vec<_>>>()?;
                        let rows: Vec<&Array> = rows.iter().collect();
                        Some(LinearWeight::Dense(concatenate(&rows, 0)?.t()?))
                    }
                    None => None,
                }
            }
            Some(LinearWeight::Quantized(first)) if same_bias => {
                let qs: Option<Vec<&QuantizedMatrix>> = parts
                    .iter()
                    .map(|p| match &p.weight {
                        LinearWeight::Quantized(q) if q.params == first.params => Some(q),
                        _ => None,
                    })
                    .collect();
                match qs {
                    Some(qs) => {
                        let join = |f: fn(&QuantizedMatrix) -> &Array| -> Result<Array> {
                            let arrays: Vec<&Array> = qs.iter().map(|q| f(q)).collect();
                            Ok(concatenate(&arrays, 0)?)
                        };
                        Some(LinearWeight::Quantized(QuantizedMatrix {
                            weight: join(|q| &q.weight)?,
                            scales: join(|q| &q.scales)?,
                            biases: join(|q| &q.biases)?,
                            params: first.params,
                        }))
                    }
                    None => None,
                }
            }
            Some(LinearWeight::Blocks(_)) if same_bias => fuse_blocks(&parts)?,
            _ => None,
        };
        let Some(weight) = weight else {
            return Ok(FusedLinear::Separate { parts, split_at });
        };
        let bias = match parts
            .iter()
            .map(|p| p.bias.as_ref())
            .collect::<Option<Vec<_>>>()
        {
            Some(bs) if !bs.is_empty() => Some(concatenate(&bs, 0)?),
            _ => None,
        };
        Ok(FusedLinear::Fused {
            linear: Linear { weight, bias },
            split_at,
        })
    }

    /// Backs the arrays [`FusedLinear::fuse`] made (the concatenations of the parts) with
    /// transparent huge pages where the OS allows, evaluating them
    /// ([`mlx_rs::memory::advise_huge_pages`]: no byte changes). The loader advises the
    /// checkpoint's tensors as it reads them; the fused copies are new buffers, and on the CPU
    /// decode streams them once per token (Qwen2.5-1.5B's gate/up projections are 44% of its
    /// weights). Separate parts are the checkpoint's own tensors: nothing to do.
    ///
    /// ```
    /// use mlx_models::config::{QuantParams, QuantizationConfig};
    /// use mlx_models::load::BuildOptions;
    /// use mlx_models::nn::{fused::FusedLinear, linear::Linear};
    /// use mlx_models::weights::Weights;
    /// use mlx_rs::{quant, Array, Dtype};
    ///
    /// let default = QuantParams { group_size: 64, bits: 4 };
    /// let quantization = QuantizationConfig { default, mode: "affine".into(), overrides: Default::default() };
    /// let options = BuildOptions { dtype: Dtype::Float32, quantization: Some(quantization), huge_pages: false };
    /// // gate and up: 2048 x 1024 each, 1 MiB of 4-bit codes.
    /// let mut weights = Weights::default();
    /// for name in ["gate", "up"] {
    ///     let (codes, scales, biases) = quant::quantize(&Array::ones(&[2048, 1024], Dtype::Float32)?, 64, 4)?;
    ///     weights.insert(format!("{name}.weight"), codes);
    ///     weights.insert(format!("{name}.scales"), scales);
    ///     weights.insert(format!("{name}.biases"), biases);
    /// }
    /// let gate = Linear::load(&mut weights, "gate", 1024, 2048, false, &options)?;
    /// let up = Linear::load(&mut weights, "up", 1024, 2048, false, &options)?;
    /// let fused = FusedLinear::fuse(vec![gate, up], &[2048, 2048])?;
    /// let advice = fused.advise_huge_pages()?; // where THP is on: the whole 2 MiB spans inside
    /// assert!(advice.collapsed <= advice.advised && advice.advised <= 2 << 20);
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn advise_huge_pages(&self) -> Result<mlx_rs::memory::HugePageAdvice> {
        match self {
            FusedLinear::Fused { linear, .. } => {
                Ok(mlx_rs::memory::advise_huge_pages(&linear.arrays())?)
            }
            FusedLinear::Separate { .. } => Ok(Default::default()),
        }
    }

    /// Whether this is one fused product whose weight is a GGUF block matrix (which
    /// [`crate::nn::decoder::DecoderLayer::load`] colocates with the layer's other blocks).
    pub(crate) fn is_fused_blocks(&self) -> bool {
        matches!(self, FusedLinear::Fused { linear, .. } if linear.is_blocks())
    }

    /// The layers that compute the parts: the fused one, or each separate part.
    pub(crate) fn linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            FusedLinear::Fused { linear, .. } => vec![linear],
            FusedLinear::Separate { parts, .. } => parts.iter_mut().collect(),
        }
    }

    /// The outputs of every part, in order.
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>> {
        match self {
            FusedLinear::Fused { linear, split_at } => {
                Ok(linear.forward(x)?.split_at(split_at, -1)?)
            }
            FusedLinear::Separate { parts, .. } => parts.iter().map(|p| p.forward(x)).collect(),
        }
    }

    /// The one layer computing every part, when the parts could be fused.
    pub(crate) fn fused(&self) -> Option<&Linear> {
        match self {
            FusedLinear::Fused { linear, .. } => Some(linear),
            FusedLinear::Separate { .. } => None,
        }
    }

    /// Splits a [`FusedLinear::forward_joined`] output into the parts' outputs.
    pub fn split(&self, joined: Array) -> Result<Vec<Array>> {
        let (FusedLinear::Fused { split_at, .. } | FusedLinear::Separate { split_at, .. }) = self;
        Ok(joined.split_at(split_at, -1)?)
    }

    /// The outputs side by side along the last axis, unsplit (what [`FusedLinear::forward`]
    /// splits), of `norm(x)` when a norm is given: one product when fused (the norm then runs
    /// inside the quantized kernel where it can, see [`Linear::forward_fused`]), a
    /// concatenation of the separate products otherwise.
    pub fn forward_joined(&self, x: &Array, norm: Option<&RmsNorm>) -> Result<Array> {
        match self {
            FusedLinear::Fused { linear, .. } => linear.forward_fused(x, norm, None),
            FusedLinear::Separate { parts, .. } => {
                let x = RmsNorm::apply(norm, x)?;
                let outs = parts
                    .iter()
                    .map(|p| p.forward(&x))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&Array> = outs.iter().collect();
                Ok(concatenate(&refs, -1)?)
            }
        }
    }
}

/// The parts' GGUF blocks as one matrix: their bytes one after the other, adjacent runs of one
/// format merged (one run: a `[rows, row bytes]` matrix; several: a flat byte array). `None`
/// when a part is not blocks or the runs exceed [`mlx_rs::quant::MAX_BLOCK_RUNS`].
fn fuse_blocks(parts: &[Linear]) -> Result<Option<LinearWeight>> {
    let Some(ms) = parts
        .iter()
        .map(|p| match &p.weight {
            LinearWeight::Blocks(m) => Some(m),
            _ => None,
        })
        .collect::<Option<Vec<&BlockMatrix>>>()
    else {
        return Ok(None);
    };
    let mut runs: Vec<mlx_rs::quant::BlockRun> = Vec::new();
    for r in ms.iter().flat_map(|m| m.runs.iter()) {
        match runs.last_mut() {
            Some(last) if last.format == r.format => last.rows += r.rows,
            _ => runs.push(*r),
        }
    }
    if runs.len() > mlx_rs::quant::MAX_BLOCK_RUNS {
        return Ok(None);
    }
    let weight = if runs.len() == 1 {
        let arrays: Vec<&Array> = ms.iter().map(|m| &m.weight).collect();
        concatenate(&arrays, 0)?
    } else {
        let flat = ms
            .iter()
            .map(|m| m.weight.reshape(&[-1]))
            .collect::<mlx_rs::Result<Vec<_>>>()?;
        let flat: Vec<&Array> = flat.iter().collect();
        concatenate(&flat, 0)?
    };
    Ok(Some(LinearWeight::Blocks(BlockMatrix { weight, runs })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuantParams;
    use mlx_rs::{quant, Dtype};

    fn dense(rows: &[f32], out: i32, inp: i32) -> Linear {
        let w = Array::from_slice(rows, &[out, inp]).unwrap();
        Linear::from_dense_transposed(w.t().unwrap())
    }

    #[test]
    fn fused_dense_outputs_are_the_separate_outputs() {
        // W1 = [[1, 0], [0, 1]], W2 = [[1, 1]]; x = [2, 3] → [2, 3] and [5].
        let parts = vec![dense(&[1., 0., 0., 1.], 2, 2), dense(&[1., 1.], 1, 2)];
        let fused = FusedLinear::fuse(parts, &[2, 1]).unwrap();
        assert!(matches!(fused, FusedLinear::Fused { .. }));
        let x = Array::from_slice(&[2.0f32, 3.0], &[1, 2]).unwrap();
        let out = fused.forward(&x).unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![2., 3.]);
        assert_eq!(out[1].to_vec::<f32>().unwrap(), vec![5.]);
    }

    /// `w` quantized (affine, `group` values per scale, `bits` bits) as a layer.
    fn quantized_linear(w: &Array, group_size: i32, bits: i32) -> Linear {
        let (weight, scales, biases) = quant::quantize(w, group_size, bits).unwrap();
        Linear::from_quantized(QuantizedMatrix {
            weight,
            scales,
            biases,
            params: QuantParams { group_size, bits },
        })
    }

    #[test]
    fn fused_copies_take_huge_page_advice_and_keep_their_values() {
        // Two 4-bit parts of 2048 x 2048 (2 MiB of codes each): the fused codes are a new
        // 4 MiB buffer, which holds at least one whole aligned 2 MiB span.
        let n = 2048;
        let values: Vec<f32> = (0..n * n)
            .map(|i| ((i * 7919) % 31) as f32 - 15.0)
            .collect();
        let w = Array::from_slice(&values, &[n as i32, n as i32]).unwrap();
        let part = || quantized_linear(&w, 64, 4);
        let fused = FusedLinear::fuse(vec![part(), part()], &[n as i32, n as i32]).unwrap();
        let x = Array::from_slice(
            &(0..n).map(|i| (i % 13) as f32 - 6.0).collect::<Vec<_>>(),
            &[1, n as i32],
        )
        .unwrap();
        let outputs = |f: &FusedLinear| -> Vec<Vec<f32>> {
            let ys = f.forward(&x).unwrap();
            ys.iter().map(|y| y.to_vec::<f32>().unwrap()).collect()
        };
        let before = outputs(&fused);
        let advice = fused.advise_huge_pages().unwrap();
        let codes = 2 * n * n / 2;
        assert!(advice.collapsed <= advice.advised && advice.advised <= codes + 2 * n * 32 * 4);
        if cfg!(target_os = "linux")
            && matches!(
                mlx_rs::memory::transparent_huge_pages_mode().as_deref(),
                Some("always" | "madvise")
            )
        {
            assert!(
                advice.advised >= mlx_rs::memory::HUGE_PAGE_BYTES,
                "{advice:?}"
            );
        }
        let after = outputs(&fused);
        assert_eq!(before, after);
        // Separate parts are the checkpoint's own tensors: nothing to advise here.
        let w8 = Array::ones(&[2, 32], Dtype::Float32).unwrap();
        let q = |bits| quantized_linear(&w8, 32, bits);
        let separate = FusedLinear::fuse(vec![q(4), q(8)], &[2, 2]).unwrap();
        assert_eq!(
            separate.advise_huge_pages().unwrap(),
            mlx_rs::memory::HugePageAdvice::default()
        );
    }

    #[test]
    fn mixed_quantization_stays_separate() {
        let w = Array::ones(&[2, 32], Dtype::Float32).unwrap();
        let quantized = |bits| quantized_linear(&w, 32, bits);
        let fused = FusedLinear::fuse(vec![quantized(4), quantized(8)], &[2, 2]).unwrap();
        assert!(matches!(fused, FusedLinear::Separate { ref parts, .. } if parts.len() == 2));
        let same = FusedLinear::fuse(vec![quantized(4), quantized(4)], &[2, 2]).unwrap();
        assert!(matches!(same, FusedLinear::Fused { .. }));
        let x = Array::ones(&[1, 32], Dtype::Float32).unwrap();
        for y in same
            .forward(&x)
            .unwrap()
            .into_iter()
            .chain(fused.forward(&x).unwrap())
        {
            assert_eq!(y.to_vec::<f32>().unwrap(), vec![32.0, 32.0]);
        }
    }
}
