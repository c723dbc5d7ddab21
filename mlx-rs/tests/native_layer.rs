//! `native::decoder_layer`: one token at position 0 against an f64 evaluation of the layer
//! (attention over a single position returns its value vector, so the reference needs no
//! softmax), shape errors, and the calls it declines. Its agreement with the per-op primitives
//! over prefill and decode steps is tested in models/tests/native_layer.rs.
mod common;

use common::{
    attention_composed, dequant_f64, f32s, quantize_weights, rand_vec, AttnSpec, Quantized,
};
use mlx_rs::native::{
    decoder_layer, decoder_stack, fused_quantized_matmul, set_native_ops, Activation,
    CachedAttentionParams, DecoderLayerWeights, QuantizedProjection, StackHead, StackInput,
};
use mlx_rs::{quant, Array, Dtype, Error};
use std::sync::{Mutex, MutexGuard};

/// The native switches are process-wide: tests take turns.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    set_native_ops(true);
    quant::set_native_qmm(true);
    g
}

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const INTER: usize = 96;
const EPS: f32 = 1e-5;

struct Layer {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    qkv: Quantized,
    o: Quantized,
    gate_up: Quantized,
    down: Quantized,
    input_norm: Array,
    post_norm: Array,
    qkv_bias: Array,
    inv_freq: Array,
    q_norm: Array,
    k_norm: Array,
    attention_out_norm: Array,
    mlp_out_norm: Array,
}

fn quantized(n: usize, k: usize, seed: u64) -> Quantized {
    let w: Vec<f32> = rand_vec(n * k, seed).iter().map(|v| v * 0.3).collect();
    let w = Array::from_slice(&w, &[n as i32, k as i32]).unwrap();
    quantize_weights(&w, 4, 32, Dtype::Float16)
}

fn vector(n: usize, seed: u64, low: f32, high: f32) -> Array {
    let v: Vec<f32> = rand_vec(n, seed)
        .iter()
        .map(|r| low + (r + 1.0) / 2.0 * (high - low))
        .collect();
    Array::from_slice(&v, &[n as i32]).unwrap()
}

fn layer() -> Layer {
    layer_seeded(0)
}

/// A layer of random weights; `seed` picks which.
fn layer_seeded(seed: u64) -> Layer {
    layer_shaped(seed, HEADS, KV_HEADS, HEAD_DIM)
}

/// A layer of random weights with its own head counts and size.
fn layer_shaped(seed: u64, heads: usize, kv_heads: usize, head_dim: usize) -> Layer {
    let width = (heads + 2 * kv_heads) * head_dim;
    let s = 100 * seed;
    Layer {
        heads,
        kv_heads,
        head_dim,
        qkv: quantized(width, HIDDEN, s + 1),
        o: quantized(HIDDEN, heads * head_dim, s + 2),
        gate_up: quantized(2 * INTER, HIDDEN, s + 3),
        down: quantized(HIDDEN, INTER, s + 4),
        input_norm: vector(HIDDEN, s + 5, 0.5, 1.5),
        post_norm: vector(HIDDEN, s + 6, 0.5, 1.5),
        qkv_bias: vector(width, s + 7, -0.5, 0.5),
        inv_freq: vector(head_dim / 2, s + 8, 0.0, 1.0),
        q_norm: vector(head_dim, s + 9, 0.5, 1.5),
        k_norm: vector(head_dim, s + 10, 0.5, 1.5),
        attention_out_norm: vector(HIDDEN, s + 11, 0.5, 1.5),
        mlp_out_norm: vector(HIDDEN, s + 12, 0.5, 1.5),
    }
}

fn proj(q: &Quantized) -> QuantizedProjection<'_> {
    QuantizedProjection {
        weight: &q.wq,
        scales: &q.scales,
        biases: &q.biases,
        group_size: q.group,
        bits: q.bits,
        blocks: &[],
    }
}

/// Which optional features a layer uses.
#[derive(Debug, Clone, Copy, Default)]
struct Features {
    qkv_bias: bool,
    qk_norms: bool,
    attention_out_norm: bool,
    mlp_out_norm: bool,
    activation: Activation,
    window: Option<i32>,
    softcap: Option<f32>,
}

