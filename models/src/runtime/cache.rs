//! The KV cache: per layer, keys and values preallocated in steps of [`KV_STEP`] positions and
//! written in place with `slice_update` (no concatenation per token).
//!
//! A layer with a sliding window of `W` keys keeps a **rotating** buffer: position `p` lives at
//! slot `p % capacity`, and the capacity stays at most `W + L − 1` rounded up to a step for the
//! longest chunk of `L` tokens seen, so memory is bounded by the window, not the context. The
//! capacity is at least `W + L − 1` whenever the buffer has wrapped, so a chunk's writes never
//! overwrite a key that one of its own earlier queries still needs (a prefill chunk longer than
//! the window is handled exactly; mlx-lm #1914). The cache only stores: [`Fetched::mask`]
//! tells attention which slots each query may see.

use crate::error::{Error, Result};
use mlx_rs::fast::AttentionMask;
use mlx_rs::native::{cached_attention, CachedAttentionParams};
use mlx_rs::ops::concatenate;
use mlx_rs::{s, Array, Dtype};

/// Positions added each time a layer's cache grows (as mlx-lm).
pub const KV_STEP: i32 = 256;

/// What attention needs from the cache for one step: the stored keys and values and which of
/// them each new query may see.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `[B, H_kv, S, head_dim]`.
    pub keys: Array,
    /// `[B, H_kv, S, head_dim]`.
    pub values: Array,
    /// Which of the `S` keys the `L` queries see.
    pub mask: KeyMask,
}

/// The visibility of cached keys to a step's queries.
#[derive(Debug, Clone)]
pub enum KeyMask {
    /// Every key (one new token whose window holds everything stored).
    All,
    /// Query `l` sees keys `0..=S − L + l` (keys in position order, no window in reach).
    Causal,
    /// Boolean `[L, S]`: `true` where query `l` sees slot `s`.
    Explicit(Array),
}

impl KeyMask {
    /// The mask in the form [`mlx_rs::fast::scaled_dot_product_attention`] takes.
    pub fn as_attention_mask(&self) -> AttentionMask<'_> {
        match self {
            KeyMask::All => AttentionMask::None,
            KeyMask::Causal => AttentionMask::Causal,
            KeyMask::Explicit(m) => AttentionMask::Array(m),
        }
    }
}

/// The keys and values of one attention layer, `[B, H_kv, capacity, head_dim]`.
#[derive(Debug, Default, Clone)]
pub struct LayerCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
    window: Option<i32>,
    /// The layer reuses another layer's keys and values and stores none itself.
    unused: bool,
    /// The dtype the buffers store (`None`: the dtype of the keys and values written).
    storage: Option<Dtype>,
}

impl LayerCache {
    /// An empty cache; with `window`, a rotating buffer for a sliding-window layer of that many
    /// keys.
    pub fn new(window: Option<i32>) -> LayerCache {
        LayerCache {
            window: window.filter(|w| *w > 0),
            ..LayerCache::default()
        }
    }

    /// The place of a layer that stores nothing (Gemma 4's KV-shared layers attend to another
    /// layer's keys and values): it holds no buffers, and the model-level offset and trimming
    /// ignore it.
    pub fn unused() -> LayerCache {
        LayerCache {
            unused: true,
            ..LayerCache::default()
        }
    }

    /// This cache storing its keys and values as `dtype` (e.g. [`Dtype::Float16`] under a
    /// float32 model: half the memory and the bytes attention reads per step): each write is
    /// rounded to it, and [`LayerCache::update_and_fetch`] hands the stored values back in the
    /// dtype they were written in. The native attention reads float16 buffers directly. Set
    /// it before anything is stored.
    ///
    /// ```
    /// use mlx_models::runtime::cache::LayerCache;
    /// use mlx_rs::{Array, Dtype};
    /// let mut cache = LayerCache::new(None).with_storage(Dtype::Float16);
    /// let k = Array::from_slice(&[1.0f32 / 3.0; 4], &[1, 1, 1, 4])?;
    /// let step = cache.update_and_fetch(&k, &k)?;
    /// assert_eq!(cache.buffers().unwrap().0.dtype(), Dtype::Float16);
    /// assert_eq!(step.keys.dtype(), Dtype::Float32);
    /// // 1/3 rounded to half precision: 0x3555 = 1365 / 4096.
    /// assert_eq!(step.keys.to_vec::<f32>()?[0], 1365.0 / 4096.0);
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn with_storage(mut self, dtype: Dtype) -> LayerCache {
        self.storage = Some(dtype);
        self
    }

