//! Tensor and pipeline parallelism between real processes on loopback (MLX's ring backend):
//!
//! - tiny random checkpoints (Qwen3, Gemma 3, Llama with MLX-affine 4- and 8-bit weights,
//!   Gemma 4 with per-layer inputs) split over 2 and 4 ranks give transformers' logits and
//!   greedy tokens (`tests/fixtures/tiny`, scripts/fixtures/tiny_models.py), as one process does;
//! - SmolLM2-135M (GGUF) over 2 and 4 ranks: the single process's greedy tokens, perplexity
//!   within 1e-4 relative, and each rank's resident weights a share of the whole;
//! - a rank killed mid-generation ends the others with an error within 30 s (the default
//!   step bound, 20 s).
//!
//! The parent tests start this test binary once per rank, filtered to [`rank_worker`] with
//! `PARALLEL_ROLE` set (it does nothing otherwise); `mlx_test_data::ring` sets the ring's
//! environment.

mod common;

use mlx_models::config::ModelConfig;
use mlx_models::families::{self, BuildOptions};
use mlx_models::load::{load, LoadOptions};
use mlx_models::model::{GenerateParams, LanguageModel};
use mlx_models::parallel::{self, Mode, Parallel};
use mlx_models::runtime::engine::MlxEngine;
use mlx_models::weights::Weights;
use mlx_rs::distributed::Backend;
use mlx_rs::io::safetensors::load_safetensors;
use mlx_rs::{Array, Device, Dtype};
use mlx_test_data::ring::{self, RankOutput};
use std::time::Duration;

const SMOLLM2: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn mode(name: &str) -> Mode {
    match name {
        "tensor" => Mode::Tensor,
        "pipeline" => Mode::Pipeline,
        other => panic!("unknown mode {other}"),
    }
}

fn join(mode_name: &str) -> Parallel {
    parallel::join(mode(mode_name), Backend::Ring, Duration::from_secs(60))
        .expect("join the ring")
        .expect("more than one rank")
}

/// A tiny fixture split by `parallel` (or whole): its logits and greedy tokens against the
/// transformers reference.
fn check_tiny(name: &str, parallel: Option<&Parallel>) {
    let dir = common::fixture(&format!("tiny/{name}"));
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let (tensors, _) = load_safetensors(dir.join("model.safetensors")).unwrap();
    let reference = common::json(&format!("tiny/{name}/reference.json"));
    let prompt = common::i32s(&reference["prompt"]);
    let vocab = common::i32s(&reference["logits_shape"])[1] as usize;
    let want = common::f32s(&reference["logits"]);
    let options = BuildOptions {
        huge_pages: false,
        dtype: Dtype::Float32,
        quantization: config
            .quantization()
            .unwrap()
            .map(|q| families::rename_quantization(&config, q).unwrap()),
    };
    let weights = families::sanitize(&config, Weights::from_map(tensors)).unwrap();
    let model = families::build_parallel(&config, weights, &options, parallel).unwrap();
    let ids = |t: &[i32]| Array::from_slice(t, &[1, t.len() as i32]).unwrap();
    let mut cache = model.new_cache();
    let logits = model
        .forward(&ids(&prompt), &mut cache)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let d = common::relative_diff(&logits, &want);
    assert!(d < 1e-4, "{name}: relative difference {d}");
    let greedy = common::i32s(&reference["greedy"]);
    let mut next = common::argmax(&logits[logits.len() - vocab..]);
    let mut generated = vec![next];
    while generated.len() < greedy.len() {
        let calls = native_qmm_calls();
        let step = model.forward(&ids(&[next]), &mut cache).unwrap();
        let tensor_parallel = matches!(parallel, Some(Parallel::Tensor(_)));
        if name == "llama_q4" && tensor_parallel && mlx_rs::quant::native_qmm_enabled() {
            // Inside a shard every quantized projection still runs on the native kernel: the
            // fused q/k/v, o, gate/up and down of each layer, as per-op primitives (a
            // tensor-parallel layer is split at its all-reduces).
            let layers = config.num_hidden_layers as u64;
            let per_op = native_qmm_calls() - calls;
            assert!(
                per_op >= 4 * layers,
                "{per_op} native calls for {layers} layers"
            );
        }
        next = common::argmax(&step.to_vec::<f32>().unwrap());
        generated.push(next);
    }
    assert_eq!(generated, greedy, "{name}");
    println!("{name}: relative difference {d:.2e}, greedy ok");
}

/// Calls of the native quantized matmul kernel so far (per-op primitives; a fused layer or
/// stack primitive counts none).
fn native_qmm_calls() -> u64 {
    // SAFETY: no arguments.
    unsafe { mlx_rs::sys::native_qmm::mlxrs_qmm_native_count() }
}