/// The Llama/Qwen2 block the tests started with: a q/k/v bias, nothing else.
const QWEN2: Features = Features {
    qkv_bias: true,
    qk_norms: false,
    attention_out_norm: false,
    mlp_out_norm: false,
    activation: Activation::Silu,
    window: None,
    softcap: None,
};

fn weights(l: &Layer) -> DecoderLayerWeights<'_> {
    weights_with(l, QWEN2)
}

fn weights_with(l: &Layer, f: Features) -> DecoderLayerWeights<'_> {
    DecoderLayerWeights {
        input_norm: (&l.input_norm, EPS),
        qkv: proj(&l.qkv),
        qkv_bias: f.qkv_bias.then_some(&l.qkv_bias),
        inv_freq: &l.inv_freq,
        q_norm: f.qk_norms.then_some(&l.q_norm),
        k_norm: f.qk_norms.then_some(&l.k_norm),
        o: proj(&l.o),
        attention_out_norm: f
            .attention_out_norm
            .then_some((&l.attention_out_norm, 2e-6)),
        pre_mlp_norm: (&l.post_norm, EPS),
        gate_up: proj(&l.gate_up),
        down: proj(&l.down),
        mlp_out_norm: f.mlp_out_norm.then_some((&l.mlp_out_norm, 3e-6)),
        activation: f.activation,
        attention: CachedAttentionParams {
            heads: l.heads as i32,
            kv_heads: l.kv_heads as i32,
            head_dim: l.head_dim as i32,
            offset: 0,
            scale: (l.head_dim as f32).powf(-0.5),
            norm_eps: EPS,
            window: f.window,
            logit_softcap: f.softcap,
            keys: Default::default(),
            value_norm: false,
        },
    }
}

fn cache(capacity: i32) -> Array {
    shaped_cache(KV_HEADS, HEAD_DIM, capacity)
}

fn shaped_cache(kv_heads: usize, head_dim: usize, capacity: i32) -> Array {
    Array::zeros(
        &[1, kv_heads as i32, capacity, head_dim as i32],
        Dtype::Float32,
    )
    .unwrap()
}

fn rms(x: &[f64], w: &[f64]) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + EPS as f64).sqrt();
    x.iter().zip(w).map(|(v, w)| v * inv * w).collect()
}

fn matvec(w: &[f64], x: &[f64]) -> Vec<f64> {
    w.chunks(x.len())
        .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

fn f64s(a: &Array) -> Vec<f64> {
    f32s(a).iter().map(|&v| v as f64).collect()
}

#[test]
fn first_token_matches_an_f64_evaluation_of_the_layer() {
    let _g = lock();
    let l = layer();
    let xv = rand_vec(HIDDEN, 9);
    let x = Array::from_slice(&xv, &[1, 1, HIDDEN as i32]).unwrap();
    let (kc, vc) = (cache(4), cache(4));
    let out = decoder_layer(&x, &kc, &vc, &weights(&l), 0)
        .unwrap()
        .expect("a CPU stream with float32 inputs takes the native layer");

    // Reference: with one position the attention of every query head is the value vector of
    // its key/value head (softmax over one score is 1).
    let x64: Vec<f64> = xv.iter().map(|&v| v as f64).collect();
    let mut qkv = matvec(&dequant_f64(&l.qkv), &rms(&x64, &f64s(&l.input_norm)));
    for (v, b) in qkv.iter_mut().zip(f64s(&l.qkv_bias)) {
        *v += b;
    }
    let v_heads = &qkv[(HEADS + KV_HEADS) * HEAD_DIM..];
    let attn: Vec<f64> = (0..HEADS)
        .flat_map(|h| {
            let j = h / (HEADS / KV_HEADS);
            v_heads[j * HEAD_DIM..(j + 1) * HEAD_DIM].to_vec()
        })
        .collect();
    let h: Vec<f64> = x64
        .iter()
        .zip(matvec(&dequant_f64(&l.o), &attn))
        .map(|(a, b)| a + b)
        .collect();
    let gu = matvec(&dequant_f64(&l.gate_up), &rms(&h, &f64s(&l.post_norm)));
    let act: Vec<f64> = (0..INTER)
        .map(|i| gu[i] / (1.0 + (-gu[i]).exp()) * gu[INTER + i])
        .collect();
    let want: Vec<f64> = h
        .iter()
        .zip(matvec(&dequant_f64(&l.down), &act))
        .map(|(a, b)| a + b)
        .collect();
    let got = f32s(&out.hidden);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "y[{i}] = {g}, want {w}"
        );
    }
    // The value cache holds v (unrotated) at position 0, zeros after.
    let vcache = f32s(&out.v_cache);
    for j in 0..KV_HEADS {
        for d in 0..HEAD_DIM {
            let got = vcache[j * 4 * HEAD_DIM + d] as f64;
            let want = v_heads[j * HEAD_DIM + d];
            assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()));
        }
        assert!(vcache[j * 4 * HEAD_DIM + HEAD_DIM..(j + 1) * 4 * HEAD_DIM]
            .iter()
            .all(|&v| v == 0.0));
    }
}

