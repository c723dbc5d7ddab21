//! The KV cache: per layer, keys and values preallocated in steps of [`KV_STEP`] positions and
//! written in place with `slice_update` (no concatenation per token).

use crate::error::{Error, Result};
use mlx_rs::native::{cached_attention, CachedAttentionParams};
use mlx_rs::ops::concatenate;
use mlx_rs::{s, Array, Dtype};

/// Positions added each time a layer's cache grows (as mlx-lm).
pub const KV_STEP: i32 = 256;

/// The keys and values of one attention layer, `[B, H_kv, capacity, head_dim]`.
#[derive(Debug, Default, Clone)]
pub struct LayerCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
}

impl LayerCache {
    /// Positions stored so far (the RoPE offset of the next token).
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Appends `keys` and `values` (`[B, H_kv, L, head_dim]`) at the current offset and returns
    /// views of everything stored so far, `[B, H_kv, offset + L, head_dim]`.
    ///
    /// ```
    /// use mlx_models::runtime::cache::LayerCache;
    /// use mlx_rs::{Array, Dtype};
    /// let mut cache = LayerCache::default();
    /// let k = Array::ones(&[1, 2, 3, 4], Dtype::Float32)?;
    /// let (keys, _) = cache.update_and_fetch(&k, &k)?;
    /// assert_eq!((keys.shape(), cache.offset()), (vec![1, 2, 3, 4], 3));
    /// let (keys, _) = cache.update_and_fetch(&(&k * 2.0f32), &k)?;
    /// assert_eq!(keys.shape(), vec![1, 2, 6, 4]);
    /// assert_eq!(keys.sum(.., false)?.item::<f32>()?, (24 + 48) as f32);
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let (ks, vs) = (keys.shape(), values.shape());
        if ks.len() != 4 || vs.len() != 4 || ks[..3] != vs[..3] {
            return Err(Error::InvalidArgument(format!(
                "KV cache: keys {ks:?} and values {vs:?} must be [B, H_kv, L, head_dim] with equal B, H_kv, L"
            )));
        }
        let new_len = ks[2];
        let end = self.offset + new_len;
        self.reserve(end, &ks, keys.dtype(), &vs, values.dtype())?;
        let write = |store: &Array, update: &Array| -> Result<Array> {
            let mut stop = store.shape();
            stop[2] = end;
            Ok(store.slice_update(update, &[0, 0, self.offset, 0], &stop, &[1, 1, 1, 1])?)
        };
        let (k_store, v_store) = match (&self.keys, &self.values) {
            (Some(k), Some(v)) => (write(k, keys)?, write(v, values)?),
            _ => unreachable!("allocated above"),
        };
        let k_view = k_store.slice(s![.., .., ..end])?;
        let v_view = v_store.slice(s![.., .., ..end])?;
        self.keys = Some(k_store);
        self.values = Some(v_store);
        self.offset = end;
        Ok((k_view, v_view))
    }

    /// One attention step through the native primitive ([`mlx_rs::native::cached_attention`])
    /// for the `L` tokens of `qkv` (`[B, L, width]`): grows the buffers if needed, lets the
    /// primitive write positions `offset..offset + L` in place and returns the attention output
    /// `[B, L, heads * head_dim]`. `Ok(None)` (nothing changed) when the primitive does not
    /// take the call; the caller then uses [`LayerCache::update_and_fetch`].
    pub fn native_step(
        &mut self,
        qkv: &Array,
        inv_freq: &Array,
        q_norm: Option<&Array>,
        k_norm: Option<&Array>,
        params: CachedAttentionParams,
    ) -> Result<Option<Array>> {
        self.in_place_step(qkv, params, |keys, values, params| {
            Ok(
                cached_attention(qkv, keys, values, inv_freq, q_norm, k_norm, params)?
                    .map(|o| (o.attention, o.k_cache, o.v_cache)),
            )
        })
    }

    /// A step through a native primitive that writes the caches in place, for the `L` tokens
    /// of `input` (`[B, L, ...]`, whose dtype the caches take): grows the buffers if needed,
    /// calls `step(keys, values, params)` with `params.offset` set to the cache's offset, and
    /// on `Some((output, keys, values))` keeps the returned caches, advances the offset by `L`
    /// and returns the output. `Ok(None)` (nothing changed but perhaps the capacity) when
    /// native ops are off or `step` declines.
    pub fn in_place_step(
        &mut self,
        input: &Array,
        mut params: CachedAttentionParams,
        step: impl FnOnce(
            &Array,
            &Array,
            CachedAttentionParams,
        ) -> Result<Option<(Array, Array, Array)>>,
    ) -> Result<Option<Array>> {
        if !mlx_rs::native::native_ops_enabled() {
            return Ok(None);
        }
        let l = self.reserve_step(input, &params)?;
        let (Some(keys), Some(values)) = (&self.keys, &self.values) else {
            unreachable!("reserved above")
        };
        params.offset = self.offset;
        let Some((out, k_cache, v_cache)) = step(keys, values, params)? else {
            return Ok(None);
        };
        self.commit_step(k_cache, v_cache, l);
        Ok(Some(out))
    }

    /// Grows the buffers for the `L` tokens of `input` (`[B, L, ...]`, whose dtype the caches
    /// take) at the current offset; returns `L`.
    fn reserve_step(&mut self, input: &Array, params: &CachedAttentionParams) -> Result<i32> {
        let shape = input.shape();
        match shape[..] {
            [b, l, ..] => self.reserve_tokens(b, l, input.dtype(), params),
            _ => Err(Error::InvalidArgument(format!(
                "KV cache: the step's input must be [B, L, ...], got {shape:?}"
            ))),
        }
    }

    /// Grows the buffers (of `dtype`) for `l` new tokens of `b` sequences; returns `l`.
    fn reserve_tokens(
        &mut self,
        b: i32,
        l: i32,
        dtype: Dtype,
        params: &CachedAttentionParams,
    ) -> Result<i32> {
        let like = [b, params.kv_heads, l, params.head_dim];
        self.reserve(self.offset + l, &like, dtype, &like, dtype)?;
        Ok(l)
    }

    /// Keeps the caches a native step returned and advances the offset by `l`.
    fn commit_step(&mut self, keys: Array, values: Array, l: i32) {
        self.keys = Some(keys);
        self.values = Some(values);
        self.offset += l;
    }

    /// Makes the buffers hold at least `end` positions, growing by whole [`KV_STEP`]s; new
    /// buffers take the shapes (but for the positions axis) and dtypes given.
    fn reserve(
        &mut self,
        end: i32,
        k_shape: &[i32],
        k_dtype: Dtype,
        v_shape: &[i32],
        v_dtype: Dtype,
    ) -> Result<()> {
        let capacity = self.keys.as_ref().map_or(0, |k| k.shape()[2]);
        if end <= capacity {
            return Ok(());
        }
        let grow = ((end - capacity + KV_STEP - 1) / KV_STEP) * KV_STEP;
        let extend = |old: &Option<Array>, like: &[i32], dtype: Dtype| -> Result<Array> {
            let mut shape = like.to_vec();
            shape[2] = grow;
            let fresh = Array::zeros(&shape, dtype)?;
            Ok(match old {
                // Keep only the written part before growing (a trim may have left a tail).
                Some(old) => concatenate(&[&old.slice(s![.., .., ..self.offset])?, &fresh], 2)?,
                None => fresh,
            })
        };
        self.keys = Some(extend(&self.keys, k_shape, k_dtype)?);
        self.values = Some(extend(&self.values, v_shape, v_dtype)?);
        Ok(())
    }

    /// Forgets the last `n` positions (clamped to what is stored); returns how many were removed.
    pub fn trim(&mut self, n: i32) -> i32 {
        let n = n.clamp(0, self.offset);
        self.offset -= n;
        n
    }

    /// The stored buffers, for `eval`.
    pub fn state(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).collect()
    }
}

