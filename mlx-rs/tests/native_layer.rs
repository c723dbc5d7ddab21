//! `native::decoder_layer`: one token at position 0 against an f64 evaluation of the layer
//! (attention over a single position returns its value vector, so the reference needs no
//! softmax), shape errors, and the calls it declines. Its agreement with the per-op primitives
//! over prefill and decode steps is tested in models/tests/native_layer.rs.
mod common;

use common::{dequant_f64, f32s, quantize_weights, rand_vec, Quantized};
use mlx_rs::native::{
    decoder_layer, decoder_stack, fused_quantized_matmul, set_native_ops, CachedAttentionParams,
    DecoderLayerWeights, QuantizedProjection, StackHead, StackInput,
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
    qkv: Quantized,
    o: Quantized,
    gate_up: Quantized,
    down: Quantized,
    input_norm: Array,
    post_norm: Array,
    qkv_bias: Array,
    inv_freq: Array,
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
    let width = (HEADS + 2 * KV_HEADS) * HEAD_DIM;
    let s = 100 * seed;
    Layer {
        qkv: quantized(width, HIDDEN, s + 1),
        o: quantized(HIDDEN, HEADS * HEAD_DIM, s + 2),
        gate_up: quantized(2 * INTER, HIDDEN, s + 3),
        down: quantized(HIDDEN, INTER, s + 4),
        input_norm: vector(HIDDEN, s + 5, 0.5, 1.5),
        post_norm: vector(HIDDEN, s + 6, 0.5, 1.5),
        qkv_bias: vector(width, s + 7, -0.5, 0.5),
        inv_freq: vector(HEAD_DIM / 2, s + 8, 0.0, 1.0),
    }
}

fn proj(q: &Quantized) -> QuantizedProjection<'_> {
    QuantizedProjection {
        weight: &q.wq,
        scales: &q.scales,
        biases: &q.biases,
        group_size: q.group,
        bits: q.bits,
    }
}

fn weights(l: &Layer) -> DecoderLayerWeights<'_> {
    DecoderLayerWeights {
        input_norm: (&l.input_norm, EPS),
        qkv: proj(&l.qkv),
        qkv_bias: Some(&l.qkv_bias),
        inv_freq: &l.inv_freq,
        q_norm: None,
        k_norm: None,
        o: proj(&l.o),
        post_attention_norm: (&l.post_norm, EPS),
        gate_up: proj(&l.gate_up),
        down: proj(&l.down),
    }
}

fn params(offset: i32) -> CachedAttentionParams {
    CachedAttentionParams {
        heads: HEADS as i32,
        kv_heads: KV_HEADS as i32,
        head_dim: HEAD_DIM as i32,
        offset,
        scale: (HEAD_DIM as f32).powf(-0.5),
        norm_eps: EPS,
    }
}

fn cache(capacity: i32) -> Array {
    Array::zeros(
        &[1, KV_HEADS as i32, capacity, HEAD_DIM as i32],
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
    let out = decoder_layer(&x, &kc, &vc, &weights(&l), params(0))
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
        |w: &DecoderLayerWeights, p: CachedAttentionParams, kc: &Array, what: &str| {
            match decoder_layer(&x, kc, &vc, w, p) {
                Err(Error::Mlx { message, .. }) => {
                    assert!(message.contains("decoder_layer"), "{what}: {message}")
                }
                other => panic!("{what}: expected an error, got {other:?}"),
            }
        };
    let short = vector(HIDDEN - 1, 11, 0.5, 1.5);
    let mut w = weights(&l);
    w.input_norm = (&short, EPS);
    expect_shape_error(&w, params(0), &kc, "norm of the wrong length");
    let mut p = params(0);
    p.heads = 2; // the qkv projection has rows for 4 query heads
    expect_shape_error(&weights(&l), p, &kc, "head count");
    expect_shape_error(
        &weights(&l),
        params(4),
        &kc,
        "offset at the cache's capacity",
    );
    let odd = quantized(2 * INTER - 32, HIDDEN, 12);
    let mut w = weights(&l);
    w.gate_up = proj(&odd);
    expect_shape_error(&w, params(0), &kc, "gate/up rows");
    let small = cache(2);
    expect_shape_error(&weights(&l), params(0), &small, "mismatched caches");
    // The process goes on: a good call still works.
    assert!(decoder_layer(&x, &kc, &vc, &weights(&l), params(0))
        .unwrap()
        .is_some());
}

#[test]
fn ineligible_calls_are_declined() {
    let _g = lock();
    let l = layer();
    let x = Array::from_slice(&rand_vec(HIDDEN, 13), &[1, 1, HIDDEN as i32]).unwrap();
    let (kc, vc) = (cache(4), cache(4));
    let declined = |x: &Array, w: &DecoderLayerWeights| {
        decoder_layer(x, &kc, &vc, w, params(0)).unwrap().is_none()
    };
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

#[test]
fn stack_equals_its_layers_applied_in_turn() {
    // Three different layers over a prefill of 3 tokens and two decode steps: the stack's
    // output and every cache equal decoder_layer's, layer after layer, bit for bit (the same
    // kernels in the same order).
    let _g = lock();
    let layers: Vec<Layer> = (1..=3).map(layer_seeded).collect();
    let mut one: Vec<(Array, Array)> = (0..3).map(|_| (cache(8), cache(8))).collect();
    let mut all: Vec<(Array, Array)> = (0..3).map(|_| (cache(8), cache(8))).collect();
    let mut offset = 0;
    for (step, len) in [3usize, 1, 1].into_iter().enumerate() {
        let xv = rand_vec(len * HIDDEN, 20 + step as u64);
        let x = Array::from_slice(&xv, &[1, len as i32, HIDDEN as i32]).unwrap();
        let mut h = x.clone();
        for (l, (kc, vc)) in layers.iter().zip(one.iter_mut()) {
            let out = decoder_layer(&h, kc, vc, &weights(l), params(offset))
                .unwrap()
                .expect("native layer");
            (h, *kc, *vc) = (out.hidden, out.k_cache, out.v_cache);
        }
        let stack: Vec<_> = all
            .iter()
            .zip(&layers)
            .map(|((k, v), l)| (k, v, weights(l)))
            .collect();
        let out = decoder_stack(StackInput::Hidden(&x), &stack, None, params(offset))
            .unwrap()
            .expect("native stack");
        assert_eq!(f32s(&out.output), f32s(&h), "step {step}: hidden");
        for (i, ((k, v), (k1, v1))) in out.caches.into_iter().zip(&one).enumerate() {
            assert_eq!(f32s(&k), f32s(k1), "step {step}: layer {i} keys");
            assert_eq!(f32s(&v), f32s(v1), "step {step}: layer {i} values");
            all[i] = (k, v);
        }
        offset += len as i32;
    }
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
    let mixed = [(&k, &v, weights(&layers[0])), (&k, &v, weights(&odd))];
    assert!(
        decoder_stack(StackInput::Hidden(&x), &mixed, None, params(0))
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        decoder_stack(StackInput::Hidden(&x), &[], None, params(0)),
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
        h = decoder_layer(&h, kc, vc, &weights(l), params(0))
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
        };
        let head_part = StackHead {
            norm: (&head_norm, EPS),
            projection: proj(&head),
        };
        decoder_stack(input, &stack, Some(head_part), params(0))
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
