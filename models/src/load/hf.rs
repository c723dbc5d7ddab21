//! Hugging Face checkpoint folders: `config.json`, `generation_config.json` and the
//! `model*.safetensors` shards (plain or MLX-quantized).

use crate::config::{GenerationConfig, ModelConfig};
use crate::error::{Error, Result};
use crate::weights::Weights;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The weight files of a checkpoint folder: `model*.safetensors`, sorted by name.
///
/// `consolidated.safetensors` (Mistral's original-format copy of the same weights) does not
/// match the pattern and is never read.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and merges every `model*.safetensors` shard of `dir`.
///
/// Errors: [`Error::Io`] naming the folder when it holds no shard (or cannot be read);
/// [`Error::Config`] when a tensor name appears in two shards; [`Error::Mlx`] for a malformed
/// file.
///
/// ```
/// use mlx_models::load::hf::load_hf_weights;
/// let err = load_hf_weights(std::path::Path::new("/no/such/model")).unwrap_err();
/// assert!(err.to_string().contains("/no/such/model"));
/// ```
pub fn load_hf_weights(dir: &Path) -> Result<Weights> {
    let files = safetensors_files(dir)?;
    if files.is_empty() {
        return Err(Error::io(dir, "no model*.safetensors file in this folder"));
    }
    let mut tensors: HashMap<String, mlx_rs::Array> = HashMap::new();
    let mut origin: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        let (arrays, _metadata) = mlx_rs::io::safetensors::load_safetensors(&file)?;
        for (name, array) in arrays {
            if let Some(first) = origin.get(&name) {
                return Err(Error::Config(format!(
                    "tensor `{name}` is in two shards: {} and {}",
                    first.display(),
                    file.display()
                )));
            }
            origin.insert(name.clone(), file.clone());
            tensors.insert(name, array);
        }
    }
    Ok(Weights::from_map(tensors))
}

/// Reads `config.json` and, when present, `generation_config.json` of `dir`.
///
/// Errors: [`Error::Io`] when `config.json` is missing; [`Error::Config`] when either file is
/// malformed.
pub fn load_hf_config(dir: &Path) -> Result<(ModelConfig, Option<GenerationConfig>)> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let generation_path = dir.join("generation_config.json");
    let generation = if generation_path.is_file() {
        let text = std::fs::read_to_string(&generation_path)
            .map_err(|e| Error::io(&generation_path, e))?;
        Some(GenerationConfig::from_json(&text)?)
    } else {
        None
    };
    Ok((config, generation))
}

/// Removes what a Hugging Face checkpoint holds but no family uses: the precomputed
/// `*.rotary_emb.inv_freq` buffers, and `lm_head.weight` when the embeddings are tied (some
/// exporters write the shared matrix twice).
pub fn sanitize(config: &ModelConfig, weights: &mut Weights) {
    weights.drop_where(|name| name.ends_with(".rotary_emb.inv_freq"));
    if config.tie_word_embeddings() {
        weights.drop_where(|name| name.starts_with("lm_head."));
    }
}
