//! Llama (`model_type` "llama", Llama 2/3.x and the many models that reuse its block): the
//! baseline decoder of model-families.md §0, which Qwen2 and Qwen3 build with their own
//! [`AttentionSpec`].
//!
//! Per layer, with `x` of shape `[B, L, hidden]`:
//! `h = x + self_attn(input_layernorm(x))`, `out = h + mlp(post_attention_layernorm(h))`;
//! then `model.norm` and the LM head (`lm_head`, or the embedding matrix when
//! `tie_word_embeddings`).
//!
//! Quirks: `attention_bias` puts a bias on all four projections and `mlp_bias` on the three MLP
//! projections (both false in released Llama 3); llama3 / linear RoPE scaling comes from
//! `rope_scaling` / `rope_parameters` ([`Rope::from_config`]).

use super::BuildOptions;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::CausalLm;
use crate::nn::{dim, Attention, AttentionSpec, Embedding, Linear, Mlp, RmsNorm, Rope};
use crate::runtime::cache::KvCache;
use crate::weights::Weights;
use mlx_rs::native::{decoder_stack, StackHead, StackInput};
use mlx_rs::{Array, Dtype};

/// Llama's attention: `attention_bias` puts a bias on all four projections.
pub fn attention_spec(config: &ModelConfig) -> AttentionSpec {
    let bias = config.attention_bias.unwrap_or(false);
    AttentionSpec {
        qkv_bias: bias,
        o_bias: bias,
        qk_norm: false,
    }
}

/// The tensors [`Llama::build`] takes for `config` with `attention` and `mlp_bias`, under their
/// Hugging Face names with dense shapes (the loaders check a file's declared tensors against
/// them before reading any data; see [`crate::load::plan`]).
///
/// ```
/// use mlx_models::config::ModelConfig;
/// use mlx_models::families::llama::{attention_spec, expected_tensors};
/// let config = ModelConfig::from_json(r#"{"model_type":"llama","hidden_size":8,
///     "num_hidden_layers":1,"intermediate_size":16,"num_attention_heads":2,
///     "num_key_value_heads":1,"vocab_size":4}"#)?;
/// let plan = expected_tensors(&config, attention_spec(&config), false)?;
/// let k = plan.iter().find(|t| t.name == "model.layers.0.self_attn.k_proj.weight").unwrap();
/// assert_eq!(k.shape, vec![4, 8]); // 1 KV head of width 8 / 2
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn expected_tensors(
    config: &ModelConfig,
    attention: AttentionSpec,
    mlp_bias: bool,
) -> Result<Vec<crate::load::plan::ExpectedTensor>> {
    use crate::load::plan::ExpectedTensor as T;
    config.validate()?;
    let hidden = dim("hidden_size", config.hidden_size)?;
    let vocab = dim("vocab_size", config.vocab_size)?;
    let inter = dim("intermediate_size", config.intermediate_size)?;
    let hd = dim("head_dim", config.head_dim())?;
    let q = dim(
        "num_attention_heads * head_dim",
        config.num_attention_heads * config.head_dim(),
    )?;
    let kv = dim(
        "num_key_value_heads * head_dim",
        config.num_key_value_heads() * config.head_dim(),
    )?;
    let mut plan = vec![
        T::required("model.embed_tokens.weight", &[vocab, hidden]),
        T::required("model.norm.weight", &[hidden]),
    ];
    if !config.tie_word_embeddings() {
        plan.push(T::required("lm_head.weight", &[vocab, hidden]));
    }
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut linear = |name: &str, out: i32, inp: i32, bias: bool| {
            plan.push(T::required(format!("{p}.{name}.weight"), &[out, inp]));
            if bias {
                plan.push(T::required(format!("{p}.{name}.bias"), &[out]));
            }
        };
        linear("self_attn.q_proj", q, hidden, attention.qkv_bias);
        linear("self_attn.k_proj", kv, hidden, attention.qkv_bias);
        linear("self_attn.v_proj", kv, hidden, attention.qkv_bias);
        linear("self_attn.o_proj", hidden, q, attention.o_bias);
        linear("mlp.gate_proj", inter, hidden, mlp_bias);
        linear("mlp.up_proj", inter, hidden, mlp_bias);
        linear("mlp.down_proj", hidden, inter, mlp_bias);
        plan.push(T::required(
            format!("{p}.input_layernorm.weight"),
            &[hidden],
        ));
        plan.push(T::required(
            format!("{p}.post_attention_layernorm.weight"),
            &[hidden],
        ));
        if attention.qk_norm {
            plan.push(T::required(format!("{p}.self_attn.q_norm.weight"), &[hd]));
            plan.push(T::required(format!("{p}.self_attn.k_norm.weight"), &[hd]));
        }
    }
    Ok(plan)
}

