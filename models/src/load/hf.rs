//! Hugging Face checkpoint folders: `config.json`, `generation_config.json` and the
//! `model*.safetensors` shards (plain or MLX-quantized).

use super::progress::{ProgressHook, ReadCounter};
use super::safetensors_file::SafetensorsFile;
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

/// Reads and merges every `model*.safetensors` shard of `dir` ([`open_hf_shards`] then
/// [`read_hf_weights`]).
///
/// Errors: [`Error::Io`] naming the folder when it holds no shard (or cannot be read);
/// [`Error::Config`] when a tensor name appears in two shards; [`Error::Safetensors`] for a
/// malformed file.
///
/// ```
/// use mlx_models::load::hf::load_hf_weights;
/// let err = load_hf_weights(std::path::Path::new("/no/such/model")).unwrap_err();
/// assert!(err.to_string().contains("/no/such/model"));
/// ```
pub fn load_hf_weights(dir: &Path) -> Result<Weights> {
    read_hf_weights(&open_hf_shards(dir)?)
}

/// Reads and validates the headers of every `model*.safetensors` shard of `dir` (no tensor
/// data), refusing a tensor name that appears in two shards.
///
/// Errors: as [`load_hf_weights`].
pub fn open_hf_shards(dir: &Path) -> Result<Vec<SafetensorsFile>> {
    let files = safetensors_files(dir)?;
    if files.is_empty() {
        return Err(Error::io(dir, "no model*.safetensors file in this folder"));
    }
    let mut origin: HashMap<String, PathBuf> = HashMap::new();
    let mut shards = Vec::with_capacity(files.len());
    for file in files {
        let shard = SafetensorsFile::open(&file)?;
        for t in &shard.tensors {
            if let Some(first) = origin.get(&t.name) {
                return Err(Error::Config(format!(
                    "tensor `{}` is in two shards: {} and {}",
                    t.name,
                    first.display(),
                    file.display()
                )));
            }
            origin.insert(t.name.clone(), file.clone());
        }
        shards.push(shard);
    }
    Ok(shards)
}

/// Reads every tensor of `shards` (opened with [`open_hf_shards`]).
///
/// Errors: [`Error::Io`] when a file shrank since its header was read.
pub fn read_hf_weights(shards: &[SafetensorsFile]) -> Result<Weights> {
    read_hf_weights_with_progress(shards, None)
}

/// [`read_hf_weights`], reporting [`ProgressEvent::ReadStart`], one
/// [`ProgressEvent::ReadProgress`] per tensor and [`ProgressEvent::ReadDone`] to `progress`
/// (counting every tensor of every shard, and its stored bytes).
///
/// Errors: as [`read_hf_weights`].
///
/// ```
/// use mlx_models::load::{hf, ProgressEvent, ProgressHook};
/// use std::sync::{Arc, Mutex};
/// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/load/hf_sharded");
/// let last = Arc::new(Mutex::new(None));
/// let sink = Arc::clone(&last);
/// let hook = ProgressHook::new(move |e: &ProgressEvent| *sink.lock().unwrap() = Some(e.clone()));
/// let shards = hf::open_hf_shards(&dir)?;
/// let weights = hf::read_hf_weights_with_progress(&shards, Some(&hook))?;
/// assert!(matches!(
///     *last.lock().unwrap(),
///     Some(ProgressEvent::ReadDone { total_tensors, .. }) if total_tensors == weights.len() as u64
/// ));
/// # Ok::<(), mlx_models::Error>(())
/// ```
///
/// [`ProgressEvent::ReadStart`]: super::ProgressEvent::ReadStart
/// [`ProgressEvent::ReadProgress`]: super::ProgressEvent::ReadProgress
/// [`ProgressEvent::ReadDone`]: super::ProgressEvent::ReadDone
pub fn read_hf_weights_with_progress(
    shards: &[SafetensorsFile],
    progress: Option<&ProgressHook>,
) -> Result<Weights> {
    let mut tensors: HashMap<String, mlx_rs::Array> = HashMap::new();
    read_hf_weights_into(shards, progress, &mut |name, array| {
        tensors.insert(name, array);
        Ok(())
    })?;
    Ok(Weights::from_map(tensors))
}

