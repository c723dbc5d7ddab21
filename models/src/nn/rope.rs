//! Rotary position embeddings (non-traditional "rotate half" layout), with the RoPE scalings of
//! the supported families: `default`, `linear`, `llama3` and `yarn` (model-families.md §1).

use super::spec::RopeSpec;
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
    /// yarn's attention factor: multiplies the rotated vectors (queries and keys alike).
    mscale: f32,
}

impl Rope {
    /// The RoPE of `spec`.
    ///
    /// `linear` divides positions by `factor`; `llama3` rewrites the periods
    /// `F_i = θ^(2i/d)` once here (long wavelengths × factor, a smooth ramp between
    /// `original_max_position_embeddings / high_freq_factor` and `/ low_freq_factor`); `yarn`
    /// blends interpolated and original frequencies over a ramp of rotation counts
    /// (`beta_fast`, `beta_slow`) and scales queries and keys by its attention factor. Other
    /// scalings are a [`Error::Config`].
    ///
    /// ```
    /// use mlx_models::nn::{spec::RopeSpec, Rope};
    /// let rope = Rope::new(&RopeSpec { theta: 10000.0, dims: 4, scaling: None })?;
    /// // pairs (0, 2) and (1, 3) turn at 1 and 1/100 radian per position
    /// assert_eq!(rope.inv_freq().to_vec::<f32>()?, vec![1.0, 0.01]);
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn new(spec: &RopeSpec) -> Result<Rope> {
        let (theta, dims) = (spec.theta, spec.dims);
        if dims <= 0 || dims % 2 != 0 {
            return Err(Error::Config(format!(
                "RoPE needs an even, positive head size, got {dims}"
            )));
        }
        let kind = spec
            .scaling
            .as_ref()
            .and_then(|s| s.rope_type.as_deref())
            .unwrap_or("default");
        let factor = || -> Result<f32> {
            match spec.scaling.as_ref().and_then(|s| s.factor) {
                Some(f) if f > 0.0 && f.is_finite() => Ok(f),
                other => Err(Error::Config(format!(
                    "rope scaling `{kind}` needs a positive `factor`, got {other:?}"
                ))),
            }
        };
        // (position scale, rewritten periods, attention factor)
        let (scale, periods, mscale) = match (kind, &spec.scaling) {
            ("default", _) | (_, None) => (1.0, None, 1.0),
            ("linear", Some(_)) => (1.0 / factor()?, None, 1.0),
            ("llama3", Some(s)) => (
                1.0,
                Some(llama3_periods(
                    theta,
                    dims,
                    factor()?,
                    s.low_freq_factor.unwrap_or(1.0),
                    s.high_freq_factor.unwrap_or(4.0),
                    s.original_max_position_embeddings.unwrap_or(8192) as f32,
                )?),
                1.0,
            ),
            ("proportional", Some(s)) => {
                let factor = s.factor.unwrap_or(1.0);
                if !(factor > 0.0 && factor.is_finite()) {
                    return Err(Error::Config(format!(
                        "proportional rope needs a positive `factor`, got {factor}"
                    )));
                }
                let share = s.partial_rotary_factor.unwrap_or(1.0);
                if !(0.0..=1.0).contains(&share) {
                    return Err(Error::Config(format!(
                        "`partial_rotary_factor` must lie in [0, 1], got {share}"
                    )));
                }
                (1.0 / factor, Some(proportional_periods(theta, dims, share)), 1.0)
            }
            ("yarn", Some(s)) => {
                let (periods, mscale) = yarn_periods(theta, dims, factor()?, s)?;
                (1.0, Some(periods), mscale)
            }
            (other, Some(_)) => {
                return Err(Error::Config(format!(
                    "rope scaling `{other}` is not supported (supported: default, linear, llama3, yarn, proportional)"
                )))
            }
        };
        let inv = inv_freq(
            periods.as_deref().unwrap_or(&default_periods(theta, dims)),
            scale,
        )?;
        Ok(Rope {
            dims,
            base: periods.is_none().then_some(theta),
            scale,
            freqs: periods
                .map(|p| Array::from_slice(&p, &[dims / 2]))
                .transpose()?,
            inv_freq: inv,
            mscale,
        })
    }

    /// Radians per position of each rotated pair (`[head_dim / 2]`), scaling included: the
    /// angle of pair `i` at position `p` is `p * inv_freq[i]`.
    pub fn inv_freq(&self) -> &Array {
        &self.inv_freq
    }

    /// The factor yarn multiplies the rotated queries and keys by (1 otherwise).
    pub fn mscale(&self) -> f32 {
        self.mscale
    }

    /// Rotates `x` (`[B, H, L, head_dim]`); row `t` of axis 2 gets position `offset + t`.
    pub fn forward(&self, x: &Array, offset: i32) -> Result<Array> {
        let y = fast::rope(
            x,
            self.dims,
            false,
            self.base,
            self.scale,
            offset,
            self.freqs.as_ref(),
        )?;
        Ok(if self.mscale == 1.0 {
            y
        } else {
            y.multiply(&Array::scalar(self.mscale).astype(y.dtype())?)?
        })
    }
}

