//! The one decoder every family builds: layers as [`BlockSpec`]s say, run on MLX's ops (the
//! reference path), with whole layers or the whole stack lowered to the native CPU primitives
//! where the kernels support every feature a layer uses ([`super::native`]).
//!
//! Tensors are read under the Hugging Face names of the Llama layout (`model.embed_tokens`,
//! `model.layers.N.self_attn.*`, `model.layers.N.mlp.*`, the norms named by
//! [`super::spec::LayerNorms`], `model.norm`, `lm_head`); a family whose checkpoints use other
//! names renames them before building ([`crate::families::sanitize`]).

use super::attention::SharedKv;
use super::moe::MoeBlock;
use super::per_layer::{PerLayerEmbeddings, PerLayerInput};
use super::spec::{BlockSpec, KvSource, ModelSpec};
use super::{take_float, Attention, Embedding, Linear, Mlp, RmsNorm};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::load::BuildOptions;
use crate::model::{token_ids, CausalLm};
use crate::parallel::vocab::VocabShard;
use crate::parallel::{Parallel, StepGuard};
use crate::runtime::cache::{KvCache, LayerCache};
use crate::weights::Weights;
use mlx_rs::distributed::Group;
use mlx_rs::{Array, Dtype};
use std::sync::Arc;

/// What one forward step carries from layer to layer besides the residual stream: the
/// per-layer embeddings of its tokens and the keys and values kept for layers that share them.
#[derive(Debug, Default)]
pub struct StepState {
    /// `[B, L, layers, width]` (Gemma 4's per-layer inputs), when the model has them.
    pub per_layer_inputs: Option<Array>,
    /// By layer index: what a [`KvSource::Shared`] source layer attended to in this step.
    pub shared: Vec<Option<SharedKv>>,
}