    /// The dtype this cache stores, when set ([`LayerCache::with_storage`]).
    pub fn storage(&self) -> Option<Dtype> {
        self.storage
    }

    /// Whether this layer stores nothing (see [`LayerCache::unused`]).
    pub fn is_unused(&self) -> bool {
        self.unused
    }

    /// Positions stored so far (the RoPE offset of the next token).
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// The sliding window this cache serves, if any.
    pub fn window(&self) -> Option<i32> {
        self.window
    }

    /// Slots allocated per sequence and head.
    pub fn capacity(&self) -> i32 {
        self.keys.as_ref().map_or(0, |k| k.shape()[2])
    }

    /// Appends `keys` and `values` (`[B, H_kv, L, head_dim]`) at the current offset and returns
    /// everything the step's queries may see, with the mask saying which.
    ///
    /// ```
    /// use mlx_models::runtime::cache::{KeyMask, LayerCache};
    /// use mlx_rs::{Array, Dtype};
    /// let mut cache = LayerCache::default();
    /// let k = Array::ones(&[1, 2, 3, 4], Dtype::Float32)?;
    /// let step = cache.update_and_fetch(&k, &k)?;
    /// assert_eq!((step.keys.shape(), cache.offset()), (vec![1, 2, 3, 4], 3));
    /// assert!(matches!(step.mask, KeyMask::Causal));
    /// let step = cache.update_and_fetch(&(&k * 2.0f32), &k)?;
    /// assert_eq!(step.keys.shape(), vec![1, 2, 6, 4]);
    /// assert_eq!(step.keys.sum(.., false)?.item::<f32>()?, (24 + 48) as f32);
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<Fetched> {
        if self.unused {
            return Err(Error::InvalidArgument(
                "this layer's cache is unused: the layer reuses another layer's keys and values"
                    .into(),
            ));
        }
        let (ks, vs) = (keys.shape(), values.shape());
        if ks.len() != 4 || vs.len() != 4 || ks[..3] != vs[..3] {
            return Err(Error::InvalidArgument(format!(
                "KV cache: keys {ks:?} and values {vs:?} must be [B, H_kv, L, head_dim] with equal B, H_kv, L"
            )));
        }
        let l = ks[2];
        self.reserve(l, &ks, keys.dtype(), &vs, values.dtype())?;
        let capacity = self.capacity();
        let (Some(k_store), Some(v_store)) = (&self.keys, &self.values) else {
            unreachable!("allocated above")
        };
        // The chunk's slots: one run, or two when it wraps around the end of the ring.
        let first = self.offset % capacity;
        let head = l.min(capacity - first);
        let write = |store: &Array, update: &Array| -> Result<Array> {
            let mut stop = store.shape();
            stop[2] = first + head;
            let part = if head == l {
                update.clone()
            } else {
                update.slice(s![.., .., ..head])?
            };
            let mut out = store.slice_update(&part, &[0, 0, first, 0], &stop, &[1, 1, 1, 1])?;
            if head < l {
                let mut stop = store.shape();
                stop[2] = l - head;
                let rest = update.slice(s![.., .., head..])?;
                out = out.slice_update(&rest, &[0, 0, 0, 0], &stop, &[1, 1, 1, 1])?;
            }
            Ok(out)
        };
        let stored = |a: &Array, store: &Array| -> Result<Array> {
            Ok(if a.dtype() == store.dtype() {
                a.clone()
            } else {
                a.astype(store.dtype())?
            })
        };
        let k_store = write(k_store, &stored(keys, k_store)?)?;
        let v_store = write(v_store, &stored(values, v_store)?)?;
        self.keys = Some(k_store);
        self.values = Some(v_store);
        self.offset += l;
        let mut fetched = self.fetch_last(l)?;
        // Rounded to the storage dtype, handed back in the dtype attention computes in.
        if fetched.keys.dtype() != keys.dtype() {
            fetched.keys = fetched.keys.astype(keys.dtype())?;
        }
        if fetched.values.dtype() != values.dtype() {
            fetched.values = fetched.values.astype(values.dtype())?;
        }
        Ok(fetched)
    }

