//! Gemma 4's per-layer embeddings (E2B/E4B), as [`PerLayerEmbeddingSpec`] describes them: a
//! second embedding table gives every layer its own `width` values per token, mixed with a
//! projection of the main embedding ([`PerLayerEmbeddings`]); each layer adds a gated
//! projection of its slice after its MLP residual ([`PerLayerInput`]).

use super::mlp::gated;
use super::spec::{Activation, NormSpec, PerLayerEmbeddingSpec};
use super::{Embedding, Linear, RmsNorm};
use crate::error::Result;
use crate::load::BuildOptions;
use crate::weights::Weights;
use mlx_rs::ops::concatenate;
use mlx_rs::Array;

/// The model-level part: `model.embed_tokens_per_layer`, `model.per_layer_model_projection`
/// and `model.per_layer_projection_norm`.
#[derive(Debug, Clone)]
pub struct PerLayerEmbeddings {
    table: Embedding,
    projection: Linear,
    norm: RmsNorm,
    /// `bf16(√width)`.
    token_scale: f32,
    /// `hidden^-½`.
    projection_scale: f32,
    layers: i32,
    spec: PerLayerEmbeddingSpec,
}

impl PerLayerEmbeddings {
    /// Takes the three model-level tensors for `layers` layers of `spec.width` values.
    pub fn load(
        weights: &mut Weights,
        hidden: i32,
        layers: i32,
        spec: &PerLayerEmbeddingSpec,
        options: &BuildOptions,
    ) -> Result<PerLayerEmbeddings> {
        let total = layers * spec.width;
        Ok(PerLayerEmbeddings {
            table: Embedding::load(
                weights,
                "model.embed_tokens_per_layer",
                spec.vocab,
                total,
                options,
            )?,
            projection: Linear::load(
                weights,
                "model.per_layer_model_projection",
                hidden,
                total,
                false,
                options,
            )?,
            norm: RmsNorm::load_spec(
                weights,
                "model.per_layer_projection_norm",
                spec.width,
                spec.norm,
                options,
            )?,
            token_scale: half::bf16::from_f64((spec.width as f64).sqrt()).to_f32(),
            projection_scale: (hidden as f32).powf(-0.5),
            layers,
            spec: *spec,
        })
    }

    /// `P = (norm(proj(h₀) · hidden^-½) + E_pl[ids] · √width) · 2^-½` as `[B, L, layers,
    /// width]`, for the ids `tokens` (`[B, L]`) and their scaled main embedding `h₀`.
    pub fn forward(&self, tokens: &Array, embedded: &Array) -> Result<Array> {
        let shape = tokens.shape();
        let split = [shape[0], shape[1], self.layers, self.spec.width];
        let dtype = self.norm.weight().dtype();
        let scalar = |v: f32| Array::scalar(v).astype(dtype);
        let token = self
            .table
            .forward(tokens)?
            .multiply(&scalar(self.token_scale)?)?
            .reshape(&split)?;
        let context = self
            .projection
            .forward(&embedded.astype(dtype)?)?
            .multiply(&scalar(self.projection_scale)?)?
            .reshape(&split)?;
        let context = self.norm.forward(&context)?;
        Ok(context
            .add(&token)?
            .multiply(&scalar(std::f32::consts::FRAC_1_SQRT_2)?)?)
    }
}

/// The layer-level part: `y + norm(proj(act(gate(y)) · P_layer))` with
/// `per_layer_input_gate`, `per_layer_projection` and `post_per_layer_input_norm`.
#[derive(Debug, Clone)]
pub struct PerLayerInput {
    gate: Linear,
    projection: Linear,
    norm: RmsNorm,
    activation: Activation,
}

impl PerLayerInput {
    /// Takes `<layer>.per_layer_input_gate` (`hidden → width`), `<layer>.per_layer_projection`
    /// (`width → hidden`) and `<layer>.post_per_layer_input_norm`.
    pub fn load(
        weights: &mut Weights,
        layer: &str,
        hidden: i32,
        width: i32,
        norm: NormSpec,
        activation: Activation,
        options: &BuildOptions,
    ) -> Result<PerLayerInput> {
        Ok(PerLayerInput {
            gate: Linear::load(
                weights,
                &format!("{layer}.per_layer_input_gate"),
                hidden,
                width,
                false,
                options,
            )?,
            projection: Linear::load(
                weights,
                &format!("{layer}.per_layer_projection"),
                width,
                hidden,
                false,
                options,
            )?,
            norm: RmsNorm::load_spec(
                weights,
                &format!("{layer}.post_per_layer_input_norm"),
                hidden,
                norm,
                options,
            )?,
            activation,
        })
    }

    /// `norm(proj(act(gate(y)) · p))` for the residual `y` (`[B, L, hidden]`) and this layer's
    /// slice `p` (`[B, L, width]`): the caller adds it to `y`.
    pub fn forward(&self, y: &Array, p: &Array) -> Result<Array> {
        let dtype = self.norm.weight().dtype();
        let g = self.gate.forward(&y.astype(dtype)?)?;
        // act(g) · p as the fused gate kernel computes `act(gate) · up`.
        let h = gated(&concatenate(&[&g, &p.astype(dtype)?], -1)?, self.activation)?;
        self.norm.forward(&self.projection.forward(&h)?)
    }
}
