//! Tests of `mlx_rs::native`: the project's own CPU primitives for RMS norm, SwiGLU and
//! cached attention over L new tokens (and `fast::rms_norm`, which tries the native primitive
//! first).
//!
//! Expected values are computed here in f64 from the input values and the definitions (RMS
//! norm, `silu(gate) * up`, per-head RMS norm + rotate-half RoPE + softmax attention), and the
//! native path is also compared with MLX's own composition of the same step (native ops off).
//!
//! The native switch is process-wide and the tests of this binary run on parallel threads:
//! every test holds [`LOCK`] (through [`Native`]) for its whole body and restores the switch.

mod common;

use common::{attention_composed, f32s, rand_vec, AttnSpec};
use mlx_rs::fast::{self, AttentionMask};
use mlx_rs::native::{self, cached_attention, CachedAttentionOutput, CachedAttentionParams};
use mlx_rs::{s, Array, Dtype, Error};
use std::sync::{Mutex, MutexGuard};

static LOCK: Mutex<()> = Mutex::new(());

/// Holds [`LOCK`] and restores the native switch on drop (before the lock is released).
struct Native {
    before: bool,
    _guard: MutexGuard<'static, ()>,
}

impl Native {
    fn lock(on: bool) -> Native {
        let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let before = native::native_ops_enabled();
        native::set_native_ops(on);
        Native {
            before,
            _guard: guard,
        }
    }

    fn set(&self, on: bool) {
        native::set_native_ops(on);
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        native::set_native_ops(self.before);
    }
}

fn arr(v: &[f32], shape: &[i32]) -> Array {
    Array::from_slice(v, shape).unwrap()
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= atol + rtol * w.abs(),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

// ------------------------------------------------------------------------------ RMS norm

/// `x / sqrt(mean(x^2) + eps) * w` over rows of `dim`, in f64.
fn rms_ref(x: &[f32], w: Option<&[f32]>, eps: f64, dim: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(dim) {
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for (i, &v) in row.iter().enumerate() {
            out.push(v as f64 * inv * w.map_or(1.0, |w| w[i] as f64));
        }
    }
    out
}

#[test]
fn rms_norm_native_matches_f64_reference_and_mlx() {
    let n = Native::lock(true);
    let eps = 1e-5f32;
    for (k, shape) in [vec![1, 576], vec![3, 7], vec![2, 3, 64]]
        .iter()
        .enumerate()
    {
        let dim = *shape.last().unwrap() as usize;
        let size: usize = shape.iter().map(|&d| d as usize).product();
        let xv: Vec<f32> = rand_vec(size, 10 + k as u64)
            .iter()
            .map(|v| v * 3.0)
            .collect();
        let wv: Vec<f32> = rand_vec(dim, 20 + k as u64)
            .iter()
            .map(|v| v + 1.5)
            .collect();
        let x = arr(&xv, shape);
        let w = arr(&wv, &[dim as i32]);
        for weight in [None, Some(&w)] {
            let what = format!("{shape:?} weighted {}", weight.is_some());
            let want = rms_ref(&xv, weight.map(|_| &wv[..]), eps as f64, dim);
            n.set(true);
            let ours = fast::rms_norm(&x, weight, eps).unwrap();
            assert_eq!(ours.shape(), *shape);
            assert_eq!(ours.dtype(), Dtype::Float32);
            let ours = ours.to_vec::<f32>().unwrap();
            assert_close(&ours, &want, 1e-5, 1e-6, &format!("native {what}"));
            n.set(false);
            let mlx = fast::rms_norm(&x, weight, eps)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            assert_close(&mlx, &want, 1e-5, 1e-6, &format!("mlx {what}"));
            assert_close(
                &ours,
                &widen(&mlx),
                1e-5,
                1e-6,
                &format!("native vs mlx {what}"),
            );
            // The input is left as it was.
            assert_eq!(x.to_vec::<f32>().unwrap(), xv);
        }
    }
}

#[test]
fn rms_norm_non_contiguous_inputs() {
    let _n = Native::lock(true);
    // A transposed [7, 3] array is a [3, 7] view whose rows are the columns of the data.
    let base: Vec<f32> = rand_vec(21, 1).iter().map(|v| v * 2.0).collect();
    let x = arr(&base, &[7, 3]);
    let xt = x.t().unwrap();
    let mut rows = vec![0f32; 21];
    for i in 0..7 {
        for j in 0..3 {
            rows[j * 7 + i] = base[i * 3 + j];
        }
    }
    let w: Vec<f32> = rand_vec(7, 2).iter().map(|v| v + 1.0).collect();
    let got = fast::rms_norm(&xt, Some(&arr(&w, &[7])), 1e-6).unwrap();
    assert_eq!(got.shape(), vec![3, 7]);
    assert_close(
        &got.to_vec::<f32>().unwrap(),
        &rms_ref(&rows, Some(&w), 1e-6, 7),
        1e-5,
        1e-6,
        "transposed",
    );

    // Slices with a step, over the rows and over the normalised axis.
    let base: Vec<f32> = rand_vec(40, 3).iter().map(|v| v * 5.0).collect();
    let x = arr(&base, &[4, 10]);
    let rows_02: Vec<f32> = [0, 2]
        .iter()
        .flat_map(|&r| base[r * 10..r * 10 + 10].to_vec())
        .collect();
    let got = fast::rms_norm(&x.slice(s![..;2, ..]).unwrap(), None, 1e-6).unwrap();
    assert_eq!(got.shape(), vec![2, 10]);
    assert_close(
        &got.to_vec::<f32>().unwrap(),
        &rms_ref(&rows_02, None, 1e-6, 10),
        1e-5,
        1e-6,
        "rows step 2",
    );
    let odd_cols: Vec<f32> = (0..4)
        .flat_map(|r| (0..5).map(move |c| (r, 2 * c + 1)))
        .map(|(r, c)| base[r * 10 + c])
        .collect();
    let got = fast::rms_norm(&x.slice(s![.., 1..;2]).unwrap(), None, 1e-6).unwrap();
    assert_eq!(got.shape(), vec![4, 5]);
    assert_close(
        &got.to_vec::<f32>().unwrap(),
        &rms_ref(&odd_cols, None, 1e-6, 5),
        1e-5,
        1e-6,
        "columns step 2",
    );

    // A broadcast row (stride 0 on the first axis) and a transposed (strided) weight source.
    let row: Vec<f32> = rand_vec(5, 4);
    let xb = arr(&row, &[1, 5]).broadcast_to(&[3, 5]).unwrap();
    let wsrc: Vec<f32> = rand_vec(10, 5);
    let wview = arr(&wsrc, &[5, 2]).slice(s![.., 1]).unwrap(); // every other element
    let wv: Vec<f32> = (0..5).map(|i| wsrc[2 * i + 1]).collect();
    let got = fast::rms_norm(&xb, Some(&wview), 1e-6).unwrap();
    let want: Vec<f64> = rms_ref(&row, Some(&wv), 1e-6, 5).repeat(3);
    assert_close(
        &got.to_vec::<f32>().unwrap(),
        &want,
        1e-5,
        1e-6,
        "broadcast",
    );
    // The sources are untouched.
    assert_eq!(x.to_vec::<f32>().unwrap(), base);
}

#[test]
fn rms_norm_in_a_lazy_graph() {
    let _n = Native::lock(true);
    let (av, bv, cv) = (rand_vec(24, 6), rand_vec(24, 7), rand_vec(24, 8));
    let wv: Vec<f32> = rand_vec(8, 9).iter().map(|v| v * 0.5 + 1.0).collect();
    let (a, b, c) = (arr(&av, &[3, 8]), arr(&bv, &[3, 8]), arr(&cv, &[3, 8]));
    let w = arr(&wv, &[8]);
    // (a + b) is a temporary the primitive may overwrite; the multiply reads its result.
    let y = fast::rms_norm(&(&a + &b), Some(&w), 1e-5)
        .unwrap()
        .multiply(&c)
        .unwrap();
    y.eval().unwrap();
    let sum: Vec<f32> = av.iter().zip(&bv).map(|(x, y)| x + y).collect();
    let want: Vec<f64> = rms_ref(&sum, Some(&wv), 1e-5, 8)
        .iter()
        .zip(&cv)
        .map(|(r, &c)| r * c as f64)
        .collect();
    assert_close(&y.to_vec::<f32>().unwrap(), &want, 1e-5, 1e-6, "lazy");
    assert_eq!(a.to_vec::<f32>().unwrap(), av);
    assert_eq!(b.to_vec::<f32>().unwrap(), bv);

    // A reshape of an array the caller still holds shares its buffer: it must not be
    // normalised in place.
    let xv = rand_vec(12, 11);
    let x = arr(&xv, &[2, 6]);
    let y = fast::rms_norm(&x.reshape(&[3, 4]).unwrap(), None, 1e-6).unwrap();
    assert_close(
        &y.to_vec::<f32>().unwrap(),
        &rms_ref(&xv, None, 1e-6, 4),
        1e-5,
        1e-6,
        "reshaped",
    );
    assert_eq!(x.to_vec::<f32>().unwrap(), xv);
}

#[test]
fn rms_norm_float16_takes_mlx_path() {
    let _n = Native::lock(true);
    let xv: Vec<f32> = rand_vec(2 * 3 * 16, 12).iter().map(|v| v * 4.0).collect();
    let wv: Vec<f32> = rand_vec(16, 13).iter().map(|v| v + 1.0).collect();
    let x16 = arr(&xv, &[2, 3, 16]).astype(Dtype::Float16).unwrap();
    let w16 = arr(&wv, &[16]).astype(Dtype::Float16).unwrap();
    // Reference from the float16-rounded inputs.
    let xr = f32s(&x16);
    let wr = f32s(&w16);
    let want = rms_ref(&xr, Some(&wr), 1e-5, 16);
    let y = fast::rms_norm(&x16, Some(&w16), 1e-5).unwrap();
    assert_eq!(y.dtype(), Dtype::Float16);
    assert_close(&f32s(&y), &want, 1e-2, 2e-3, "float16");
    // float32 x with a float16 weight is not eligible either, and still right.
    let y = fast::rms_norm(&arr(&xv, &[2, 3, 16]), Some(&w16), 1e-5).unwrap();
    assert_close(
        &f32s(&y),
        &rms_ref(&xv, Some(&wr), 1e-5, 16),
        1e-2,
        2e-3,
        "float32 x, float16 weight",
    );
}

#[test]
fn rms_norm_shape_errors() {
    let n = Native::lock(true);
    let x = arr(&rand_vec(8, 14), &[2, 4]);
    for on in [true, false] {
        n.set(on);
        let bad = arr(&[1.0; 5], &[5]);
        assert!(matches!(
            fast::rms_norm(&x, Some(&bad), 1e-5),
            Err(Error::Shape(_))
        ));
        let bad2 = arr(&[1.0; 4], &[1, 4]);
        assert!(matches!(
            fast::rms_norm(&x, Some(&bad2), 1e-5),
            Err(Error::Shape(_))
        ));
        assert!(fast::rms_norm(&Array::scalar(1.0f32), None, 1e-5).is_err());
        // Still usable afterwards.
        let y = fast::rms_norm(&x, None, 1e-5)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_close(
            &y,
            &rms_ref(&rand_vec(8, 14), None, 1e-5, 4),
            1e-5,
            1e-6,
            "after",
        );
    }
}

// ------------------------------------------------------------------------------ SwiGLU

fn swiglu_ref(x: &[f32], inter: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for row in x.chunks(2 * inter) {
        for i in 0..inter {
            let g = row[i] as f64;
            let u = row[inter + i] as f64;
            out.push(g / (1.0 + (-g).exp()) * u);
        }
    }
    out
}

#[test]
fn swiglu_matches_f64_reference_and_mlx() {
    let n = Native::lock(true);
    for (k, shape) in [vec![1, 8], vec![3, 2], vec![2, 3, 64], vec![6]]
        .iter()
        .enumerate()
    {
        let last = *shape.last().unwrap() as usize;
        let size: usize = shape.iter().map(|&d| d as usize).product();
        let xv: Vec<f32> = rand_vec(size, 30 + k as u64)
            .iter()
            .map(|v| v * 6.0)
            .collect();
        let x = arr(&xv, shape);
        let want = swiglu_ref(&xv, last / 2);
        let mut out_shape = shape.clone();
        *out_shape.last_mut().unwrap() /= 2;
        n.set(true);
        let ours = native::swiglu(&x).unwrap();
        assert_eq!(ours.shape(), out_shape);
        let ours = ours.to_vec::<f32>().unwrap();
        assert_close(&ours, &want, 1e-5, 1e-6, &format!("native {shape:?}"));
        n.set(false);
        let mlx = native::swiglu(&x).unwrap().to_vec::<f32>().unwrap();
        assert_close(&mlx, &want, 1e-5, 1e-6, &format!("mlx {shape:?}"));
        assert_close(&ours, &widen(&mlx), 1e-5, 1e-6, "native vs mlx");
        assert_eq!(x.to_vec::<f32>().unwrap(), xv);
    }
    // Extreme gates: silu(-100) ~ 0, silu(100) = 100, no NaN.
    n.set(true);
    let xv = [-100.0f32, 100.0, -20.0, 0.0, 3.0, 2.0, 1.0, 5.0];
    let y = native::swiglu(&arr(&xv, &[1, 8]))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    assert_close(&y, &swiglu_ref(&xv, 4), 1e-6, 1e-6, "extremes");
}

#[test]
fn swiglu_non_contiguous_input() {
    let _n = Native::lock(true);
    // [6, 3] transposed: a [3, 6] view; row r is column r of the data.
    let base = rand_vec(18, 40);
    let xt = arr(&base, &[6, 3]).t().unwrap();
    let rows: Vec<f32> = (0..3)
        .flat_map(|r| (0..6).map(move |c| (r, c)))
        .map(|(r, c)| base[c * 3 + r])
        .collect();
    let got = native::swiglu(&xt).unwrap();
    assert_eq!(got.shape(), vec![3, 3]);
    assert_close(
        &got.to_vec::<f32>().unwrap(),
        &swiglu_ref(&rows, 3),
        1e-5,
        1e-6,
        "transposed",
    );
}

#[test]
fn swiglu_errors_and_fallbacks() {
    let n = Native::lock(true);
    for on in [true, false] {
        n.set(on);
        assert!(matches!(
            native::swiglu(&arr(&[1.0; 6], &[2, 3])),
            Err(Error::Shape(_))
        ));
        assert!(native::swiglu(&Array::scalar(1.0f32)).is_err());
        assert!(native::swiglu(&Array::zeros(&[2, 0], Dtype::Float32).unwrap()).is_err());
    }
    n.set(true);
    // bfloat16 is not eligible: MLX's ops compute it, within bfloat16's precision.
    let xv: Vec<f32> = rand_vec(4 * 32, 41).iter().map(|v| v * 4.0).collect();
    let x = arr(&xv, &[4, 32]).astype(Dtype::Bfloat16).unwrap();
    let y = native::swiglu(&x).unwrap();
    assert_eq!(y.dtype(), Dtype::Bfloat16);
    assert_eq!(y.shape(), vec![4, 16]);
    let want = swiglu_ref(&f32s(&x), 16);
    assert_close(&f32s(&y), &want, 2e-2, 2e-2, "bfloat16");
}

// ------------------------------------------------------------------------------ cached attention

#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    h: usize,
    hkv: usize,
    d: usize,
    cap: usize,
}

