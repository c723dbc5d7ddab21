//! Lowering decoder layers to the native CPU primitives ([`mlx_rs::native::decoder_layer`],
//! [`mlx_rs::native::decoder_stack`]), opt-in by feature.
//!
//! A layer offers a plan only when its projections are stored quantized and fused (q/k/v,
//! gate/up), its biases are where the kernels take them (q/k/v only) and every numerical
//! feature its [`BlockSpec`](super::spec::BlockSpec) uses is in [`NATIVE_FEATURES`]; anything
//! else runs on the reference path. The plan is explicit: the layer's
//! [`DecoderLayerWeights`] hold exactly the arrays and parameters the kernels read.

use super::decoder::{Decoder, DecoderLayer};
use super::spec::Activation;
use super::spec::Features;
use super::RmsNorm;
use crate::error::Result;
use crate::runtime::cache::{KvCache, LayerCache};
use mlx_rs::native::{
    decoder_stack, decoder_stack_seqs, CachedAttentionParams, DecoderLayerWeights, StackHead,
    StackInput,
};
use mlx_rs::{Array, Dtype};

/// The features beyond the plain pre-norm SwiGLU block that the linked native kernels
/// implement (each tested against the reference path in `models/tests/native_layer.rs`).
pub const NATIVE_FEATURES: Features = Features {
    window: true,
    attention_softcap: true,
    output_norms: true,
    gelu: true,
    query_scaling: false,
    output_bias: false,
    value_norm: false,
    keys_as_values: false,
    shared_kv: false,
    layer_extras: false,
};

/// The features the attention-only primitive ([`mlx_rs::native::cached_attention`]) adds to
/// [`NATIVE_FEATURES`]: Gemma 4's value norm, keys as values and reading another layer's
/// keys and values (each tested against the reference path in `models/tests/golden.rs`).
pub const NATIVE_ATTENTION_FEATURES: Features = Features {
    value_norm: true,
    keys_as_values: true,
    shared_kv: true,
    ..NATIVE_FEATURES
};

/// The plan of `layer` (its attention parameters in `attention`, offset 0), when the kernels
/// support it.
pub(crate) fn layer_plan(layer: &DecoderLayer) -> Option<DecoderLayerWeights<'_>> {
    if !layer.spec().native_features().within(NATIVE_FEATURES)
        || !layer.self_attn.native_ok(NATIVE_FEATURES)
    {
        return None;
    }
    let attn = &layer.self_attn;
    let (qkv, qkv_bias) = attn.qkv_proj().fused()?.quantized_projection()?;
    let (o, None) = attn.o_proj().quantized_projection()? else {
        return None;
    };
    let (gate_up, None) = layer.mlp.gate_up_proj().fused()?.quantized_projection()? else {
        return None;
    };
    let (down, None) = layer.mlp.down_proj().quantized_projection()? else {
        return None;
    };
    let (q_norm, k_norm) = attn.qk_norms();
    Some(DecoderLayerWeights {
        input_norm: norm_pair(&layer.pre_attention),
        qkv,
        qkv_bias,
        inv_freq: attn.rope().inv_freq(),
        q_norm: q_norm.map(RmsNorm::weight),
        k_norm: k_norm.map(RmsNorm::weight),
        o,
        attention_out_norm: layer.attention_out.as_ref().map(norm_pair),
        pre_mlp_norm: norm_pair(&layer.pre_mlp),
        gate_up,
        down,
        mlp_out_norm: layer.mlp_out.as_ref().map(norm_pair),
        activation: match layer.mlp.activation() {
            Activation::Silu => mlx_rs::native::Activation::Silu,
            Activation::GeluTanh => mlx_rs::native::Activation::GeluTanh,
        },
        attention: attn.params(),
    })
}

/// One layer as one native primitive; `Ok(None)` (nothing changed but perhaps the cache's
/// capacity) when the layer has no plan or the kernels decline the call.
pub(crate) fn layer_step(
    layer: &DecoderLayer,
    x: &Array,
    cache: &mut LayerCache,
) -> Result<Option<Array>> {
    let Some(plan) = layer_plan(layer) else {
        return Ok(None);
    };
    cache.in_place_step(x, plan.attention, |keys, values, params| {
        Ok(
            mlx_rs::native::decoder_layer(x, keys, values, &plan, params.offset)?
                .map(|o| (o.hidden, o.k_cache, o.v_cache)),
        )
    })
}

/// The whole step as one native primitive, when every layer has a plan and the CPU kernels
/// take the call: a quantized float32 embedding table is looked up (and scaled) inside it, and
/// at decode (one token per sequence) a quantized LM head without bias (with the final norm
/// and softcap) ends it; otherwise those run as their own ops around it.
/// `Ok(None)` when the stack does not apply (nothing changed but perhaps cache capacities).
pub(crate) fn stack_step(
    model: &Decoder,
    tokens: &Array,
    cache: &mut KvCache,
) -> Result<Option<Array>> {
    let shape = tokens.shape();
    with_stack(model, tokens, |plans, input, head| {
        let params: Vec<CachedAttentionParams> = plans.iter().map(|p| p.attention).collect();
        cache.in_place_stack_step(
            [shape[0], shape[1]],
            Dtype::Float32,
            &params,
            |caches, offset| {
                let stack: Vec<_> = caches
                    .iter()
                    .zip(plans)
                    .map(|(&(k, v), plan)| (k, v, *plan))
                    .collect();
                Ok(decoder_stack(input, &stack, head, offset)?.map(|o| (o.output, o.caches)))
            },
        )
    })
}

