//! The one-primitive decoder layer (`mlx_rs::native::decoder_layer`, taken by
//! `DecoderLayer::forward` when the projections are quantized) against the same layer composed
//! from the per-op primitives (`DecoderLayer::forward_composed`), which the golden tests check
//! against transformers. Both run the same kernels in the same order, so outputs and caches
//! must agree bit for bit: Llama, Qwen2 (q/k/v bias) and Qwen3 (q/k norms), grouped-query
//! heads, two sequences, a prefill chunk then decode steps, and an input that is a view.
use mlx_models::config::{ModelConfig, QuantizationConfig};
use mlx_models::families::{build_decoder, BuildOptions};
use mlx_models::nn::Decoder;
use mlx_models::runtime::cache::LayerCache;
use mlx_models::weights::Weights;
use mlx_rs::quant::BlockFormat;
use mlx_rs::{quant, random, sys, Array, Dtype};
use std::sync::Mutex;

/// The native quantized-matmul counter is process-wide: tests take turns.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    quant::set_native_qmm(true);
    mlx_rs::native::set_native_ops(true);
    g
}

/// Quantized-matmul primitives built so far (the composed path builds four per layer; the
/// layer primitive none).
fn qmm_count() -> u64 {
    // SAFETY: no arguments.
    unsafe { sys::native_qmm::mlxrs_qmm_native_count() }
}

/// The sizes of a tiny model.
#[derive(Debug, Clone, Copy)]
struct Dims {
    hidden: i32,
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    inter: i32,
}

/// Every projection 4-bit affine (group 32).
const SMALL: Dims = Dims {
    hidden: 64,
    heads: 4,
    kv_heads: 2,
    head_dim: 16,
    inter: 96,
};

/// Every projection input a multiple of 256: GGUF K-quant blocks as stored.
const BLOCK_SIZED: Dims = Dims {
    hidden: 256,
    heads: 4,
    kv_heads: 2,
    head_dim: 64,
    inter: 256,
};

/// How the projections are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// MLX affine, 4 bits, group 32, f16 scales (as GGUF Q4_1 loads).
    Affine,
    /// GGUF blocks as a Q4_K_M file keeps them: q, k, o, gate, up in `Q4_K`, v and down in
    /// `Q6_K` (so the fused q/k/v projection is two runs).
    Blocks,
    /// As a Q5_K_M file keeps them: `Q5_K` where Q4_K_M has `Q4_K`.
    BlocksQ5,
    /// The formats of 32 values, all five: q and k `Q4_0`, v and down `Q8_0`, o `Q4_1`, gate
    /// `Q5_0`, up `Q5_1` (so q/k/v and gate/up are two runs each); any multiple of 32 fits.
    BlocksSmall,
    /// As a Q3_K_M / Q2_K file keeps them: q, k, gate, up `Q3_K`, o `Q2_K`, v and down `Q6_K`.
    BlocksLow,
}

const HIDDEN: i32 = SMALL.hidden;

fn uniform(shape: &[i32], low: f32, high: f32, seed: u64) -> Array {
    let key = random::key(seed).unwrap();
    random::uniform(low, high, shape, Dtype::Float32, Some(&key)).unwrap()
}

/// One layer of `model_type` with every projection quantized (4-bit, group 32, f16 scales,
/// as GGUF Q4_1 loads) and dense norms and embeddings.
fn tiny_model(model_type: &str) -> Decoder {
    tiny_model_with(model_type, 1, false)
}

fn tiny_model_with(model_type: &str, layers: usize, quantized_embedding: bool) -> Decoder {
    tiny_model_stored(
        model_type,
        layers,
        quantized_embedding,
        SMALL,
        Storage::Affine,
    )
}