#[test]
fn shapes_that_do_not_fit_are_errors() {
    let _g = lock();
    let l = layer();
    let x = Array::from_slice(&rand_vec(HIDDEN, 10), &[1, 1, HIDDEN as i32]).unwrap();
    let (kc, vc) = (cache(4), cache(4));
    let expect_shape_error =
        |w: &DecoderLayerWeights, offset: i32, kc: &Array, what: &str| match decoder_layer(
            &x, kc, &vc, w, offset,
        ) {
            Err(Error::Mlx { message, .. }) => {
                assert!(message.contains("decoder_layer"), "{what}: {message}")
            }
            other => panic!("{what}: expected an error, got {other:?}"),
        };
    let short = vector(HIDDEN - 1, 11, 0.5, 1.5);
    let mut w = weights(&l);
    w.input_norm = (&short, EPS);
    expect_shape_error(&w, 0, &kc, "norm of the wrong length");
    for f in [
        Features {
            attention_out_norm: true,
            ..QWEN2
        },
        Features {
            mlp_out_norm: true,
            ..QWEN2
        },
    ] {
        let mut w = weights_with(&l, f);
        w.attention_out_norm = w.attention_out_norm.map(|(_, e)| (&short, e));
        w.mlp_out_norm = w.mlp_out_norm.map(|(_, e)| (&short, e));
        expect_shape_error(&w, 0, &kc, "output norm of the wrong length");
    }
    let mut w = weights(&l);
    w.attention.heads = 2; // the qkv projection has rows for 4 query heads
    expect_shape_error(&w, 0, &kc, "head count");
    expect_shape_error(&weights(&l), 4, &kc, "offset at the cache's capacity");
    // A ring too small for the window: 2 tokens at position 4 with a window of 4 need
    // 4 + 2 - 1 = 5 slots, the cache has 4.
    let x2 = Array::from_slice(&rand_vec(2 * HIDDEN, 10), &[1, 2, HIDDEN as i32]).unwrap();
    let ring = weights_with(
        &l,
        Features {
            window: Some(4),
            ..QWEN2
        },
    );
    match decoder_layer(&x2, &kc, &vc, &ring, 4) {
        Err(Error::Mlx { message, .. }) => assert!(message.contains("capacity"), "{message}"),
        other => panic!("small ring: expected an error, got {other:?}"),
    }
    // With a window of 3 the same ring takes the chunk.
    let ring3 = weights_with(
        &l,
        Features {
            window: Some(3),
            ..QWEN2
        },
    );
    assert!(decoder_layer(&x2, &kc, &vc, &ring3, 4).unwrap().is_some());
    // Invalid parameters are typed errors.
    for (window, softcap) in [(Some(0), None), (None, Some(-2.0)), (None, Some(f32::NAN))] {
        let w = weights_with(
            &l,
            Features {
                window,
                softcap,
                ..QWEN2
            },
        );
        assert!(matches!(
            decoder_layer(&x, &kc, &vc, &w, 0),
            Err(Error::InvalidArgument(_))
        ));
    }
    let odd = quantized(2 * INTER - 32, HIDDEN, 12);
    let mut w = weights(&l);
    w.gate_up = proj(&odd);
    expect_shape_error(&w, 0, &kc, "gate/up rows");
    let small = cache(2);
    expect_shape_error(&weights(&l), 0, &small, "mismatched caches");
    // The process goes on: a good call still works.
    let (kc, vc) = (cache(4), cache(4));
    assert!(decoder_layer(&x, &kc, &vc, &weights(&l), 0)
        .unwrap()
        .is_some());
}

