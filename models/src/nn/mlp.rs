//! The gated feed-forward block of Llama-style models.

use super::{FusedLinear, Linear, RmsNorm};
use crate::error::Result;
use crate::load::BuildOptions;
use crate::weights::Weights;
use mlx_rs::native::QuantizedProjection;
use mlx_rs::Array;

/// The MLP half of [`mlx_rs::native::DecoderLayerWeights`] (see [`Mlp::native_layer_weights`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NativeMlpWeights<'a> {
    pub pre_mlp_norm: (&'a Array, f32),
    pub gate_up: QuantizedProjection<'a>,
    pub down: QuantizedProjection<'a>,
}

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// gate and up projections, fused into one product when their storage allows.
    gate_up_proj: FusedLinear,
    down_proj: Linear,
}

impl Mlp {
    /// Takes `<path>.{gate,up,down}_proj` (`hidden → intermediate → hidden`, with biases when
    /// `bias`).
    pub fn load(
        weights: &mut Weights,
        path: &str,
        hidden: i32,
        intermediate: i32,
        bias: bool,
        options: &BuildOptions,
    ) -> Result<Mlp> {
        let proj = |w: &mut Weights, name: &str, inp: i32, out: i32| {
            Linear::load(w, &format!("{path}.{name}"), inp, out, bias, options)
        };
        let gate = proj(weights, "gate_proj", hidden, intermediate)?;
        let up = proj(weights, "up_proj", hidden, intermediate)?;
        Ok(Mlp {
            gate_up_proj: FusedLinear::fuse(vec![gate, up], &[intermediate, intermediate])?,
            down_proj: proj(weights, "down_proj", intermediate, hidden)?,
        })
    }

    /// The MLP half of a native decoder layer, when gate and up are fused, every projection
    /// is stored quantized and none has a bias.
    pub(crate) fn native_layer_weights<'a>(
        &'a self,
        norm: &'a RmsNorm,
    ) -> Option<NativeMlpWeights<'a>> {
        let (gate_up, None) = self.gate_up_proj.fused()?.quantized_projection()? else {
            return None;
        };
        let (down, None) = self.down_proj.quantized_projection()? else {
            return None;
        };
        Some(NativeMlpWeights {
            pre_mlp_norm: (norm.weight(), norm.eps()),
            gate_up,
            down,
        })
    }

    /// `down(silu(gate(norm(x))) * up(norm(x))) + residual` (norm and residual optional;
    /// they run inside the quantized projections where the native kernel serves them).
    pub fn forward(
        &self,
        x: &Array,
        norm: Option<&RmsNorm>,
        residual: Option<&Array>,
    ) -> Result<Array> {
        // silu(gate) * up from the joined [gate | up] output: one native primitive on the
        // CPU, MLX's ops elsewhere.
        let gate_up = self.gate_up_proj.forward_joined(x, norm)?;
        self.down_proj
            .forward_fused(&mlx_rs::native::swiglu(&gate_up)?, None, residual)
    }
}