fn smollm2_engine(parallel: Option<Parallel>) -> MlxEngine {
    let path = common::test_data(SMOLLM2).expect("SmolLM2 test data");
    let options = LoadOptions {
        device: Device::cpu(),
        parallel,
        ..LoadOptions::default()
    };
    let loaded = load(path.to_str().unwrap(), &options).expect("load SmolLM2");
    MlxEngine::from_loaded(loaded, &options).expect("engine")
}

/// Greedy tokens after "The capital of France is", and the perplexity of the fixture text
/// over two windows of 128 tokens.
fn smollm2_run(engine: &mut MlxEngine, tokens: usize) -> (Vec<u32>, f64) {
    let prompt = engine
        .tokenizer()
        .encode("The capital of France is", true)
        .unwrap();
    let params = GenerateParams {
        max_tokens: tokens,
        ..GenerateParams::default()
    };
    engine.set_eos_token_ids(Vec::new());
    let mut out = Vec::new();
    engine
        .generate(&prompt, &params, &mut |t| {
            out.push(t);
            Ok(true)
        })
        .unwrap();
    let text = std::fs::read_to_string(common::fixture("ppl_text.txt")).unwrap();
    let (ppl, _) =
        mlx_models::runtime::perplexity::perplexity(engine, &text, 128, Some(2)).unwrap();
    (out, ppl)
}

/// The logits of a few tokens under the tiny Llama HF folder (f32, untied head, 4 heads over
/// 2 key/value heads), loaded by `load` (the reading-time cut of a tensor-parallel rank).
fn hf_logits(parallel: Option<Parallel>) -> Vec<f32> {
    let dir = common::fixture("load/tiny_llama_hf");
    let options = LoadOptions {
        device: Device::cpu(),
        parallel,
        ..LoadOptions::default()
    };
    let loaded = load(dir.to_str().unwrap(), &options).unwrap();
    let mut cache = loaded.model.new_cache();
    let ids = Array::from_slice(&[1i32, 17, 42, 99, 200, 7], &[1, 6]).unwrap();
    loaded
        .model
        .forward(&ids, &mut cache)
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
}

