//! The gated feed-forward block: `down(act(gate(x)) * up(x))`.

use super::spec::{Activation, MlpSpec};
use super::{FusedLinear, Linear};
use crate::error::Result;
use crate::load::BuildOptions;
use crate::weights::Weights;
use mlx_rs::Array;

/// Gated MLP (SwiGLU or GeGLU by [`MlpSpec::activation`]). The layer around it owns the norms
/// and the residual.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// gate and up projections, fused into one product when their storage allows.
    gate_up_proj: FusedLinear,
    down_proj: Linear,
    activation: Activation,
}

impl Mlp {
    /// The gate and up projections, fused or not.
    pub(crate) fn gate_up_projection(&self) -> &FusedLinear {
        &self.gate_up_proj
    }

    /// Its projections: gate/up (fused or not), then down.
    pub(crate) fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut l = self.gate_up_proj.linears_mut();
        l.push(&mut self.down_proj);
        l
    }

    /// Takes `<path>.{gate,up,down}_proj` (`hidden → intermediate → hidden`, with biases when
    /// `spec.bias`).
    pub fn load(
        weights: &mut Weights,
        path: &str,
        hidden: i32,
        spec: &MlpSpec,
        options: &BuildOptions,
    ) -> Result<Mlp> {
        let inter = spec.intermediate;
        let proj = |w: &mut Weights, name: &str, inp: i32, out: i32| {
            Linear::load(w, &format!("{path}.{name}"), inp, out, spec.bias, options)
        };
        let gate = proj(weights, "gate_proj", hidden, inter)?;
        let up = proj(weights, "up_proj", hidden, inter)?;
        Ok(Mlp {
            gate_up_proj: FusedLinear::fuse(vec![gate, up], &[inter, inter])?,
            down_proj: proj(weights, "down_proj", inter, hidden)?,
            activation: spec.activation,
        })
    }

    /// The fused gate/up projection.
    pub(crate) fn gate_up_proj(&self) -> &FusedLinear {
        &self.gate_up_proj
    }

    /// The down projection.
    pub(crate) fn down_proj(&self) -> &Linear {
        &self.down_proj
    }

    /// The gate's activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// `down(act(gate(x)) * up(x))` for `x` `[..., hidden]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let gate_up = self.gate_up_proj.forward_joined(x, None)?;
        self.down_proj.forward(&gated(&gate_up, self.activation)?)
    }
}

/// `act(gate) * up` where `x`'s last axis is `[gate | up]`: one native primitive on the CPU
/// (float32; the kernels the native decoder layer runs), MLX's ops elsewhere (GELU's tanh
/// form for GeGLU, as transformers' `gelu_pytorch_tanh`).
///
/// ```
/// use mlx_models::nn::{mlp::gated, spec::Activation};
/// use mlx_rs::Array;
/// let x = Array::from_slice(&[1.0f32, 2.0], &[1, 2])?; // gate 1, up 2
/// let g = gated(&x, Activation::GeluTanh)?.to_vec::<f32>()?[0];
/// let gelu1 = 0.5 * (1.0 + ((2.0f32 / std::f32::consts::PI).sqrt() * 1.044715).tanh());
/// assert!((g - 2.0 * gelu1).abs() < 1e-6);
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn gated(x: &Array, activation: Activation) -> Result<Array> {
    Ok(match activation {
        Activation::Silu => mlx_rs::native::swiglu(x)?,
        Activation::GeluTanh => mlx_rs::native::gelu_tanh_glu(x)?,
    })
}