/// One decoder layer:
/// `h = x + attention_out(attn(pre_attention(x)))`, `y = h + mlp_out(mlp(pre_mlp(h)))`, with
/// the optional parts of [`BlockSpec`] (experts, per-layer input, layer scalar).
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub(crate) pre_attention: RmsNorm,
    pub(crate) self_attn: Attention,
    pub(crate) attention_out: Option<RmsNorm>,
    pub(crate) pre_mlp: RmsNorm,
    pub(crate) mlp: Mlp,
    pub(crate) mlp_out: Option<RmsNorm>,
    pub(crate) moe: Option<MoeBlock>,
    pub(crate) per_layer_input: Option<PerLayerInput>,
    /// `[1]`, multiplies the layer's output.
    pub(crate) layer_scalar: Option<Array>,
    /// Its position in the stack.
    index: usize,
    /// Later layers reuse the keys and values it attends to.
    keeps_kv: bool,
    pub(crate) spec: BlockSpec,
    /// Tensor parallel: the group whose ranks hold the other parts of this layer; the
    /// attention and MLP outputs are summed over it.
    all_sum: Option<Arc<Group>>,
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
        let moe = spec
            .moe
            .map(|m| MoeBlock::load(weights, &path, hidden, &m, spec.norm, options))
            .transpose()?;
        let per_layer_input = spec
            .per_layer_input
            .map(|width| {
                PerLayerInput::load(
                    weights,
                    &path,
                    hidden,
                    width,
                    spec.norm,
                    spec.mlp.activation,
                    options,
                )
            })
            .transpose()?;
        let layer_scalar = spec
            .layer_scalar
            .then(|| take_float(weights, &format!("{path}.layer_scalar"), &[1], options))
            .transpose()?;
        let mut layer = DecoderLayer {
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
            moe,
            per_layer_input,
            layer_scalar,
            index,
            keeps_kv: false,
            spec: spec.clone(),
            all_sum: None,
        };
        if options.huge_pages {
            layer.put_on_huge_pages()?;
        }
        Ok(layer)
    }

    /// The one place where a layer's projections go onto transparent huge pages
    /// ([`BuildOptions::huge_pages`]). Its GGUF block matrices, which the loader leaves to it
    /// ([`super::colocate::is_layer_projection_blocks`]), are copied into one buffer that is
    /// advised once, or advised where they are when colocation declines (`colocate`). The
    /// fused q/k/v and gate/up products of other storage are new buffers of their own,
    /// advised here. Every other matrix is a tensor as the loader read and advised it. So
    /// nothing is advised twice, and nothing is collapsed into huge pages only to be copied.
    fn put_on_huge_pages(&mut self) -> Result<()> {
        let mut linears = self.self_attn.linears_mut();
        linears.extend(self.mlp.linears_mut());
        super::colocate::colocate_blocks(linears)?;
        for fused in [
            self.self_attn.qkv_projection(),
            self.mlp.gate_up_projection(),
        ] {
            if !fused.is_fused_blocks() {
                fused.advise_huge_pages()?;
            }
        }
        Ok(())
    }

    /// The description this layer was built from.
    pub fn spec(&self) -> &BlockSpec {
        &self.spec
    }

    /// Runs the layer on `x` (`[B, L, hidden]`) with this layer's cache: as one native
    /// primitive when the kernels support the layer and take the call, else composed.
    pub fn forward(&self, x: &Array, cache: &mut LayerCache) -> Result<Array> {
        self.forward_in(x, cache, &mut StepState::default())
    }

    /// [`DecoderLayer::forward`] within a step of the whole model: reads this layer's
    /// per-layer input and shared keys and values from `state`, and leaves there what later
    /// layers reuse.
    pub fn forward_in(
        &self,
        x: &Array,
        cache: &mut LayerCache,
        state: &mut StepState,
    ) -> Result<Array> {
        // The layer primitive runs a whole layer: no place for a tensor-parallel all-reduce.
        if self.all_sum.is_none() {
            if let Some(y) = super::native::layer_step(self, x, cache)? {
                return Ok(y);
            }
        }
        self.forward_composed_in(x, cache, state)
    }

    /// [`DecoderLayer::forward`] from the parts (attention, MLP, norms), each of which may
    /// still use its own native primitives.
    pub fn forward_composed(&self, x: &Array, cache: &mut LayerCache) -> Result<Array> {
        self.forward_composed_in(x, cache, &mut StepState::default())
    }

    /// [`DecoderLayer::forward_in`] from the parts.
    pub fn forward_composed_in(
        &self,
        x: &Array,
        cache: &mut LayerCache,
        state: &mut StepState,
    ) -> Result<Array> {
        let shared = match self.spec.attention.kv {
            KvSource::Shared { source } => state.shared.get(source).and_then(Option::as_ref),
            _ => None,
        };
        let (a, kept) = self.self_attn.forward_step(
            &self.pre_attention.forward_to_weight_dtype(x)?,
            cache,
            shared,
            self.keeps_kv,
        )?;
        if let Some(kept) = kept {
            keep_shared(&mut state.shared, self.index, kept);
        }
        self.after_attention(x, &a, state.per_layer_inputs.as_ref())
    }

    /// One step of `B` independent sequences, one token each (`x`: `[B, 1, hidden]`), each
    /// with its own cache (`caches[b]`) and the keys and values its own earlier layers kept
    /// (`shared[b]`, by layer): the projections and the MLP run once for the batch, the
    /// attention per sequence ([`Attention::forward_batch`]).
    pub fn forward_batch(
        &self,
        x: &Array,
        caches: &mut [&mut LayerCache],
        per_layer_inputs: Option<&Array>,
        shared: &mut [Vec<Option<SharedKv>>],
    ) -> Result<Array> {
        let sources: Vec<Option<&SharedKv>> = shared
            .iter()
            .map(|kept| match self.spec.attention.kv {
                KvSource::Shared { source } => kept.get(source).and_then(Option::as_ref),
                _ => None,
            })
            .collect();
        let (a, kept) = self.self_attn.forward_batch(
            &self.pre_attention.forward_to_weight_dtype(x)?,
            caches,
            &sources,
            self.keeps_kv,
        )?;
        for (store, kept) in shared.iter_mut().zip(kept) {
            if let Some(kept) = kept {
                keep_shared(store, self.index, kept);
            }
        }
        self.after_attention(x, &a, per_layer_inputs)
    }

    /// The rest of the layer once attention gave `a`: residual, MLP (and experts), per-layer
    /// input, layer scalar.
    fn after_attention(
        &self,
        x: &Array,
        a: &Array,
        per_layer_inputs: Option<&Array>,
    ) -> Result<Array> {
        let a = self.reduce(a)?;
        let h = x.add(&RmsNorm::apply(self.attention_out.as_ref(), &a)?)?;
        let mut m = self.reduce(
            &self
                .mlp
                .forward(&self.pre_mlp.forward_to_weight_dtype(&h)?)?,
        )?;
        if let Some(moe) = &self.moe {
            m = moe.forward(&h, &m)?;
        }
        let mut y = h.add(&RmsNorm::apply(self.mlp_out.as_ref(), &m)?)?;
        if let Some(ple) = &self.per_layer_input {
            let inputs = per_layer_inputs.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "layer {} takes a per-layer input, but the step has none",
                    self.index
                ))
            })?;
            let p = inputs.take(&Array::scalar(self.index as i32), 2)?;
            y = y.add(&ple.forward(&y, &p)?)?;
        }
        if let Some(s) = &self.layer_scalar {
            y = y.multiply(s)?;
        }
        Ok(y)
    }
}