/// `rows` rows of random GGUF blocks (`Q4_K`: 144 bytes per 256 weights, factors d and dmin;
/// `Q5_K`: 176, the same factors; `Q6_K`: 210, factor d; the formats of 32 values: factor d and
/// `Q4_1` / `Q5_1`'s offset m) with factors that keep the weights within about ±0.3, as
/// `[rows, blocks, block bytes]` as the loader keeps them.
fn random_blocks(format: BlockFormat, rows: i32, cols: i32, seed: u64) -> Array {
    let bb = format.block_bytes() as i32;
    let per_row = cols / format.values_per_block() as i32;
    let n = (rows * per_row * bb) as usize;
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes: Vec<u8> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    for block in bytes.chunks_exact_mut(bb as usize) {
        match format {
            BlockFormat::Q6K => block[208..210].copy_from_slice(&f16(7e-5)),
            // Q5_K's codes reach 31, twice Q4_K's: half the factors.
            BlockFormat::Q4K | BlockFormat::Q5K => {
                let f = if format == BlockFormat::Q5K { 0.5 } else { 1.0 };
                block[0..2].copy_from_slice(&f16(4e-4 * f));
                block[2..4].copy_from_slice(&f16(2e-4 * f));
            }
            // Q3_K: scales up to ±32 times codes up to ±4; Q2_K: 15 × 3 and mins up to 15.
            BlockFormat::Q3K => block[108..110].copy_from_slice(&f16(2e-3)),
            BlockFormat::Q2K => {
                block[80..82].copy_from_slice(&f16(6e-3));
                block[82..84].copy_from_slice(&f16(6e-3));
            }
            BlockFormat::Q4_0 => block[0..2].copy_from_slice(&f16(0.03)),
            BlockFormat::Q5_0 => block[0..2].copy_from_slice(&f16(0.015)),
            BlockFormat::Q8_0 => block[0..2].copy_from_slice(&f16(0.002)),
            BlockFormat::Q4_1 | BlockFormat::Q5_1 => {
                let d = if format == BlockFormat::Q5_1 {
                    0.015
                } else {
                    0.03
                };
                block[0..2].copy_from_slice(&f16(d));
                block[2..4].copy_from_slice(&f16(-0.2));
            }
        }
    }
    Array::from_bytes(&bytes, &[rows, per_row, bb], Dtype::Uint8).unwrap()
}

