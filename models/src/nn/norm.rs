//! Root-mean-square normalisation.

use super::spec::{NormSpec, NormWeight};
use super::take_float;
use crate::error::{Error, Result};
use crate::load::BuildOptions;
use crate::weights::Weights;
use mlx_rs::{fast, Array};

/// RMSNorm over the last axis: `x / sqrt(mean(x²) + eps) * weight` (`mlx_fast_rms_norm`).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Array,
    eps: f32,
}

impl RmsNorm {
    /// Takes `<path>.weight` (shape `[dim]`).
    pub fn load(
        weights: &mut Weights,
        path: &str,
        dim: i32,
        eps: f32,
        options: &BuildOptions,
    ) -> Result<RmsNorm> {
        let weight = take_float(weights, &format!("{path}.weight"), &[dim], options)?;
        Ok(RmsNorm { weight, eps })
    }

    /// Takes `<path>.weight` (shape `[dim]`) as `spec` says: a `1 + w` weight is folded
    /// into `w` here, in float32, before the cast to the compute dtype (so every path then
    /// multiplies by the stored vector).
    ///
    /// ```
    /// use mlx_models::nn::{spec::{NormSpec, NormWeight}, RmsNorm};
    /// use mlx_models::{load::BuildOptions, weights::Weights};
    /// use mlx_rs::{Array, Dtype};
    /// let mut w = Weights::default();
    /// w.insert("n.weight", Array::from_slice(&[0.5f32, -1.0], &[2])?);
    /// let options = BuildOptions { dtype: Dtype::Float32, quantization: None, huge_pages: false };
    /// let spec = NormSpec { eps: 1e-6, weight: NormWeight::OnePlus };
    /// let norm = RmsNorm::load_spec(&mut w, "n", 2, spec, &options)?;
    /// assert_eq!(norm.weight().to_vec::<f32>()?, vec![1.5, 0.0]);
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn load_spec(
        weights: &mut Weights,
        path: &str,
        dim: i32,
        spec: NormSpec,
        options: &BuildOptions,
    ) -> Result<RmsNorm> {
        let name = format!("{path}.weight");
        let weight = match spec.weight {
            NormWeight::Direct => take_float(weights, &name, &[dim], options)?,
            NormWeight::OnePlus => {
                let w = weights.take_shaped(&name, &[dim])?;
                if !w.dtype().is_floating() {
                    return Err(Error::Config(format!(
                        "tensor `{name}` has dtype {}, expected a floating-point dtype",
                        w.dtype()
                    )));
                }
                w.astype(mlx_rs::Dtype::Float32)?
                    .add(&mlx_rs::Array::scalar(1.0f32))?
                    .astype(options.dtype)?
            }
        };
        Ok(RmsNorm {
            weight,
            eps: spec.eps,
        })
    }

    /// The scale vector.
    pub fn weight(&self) -> &Array {
        &self.weight
    }

    /// The epsilon added to the mean square.
    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Normalises `x` (`[..., dim]`).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(fast::rms_norm(x, Some(&self.weight), self.eps)?)
    }

    /// Normalises `x` in its own precision and returns the result in the weight's dtype: the
    /// residual stream may be wider than the compute dtype (float32 under float16, see
    /// [`super::Decoder`]), the layers it feeds are not.
    pub fn forward_to_weight_dtype(&self, x: &Array) -> Result<Array> {
        let dtype = self.weight.dtype();
        if x.dtype() == dtype {
            return self.forward(x);
        }
        let weight = self.weight.astype(x.dtype())?;
        Ok(fast::rms_norm(x, Some(&weight), self.eps)?.astype(dtype)?)
    }

    /// `norm.forward(x)` when a norm is given, else `x` itself (a cheap handle copy).
    pub fn apply(norm: Option<&RmsNorm>, x: &Array) -> Result<Array> {
        match norm {
            Some(n) => n.forward(x),
            None => Ok(x.clone()),
        }
    }
}