    /// What the queries of the last `l` stored positions see (as [`LayerCache::update_and_fetch`]
    /// returned it), without writing anything: for layers that reuse this layer's keys and
    /// values in the same step. [`Error::InvalidArgument`] when fewer than `l` positions are
    /// stored.
    pub fn fetch_last(&self, l: i32) -> Result<Fetched> {
        let (Some(k_store), Some(v_store)) = (&self.keys, &self.values) else {
            return Err(Error::InvalidArgument(
                "the cache holds no keys and values yet".into(),
            ));
        };
        let end = self.offset;
        if l < 1 || l > end {
            return Err(Error::InvalidArgument(format!(
                "the last {l} positions of a cache at offset {end} cannot be fetched"
            )));
        }
        let capacity = self.capacity();
        let in_window = self.window.is_none_or(|w| end <= w);
        if end <= capacity {
            let k_view = k_store.slice(s![.., .., ..end])?;
            let v_view = v_store.slice(s![.., .., ..end])?;
            let mask = match (in_window, l) {
                (true, 1) => KeyMask::All,
                (true, _) => KeyMask::Causal,
                (false, _) => KeyMask::Explicit(self.window_mask(l, end)?),
            };
            return Ok(Fetched {
                keys: k_view,
                values: v_view,
                mask,
            });
        }
        Ok(Fetched {
            keys: k_store.clone(),
            values: v_store.clone(),
            mask: KeyMask::Explicit(self.window_mask(l, capacity)?),
        })
    }

    /// The key and value buffers, `[B, H_kv, capacity, head_dim]`, once anything is stored.
    pub fn buffers(&self) -> Option<(&Array, &Array)> {
        self.keys.as_ref().zip(self.values.as_ref())
    }

    /// The boolean `[l, slots]` mask of the last step's `l` queries over the first `slots`
    /// slots: slot `s` holds the newest position `p < offset` with `p ≡ s (mod capacity)`,
    /// visible from query position `i` iff `0 ≤ i − p < window` (`p ≤ i` without a window).
    fn window_mask(&self, l: i32, slots: i32) -> Result<Array> {
        let capacity = self.capacity().max(1);
        let end = self.offset;
        let window = self.window.unwrap_or(i32::MAX);
        let mut mask = Vec::with_capacity((l * slots) as usize);
        for q in 0..l {
            let i = end - l + q;
            for slot in 0..slots {
                let p = if slot < end {
                    end - 1 - (end - 1 - slot).rem_euclid(capacity)
                } else {
                    -1
                };
                mask.push(p >= 0 && p <= i && i - p < window);
            }
        }
        Ok(Array::from_slice(&mask, &[l, slots])?)
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
        self.reserve(l, &like, dtype, &like, dtype)?;
        Ok(l)
    }

    /// Keeps the caches a native step returned and advances the offset by `l`.
    fn commit_step(&mut self, keys: Array, values: Array, l: i32) {
        self.keys = Some(keys);
        self.values = Some(values);
        self.offset += l;
    }