/// One decoder layer: pre-norm attention and pre-norm MLP, each added to the residual stream.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    /// Takes `model.layers.{index}.*`.
    #[allow(clippy::too_many_arguments)]
    fn load(
        weights: &mut Weights,
        index: usize,
        config: &ModelConfig,
        attention: AttentionSpec,
        mlp_bias: bool,
        rope: &Rope,
        options: &BuildOptions,
    ) -> Result<DecoderLayer> {
        let path = format!("model.layers.{index}");
        let hidden = dim("hidden_size", config.hidden_size)?;
        let intermediate = dim("intermediate_size", config.intermediate_size)?;
        let eps = config.rms_norm_eps();
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::load(
                weights,
                &format!("{path}.input_layernorm"),
                hidden,
                eps,
                options,
            )?,
            self_attn: Attention::load(
                weights,
                &format!("{path}.self_attn"),
                config,
                attention,
                rope.clone(),
                options,
            )?,
            post_attention_layernorm: RmsNorm::load(
                weights,
                &format!("{path}.post_attention_layernorm"),
                hidden,
                eps,
                options,
            )?,
            mlp: Mlp::load(
                weights,
                &format!("{path}.mlp"),
                hidden,
                intermediate,
                mlp_bias,
                options,
            )?,
        })
    }

    /// Runs the layer on `x` (`[B, L, hidden]`) with this layer's cache: as one native
    /// primitive ([`mlx_rs::native::decoder_layer`]) when the projections are quantized and
    /// the CPU kernels take the call, else composed (the same numbers either way).
    pub fn forward(
        &self,
        x: &Array,
        cache: &mut crate::runtime::cache::LayerCache,
    ) -> Result<Array> {
        if let Some((weights, params)) = self.native_weights() {
            let step = cache.in_place_step(x, params, |keys, values, params| {
                Ok(
                    mlx_rs::native::decoder_layer(x, keys, values, &weights, params.offset)?
                        .map(|o| (o.hidden, o.k_cache, o.v_cache)),
                )
            })?;
            if let Some(y) = step {
                return Ok(y);
            }
        }
        self.forward_composed(x, cache)
    }

    /// The layer as the native primitive takes it, when its projections are quantized and
    /// fused.
    fn native_weights(
        &self,
    ) -> Option<(
        mlx_rs::native::DecoderLayerWeights<'_>,
        mlx_rs::native::CachedAttentionParams,
    )> {
        let mlp = self
            .mlp
            .native_layer_weights(&self.post_attention_layernorm)?;
        self.self_attn
            .native_layer_weights(&self.input_layernorm, mlp)
    }

    /// [`DecoderLayer::forward`] from the per-op primitives (or MLX's ops).
    pub fn forward_composed(
        &self,
        x: &Array,
        cache: &mut crate::runtime::cache::LayerCache,
    ) -> Result<Array> {
        let h = self
            .self_attn
            .forward(x, Some(&self.input_layernorm), Some(x), cache)?;
        self.mlp
            .forward(&h, Some(&self.post_attention_layernorm), Some(&h))
    }
}

/// A Llama-block causal LM (also Qwen2 and Qwen3, which differ in [`AttentionSpec`] only).
#[derive(Debug, Clone)]
pub struct Llama {
    config: ModelConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    dtype: Dtype,
}

impl Llama {
    /// Builds the decoder from `weights` with the given attention variant and MLP bias, then
    /// checks that every tensor was used.
    ///
    /// Dropped before building: `*.rotary_emb.inv_freq` (recomputed), and `lm_head.*` when the
    /// embeddings are tied (some exporters write the duplicate).
    pub fn build(
        config: &ModelConfig,
        mut weights: Weights,
        options: &BuildOptions,
        attention: AttentionSpec,
        mlp_bias: bool,
    ) -> Result<Llama> {
        config.validate()?;
        if !options.dtype.is_floating() {
            return Err(Error::InvalidArgument(format!(
                "the compute dtype must be floating, got {}",
                options.dtype
            )));
        }
        weights.drop_where(|name| name.ends_with(".rotary_emb.inv_freq"));
        let tied = config.tie_word_embeddings();
        if tied {
            weights.drop_where(|name| name.starts_with("lm_head."));
        }
        let hidden = dim("hidden_size", config.hidden_size)?;
        let vocab = dim("vocab_size", config.vocab_size)?;
        let rope = Rope::from_config(config)?;
        let embed_tokens =
            Embedding::load(&mut weights, "model.embed_tokens", vocab, hidden, options)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                DecoderLayer::load(&mut weights, i, config, attention, mlp_bias, &rope, options)
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(
            &mut weights,
            "model.norm",
            hidden,
            config.rms_norm_eps(),
            options,
        )?;
        let lm_head = if tied {
            embed_tokens.as_linear()?
        } else {
            Linear::load(&mut weights, "lm_head", hidden, vocab, false, options)?
        };
        weights.finish()?;
        Ok(Llama {
            config: config.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            dtype: options.dtype,
        })
    }

