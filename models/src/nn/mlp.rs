//! The gated feed-forward block of Llama-style models.

use super::Linear;
use crate::error::Result;
use crate::load::BuildOptions;
use crate::weights::Weights;
use mlx_rs::Array;

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
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
        Ok(Mlp {
            gate_proj: proj(weights, "gate_proj", hidden, intermediate)?,
            up_proj: proj(weights, "up_proj", hidden, intermediate)?,
            down_proj: proj(weights, "down_proj", intermediate, hidden)?,
        })
    }

    /// Applies the block to `x` (`[..., hidden]`).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let gate = self.gate_proj.forward(x)?.silu()?;
        let up = self.up_proj.forward(x)?;
        self.down_proj.forward(&gate.multiply(&up)?)
    }
}