/// [`read_hf_weights_with_progress`] handing each tensor to `sink` as soon as it is read
/// (under its name in the checkpoint), so that a caller can keep a part of it and free the
/// rest before the next (a tensor-parallel rank, [`crate::parallel::ReadCut`]).
///
/// Errors: as [`read_hf_weights`], and `sink`'s.
pub fn read_hf_weights_into(
    shards: &[SafetensorsFile],
    progress: Option<&ProgressHook>,
    sink: &mut dyn FnMut(String, mlx_rs::Array) -> Result<()>,
) -> Result<()> {
    let all = || shards.iter().flat_map(|s| s.tensors.iter());
    let mut counter = ReadCounter::start(progress, all().map(|t| t.n_bytes));
    for shard in shards {
        for t in &shard.tensors {
            sink(t.name.clone(), shard.read_array(t)?)?;
            counter.tensor(t.n_bytes);
        }
    }
    counter.done();
    Ok(())
}

/// The tensors `shards` declare that the family will see (renamed by [`crate::families::rename`]), with dense
/// shapes: MLX quantized triplets described by their logical `[out, in]` (see
/// [`super::plan::logical_shapes`]).
///
/// Errors: as [`super::plan::logical_shapes`]; [`Error::Config`] for a bad `quantization`.
pub fn declared_tensors(
    config: &ModelConfig,
    shards: &[SafetensorsFile],
) -> Result<Vec<super::plan::DeclaredTensor>> {
    let quantization = config.quantization()?;
    let stored: std::collections::BTreeMap<String, Vec<i32>> = shards
        .iter()
        .flat_map(|s| s.tensors.iter())
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let logical = super::plan::logical_shapes(&stored, |module| {
        quantization
            .as_ref()
            .and_then(|q| q.for_module(module))
            .map(|p| (p.group_size, p.bits))
    })?;
    let mut declared = Vec::with_capacity(logical.len());
    for t in logical {
        if let Some(name) = crate::families::rename(config, &t.name)? {
            declared.push(super::plan::DeclaredTensor::dense(name, &t.shape));
        }
    }
    Ok(declared)
}

/// Bytes the tensors of `shards` take once loaded with `dtype` as the compute dtype
/// (floating tensors converted to it; packed integer tensors as stored, or dequantized to
/// `dtype` at 32 / bits times their size when not `keep_quantized`).
pub fn loaded_bytes(shards: &[SafetensorsFile], dtype: mlx_rs::Dtype, keep_quantized: bool) -> u64 {
    let size = dtype.size_in_bytes() as u64;
    let mut total = 0u64;
    let mut largest = 0u64;
    for t in shards.iter().flat_map(|s| s.tensors.iter()) {
        let elements = t.n_bytes / t.dtype.size_in_bytes().max(1) as u64;
        let bytes = if t.dtype.is_floating() {
            elements.saturating_mul(size)
        } else if !keep_quantized && t.dtype == mlx_rs::Dtype::Uint32 {
            // a packed matrix of at least 2 bits per weight: at most 16 weights per word
            elements.saturating_mul(16).saturating_mul(size)
        } else {
            t.n_bytes
        };
        total = total.saturating_add(bytes);
        largest = largest.max(t.n_bytes);
    }
    total.saturating_add(largest)
}

/// Reads `config.json` and, when present, `generation_config.json` of `dir`.
///
/// Errors: [`Error::Io`] when `config.json` is missing; [`Error::Config`] when either file is
/// malformed.
pub fn load_hf_config(dir: &Path) -> Result<(ModelConfig, Option<GenerationConfig>)> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let generation = super::files::read_optional_text(
        &dir.join("generation_config.json"),
        super::files::FileKind::Config,
    )?
    .map(|text| GenerationConfig::from_json(&text))
    .transpose()?;
    Ok((config, generation))
}