    /// The decoder layers, in order.
    pub fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    /// The token embedding.
    pub fn embed_tokens(&self) -> &Embedding {
        &self.embed_tokens
    }

    /// The final RMS norm.
    pub fn norm(&self) -> &RmsNorm {
        &self.norm
    }

    /// The LM head (the embedding's matrix when the model ties them).
    pub fn lm_head(&self) -> &Linear {
        &self.lm_head
    }

    /// The whole step as one native primitive ([`mlx_rs::native::decoder_stack`]), when every
    /// layer's projections are quantized and fused, the layers share their attention
    /// parameters and the CPU kernels take the call: a quantized float32 embedding table is
    /// looked up inside it, and at decode (one token per sequence) a quantized LM head
    /// without bias (with the final norm) ends it; otherwise those run as their own ops
    /// around it. The numbers of the per-layer path,
    /// with one MLX primitive per step. `Ok(None)` when the stack does not apply (nothing
    /// changed but perhaps cache capacities).
    fn native_step(&self, tokens: &Array, cache: &mut KvCache) -> Result<Option<Array>> {
        let Some(layers) = self
            .layers
            .iter()
            .map(DecoderLayer::native_weights)
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let Some(&(_, params)) = layers.first() else {
            return Ok(None);
        };
        if layers.iter().any(|(_, p)| *p != params) {
            return Ok(None);
        }
        let embedded;
        let input = match self.embed_tokens.quantized_table() {
            Some(table) => StackInput::Tokens {
                ids: tokens,
                table,
                scale: 1.0,
            },
            None => {
                embedded = self.embed_tokens.forward(tokens)?;
                if embedded.dtype() != Dtype::Float32 {
                    // The stack computes in float32 only: leave the caches to the per-layer
                    // path, which keeps them in the compute dtype.
                    return Ok(None);
                }
                StackInput::Hidden(&embedded)
            }
        };
        let shape = tokens.shape();
        // The head joins the stack for decode steps only: a prefill chunk's logits are
        // rarely read (the engine keeps its caches and the last position), and as a lazy op
        // of their own they are computed only when they are.
        let head = match self.lm_head.quantized_projection() {
            Some((projection, None)) if shape[1] == 1 => Some(StackHead {
                norm: (self.norm.weight(), self.norm.eps()),
                projection,
                softcap: None,
            }),
            _ => None,
        };
        let out =
            cache.in_place_stack_step(
                [shape[0], shape[1]],
                Dtype::Float32,
                params,
                |caches, params| {
                    let stack: Vec<_> = caches
                        .iter()
                        .zip(&layers)
                        .map(|(&(k, v), (w, _))| (k, v, *w))
                        .collect();
                    Ok(decoder_stack(input, &stack, head, params.offset)?
                        .map(|o| (o.output, o.caches)))
                },
            )?;
        Ok(match (out, head) {
            (Some(logits), Some(_)) => Some(logits),
            (Some(hidden), None) => Some(self.lm_head.forward_fused(
                &hidden,
                Some(&self.norm),
                None,
            )?),
            (None, _) => None,
        })
    }

    /// The compute dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
}

/// Builds a Llama model: `attention_bias` on q/k/v/o, `mlp_bias` on the MLP.
pub fn build(config: &ModelConfig, weights: Weights, options: &BuildOptions) -> Result<Llama> {
    Llama::build(
        config,
        weights,
        options,
        attention_spec(config),
        config.mlp_bias.unwrap_or(false),
    )
}

impl CausalLm for Llama {
    fn forward(&self, tokens: &Array, cache: &mut KvCache) -> Result<Array> {
        if tokens.ndim() != 2 || tokens.dtype().is_floating() {
            return Err(Error::InvalidArgument(format!(
                "tokens must be integer ids of shape [B, L], got {} {:?}",
                tokens.dtype(),
                tokens.shape()
            )));
        }
        if cache.num_layers() != self.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "the cache has {} layers, the model {}",
                cache.num_layers(),
                self.layers.len()
            )));
        }
        if let Some(logits) = self.native_step(tokens, cache)? {
            return Ok(logits);
        }
        let mut x = self.embed_tokens.forward(tokens)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, cache.layer_mut(i)?)?;
        }
        self.lm_head.forward_fused(&x, Some(&self.norm), None)
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }
}