impl Dims {
    fn width(&self) -> usize {
        (self.h + 2 * self.hkv) * self.d
    }
    fn cache_len(&self) -> usize {
        self.b * self.hkv * self.cap * self.d
    }
    fn cache_shape(&self) -> [i32; 4] {
        [self.b, self.hkv, self.cap, self.d].map(|v| v as i32)
    }
    /// A float32 cache of zeros (never evaluated).
    fn zero_cache(&self) -> Array {
        Array::zeros(&self.cache_shape(), Dtype::Float32).unwrap()
    }
    fn params(&self, offset: usize) -> CachedAttentionParams {
        CachedAttentionParams {
            heads: self.h as i32,
            kv_heads: self.hkv as i32,
            head_dim: self.d as i32,
            offset: offset as i32,
            scale: 1.0 / (self.d as f32).sqrt(),
            norm_eps: 1e-6,
            window: None,
            logit_softcap: None,
            keys: Default::default(),
            value_norm: false,
        }
    }
}

fn inv_freq(d: usize) -> Vec<f32> {
    (0..d / 2)
        .map(|i| 10000f64.powf(-2.0 * i as f64 / d as f64) as f32)
        .collect()
}

/// The inputs of one call besides the caches: `tokens` new tokens per sequence.
struct StepData {
    tokens: usize,
    qkv: Vec<f32>,
    inv_freq: Vec<f32>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    /// [`CachedAttentionParams::window`].
    window: Option<i32>,
    /// [`CachedAttentionParams::logit_softcap`].
    softcap: Option<f32>,
}

impl StepData {
    /// One decode token per sequence.
    fn new(dims: Dims, norms: bool, seed: u64) -> StepData {
        StepData::chunk(dims, 1, norms, seed)
    }

    /// A chunk of `tokens` new tokens per sequence.
    fn chunk(dims: Dims, tokens: usize, norms: bool, seed: u64) -> StepData {
        let qkv: Vec<f32> = rand_vec(dims.b * tokens * dims.width(), seed)
            .iter()
            .map(|v| v * 2.0)
            .collect();
        let norm = |s| {
            rand_vec(dims.d, s)
                .iter()
                .map(|v| v * 0.5 + 1.0)
                .collect::<Vec<_>>()
        };
        StepData {
            tokens,
            qkv,
            inv_freq: inv_freq(dims.d),
            q_norm: norms.then(|| norm(seed + 1000)),
            k_norm: norms.then(|| norm(seed + 2000)),
            window: None,
            softcap: None,
        }
    }

    /// The same step with a sliding window and / or a logit soft cap.
    fn with(self, window: Option<i32>, softcap: Option<f32>) -> StepData {
        StepData {
            window,
            softcap,
            ..self
        }
    }

    /// The call's parameters: `dims` at `offset` with this step's window and soft cap.
    fn params(&self, dims: Dims, offset: usize) -> CachedAttentionParams {
        CachedAttentionParams {
            window: self.window,
            logit_softcap: self.softcap,
            keys: Default::default(),
            value_norm: false,
            ..dims.params(offset)
        }
    }

    fn qkv(&self, dims: Dims) -> Array {
        arr(
            &self.qkv,
            &[dims.b as i32, self.tokens as i32, dims.width() as i32],
        )
    }
    fn inv_freq(&self) -> Array {
        arr(&self.inv_freq, &[self.inv_freq.len() as i32])
    }
    fn norms(&self) -> (Option<Array>, Option<Array>) {
        let a = |v: &Option<Vec<f32>>| v.as_ref().map(|v| arr(v, &[v.len() as i32]));
        (a(&self.q_norm), a(&self.k_norm))
    }
    /// `cached_attention` on `qkv` (normally [`StepData::qkv`]) with this step's norms and
    /// frequencies.
    fn attend(
        &self,
        dims: Dims,
        qkv: &Array,
        offset: usize,
        kc: &Array,
        vc: &Array,
    ) -> mlx_rs::Result<Option<CachedAttentionOutput>> {
        let (qn, kn) = self.norms();
        let f = self.inv_freq();
        cached_attention(
            qkv,
            kc,
            vc,
            &f,
            qn.as_ref(),
            kn.as_ref(),
            self.params(dims, offset),
        )
    }
}

/// One call in f64: writes positions `offset..offset + L` into slots `position % cap` of the
/// caches (`[B, Hkv, cap, D]`) and returns the causal attention output `[B, L, H * D]` (token
/// `l` at position `i = offset + l`, seeing positions `0..=i`, or `i + 1 - w..=i` with a
/// window `w`, each read from its slot; scores soft-capped to `c·tanh(s / c)` with a cap `c`).
fn attention_ref(
    dims: Dims,
    step: &StepData,
    offset: usize,
    kc: &mut [f64],
    vc: &mut [f64],
) -> Vec<f64> {
    attention_ref_stored(dims, step, offset, kc, vc, |x| x)
}