impl DecoderLayer {
    /// Tensor parallel: the sum of the ranks' partial outputs (`y` itself otherwise).
    fn reduce(&self, y: &Array) -> Result<Array> {
        Ok(match &self.all_sum {
            Some(group) => group.all_sum(y)?,
            None => y.clone(),
        })
    }
}

/// Puts `kept` at `index` of a step's kept keys and values.
fn keep_shared(store: &mut Vec<Option<SharedKv>>, index: usize, kept: SharedKv) {
    if store.len() <= index {
        store.resize(index + 1, None);
    }
    store[index] = Some(kept);
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
    per_layer_embeddings: Option<PerLayerEmbeddings>,
    dtype: Dtype,
    /// The residual stream's dtype (float32 under float16 compute, else the compute dtype).
    residual: Dtype,
    /// How the model is spread over several processes, if it is.
    parallel: Option<Parallel>,
    /// The index of `layers[0]` in the model (a pipeline stage's first layer; else 0).
    first_layer: usize,
    /// Under `parallel`: this rank's rows of the embedding and the LM head.
    vocab_shard: Option<VocabShard>,
    /// The dtype new caches store (`None`: the compute dtype).
    kv_dtype: Option<Dtype>,
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
        weights: Weights,
        options: &BuildOptions,
    ) -> Result<Decoder> {
        Decoder::build_parallel(config, spec, weights, options, None)
    }

    /// [`Decoder::build`] of this rank's share of the model when `parallel` spreads it over
    /// several processes (see [`crate::parallel`]): the other ranks' tensors are dropped
    /// (layers outside a pipeline stage) or cut away (tensor parallel) before the layers are
    /// built. [`Decoder::spec`] stays the whole model's under a pipeline and describes this
    /// rank's share under tensor parallelism.
    ///
    /// Errors: as [`Decoder::build`], and [`Error::Config`] for a model that cannot be split
    /// that way ([`crate::parallel::tensor::shard`], [`crate::parallel::pipeline::stage`]).
    pub fn build_parallel(
        config: &ModelConfig,
        spec: ModelSpec,
        mut weights: Weights,
        options: &BuildOptions,
        parallel: Option<&Parallel>,
    ) -> Result<Decoder> {
        let (spec, stage) = match parallel {
            None => {
                let n = spec.layers.len();
                (spec, 0..n)
            }
            Some(Parallel::Tensor(g)) => {
                let local =
                    crate::parallel::tensor::shard(&spec, &mut weights, g.rank(), g.size())?;
                let n = local.layers.len();
                (local, 0..n)
            }
            Some(Parallel::Pipeline(g)) => {
                let stage =
                    crate::parallel::pipeline::stage(&spec, &mut weights, g.rank(), g.size())?;
                (spec, stage)
            }
        };
        if !options.dtype.is_floating() {
            return Err(Error::InvalidArgument(format!(
                "the compute dtype must be floating, got {}",
                options.dtype
            )));
        }
        let vocab_shard = parallel.map(|p| VocabShard::new(spec.vocab, p.rank(), p.size()));
        if let Some(shard) = vocab_shard.filter(|_| !weights.pre_cut().vocab) {
            shard.keep(&mut weights, "model.embed_tokens")?;
            if !spec.tied {
                shard.keep(&mut weights, "lm_head")?;
            }
        }
        let vocab_rows = vocab_shard.map_or(spec.vocab, |s| s.padded);
        let embed_tokens = Embedding::load(
            &mut weights,
            "model.embed_tokens",
            vocab_rows,
            spec.hidden,
            options,
        )?;
        let mut layers = stage
            .clone()
            .map(|i| DecoderLayer::load(&mut weights, i, spec.hidden, &spec.layers[i], options))
            .collect::<Result<Vec<_>>>()?;
        if let Some(Parallel::Tensor(group)) = parallel {
            for layer in &mut layers {
                layer.all_sum = Some(group.clone());
                if let Some(moe) = layer.moe.as_mut() {
                    moe.all_sum = Some(group.clone());
                }
            }
        }
        for i in stage.clone() {
            let layer = &spec.layers[i];
            if let KvSource::Shared { source } = layer.attention.kv {
                let valid = source < i
                    && matches!(
                        spec.layers[source].attention.kv,
                        KvSource::Projected | KvSource::KeysAsValues
                    )
                    && spec.layers[source].attention.window == layer.attention.window
                    && spec.layers[source].attention.kv_heads == layer.attention.kv_heads
                    && spec.layers[source].attention.head_dim == layer.attention.head_dim;
                if !valid {
                    return Err(Error::Config(format!(
                        "layer {i} cannot reuse the keys and values of layer {source}: the source must be an earlier layer with its own keys and the same window and shapes"
                    )));
                }
                layers[source - stage.start].keeps_kv = true;
            }
        }
        let per_layer_embeddings = spec
            .per_layer_embedding
            .map(|ple| {
                PerLayerEmbeddings::load(
                    &mut weights,
                    spec.hidden,
                    spec.layers.len() as i32,
                    &ple,
                    options,
                )
            })
            .transpose()?;
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
                vocab_rows,
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
            per_layer_embeddings,
            dtype: options.dtype,
            residual: if options.dtype == Dtype::Float16 {
                Dtype::Float32
            } else {
                options.dtype
            },
            parallel: parallel.cloned(),
            first_layer: stage.start,
            vocab_shard,
            kv_dtype: None,
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
        let x = match (&self.vocab_shard, &self.parallel) {
            (Some(shard), Some(p)) => shard.embed(&self.embed_tokens, tokens, p.group())?,
            _ => self.embed_tokens.forward(tokens)?,
        };
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
        let logits = match (&self.vocab_shard, &self.parallel) {
            (Some(shard), Some(p)) => shard.gather_logits(&logits, p.group())?,
            _ => logits,
        };
        self.softcap(logits)
    }

    /// How the model is spread over several processes, if it is.
    pub fn parallel(&self) -> Option<&Parallel> {
        self.parallel.as_ref()
    }

    /// The model index of [`Decoder::layers`]`()[0]`: a pipeline stage's first layer, else 0.
    pub fn first_layer(&self) -> usize {
        self.first_layer
    }

    /// One step of a pipeline stage: the hidden states from the previous rank (rank 0: the
    /// embedded tokens), this stage's layers, then to the next rank; the last rank's hidden
    /// states reach every rank through an all-reduce (the others add zeros), and every rank
    /// computes its rows of the logits ([`Decoder::head`]).
    fn forward_stage(&self, tokens: &Array, cache: &mut KvCache, group: &Group) -> Result<Array> {
        let (rank, size) = (group.rank(), group.size());
        let shape = tokens.shape();
        let (b, l) = (shape[0], shape[1]);
        // Every rank takes part in the embedding's all-reduce, in the same order.
        let embedded = self.embed(tokens)?;
        let mut x = if rank == 0 {
            embedded
        } else {
            embedded.eval()?;
            group.recv(&[b, l, self.spec.hidden], self.residual, rank - 1)?
        };
        let mut state = StepState::default();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward_in(&x, cache.layer_mut(i)?, &mut state)?;
        }
        if x.dtype() != self.residual {
            x = x.astype(self.residual)?;
        }
        let last = if rank + 1 < size {
            // Sent now: the next stage waits for it before the all-reduce below.
            group.send(&x, rank + 1)?.eval()?;
            Array::zeros(&[b, l, self.spec.hidden], self.residual)?
        } else {
            x
        };
        self.head(&group.all_sum(&last)?)
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
        // A step over the group ends in bounded time, even when a peer dies mid-transfer.
        let _watched = self
            .parallel
            .as_ref()
            .map(|_| StepGuard::start(tokens.size()));
        let logits = match &self.parallel {
            // The whole-stack primitive has no place for the ranks' exchanges.
            Some(Parallel::Pipeline(group)) => self.forward_stage(tokens, cache, group)?,
            Some(Parallel::Tensor(_)) => self.forward_layers(tokens, cache)?,
            None => {
                if let Some(logits) = super::native::stack_step(self, tokens, cache)? {
                    return Ok(logits);
                }
                return self.forward_layers(tokens, cache);
            }
        };
        logits.eval()?;
        Ok(logits)
    }

    fn forward_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Array> {
        let _watched = self
            .parallel
            .as_ref()
            .map(|_| StepGuard::start(tokens.len()));
        let logits = self.forward_batch_any(tokens, caches)?;
        if self.parallel.is_some() {
            logits.eval()?;
        }
        Ok(logits)
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn new_cache(&self) -> KvCache {
        let cache = KvCache::from_layers(
            self.layers
                .iter()
                .map(|l| match l.spec.attention.kv {
                    KvSource::Shared { .. } => LayerCache::unused(),
                    _ => LayerCache::new(l.spec.attention.window),
                })
                .collect(),
        );
        match self.kv_dtype {
            Some(d) => cache.with_storage(d),
            None => cache,
        }
    }

    fn set_kv_cache_dtype(&mut self, dtype: Option<Dtype>) -> Result<()> {
        if let Some(d) = dtype {
            if !matches!(d, Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16) {
                return Err(Error::InvalidArgument(format!(
                    "a KV cache stores float32, float16 or bfloat16, not {d:?}"
                )));
            }
        }
        self.kv_dtype = dtype;
        Ok(())
    }
}