#[test]
fn ineligible_calls_are_declined() {
    let _g = lock();
    let l = layer();
    let x = Array::from_slice(&rand_vec(HIDDEN, 13), &[1, 1, HIDDEN as i32]).unwrap();
    let (kc, vc) = (cache(4), cache(4));
    let declined =
        |x: &Array, w: &DecoderLayerWeights| decoder_layer(x, &kc, &vc, w, 0).unwrap().is_none();
    assert!(declined(&x.astype(Dtype::Bfloat16).unwrap(), &weights(&l)));
    // 3-bit codes: MLX's op only.
    let w3 = quant::quantize(
        &Array::from_slice(
            &rand_vec(HIDDEN * INTER, 14),
            &[HIDDEN as i32, INTER as i32],
        )
        .unwrap(),
        32,
        3,
    )
    .unwrap();
    let mut w = weights(&l);
    w.down = QuantizedProjection {
        weight: &w3.0,
        scales: &w3.1,
        biases: &w3.2,
        group_size: 32,
        bits: 3,
        blocks: &[],
    };
    assert!(declined(&x, &w));
    set_native_ops(false);
    assert!(declined(&x, &weights(&l)));
    set_native_ops(true);
    quant::set_native_qmm(false);
    assert!(declined(&x, &weights(&l)));
    quant::set_native_qmm(true);
    assert!(!declined(&x, &weights(&l)));
}

/// Three different layers for a heterogeneous stack: a Qwen2 block (plain cache of 8); a
/// Gemma-like block with other head counts and size, a window of 2 in a ring of 4 slots,
/// GeGLU, an attention output norm and a logit soft cap; a block with a window of 3 in a ring
/// of 5, per-head q/k norms and an MLP output norm. Their RoPE frequencies differ too.
fn mixed_layers() -> Vec<(Layer, Features, i32)> {
    vec![
        (layer_seeded(1), QWEN2, 8),
        (
            layer_shaped(2, 2, 1, 32),
            Features {
                qkv_bias: false,
                qk_norms: true,
                attention_out_norm: true,
                mlp_out_norm: true,
                activation: Activation::GeluTanh,
                window: Some(2),
                softcap: Some(3.0),
            },
            4,
        ),
        (
            layer_seeded(3),
            Features {
                qk_norms: true,
                mlp_out_norm: true,
                window: Some(3),
                ..Features::default()
            },
            5,
        ),
    ]
}

