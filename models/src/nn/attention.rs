//! Multi-head attention with grouped-query heads, RoPE and a KV cache, as an
//! [`AttentionSpec`] describes it.

use super::spec::{AttentionSpec, Features, KvSource, QueryScaling};
use super::{FusedLinear, Linear, RmsNorm, Rope};
use crate::error::{Error, Result};
use crate::load::BuildOptions;
use crate::runtime::cache::{Fetched, KeyMask, LayerCache};
use crate::weights::Weights;
use mlx_rs::fast::scaled_dot_product_attention;
use mlx_rs::native::AttentionKeys;
use mlx_rs::native::CachedAttentionParams;
use mlx_rs::{Array, Dtype};

/// The keys and values one layer attended to in this step, kept for the later layers that
/// share them ([`KvSource::Shared`]): the source's cache after its update (handles to its
/// buffers, which the next step writes in place) and the step's token count.
#[derive(Debug, Clone)]
pub struct SharedKv {
    cache: LayerCache,
    tokens: i32,
    /// What the composed path fetched, when the source ran composed.
    fetched: Option<Fetched>,
}

impl SharedKv {
    /// The keys, values and mask of the step's queries.
    fn fetched(&self) -> Result<Fetched> {
        match &self.fetched {
            Some(f) => Ok(f.clone()),
            None => self.cache.fetch_last(self.tokens),
        }
    }

    /// The position of the step's first query.
    fn offset(&self) -> i32 {
        self.cache.offset() - self.tokens
    }
}

/// `self_attn` of a decoder layer: projections, per-head norms, RoPE, the attention itself and
/// the output projection. The layer around it owns the norms and the residual.
#[derive(Debug, Clone)]
pub struct Attention {
    /// The q, k and v projections that exist ([`KvSource`]: q and k for keys-as-values, q
    /// alone for a shared layer), fused into one product when their storage allows.
    qkv_proj: FusedLinear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    rope: Rope,
    spec: AttentionSpec,
}

impl Attention {
    /// The q/k/v projections, fused or not.
    pub(crate) fn qkv_projection(&self) -> &FusedLinear {
        &self.qkv_proj
    }