    /// Makes room for `l` new positions: a plain cache holds `offset + l` positions; a
    /// rotating one either holds them without wrapping or has at least `window + l − 1` slots.
    /// Growth is by whole [`KV_STEP`]s, and a rotating buffer that has wrapped is re-laid so
    /// that every position still in reach sits at `p % new_capacity`. New buffers take the
    /// shapes (but for the positions axis) and dtypes given.
    fn reserve(
        &mut self,
        l: i32,
        k_shape: &[i32],
        k_dtype: Dtype,
        v_shape: &[i32],
        v_dtype: Dtype,
    ) -> Result<()> {
        // The storage dtype, else that of buffers already there (a state restored from a
        // prefix cache keeps its own), else the written values'.
        let (k_dtype, v_dtype) = match (self.storage, &self.keys, &self.values) {
            (Some(d), _, _) => (d, d),
            (None, Some(k), Some(v)) => (k.dtype(), v.dtype()),
            _ => (k_dtype, v_dtype),
        };
        let capacity = self.capacity();
        let end = self.offset.checked_add(l).ok_or_else(|| {
            Error::InvalidArgument("KV cache: the position count overflows i32".into())
        })?;
        let ring_ok = self
            .window
            .is_some_and(|w| capacity > 0 && capacity as i64 >= w as i64 + l as i64 - 1);
        if end <= capacity || ring_ok {
            return Ok(());
        }
        let need = match self.window {
            Some(w) => end.min(w.saturating_add(l - 1)),
            None => end,
        };
        let new_capacity = need
            .checked_add(KV_STEP - 1)
            .map(|n| n / KV_STEP * KV_STEP)
            .ok_or_else(|| Error::InvalidArgument("KV cache: the capacity overflows i32".into()))?;
        let grow = |old: &Option<Array>, like: &[i32], dtype: Dtype| -> Result<Array> {
            let mut shape = like.to_vec();
            let Some(old) = old else {
                shape[2] = new_capacity;
                return Ok(Array::zeros(&shape, dtype)?);
            };
            if self.offset <= capacity {
                // Never wrapped: positions sit at their own slots; keep the written part (a
                // trim may have left a tail) and extend.
                shape[2] = new_capacity - self.offset;
                let fresh = Array::zeros(&shape, dtype)?;
                return Ok(concatenate(
                    &[&old.slice(s![.., .., ..self.offset])?, &fresh],
                    2,
                )?);
            }
            // Wrapped: move each position still in reach from p % capacity to
            // p % new_capacity (the other new slots are never read before being written).
            let reach = self
                .window
                .map_or(self.offset, |w| (w - 1).min(self.offset));
            let mut index = vec![0i32; new_capacity as usize];
            for p in self.offset - reach..self.offset {
                index[(p % new_capacity) as usize] = p % capacity;
            }
            let index = Array::from_slice(&index, &[new_capacity])?;
            Ok(old.take(&index, 2)?)
        };
        self.keys = Some(grow(&self.keys, k_shape, k_dtype)?);
        self.values = Some(grow(&self.values, v_shape, v_dtype)?);
        Ok(())
    }

    /// Forgets the last `n` positions (clamped to what is stored, and for a rotating buffer
    /// that has wrapped, to what can be forgotten without losing a key the window still
    /// needs); returns how many were removed.
    pub fn trim(&mut self, n: i32) -> i32 {
        let n = self.trimmable(n);
        self.offset -= n;
        n
    }

    /// How many of the last `n` positions [`LayerCache::trim`] would forget.
    fn trimmable(&self, n: i32) -> i32 {
        let n = n.clamp(0, self.offset);
        match self.window {
            Some(w) if self.offset > self.capacity() => n.min((self.capacity() - w).max(0)),
            _ => n,
        }
    }

    /// The stored buffers, for `eval`.
    pub fn state(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).collect()
    }

    /// Bytes held by the buffers.
    pub fn nbytes(&self) -> usize {
        self.state().iter().map(|a| a.nbytes()).sum()
    }

    /// This cache with its buffers copied into fresh memory: the native steps write positions
    /// into the buffers in place, so a cache that outlives the one it came from (a prefix
    /// cache entry, a fork) must not share them.
    pub fn detached(&self) -> Result<LayerCache> {
        // A buffer that never wrapped holds its positions at their own slots: copy those only.
        let keep = self.offset.min(self.capacity());
        if keep == 0 {
            return Ok(LayerCache {
                keys: None,
                values: None,
                ..self.clone()
            });
        }
        let copy = |a: &Option<Array>| -> Result<Option<Array>> {
            let Some(a) = a else { return Ok(None) };
            let a = a.slice(s![.., .., ..keep])?;
            Ok(Some(if keep == 1 {
                a.multiply(&Array::scalar(1.0f32).astype(a.dtype())?)?
            } else {
                // Concatenation always writes a new buffer.
                concatenate(&[&a.slice(s![.., .., ..1])?, &a.slice(s![.., .., 1..])?], 2)?
            }))
        };
        Ok(LayerCache {
            keys: copy(&self.keys)?,
            values: copy(&self.values)?,
            ..self.clone()
        })
    }
}

