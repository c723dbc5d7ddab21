//! The one decoder every family builds: layers as [`BlockSpec`]s say, run on MLX's ops (the
//! reference path), with whole layers or the whole stack lowered to the native CPU primitives
//! where the kernels support every feature a layer uses ([`super::native`]).
//!
//! Tensors are read under the Hugging Face names of the Llama layout (`model.embed_tokens`,
//! `model.layers.N.self_attn.*`, `model.layers.N.mlp.*`, the norms named by
//! [`super::spec::LayerNorms`], `model.norm`, `lm_head`); a family whose checkpoints use other
//! names renames them before building ([`crate::families::sanitize`]).

use super::spec::{BlockSpec, ModelSpec};
use super::{Attention, Embedding, Linear, Mlp, RmsNorm};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::load::BuildOptions;
use crate::model::CausalLm;
use crate::runtime::cache::{KvCache, LayerCache};
use crate::weights::Weights;
use mlx_rs::{Array, Dtype};

/// One decoder layer:
/// `h = x + attention_out(attn(pre_attention(x)))`, `y = h + mlp_out(mlp(pre_mlp(h)))`.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub(crate) pre_attention: RmsNorm,
    pub(crate) self_attn: Attention,
    pub(crate) attention_out: Option<RmsNorm>,
    pub(crate) pre_mlp: RmsNorm,
    pub(crate) mlp: Mlp,
    pub(crate) mlp_out: Option<RmsNorm>,
    pub(crate) spec: BlockSpec,
}

impl DecoderLayer {
    /// Takes `model.layers.{index}.*` as `spec` describes them.
    pub fn load(
        weights: &mut Weights,
        index: usize,
        hidden: i32,
        spec: &BlockSpec,
        options: &BuildOptions,
    ) -> Result<DecoderLayer> {
        let path = format!("model.layers.{index}");
        let norm = |w: &mut Weights, name: &str| {
            RmsNorm::load_spec(w, &format!("{path}.{name}"), hidden, spec.norm, options)
        };
        let optional = |w: &mut Weights, name: Option<&str>| name.map(|n| norm(w, n)).transpose();
        Ok(DecoderLayer {
            pre_attention: norm(weights, spec.norms.pre_attention)?,
            self_attn: Attention::load(
                weights,
                &format!("{path}.self_attn"),
                hidden,
                &spec.attention,
                options,
            )?,
            attention_out: optional(weights, spec.norms.attention_out)?,
            pre_mlp: norm(weights, spec.norms.pre_mlp)?,
            mlp: Mlp::load(weights, &format!("{path}.mlp"), hidden, &spec.mlp, options)?,
            mlp_out: optional(weights, spec.norms.mlp_out)?,
            spec: spec.clone(),
        })
    }

    /// The description this layer was built from.
    pub fn spec(&self) -> &BlockSpec {
        &self.spec
    }

    /// Runs the layer on `x` (`[B, L, hidden]`) with this layer's cache: as one native
    /// primitive when the kernels support the layer and take the call, else composed.
    pub fn forward(&self, x: &Array, cache: &mut LayerCache) -> Result<Array> {
        if let Some(y) = super::native::layer_step(self, x, cache)? {
            return Ok(y);
        }
        self.forward_composed(x, cache)
    }

    /// [`DecoderLayer::forward`] from the parts (attention, MLP, norms), each of which may
    /// still use its own native primitives.
    pub fn forward_composed(&self, x: &Array, cache: &mut LayerCache) -> Result<Array> {
        let a = self
            .self_attn
            .forward(&self.pre_attention.forward_to_weight_dtype(x)?, cache)?;
        let h = x.add(&RmsNorm::apply(self.attention_out.as_ref(), &a)?)?;
        let m = self
            .mlp
            .forward(&self.pre_mlp.forward_to_weight_dtype(&h)?)?;
        Ok(h.add(&RmsNorm::apply(self.mlp_out.as_ref(), &m)?)?)
    }
}