/// `layers` decoder layers of sizes `d`, projections stored as `storage` says; with
/// `quantized_embedding` the (tied) embedding is stored 8-bit in groups of 32 with f16 scales,
/// as a GGUF Q8_0 table converts.
fn tiny_model_stored(
    model_type: &str,
    layers: usize,
    quantized_embedding: bool,
    d: Dims,
    storage: Storage,
) -> Decoder {
    let Dims {
        hidden,
        heads,
        kv_heads,
        head_dim,
        inter,
    } = d;
    // Gemma 3: a window of 3 keys on layers 0 and 2, layer 1 global with its own RoPE base;
    // Mistral: a window of 4 on every layer. Both windows are shorter than the prefill chunk.
    let extra = match model_type {
        "gemma3_text" => {
            r#","sliding_window":3,"sliding_window_pattern":2,"rope_local_base_freq":100.0,
                "query_pre_attn_scalar":12"#
        }
        "mistral" => r#","sliding_window":4"#,
        _ => "",
    };
    let config = ModelConfig::from_json(&format!(
        r#"{{"model_type":"{model_type}","hidden_size":{hidden},"num_hidden_layers":{layers},
            "intermediate_size":{inter},"num_attention_heads":{heads},
            "num_key_value_heads":{kv_heads},"head_dim":{head_dim},"vocab_size":16,
            "rms_norm_eps":1e-5,"tie_word_embeddings":true,"rope_theta":10000.0{extra}}}"#
    ))
    .unwrap();
    let norms: &[&str] = if model_type == "gemma3_text" {
        &[
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ]
    } else {
        &["input_layernorm", "post_attention_layernorm"]
    };
    let mut w = Weights::default();
    let mut seed = 1u64;
    let mut next = || {
        seed += 1;
        seed
    };
    let table = uniform(&[16, hidden], -1.0, 1.0, next());
    // GGUF files keep their token embedding in blocks too (Q8_0 beside the formats of 32
    // values, Q4_K or Q6_K in K-quant files): looked up from the blocks, the tied head
    // multiplies them.
    let table_blocks = match storage {
        Storage::Blocks => Some(BlockFormat::Q4K),
        Storage::BlocksSmall => Some(BlockFormat::Q8_0),
        Storage::BlocksLow => Some(BlockFormat::Q6K),
        Storage::Affine | Storage::BlocksQ5 => None,
    };
    if let (true, Some(format)) = (quantized_embedding, table_blocks) {
        w.insert(
            "model.embed_tokens.blocks",
            random_blocks(format, 16, hidden, next()),
        );
    } else if quantized_embedding {
        let (wq, s, b) = quant::quantize(&table.astype(Dtype::Float16).unwrap(), 32, 8).unwrap();
        w.insert("model.embed_tokens.weight", wq);
        w.insert("model.embed_tokens.scales", s);
        w.insert("model.embed_tokens.biases", b);
    } else {
        w.insert("model.embed_tokens.weight", table);
    }
    w.insert("model.norm.weight", uniform(&[hidden], 0.5, 1.5, next()));
    for layer in 0..layers {
        let p = format!("model.layers.{layer}");
        let p = p.as_str();
        for n in norms {
            w.insert(
                format!("{p}.{n}.weight"),
                uniform(&[hidden], 0.5, 1.5, next()),
            );
        }
        let q_width = heads * head_dim;
        let kv_width = kv_heads * head_dim;
        let projections = [
            ("self_attn.q_proj", q_width, hidden),
            ("self_attn.k_proj", kv_width, hidden),
            ("self_attn.v_proj", kv_width, hidden),
            ("self_attn.o_proj", hidden, q_width),
            ("mlp.gate_proj", inter, hidden),
            ("mlp.up_proj", inter, hidden),
            ("mlp.down_proj", hidden, inter),
        ];
        for (name, out, inp) in projections {
            if storage != Storage::Affine {
                let kq = if storage == Storage::BlocksQ5 {
                    BlockFormat::Q5K
                } else {
                    BlockFormat::Q4K
                };
                let format = match (storage, name.rsplit('.').next().unwrap_or(name)) {
                    (Storage::BlocksSmall, "q_proj" | "k_proj") => BlockFormat::Q4_0,
                    (Storage::BlocksSmall, "v_proj" | "down_proj") => BlockFormat::Q8_0,
                    (Storage::BlocksSmall, "o_proj") => BlockFormat::Q4_1,
                    (Storage::BlocksSmall, "gate_proj") => BlockFormat::Q5_0,
                    (Storage::BlocksSmall, _) => BlockFormat::Q5_1,
                    (Storage::BlocksLow, "o_proj") => BlockFormat::Q2K,
                    (Storage::BlocksLow, "v_proj" | "down_proj") => BlockFormat::Q6K,
                    (Storage::BlocksLow, _) => BlockFormat::Q3K,
                    (_, "v_proj" | "down_proj") => BlockFormat::Q6K,
                    _ => kq,
                };
                w.insert(
                    format!("{p}.{name}.blocks"),
                    random_blocks(format, out, inp, next()),
                );
                continue;
            }
            let dense = uniform(&[out, inp], -0.3, 0.3, next())
                .astype(Dtype::Float16)
                .unwrap();
            let (wq, s, b) = quant::quantize(&dense, 32, 4).unwrap();
            w.insert(format!("{p}.{name}.weight"), wq);
            w.insert(format!("{p}.{name}.scales"), s);
            w.insert(format!("{p}.{name}.biases"), b);
        }
        if model_type == "qwen2" {
            for (name, out) in [
                ("q_proj", q_width),
                ("k_proj", kv_width),
                ("v_proj", kv_width),
            ] {
                w.insert(
                    format!("{p}.self_attn.{name}.bias"),
                    uniform(&[out], -0.5, 0.5, next()),
                );
            }
        }
        if model_type == "qwen3" || model_type == "gemma3_text" {
            for name in ["q_norm", "k_norm"] {
                w.insert(
                    format!("{p}.self_attn.{name}.weight"),
                    uniform(&[head_dim], 0.5, 1.5, next()),
                );
            }
        }
    }
    let options = BuildOptions {
        huge_pages: false,
        dtype: Dtype::Float32,
        quantization: Some(
            QuantizationConfig::from_value(&serde_json::json!({
                "group_size": 32,
                "bits": 4,
                "model.embed_tokens": {"group_size": 32, "bits": 8}
            }))
            .unwrap(),
        ),
    };
    build_decoder(&config, w, &options).unwrap()
}

