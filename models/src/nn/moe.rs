//! A mixture of experts beside the dense MLP (Gemma 4 26B-A4B), as [`MoeSpec`] describes it:
//! a router picks `top_k` experts per token, and the experts run as gathered matrix products
//! over the stacked expert weights (MLX's `gather_mm`, or `gather_qmm` when the experts are
//! stored quantized) — one product per projection for all tokens, never a loop over experts.

use super::linear::QuantizedMatrix;
use super::mlp::gated;
use super::spec::{MoeSpec, NormSpec};
use super::{take_float, Linear, RmsNorm};
use crate::error::{Error, Result};
use crate::load::BuildOptions;
use crate::weights::Weights;
use mlx_rs::ops::concatenate;
use mlx_rs::{fast, quant, s, Array, Dtype};

/// Chooses each token's experts and their weights:
///
/// ```text
/// p = softmax_f32(proj(rms_norm(h) · scale · hidden^-½))
/// chosen = top_k(p);  w = p[chosen] / Σ p[chosen] · per_expert_scale[chosen]
/// ```
#[derive(Debug, Clone)]
pub struct Router {
    proj: Linear,
    /// `scale · hidden^-½` (`[hidden]`).
    scale: Array,
    per_expert_scale: Array,
    eps: f32,
    top_k: i32,
}

impl Router {
    /// Takes `<path>.proj`, `<path>.scale` (`[hidden]`) and `<path>.per_expert_scale`
    /// (`[experts]`).
    pub fn load(
        weights: &mut Weights,
        path: &str,
        hidden: i32,
        spec: &MoeSpec,
        eps: f32,
        options: &BuildOptions,
    ) -> Result<Router> {
        let proj = Linear::load(
            weights,
            &format!("{path}.proj"),
            hidden,
            spec.experts,
            false,
            options,
        )?;
        let scale = take_float(weights, &format!("{path}.scale"), &[hidden], options)?;
        let root = Array::scalar((hidden as f32).powf(-0.5)).astype(scale.dtype())?;
        let per_expert_scale = take_float(
            weights,
            &format!("{path}.per_expert_scale"),
            &[spec.experts],
            options,
        )?;
        if !(1..=spec.experts).contains(&spec.top_k) {
            return Err(Error::Config(format!(
                "top_k_experts = {} must be in 1..={} (the number of experts)",
                spec.top_k, spec.experts
            )));
        }
        Ok(Router {
            proj,
            scale: scale.multiply(&root)?,
            per_expert_scale,
            eps,
            top_k: spec.top_k,
        })
    }

    /// The chosen experts (`[N, top_k]`, uint32) and their weights (`[N, top_k]`, in `h`'s
    /// dtype) for the tokens `h` (`[N, hidden]`).
    pub fn route(&self, h: &Array) -> Result<(Array, Array)> {
        let x = fast::rms_norm(h, None, self.eps)?.multiply(&self.scale)?;
        let p = self
            .proj
            .forward(&x)?
            .astype(Dtype::Float32)?
            .softmax([-1], true)?;
        let k = self.top_k;
        let chosen = p
            .negative()?
            .argpartition(k - 1, -1)?
            .slice(s![.., ..k])?
            .astype(Dtype::Uint32)?;
        let top = p.take_along_axis(&chosen, -1)?;
        let w = top.divide(&top.sum([-1], true)?)?.multiply(
            &self
                .per_expert_scale
                .astype(Dtype::Float32)?
                .take(&chosen, 0)?,
        )?;
        Ok((chosen, w.astype(h.dtype())?))
    }
}

/// A stack of expert matrices, `[experts, out, in]` in the checkpoint's orientation.
#[derive(Debug, Clone)]
enum ExpertWeights {
    /// `Wᵀ` per expert, `[experts, in, out]` (a transposed view).
    Dense(Array),
    /// Packed `[experts, out, in·bits/32]`.
    Quantized(QuantizedMatrix),
}

impl ExpertWeights {
    /// `x` (`[N, 1, 1, in]`) times expert `chosen[n, j]` for every token `n` and choice `j`:
    /// `[N, top_k, 1, out]`.
    fn gather(&self, x: &Array, chosen: &Array) -> Result<Array> {
        Ok(match self {
            ExpertWeights::Dense(wt) => quant::gather_mm(x, wt, None, Some(chosen), false)?,
            ExpertWeights::Quantized(q) => quant::gather_qmm(
                x,
                &q.weight,
                &q.scales,
                &q.biases,
                None,
                Some(chosen),
                true,
                q.params.group_size,
                q.params.bits,
                false,
            )?,
        })
    }

    /// Whether the stack is stored quantized.
    fn is_quantized(&self) -> bool {
        matches!(self, ExpertWeights::Quantized(_))
    }
}

/// The experts: `e(x) = down_e(act(gate_e(x)) · up_e(x))`.
#[derive(Debug, Clone)]
pub struct Experts {
    /// Gate and up, stacked along the outputs (`[gate | up]`, `2·intermediate`).
    gate_up: ExpertWeights,
    down: ExpertWeights,
    spec: MoeSpec,
}

