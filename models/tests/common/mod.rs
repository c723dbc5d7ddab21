//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// A file under `test-data/`, fetched and checked on first use (`mlx_test_data::file`). `None`
/// means "skip": only with `MLX_ZOO_TEST_DATA_FETCH=0` and the data absent (and never in CI).
pub fn test_data(relative: &str) -> Option<PathBuf> {
    mlx_test_data::file(relative)
}

/// A committed fixture under `models/tests/fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// Like [`test_data`] for opt-in data (`scripts/fetch_test_data.sh --large`, fetched on first
/// use). The tests using it are `#[ignore]`d, so they run only when asked for, and then
/// absence is a failure.
pub fn test_data_opt_in(relative: &str) -> Option<PathBuf> {
    Some(mlx_test_data::opt_in(relative))
}

/// Greedy completion of "The capital of France is" (BOS as the tokenizer adds it), up to 16
/// tokens; returns the text and the statistics.
pub fn complete_capital_of_france(
    engine: &mut mlx_models::runtime::engine::MlxEngine,
    stop: &[String],
) -> (String, mlx_models::model::GenerationStats, usize) {
    use mlx_models::model::{GenerateParams, LanguageModel};
    let prompt = engine
        .tokenizer()
        .encode("The capital of France is", true)
        .unwrap();
    let params = GenerateParams {
        max_tokens: 16,
        ..GenerateParams::default()
    };
    let mut text = String::new();
    let stats =
        mlx_models::runtime::generate::generate_text(engine, &prompt, &params, stop, &mut |t| {
            text.push_str(t)
        })
        .unwrap();
    (text, stats, prompt.len())
}

/// Perplexity of `tests/fixtures/ppl_text.txt` the llama.cpp way, checked against a reference
/// JSON written by scripts/reference_perplexity.py: same token count, same scored count, and
/// within 2%.
pub fn check_perplexity(engine: &mut mlx_models::runtime::engine::MlxEngine, reference: &str) {
    use mlx_models::model::LanguageModel;
    let reference = json(reference);
    let text = std::fs::read_to_string(fixture("ppl_text.txt")).unwrap();
    let tokens = engine.tokenizer().encode(&text, true).unwrap();
    assert_eq!(
        tokens.len() as u64,
        reference["text_tokens"].as_u64().unwrap()
    );
    let ctx = reference["ctx"].as_u64().unwrap() as usize;
    let (ppl, count) =
        mlx_models::runtime::perplexity::perplexity(engine, &text, ctx, None).unwrap();
    let expected = reference["perplexity"].as_f64().unwrap();
    assert_eq!(count as u64, reference["scored_tokens"].as_u64().unwrap());
    assert!(
        (ppl - expected).abs() / expected < 0.02,
        "perplexity {ppl} vs reference {expected}"
    );
}

/// A committed JSON fixture under `models/tests/fixtures/`.
pub fn json(relative: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(relative)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A JSON array of numbers as `f32`s.
pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// A JSON array of integers as `i32`s (shapes, token ids).
pub fn i32s(v: &serde_json::Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect()
}

/// A JSON array of token ids.
pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Copies the hostile fixture `file` (scripts/fixtures/hostile_files.py) into `dir`, keeping
/// its sub-folder, and extends it to the manifest's `extend_to` with a sparse hole.
pub fn stage_hostile(dir: &std::path::Path, file: &str) -> PathBuf {
    let dest = dir.join(file);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(fixture(&format!("hostile/{file}")), &dest).unwrap();
    let manifest = json("hostile/manifest.json");
    let entry = manifest
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == file)
        .unwrap_or_else(|| panic!("{file} is not in the manifest"));
    if let Some(len) = entry["extend_to"].as_u64() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&dest)
            .unwrap()
            .set_len(len)
            .unwrap();
    }
    dest
}

/// max |found − want| / max |want|.
pub fn relative_diff(found: &[f32], want: &[f32]) -> f32 {
    assert_eq!(found.len(), want.len());
    let diff = found
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    diff / want.iter().map(|b| b.abs()).fold(0.0, f32::max)
}

/// The index of the largest value (the first of equals).
pub fn argmax(row: &[f32]) -> i32 {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }) as i32
}
