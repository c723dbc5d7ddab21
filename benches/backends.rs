//! Criterion comparison of the engines on the same GGUF files: this project's MLX engine
//! (`mlx`) and llama.cpp through the ggml baseline (`ggml`), prefill of 512 tokens
//! (`prefill_512`) and decode of 128 tokens after a one-token prompt (`decode_128`), per model
//! and device: the CPU with every core, and the GPU where both engines were built for one
//! (ids `prefill_512/<model>/<cpu|gpu>/<engine>`). Both engines get the same prompt ids (our tokenizer), greedy sampling
//! and the same prompt chunk (512).
//!
//! Models: SmolLM2-135M Q8_0 (its Q4_1 weights re-encoded, see `mlx_test_data::smollm2_q8_0`)
//! and Q4_1, and Gemma 3 270M Q4_K_M from the test data (fetched on first use), plus Qwen2.5-Coder-1.5B Q4_K_M (1.1 GB, larger than most L3 caches) when
//! `MLX_ZOO_BENCH_LARGE=1` (fetched then), and any file named by `MLX_ZOO_BENCH_MODEL`.
//! The throughput is in tokens, so criterion's report reads as tokens/s; the HTML report
//! with plots is written to `target/criterion/report/index.html`.
//!
//! ```text
//! cargo bench --features ggml-baseline --bench backends
//! MLX_ZOO_BENCH_LARGE=1 cargo bench --features ggml-baseline --bench backends -- qwen
//! ```
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use mlx_models::baseline::ggml::{GgmlEngine, GgmlOptions};
use mlx_models::load::{load, LoadOptions};
use mlx_models::model::{GenerateParams, LanguageModel};
use mlx_models::runtime::engine::MlxEngine;
use mlx_rs::Device;
use std::path::PathBuf;
use std::time::Duration;

const PREFILL: usize = 512;
const DECODE: usize = 128;

/// (short name, file) of every model to measure.
fn models() -> Vec<(String, PathBuf)> {
    let mut models = Vec::new();
    if let Some(path) = mlx_test_data::smollm2_q8_0() {
        models.push(("smollm2-135m-q8_0".to_string(), path));
    }
    for (name, file) in [
        (
            "smollm2-135m-q4_1",
            "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        ("gemma3-270m-q4_k_m", "gemma3/gemma-3-270m-q4_k_m.gguf"),
    ] {
        if let Some(path) = mlx_test_data::file(file) {
            models.push((name.to_string(), path));
        }
    }
    if std::env::var("MLX_ZOO_BENCH_LARGE").as_deref() == Ok("1") {
        models.push((
            "qwen25-coder-1.5b-q4_k_m".into(),
            mlx_test_data::opt_in("qwen25-coder/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
        ));
    }
    if let Some(path) = std::env::var_os("MLX_ZOO_BENCH_MODEL") {
        let path = PathBuf::from(path);
        let name = path.file_stem().map_or("model".into(), |s| {
            s.to_string_lossy().to_lowercase().replace(['.', ' '], "-")
        });
        models.push((name, path));
    }
    models
}

/// Both engines on `device`: the CPU with every core, or the GPU (MLX's GPU stream; every
/// layer offloaded by llama.cpp).
fn engines(path: &std::path::Path, device: Device) -> Vec<(&'static str, Box<dyn LanguageModel>)> {
    let options = LoadOptions {
        device,
        ..LoadOptions::default()
    };
    let loaded = load(&path.to_string_lossy(), &options).expect("MLX load");
    let mut mlx = MlxEngine::from_loaded(loaded, &options).expect("MLX engine");
    mlx.set_eos_token_ids(Vec::new());
    let gpu = device.device_type() == mlx_rs::DeviceType::Gpu;
    let ggml_options = GgmlOptions {
        gpu_layers: if gpu { u32::MAX } else { 0 },
        ..GgmlOptions::default()
    };
    let mut ggml = GgmlEngine::load(path, ggml_options).expect("llama.cpp load");
    ggml.set_eos_token_ids(Vec::new());
    vec![("mlx", Box::new(mlx)), ("ggml", Box::new(ggml))]
}

/// The devices both engines can use here: the CPU, and the GPU when MLX and llama.cpp were
/// both built for one (Metal; CUDA with the `cuda` feature).
fn devices() -> Vec<(&'static str, Device)> {
    let mut devices = vec![("cpu", Device::cpu())];
    if Device::gpu().is_available() && mlx_models::baseline::ggml::gpu_available().unwrap_or(false)
    {
        devices.push(("gpu", Device::gpu()));
    }
    devices
}

/// `n` ids of an English text, from our tokenizer (the same for both engines).
fn prompt(engine: &dyn LanguageModel, n: usize) -> Vec<u32> {
    let text = "The quick brown fox jumps over the lazy dog while the river runs past the old \
                mill, and the miller counts the sacks of flour before the market opens. "
        .repeat(n / 8 + 1);
    let ids = engine.tokenizer().encode(&text, true).expect("tokenize");
    assert!(ids.len() >= n, "the text gives {} tokens", ids.len());
    ids[..n].to_vec()
}

fn bench(c: &mut Criterion) {
    for ((model, path), (device_name, device)) in models()
        .into_iter()
        .flat_map(|m| devices().into_iter().map(move |d| (m.clone(), d)))
    {
        Device::set_default(device).expect("device");
        let name = format!("{model}/{device_name}");
        let mut engines = engines(&path, device);
        let long = prompt(engines[0].1.as_ref(), PREFILL);
        let one = &long[..1];

        let mut g = c.benchmark_group(format!("prefill_{PREFILL}/{name}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .throughput(Throughput::Elements(PREFILL as u64));
        let first_token = GenerateParams {
            max_tokens: 1,
            ..GenerateParams::default()
        };
        for (engine, model) in &mut engines {
            g.bench_function(BenchmarkId::from_parameter(*engine), |b| {
                b.iter(|| {
                    model
                        .generate(&long, &first_token, &mut |_| Ok(true))
                        .expect("prefill")
                })
            });
        }
        g.finish();

        let mut g = c.benchmark_group(format!("decode_{DECODE}/{name}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(8))
            .throughput(Throughput::Elements(DECODE as u64));
        let decode = GenerateParams {
            max_tokens: DECODE,
            ..GenerateParams::default()
        };
        for (engine, model) in &mut engines {
            g.bench_function(BenchmarkId::from_parameter(*engine), |b| {
                b.iter(|| {
                    model
                        .generate(one, &decode, &mut |_| Ok(true))
                        .expect("decode")
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);

fn main() {
    // OpenBLAS's kernels for this CPU, as the examples get them (MLX's prefill products);
    // the process may start again once.
    mlx_models::runtime::openblas::ensure_core_type();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