/// A decoder-only causal LM built from a [`ModelSpec`]: every family of the zoo.
///
/// Under a float16 compute dtype the residual stream is kept in float32 (the norms read it in
/// float32 and hand the layers float16): Gemma 3's residual stream reaches about 10⁵ on real
/// weights (Gemma 3 270M: 1.0·10⁵ at layer 14 of 18, measured), beyond float16's 65504, and
/// would turn every logit into NaN. Float32 and bfloat16 keep it in the compute dtype.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: ModelConfig,
    spec: ModelSpec,
    pub(crate) embed_tokens: Embedding,
    /// `spec.embedding_scale` as an array of the compute dtype.
    embedding_scale: Option<Array>,
    pub(crate) layers: Vec<DecoderLayer>,
    pub(crate) norm: RmsNorm,
    pub(crate) lm_head: Linear,
    dtype: Dtype,
    /// The residual stream's dtype (float32 under float16 compute, else the compute dtype).
    residual: Dtype,
}

impl Decoder {
    /// Builds the decoder `spec` describes from `weights` (already under the Llama layout's
    /// names), then checks that every tensor was used.
    ///
    /// Errors: [`Error::MissingTensor`], [`Error::ShapeMismatch`],
    /// [`Error::UnexpectedTensors`] (a left-over tensor), [`Error::InvalidArgument`] for a
    /// non-floating compute dtype.
    pub fn build(
        config: &ModelConfig,
        spec: ModelSpec,
        mut weights: Weights,
        options: &BuildOptions,
    ) -> Result<Decoder> {
        if !options.dtype.is_floating() {
            return Err(Error::InvalidArgument(format!(
                "the compute dtype must be floating, got {}",
                options.dtype
            )));
        }
        let embed_tokens = Embedding::load(
            &mut weights,
            "model.embed_tokens",
            spec.vocab,
            spec.hidden,
            options,
        )?;
        let layers = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| DecoderLayer::load(&mut weights, i, spec.hidden, layer, options))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load_spec(
            &mut weights,
            "model.norm",
            spec.hidden,
            spec.final_norm,
            options,
        )?;
        let lm_head = if spec.tied {
            embed_tokens.as_linear()?
        } else {
            Linear::load(
                &mut weights,
                "lm_head",
                spec.hidden,
                spec.vocab,
                false,
                options,
            )?
        };
        weights.finish()?;
        let embedding_scale = spec
            .embedding_scale
            .map(|s| Array::scalar(s).astype(options.dtype))
            .transpose()?;
        Ok(Decoder {
            config: config.clone(),
            spec,
            embed_tokens,
            embedding_scale,
            layers,
            norm,
            lm_head,
            dtype: options.dtype,
            residual: if options.dtype == Dtype::Float16 {
                Dtype::Float32
            } else {
                options.dtype
            },
        })
    }

    /// The description this model was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
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

    /// The compute dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The rows of `tokens`, times the embedding scale, in the residual stream's dtype (the
    /// reference path's first step).
    pub fn embed(&self, tokens: &Array) -> Result<Array> {
        let x = self.embed_tokens.forward(tokens)?;
        let x = match &self.embedding_scale {
            Some(s) => x.multiply(s)?,
            None => x,
        };
        Ok(if x.dtype() == self.residual {
            x
        } else {
            x.astype(self.residual)?
        })
    }

    /// `final_norm(x)` through the LM head, then the final softcap (the reference path's
    /// last step).
    pub fn head(&self, x: &Array) -> Result<Array> {
        let logits = if x.dtype() == self.dtype {
            self.lm_head.forward_fused(x, Some(&self.norm), None)?
        } else {
            self.lm_head
                .forward(&self.norm.forward_to_weight_dtype(x)?)?
        };
        self.softcap(logits)
    }

    /// The final softcap `c·tanh(l/c)` of the logits, if the model has one.
    pub(crate) fn softcap(&self, logits: Array) -> Result<Array> {
        Ok(match self.spec.final_softcap {
            Some(c) => logits
                .multiply(&Array::scalar(1.0 / c).astype(logits.dtype())?)?
                .tanh()?
                .multiply(&Array::scalar(c).astype(logits.dtype())?)?,
            None => logits,
        })
    }
}