#[test]
fn stack_equals_its_layers_applied_in_turn() {
    // Three different layers (mixed_layers: different head shapes, windows in rings that wrap,
    // RoPE frequencies, activations, output norms, soft caps) over a prefill of 3 tokens,
    // decode steps and a chunk of 2: the stack's output and every cache equal
    // decoder_layer's, layer after layer, bit for bit (the same kernels in the same order).
    let _g = lock();
    let mixed = mixed_layers();
    let new_caches = || -> Vec<(Array, Array)> {
        mixed
            .iter()
            .map(|(l, _, cap)| {
                (
                    shaped_cache(l.kv_heads, l.head_dim, *cap),
                    shaped_cache(l.kv_heads, l.head_dim, *cap),
                )
            })
            .collect()
    };
    let mut one = new_caches();
    let mut all = new_caches();
    let mut offset = 0;
    for (step, len) in [3usize, 1, 1, 2, 1].into_iter().enumerate() {
        let xv = rand_vec(len * HIDDEN, 20 + step as u64);
        let x = Array::from_slice(&xv, &[1, len as i32, HIDDEN as i32]).unwrap();
        let mut h = x.clone();
        for ((l, f, _), (kc, vc)) in mixed.iter().zip(one.iter_mut()) {
            let out = decoder_layer(&h, kc, vc, &weights_with(l, *f), offset)
                .unwrap()
                .expect("native layer");
            (h, *kc, *vc) = (out.hidden, out.k_cache, out.v_cache);
        }
        let stack: Vec<_> = all
            .iter()
            .zip(&mixed)
            .map(|((k, v), (l, f, _))| (k, v, weights_with(l, *f)))
            .collect();
        let out = decoder_stack(StackInput::Hidden(&x), &stack, None, offset)
            .unwrap()
            .expect("native stack");
        let got = f32s(&out.output);
        assert!(got.iter().all(|v| v.is_finite()), "step {step}");
        assert_eq!(got, f32s(&h), "step {step}: hidden");
        for (i, ((k, v), (k1, v1))) in out.caches.into_iter().zip(&one).enumerate() {
            assert_eq!(f32s(&k), f32s(k1), "step {step}: layer {i} keys");
            assert_eq!(f32s(&v), f32s(v1), "step {step}: layer {i} values");
            all[i] = (k, v);
        }
        offset += len as i32;
    }
    assert!(offset > 5, "the rings of 4 and 5 slots have wrapped");
    let layers: Vec<Layer> = (1..=3).map(layer_seeded).collect();
    // Declined as a whole when one layer is not eligible (3-bit codes: MLX's op only), and an
    // empty stack is an error.
    let odd = Layer {
        down: {
            let w: Vec<f32> = rand_vec(HIDDEN * INTER, 99)
                .iter()
                .map(|v| v * 0.3)
                .collect();
            let w = Array::from_slice(&w, &[HIDDEN as i32, INTER as i32]).unwrap();
            quantize_weights(&w, 3, 32, Dtype::Float16)
        },
        ..layer_seeded(4)
    };
    let (k, v) = (cache(8), cache(8));
    let x = Array::zeros(&[1, 1, HIDDEN as i32], Dtype::Float32).unwrap();
    let declined = [(&k, &v, weights(&layers[0])), (&k, &v, weights(&odd))];
    assert!(decoder_stack(StackInput::Hidden(&x), &declined, None, 0)
        .unwrap()
        .is_none());
    assert!(matches!(
        decoder_stack(StackInput::Hidden(&x), &[], None, 0),
        Err(Error::Mlx { .. })
    ));
}

#[test]
fn stack_with_embedding_and_head_equals_the_parts() {
    // 8-bit codes (a GGUF Q8_0 table) and 4-bit codes in groups of 64.
    for (bits, group) in [(8, 32), (4, 64)] {
        check_stack_with_embedding_and_head(bits, group);
    }
}

