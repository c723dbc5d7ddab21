//! Rotary position embeddings (non-traditional "rotate half" layout), with the RoPE scalings of
//! the supported families: `default`, `linear` and `llama3` (model-families.md §1).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use mlx_rs::{fast, Array};

/// RoPE over the whole head: `mlx_fast_rope` with either a base or precomputed periods.
#[derive(Debug, Clone)]
pub struct Rope {
    dims: i32,
    base: Option<f32>,
    scale: f32,
    /// Periods `F_i` (`[dims / 2]`), when a scaling rewrote them.
    freqs: Option<Array>,
    /// `scale / F_i` for each rotated pair (what the native decode step takes).
    inv_freq: Array,
}

impl Rope {
    /// The RoPE of `config`: `rope_theta`, `head_dim` and `rope_scaling` / `rope_parameters`.
    ///
    /// `linear` divides positions by `factor`; `llama3` rewrites the periods
    /// `F_i = θ^(2i/d)` once here (long wavelengths × factor, a smooth ramp between
    /// `original_max_position_embeddings / high_freq_factor` and `/ low_freq_factor`).
    /// Other scalings are a [`Error::Config`].
    pub fn from_config(config: &ModelConfig) -> Result<Rope> {
        let dims = super::dim("head_dim", config.head_dim())?;
        let theta = config.rope_theta();
        // (position scale, llama3's rewritten periods)
        let (scale, llama3) = match config.rope_scaling() {
            None => (1.0, None),
            Some(scaling) => {
                let kind = scaling.rope_type.as_deref().unwrap_or("default");
                let factor = || -> Result<f32> {
                    match scaling.factor {
                        Some(f) if f > 0.0 && f.is_finite() => Ok(f),
                        other => Err(Error::Config(format!(
                            "rope scaling `{kind}` needs a positive `factor`, got {other:?}"
                        ))),
                    }
                };
                match kind {
                    "linear" => (1.0 / factor()?, None),
                    "llama3" => (
                        1.0,
                        Some(llama3_periods(
                            theta,
                            dims,
                            factor()?,
                            scaling.low_freq_factor.unwrap_or(1.0),
                            scaling.high_freq_factor.unwrap_or(4.0),
                            scaling.original_max_position_embeddings.unwrap_or(8192) as f32,
                        )?),
                    ),
                    other => {
                        return Err(Error::Config(format!(
                            "rope scaling `{other}` is not supported (supported: default, linear, llama3)"
                        )))
                    }
                }
            }
        };
        let periods = llama3
            .clone()
            .unwrap_or_else(|| default_periods(theta, dims));
        Ok(Rope {
            dims,
            base: llama3.is_none().then_some(theta),
            scale,
            freqs: llama3
                .map(|p| Array::from_slice(&p, &[dims / 2]))
                .transpose()?,
            inv_freq: inv_freq(&periods, scale)?,
        })
    }

    /// Radians per position of each rotated pair (`[head_dim / 2]`), scaling included: the
    /// angle of pair `i` at position `p` is `p * inv_freq[i]`.
    pub fn inv_freq(&self) -> &Array {
        &self.inv_freq
    }

    /// Rotates `x` (`[B, H, L, head_dim]`); row `t` of axis 2 gets position `offset + t`.
    pub fn forward(&self, x: &Array, offset: i32) -> Result<Array> {
        Ok(fast::rope(
            x,
            self.dims,
            false,
            self.base,
            self.scale,
            offset,
            self.freqs.as_ref(),
        )?)
    }
}

/// Llama 3.1 RoPE periods `F_i` (MLX's `freqs`: the reciprocals of HF's `inv_freq`).
/// `θ^(2i/d)` for each rotated pair `i < d/2`: the period of pair `i`, in positions per radian.
fn default_periods(theta: f32, dims: i32) -> Vec<f32> {
    (0..dims / 2)
        .map(|i| (theta as f64).powf(2.0 * i as f64 / dims as f64) as f32)
        .collect()
}

/// The rotation speed of each pair, `scale / period` (radians per position).
fn inv_freq(periods: &[f32], scale: f32) -> Result<Array> {
    let v: Vec<f32> = periods
        .iter()
        .map(|p| (scale as f64 / *p as f64) as f32)
        .collect();
    Ok(Array::from_slice(&v, &[v.len() as i32])?)
}

fn llama3_periods(
    theta: f32,
    dims: i32,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_max_position: f32,
) -> Result<Vec<f32>> {
    if high_freq_factor <= low_freq_factor || low_freq_factor <= 0.0 {
        return Err(Error::Config(format!(
            "llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor, got {low_freq_factor} and {high_freq_factor}"
        )));
    }
    let (theta, factor) = (theta as f64, factor as f64);
    let (low, high, orig) = (
        low_freq_factor as f64,
        high_freq_factor as f64,
        original_max_position as f64,
    );
    let low_wavelen = orig / low;
    let high_wavelen = orig / high;
    Ok((0..dims / 2)
        .map(|i| {
            let period = theta.powf(2.0 * i as f64 / dims as f64);
            let wavelen = 2.0 * std::f64::consts::PI * period;
            let scaled = if wavelen > low_wavelen {
                period * factor
            } else if wavelen > high_wavelen {
                let smooth = (orig / wavelen - low) / (high - low);
                period / ((1.0 - smooth) / factor + smooth)
            } else {
                period
            };
            scaled as f32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_periods_by_hand() {
        // d = 16, θ = 1e4, orig 16, factor 4, low 1, high 4: wavelengths bounds 16 and 4.
        // i = 0: F = 1, wavelength 2π lies between them: s = (16/2π - 1)/3, so
        //   (1 - s)/4 + s = 1/4 + 3s/4 = 2/π and F = π/2.
        // i ≥ 1: wavelength 2π·10^(i/2) > 16, so F = 4 · 10^(i/2).
        let f = llama3_periods(1e4, 16, 4.0, 1.0, 4.0, 16.0).unwrap();
        assert_eq!(f.len(), 8);
        assert!((f[0] - std::f32::consts::FRAC_PI_2).abs() < 1e-6);
        for (i, &fi) in f.iter().enumerate().skip(1) {
            let want = 4.0 * 10f32.powf(i as f32 / 2.0);
            assert!((fi - want).abs() / want < 1e-6, "{i}: {fi} vs {want}");
        }
        // Short wavelengths are left alone: with orig 4096 the first period stays 1.
        assert_eq!(
            llama3_periods(1e4, 16, 4.0, 1.0, 4.0, 4096.0).unwrap()[0],
            1.0
        );
    }

    #[test]
    fn unsupported_scaling_is_a_config_error() {
        let text = r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":1,"intermediate_size":128,
            "num_attention_heads":4,"vocab_size":10,"rope_scaling":{"rope_type":"longrope","factor":2.0}}"#;
        let c = ModelConfig::from_json(text).unwrap();
        assert!(matches!(Rope::from_config(&c), Err(Error::Config(_))));
    }
}
