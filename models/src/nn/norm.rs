//! Root-mean-square normalisation.

use super::take_float;
use crate::error::Result;
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

    /// `norm.forward(x)` when a norm is given, else `x` itself (a cheap handle copy).
    pub fn apply(norm: Option<&RmsNorm>, x: &Array) -> Result<Array> {
        match norm {
            Some(n) => n.forward(x),
            None => Ok(x.clone()),
        }
    }
}
