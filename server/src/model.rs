//! [`ServedModel`]: the one model this server serves, its names and what the listing
//! endpoints say about it.
//!
//! # Names
//!
//! The id is `--served-model-name` when given, else derived from `--model`: a local `.gguf`
//! file's name without the extension, a local folder's name, or the Hugging Face id as given.
//! A request may name the model by its id, by the `--model` argument verbatim, by a local
//! file's name with its extension, or by any `--alias`; names compare case-insensitively and
//! an Ollama-style `:latest` tag is ignored. A request that names no model (absent or empty
//! `model`) gets the served one. Any other name is 404 `model_not_found`.

use crate::engine::ModelInfo;
use mlx_models::text::tool_calls::ToolCallFormat;
use std::path::Path;

/// The served model and its names.
#[derive(Debug, Clone)]
pub struct ServedModel {
    /// The id that listings show and responses carry.
    pub id: String,
    /// Other names requests may use.
    pub aliases: Vec<String>,
    /// What the engine loaded.
    pub info: ModelInfo,
    /// When the server loaded it (Unix seconds).
    pub created: u64,
    /// Bytes of the model's files on disk (0 when unknown).
    pub size: u64,
    /// `gguf` or `safetensors`.
    pub format: &'static str,
    /// How the model writes tool calls.
    pub tool_format: ToolCallFormat,
}

/// The id derived from a `--model` argument (see the module docs).
///
/// ```
/// use mlx_server::model::model_id;
/// assert_eq!(model_id("Qwen/Qwen2.5-0.5B-Instruct"), "Qwen/Qwen2.5-0.5B-Instruct");
/// assert_eq!(model_id("/no/such/dir/SmolLM2.Q4_1.gguf"), "SmolLM2.Q4_1");
/// ```
pub fn model_id(model: &str) -> String {
    let path = Path::new(model);
    let is_gguf = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if is_gguf || path.exists() {
        let name = if is_gguf {
            path.file_stem()
        } else {
            path.file_name()
        };
        if let Some(name) = name.and_then(|n| n.to_str()) {
            return name.to_string();
        }
    }
    model.trim_end_matches('/').to_string()
}

impl ServedModel {
    /// The served model for `--model` = `model`, with an optional id override and extra
    /// aliases.
    pub fn new(
        model: &str,
        served_name: Option<String>,
        aliases: Vec<String>,
        info: ModelInfo,
    ) -> ServedModel {
        let id = served_name.unwrap_or_else(|| model_id(model));
        let mut names = vec![model.to_string()];
        if let Some(file) = Path::new(model).file_name().and_then(|n| n.to_str()) {
            names.push(file.to_string());
        }
        names.extend(aliases);
        names.retain(|n| !n.is_empty() && *n != id);
        names.dedup();
        let (size, format) = files_on_disk(model);
        let template = info.tokenizer.chat_template().map(|t| t.source());
        let tool_format = ToolCallFormat::detect(&info.config.model_type, template);
        ServedModel {
            id,
            aliases: names,
            info,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            size,
            format,
            tool_format,
        }
    }

    /// Whether a request's `model` names this model (see the module docs).
    pub fn answers_to(&self, requested: Option<&str>) -> bool {
        let Some(name) = requested.map(str::trim).filter(|n| !n.is_empty()) else {
            return true;
        };
        let name = name.strip_suffix(":latest").unwrap_or(name);
        std::iter::once(&self.id)
            .chain(&self.aliases)
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    /// [`crate::error::ApiError::model_not_found`] unless `requested` names this model.
    pub fn check(&self, requested: Option<&str>) -> Result<(), crate::error::ApiError> {
        if self.answers_to(requested) {
            Ok(())
        } else {
            Err(crate::error::ApiError::model_not_found(
                requested.unwrap_or_default(),
                &self.id,
            ))
        }
    }

    /// The quantization as Ollama names it in listings (from the file name, e.g. `Q4_1`), or
    /// the compute dtype.
    pub fn quantization_level(&self) -> String {
        let upper = self.id.to_uppercase();
        let known = [
            "Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
            "Q4_K", "Q5_K", "Q3_K", "Q2_K", "F16", "BF16", "F32",
        ];
        known
            .iter()
            .find(|q| upper.contains(*q))
            .map(|q| q.to_string())
            .unwrap_or_else(|| self.info.dtype.to_uppercase())
    }
}

/// The size and format of the model's files: the `.gguf` file, or the folder's
/// `*.safetensors`.
fn files_on_disk(model: &str) -> (u64, &'static str) {
    let path = mlx_models::load::hub::resolve(model).ok();
    let Some(path) = path else {
        return (0, "safetensors");
    };
    if path.is_file() {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        return (size, "gguf");
    }
    let size = std::fs::read_dir(&path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    (size, "safetensors")
}