/// One rank's body, by role.
#[test]
fn rank_worker() {
    let Ok(role) = std::env::var("PARALLEL_ROLE") else {
        return;
    };
    let mode_name = std::env::var("PARALLEL_MODE").unwrap();
    match role.as_str() {
        "tiny" => {
            let p = join(&mode_name);
            for name in std::env::var("PARALLEL_FIXTURES").unwrap().split(',') {
                check_tiny(name, Some(&p));
            }
            println!("rank {}: ok", p.rank());
        }
        "smollm2" => {
            let p = join(&mode_name);
            let rank = p.rank();
            mlx_rs::memory::reset_peak_memory().unwrap();
            let mut engine = smollm2_engine(Some(p));
            let weights = mlx_rs::memory::active_memory().unwrap();
            let peak = mlx_rs::memory::peak_memory().unwrap();
            let (tokens, ppl) = smollm2_run(&mut engine, 12);
            println!("WEIGHTS {weights}");
            println!("LOAD_PEAK {peak}");
            println!("TOKENS {tokens:?}");
            println!("PPL {ppl:.9}");
            println!("rank {rank}: ok");
        }
        "hf" => {
            let p = join(&mode_name);
            let rank = p.rank();
            println!("LOGITS {:?}", hf_logits(Some(p)));
            println!("rank {rank}: ok");
        }
        "killed" => {
            let p = join(&mode_name);
            let rank = p.rank();
            let mut engine = smollm2_engine(Some(p));
            let prompt = engine.tokenizer().encode("Once upon a time", true).unwrap();
            engine.set_eos_token_ids(Vec::new());
            let params = GenerateParams {
                max_tokens: 400,
                ..GenerateParams::default()
            };
            let mut count = 0;
            let result = engine.generate(&prompt, &params, &mut |_| {
                count += 1;
                if rank == 1 && count == 4 {
                    // Killed from outside, as a crash or an OOM kill would.
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &std::process::id().to_string()])
                        .status();
                    std::thread::sleep(Duration::from_secs(30));
                }
                Ok(true)
            });
            match result {
                Ok(stats) => println!("rank {rank}: finished {stats}"),
                Err(e) => println!("rank {rank}: error: {e}"),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn env(role: &str, mode: &str, fixtures: &str) -> [(&'static str, String); 3] {
    [
        ("PARALLEL_ROLE", role.to_string()),
        ("PARALLEL_MODE", mode.to_string()),
        ("PARALLEL_FIXTURES", fixtures.to_string()),
    ]
}

fn check_all(outputs: &[RankOutput]) {
    for r in outputs {
        r.assert_succeeded();
        assert!(
            r.stdout.contains(&format!("rank {}: ok", r.rank)),
            "{}",
            r.text()
        );
    }
}

#[test]
fn tiny_checkpoints_split_over_ranks_match_transformers() {
    // Every fixture alone first: the reference holds for the whole model here.
    for name in [
        "qwen3",
        "gemma3_text",
        "llama_q4",
        "gemma4_e2b",
        "gemma4_moe",
    ] {
        check_tiny(name, None);
    }
    let limit = Duration::from_secs(300);
    for (mode, ranks, fixtures) in [
        (
            "tensor",
            2,
            "qwen3,gemma3_text,llama_q4,gemma4_e2b,gemma4_moe",
        ),
        ("tensor", 4, "qwen3,gemma3_text"),
        ("pipeline", 2, "qwen3,gemma3_text,llama_q4"),
        ("pipeline", 3, "gemma3_text"),
    ] {
        let outputs = ring::run("rank_worker", ranks, &env("tiny", mode, fixtures), limit);
        check_all(&outputs);
    }
}

fn parse<T: std::str::FromStr>(r: &RankOutput, key: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let line = r
        .stdout
        .lines()
        // The test harness's own "test rank_worker ... " may start the first line.
        .find_map(|l| l.split_once(&format!("{key} ")).map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no {key} line: {}", r.text()));
    line.parse().unwrap()
}

/// The native kernels' exact mode (f32 activations) in this process while held, and the
/// environment that puts a rank's process in it.
struct Exact;
impl Exact {
    fn on() -> Exact {
        mlx_rs::quant::set_native_qmm_exact(true);
        Exact
    }
    fn env(&self) -> (&'static str, String) {
        ("MLX_RS_QMM_EXACT", "1".to_string())
    }
}
impl Drop for Exact {
    fn drop(&mut self) {
        mlx_rs::quant::set_native_qmm_exact(false);
    }
}

#[test]
fn smollm2_split_over_ranks_says_what_one_process_says() {
    mlx_rs::memory::reset_peak_memory().unwrap();
    let mut alone = smollm2_engine(None);
    let whole = mlx_rs::memory::active_memory().unwrap() as f64;
    let whole_peak = mlx_rs::memory::peak_memory().unwrap() as f64;
    // The default mode's prefill rounds activations to 8 bits (on AVX-512 VNNI CPUs): a value
    // that sits at a rounding boundary lands on either side of it depending on f32 summation
    // order, which the ranks' all-reduce changes, so that mode agrees with one process only
    // within the rounding's own effect. The split itself is checked in the exact mode (f32
    // activations), where the perplexity must agree to 1e-4; the default mode once, within
    // 2% (0.6% measured on these 126 tokens).
    let (default_tokens, default_ppl) = smollm2_run(&mut alone, 12);
    let exact = Exact::on();
    let (tokens, ppl) = smollm2_run(&mut alone, 12);
    drop(alone);
    let tokens = format!("{tokens:?}");
    let outputs = ring::run(
        "rank_worker",
        2,
        &env("smollm2", "tensor", ""),
        Duration::from_secs(600),
    );
    check_all(&outputs);
    for r in &outputs {
        assert_eq!(parse::<String>(r, "TOKENS"), format!("{default_tokens:?}"));
        let p: f64 = parse(r, "PPL");
        let rel = (p - default_ppl).abs() / default_ppl;
        assert!(
            rel < 0.02,
            "default mode, tensor × 2: perplexity {p} vs {default_ppl}"
        );
    }
    for (mode, ranks) in [
        ("tensor", 2),
        ("tensor", 4),
        ("pipeline", 2),
        ("pipeline", 4),
    ] {
        let outputs = ring::run(
            "rank_worker",
            ranks,
            &[&env("smollm2", mode, "")[..], &[exact.env()]].concat(),
            Duration::from_secs(600),
        );
        check_all(&outputs);
        for r in &outputs {
            let found: String = parse(r, "TOKENS");
            assert_eq!(found, tokens, "{mode} × {ranks}: {}", r.text());
            let p: f64 = parse(r, "PPL");
            let rel = (p - ppl).abs() / ppl;
            assert!(rel < 1e-4, "{mode} × {ranks}: perplexity {p} vs {ppl}");
            let share = parse::<f64>(r, "WEIGHTS") / whole;
            let peak = parse::<f64>(r, "LOAD_PEAK") / whole_peak;
            eprintln!(
                "{mode} × {ranks}, rank {}: weights {share:.3} of the whole, load peak {peak:.3}",
                r.rank
            );
            // A stage reads its own layers only, a tensor-parallel rank cuts each layer as
            // it is read: loading peaks near 1/N (plus SmolLM2's large embedding, which every
            // rank reads whole before keeping its vocabulary rows: 0.15 of the model).
            assert!(
                peak < 1.0 / ranks as f64 + 0.2,
                "{mode} × {ranks}: load peak {peak:.3}"
            );
            // About 1/N: a rank whose query heads cut a key/value group holds duplicated
            // key/value rows (SmolLM2's 9 heads in 3 groups), and layers split unevenly.
            assert!(
                share < 1.15 / ranks as f64,
                "{mode} × {ranks}: rank {} holds {share:.3} of the weights",
                r.rank
            );
        }
    }
}

/// A Hugging Face folder through `load` on 2 ranks, both modes: the logits one process gives.
#[test]
fn an_hf_folder_loaded_by_each_rank_gives_one_process_logits() {
    let want = hf_logits(None);
    for mode in ["tensor", "pipeline"] {
        let outputs = ring::run(
            "rank_worker",
            2,
            &env("hf", mode, ""),
            Duration::from_secs(120),
        );
        check_all(&outputs);
        for r in &outputs {
            let text: String = parse(r, "LOGITS");
            let found: Vec<f32> = text
                .trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(|v| v.parse().unwrap())
                .collect();
            let d = common::relative_diff(&found, &want);
            assert!(d < 1e-5, "{mode}, rank {}: relative difference {d}", r.rank);
        }
    }
}

#[test]
fn a_rank_killed_mid_generation_ends_the_others_with_an_error() {
    let outputs = ring::run(
        "rank_worker",
        2,
        &env("killed", "tensor", ""),
        Duration::from_secs(300),
    );
    let survivor = &outputs[0];
    assert!(survivor.ended, "rank 0 hung: {}", survivor.text());
    // Either the failed transfer came back as an error, or the watchdog ended the rank whose
    // transfer waits for ever inside MLX (see `mlx_models::parallel::StepGuard`).
    let returned = survivor.stdout.contains("rank 0: error");
    let watchdog = survivor.status.code() == Some(parallel::EXIT_STATUS)
        && survivor.stderr.contains("made no progress");
    assert!(returned || watchdog, "{}", survivor.text());
    assert!(!outputs[1].status.success(), "{}", outputs[1].text());
    let after = survivor.elapsed.saturating_sub(outputs[1].elapsed);
    assert!(
        after < Duration::from_secs(30),
        "rank 0 ended {after:?} after rank 1 died"
    );
    eprintln!("rank 0 ended {after:?} after rank 1 died");
}

fn tiny_spec_and_weights(name: &str) -> (mlx_models::nn::ModelSpec, Weights) {
    let dir = common::fixture(&format!("tiny/{name}"));
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let (tensors, _) = load_safetensors(dir.join("model.safetensors")).unwrap();
    let weights = families::sanitize(&config, Weights::from_map(tensors)).unwrap();
    (families::model_spec(&config).unwrap(), weights)
}

/// What a split cannot serve yet is a typed error naming the reason, before any work.
#[test]
fn splits_that_cannot_serve_a_model_say_why() {
    use mlx_models::Error;
    let config_error = |r: mlx_models::Result<_>, needle: &str| match r {
        Err(Error::Config(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a config error with {needle:?}, got {other:?}"),
    };
    // gemma4_moe_q4: the dense MLP's 32 inputs are one quantization group of 32.
    let (spec, mut w) = tiny_spec_and_weights("gemma4_moe_q4");
    config_error(
        parallel::tensor::shard(&spec, &mut w, 0, 2).map(|_| ()),
        "cannot be split across 2 ranks",
    );
    let (spec, mut w) = tiny_spec_and_weights("gemma4_e2b");
    config_error(
        parallel::pipeline::stage(&spec, &mut w, 0, 2).map(|_| ()),
        "per-layer embeddings",
    );
    // 4 query heads over 8 ranks.
    let (spec, mut w) = tiny_spec_and_weights("qwen3");
    config_error(
        parallel::tensor::shard(&spec, &mut w, 0, 8).map(|_| ()),
        "4 query heads",
    );
    // 2 layers over 3 stages.
    let (spec, mut w) = tiny_spec_and_weights("qwen3");
    config_error(
        parallel::pipeline::stage(&spec, &mut w, 0, 3).map(|_| ()),
        "2 layers",
    );
    // llama_q4 over 4 ranks: one 16-wide head per rank would cut o_proj's groups of 32.
    let (spec, mut w) = tiny_spec_and_weights("llama_q4");
    config_error(
        parallel::tensor::shard(&spec, &mut w, 0, 4).map(|_| ()),
        "would cut its groups of 32",
    );
}