/// [`attention_ref`] over caches that store each new key and value as `stored(x)` (e.g.
/// rounded to half precision) before anything reads them.
fn attention_ref_stored(
    dims: Dims,
    step: &StepData,
    offset: usize,
    kc: &mut [f64],
    vc: &mut [f64],
    stored: impl Fn(f64) -> f64,
) -> Vec<f64> {
    let Dims { b, h, hkv, d, cap } = dims;
    let tokens = step.tokens;
    let half = d / 2;
    let scale = 1.0 / (d as f64).sqrt();
    let eps = 1e-6;
    let head_norm = |x: &[f32], w: &Option<Vec<f32>>| -> Vec<f64> {
        match w {
            Some(w) => rms_ref(x, Some(w), eps, d),
            None => widen(x),
        }
    };
    let rope = |v: &mut [f64], pos: usize| {
        for i in 0..half {
            let angle = pos as f64 * step.inv_freq[i] as f64;
            let (x1, x2) = (v[i], v[i + half]);
            v[i] = x1 * angle.cos() - x2 * angle.sin();
            v[i + half] = x2 * angle.cos() + x1 * angle.sin();
        }
    };
    // Position t lives in slot t % cap.
    let at = |bi: usize, j: usize, t: usize| ((bi * hkv + j) * cap + t % cap) * d;
    let row = |bi: usize, l: usize| {
        let start = (bi * tokens + l) * dims.width();
        &step.qkv[start..start + dims.width()]
    };
    // Every new key and value first: token l only reads positions up to its own.
    for bi in 0..b {
        for l in 0..tokens {
            let row = row(bi, l);
            for j in 0..hkv {
                let mut k = head_norm(&row[(h + j) * d..(h + j + 1) * d], &step.k_norm);
                rope(&mut k, offset + l);
                let p = at(bi, j, offset + l);
                for (c, x) in kc[p..p + d].iter_mut().zip(&k) {
                    *c = stored(*x);
                }
                let v = &row[(h + hkv + j) * d..(h + hkv + j + 1) * d];
                for (c, x) in vc[p..p + d].iter_mut().zip(widen(v)) {
                    *c = stored(x);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(b * tokens * h * d);
    for bi in 0..b {
        for l in 0..tokens {
            let row = row(bi, l);
            let i = offset + l;
            let lo = step
                .window
                .map_or(0, |w| (i + 1).saturating_sub(w as usize));
            let seen = lo..i + 1;
            for hi in 0..h {
                let mut q = head_norm(&row[hi * d..(hi + 1) * d], &step.q_norm);
                rope(&mut q, offset + l);
                let j = hi / (h / hkv);
                let scores: Vec<f64> = seen
                    .clone()
                    .map(|t| {
                        let k = &kc[at(bi, j, t)..at(bi, j, t) + d];
                        let s = scale * q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>();
                        step.softcap.map_or(s, |c| c as f64 * (s / c as f64).tanh())
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for x in 0..d {
                    out.push(
                        seen.clone()
                            .zip(&e)
                            .map(|(t, e)| e / z * vc[at(bi, j, t) + x])
                            .sum::<f64>(),
                    );
                }
            }
        }
    }
    out
}

/// The same call composed from MLX's ops (`fast::rms_norm`, `fast::rope` with base 10000 at
/// `offset`, `slice_update`, `fast::scaled_dot_product_attention` with MLX's causal mask, which
/// aligns the L queries with the last L of the `offset + L` keys); call with native ops off.
/// Caches of another dtype than float32 (float16) take the new keys and values rounded by
/// `astype` and are read back widened.
fn attention_mlx(
    dims: Dims,
    step: &StepData,
    offset: usize,
    kc: &Array,
    vc: &Array,
) -> (Array, Array, Array) {
    let (b, h, hkv, d) = (dims.b as i32, dims.h as i32, dims.hkv as i32, dims.d as i32);
    let (off, l) = (offset as i32, step.tokens as i32);
    let x = step.qkv(dims).reshape(&[b, l, h + 2 * hkv, d]).unwrap();
    let parts = x.split_at(&[h, h + hkv], 2).unwrap();
    let heads = |a: &Array| a.transpose(&[0, 2, 1, 3]).unwrap(); // [B, heads, L, D]
    let (mut q, mut k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
    let (qn, kn) = step.norms();
    if let Some(w) = &qn {
        q = fast::rms_norm(&q, Some(w), 1e-6).unwrap();
    }
    if let Some(w) = &kn {
        k = fast::rms_norm(&k, Some(w), 1e-6).unwrap();
    }
    let q = fast::rope(&q, d, false, Some(10000.0), 1.0, off, None).unwrap();
    let k = fast::rope(&k, d, false, Some(10000.0), 1.0, off, None).unwrap();
    // Written in the caches' dtype (float16 caches: rounded by astype), read as float32.
    let (start, stop) = ([0, 0, off, 0], [b, hkv, off + l, d]);
    let kc = kc
        .slice_update(&k.astype(kc.dtype()).unwrap(), &start, &stop, &[1; 4])
        .unwrap();
    let vc = vc
        .slice_update(&v.astype(vc.dtype()).unwrap(), &start, &stop, &[1; 4])
        .unwrap();
    let read = |c: &Array| {
        c.slice(s![.., .., ..off + l, ..])
            .unwrap()
            .astype(Dtype::Float32)
            .unwrap()
    };
    let (keys, values) = (read(&kc), read(&vc));
    let scale = 1.0 / (d as f32).sqrt();
    let mask = if l > 1 {
        AttentionMask::Causal
    } else {
        AttentionMask::None
    };
    let o = fast::scaled_dot_product_attention(&q, &keys, &values, scale, mask).unwrap();
    let o = o
        .transpose(&[0, 2, 1, 3])
        .unwrap()
        .reshape(&[b, l, h * d])
        .unwrap();
    (o, kc, vc)
}

fn run_native(
    dims: Dims,
    step: &StepData,
    offset: usize,
    kc: &Array,
    vc: &Array,
) -> CachedAttentionOutput {
    step.attend(dims, &step.qkv(dims), offset, kc, vc)
        .unwrap()
        .expect("eligible call took the native path")
}

/// Checks a returned cache after a one-token call (see [`check_written`]).
#[track_caller]
fn check_cache(dims: Dims, offset: usize, got: &[f32], want: &[f64], original: &[f32], what: &str) {
    check_written(dims, offset, 1, got, want, original, what);
}

/// Checks a returned cache against the reference: the slots of positions
/// `offset..offset + tokens` (`position % cap`) within tolerance, every other slot bit for bit
/// the original.
#[track_caller]
fn check_written(
    dims: Dims,
    offset: usize,
    tokens: usize,
    got: &[f32],
    want: &[f64],
    original: &[f32],
    what: &str,
) {
    assert_eq!(got.len(), dims.cache_len(), "{what}: length");
    for (i, &g) in got.iter().enumerate() {
        let t = (i / dims.d) % dims.cap;
        // The new token written in slot t, if any.
        let l = (t + dims.cap - offset % dims.cap) % dims.cap;
        if l < tokens {
            assert!(
                (g as f64 - want[i]).abs() <= 1e-5 + 1e-5 * want[i].abs(),
                "{what}: element {i} (position {t}): got {g}, want {}",
                want[i]
            );
        } else {
            assert_eq!(
                g.to_bits(),
                original[i].to_bits(),
                "{what}: element {i} (position {t}) changed"
            );
        }
    }
}

/// The values of one native call, checked by [`run_and_check`].
struct Checked {
    /// The f64 reference output.
    want: Vec<f64>,
    attention: Vec<f32>,
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
}

/// One native call on the caches `k.0`/`v.0`, which hold the values `k.1`/`v.1`
/// (`[B, Hkv, cap, D]`): the shapes, the output against the f64 reference, and the returned
/// caches (see [`check_written`]).
#[track_caller]
fn run_and_check(
    dims: Dims,
    step: &StepData,
    offset: usize,
    k: (&Array, &[f32]),
    v: (&Array, &[f32]),
    what: &str,
) -> Checked {
    let l = step.tokens;
    let (mut kr, mut vr) = (widen(k.1), widen(v.1));
    let want = attention_ref(dims, step, offset, &mut kr, &mut vr);
    let out = run_native(dims, step, offset, k.0, v.0);
    assert_eq!(
        out.attention.shape(),
        vec![dims.b as i32, l as i32, (dims.h * dims.d) as i32],
        "{what}"
    );
    assert_eq!(out.k_cache.shape(), dims.cache_shape().to_vec(), "{what}");
    assert_eq!(out.v_cache.shape(), dims.cache_shape().to_vec(), "{what}");
    let attention = out.attention.to_vec::<f32>().unwrap();
    assert_close(&attention, &want, 1e-4, 1e-5, &format!("attention {what}"));
    let k_cache = out.k_cache.to_vec::<f32>().unwrap();
    let v_cache = out.v_cache.to_vec::<f32>().unwrap();
    check_written(dims, offset, l, &k_cache, &kr, k.1, &format!("k {what}"));
    check_written(dims, offset, l, &v_cache, &vr, v.1, &format!("v {what}"));
    Checked {
        want,
        attention,
        k_cache,
        v_cache,
    }
}

/// Calls one after another from zero caches, each fed the caches the one before returned:
/// every output (shape and values) against the f64 reference run over the same steps, then the
/// final caches (k within tolerance, v exactly). Eager (each output evaluated at once), then
/// lazy (the whole chain evaluated at the end).
#[track_caller]
fn check_chain(dims: Dims, steps: &[(usize, usize, bool, u64)]) {
    let steps: Vec<(usize, StepData)> = steps
        .iter()
        .map(|&(offset, l, norms, seed)| (offset, StepData::chunk(dims, l, norms, seed)))
        .collect();
    for lazy in [false, true] {
        check_chain_once(dims, &steps, lazy, &format!("{dims:?} lazy {lazy}"));
    }
}

#[track_caller]
fn check_chain_once(dims: Dims, steps: &[(usize, StepData)], lazy: bool, what: &str) {
    let mut kc = dims.zero_cache();
    let mut vc = dims.zero_cache();
    let mut kr = vec![0f64; dims.cache_len()];
    let mut vr = vec![0f64; dims.cache_len()];
    let (mut outs, mut wants) = (Vec::new(), Vec::new());
    for (offset, step) in steps {
        wants.push(attention_ref(dims, step, *offset, &mut kr, &mut vr));
        let out = run_native(dims, step, *offset, &kc, &vc);
        let shape = [dims.b, step.tokens, dims.h * dims.d].map(|v| v as i32);
        assert_eq!(out.attention.shape(), shape.to_vec(), "{what}");
        if !lazy {
            out.attention.eval().unwrap();
        }
        kc = out.k_cache;
        vc = out.v_cache;
        outs.push(out.attention);
    }
    for (i, (o, w)) in outs.iter().zip(&wants).enumerate() {
        let (offset, l) = (steps[i].0, steps[i].1.tokens);
        let what = format!("{what} call {i} offset {offset} L {l}");
        assert_close(&f32s(o), w, 1e-4, 1e-5, &what);
    }
    assert_close(&f32s(&kc), &kr, 1e-5, 1e-5, &format!("k {what}"));
    assert_close(&f32s(&vc), &vr, 0.0, 0.0, &format!("v {what}"));
}

/// Two sequences, 4 heads over 2 kv heads of 8, a 4-position cache.
const SMALL: Dims = Dims {
    b: 2,
    h: 4,
    hkv: 2,
    d: 8,
    cap: 4,
};

const SHAPES: [(usize, usize, usize); 3] = [(1, 1, 2), (4, 2, 8), (9, 3, 64)];

/// One call on random caches: the native output and caches against the f64 reference (every
/// written position, every other position unchanged) and against MLX's own composition.
fn check_against_reference_and_mlx(
    n: &Native,
    dims: Dims,
    step: &StepData,
    offset: usize,
    seed: u64,
    what: &str,
) {
    let k0 = rand_vec(dims.cache_len(), seed + 5000);
    let v0: Vec<f32> = rand_vec(dims.cache_len(), seed + 6000)
        .iter()
        .map(|v| v * 3.0)
        .collect();

    n.set(true);
    let kc = arr(&k0, &dims.cache_shape());
    let vc = arr(&v0, &dims.cache_shape());
    let Checked {
        want,
        attention: att,
        k_cache: kgot,
        v_cache: vgot,
    } = run_and_check(dims, step, offset, (&kc, &k0), (&vc, &v0), what);

    n.set(false);
    let kc2 = arr(&k0, &dims.cache_shape());
    let vc2 = arr(&v0, &dims.cache_shape());
    let (o, km, vm) = attention_mlx(dims, step, offset, &kc2, &vc2);
    let mlx = o.to_vec::<f32>().unwrap();
    assert_close(&mlx, &want, 1e-4, 1e-5, &format!("mlx attention {what}"));
    assert_close(&att, &widen(&mlx), 1e-4, 1e-5, &format!("vs mlx {what}"));
    assert_close(
        &kgot,
        &widen(&km.to_vec::<f32>().unwrap()),
        1e-5,
        1e-5,
        &format!("k vs mlx {what}"),
    );
    assert_eq!(vgot, vm.to_vec::<f32>().unwrap(), "v vs mlx {what}");
    n.set(true);
}

#[test]
fn cached_attention_matches_reference_and_mlx() {
    let n = Native::lock(true);
    let cap = 5;
    let mut seed = 100;
    for (h, hkv, d) in SHAPES {
        for b in [1, 2] {
            let dims = Dims { b, h, hkv, d, cap };
            for offset in [0, 1, cap - 1] {
                for norms in [false, true] {
                    seed += 1;
                    let what = format!("{dims:?} offset {offset} norms {norms}");
                    let step = StepData::new(dims, norms, seed);
                    check_against_reference_and_mlx(&n, dims, &step, offset, seed, &what);
                }
            }
        }
    }
}

/// Chunks of L > 1 tokens. The rows of a key/value head group are (heads / kv_heads) * L: below
/// 16 they take the per-row loops, from 16 on the BLAS path (S = Q Kᵀ, causal softmax, P V)
/// when the process has `cblas_sgemm`. Over SHAPES (groups 1, 2, 3) and L in {2, 3, 8, 17}:
/// rows 2..9 (loops) and 16, 17, 24, 34, 51 (BLAS); the last offset fills the cache exactly.
#[test]
fn cached_attention_chunks_match_reference_and_mlx() {
    let n = Native::lock(true);
    let mut seed = 400;
    let (mut loops, mut blas) = (0, 0);
    for (h, hkv, d) in SHAPES {
        for l in [2, 3, 8, 17] {
            if (h / hkv) * l >= 16 {
                blas += 1;
            } else {
                loops += 1;
            }
            for b in [1, 2] {
                let cap = l + 4;
                let dims = Dims { b, h, hkv, d, cap };
                for offset in [0, 1, 4] {
                    for norms in [false, true] {
                        seed += 1;
                        let rows = (h / hkv) * l;
                        let what =
                            format!("{dims:?} L {l} (rows {rows}) offset {offset} norms {norms}");
                        let step = StepData::chunk(dims, l, norms, seed);
                        check_against_reference_and_mlx(&n, dims, &step, offset, seed, &what);
                    }
                }
            }
        }
    }
    assert!(loops > 0 && blas > 0, "both paths are covered");
}

/// A chunk long enough that a group's query rows take several BLAS blocks (256 rows each):
/// 9 heads over 3 KV heads and 100 tokens are 300 rows per group.
#[test]
fn cached_attention_long_chunk_spans_row_blocks() {
    let n = Native::lock(true);
    let (h, hkv, d, l) = (9, 3, 16, 100);
    for offset in [0, 7] {
        let dims = Dims {
            b: 1,
            h,
            hkv,
            d,
            cap: l + 8,
        };
        let seed = 900 + offset as u64;
        let step = StepData::chunk(dims, l, true, seed);
        let what = format!("{dims:?} L {l} (rows {}) offset {offset}", (h / hkv) * l);
        check_against_reference_and_mlx(&n, dims, &step, offset, seed, &what);
    }
}

/// A prefill chunk of 5 tokens, then three decode steps fed the returned caches, against the
/// reference run over the same steps; eager and lazy (the whole chain evaluated at the end).
#[test]
fn cached_attention_prefill_then_decode() {
    let _n = Native::lock(true);
    // (8, 2, 16): 4 heads per group, 20 rows in the chunk: the BLAS path.
    for (h, hkv, d) in SHAPES.into_iter().chain([(8, 2, 16)]) {
        let dims = Dims {
            h,
            hkv,
            d,
            cap: 8,
            ..SMALL
        };
        // (offset, L, norms, seed)
        check_chain(
            dims,
            &[
                (0, 5, true, 700),
                (5, 1, true, 710),
                (6, 1, true, 720),
                (7, 1, true, 730),
            ],
        );
    }
}

/// `offset + L > capacity` and an empty chunk (L = 0) are inconsistent shapes: errors (the
/// shim rejects them before building anything), and the process goes on.
#[test]
fn cached_attention_rejects_chunks_that_do_not_fit() {
    let _n = Native::lock(true);
    let dims = Dims { cap: 6, ..SMALL };
    let kc = dims.zero_cache();
    let vc = dims.zero_cache();
    let call = |step: &StepData, offset| step.attend(dims, &step.qkv(dims), offset, &kc, &vc);
    for (l, offset) in [(3, 4), (3, 6), (7, 0), (2, 5), (17, 0)] {
        let step = StepData::chunk(dims, l, true, 900 + l as u64);
        assert!(
            call(&step, offset).is_err(),
            "L {l} offset {offset} capacity {}",
            dims.cap
        );
    }
    // L = 0: qkv [B, 0, width].
    for offset in [0, 3, 6] {
        let empty = StepData::chunk(dims, 0, true, 950);
        assert_eq!(empty.qkv(dims).shape(), vec![2, 0, dims.width() as i32]);
        assert!(call(&empty, offset).is_err(), "L 0 offset {offset}");
    }
    // The largest chunk that fits still works, and the caches were never written.
    assert_eq!(kc.to_vec::<f32>().unwrap(), vec![0f32; dims.cache_len()]);
    assert_eq!(vc.to_vec::<f32>().unwrap(), vec![0f32; dims.cache_len()]);
    let step = StepData::chunk(dims, 3, true, 960);
    let zeros = vec![0f32; dims.cache_len()];
    run_and_check(dims, &step, 3, (&kc, &zeros), (&vc, &zeros), "L 3 offset 3");
}

/// The caches are written in place (documented behaviour of `cached_attention`): an input
/// cache handle that was evaluated before the call shares its buffer with the returned cache,
/// so once the result is evaluated it shows the new position too.
#[test]
fn cached_attention_writes_caches_in_place() {
    let _n = Native::lock(true);
    let dims = Dims { cap: 6, ..SMALL };
    let offset = 3;
    let step = StepData::new(dims, true, 7);
    let k0 = rand_vec(dims.cache_len(), 8);
    let v0 = rand_vec(dims.cache_len(), 9);
    let kc = arr(&k0, &dims.cache_shape());
    let vc = arr(&v0, &dims.cache_shape());
    kc.eval().unwrap();
    vc.eval().unwrap();
    let (mut kr, mut vr) = (widen(&k0), widen(&v0));
    let want = attention_ref(dims, &step, offset, &mut kr, &mut vr);

    let out = run_native(dims, &step, offset, &kc, &vc);
    // Before evaluation nothing has been written.
    assert_eq!(kc.to_vec::<f32>().unwrap(), k0);
    out.attention.eval().unwrap();
    assert_close(
        &out.attention.to_vec::<f32>().unwrap(),
        &want,
        1e-4,
        1e-5,
        "attention",
    );
    // The old handles see the write; the returned caches hold the same values.
    let (kin, vin) = (kc.to_vec::<f32>().unwrap(), vc.to_vec::<f32>().unwrap());
    check_cache(dims, offset, &kin, &kr, &k0, "input k handle");
    check_cache(dims, offset, &vin, &vr, &v0, "input v handle");
    assert_eq!(out.k_cache.to_vec::<f32>().unwrap(), kin);
    assert_eq!(out.v_cache.to_vec::<f32>().unwrap(), vin);
}

#[test]
fn cached_attention_gathers_broadcast_and_strided_caches() {
    let _n = Native::lock(true);
    let dims = SMALL;
    // A never-evaluated `Array::zeros` cache. MLX evaluates `zeros` (its `Full` primitive) to
    // a plain row-major buffer, so it is written in place like any evaluated cache: the zeros
    // handle shows the new position too.
    for offset in [0, 2] {
        let step = StepData::new(dims, false, 50 + offset as u64);
        let zeros = vec![0f32; dims.cache_len()];
        let kc = dims.zero_cache();
        let vc = dims.zero_cache();
        let what = format!("zeros offset {offset}");
        let got = run_and_check(dims, &step, offset, (&kc, &zeros), (&vc, &zeros), &what);
        assert_eq!(f32s(&kc), got.k_cache, "{what}: zeros handle");
        assert_eq!(f32s(&vc), got.v_cache, "{what}: zeros handle");
    }

    // Truly broadcast caches (one [D] row repeated, stride 0 on the other axes), evaluated or
    // not: gathered into a fresh buffer; the source row is not written through.
    for (offset, evaluated) in [(0, false), (3, true)] {
        let step = StepData::new(dims, true, 55 + offset as u64);
        let krow = rand_vec(dims.d, 56);
        let vrow = rand_vec(dims.d, 57);
        let ksrc = arr(&krow, &[1, 1, 1, dims.d as i32]);
        let vsrc = arr(&vrow, &[1, 1, 1, dims.d as i32]);
        let kc = ksrc.broadcast_to(&dims.cache_shape()).unwrap();
        let vc = vsrc.broadcast_to(&dims.cache_shape()).unwrap();
        if evaluated {
            kc.eval().unwrap();
            vc.eval().unwrap();
        }
        let k0 = krow.repeat(dims.cache_len() / dims.d);
        let v0 = vrow.repeat(dims.cache_len() / dims.d);
        let what = format!("broadcast offset {offset} evaluated {evaluated}");
        run_and_check(dims, &step, offset, (&kc, &k0), (&vc, &v0), &what);
        assert_eq!(ksrc.to_vec::<f32>().unwrap(), krow, "{what}: source row");
        assert_eq!(vsrc.to_vec::<f32>().unwrap(), vrow, "{what}: source row");
        assert_eq!(kc.to_vec::<f32>().unwrap(), k0, "{what}: broadcast handle");
    }

    // Caches evaluated as transposed views of [B, cap, Hkv, D] buffers.
    let offset = 2;
    let step = StepData::new(dims, true, 60);
    let kb = rand_vec(dims.cache_len(), 61);
    let vb = rand_vec(dims.cache_len(), 62);
    let bshape = [dims.b, dims.cap, dims.hkv, dims.d].map(|v| v as i32);
    let kbase = arr(&kb, &bshape);
    let vbase = arr(&vb, &bshape);
    let kc = kbase.transpose(&[0, 2, 1, 3]).unwrap();
    let vc = vbase.transpose(&[0, 2, 1, 3]).unwrap();
    kc.eval().unwrap();
    vc.eval().unwrap();
    // The same values laid out as [B, Hkv, cap, D].
    let relayout = |src: &[f32]| -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        for bi in 0..dims.b {
            for j in 0..dims.hkv {
                for t in 0..dims.cap {
                    for i in 0..dims.d {
                        out[((bi * dims.hkv + j) * dims.cap + t) * dims.d + i] =
                            src[((bi * dims.cap + t) * dims.hkv + j) * dims.d + i];
                    }
                }
            }
        }
        out
    };
    let (k0, v0) = (relayout(&kb), relayout(&vb));
    let what = "transposed caches";
    run_and_check(dims, &step, offset, (&kc, &k0), (&vc, &v0), what);
    // The strided source was gathered, not written through.
    assert_eq!(kbase.to_vec::<f32>().unwrap(), kb);
    assert_eq!(vbase.to_vec::<f32>().unwrap(), vb);
}

#[test]
fn cached_attention_consecutive_steps() {
    let _n = Native::lock(true);
    for (h, hkv, d) in SHAPES {
        let dims = Dims { h, hkv, d, ..SMALL };
        // (offset, L, norms, seed)
        check_chain(
            dims,
            &[
                (0, 1, false, 300),
                (1, 1, true, 301),
                (2, 1, false, 302),
                (3, 1, true, 303),
            ],
        );
    }
}

#[test]
fn cached_attention_declines_ineligible_calls() {
    let n = Native::lock(false);
    let dims = Dims { b: 1, ..SMALL };
    let step = StepData::new(dims, true, 70);
    let kc = dims.zero_cache();
    let vc = dims.zero_cache();
    let call = |qkv: &Array, kc: &Array, vc: &Array| step.attend(dims, qkv, 1, kc, vc);
    // Native ops off.
    assert!(call(&step.qkv(dims), &kc, &vc).unwrap().is_none());
    n.set(true);
    assert!(call(&step.qkv(dims), &kc, &vc).unwrap().is_some());
    // float16 inputs.
    let h = |a: &Array| a.astype(Dtype::Float16).unwrap();
    assert!(call(&h(&step.qkv(dims)), &h(&kc), &h(&vc))
        .unwrap()
        .is_none());
    assert!(call(&h(&step.qkv(dims)), &kc, &vc).unwrap().is_none());
}

#[test]
fn cached_attention_rejects_inconsistent_shapes() {
    let _n = Native::lock(true);
    let dims = SMALL;
    let step = StepData::new(dims, true, 80);
    let (qn, kn) = step.norms();
    let kc = dims.zero_cache();
    let vc = dims.zero_cache();
    let qkv = step.qkv(dims);
    let f = step.inv_freq();
    let p = dims.params(1);
    let call = |qkv: &Array, kc: &Array, vc: &Array, f: &Array, p: CachedAttentionParams| {
        cached_attention(qkv, kc, vc, f, qn.as_ref(), kn.as_ref(), p)
    };
    let bad_width = Array::zeros(&[2, 1, dims.width() as i32 - 8], Dtype::Float32).unwrap();
    assert!(call(&bad_width, &kc, &vc, &f, p).is_err(), "qkv width");
    let bad_batch = Array::zeros(&[1, 1, dims.width() as i32], Dtype::Float32).unwrap();
    assert!(call(&bad_batch, &kc, &vc, &f, p).is_err(), "qkv batch");
    for offset in [4, 5, -1] {
        let p = CachedAttentionParams { offset, ..p };
        assert!(call(&qkv, &kc, &vc, &f, p).is_err(), "offset {offset}");
    }
    let p3 = CachedAttentionParams { kv_heads: 3, ..p };
    assert!(call(&qkv, &kc, &vc, &f, p3).is_err(), "heads % kv_heads");
    let podd = CachedAttentionParams { head_dim: 7, ..p };
    assert!(call(&qkv, &kc, &vc, &f, podd).is_err(), "odd head_dim");
    let f5 = arr(&inv_freq(10), &[5]);
    assert!(call(&qkv, &kc, &vc, &f5, p).is_err(), "inv_freq length");
    let vshort = Array::zeros(&[2, 2, 3, 8], Dtype::Float32).unwrap();
    assert!(call(&qkv, &kc, &vshort, &f, p).is_err(), "v capacity");
    let k3 = Array::zeros(&[2, 2, 4], Dtype::Float32).unwrap();
    assert!(call(&qkv, &k3, &vc, &f, p).is_err(), "3-D cache");
    let flat = Array::zeros(&[2, dims.width() as i32], Dtype::Float32).unwrap();
    assert!(call(&flat, &kc, &vc, &f, p).is_err(), "2-D qkv");
    let bad_norm = arr(&[1.0; 4], &[4]);
    assert!(
        cached_attention(&qkv, &kc, &vc, &f, Some(&bad_norm), None, p).is_err(),
        "q_norm length"
    );
    // The process goes on: a valid call still works.
    let zeros = vec![0f32; dims.cache_len()];
    run_and_check(dims, &step, 1, (&kc, &zeros), (&vc, &zeros), "after errors");
}

#[test]
fn cached_attention_with_one_array_as_both_caches() {
    // The same (evaluated) buffer passed as k and v cache: the values must get a buffer of their
    // own, so the roped key and the raw value both survive.
    let _n = Native::lock(true);
    let dims = Dims {
        b: 1,
        h: 2,
        hkv: 1,
        d: 8,
        cap: 3,
    };
    let step = StepData::new(dims, false, 31);
    let c0 = rand_vec(dims.cache_len(), 32);
    let cache = arr(&c0, &dims.cache_shape());
    cache.eval().unwrap();
    run_and_check(dims, &step, 1, (&cache, &c0), (&cache, &c0), "one array");
}

/// Many decode steps (attention in place, RMS norm, SwiGLU) with active memory flat once the
/// cache exists: the in-place cache write allocates nothing, and every intermediate is freed.
#[test]
fn native_ops_keep_memory_flat_over_many_steps() {
    let _n = Native::lock(true);
    let dims = Dims {
        b: 1,
        h: 9,
        hkv: 3,
        d: 64,
        cap: 320,
    };
    let (mut kc, mut vc) = (dims.zero_cache(), dims.zero_cache());
    kc.eval().unwrap();
    vc.eval().unwrap();
    let step = StepData::new(dims, true, 700);
    let (qn, kn) = step.norms();
    let f = step.inv_freq();
    let x = arr(
        &rand_vec(dims.h * dims.d, 701),
        &[1, 1, (dims.h * dims.d) as i32],
    );
    let w = arr(&rand_vec(dims.h * dims.d, 702), &[(dims.h * dims.d) as i32]);
    let mut base = 0;
    for offset in 0..300 {
        let out = cached_attention(
            &step.qkv(dims),
            &kc,
            &vc,
            &f,
            qn.as_ref(),
            kn.as_ref(),
            dims.params(offset),
        )
        .unwrap()
        .expect("native path");
        let normed =
            mlx_rs::fast::rms_norm(&out.attention.add(&x).unwrap(), Some(&w), 1e-6).unwrap();
        let y = native::swiglu(&normed).unwrap();
        mlx_rs::eval(&[&y, &out.k_cache, &out.v_cache]).unwrap();
        assert!(f32s(&y).iter().all(|v| v.is_finite()), "step {offset}");
        kc = out.k_cache;
        vc = out.v_cache;
        drop((y, normed));
        let active = mlx_rs::memory::active_memory().unwrap();
        if offset == 10 {
            base = active;
        } else if offset > 10 {
            assert!(
                active <= base + 16 * 1024,
                "active memory grew: {active} at step {offset}, {base} at step 10"
            );
        }
    }
}

/// Four threads, each on its own CPU stream, run decode chains at once (the attention of each
/// step goes through the kernels' shared thread pool, or inline when another call holds it):
/// every result matches the f64 reference.
#[test]
fn native_attention_from_several_threads() {
    let _n = Native::lock(true);
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let stream = mlx_rs::Stream::new(mlx_rs::Device::cpu()).unwrap();
                mlx_rs::with_stream(&stream, || {
                    let dims = Dims {
                        b: 1,
                        h: 9,
                        hkv: 3,
                        d: 64,
                        cap: 48,
                    };
                    let steps: Vec<(usize, StepData)> = (0..40)
                        .map(|i| (i, StepData::new(dims, t % 2 == 0, 800 + 100 * t + i as u64)))
                        .collect();
                    check_chain_once(dims, &steps, false, &format!("thread {t}"));
                })
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

// ------------------------------------------------------------------------------ windows, rings, soft caps

/// `cached_attention` of `step` on the caches `kc` / `vc` composed from MLX's ops (native ops
/// off) over *linear* caches `k_lin` / `v_lin` (slot = position; see
/// [`common::attention_composed`]); returns the output and the updated linear caches.
fn composed(
    n: &Native,
    dims: Dims,
    step: &StepData,
    offset: usize,
    k_lin: &Array,
    v_lin: &Array,
) -> (Array, Array, Array) {
    n.set(false);
    let (qn, kn) = step.norms();
    let spec = AttnSpec {
        heads: dims.h as i32,
        kv_heads: dims.hkv as i32,
        head_dim: dims.d as i32,
        scale: 1.0 / (dims.d as f32).sqrt(),
        eps: 1e-6,
        window: step.window,
        softcap: step.softcap,
    };
    let out = attention_composed(
        &step.qkv(dims),
        k_lin,
        v_lin,
        &step.inv_freq(),
        qn.as_ref(),
        kn.as_ref(),
        spec,
        offset as i32,
    );
    out.0.eval().unwrap();
    n.set(true);
    out
}

/// Windows (1 key, a few, more than the context) and logit soft caps on plain caches holding
/// random keys and values, one call each: decode and chunks (per-row loops and BLAS), against
/// the f64 reference (output and every slot of the caches) and against MLX's composition.
#[test]
fn cached_attention_windows_and_soft_caps_match_reference_and_mlx() {
    let n = Native::lock(true);
    let mut seed = 3000;
    let variants = [
        (Some(1), None),
        (Some(3), None),
        (Some(6), Some(0.7)),
        (None, Some(30.0)),
        (Some(3), Some(2.0)),
    ];
    for (h, hkv, d) in SHAPES {
        for l in [1, 2, 8, 17] {
            for offset in [0, 5] {
                for (window, softcap) in variants {
                    seed += 1;
                    let dims = Dims {
                        b: 2,
                        h,
                        hkv,
                        d,
                        cap: offset + l + 2,
                    };
                    let step = StepData::chunk(dims, l, seed % 2 == 0, seed).with(window, softcap);
                    let what = format!(
                        "{dims:?} L {l} offset {offset} window {window:?} softcap {softcap:?}"
                    );
                    let k0 = rand_vec(dims.cache_len(), seed + 5000);
                    let v0 = rand_vec(dims.cache_len(), seed + 6000);
                    let (kc, vc) = (arr(&k0, &dims.cache_shape()), arr(&v0, &dims.cache_shape()));
                    let got = run_and_check(dims, &step, offset, (&kc, &k0), (&vc, &v0), &what);
                    let (kc, vc) = (arr(&k0, &dims.cache_shape()), arr(&v0, &dims.cache_shape()));
                    let (o, km, vm) = composed(&n, dims, &step, offset, &kc, &vc);
                    let mlx = f32s(&o);
                    assert_close(&mlx, &got.want, 1e-4, 1e-5, &format!("mlx {what}"));
                    assert_close(
                        &got.attention,
                        &widen(&mlx),
                        1e-4,
                        1e-5,
                        &format!("vs mlx {what}"),
                    );
                    assert_close(
                        &got.k_cache,
                        &widen(&f32s(&km)),
                        1e-5,
                        1e-5,
                        &format!("k {what}"),
                    );
                    assert_eq!(got.v_cache, f32s(&vm), "v {what}");
                }
            }
        }
    }
}

/// A window at least as long as the context changes nothing: the same outputs as no window
/// (decode, loops and BLAS chunks).
#[test]
fn cached_attention_window_longer_than_the_context_has_no_effect() {
    let _n = Native::lock(true);
    for (l, offset) in [(1, 6), (3, 4), (8, 0), (8, 9)] {
        let dims = Dims {
            b: 1,
            h: 8,
            hkv: 2,
            d: 16,
            cap: 20,
        };
        let k0 = rand_vec(dims.cache_len(), 77);
        let v0 = rand_vec(dims.cache_len(), 78);
        let run = |window| {
            let step = StepData::chunk(dims, l, true, 79).with(window, None);
            let (kc, vc) = (arr(&k0, &dims.cache_shape()), arr(&v0, &dims.cache_shape()));
            let out = run_native(dims, &step, offset, &kc, &vc);
            (f32s(&out.attention), f32s(&out.k_cache), f32s(&out.v_cache))
        };
        let none = run(None);
        for w in [offset + l, offset + l + 1, 1000] {
            let with = run(Some(w as i32));
            let what = format!("L {l} offset {offset} window {w}");
            assert_close(&with.0, &widen(&none.0), 1e-6, 1e-7, &what);
            assert_eq!(with.1, none.1, "{what}: keys");
            assert_eq!(with.2, none.2, "{what}: values");
        }
        // One key short of the context does change the last query's output.
        let short = run(Some((offset + l - 1).max(1) as i32));
        if offset + l > 1 {
            assert_ne!(short.0, none.0, "L {l} offset {offset}: window one short");
        }
    }
}

/// Consecutive calls on a ring of `cap` slots with a window: chunks of `lens` tokens from an
/// empty cache, each fed the caches the one before returned. Every output against the f64
/// reference (which reads position p from slot p % cap too) and against MLX's composition over
/// a linear cache of every position; the final ring against the reference's.
fn check_ring_chain(n: &Native, dims: Dims, window: i32, softcap: Option<f32>, lens: &[usize]) {
    let total: usize = lens.iter().sum();
    let lin = Dims { cap: total, ..dims };
    let (mut kc, mut vc) = (dims.zero_cache(), dims.zero_cache());
    let (mut kr, mut vr) = (vec![0f64; dims.cache_len()], vec![0f64; dims.cache_len()]);
    let (mut k_lin, mut v_lin) = (lin.zero_cache(), lin.zero_cache());
    let mut offset = 0;
    for (i, &l) in lens.iter().enumerate() {
        let step =
            StepData::chunk(dims, l, i % 2 == 0, 4000 + i as u64).with(Some(window), softcap);
        let what =
            format!("{dims:?} window {window} softcap {softcap:?} call {i}: L {l} offset {offset}");
        let want = attention_ref(dims, &step, offset, &mut kr, &mut vr);
        let out = run_native(dims, &step, offset, &kc, &vc);
        let got = f32s(&out.attention);
        assert_close(&got, &want, 1e-4, 1e-5, &what);
        let (o, k2, v2) = composed(n, dims, &step, offset, &k_lin, &v_lin);
        assert_close(
            &got,
            &widen(&f32s(&o)),
            1e-4,
            1e-5,
            &format!("vs mlx {what}"),
        );
        (kc, vc, k_lin, v_lin) = (out.k_cache, out.v_cache, k2, v2);
        offset += l;
    }
    assert!(offset > dims.cap, "the ring has wrapped");
    let what = format!("{dims:?} window {window} final ring");
    assert_close(&f32s(&kc), &kr, 1e-5, 1e-5, &what);
    assert_close(&f32s(&vc), &vr, 0.0, 0.0, &what);
    // The ring's slots hold the last `cap` positions of the linear cache.
    let (kl, vl) = (f32s(&k_lin), f32s(&v_lin));
    let (kg, vg) = (f32s(&kc), f32s(&vc));
    for bj in 0..dims.b * dims.hkv {
        for p in offset - dims.cap..offset {
            let ring = (bj * dims.cap + p % dims.cap) * dims.d;
            let line = (bj * lin.cap + p) * dims.d;
            assert_eq!(
                vg[ring..ring + dims.d],
                vl[line..line + dims.d],
                "{what}: v {p}"
            );
            let kw: Vec<f64> = widen(&kl[line..line + dims.d]);
            assert_close(
                &kg[ring..ring + dims.d],
                &kw,
                1e-5,
                1e-5,
                &format!("{what}: k {p}"),
            );
        }
    }
}

/// Ring caches: the window's slots wrap around the end of the buffer (two runs of slots per
/// query), a ring of exactly `window` slots at decode (every slot), chunks longer than the
/// window in a ring of `window + L - 1` slots (the minimum), per-row loops and BLAS (8 heads
/// over 2: 4 rows per token), with and without a soft cap.
#[test]
fn cached_attention_ring_caches_match_reference_and_mlx() {
    let n = Native::lock(true);
    let dims = |cap| Dims {
        b: 2,
        h: 8,
        hkv: 2,
        d: 16,
        cap,
    };
    for softcap in [None, Some(1.5)] {
        // Window 4, chunks up to 6: 9 slots; the 6- and 5-token chunks come after the ring has
        // wrapped (BLAS: 24 and 20 rows), the 3 and 2 take the loops.
        check_ring_chain(
            &n,
            dims(9),
            4,
            softcap,
            &[3, 1, 1, 1, 1, 6, 1, 1, 2, 5, 1, 1],
        );
        // A ring of exactly the window, decode only.
        check_ring_chain(&n, dims(4), 4, softcap, &[1; 11]);
        // Two slots more than the window: the visible slots wrap at decode.
        check_ring_chain(&n, dims(6), 4, softcap, &[2, 1, 1, 1, 3, 1, 1, 1, 1, 1]);
    }
    // A longer chunk than the whole window, many BLAS row blocks: 8 heads, 100 tokens, window
    // 16 in a ring of 115 slots.
    let big = Dims {
        b: 1,
        h: 8,
        hkv: 2,
        d: 16,
        cap: 115,
    };
    check_ring_chain(&n, big, 16, None, &[40, 100, 1, 1]);
}

/// Caches that cannot take the chunk are errors (nothing written, the process goes on), and so
/// are a window below 1 and soft caps that are not positive and finite.
#[test]
fn cached_attention_rejects_rings_that_are_too_small_and_bad_parameters() {
    let _n = Native::lock(true);
    let dims = Dims { cap: 5, ..SMALL };
    let (kc, vc) = (dims.zero_cache(), dims.zero_cache());
    // (L, offset, window): a ring needs capacity >= window + L - 1 once offset + L > capacity.
    for (l, offset, window) in [
        (3, 4, Some(4)),
        (1, 5, Some(6)),
        (2, 9, Some(5)),
        (3, 3, None),
    ] {
        let step = StepData::chunk(dims, l, true, 5100).with(window, None);
        match step.attend(dims, &step.qkv(dims), offset, &kc, &vc) {
            Err(Error::Mlx { message, .. }) => {
                assert!(message.contains("capacity"), "{message}")
            }
            other => panic!("L {l} offset {offset} window {window:?}: {other:?}"),
        }
    }
    for (window, softcap) in [
        (Some(0), None),
        (Some(-3), None),
        (None, Some(0.0)),
        (None, Some(-1.0)),
        (None, Some(f32::INFINITY)),
        (None, Some(f32::NAN)),
    ] {
        let step = StepData::new(dims, false, 5200).with(window, softcap);
        assert!(
            matches!(
                step.attend(dims, &step.qkv(dims), 0, &kc, &vc),
                Err(Error::InvalidArgument(_))
            ),
            "window {window:?} softcap {softcap:?}"
        );
    }
    assert_eq!(f32s(&kc), vec![0f32; dims.cache_len()]);
    // The smallest ring that takes the chunk works.
    let step = StepData::chunk(dims, 3, true, 5300).with(Some(3), None);
    let zeros = vec![0f32; dims.cache_len()];
    run_and_check(
        dims,
        &step,
        4,
        (&kc, &zeros),
        (&vc, &zeros),
        "ring of window + L - 1",
    );
}

// ------------------------------------------------------------------------------ GeGLU

/// `gelu_tanh(g) * u` with `gelu_tanh(x) = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, in f64.
fn gelu_glu_ref(x: &[f32], inter: usize) -> Vec<f64> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let mut out = Vec::new();
    for row in x.chunks(2 * inter) {
        for i in 0..inter {
            let g = row[i] as f64;
            let u = row[inter + i] as f64;
            out.push(0.5 * g * (1.0 + (c * (g + 0.044715 * g * g * g)).tanh()) * u);
        }
    }
    out
}

#[test]
fn gelu_tanh_glu_matches_the_formula_and_mlx() {
    let n = Native::lock(true);
    // Computed apart in double precision (Python's math.tanh): gelu_tanh(1) = 0.841191990608,
    // gelu_tanh(-1) = -0.158808009392, gelu_tanh(2) = 1.954597694088,
    // gelu_tanh(-3) = -0.003637392082, gelu_tanh(0.5) = 0.345714009825; up = 1.
    let gates = [1.0f32, -1.0, 2.0, -3.0, 0.5];
    let mut x = gates.to_vec();
    x.extend([1.0f32; 5]);
    let want = [
        0.841191990608,
        -0.158808009392,
        1.954597694088,
        -0.003637392082,
        0.345714009825,
    ];
    for on in [true, false] {
        n.set(on);
        let y = f32s(&native::gelu_tanh_glu(&arr(&x, &[1, 10])).unwrap());
        assert_close(&y, &want, 2e-6, 1e-7, &format!("by hand, native {on}"));
    }
    for (k, shape) in [
        vec![1, 8],
        vec![3, 2],
        vec![2, 3, 64],
        vec![6],
        vec![2, 1154],
    ]
    .iter()
    .enumerate()
    {
        let last = *shape.last().unwrap() as usize;
        let size: usize = shape.iter().map(|&d| d as usize).product();
        let xv: Vec<f32> = rand_vec(size, 60 + k as u64)
            .iter()
            .map(|v| v * 6.0)
            .collect();
        let x = arr(&xv, shape);
        let want = gelu_glu_ref(&xv, last / 2);
        let mut out_shape = shape.clone();
        *out_shape.last_mut().unwrap() /= 2;
        n.set(true);
        let ours = native::gelu_tanh_glu(&x).unwrap();
        assert_eq!(ours.shape(), out_shape);
        assert_eq!(ours.dtype(), Dtype::Float32);
        let ours = f32s(&ours);
        assert_close(&ours, &want, 2e-6, 1e-6, &format!("native {shape:?}"));
        n.set(false);
        let mlx = f32s(&native::gelu_tanh_glu(&x).unwrap());
        assert_close(&mlx, &want, 2e-6, 1e-6, &format!("mlx {shape:?}"));
        assert_close(&ours, &widen(&mlx), 2e-6, 1e-6, "native vs mlx");
        assert_eq!(x.to_vec::<f32>().unwrap(), xv);
    }
    // Extreme gates: finite, 0 far below, the gate itself far above (x³ overflows to ±inf).
    n.set(true);
    let xv = [-1e13f32, 1e13, -100.0, 100.0, 0.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let y = f32s(&native::gelu_tanh_glu(&arr(&xv, &[1, 10])).unwrap());
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    assert_close(&y, &[0.0, 3e13, 0.0, 500.0, 0.0], 1e-6, 1e-20, "extremes");
}

#[test]
fn gelu_tanh_glu_views_errors_and_fallbacks() {
    let n = Native::lock(true);
    // [6, 3] transposed: a [3, 6] view; row r is column r of the data.
    let base = rand_vec(18, 61);
    let xt = arr(&base, &[6, 3]).t().unwrap();
    let rows: Vec<f32> = (0..3)
        .flat_map(|r| (0..6).map(move |c| (r, c)))
        .map(|(r, c)| base[c * 3 + r])
        .collect();
    let got = native::gelu_tanh_glu(&xt).unwrap();
    assert_eq!(got.shape(), vec![3, 3]);
    assert_close(
        &f32s(&got),
        &gelu_glu_ref(&rows, 3),
        2e-6,
        1e-7,
        "transposed",
    );
    for on in [true, false] {
        n.set(on);
        assert!(matches!(
            native::gelu_tanh_glu(&arr(&[1.0; 6], &[2, 3])),
            Err(Error::Shape(_))
        ));
        assert!(native::gelu_tanh_glu(&Array::scalar(1.0f32)).is_err());
        assert!(native::gelu_tanh_glu(&Array::zeros(&[2, 0], Dtype::Float32).unwrap()).is_err());
    }
    n.set(true);
    // bfloat16 is not eligible: MLX's ops compute it, within bfloat16's precision.
    let xv: Vec<f32> = rand_vec(4 * 32, 62).iter().map(|v| v * 4.0).collect();
    let x = arr(&xv, &[4, 32]).astype(Dtype::Bfloat16).unwrap();
    let y = native::gelu_tanh_glu(&x).unwrap();
    assert_eq!(y.dtype(), Dtype::Bfloat16);
    assert_close(
        &f32s(&y),
        &gelu_glu_ref(&f32s(&x), 16),
        3e-2,
        3e-2,
        "bfloat16",
    );
}

/// Gemma 4's modes, by hand: one head of 2 at position 1, no rotation; position 0 holds
/// k = (1, 0), v = (0, 0). Keys as values with the value norm: the new key (3, 4) is stored as
/// the key and, RMS-normalised without a weight, as the value (3, 4) / √12.5; the query (1, 0)
/// scores 1 and 3. Then a shared step reads those caches with a query alone: the same output,
/// the caches untouched.
#[test]
fn cached_attention_keys_as_values_value_norm_and_shared_caches() {
    let _native = Native::lock(true);
    let inv_freq = arr(&[0.0], &[1]);
    let k = arr(&[1.0, 0.0, 0.0, 0.0], &[1, 1, 2, 2]);
    let v = Array::zeros(&[1, 1, 2, 2], Dtype::Float32).unwrap();
    let p = CachedAttentionParams {
        heads: 1,
        kv_heads: 1,
        head_dim: 2,
        offset: 1,
        scale: 1.0,
        norm_eps: 0.0,
        window: None,
        logit_softcap: None,
        keys: native::AttentionKeys::AsValues,
        value_norm: true,
    };
    let qk = arr(&[1.0, 0.0, 3.0, 4.0], &[1, 1, 4]);
    let out = cached_attention(&qk, &k, &v, &inv_freq, None, None, p)
        .unwrap()
        .expect("native on a CPU stream");
    let norm = (12.5f64).sqrt();
    let (v1x, v1y) = (3.0 / norm, 4.0 / norm);
    let w1 = 3f64.exp() / (1f64.exp() + 3f64.exp());
    assert_close(
        &f32s(&out.k_cache),
        &[1.0, 0.0, 3.0, 4.0],
        0.0,
        1e-6,
        "keys",
    );
    assert_close(
        &f32s(&out.v_cache),
        &[0.0, 0.0, v1x, v1y],
        1e-6,
        1e-6,
        "values",
    );
    assert_close(
        &f32s(&out.attention),
        &[w1 * v1x, w1 * v1y],
        1e-5,
        1e-6,
        "output",
    );
    // Without the value norm the value is the key as projected.
    let plain = CachedAttentionParams {
        value_norm: false,
        ..p
    };
    let k2 = arr(&[1.0, 0.0, 0.0, 0.0], &[1, 1, 2, 2]);
    let v2 = Array::zeros(&[1, 1, 2, 2], Dtype::Float32).unwrap();
    let o2 = cached_attention(&qk, &k2, &v2, &inv_freq, None, None, plain)
        .unwrap()
        .unwrap();
    assert_close(
        &f32s(&o2.v_cache),
        &[0.0, 0.0, 3.0, 4.0],
        0.0,
        1e-6,
        "raw values",
    );
    // A shared step: the query alone, over the caches the first step wrote.
    let shared = CachedAttentionParams {
        keys: native::AttentionKeys::Shared,
        ..p
    };
    let q = arr(&[1.0, 0.0], &[1, 1, 2]);
    let o3 = cached_attention(
        &q,
        &out.k_cache,
        &out.v_cache,
        &inv_freq,
        None,
        None,
        shared,
    )
    .unwrap()
    .unwrap();
    assert_eq!(f32s(&o3.attention), f32s(&out.attention));
    assert_close(
        &f32s(&o3.v_cache),
        &[0.0, 0.0, v1x, v1y],
        1e-6,
        1e-6,
        "unchanged",
    );
    // qkv must hold exactly the heads the mode says.
    assert!(cached_attention(
        &qk,
        &out.k_cache,
        &out.v_cache,
        &inv_freq,
        None,
        None,
        shared
    )
    .is_err());
    assert!(cached_attention(&q, &k, &v, &inv_freq, None, None, p).is_err());
}

/// `x` rounded to IEEE half precision (to nearest, ties to even), back in f64.
fn to_half(x: f64) -> f64 {
    half::f16::from_f32(x as f32).to_f64()
}

/// Float16 caches (`[B, Hkv, cap, D]` of dtype float16): the native primitive keeps them
/// float16, writes each new key (normed, roped in f32) and value rounded to half precision,
/// leaves every other slot's bits alone, and attends over the stored (rounded) values. Checked
/// against the f64 reference whose writes are rounded the same way (a key may differ by one
/// half-precision ulp where its f32 computation and the f64 one round to different sides)
/// and, values exactly, against MLX's own composition on float16 caches. Chains over decode
/// steps and prefill chunks on both the per-row kernels and the BLAS path (17 tokens x 3
/// heads per group), a ring with a window and a soft cap.
#[test]
fn cached_attention_over_float16_caches_matches_the_rounded_reference() {
    let n = Native::lock(true);
    for isa in isas() {
        force_isa(isa);
        check_float16_caches(&n, isa);
    }
    force_isa(0);
}

/// The kernels' instruction sets this CPU has (1: portable, up to the best), for tests that
/// force each in turn (`mlxrs_qmm_force_isa`, process-wide: hold the [`Native`] lock).
fn isas() -> Vec<i32> {
    // SAFETY: plain integer calls.
    let best = unsafe { mlx_rs::sys::native_qmm::mlxrs_qmm_force_isa(0) };
    (1..=best).collect()
}

fn force_isa(isa: i32) {
    // SAFETY: plain integer call; 0 restores the best.
    unsafe { mlx_rs::sys::native_qmm::mlxrs_qmm_force_isa(isa) };
}

fn check_float16_caches(n: &Native, isa: i32) {
    let mut seed = 7000;
    // Shapes, the (offset, tokens) of each call, window, soft cap.
    type Case = (Dims, &'static [(usize, usize)], Option<i32>, Option<f32>);
    let cases: [Case; 4] = [
        (
            Dims {
                b: 2,
                h: 4,
                hkv: 2,
                d: 8,
                cap: 12,
            },
            &[(0, 3), (3, 1), (4, 1), (5, 2)],
            None,
            None,
        ),
        (
            Dims {
                b: 1,
                h: 9,
                hkv: 3,
                d: 64,
                cap: 40,
            },
            &[(0, 17), (17, 1), (18, 1)],
            None,
            None,
        ),
        (
            Dims {
                b: 2,
                h: 2,
                hkv: 1,
                d: 16,
                cap: 8,
            },
            &[(0, 5), (5, 1), (6, 1), (7, 1)],
            None,
            Some(5.0),
        ),
        (
            Dims {
                b: 1,
                h: 4,
                hkv: 2,
                d: 32,
                cap: 6,
            },
            &[(0, 4), (4, 1), (5, 1), (6, 1), (7, 1)],
            Some(4),
            None,
        ),
    ];
    for (dims, steps, window, softcap) in cases {
        let half_zeros = || Array::zeros(&dims.cache_shape(), Dtype::Float16).unwrap();
        let (mut kc, mut vc) = (half_zeros(), half_zeros());
        let (mut mk, mut mv) = (half_zeros(), half_zeros());
        let mut kr = vec![0f64; dims.cache_len()];
        let mut vr = vec![0f64; dims.cache_len()];
        for &(offset, l) in steps {
            seed += 1;
            let what = format!(
                "isa {isa} {dims:?} offset {offset} L {l} window {window:?} cap {softcap:?}"
            );
            let step = StepData::chunk(dims, l, true, seed).with(window, softcap);
            let before = (f32s(&kc), f32s(&vc));
            let want = attention_ref_stored(dims, &step, offset, &mut kr, &mut vr, to_half);
            n.set(true);
            let out = run_native(dims, &step, offset, &kc, &vc);
            assert_eq!(out.k_cache.dtype(), Dtype::Float16, "{what}");
            assert_eq!(out.v_cache.dtype(), Dtype::Float16, "{what}");
            let (k, v) = (f32s(&out.k_cache), f32s(&out.v_cache));
            // Keys within one half-precision ulp of the rounded reference; values exact;
            // the slots not written unchanged.
            for (i, ((&g, &w), &o)) in k.iter().zip(&kr).zip(&before.0).enumerate() {
                let t = (i / dims.d) % dims.cap;
                let written = (t + dims.cap - offset % dims.cap) % dims.cap < l;
                if written {
                    assert!(
                        (g as f64 - w).abs() <= w.abs() / 1024.0 + 1e-5,
                        "k {what}: element {i}: {g} vs {w}"
                    );
                } else {
                    assert_eq!(g.to_bits(), o.to_bits(), "k {what}: element {i} changed");
                }
            }
            assert_eq!(
                v,
                vr.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                "v {what}"
            );
            assert_close(
                &f32s(&out.attention),
                &want,
                1e-3,
                1e-4,
                &format!("attention {what}"),
            );
            // MLX's composition over the same float16 caches (no window or cap: its mask
            // is the causal one over a plain cache).
            if window.is_none() && softcap.is_none() {
                n.set(false);
                let (o, k2, v2) = attention_mlx(dims, &step, offset, &mk, &mv);
                assert_eq!(f32s(&v2), v, "v vs mlx {what}");
                for (i, (&g, &w)) in k.iter().zip(&f32s(&k2)).enumerate() {
                    assert!(
                        (g - w).abs() <= w.abs() / 1024.0 + 1e-5,
                        "k vs mlx {what}: element {i}: {g} vs {w}"
                    );
                }
                assert_close(
                    &f32s(&out.attention),
                    &widen(&f32s(&o)),
                    1e-3,
                    1e-4,
                    &format!("vs mlx {what}"),
                );
                (mk, mv) = (k2, v2);
            }
            (kc, vc) = (out.k_cache, out.v_cache);
        }
    }
    n.set(true);
}

/// The rounding of values into a float16 cache on every instruction set, against the `half`
/// crate's IEEE conversion (to nearest, ties to even), bit for bit: ties, values that round
/// up into the next binade, subnormal halves, values that flush to zero, overflow to infinity,
/// infinities and NaN. 72 values per row: whole vectors and a tail.
#[test]
fn float16_caches_round_values_as_ieee() {
    let _n = Native::lock(true);
    let dims = Dims {
        b: 1,
        h: 1,
        hkv: 1,
        d: 72,
        cap: 2,
    };
    let mut special = vec![
        0.0f32,
        -0.0,
        1.0,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
        -(1.0 + 1.0 / 2048.0),
        2047.0 / 1024.0 + 1.0 / 4096.0,
        65504.0,
        65519.0,
        65520.0,
        -65520.0,
        1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        6.1035156e-5,
        6.0e-5,
        5.9604645e-8,
        2.9802322e-8,
        f32::from_bits(0x3300_0001), // just above 2^-25: the smallest subnormal half
        4.4703484e-8,
        1e-9,
        -3.0e-7,
        1.0 / 3.0,
        0.1,
        1000.1,
    ];
    let mut x = 0.7f32;
    while special.len() < 72 {
        x *= -3.7;
        special.push(x * 1e-7);
    }
    for isa in isas() {
        force_isa(isa);
        let mut step = StepData::new(dims, false, 1);
        // The value head of the one token: the special values.
        step.qkv[2 * dims.d..3 * dims.d].copy_from_slice(&special);
        let zeros = Array::zeros(&dims.cache_shape(), Dtype::Float16).unwrap();
        let out = run_native(dims, &step, 0, &zeros, &zeros);
        let v = out
            .v_cache
            .astype(Dtype::Float32)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        for (i, (&got, &x)) in v[..dims.d].iter().zip(&special).enumerate() {
            let want = half::f16::from_f32(x).to_f32();
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "isa {isa}: {x:e} stored as {got:e}, IEEE gives {want:e} (element {i})"
            );
        }
    }
    force_isa(0);
}