/// The KV cache of a whole model: one [`LayerCache`] per layer.
#[derive(Debug, Default, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// An empty cache for `layers` layers, none with a window.
    pub fn new(layers: usize) -> KvCache {
        KvCache {
            layers: vec![LayerCache::default(); layers],
        }
    }

    /// An empty cache with one layer per entry of `windows`: a rotating buffer where the
    /// layer has a sliding window, a plain one elsewhere.
    ///
    /// ```
    /// use mlx_models::runtime::cache::KvCache;
    /// let cache = KvCache::with_windows(&[Some(4), None]);
    /// assert_eq!(cache.num_layers(), 2);
    /// ```
    pub fn with_windows(windows: &[Option<i32>]) -> KvCache {
        KvCache {
            layers: windows.iter().map(|w| LayerCache::new(*w)).collect(),
        }
    }

    /// Every layer's cache storing its keys and values as `dtype` (see
    /// [`LayerCache::with_storage`]).
    ///
    /// ```
    /// use mlx_models::runtime::cache::KvCache;
    /// let cache = KvCache::new(2).with_storage(mlx_rs::Dtype::Float16);
    /// assert_eq!(cache.storage(), Some(mlx_rs::Dtype::Float16));
    /// ```
    pub fn with_storage(self, dtype: Dtype) -> KvCache {
        KvCache {
            layers: self
                .layers
                .into_iter()
                .map(|l| l.with_storage(dtype))
                .collect(),
        }
    }

    /// The dtype the layers store, when [`KvCache::with_storage`] set it.
    pub fn storage(&self) -> Option<Dtype> {
        self.layers.iter().find_map(|l| l.storage)
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

    /// A cache made of the given layers (some may be [`LayerCache::unused`]).
    pub fn from_layers(layers: Vec<LayerCache>) -> KvCache {
        KvCache { layers }
    }

    /// Positions stored (those of the first layer that stores any).
    pub fn offset(&self) -> i32 {
        self.layers
            .iter()
            .find(|l| !l.unused)
            .map_or(0, LayerCache::offset)
    }

    /// Forgets the last `n` positions of every layer, or as many as every layer can (see
    /// [`LayerCache::trim`]); returns how many were removed.
    pub fn trim(&mut self, n: i32) -> i32 {
        let n = self
            .layers
            .iter()
            .filter(|l| !l.unused)
            .map(|l| l.trimmable(n))
            .min()
            .unwrap_or(0);
        for layer in &mut self.layers {
            layer.trim(n);
        }
        n
    }

    /// Empties the cache (keeps the layers and their windows).
    pub fn reset(&mut self) {
        for layer in &mut self.layers {
            *layer = LayerCache {
                window: layer.window,
                unused: layer.unused,
                ..LayerCache::default()
            };
        }
    }

    /// Bytes held by every layer's buffers.
    pub fn nbytes(&self) -> usize {
        self.layers.iter().map(LayerCache::nbytes).sum()
    }

    /// A copy of the first `n` positions in fresh memory (see [`LayerCache::detached`]), or
    /// `None` when some layer cannot forget the positions after `n` (a rotating buffer that
    /// has wrapped past them).
    ///
    /// ```
    /// use mlx_models::runtime::cache::KvCache;
    /// use mlx_rs::{Array, Dtype};
    /// let mut cache = KvCache::new(1);
    /// let k = Array::ones(&[1, 1, 5, 2], Dtype::Float32)?;
    /// cache.layer_mut(0)?.update_and_fetch(&k, &k)?;
    /// let prefix = cache.detached_prefix(3)?.unwrap();
    /// assert_eq!((prefix.offset(), cache.offset()), (3, 5));
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn detached_prefix(&self, n: i32) -> Result<Option<KvCache>> {
        let offset = self.offset();
        if n < 0 || n > offset {
            return Ok(None);
        }
        let mut copy = self.clone();
        if copy.trim(offset - n) != offset - n {
            return Ok(None);
        }
        let layers = copy
            .layers
            .iter()
            .map(LayerCache::detached)
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(KvCache { layers }))
    }

    /// Every stored buffer, for `eval` after a prefill chunk.
    pub fn state(&self) -> Vec<&Array> {
        self.layers.iter().flat_map(LayerCache::state).collect()
    }

    /// The offset of each of `caches` when native steps may run on them: native ops are on
    /// and every cache has `layers` layers, all at the same offset (no unused layer).
    pub fn uniform_offsets(caches: &[&mut KvCache], layers: usize) -> Option<Vec<i32>> {
        let eligible = mlx_rs::native::native_ops_enabled()
            && !caches.is_empty()
            && caches.iter().all(|c| {
                let o = c.offset();
                c.layers.len() == layers && c.layers.iter().all(|l| !l.unused && l.offset == o)
            });
        eligible.then(|| caches.iter().map(|c| c.offset()).collect())
    }

    /// [`KvCache::in_place_stack_step`] for `B` independent sequences of one token each, each
    /// with its own cache (`caches[b]`), over the layers `first..first + params.len()`: grows
    /// those layers' buffers for one token, calls `step(buffers, offsets)` with `buffers[i][b]`
    /// = layer `first + i`'s `(keys, values)` of sequence `b` and `offsets` (each sequence's
    /// offset before the step, from [`KvCache::uniform_offsets`]), and on `Some((output,
    /// written))` (`written` flattened layer by layer, sequence by sequence) keeps the returned
    /// caches and advances those layers' offsets by one. `Ok(None)` (nothing changed but
    /// perhaps capacities) when `step` declines.
    #[allow(clippy::type_complexity)]
    pub fn in_place_seqs_step(
        caches: &mut [&mut KvCache],
        first: usize,
        dtype: Dtype,
        params: &[CachedAttentionParams],
        offsets: &[i32],
        step: impl FnOnce(
            &[Vec<(&Array, &Array)>],
            &[i32],
        ) -> Result<Option<(Array, Vec<(Array, Array)>)>>,
    ) -> Result<Option<Array>> {
        let layers = first..first + params.len();
        if caches.iter().any(|c| c.layers.len() < layers.end) || offsets.len() != caches.len() {
            return Err(Error::InvalidArgument(format!(
                "KV cache: layers {layers:?} of {} caches at {} offsets",
                caches.len(),
                offsets.len()
            )));
        }
        for cache in caches.iter_mut() {
            for (layer, params) in cache.layers[layers.clone()].iter_mut().zip(params) {
                layer.reserve_tokens(1, 1, dtype, params)?;
            }
        }
        let buffers: Vec<Vec<(&Array, &Array)>> = layers
            .clone()
            .map(|l| {
                caches
                    .iter()
                    .map(|c| match (&c.layers[l].keys, &c.layers[l].values) {
                        (Some(k), Some(v)) => (k, v),
                        _ => unreachable!("reserved above"),
                    })
                    .collect()
            })
            .collect();
        let Some((out, written)) = step(&buffers, offsets)? else {
            return Ok(None);
        };
        if written.len() != params.len() * caches.len() {
            return Err(Error::InvalidArgument(format!(
                "KV cache: the step returned {} caches for {} layers of {} sequences",
                written.len(),
                params.len(),
                caches.len()
            )));
        }
        let n = caches.len();
        for (i, (k, v)) in written.into_iter().enumerate() {
            caches[i % n].layers[first + i / n].commit_step(k, v, 1);
        }
        Ok(Some(out))
    }

    /// [`LayerCache::in_place_step`] for all layers at once, through one native primitive
    /// that runs the whole stack: grows every layer's buffers (of `dtype`, shaped by that
    /// layer's `params`) for `tokens` = `[B, L]` new tokens, calls `step(caches, offset)` with
    /// each layer's `(keys, values)`, and on `Some((output, caches))` keeps the returned caches
    /// and advances every offset. `Ok(None)` (nothing changed but perhaps capacities) when
    /// native ops are off, the layers' offsets differ, `params` does not have one entry per
    /// layer, or `step` declines.
    pub fn in_place_stack_step(
        &mut self,
        tokens: [i32; 2],
        dtype: Dtype,
        params: &[CachedAttentionParams],
        step: impl FnOnce(&[(&Array, &Array)], i32) -> Result<Option<(Array, Vec<(Array, Array)>)>>,
    ) -> Result<Option<Array>> {
        let offset = self.offset();
        if !mlx_rs::native::native_ops_enabled()
            || self.layers.is_empty()
            || self.layers.iter().any(|c| c.offset != offset)
            || params.len() != self.layers.len()
        {
            return Ok(None);
        }
        let [b, l] = tokens;
        for (layer, params) in self.layers.iter_mut().zip(params) {
            layer.reserve_tokens(b, l, dtype, params)?;
        }
        let caches: Vec<(&Array, &Array)> = self
            .layers
            .iter()
            .map(|c| match (&c.keys, &c.values) {
                (Some(k), Some(v)) => (k, v),
                _ => unreachable!("reserved above"),
            })
            .collect();
        let Some((out, written)) = step(&caches, offset)? else {
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