impl Decoder {
    /// The composed step: embedding, every layer ([`DecoderLayer::forward_in`]), head.
    fn forward_layers(&self, tokens: &Array, cache: &mut KvCache) -> Result<Array> {
        let mut x = self.embed(tokens)?;
        let mut state = StepState {
            per_layer_inputs: self
                .per_layer_embeddings
                .as_ref()
                .map(|p| p.forward(tokens, &x))
                .transpose()?,
            shared: Vec::new(),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward_in(&x, cache.layer_mut(i)?, &mut state)?;
        }
        self.head(&x)
    }

    /// [`CausalLm::forward_batch`] before the bounded evaluation of a parallel step.
    fn forward_batch_any(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Array> {
        if tokens.len() != caches.len() || tokens.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "a batch step needs one token per cache, got {} tokens and {} caches",
                tokens.len(),
                caches.len()
            )));
        }
        if let Some(c) = caches.iter().find(|c| c.num_layers() != self.layers.len()) {
            return Err(Error::InvalidArgument(format!(
                "the cache has {} layers, the model {}",
                c.num_layers(),
                self.layers.len()
            )));
        }
        let ids = token_ids(tokens)?;
        let b = tokens.len() as i32;
        let tokens = Array::from_slice(&ids, &[b, 1])?;
        if b == 1 {
            return self.forward(&tokens, caches[0]);
        }
        match &self.parallel {
            Some(Parallel::Pipeline(_)) => {
                return Err(Error::InvalidArgument(
                    "a pipeline runs one sequence per step".into(),
                ))
            }
            Some(Parallel::Tensor(_)) => {}
            None => {
                if let Some(logits) = super::native::stack_step_seqs(self, &tokens, caches)? {
                    return Ok(logits);
                }
            }
        }
        let mut x = self.embed(&tokens)?;
        let per_layer_inputs = self
            .per_layer_embeddings
            .as_ref()
            .map(|p| p.forward(&tokens, &x))
            .transpose()?;
        let mut shared = vec![Vec::new(); caches.len()];
        for (i, layer) in self.layers.iter().enumerate() {
            let mut layer_caches = caches
                .iter_mut()
                .map(|c| c.layer_mut(i))
                .collect::<Result<Vec<_>>>()?;
            x = layer.forward_batch(
                &x,
                &mut layer_caches,
                per_layer_inputs.as_ref(),
                &mut shared,
            )?;
        }
        self.head(&x)
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
    if let Some(ple) = spec.per_layer_embedding {
        let total = ple.width * spec.layers.len() as i32;
        plan.push(T::required(
            "model.embed_tokens_per_layer.weight",
            &[ple.vocab, total],
        ));
        plan.push(T::required(
            "model.per_layer_model_projection.weight",
            &[total, hidden],
        ));
        plan.push(T::required(
            "model.per_layer_projection_norm.weight",
            &[ple.width],
        ));
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
        if !matches!(a.kv, KvSource::Shared { .. }) {
            linear("self_attn.k_proj", kv, hidden, a.qkv_bias);
        }
        if a.kv == KvSource::Projected {
            linear("self_attn.v_proj", kv, hidden, a.qkv_bias);
        }
        linear("self_attn.o_proj", hidden, q, a.o_bias);
        linear("mlp.gate_proj", inter, hidden, layer.mlp.bias);
        linear("mlp.up_proj", inter, hidden, layer.mlp.bias);
        linear("mlp.down_proj", hidden, inter, layer.mlp.bias);
        if let Some(width) = layer.per_layer_input {
            linear("per_layer_input_gate", width, hidden, false);
            linear("per_layer_projection", hidden, width, false);
        }
        let norms = layer.norms;
        let moe_norms: &[&str] = if layer.moe.is_some() {
            &[
                "pre_feedforward_layernorm_2",
                "post_feedforward_layernorm_1",
                "post_feedforward_layernorm_2",
            ]
        } else {
            &[]
        };
        let ple_norm = layer.per_layer_input.map(|_| "post_per_layer_input_norm");
        for name in [
            Some(norms.pre_attention),
            norms.attention_out,
            Some(norms.pre_mlp),
            norms.mlp_out,
            ple_norm,
        ]
        .into_iter()
        .flatten()
        .chain(moe_norms.iter().copied())
        {
            plan.push(T::required(format!("{p}.{name}.weight"), &[hidden]));
        }
        if a.qk_norm.is_some() {
            plan.push(T::required(
                format!("{p}.self_attn.q_norm.weight"),
                &[a.head_dim],
            ));
            if !matches!(a.kv, KvSource::Shared { .. }) {
                plan.push(T::required(
                    format!("{p}.self_attn.k_norm.weight"),
                    &[a.head_dim],
                ));
            }
        }
        if layer.layer_scalar {
            plan.push(T::required(format!("{p}.layer_scalar"), &[1]));
        }
        if let Some(moe) = layer.moe {
            let (e, i) = (moe.experts, moe.intermediate);
            plan.push(T::required(format!("{p}.router.proj.weight"), &[e, hidden]));
            plan.push(T::required(format!("{p}.router.scale"), &[hidden]));
            plan.push(T::required(format!("{p}.router.per_expert_scale"), &[e]));
            // The fused stacks (Hugging Face's, renamed by the family, and GGUF's), or mlx-lm's
            // split ones (either may be quantized).
            for (name, shape) in [
                ("experts.gate_up_proj.weight", [e, 2 * i, hidden]),
                ("experts.down_proj.weight", [e, hidden, i]),
                ("experts.switch_glu.gate_proj.weight", [e, i, hidden]),
                ("experts.switch_glu.up_proj.weight", [e, i, hidden]),
                ("experts.switch_glu.down_proj.weight", [e, hidden, i]),
            ] {
                plan.push(T::optional(format!("{p}.{name}"), &shape));
            }
        }
    }
    plan
}