/// Token ids through a quantized table of `bits`-bit codes in groups of `group` into two
/// layers and a quantized head with its final norm: equal, bit for bit, to the table's rows
/// dequantized by MLX, the layers in turn and the fused head matmul. An id outside the table
/// gives NaN logits for its row and the rows after it.
fn check_stack_with_embedding_and_head(bits: i32, group: i32) {
    let _g = lock();
    const VOCAB: usize = 40;
    let layers: Vec<Layer> = (5..=6).map(layer_seeded).collect();
    let table_f: Vec<f32> = rand_vec(VOCAB * HIDDEN, 31)
        .iter()
        .map(|v| v * 2.0)
        .collect();
    let table_f = Array::from_slice(&table_f, &[VOCAB as i32, HIDDEN as i32]).unwrap();
    let table = quantize_weights(&table_f, bits, group, Dtype::Float16);
    let head = quantized(VOCAB, HIDDEN, 32);
    let head_norm = vector(HIDDEN, 33, 0.5, 1.5);
    let ids = [3u32, 17, 39];
    let id_arr = Array::from_slice(&ids, &[1, 3]).unwrap();

    // The parts: the rows as the model's embedding takes them (scales and biases widened to
    // float32, then MLX's dequantize).
    let idx = Array::from_slice(&ids, &[3]).unwrap();
    let f32_rows = |a: &Array| a.take(&idx, 0).unwrap().astype(Dtype::Float32).unwrap();
    let mut h = quant::dequantize(
        &table.wq.take(&idx, 0).unwrap(),
        &f32_rows(&table.scales),
        &f32_rows(&table.biases),
        group,
        bits,
    )
    .unwrap()
    .reshape(&[1, 3, HIDDEN as i32])
    .unwrap();
    let (k1, v1, k2, v2) = (cache(8), cache(8), cache(8), cache(8));
    for (l, (kc, vc)) in layers.iter().zip([(&k1, &v1), (&k2, &v2)]) {
        h = decoder_layer(&h, kc, vc, &weights(l), 0)
            .unwrap()
            .expect("native layer")
            .hidden;
    }
    let want = fused_quantized_matmul(
        &h,
        &head.wq,
        &head.scales,
        &head.biases,
        32,
        4,
        Some((&head_norm, EPS)),
        None,
    )
    .unwrap()
    .expect("native head");

    // The whole step from empty caches for these ids: the logits.
    let step = |ids: &Array| {
        let (k1, v1, k2, v2) = (cache(8), cache(8), cache(8), cache(8));
        let stack = [
            (&k1, &v1, weights(&layers[0])),
            (&k2, &v2, weights(&layers[1])),
        ];
        let input = StackInput::Tokens {
            ids,
            table: proj(&table),
            scale: 1.0,
        };
        let head_part = StackHead {
            norm: (&head_norm, EPS),
            projection: proj(&head),
            softcap: None,
        };
        decoder_stack(input, &stack, Some(head_part), 0)
            .unwrap()
            .expect("native stack")
            .output
    };
    let out = step(&id_arr);
    assert_eq!(out.shape(), vec![1, 3, VOCAB as i32]);
    assert_eq!(f32s(&out), f32s(&want), "{bits}-bit table");

    // An id past the table (int32 ids) poisons its row of logits and, through attention, the
    // rows after it; the row before is unchanged.
    let bad = Array::from_slice(&[3i32, VOCAB as i32, 39], &[1, 3]).unwrap();
    let got = f32s(&step(&bad));
    assert_eq!(got[..VOCAB], f32s(&want)[..VOCAB]);
    assert!(
        got[VOCAB..].iter().all(|v| v.is_nan()),
        "row 1 and, causally, row 2"
    );
}

// ------------------------------------------------------------------------------ layer features

/// `rms_norm(x, w)` then the quantized projection, from MLX's ops.
fn mlx_proj(x: &Array, q: &Quantized) -> Array {
    quant::quantized_matmul(x, &q.wq, &q.scales, &q.biases, true, q.group, q.bits).unwrap()
}

/// One layer with features `f` composed from MLX's ops (call with both native switches off):
/// `fast::rms_norm`, `quant::quantized_matmul`, the attention of
/// [`common::attention_composed`] over linear caches `k_lin` / `v_lin` (slot = position),
/// `silu` or `gelu_approx` (the tanh formula) times up, residual adds. Returns the output and
/// the updated linear caches.
fn composed_layer(
    x: &Array,
    k_lin: &Array,
    v_lin: &Array,
    l: &Layer,
    f: Features,
    offset: i32,
) -> (Array, Array, Array) {
    use mlx_rs::fast::rms_norm;
    let mut qkv = mlx_proj(&rms_norm(x, Some(&l.input_norm), EPS).unwrap(), &l.qkv);
    if f.qkv_bias {
        qkv = qkv.add(&l.qkv_bias).unwrap();
    }
    let spec = AttnSpec {
        heads: l.heads as i32,
        kv_heads: l.kv_heads as i32,
        head_dim: l.head_dim as i32,
        scale: (l.head_dim as f32).powf(-0.5),
        eps: EPS,
        window: f.window,
        softcap: f.softcap,
    };
    let norms = f.qk_norms.then_some((&l.q_norm, &l.k_norm));
    let (att, k_lin, v_lin) = attention_composed(
        &qkv,
        k_lin,
        v_lin,
        &l.inv_freq,
        norms.map(|n| n.0),
        norms.map(|n| n.1),
        spec,
        offset,
    );
    let mut a = mlx_proj(&att, &l.o);
    if f.attention_out_norm {
        a = rms_norm(&a, Some(&l.attention_out_norm), 2e-6).unwrap();
    }
    let h = x.add(&a).unwrap();
    let gu = mlx_proj(&rms_norm(&h, Some(&l.post_norm), EPS).unwrap(), &l.gate_up);
    let parts = gu.split(2, -1).unwrap();
    let act = match f.activation {
        Activation::Silu => parts[0].silu().unwrap(),
        Activation::GeluTanh => parts[0].gelu_approx().unwrap(),
    };
    let mut m = mlx_proj(&act.multiply(&parts[1]).unwrap(), &l.down);
    if f.mlp_out_norm {
        m = rms_norm(&m, Some(&l.mlp_out_norm), 3e-6).unwrap();
    }
    (h.add(&m).unwrap(), k_lin, v_lin)
}

