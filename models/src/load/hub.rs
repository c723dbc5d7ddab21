//! Model ids resolved through the Hugging Face Hub cache (hf-hub's blocking API); downloads
//! report their progress to a [`ProgressHook`] ([`resolve_with_progress`]) and draw nothing.
//!
//! Environment, as in Python's `huggingface_hub`: `HF_HUB_CACHE` (the cache folder), else
//! `HF_HOME` (`$HF_HOME/hub`), else `~/.cache/huggingface/hub`; `HF_ENDPOINT`; `HF_TOKEN` via
//! hf-hub's token file; `HF_HUB_OFFLINE=1` reads only the cache.

use super::progress::{ProgressEvent, ProgressHook};
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
    resolve_with_progress(model, None)
}

/// [`resolve`], reporting each file it downloads to `progress`
/// ([`ProgressEvent::DownloadStart`], [`ProgressEvent::DownloadProgress`],
/// [`ProgressEvent::DownloadDone`]); files already in the cache report nothing.
///
/// Errors: as [`resolve`].
///
/// ```
/// use mlx_models::load::{hub, ProgressEvent, ProgressHook};
/// let hook = ProgressHook::new(|e: &ProgressEvent| {
///     if let ProgressEvent::DownloadProgress { file, done_bytes, total_bytes } = e {
///         eprintln!("{file}: {done_bytes} / {total_bytes}");
///     }
/// });
/// // A local path downloads nothing.
/// let here = hub::resolve_with_progress(env!("CARGO_MANIFEST_DIR"), Some(&hook))?;
/// assert!(here.is_dir());
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn resolve_with_progress(model: &str, progress: Option<&ProgressHook>) -> Result<PathBuf> {
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
    fetch(model, offline, progress).map_err(|e| {
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

/// Where files come from: the cache only, or the API after the cache.
enum Source<'a> {
    Cache(hf_hub::CacheRepo),
    Api {
        cache: hf_hub::CacheRepo,
        api: Box<ApiRepo>,
        progress: Option<&'a ProgressHook>,
    },
}

impl Source<'_> {
    fn get(&self, file: &str) -> std::result::Result<PathBuf, String> {
        match self {
            Source::Cache(repo) => repo
                .get(file)
                .ok_or_else(|| format!("`{file}` is not cached")),
            // What `ApiRepo::get` does, with our progress instead of hf-hub's own bar.
            Source::Api {
                cache,
                api,
                progress,
            } => match cache.get(file) {
                Some(path) => Ok(path),
                None => api
                    .download_with_progress(file, HubProgress::new(*progress))
                    .map_err(|e| format!("`{file}`: {e}")),
            },
        }
    }
}

/// hf-hub's download progress ([`hf_hub::api::Progress`]) as [`ProgressEvent`]s.
///
/// hf-hub calls `init(size, file)` when a download starts and again at each (re)connection,
/// followed there by `update(bytes already on disk)`, then `update(n)` per chunk read, and
/// `finish()` after each connection's transfer.
struct HubProgress<'a> {
    hook: Option<&'a ProgressHook>,
    file: String,
    done: u64,
    total: u64,
    started: bool,
    finished: bool,
}

impl<'a> HubProgress<'a> {
    fn new(hook: Option<&'a ProgressHook>) -> Self {
        HubProgress {
            hook,
            file: String::new(),
            done: 0,
            total: 0,
            started: false,
            finished: false,
        }
    }

    fn report(&self, event: ProgressEvent) {
        if let Some(hook) = self.hook {
            hook.report(&event);
        }
    }
}

impl hf_hub::api::Progress for HubProgress<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        self.done = 0;
        self.total = size as u64;
        if !self.started {
            self.started = true;
            self.file = filename.to_string();
            self.report(ProgressEvent::DownloadStart {
                file: self.file.clone(),
                total_bytes: self.total,
            });
        }
    }

    fn update(&mut self, size: usize) {
        self.done = self.done.saturating_add(size as u64).min(self.total);
        self.report(ProgressEvent::DownloadProgress {
            file: self.file.clone(),
            done_bytes: self.done,
            total_bytes: self.total,
        });
    }

    fn finish(&mut self) {
        if self.started && !self.finished {
            self.finished = true;
            self.report(ProgressEvent::DownloadDone {
                file: self.file.clone(),
                total_bytes: self.total,
            });
        }
    }
}

fn fetch(
    model: &str,
    offline: bool,
    progress: Option<&ProgressHook>,
) -> std::result::Result<PathBuf, String> {
    let cache = Cache::new(cache_dir());
    let repo = Repo::model(model.to_string());
    let source = if offline {
        Source::Cache(cache.repo(repo))
    } else {
        let cache_repo = cache.repo(repo.clone());
        let mut builder = ApiBuilder::from_cache(cache).with_progress(false);
        if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
            builder = builder.with_endpoint(endpoint);
        }
        if let Ok(token) = std::env::var("HF_TOKEN") {
            builder = builder.with_token(Some(token));
        }
        let api = builder.build().map_err(|e| e.to_string())?;
        Source::Api {
            cache: cache_repo,
            api: Box::new(api.repo(repo)),
            progress,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use hf_hub::api::Progress;
    use std::sync::{Arc, Mutex};

    fn recording() -> (ProgressHook, Arc<Mutex<Vec<ProgressEvent>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let hook = ProgressHook::new(move |e: &ProgressEvent| sink.lock().unwrap().push(e.clone()));
        (hook, events)
    }

    fn progress(file: &str, done: u64) -> ProgressEvent {
        ProgressEvent::DownloadProgress {
            file: file.into(),
            done_bytes: done,
            total_bytes: 10,
        }
    }

    /// hf-hub 0.4's sequence for one file (`download_tempfile` then `download_from`): `init`
    /// twice, `update(bytes on disk)`, `update` per chunk, `finish`; a dropped connection
    /// (no `finish`) resumes with `init` and `update(bytes on disk)` again.
    #[test]
    fn hub_downloads_report_start_progress_and_done_once() {
        let (hook, events) = recording();
        let mut p = HubProgress::new(Some(&hook));
        p.init(10, "model.safetensors");
        p.init(10, "model.safetensors");
        p.update(0);
        p.update(4);
        // the connection drops; hf-hub reconnects from the 4 bytes on disk
        p.init(10, "model.safetensors");
        p.update(4);
        p.update(6);
        p.finish();
        let file = "model.safetensors";
        assert_eq!(
            *events.lock().unwrap(),
            vec![
                ProgressEvent::DownloadStart {
                    file: file.into(),
                    total_bytes: 10
                },
                progress(file, 0),
                progress(file, 4),
                progress(file, 4),
                progress(file, 10),
                ProgressEvent::DownloadDone {
                    file: file.into(),
                    total_bytes: 10
                },
            ]
        );
        // Without a hook nothing is reported (and nothing panics).
        let mut quiet = HubProgress::new(None);
        quiet.init(10, file);
        quiet.update(10);
        quiet.finish();
    }
}