/// yarn's periods and attention factor (transformers' `_compute_yarn_parameters`): with
/// `low`/`high` the head dimensions at which a pair turns `beta_fast` / `beta_slow` times over
/// the original context, pairs below `low` keep their frequency, pairs above `high` are
/// interpolated (`/ factor`), and a linear ramp blends the two in between. The attention factor
/// is `attention_factor`, else `m(factor, mscale) / m(factor, mscale_all_dim)` when both are
/// given, else `m(factor, 1)`, with `m(s, k) = 0.1·k·ln(s) + 1` (1 for `s ≤ 1`).
fn yarn_periods(
    theta: f32,
    dims: i32,
    factor: f32,
    s: &crate::config::RopeScaling,
) -> Result<(Vec<f32>, f32)> {
    let original = s.original_max_position_embeddings.ok_or_else(|| {
        Error::Config("yarn rope scaling needs `original_max_position_embeddings`".into())
    })? as f64;
    let (theta, factor, d) = (theta as f64, factor as f64, dims as f64);
    let beta_fast = s.beta_fast.unwrap_or(32.0) as f64;
    let beta_slow = s.beta_slow.unwrap_or(1.0) as f64;
    let correction_dim = |rotations: f64| {
        d * (original / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
    if s.truncate.unwrap_or(true) {
        low = low.floor();
        high = high.ceil();
    }
    let low = low.max(0.0);
    let high = high.min(d - 1.0);
    let high = if low == high { high + 0.001 } else { high };
    let periods = (0..dims / 2)
        .map(|i| {
            let period = theta.powf(2.0 * i as f64 / d);
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation = 1.0 - ramp;
            let inv =
                (1.0 / (factor * period)) * (1.0 - extrapolation) + (1.0 / period) * extrapolation;
            (1.0 / inv) as f32
        })
        .collect();
    let m = |scale: f64, k: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * k * scale.ln() + 1.0
        }
    };
    let mscale = match (s.attention_factor, s.mscale, s.mscale_all_dim) {
        (Some(a), _, _) => a as f64,
        (None, Some(a), Some(b)) if a != 0.0 && b != 0.0 => {
            m(factor, a as f64) / m(factor, b as f64)
        }
        _ => m(factor, 1.0),
    };
    Ok((periods, mscale as f32))
}

/// Gemma 4's proportional RoPE periods: the first `⌊share·d/2⌋` pairs turn with the default
/// periods `θ^(2i/d)` of the *whole* head (`d`, not the rotated part), the other pairs have an
/// infinite period (they do not turn). Pairs stay `(i, i + d/2)`: this is not "rotate the first
/// dimensions".
fn proportional_periods(theta: f32, dims: i32, share: f32) -> Vec<f32> {
    let rotated = (share as f64 * dims as f64 / 2.0).floor() as i32;
    let mut periods = default_periods(theta, dims);
    for p in periods.iter_mut().skip(rotated.max(0) as usize) {
        *p = f32::INFINITY;
    }
    periods
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
    fn proportional_rope_turns_only_the_first_pairs_with_the_whole_head_periods() {
        // d = 8, share 0.5: pairs 0 and 1 turn at θ^(-0/8) = 1 and θ^(-2/8) = 0.1 (θ = 1e4),
        // pairs 2 and 3 stand still; factor 2 halves the speeds.
        let scaling = crate::config::RopeScaling {
            rope_type: Some("proportional".into()),
            partial_rotary_factor: Some(0.5),
            factor: Some(2.0),
            ..Default::default()
        };
        let spec = RopeSpec {
            theta: 1e4,
            dims: 8,
            scaling: Some(scaling),
        };
        let rope = Rope::new(&spec).unwrap();
        let inv = rope.inv_freq().to_vec::<f32>().unwrap();
        assert_eq!(inv.len(), 4);
        assert!((inv[0] - 0.5).abs() < 1e-7 && (inv[1] - 0.05).abs() < 1e-7);
        assert_eq!(&inv[2..], &[0.0, 0.0]);
        // Row 0 (position 2): e_1 (pair (1, 5)) turns by 2·0.05 rad. Row 1 (position 3):
        // e_2 (pair (2, 6)) stays where it is.
        let mut x = vec![0.0f32; 16];
        x[1] = 1.0;
        x[8 + 2] = 1.0;
        let x = Array::from_slice(&x, &[1, 1, 2, 8]).unwrap();
        let y = rope.forward(&x, 2).unwrap().to_vec::<f32>().unwrap();
        let a = 2.0f32 * 0.05;
        assert!((y[1] - a.cos()).abs() < 1e-6 && (y[5] - a.sin()).abs() < 1e-6);
        assert_eq!((y[8 + 2], y[8 + 6]), (1.0, 0.0));
    }

    #[test]
    fn unsupported_scaling_is_a_config_error() {
        let scaling = crate::config::RopeScaling {
            rope_type: Some("longrope".into()),
            factor: Some(2.0),
            ..Default::default()
        };
        let spec = RopeSpec {
            theta: 1e4,
            dims: 16,
            scaling: Some(scaling),
        };
        assert!(matches!(Rope::new(&spec), Err(Error::Config(_))));
    }
}