#[track_caller]
fn assert_near(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// Each new layer feature alone, then all of them together (Gemma's block), against the layer
/// composed from MLX's ops: a prefill of 9 tokens (BLAS attention), decode steps and a chunk
/// of 3, with a window of 4 in a ring of 4 + 9 - 1 = 12 slots that wraps (the composition
/// keeps every position in a linear cache).
#[test]
fn layer_features_match_a_composition_of_mlx_ops() {
    let _g = lock();
    let l = layer_seeded(7);
    let plain = Features::default();
    let gemma = Features {
        qkv_bias: false,
        qk_norms: true,
        attention_out_norm: true,
        mlp_out_norm: true,
        activation: Activation::GeluTanh,
        window: Some(4),
        softcap: Some(2.0),
    };
    let configs = [
        ("plain", plain),
        (
            "attention_out_norm",
            Features {
                attention_out_norm: true,
                ..plain
            },
        ),
        (
            "mlp_out_norm",
            Features {
                mlp_out_norm: true,
                ..plain
            },
        ),
        (
            "gelu_tanh",
            Features {
                activation: Activation::GeluTanh,
                ..plain
            },
        ),
        (
            "window",
            Features {
                window: Some(4),
                ..plain
            },
        ),
        (
            "softcap",
            Features {
                softcap: Some(1.0),
                ..plain
            },
        ),
        ("gemma", gemma),
    ];
    let lens = [9usize, 1, 1, 3, 1, 1];
    let total: i32 = lens.iter().sum::<usize>() as i32;
    for (name, f) in configs {
        let cap = f.window.map_or(total, |w| w + 9 - 1);
        let (mut kc, mut vc) = (cache(cap), cache(cap));
        let (mut k_lin, mut v_lin) = (cache(total), cache(total));
        let mut offset = 0;
        for (step, &len) in lens.iter().enumerate() {
            let what = format!("{name}: step {step} (L {len}, offset {offset})");
            let x = Array::from_slice(
                &rand_vec(len * HIDDEN, 40 + step as u64),
                &[1, len as i32, HIDDEN as i32],
            )
            .unwrap();
            let out = decoder_layer(&x, &kc, &vc, &weights_with(&l, f), offset)
                .unwrap()
                .expect("native layer");
            let got = f32s(&out.hidden);
            (kc, vc) = (out.k_cache, out.v_cache);
            set_native_ops(false);
            quant::set_native_qmm(false);
            let (want, k2, v2) = composed_layer(&x, &k_lin, &v_lin, &l, f, offset);
            let want = f32s(&want);
            set_native_ops(true);
            quant::set_native_qmm(true);
            (k_lin, v_lin) = (k2, v2);
            assert_near(&got, &want, 2e-4, &what);
            offset += len as i32;
        }
        assert!(
            f.window.is_none() || offset > cap,
            "{name}: the ring has wrapped"
        );
    }
}

/// The embedding scale and the head's soft cap of a stack against their definitions applied
/// to the parts: the table's rows (MLX's dequantize) times the scale, the layers one by one,
/// the fused head matmul, then `c·tanh(logits / c)` from MLX's ops.
#[test]
fn stack_embedding_scale_and_head_soft_cap_match_the_parts() {
    let _g = lock();
    const VOCAB: usize = 40;
    let mixed = mixed_layers();
    let table_f: Vec<f32> = rand_vec(VOCAB * HIDDEN, 51)
        .iter()
        .map(|v| v * 0.1)
        .collect();
    let table_f = Array::from_slice(&table_f, &[VOCAB as i32, HIDDEN as i32]).unwrap();
    let table = quantize_weights(&table_f, 8, 32, Dtype::Float16);
    let head = quantized(VOCAB, HIDDEN, 52);
    let head_norm = vector(HIDDEN, 53, 0.5, 1.5);
    let ids = [3u32, 17, 39, 0];
    let (scale, cap) = (25.25f32, 0.75f32);
    let caches = || -> Vec<(Array, Array)> {
        mixed
            .iter()
            .map(|(l, _, _)| {
                (
                    shaped_cache(l.kv_heads, l.head_dim, 8),
                    shaped_cache(l.kv_heads, l.head_dim, 8),
                )
            })
            .collect()
    };

    // The parts.
    let idx = Array::from_slice(&ids, &[4]).unwrap();
    let f32_rows = |a: &Array| a.take(&idx, 0).unwrap().astype(Dtype::Float32).unwrap();
    let rows = quant::dequantize(
        &table.wq.take(&idx, 0).unwrap(),
        &f32_rows(&table.scales),
        &f32_rows(&table.biases),
        32,
        8,
    )
    .unwrap();
    let mut h = rows
        .multiply(&Array::scalar(scale))
        .unwrap()
        .reshape(&[1, 4, HIDDEN as i32])
        .unwrap();
    for ((l, f, _), (kc, vc)) in mixed.iter().zip(caches()) {
        h = decoder_layer(&h, &kc, &vc, &weights_with(l, *f), 0)
            .unwrap()
            .expect("native layer")
            .hidden;
    }
    let logits = fused_quantized_matmul(
        &h,
        &head.wq,
        &head.scales,
        &head.biases,
        32,
        4,
        Some((&head_norm, EPS)),
        None,
    )
    .unwrap()
    .expect("native head");
    let c = Array::scalar(cap);
    let capped = logits
        .divide(&c)
        .unwrap()
        .tanh()
        .unwrap()
        .multiply(&c)
        .unwrap();

    let step = |scale: f32, softcap: Option<f32>| {
        let cs = caches();
        let stack: Vec<_> = cs
            .iter()
            .zip(&mixed)
            .map(|((k, v), (l, f, _))| (k, v, weights_with(l, *f)))
            .collect();
        let input = StackInput::Tokens {
            ids: &Array::from_slice(&ids, &[1, 4]).unwrap(),
            table: proj(&table),
            scale,
        };
        let head = StackHead {
            norm: (&head_norm, EPS),
            projection: proj(&head),
            softcap,
        };
        f32s(
            &decoder_stack(input, &stack, Some(head), 0)
                .unwrap()
                .expect("native stack")
                .output,
        )
    };
    // Without the soft cap the scaled lookup and the layers are the parts bit for bit.
    assert_eq!(step(scale, None), f32s(&logits), "scaled embedding");
    let got = step(scale, Some(cap));
    assert_near(&got, &f32s(&capped), 2e-6, "soft-capped logits");
    assert!(got.iter().all(|v| v.abs() < cap), "|logits| < cap");
    assert!(
        f32s(&logits).iter().any(|v| v.abs() > 2.0 * cap),
        "the cap matters for these logits"
    );
    // The scale matters: 1 gives other logits.
    assert_ne!(step(1.0, None), f32s(&logits));
    // A non-finite scale and a bad cap are typed errors.
    let cs = caches();
    let stack: Vec<_> = cs
        .iter()
        .zip(&mixed)
        .map(|((k, v), (l, f, _))| (k, v, weights_with(l, *f)))
        .collect();
    let id_arr = Array::from_slice(&ids, &[1, 4]).unwrap();
    let bad_scale = StackInput::Tokens {
        ids: &id_arr,
        table: proj(&table),
        scale: f32::INFINITY,
    };
    assert!(matches!(
        decoder_stack(bad_scale, &stack, None, 0),
        Err(Error::InvalidArgument(_))
    ));
    let bad_head = StackHead {
        norm: (&head_norm, EPS),
        projection: proj(&head),
        softcap: Some(0.0),
    };
    let input = StackInput::Tokens {
        ids: &id_arr,
        table: proj(&table),
        scale,
    };
    assert!(matches!(
        decoder_stack(input, &stack, Some(bad_head), 0),
        Err(Error::InvalidArgument(_))
    ));
}