/// [`stack_step`] for `B` independent sequences of one token each (`tokens` `[B, 1]`), each
/// with its own cache and position ([`mlx_rs::native::decoder_stack_seqs`]). The layers go in
/// runs of [`SEQS_STACK_OUTPUTS`] cache outputs at most (one primitive per run): a primitive's
/// outputs each list all the others in MLX, so one primitive for 30 layers of 16 sequences
/// (961 outputs) spent a third of the step creating and freeing those lists.
pub(crate) fn stack_step_seqs(
    model: &Decoder,
    tokens: &Array,
    caches: &mut [&mut KvCache],
) -> Result<Option<Array>> {
    with_stack(model, tokens, |plans, input, head| {
        let Some(offsets) = KvCache::uniform_offsets(caches, plans.len()) else {
            return Ok(None);
        };
        let params: Vec<CachedAttentionParams> = plans.iter().map(|p| p.attention).collect();
        let run = (SEQS_STACK_OUTPUTS / (2 * caches.len())).max(1);
        let mut hidden: Option<Array> = None;
        let mut first = 0;
        while first < plans.len() {
            let last = (first + run).min(plans.len());
            let input = match &hidden {
                Some(x) => StackInput::Hidden(x),
                None => input,
            };
            let head = if last == plans.len() { head } else { None };
            let out = KvCache::in_place_seqs_step(
                caches,
                first,
                Dtype::Float32,
                &params[first..last],
                &offsets,
                |buffers, offsets| {
                    Ok(
                        decoder_stack_seqs(input, &plans[first..last], buffers, head, offsets)?
                            .map(|o| (o.output, o.caches)),
                    )
                },
            )?;
            match out {
                Some(x) => hidden = Some(x),
                None if first == 0 => return Ok(None),
                // The kernels took the first run, so they take every run (same dtypes and
                // weights): a refusal here would leave the caches half advanced.
                None => {
                    return Err(crate::Error::InvalidArgument(format!(
                        "the native batch step declined layers {first}..{last} after taking the first ones"
                    )))
                }
            }
            first = last;
        }
        Ok(hidden)
    })
}

/// At most this many cache outputs per batch-step primitive (see [`stack_step_seqs`]).
const SEQS_STACK_OUTPUTS: usize = 64;

/// Prepares a whole-stack call for `tokens` (`[B, L]`): every layer's plan, the input
/// (token ids with the quantized table, or the embedded rows) and, at decode, the head; runs
/// `call` and, when the head did not join the stack, applies it. `Ok(None)` when some layer
/// has no plan, the embedded rows are not float32 or `call` declines.
fn with_stack(
    model: &Decoder,
    tokens: &Array,
    call: impl FnOnce(
        &[DecoderLayerWeights<'_>],
        StackInput<'_>,
        Option<StackHead<'_>>,
    ) -> Result<Option<Array>>,
) -> Result<Option<Array>> {
    let spec = model.spec();
    let Some(plans) = model
        .layers()
        .iter()
        .map(layer_plan)
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    if plans.is_empty() {
        return Ok(None);
    }
    let embedded;
    let input = match model.embed_tokens().quantized_table() {
        Some(table) => StackInput::Tokens {
            ids: tokens,
            table,
            scale: spec.embedding_scale.unwrap_or(1.0),
        },
        None => {
            embedded = model.embed(tokens)?;
            if embedded.dtype() != Dtype::Float32 {
                // The stack computes in float32 only: leave the caches to the per-layer
                // path, which keeps them in the compute dtype.
                return Ok(None);
            }
            StackInput::Hidden(&embedded)
        }
    };
    // The head joins the stack for decode steps only: a prefill chunk's logits are rarely read
    // (the engine keeps its caches and the last position), and as a lazy op of their own they
    // are computed only when they are.
    let head = match model.lm_head().quantized_projection() {
        Some((projection, None)) if tokens.shape()[1] == 1 => Some(StackHead {
            norm: (model.norm().weight(), model.norm().eps()),
            projection,
            softcap: spec.final_softcap,
        }),
        _ => None,
    };
    Ok(match (call(&plans, input, head)?, head) {
        (Some(logits), Some(_)) => Some(logits),
        (Some(hidden), None) => Some(model.head(&hidden)?),
        (None, _) => None,
    })
}

/// A norm as the kernels take it: weight and epsilon.
fn norm_pair(norm: &RmsNorm) -> (&Array, f32) {
    (norm.weight(), norm.eps())
}