    /// Its projections: q/k/v (fused or not), then o.
    pub(crate) fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut l = self.qkv_proj.linears_mut();
        l.push(&mut self.o_proj);
        l
    }

    /// Takes `<path>.{q,k,v,o}_proj` (and `<path>.{q,k}_norm` with `spec.qk_norm`). Widths are
    /// `heads · head_dim` (queries, output) and `kv_heads · head_dim` (keys, values), which
    /// differ from `hidden` when `head_dim` is explicit. Keys-as-values layers have no
    /// `v_proj`; shared layers have neither `k_proj`, `v_proj` nor `k_norm`.
    pub fn load(
        weights: &mut Weights,
        path: &str,
        hidden: i32,
        spec: &AttentionSpec,
        options: &BuildOptions,
    ) -> Result<Attention> {
        let q_width = spec.heads * spec.head_dim;
        let kv_width = spec.kv_heads * spec.head_dim;
        let proj = |w: &mut Weights, name: &str, inp: i32, out: i32, bias: bool| {
            Linear::load(w, &format!("{path}.{name}"), inp, out, bias, options)
        };
        let mut parts = vec![proj(weights, "q_proj", hidden, q_width, spec.qkv_bias)?];
        let mut widths = vec![q_width];
        let own_keys = !matches!(spec.kv, KvSource::Shared { .. });
        if own_keys {
            parts.push(proj(weights, "k_proj", hidden, kv_width, spec.qkv_bias)?);
            widths.push(kv_width);
        }
        if spec.kv == KvSource::Projected {
            parts.push(proj(weights, "v_proj", hidden, kv_width, spec.qkv_bias)?);
            widths.push(kv_width);
        }
        let o_proj = proj(weights, "o_proj", q_width, hidden, spec.o_bias)?;
        let (q_norm, k_norm) = match spec.qk_norm {
            Some(norm) => {
                let load = |w: &mut Weights, name: &str| {
                    RmsNorm::load_spec(w, &format!("{path}.{name}"), spec.head_dim, norm, options)
                };
                let q_norm = load(weights, "q_norm")?;
                let k_norm = own_keys.then(|| load(weights, "k_norm")).transpose()?;
                (Some(q_norm), k_norm)
            }
            None => (None, None),
        };
        let qkv_proj = FusedLinear::fuse(parts, &widths)?;
        Ok(Attention {
            qkv_proj,
            o_proj,
            q_norm,
            k_norm,
            rope: Rope::new(&spec.rope)?,
            spec: spec.clone(),
        })
    }

    /// The description this attention was built from.
    pub fn spec(&self) -> &AttentionSpec {
        &self.spec
    }

    /// The fused q/k/v projection.
    pub(crate) fn qkv_proj(&self) -> &FusedLinear {
        &self.qkv_proj
    }

    /// The output projection.
    pub(crate) fn o_proj(&self) -> &Linear {
        &self.o_proj
    }

    /// The per-head norms of queries and keys, if any.
    pub(crate) fn qk_norms(&self) -> (Option<&RmsNorm>, Option<&RmsNorm>) {
        (self.q_norm.as_ref(), self.k_norm.as_ref())
    }

    /// The RoPE.
    pub(crate) fn rope(&self) -> &Rope {
        &self.rope
    }

    /// Whether the native attention step computes exactly this attention: every feature the
    /// spec uses is in `supported`, and RoPE is a plain rotation (no yarn attention factor).
    /// (The output projection runs apart from the step, so its bias does not count.)
    pub(crate) fn native_ok(&self, supported: Features) -> bool {
        let f = Features {
            output_bias: false,
            ..self.spec.native_features()
        };
        f.within(supported) && self.rope.mscale() == 1.0
    }

    /// The native kernels' parameters for this attention (at offset 0).
    pub(crate) fn params(&self) -> CachedAttentionParams {
        CachedAttentionParams {
            keys: match self.spec.kv {
                KvSource::Projected => AttentionKeys::Projected,
                KvSource::KeysAsValues => AttentionKeys::AsValues,
                KvSource::Shared { .. } => AttentionKeys::Shared,
            },
            value_norm: self.spec.value_norm.is_some(),
            heads: self.spec.heads,
            kv_heads: self.spec.kv_heads,
            head_dim: self.spec.head_dim,
            offset: 0,
            scale: self.spec.scale,
            norm_eps: self.spec.qk_norm.map_or(0.0, |n| n.eps),
            window: self.spec.window,
            logit_softcap: self.spec.logit_softcap,
        }
    }

    /// Attends `x` (`[B, L, hidden]`, already normalised by the layer) to the cached positions
    /// and itself, appending this chunk's keys and values to `cache` (positions start at the
    /// cache's offset), and returns the output projection `[B, L, hidden]`.
    pub fn forward(&self, x: &Array, cache: &mut LayerCache) -> Result<Array> {
        Ok(self.forward_step(x, cache, None, false)?.0)
    }

    /// [`Attention::forward`] for a layer that may share keys and values: a
    /// [`KvSource::Shared`] layer attends to `shared` (what its source layer kept in this
    /// step; an [`Error::InvalidArgument`] when absent) and leaves `cache` alone; any other
    /// layer returns, when `keep`, what it attended to for the layers that share it.
    pub fn forward_step(
        &self,
        x: &Array,
        cache: &mut LayerCache,
        shared: Option<&SharedKv>,
        keep: bool,
    ) -> Result<(Array, Option<SharedKv>)> {
        check_input(x)?;
        let qkv = self.qkv_proj.forward_joined(x, None)?;
        let (out, kept) = self.attend(&qkv, cache, shared, keep)?;
        Ok((self.o_proj.forward(&out)?, kept))
    }

    /// One step of `B` independent sequences, one token each (`x`: `[B, 1, hidden]`), each
    /// with its own cache and position: the projections run once for the whole batch (the
    /// weights are read once), the attention itself per sequence. `shared[b]` and the kept
    /// keys and values are per sequence, as in [`Attention::forward_step`].
    pub fn forward_batch(
        &self,
        x: &Array,
        caches: &mut [&mut LayerCache],
        shared: &[Option<&SharedKv>],
        keep: bool,
    ) -> Result<(Array, Vec<Option<SharedKv>>)> {
        let [b, _, _] = check_input(x)?;
        if b as usize != caches.len() || shared.len() != caches.len() {
            return Err(Error::InvalidArgument(format!(
                "a batch of {b} sequences needs as many caches ({}) and shared entries ({})",
                caches.len(),
                shared.len()
            )));
        }
        let qkv = self.qkv_proj.forward_joined(x, None)?;
        let mut outs = Vec::with_capacity(caches.len());
        let mut kept = Vec::with_capacity(caches.len());
        for (i, cache) in caches.iter_mut().enumerate() {
            let row = qkv.slice(mlx_rs::s![i as i32..i as i32 + 1])?;
            let (out, k) = self.attend(&row, cache, shared[i], keep)?;
            outs.push(out);
            kept.push(k);
        }
        let outs: Vec<&Array> = outs.iter().collect();
        let out = mlx_rs::ops::concatenate(&outs, 0)?;
        Ok((self.o_proj.forward(&out)?, kept))
    }

    /// The attention of the joined q/k/v projection `qkv` (`[B, L, width]`) to the cache and
    /// itself, before the output projection: `[B, L, heads · head_dim]`.
    fn attend(
        &self,
        qkv: &Array,
        cache: &mut LayerCache,
        shared: Option<&SharedKv>,
        keep: bool,
    ) -> Result<(Array, Option<SharedKv>)> {
        let shape = qkv.shape();
        let (b, l) = (shape[0], shape[1]);
        let qkv = qkv.clone();
        if self.native_ok(super::NATIVE_ATTENTION_FEATURES) {
            // One primitive for the norms, RoPE, the cache write and the attention itself
            // (CPU, float32); `None` when it does not take the call.
            let (q_norm, k_norm) = self.qk_norms();
            let (q_norm, k_norm) = (q_norm.map(RmsNorm::weight), k_norm.map(RmsNorm::weight));
            let inv_freq = self.rope.inv_freq();
            let out = match (self.spec.kv, shared) {
                (KvSource::Shared { .. }, Some(shared)) => match shared.cache.buffers() {
                    Some((keys, values)) => mlx_rs::native::cached_attention(
                        &qkv,
                        keys,
                        values,
                        inv_freq,
                        q_norm,
                        None,
                        CachedAttentionParams {
                            offset: shared.offset(),
                            ..self.params()
                        },
                    )?
                    .map(|o| o.attention),
                    None => None,
                },
                (KvSource::Shared { .. }, None) => None,
                _ => cache.native_step(&qkv, inv_freq, q_norm, k_norm, self.params())?,
            };
            if let Some(out) = out {
                // Only layers with keys of their own are kept (the decoder checks sources).
                let kept = keep.then(|| SharedKv {
                    cache: cache.clone(),
                    tokens: l,
                    fetched: None,
                });
                return Ok((out, kept));
            }
        }
        let mut parts = self.qkv_proj.split(qkv)?.into_iter();
        let mut next = || {
            parts.next().ok_or_else(|| {
                Error::InvalidArgument("the q/k/v projection gave too few outputs".into())
            })
        };
        // [B, L, H·hd] -> [B, L, H, hd]; the per-head norm acts here, before the transpose to
        // [B, H, L, hd] and RoPE.
        let split = |y: &Array, heads: i32, norm: Option<&RmsNorm>| -> Result<Array> {
            let y = y.reshape(&[b, l, heads, self.spec.head_dim])?;
            let y = RmsNorm::apply(norm, &y)?;
            Ok(y.transpose(&[0, 2, 1, 3])?)
        };
        let q = split(&next()?, self.spec.heads, self.q_norm.as_ref())?;
        let (fetched, offset, kept) = match self.spec.kv {
            KvSource::Shared { source } => {
                let shared = shared.ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "this layer reuses the keys and values of layer {source}, which were not kept in this step"
                    ))
                })?;
                (shared.fetched()?, shared.offset(), None)
            }
            KvSource::Projected | KvSource::KeysAsValues => {
                let k_raw = next()?;
                let v_raw = match self.spec.kv {
                    KvSource::KeysAsValues => k_raw.clone(),
                    _ => next()?,
                };
                let k = split(&k_raw, self.spec.kv_heads, self.k_norm.as_ref())?;
                let v = split(&v_raw, self.spec.kv_heads, None)?;
                let v = match self.spec.value_norm {
                    Some(eps) => mlx_rs::fast::rms_norm(&v, None, eps)?,
                    None => v,
                };
                let offset = cache.offset();
                let k = self.rope.forward(&k, offset)?;
                let fetched = cache.update_and_fetch(&k, &v)?;
                let kept = keep.then(|| SharedKv {
                    cache: cache.clone(),
                    tokens: l,
                    fetched: Some(fetched.clone()),
                });
                (fetched, offset, kept)
            }
        };
        let mut q = self.rope.forward(&q, offset)?;
        if let Some(scaling) = self.spec.query_scaling {
            q = q.multiply(&query_scale(scaling, offset, l, q.dtype())?)?;
        }
        let out = match self.spec.logit_softcap {
            None => scaled_dot_product_attention(
                &q,
                &fetched.keys,
                &fetched.values,
                self.spec.scale,
                fetched.mask.as_attention_mask(),
            )?,
            Some(cap) => softcapped_attention(
                &q,
                &fetched.keys,
                &fetched.values,
                self.spec.scale,
                cap,
                &fetched.mask,
            )?,
        };
        let out =
            out.transpose(&[0, 2, 1, 3])?
                .reshape(&[b, l, self.spec.heads * self.spec.head_dim])?;
        Ok((out, kept))
    }
}

