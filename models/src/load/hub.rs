//! Model ids resolved through the Hugging Face Hub cache (hf-hub's blocking API, with its
//! indicatif progress bar on downloads).
//!
//! Environment, as in Python's `huggingface_hub`: `HF_HUB_CACHE` (the cache folder), else
//! `HF_HOME` (`$HF_HOME/hub`), else `~/.cache/huggingface/hub`; `HF_ENDPOINT`; `HF_TOKEN` via
//! hf-hub's token file; `HF_HUB_OFFLINE=1` reads only the cache.

use crate::error::{Error, Result};
use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo};
use std::path::{Path, PathBuf};

/// Files fetched besides the weights: (name, required).
const FILES: &[(&str, bool)] = &[
    ("config.json", true),
    ("generation_config.json", false),
    ("tokenizer.json", true),
    ("tokenizer_config.json", false),
    ("chat_template.jinja", false),
];

/// A local folder or file for `model`: an existing path as is; otherwise `model` is a Hugging
/// Face repo id (`owner/name`) whose config, tokenizer and `model*.safetensors` files are
/// fetched into (or, offline, read from) the Hub cache, and the snapshot folder is returned.
///
/// Errors: [`Error::Io`] for something that looks like a path (`/`, `./`, `~`, `.gguf`) but
/// does not exist; [`Error::Hub`] when the id cannot be resolved (offline or no network with
/// nothing cached, unknown repo), with a message saying how to pass a local path instead.
///
/// ```
/// use mlx_models::load::hub::resolve;
/// let here = resolve(env!("CARGO_MANIFEST_DIR"))?;
/// assert!(here.is_dir());
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn resolve(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let looks_like_path = model.starts_with('/')
        || model.starts_with("./")
        || model.starts_with("../")
        || model.starts_with('~')
        || model.ends_with(".gguf")
        || model.matches('/').count() > 1;
    if looks_like_path || model.is_empty() {
        return Err(Error::io(path, "no such file or folder"));
    }
    let offline = is_offline();
    fetch(model, offline).map_err(|e| {
        let how = "pass a local folder (config.json, tokenizer.json, model*.safetensors) or a \
                   .gguf file path instead";
        if offline {
            Error::Hub(format!(
                "`{model}` is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set: {e}; \
                 {how}, or unset HF_HUB_OFFLINE to download it",
                cache_dir().display()
            ))
        } else {
            Error::Hub(format!(
                "cannot download `{model}` from the Hugging Face Hub: {e}; {how}"
            ))
        }
    })
}

/// Whether `HF_HUB_OFFLINE` asks for cache-only resolution (`1`, `true`, `yes`, `on`).
pub fn is_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The Hub cache folder: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else hf-hub's default.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Cache::from_env().path().clone(),
    }
}

/// Where files come from: the cache only, or the API (which checks the cache first).
enum Source {
    Cache(hf_hub::CacheRepo),
    Api(Box<ApiRepo>),
}

impl Source {
    fn get(&self, file: &str) -> std::result::Result<PathBuf, String> {
        match self {
            Source::Cache(repo) => repo
                .get(file)
                .ok_or_else(|| format!("`{file}` is not cached")),
            Source::Api(repo) => repo.get(file).map_err(|e| format!("`{file}`: {e}")),
        }
    }
}

fn fetch(model: &str, offline: bool) -> std::result::Result<PathBuf, String> {
    let cache = Cache::new(cache_dir());
    let repo = Repo::model(model.to_string());
    let source = if offline {
        Source::Cache(cache.repo(repo))
    } else {
        let mut builder = ApiBuilder::from_cache(cache).with_progress(true);
        if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
            builder = builder.with_endpoint(endpoint);
        }
        if let Ok(token) = std::env::var("HF_TOKEN") {
            builder = builder.with_token(Some(token));
        }
        let api = builder.build().map_err(|e| e.to_string())?;
        Source::Api(Box::new(api.repo(repo)))
    };
    let mut folder = None;
    for (file, required) in FILES {
        match source.get(file) {
            Ok(path) => {
                if folder.is_none() {
                    folder = path.parent().map(Path::to_path_buf);
                }
            }
            Err(e) if *required => return Err(e),
            Err(_) => {}
        }
    }
    let folder = folder.ok_or_else(|| "no snapshot folder".to_string())?;
    match source.get("model.safetensors.index.json") {
        Ok(index) => {
            for shard in shards(&index)? {
                source.get(&shard)?;
            }
        }
        Err(_) => {
            source.get("model.safetensors")?;
        }
    }
    Ok(folder)
}

/// The shard files named by a `model.safetensors.index.json`.
fn shards(index: &Path) -> std::result::Result<Vec<String>, String> {
    let text = crate::load::files::read_text(index, crate::load::files::FileKind::Config)
        .map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("the safetensors index has no `weight_map`")?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .filter(|f| !f.contains("..") && !f.starts_with('/'))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}