impl Experts {
    /// Takes the fused stacks `<path>.gate_up_proj.weight` (`[E, 2I, hidden]`, gate rows first)
    /// and `<path>.down_proj.weight` (`[E, hidden, I]`; Hugging Face's bare parameters, renamed
    /// by the family, and GGUF's, dense or quantized), or mlx-lm's split form
    /// `<path>.switch_glu.{gate,up,down}_proj` (dense `.weight`, or MLX-quantized triplets).
    pub fn load(
        weights: &mut Weights,
        path: &str,
        hidden: i32,
        spec: &MoeSpec,
        options: &BuildOptions,
    ) -> Result<Experts> {
        let (e, i) = (spec.experts, spec.intermediate);
        let fused = format!("{path}.gate_up_proj");
        // A stack under `<p>.weight` (GGUF), dense or as an MLX-quantized triplet.
        let stack = |w: &mut Weights, p: &str, out: i32, inp: i32| -> Result<ExpertWeights> {
            Ok(
                match QuantizedMatrix::load_stacked(w, p, &[e], out, inp, options)? {
                    // MLX's gather_qmm casts half-precision scales to the activations' dtype
                    // on every call, over every expert: cast them once here.
                    Some(q) => ExpertWeights::Quantized(QuantizedMatrix {
                        scales: q.scales.astype(options.dtype)?,
                        biases: q.biases.astype(options.dtype)?,
                        ..q
                    }),
                    None => ExpertWeights::Dense(take_float(
                        w,
                        &format!("{p}.weight"),
                        &[e, out, inp],
                        options,
                    )?),
                },
            )
        };
        let transposed = |w: ExpertWeights| -> Result<ExpertWeights> {
            Ok(match w {
                ExpertWeights::Dense(w) => ExpertWeights::Dense(w.swapaxes(1, 2)?),
                q => q,
            })
        };
        let (gate_up, down) = if weights.contains(&format!("{fused}.weight")) {
            (
                transposed(stack(weights, &fused, 2 * i, hidden)?)?,
                transposed(stack(weights, &format!("{path}.down_proj"), hidden, i)?)?,
            )
        } else {
            let split = format!("{path}.switch_glu");
            let gate = stack(weights, &format!("{split}.gate_proj"), i, hidden)?;
            let up = stack(weights, &format!("{split}.up_proj"), i, hidden)?;
            let down = transposed(stack(weights, &format!("{split}.down_proj"), hidden, i)?)?;
            (stack_outputs(gate, up, &split)?, down)
        };
        Ok(Experts {
            gate_up,
            down,
            spec: *spec,
        })
    }

    /// `Σ_j w[n, j] · e_{chosen[n, j]}(x[n])` for `x` `[N, hidden]`.
    pub fn forward(&self, x: &Array, chosen: &Array, w: &Array) -> Result<Array> {
        let shape = x.shape();
        let (n, hidden) = (shape[0], shape[1]);
        let x = x.reshape(&[n, 1, 1, hidden])?;
        let gate_up = self.gate_up.gather(&x, chosen)?;
        let h = gated(&gate_up, self.spec.activation)?;
        let y = self
            .down
            .gather(&h, chosen)?
            .reshape(&[n, self.spec.top_k, hidden])?;
        Ok(y.multiply(&w.expand_dims(&[-1])?)?.sum([1], false)?)
    }

    /// Whether the experts are stored quantized (then `gather_qmm` runs them).
    pub fn is_quantized(&self) -> bool {
        self.gate_up.is_quantized() && self.down.is_quantized()
    }
}

/// `gate` and `up` (each `[E, I, in]`) as one stack `[E, 2I, in]` (dense: its transposed view);
/// both must be stored alike.
fn stack_outputs(gate: ExpertWeights, up: ExpertWeights, path: &str) -> Result<ExpertWeights> {
    Ok(match (gate, up) {
        (ExpertWeights::Dense(g), ExpertWeights::Dense(u)) => {
            ExpertWeights::Dense(concatenate(&[&g, &u], 1)?.swapaxes(1, 2)?)
        }
        (ExpertWeights::Quantized(g), ExpertWeights::Quantized(u)) if g.params == u.params => {
            ExpertWeights::Quantized(QuantizedMatrix {
                weight: concatenate(&[&g.weight, &u.weight], 1)?,
                scales: concatenate(&[&g.scales, &u.scales], 1)?,
                biases: concatenate(&[&g.biases, &u.biases], 1)?,
                params: g.params,
            })
        }
        _ => {
            return Err(Error::Config(format!(
                "`{path}.gate_proj` and `{path}.up_proj` must be stored alike (both dense, or quantized with the same group size and bits)"
            )))
        }
    })
}

/// The mixture beside a layer's MLP:
/// `f = mlp_out_1(mlp(x)) + mlp_out_2(experts(pre_mlp_2(h)))` with the router reading `h`.
#[derive(Debug, Clone)]
pub struct MoeBlock {
    pub(crate) router: Router,
    pub(crate) experts: Experts,
    /// `pre_feedforward_layernorm_2`.
    pub(crate) pre_experts: RmsNorm,
    /// `post_feedforward_layernorm_1` (on the dense MLP's output).
    pub(crate) mlp_out_1: RmsNorm,
    /// `post_feedforward_layernorm_2` (on the experts' output).
    pub(crate) experts_out: RmsNorm,
    /// Tensor parallel: the group whose ranks hold the other columns of every expert; the
    /// experts' outputs are summed over it before their norm.
    pub(crate) all_sum: Option<std::sync::Arc<mlx_rs::distributed::Group>>,
}