fn values(a: &Array) -> Vec<f32> {
    a.to_vec::<f32>().unwrap()
}

/// Runs the layer natively and composed over a prefill of 5 tokens for 2 sequences and then
/// 3 decode steps, comparing the outputs and the caches' written positions exactly.
fn check_layer_matches_composed(model_type: &str) {
    check_layer_matches_composed_stored(model_type, SMALL, Storage::Affine);
}

fn check_layer_matches_composed_stored(model_type: &str, d: Dims, storage: Storage) {
    let hidden = d.hidden;
    let _g = lock();
    let model = tiny_model_stored(model_type, 1, false, d, storage);
    let layer = &model.layers()[0];
    let window = layer.spec().attention.window;
    let (mut native, mut composed) = (LayerCache::new(window), LayerCache::new(window));
    let mut seed = 100;
    for len in [5, 1, 1, 1, 6, 1] {
        seed += 1;
        let x = uniform(&[2, len, hidden], -2.0, 2.0, seed);
        let count = qmm_count();
        let a = layer.forward(&x, &mut native).unwrap();
        assert_eq!(
            qmm_count(),
            count,
            "{model_type}: the layer primitive was not used"
        );
        let b = layer.forward_composed(&x, &mut composed).unwrap();
        assert_eq!(qmm_count(), count + 4, "{model_type}: the composed path");
        assert_eq!(a.shape(), vec![2, len, hidden]);
        assert_eq!(
            values(&a),
            values(&b),
            "{model_type}: output, chunk of {len}"
        );
        assert_eq!(native.offset(), composed.offset());
    }
    // The caches: 15 positions written by each path (the composed one through the attention
    // primitive, with the same in-place layout; a windowed layer's ring has wrapped).
    let probe = uniform(&[2, 1, hidden], -1.0, 1.0, 999);
    let a = layer.forward(&probe, &mut native).unwrap();
    let b = layer.forward_composed(&probe, &mut composed).unwrap();
    assert_eq!(values(&a), values(&b), "{model_type}: after 8 positions");
}

#[test]
fn llama_layer_is_the_composed_layer() {
    check_layer_matches_composed("llama");
}

#[test]
fn qwen2_layer_with_qkv_bias_is_the_composed_layer() {
    check_layer_matches_composed("qwen2");
}

#[test]
fn qwen3_layer_with_qk_norms_is_the_composed_layer() {
    check_layer_matches_composed("qwen3");
}

#[test]
fn a_strided_input_is_read_as_its_values() {
    let _g = lock();
    let model = tiny_model("llama");
    let layer = &model.layers()[0];
    // [HIDDEN, 3] transposed: a non-contiguous [1, 3, HIDDEN] view.
    let base = uniform(&[1, HIDDEN, 3], -2.0, 2.0, 7);
    let view = base.transpose(&[0, 2, 1]).unwrap();
    let copy = Array::from_slice(&values(&view.flatten(0, -1).unwrap()), &[1, 3, HIDDEN]).unwrap();
    let (mut c1, mut c2) = (LayerCache::default(), LayerCache::default());
    let a = layer.forward(&view, &mut c1).unwrap();
    let b = layer.forward(&copy, &mut c2).unwrap();
    assert_eq!(values(&a), values(&b));
}

/// The whole model through one primitive per step (`CausalLm::forward` on a quantized model:
/// embedding lookup, every layer and, at decode, the final norm and tied 8-bit head in
/// `decoder_stack`) against
/// the parts run one by one (MLX's embedding lookup, `forward_composed` per layer, the fused
/// head matmul): the same logits bit for bit over a prefill chunk and decode steps, for two
/// sequences.
fn check_model_step_matches_parts(model_type: &str) {
    check_model_step_matches_parts_stored(model_type, SMALL, Storage::Affine);
}