impl CausalLm for Decoder {
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
        if let Some(logits) = super::native::stack_step(self, tokens, cache)? {
            return Ok(logits);
        }
        let mut x = self.embed(tokens)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, cache.layer_mut(i)?)?;
        }
        self.head(&x)
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn new_cache(&self) -> KvCache {
        let windows: Vec<Option<i32>> = self
            .spec
            .layers
            .iter()
            .map(|l| l.attention.window)
            .collect();
        KvCache::with_windows(&windows)
    }
}

/// The tensors [`Decoder::build`] takes for `spec`, under their names with dense shapes (the
/// loaders check a file's declared tensors against them before reading any data; see
/// [`crate::load::plan`]).
///
/// ```
/// use mlx_models::config::ModelConfig;
/// use mlx_models::{families, nn::decoder::expected_tensors};
/// let config = ModelConfig::from_json(r#"{"model_type":"llama","hidden_size":8,
///     "num_hidden_layers":1,"intermediate_size":16,"num_attention_heads":2,
///     "num_key_value_heads":1,"vocab_size":4}"#)?;
/// let plan = expected_tensors(&families::model_spec(&config)?);
/// let k = plan.iter().find(|t| t.name == "model.layers.0.self_attn.k_proj.weight").unwrap();
/// assert_eq!(k.shape, vec![4, 8]); // 1 KV head of width 8 / 2
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn expected_tensors(spec: &ModelSpec) -> Vec<crate::load::plan::ExpectedTensor> {
    use crate::load::plan::ExpectedTensor as T;
    let (hidden, vocab) = (spec.hidden, spec.vocab);
    let mut plan = vec![
        T::required("model.embed_tokens.weight", &[vocab, hidden]),
        T::required("model.norm.weight", &[hidden]),
    ];
    if !spec.tied {
        plan.push(T::required("lm_head.weight", &[vocab, hidden]));
    }
    for (i, layer) in spec.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let a = &layer.attention;
        let (q, kv) = (a.heads * a.head_dim, a.kv_heads * a.head_dim);
        let inter = layer.mlp.intermediate;
        let mut linear = |name: &str, out: i32, inp: i32, bias: bool| {
            plan.push(T::required(format!("{p}.{name}.weight"), &[out, inp]));
            if bias {
                plan.push(T::required(format!("{p}.{name}.bias"), &[out]));
            }
        };
        linear("self_attn.q_proj", q, hidden, a.qkv_bias);
        linear("self_attn.k_proj", kv, hidden, a.qkv_bias);
        linear("self_attn.v_proj", kv, hidden, a.qkv_bias);
        linear("self_attn.o_proj", hidden, q, a.o_bias);
        linear("mlp.gate_proj", inter, hidden, layer.mlp.bias);
        linear("mlp.up_proj", inter, hidden, layer.mlp.bias);
        linear("mlp.down_proj", hidden, inter, layer.mlp.bias);
        let norms = layer.norms;
        for name in [
            Some(norms.pre_attention),
            norms.attention_out,
            Some(norms.pre_mlp),
            norms.mlp_out,
        ]
        .into_iter()
        .flatten()
        {
            plan.push(T::required(format!("{p}.{name}.weight"), &[hidden]));
        }
        if a.qk_norm.is_some() {
            plan.push(T::required(
                format!("{p}.self_attn.q_norm.weight"),
                &[a.head_dim],
            ));
            plan.push(T::required(
                format!("{p}.self_attn.k_norm.weight"),
                &[a.head_dim],
            ));
        }
    }
    plan
}