impl MoeBlock {
    /// Takes `<layer>.router.*`, `<layer>.experts.*` and the three extra norms.
    pub fn load(
        weights: &mut Weights,
        layer: &str,
        hidden: i32,
        spec: &MoeSpec,
        norm: NormSpec,
        options: &BuildOptions,
    ) -> Result<MoeBlock> {
        let n = |w: &mut Weights, name: &str| {
            RmsNorm::load_spec(w, &format!("{layer}.{name}"), hidden, norm, options)
        };
        Ok(MoeBlock {
            router: Router::load(
                weights,
                &format!("{layer}.router"),
                hidden,
                spec,
                norm.eps,
                options,
            )?,
            experts: Experts::load(weights, &format!("{layer}.experts"), hidden, spec, options)?,
            pre_experts: n(weights, "pre_feedforward_layernorm_2")?,
            mlp_out_1: n(weights, "post_feedforward_layernorm_1")?,
            experts_out: n(weights, "post_feedforward_layernorm_2")?,
            all_sum: None,
        })
    }

    /// `mlp_out_1(dense) + experts_out(experts(pre_experts(h)))` for the residual `h`
    /// (`[B, L, hidden]`) and the dense MLP's output `dense`.
    pub fn forward(&self, h: &Array, dense: &Array) -> Result<Array> {
        let shape = h.shape();
        let hidden = shape[shape.len() - 1];
        let flat = h.reshape(&[-1, hidden])?;
        let (chosen, w) = self.router.route(&flat)?;
        let x = self.pre_experts.forward_to_weight_dtype(&flat)?;
        let mut y = self.experts.forward(&x, &chosen, &w.astype(x.dtype())?)?;
        if let Some(group) = &self.all_sum {
            y = group.all_sum(&y)?;
        }
        let y = self.experts_out.forward(&y.reshape(&shape)?)?;
        Ok(self.mlp_out_1.forward(dense)?.add(&y)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuantizationConfig;
    use mlx_rs::random;

    /// Experts stored as MLX-quantized stacks (gate, up and down through `gather_qmm`) give
    /// the outputs of the same experts dequantized by MLX and run through `gather_mm`.
    #[test]
    fn quantized_experts_match_their_dequantized_stacks() {
        let (e, i, h, k) = (4, 64, 64, 2);
        let spec = MoeSpec {
            experts: e,
            top_k: k,
            intermediate: i,
            activation: crate::nn::spec::Activation::GeluTanh,
        };
        let draw = |seed: u64, shape: &[i32]| {
            let key = random::key(seed).unwrap();
            random::normal(shape, Dtype::Float32, 0.0, 0.1, Some(&key)).unwrap()
        };
        let mut quantized = Weights::default();
        let mut dense = Weights::default();
        for (j, (name, shape)) in [
            ("gate_proj", [e, i, h]),
            ("up_proj", [e, i, h]),
            ("down_proj", [e, h, i]),
        ]
        .into_iter()
        .enumerate()
        {
            let w = draw(j as u64, &shape);
            let (q, s, b) = quant::quantize(&w, 32, 4).unwrap();
            let p = format!("x.switch_glu.{name}");
            dense.insert(
                format!("{p}.weight"),
                quant::dequantize(&q, &s, &b, 32, 4).unwrap(),
            );
            quantized.insert(format!("{p}.weight"), q);
            quantized.insert(format!("{p}.scales"), s);
            quantized.insert(format!("{p}.biases"), b);
        }
        let q = QuantizationConfig::from_value(&serde_json::json!({"group_size": 32, "bits": 4}))
            .unwrap();
        let options = |quantization| BuildOptions {
            huge_pages: false,
            dtype: Dtype::Float32,
            quantization,
        };
        let eq = Experts::load(&mut quantized, "x", h, &spec, &options(Some(q))).unwrap();
        let ed = Experts::load(&mut dense, "x", h, &spec, &options(None)).unwrap();
        assert!(eq.is_quantized() && !ed.is_quantized());
        quantized.finish().unwrap();
        dense.finish().unwrap();
        let x = draw(3, &[5, h]);
        let chosen = Array::from_slice(&[0u32, 3, 1, 2, 2, 0, 3, 1, 1, 3], &[5, k]).unwrap();
        let w = Array::from_slice(
            &[0.7f32, 0.3, 0.5, 0.5, 1.0, 0.0, 0.2, 0.8, 0.6, 0.4],
            &[5, k],
        )
        .unwrap();
        let a = eq
            .forward(&x, &chosen, &w)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let b = ed
            .forward(&x, &chosen, &w)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            scale > 1e-3 && diff <= 1e-5 * scale.max(1.0),
            "diff {diff}, scale {scale}"
        );
    }
}