fn check_model_step_matches_parts_stored(model_type: &str, d: Dims, storage: Storage) {
    check_model_step_matches_parts_kv(model_type, d, storage, None);
}

/// A layer's cache as the model makes it: with `kv`, storing that dtype.
fn part_cache(window: Option<i32>, kv: Option<Dtype>) -> LayerCache {
    let c = LayerCache::new(window);
    match kv {
        Some(d) => c.with_storage(d),
        None => c,
    }
}

fn check_model_step_matches_parts_kv(
    model_type: &str,
    d: Dims,
    storage: Storage,
    kv: Option<Dtype>,
) {
    use mlx_models::model::CausalLm;
    let _g = lock();
    let mut model = tiny_model_stored(model_type, 3, true, d, storage);
    model.set_kv_cache_dtype(kv).unwrap();
    assert!(model.embed_tokens().quantized_table().is_some());
    let mut cache = model.new_cache();
    let windows: Vec<_> = model
        .spec()
        .layers
        .iter()
        .map(|l| l.attention.window)
        .collect();
    let mut parts: Vec<LayerCache> = windows.iter().map(|w| part_cache(*w, kv)).collect();
    let steps: [&[i32]; 6] = [
        &[1, 5, 9, 2, 15, 0, 3, 3, 7, 11],
        &[4, 8],
        &[15, 0],
        &[6, 6],
        &[2, 3, 4, 5, 6, 7, 8, 9],
        &[10, 12],
    ];
    for ids in steps {
        let len = ids.len() as i32 / 2;
        let tokens = Array::from_slice(ids, &[2, len]).unwrap();
        let count = qmm_count();
        let a = model.forward(&tokens, &mut cache).unwrap();
        // One primitive for the step; a prefill chunk's head is a fused matmul of its own.
        let head_apart = u64::from(len > 1);
        assert_eq!(
            qmm_count(),
            count + head_apart,
            "{model_type}: the step primitive was not used"
        );
        let mut x = model.embed(&tokens).unwrap();
        for (layer, c) in model.layers().iter().zip(parts.iter_mut()) {
            x = layer.forward_composed(&x, c).unwrap();
        }
        let b = model.head(&x).unwrap();
        assert_eq!(a.shape(), vec![2, len, 16]);
        assert_eq!(
            values(&a),
            values(&b),
            "{model_type}: logits, step of {len}"
        );
        assert_eq!(cache.offset(), parts[0].offset());
    }
    if let Some(kv) = kv {
        let buffers = cache.layer_mut(0).unwrap().buffers().unwrap();
        assert_eq!((buffers.0.dtype(), buffers.1.dtype()), (kv, kv));
    }
}

/// A batched decode step of independent sequences (`CausalLm::forward_batch`: one
/// `decoder_stack_seqs` primitive, each sequence at its own position with its own caches)
/// against each sequence's parts run alone: the same logits bit for bit, over several steps,
/// with prompts of different lengths (past the windows of the windowed families).
fn check_batch_step_matches_parts(model_type: &str, seqs: usize) {
    check_batch_step_matches_parts_kv(model_type, seqs, None);
}