/// `[B, L, hidden]`, or an [`Error::InvalidArgument`].
fn check_input(x: &Array) -> Result<[i32; 3]> {
    match x.shape()[..] {
        [b, l, h] => Ok([b, l, h]),
        ref shape => Err(Error::InvalidArgument(format!(
            "attention input must be [B, L, hidden], got {shape:?}"
        ))),
    }
}

/// Ministral 3's query scale of the `l` positions from `offset`, `[1, 1, L, 1]`:
/// `1 + β·ln(1 + floor(pos / original))`.
fn query_scale(scaling: QueryScaling, offset: i32, l: i32, dtype: Dtype) -> Result<Array> {
    let original = scaling.original.max(1) as f64;
    let v: Vec<f32> = (0..l)
        .map(|t| {
            let pos = (offset + t) as f64;
            (1.0 + scaling.beta as f64 * (1.0 + (pos / original).floor()).ln()) as f32
        })
        .collect();
    Ok(Array::from_slice(&v, &[1, 1, l, 1])?.astype(dtype)?)
}

/// `softmax(mask(c·tanh(q·kᵀ·scale / c)))·v` with grouped-query heads (`q` `[B, H, L, d]`,
/// `k`/`v` `[B, H_kv, S, d]`), computed in float32: MLX's fused attention has no softcap.
fn softcapped_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    cap: f32,
    mask: &KeyMask,
) -> Result<Array> {
    let (qs, ks) = (q.shape(), k.shape());
    let (b, h, l, d) = (qs[0], qs[1], qs[2], qs[3]);
    let (h_kv, s) = (ks[1], ks[2]);
    let rep = h / h_kv.max(1);
    let dtype = q.dtype();
    let q = q.astype(Dtype::Float32)?.reshape(&[b, h_kv, rep, l, d])?;
    let k = k.astype(Dtype::Float32)?.expand_dims(&[2])?;
    let v = v.astype(Dtype::Float32)?.expand_dims(&[2])?;
    let scores = q
        .matmul(&k.transpose(&[0, 1, 2, 4, 3])?)?
        .multiply(&Array::scalar(scale / cap))?
        .tanh()?
        .multiply(&Array::scalar(cap))?;
    let visible = match mask {
        KeyMask::All => None,
        KeyMask::Causal => {
            let rows = Array::arange(0.0, l as f64, 1.0, Dtype::Int32)?
                .add(&Array::scalar(s - l))?
                .expand_dims(&[1])?;
            let cols = Array::arange(0.0, s as f64, 1.0, Dtype::Int32)?.expand_dims(&[0])?;
            Some(cols.less_equal(&rows)?)
        }
        KeyMask::Explicit(m) => Some(m.clone()),
    };
    let scores = match visible {
        Some(m) => mlx_rs::ops::where_(&m, &scores, &Array::scalar(f32::NEG_INFINITY))?,
        None => scores,
    };
    let weights = scores.softmax([-1], true)?;
    Ok(weights.matmul(&v)?.reshape(&[b, h, l, d])?.astype(dtype)?)
}
