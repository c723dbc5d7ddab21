//! `downstream-app <model> [prompt]`: greedy completion of a prompt with any model mlx-models
//! loads (a `.gguf` file, a Hugging Face folder or a Hub id).
use mlx_models::load::{load, LoadOptions};
use mlx_models::model::{GenerateParams, LanguageModel};
use mlx_models::runtime::{engine::MlxEngine, generate::generate_text};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().ok_or("usage: downstream-app <model> [prompt]")?;
    let prompt = args.next().unwrap_or_else(|| "The capital of France is".into());

    let options = LoadOptions::default();
    let mut engine = MlxEngine::from_loaded(load(&model, &options)?, &options)?;
    let ids = engine.tokenizer().encode(&prompt, true)?;
    let params = GenerateParams { max_tokens: 16, ..Default::default() }; // greedy by default
    let stats = generate_text(&mut engine, &ids, &params, &[], &mut |t| print!("{t}"))?;
    println!("\n{} tokens, {:.1} tok/s", stats.generation_tokens, stats.generation_tps);
    Ok(())
}