fn check_batch_step_matches_parts_kv(model_type: &str, seqs: usize, kv: Option<Dtype>) {
    use mlx_models::model::CausalLm;
    let _g = lock();
    let mut model = tiny_model_with(model_type, 3, true);
    model.set_kv_cache_dtype(kv).unwrap();
    let windows: Vec<_> = model
        .spec()
        .layers
        .iter()
        .map(|l| l.attention.window)
        .collect();
    // Prompts of 1 to 7 tokens.
    let prompts: Vec<Vec<i32>> = (0..seqs)
        .map(|i| {
            (0..1 + (i * 5 + 6) % 7)
                .map(|j| ((i * 7 + j * 3) % 16) as i32)
                .collect()
        })
        .collect();
    let mut caches = Vec::new();
    let mut parts = Vec::new();
    for p in &prompts {
        let mut cache = model.new_cache();
        let tokens = Array::from_slice(p, &[1, p.len() as i32]).unwrap();
        model.forward(&tokens, &mut cache).unwrap();
        caches.push(cache);
        let mut layers: Vec<LayerCache> = windows.iter().map(|w| part_cache(*w, kv)).collect();
        let mut x = model.embed(&tokens).unwrap();
        for (layer, c) in model.layers().iter().zip(layers.iter_mut()) {
            x = layer.forward_composed(&x, c).unwrap();
        }
        parts.push(layers);
    }
    for round in 0..4u32 {
        let step: Vec<u32> = (0..seqs as u32).map(|b| (b * 5 + round * 3) % 16).collect();
        let count = qmm_count();
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let a = model.forward_batch(&step, &mut refs).unwrap();
        assert_eq!(
            qmm_count(),
            count,
            "{model_type}: the batch primitive was not used"
        );
        assert_eq!(a.shape(), vec![seqs as i32, 1, 16]);
        for (b, layers) in parts.iter_mut().enumerate() {
            let tokens = Array::from_slice(&[step[b] as i32], &[1, 1]).unwrap();
            let mut x = model.embed(&tokens).unwrap();
            for (layer, c) in model.layers().iter().zip(layers.iter_mut()) {
                x = layer.forward_composed(&x, c).unwrap();
            }
            let want = values(&model.head(&x).unwrap());
            let got = values(&a.slice(mlx_rs::s![b as i32..b as i32 + 1]).unwrap());
            assert_eq!(got, want, "{model_type}: sequence {b}, step {step:?}");
            assert_eq!(caches[b].offset(), layers[0].offset());
        }
    }
}

#[test]
fn llama_batch_step_is_each_sequence_alone() {
    check_batch_step_matches_parts("llama", 3);
}

#[test]
fn qwen3_batch_step_is_each_sequence_alone() {
    check_batch_step_matches_parts("qwen3", 3);
}

#[test]
fn gemma3_batch_step_with_windows_is_each_sequence_alone() {
    check_batch_step_matches_parts("gemma3_text", 3);
}

/// 12 sequences: 24 cache outputs per layer, so the 3 layers go in two primitives (at most 64
/// cache outputs each).
#[test]
fn a_wide_batch_step_runs_its_layers_in_several_primitives() {
    check_batch_step_matches_parts("gemma3_text", 12);
}

#[test]
fn llama_model_step_is_its_parts() {
    check_model_step_matches_parts("llama");
}

#[test]
fn qwen2_model_step_is_its_parts() {
    check_model_step_matches_parts("qwen2");
}

#[test]
fn qwen3_model_step_is_its_parts() {
    check_model_step_matches_parts("qwen3");
}

#[test]
fn gemma3_layer_with_window_out_norms_and_gelu_is_the_composed_layer() {
    check_layer_matches_composed("gemma3_text");
}

#[test]
fn mistral_windowed_layer_is_the_composed_layer() {
    check_layer_matches_composed("mistral");
}

#[test]
fn gemma3_model_step_is_its_parts() {
    check_model_step_matches_parts("gemma3_text");
}

#[test]
fn mistral_model_step_is_its_parts() {
    check_model_step_matches_parts("mistral");
}

/// GGUF K-quant blocks as stored (q/k/v two runs: Q4_K then Q6_K): the one-primitive layer and
/// the whole-step primitive take them and give the composed path's numbers bit for bit.
#[test]
fn qwen2_layer_of_gguf_blocks_is_the_composed_layer() {
    if mlx_rs::quant::block_formats_available() {
        check_layer_matches_composed_stored("qwen2", BLOCK_SIZED, Storage::Blocks);
    }
}

#[test]
fn gemma3_layer_of_gguf_blocks_is_the_composed_layer() {
    if mlx_rs::quant::block_formats_available() {
        check_layer_matches_composed_stored("gemma3_text", BLOCK_SIZED, Storage::Blocks);
    }
}

#[test]
fn llama_model_step_of_gguf_blocks_is_its_parts() {
    if mlx_rs::quant::block_formats_available() {
        check_model_step_matches_parts_stored("llama", BLOCK_SIZED, Storage::Blocks);
    }
}