/// The KV cache of a whole model: one [`LayerCache`] per layer.
#[derive(Debug, Default, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> KvCache {
        KvCache {
            layers: vec![LayerCache::default(); layers],
        }
    }

    /// The cache of layer `i`.
    pub fn layer_mut(&mut self, i: usize) -> Result<&mut LayerCache> {
        let n = self.layers.len();
        self.layers.get_mut(i).ok_or_else(|| {
            Error::InvalidArgument(format!("layer {i} out of range for a cache of {n} layers"))
        })
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Positions stored (those of layer 0).
    pub fn offset(&self) -> i32 {
        self.layers.first().map_or(0, LayerCache::offset)
    }

    /// Forgets the last `n` positions of every layer.
    pub fn trim(&mut self, n: i32) {
        for layer in &mut self.layers {
            layer.trim(n);
        }
    }

    /// Empties the cache (keeps the number of layers).
    pub fn reset(&mut self) {
        let n = self.layers.len();
        *self = KvCache::new(n);
    }

    /// Every stored buffer, for `eval` after a prefill chunk.
    pub fn state(&self) -> Vec<&Array> {
        self.layers.iter().flat_map(LayerCache::state).collect()
    }

    /// [`LayerCache::in_place_step`] for all layers at once, through one native primitive
    /// that runs the whole stack: grows every layer's buffers (of `dtype`) for `tokens` =
    /// `[B, L]` new tokens, calls `step(caches, params)` with each layer's `(keys, values)` and
    /// `params.offset` set, and on `Some((output, caches))` keeps the returned caches and
    /// advances every offset. `Ok(None)` (nothing changed but perhaps capacities) when native
    /// ops are off, the layers' offsets differ, or `step` declines.
    pub fn in_place_stack_step(
        &mut self,
        tokens: [i32; 2],
        dtype: Dtype,
        mut params: CachedAttentionParams,
        step: impl FnOnce(
            &[(&Array, &Array)],
            CachedAttentionParams,
        ) -> Result<Option<(Array, Vec<(Array, Array)>)>>,
    ) -> Result<Option<Array>> {
        let offset = self.offset();
        if !mlx_rs::native::native_ops_enabled()
            || self.layers.is_empty()
            || self.layers.iter().any(|c| c.offset != offset)
        {
            return Ok(None);
        }
        let [b, l] = tokens;
        for layer in &mut self.layers {
            layer.reserve_tokens(b, l, dtype, &params)?;
        }
        let caches: Vec<(&Array, &Array)> = self
            .layers
            .iter()
            .map(|c| match (&c.keys, &c.values) {
                (Some(k), Some(v)) => (k, v),
                _ => unreachable!("reserved above"),
            })
            .collect();
        params.offset = offset;
        let Some((out, written)) = step(&caches, params)? else {
            return Ok(None);
        };
        if written.len() != self.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "KV cache: the step returned {} caches for {} layers",
                written.len(),
                self.layers.len()
            )));
        }
        for (layer, (k, v)) in self.layers.iter_mut().zip(written) {
            layer.commit_step(k, v, l);
        }
        Ok(Some(out))
    }
}