/// As a Q5_K_M file stores them (q/k/v two runs: Q5_K then Q6_K).
#[test]
fn layer_and_model_step_of_q5_k_blocks_are_the_composed_path() {
    if mlx_rs::quant::block_formats_available() {
        check_layer_matches_composed_stored("qwen2", BLOCK_SIZED, Storage::BlocksQ5);
        check_model_step_matches_parts_stored("llama", BLOCK_SIZED, Storage::BlocksQ5);
    }
}

/// As a Q3_K_M file stores them (q/k/v two runs: Q3_K then Q6_K; o in Q2_K).
#[test]
fn layer_and_model_step_of_q3_k_and_q2_k_blocks_are_the_composed_path() {
    if mlx_rs::quant::block_formats_available() {
        check_layer_matches_composed_stored("qwen2", BLOCK_SIZED, Storage::BlocksLow);
        check_model_step_matches_parts_stored("llama", BLOCK_SIZED, Storage::BlocksLow);
    }
}

/// The formats of 32 values (all five, two runs in q/k/v and in gate/up) on sizes that are
/// no multiples of 256.
#[test]
fn layer_and_model_step_of_small_blocks_are_the_composed_path() {
    if mlx_rs::quant::block_formats_available() {
        check_layer_matches_composed_stored("qwen2", SMALL, Storage::BlocksSmall);
        check_layer_matches_composed_stored("gemma3_text", SMALL, Storage::BlocksSmall);
        check_model_step_matches_parts_stored("llama", SMALL, Storage::BlocksSmall);
    }
}

/// Float16 KV caches under a float32 model (`CausalLm::set_kv_cache_dtype`): the whole-step
/// primitive, the batched step and the per-layer parts (each through the attention primitive)
/// store and read the same half-precision caches, bit for bit, with and without windows.
#[test]
fn float16_kv_caches_in_the_model_step_are_its_parts() {
    for model_type in ["llama", "qwen3", "gemma3_text"] {
        check_model_step_matches_parts_kv(model_type, SMALL, Storage::Affine, Some(Dtype::Float16));
    }
    check_batch_step_matches_parts_kv("gemma3_text", 3, Some(Dtype::Float16));
    check_batch_step_matches_parts_kv("llama", 5, Some(Dtype::Float16));
}

/// Float16 caches through the native stack against MLX's own ops (native ops off: the cache
/// rounds each write with `astype` and hands the values back as float32 to MLX's attention):
/// the logits agree within 1e-4 of their scale over a prefill and decode steps. And the
/// rounding is real: the logits differ from the float32 cache's.
#[test]
fn float16_kv_caches_natively_match_mlx_ops() {
    use mlx_models::model::CausalLm;
    for model_type in ["llama", "gemma3_text"] {
        let _g = lock();
        let mut model = tiny_model_with(model_type, 3, true);
        let run = |model: &Decoder, native: bool| -> Vec<f32> {
            mlx_rs::native::set_native_ops(native);
            let mut cache = model.new_cache();
            let mut out = Vec::new();
            for ids in [&[1, 5, 9, 2, 15, 0, 3][..], &[4], &[8], &[15, 0, 6], &[6]] {
                let t = Array::from_slice(ids, &[1, ids.len() as i32]).unwrap();
                out.extend(values(&model.forward(&t, &mut cache).unwrap()));
            }
            mlx_rs::native::set_native_ops(true);
            out
        };
        let f32_cache = run(&model, true);
        assert!(model.set_kv_cache_dtype(Some(Dtype::Int32)).is_err());
        model.set_kv_cache_dtype(Some(Dtype::Float16)).unwrap();
        let (native, mlx) = (run(&model, true), run(&model, false));
        let scale = mlx.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        };
        assert!(
            diff(&native, &mlx) <= 1e-4 * scale,
            "{model_type}: {} vs scale {scale}",
            diff(&native, &mlx)
        );
        let moved = diff(&native, &f32_cache);
        eprintln!("{model_type}: float16 against float32 cache: max |logit change| {moved:.2e} (max |logit| {scale:.2})");
        assert!(
            moved > 0.0,
            "{model_type}: the float16 cache changed nothing"
        );
    }
}
