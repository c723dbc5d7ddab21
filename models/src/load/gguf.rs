//! GGUF files (llama.cpp's format) for the `llama`, `qwen2` and `qwen3` architectures: metadata
//! to a [`ModelConfig`], tensor names to Hugging Face names, and the Q/K row permutation of
//! llama-architecture files undone, so every family runs HF's (non-interleaved) RoPE.
//!
//! # Layout
//!
//! MLX's `load_gguf` already returns arrays in numpy orientation (`[out, in]` for a linear
//! weight; GGUF lists dimensions innermost first). `Q4_0`, `Q4_1` and `Q8_0` tensors stay
//! quantized as MLX affine triplets `P.weight` (`uint32`), `P.scales`, `P.biases` with a group
//! size of 32 and 4 or 8 bits; the triplets keep those suffixes here, and the bits are read from
//! the packed shapes into the config's `quantization` entry. `Q4_K`, which MLX 0.32.2 decodes
//! wrongly, is read by the project's own code ([`super::ggml_quants`]) and becomes such a
//! triplet too (4 bits, group 32, f32 scales; lossless). `Q6_K` arrives from MLX as `float16`
//! and is requantized to an 8-bit, group-32 triplet (not lossless, but
//! its error is at most one 8-bit step of the group's range, typically a quarter of `Q6_K`'s own
//! step; see `requantize_q6_k`). `Q2_K` stays `float16`. Other types (`Q5_0`, `Q5_1`, `Q3_K`, `IQ*`, ...)
//! make MLX's loader fail and are reported as an [`Error::Gguf`] naming the type.
//!
//! # The llama Q/K permutation
//!
//! llama.cpp's converter reorders the rows of `attn_q` / `attn_k` (weights and biases) of
//! llama-architecture models so that interleaved RoPE (pairs `(2i, 2i+1)`) computes what HF's
//! rotate-half RoPE (pairs `(i, i + d/2)`) computes on the original rows: within each head, the
//! rows viewed as `[2, d/2]` are stored as `[d/2, 2]`. [`unpermute_rows`] inverts it (for
//! quantized triplets, weight, scales and biases rows alike). `qwen2` / `qwen3` files are not
//! permuted.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::text::Tokenizer;
use crate::weights::Weights;
use mlx_rs::io::gguf::{Gguf, GgufValue};
use mlx_rs::{Array, Dtype};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read};
use std::path::Path;

/// The GGUF architectures this loader maps (`general.architecture`).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3"];

/// A GGUF file read into HF terms: the config, the weights under HF names (Q/K un-permuted),
/// and the file's metadata (for the tokenizer; `gguf.arrays` is empty).
#[derive(Debug)]
pub struct GgufCheckpoint {
    /// The config derived from the metadata.
    pub config: ModelConfig,
    /// Tensors under Hugging Face names.
    pub weights: Weights,
    /// The metadata (tokenizer vocabulary, chat template, special ids); no arrays.
    pub gguf: Gguf,
}

/// Reads a GGUF checkpoint and its embedded tokenizer.
///
/// Errors: see [`read_gguf_checkpoint`]; tokenizer problems are [`Error::Tokenizer`].
pub fn load_gguf_checkpoint(path: &Path) -> Result<(ModelConfig, Weights, Tokenizer)> {
    let checkpoint = read_gguf_checkpoint(path)?;
    let tokenizer = super::tokenizer_from_gguf(&checkpoint.gguf)?;
    Ok((checkpoint.config, checkpoint.weights, tokenizer))
}

/// Reads a GGUF file's config and weights (without building the tokenizer).
///
/// Errors: [`Error::Io`] for a missing, truncated or malformed file; [`Error::Gguf`] for a tensor
/// type MLX cannot load (named) or bad metadata; [`Error::UnsupportedModel`] for an architecture
/// other than [`SUPPORTED_ARCHITECTURES`]; [`Error::ShapeMismatch`] when Q/K do not have
/// `heads * head_dim` rows; [`Error::Config`] for inconsistent hyper-parameters.
///
/// ```
/// use mlx_models::{load::gguf::read_gguf_checkpoint, Error};
/// let err = read_gguf_checkpoint(std::path::Path::new("/no/such.gguf")).unwrap_err();
/// assert!(matches!(err, Error::Io { .. }));
/// ```
pub fn read_gguf_checkpoint(path: &Path) -> Result<GgufCheckpoint> {
    let mut gguf = mlx_rs::io::gguf::load_gguf(path).map_err(|e| match e {
        mlx_rs::Error::Io { path, message } => Error::Io { path, message },
        other => Error::Gguf(explain_load_failure(path, &other)),
    })?;
    let arch = meta_string(&gguf, "general.architecture")?;
    if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(Error::UnsupportedModel {
            model_type: arch,
            supported: SUPPORTED_ARCHITECTURES.to_vec(),
        });
    }
    let mut arrays = std::mem::take(&mut gguf.arrays);
    // The tensor table, read once, for the K-quant fix-ups below.
    let infos = tensor_infos(path).map_err(|e| Error::Gguf(format!("{}: {e}", path.display())))?;
    redecode_q4_k(path, &infos, &mut arrays)?;
    requantize_q6_k(&infos, &mut arrays)?;
    if arrays.contains_key("rope_freqs.weight") {
        return Err(Error::Gguf(
            "`rope_freqs` (Llama 3 RoPE scaling baked into a tensor) is not supported; \
             use the Hugging Face checkpoint"
                .into(),
        ));
    }
    let mut tensors = HashMap::with_capacity(arrays.len());
    for (name, array) in arrays {
        tensors.insert(hf_name(&name), array);
    }
    let config = gguf_config(&gguf, &arch, &tensors)?;
    if arch == "llama" {
        let hd = config.head_dim() as i32;
        let heads = [
            ("q_proj", config.num_attention_heads as i32),
            ("k_proj", config.num_key_value_heads() as i32),
        ];
        let names: Vec<String> = tensors.keys().cloned().collect();
        for name in names {
            for (proj, n_head) in heads {
                if name.contains(&format!(".self_attn.{proj}.")) {
                    let array = &tensors[&name];
                    let rows = array.shape().first().copied().unwrap_or(0);
                    if rows != n_head * hd {
                        let mut expected = array.shape();
                        if let Some(r) = expected.first_mut() {
                            *r = n_head * hd;
                        }
                        return Err(Error::ShapeMismatch {
                            name,
                            expected,
                            found: array.shape(),
                        });
                    }
                    let fixed = unpermute_rows(array, n_head)?;
                    tensors.insert(name.clone(), fixed);
                }
            }
        }
    }
    Ok(GgufCheckpoint {
        config,
        weights: Weights::from_map(tensors),
        gguf,
    })
}

/// Undoes llama.cpp's Q/K row permutation along axis 0: within each of `n_head` heads, the
/// stored row `2 * j + i` (`i` in 0..2, `j` in 0..head_dim/2) is the original row
/// `i * head_dim/2 + j`.
///
/// ```
/// use mlx_models::load::gguf::unpermute_rows;
/// use mlx_rs::Array;
/// // One head of 4 rows; HF rows [r0, r1, r2, r3] are stored as [r0, r2, r1, r3].
/// let stored = Array::from_slice(&[0.0f32, 2.0, 1.0, 3.0], &[4])?;
/// assert_eq!(unpermute_rows(&stored, 1)?.to_vec::<f32>()?, vec![0.0, 1.0, 2.0, 3.0]);
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn unpermute_rows(array: &Array, n_head: i32) -> Result<Array> {
    let rows = array.shape().first().copied().unwrap_or(0);
    if n_head <= 0 || rows % (2 * n_head) != 0 {
        return Err(Error::Config(format!(
            "cannot un-permute {rows} rows into {n_head} heads of even width"
        )));
    }
    let half = rows / n_head / 2;
    let mut index = Vec::with_capacity(rows as usize);
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                index.push(h * 2 * half + 2 * j + i);
            }
        }
    }
    let index = Array::from_slice(&index, &[rows])?;
    Ok(array.take(&index, 0)?)
}

/// The Hugging Face name of a GGUF tensor (names it does not know are kept as they are, so
/// that the family reports them as unexpected).
///
/// ```
/// use mlx_models::load::gguf::hf_name;
/// assert_eq!(hf_name("blk.3.attn_q.scales"), "model.layers.3.self_attn.q_proj.scales");
/// assert_eq!(hf_name("token_embd.weight"), "model.embed_tokens.weight");
/// assert_eq!(hf_name("output.weight"), "lm_head.weight");
/// ```
pub fn hf_name(name: &str) -> String {
    let (stem, suffix) = match name.rsplit_once('.') {
        Some((stem, s @ ("weight" | "bias" | "scales" | "biases"))) => (stem, s),
        _ => return name.to_string(),
    };
    let top = match stem {
        "token_embd" => Some("model.embed_tokens".to_string()),
        "output_norm" => Some("model.norm".to_string()),
        "output" => Some("lm_head".to_string()),
        _ => None,
    };
    if let Some(top) = top {
        return format!("{top}.{suffix}");
    }
    let Some(rest) = stem.strip_prefix("blk.") else {
        return name.to_string();
    };
    let Some((layer, part)) = rest.split_once('.') else {
        return name.to_string();
    };
    if layer.parse::<usize>().is_err() {
        return name.to_string();
    }
    let module = match part {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return name.to_string(),
    };
    format!("model.layers.{layer}.{module}.{suffix}")
}

fn meta_string(gguf: &Gguf, key: &str) -> Result<String> {
    match gguf.metadata.get(key) {
        Some(GgufValue::String(s)) => Ok(s.clone()),
        Some(_) => Err(Error::Gguf(format!("metadata `{key}` is not a string"))),
        None => Err(Error::Gguf(format!("metadata `{key}` is missing"))),
    }
}

fn meta_number(gguf: &Gguf, key: &str) -> Result<Option<f64>> {
    match gguf.metadata.get(key) {
        None => Ok(None),
        Some(GgufValue::Array(a)) if a.size() == 1 => Ok(Some(
            a.astype(Dtype::Float64)?.reshape(&[1])?.to_vec::<f64>()?[0],
        )),
        Some(_) => Err(Error::Gguf(format!("metadata `{key}` is not a number"))),
    }
}

fn required(gguf: &Gguf, key: &str) -> Result<f64> {
    meta_number(gguf, key)?.ok_or_else(|| Error::Gguf(format!("metadata `{key}` is missing")))
}

/// Builds the HF-style config of a GGUF file from its metadata and (HF-named) tensors.
fn gguf_config(gguf: &Gguf, arch: &str, tensors: &HashMap<String, Array>) -> Result<ModelConfig> {
    let int = |v: f64, key: &str| -> Result<usize> {
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64 {
            Ok(v as usize)
        } else {
            Err(Error::Gguf(format!(
                "metadata `{key}` = {v} is not a count"
            )))
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let mut c = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        c.insert(k.to_string(), v);
    };
    put("model_type", arch.into());
    for (field, k) in [
        ("num_hidden_layers", "block_count"),
        ("hidden_size", "embedding_length"),
        ("intermediate_size", "feed_forward_length"),
        ("num_attention_heads", "attention.head_count"),
    ] {
        let k = key(k);
        put(field, int(required(gguf, &k)?, &k)?.into());
    }
    for (field, k) in [
        ("num_key_value_heads", "attention.head_count_kv"),
        ("head_dim", "attention.key_length"),
        ("max_position_embeddings", "context_length"),
    ] {
        let k = key(k);
        if let Some(v) = meta_number(gguf, &k)? {
            put(field, int(v, &k)?.into());
        }
    }
    if let Some(eps) = meta_number(gguf, &key("attention.layer_norm_rms_epsilon"))? {
        put("rms_norm_eps", eps.into());
    }
    if let Some(theta) = meta_number(gguf, &key("rope.freq_base"))? {
        put("rope_theta", theta.into());
    }
    let scaling = match gguf.metadata.get(&key("rope.scaling.type")) {
        Some(GgufValue::String(t)) if t != "none" => Some(t.clone()),
        _ => None,
    };
    if let Some(rope_type) = scaling {
        let mut r = serde_json::Map::new();
        r.insert("rope_type".into(), rope_type.into());
        if let Some(f) = meta_number(gguf, &key("rope.scaling.factor"))? {
            r.insert("factor".into(), f.into());
        }
        let k = key("rope.scaling.original_context_length");
        if let Some(n) = meta_number(gguf, &k)? {
            r.insert(
                "original_max_position_embeddings".into(),
                int(n, &k)?.into(),
            );
        }
        put("rope_scaling", serde_json::Value::Object(r));
    }
    let vocab = match gguf.metadata.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Strings(tokens)) => tokens.len(),
        _ => match tensors.get("model.embed_tokens.weight") {
            Some(e) => e.shape().first().copied().unwrap_or(0) as usize,
            None => return Err(Error::MissingTensor("token_embd.weight".into())),
        },
    };
    put("vocab_size", vocab.into());
    put(
        "tie_word_embeddings",
        (!tensors.contains_key("lm_head.weight")).into(),
    );
    if arch == "llama" {
        put(
            "attention_bias",
            tensors
                .keys()
                .any(|k| k.ends_with("self_attn.q_proj.bias"))
                .into(),
        );
    }
    for (field, k) in [
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
    ] {
        if let Some(v) = meta_number(gguf, k)? {
            put(field, int(v, k)?.into());
        }
    }
    if let Some(q) = quantization_entry(tensors)? {
        put("quantization", q);
    }
    let text = serde_json::Value::Object(c).to_string();
    ModelConfig::from_json(&text)
}

/// The `quantization` config entry (MLX's format) describing the quantized triplets: group size
/// 32; bits from the packed shapes (`weight` last dim = `cols * bits / 32`, `scales` last dim =
/// `cols / 32`); the most common bits as the default, others as per-module overrides.
fn quantization_entry(tensors: &HashMap<String, Array>) -> Result<Option<serde_json::Value>> {
    let mut bits_of: BTreeMap<String, i32> = BTreeMap::new();
    for (name, scales) in tensors {
        let Some(module) = name.strip_suffix(".scales") else {
            continue;
        };
        let weight = tensors
            .get(&format!("{module}.weight"))
            .ok_or_else(|| Error::MissingTensor(format!("{module}.weight")))?;
        let (w_cols, s_cols) = (
            weight.shape().last().copied().unwrap_or(0),
            scales.shape().last().copied().unwrap_or(0),
        );
        if weight.dtype() != Dtype::Uint32 || s_cols == 0 || w_cols % s_cols != 0 {
            return Err(Error::Gguf(format!(
                "`{module}` is not a quantized triplet MLX understands (weight {:?} {:?}, scales {:?})",
                weight.dtype(),
                weight.shape(),
                scales.shape()
            )));
        }
        bits_of.insert(module.to_string(), w_cols / s_cols);
    }
    if bits_of.is_empty() {
        return Ok(None);
    }
    let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
    for b in bits_of.values() {
        *counts.entry(*b).or_default() += 1;
    }
    let default = counts
        .iter()
        .max_by_key(|(bits, n)| (**n, -**bits))
        .map(|(b, _)| *b)
        .unwrap_or(4);
    let mut q = serde_json::Map::new();
    q.insert("group_size".into(), 32.into());
    q.insert("bits".into(), default.into());
    q.insert("mode".into(), "affine".into());
    for (module, bits) in bits_of {
        if bits != default {
            q.insert(module, serde_json::json!({"group_size": 32, "bits": bits}));
        }
    }
    Ok(Some(serde_json::Value::Object(q)))
}

/// ggml's name of a tensor type id.
fn ggml_type_name(ty: u32) -> String {
    let name = match ty {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("type {ty}"),
    };
    name.to_string()
}

/// Types MLX 0.32's `load_gguf` reads (as is, as quantized triplets, or converted to f16).
fn mlx_loads(ty: u32) -> bool {
    matches!(ty, 0 | 1 | 2 | 3 | 8 | 10 | 12 | 14 | 24..=26)
}

/// Turns an MLX load failure into a message naming the tensor types MLX cannot read.
fn explain_load_failure(path: &Path, err: &mlx_rs::Error) -> String {
    match tensor_types(path) {
        Ok(types) => {
            let mut bad: BTreeMap<String, (usize, String)> = BTreeMap::new();
            for (name, ty) in types.into_iter().filter(|(_, ty)| !mlx_loads(*ty)) {
                let entry = bad.entry(ggml_type_name(ty)).or_insert((0, name));
                entry.0 += 1;
            }
            if bad.is_empty() {
                format!("{}: {err}", path.display())
            } else {
                let list: Vec<String> = bad
                    .iter()
                    .map(|(ty, (n, first))| format!("{ty} ({n} tensors, e.g. `{first}`)"))
                    .collect();
                format!(
                    "{}: MLX cannot load tensor type {}; supported: F32, F16, Q4_0, Q4_1, Q8_0 \
                     (kept quantized), Q2_K, Q4_K, Q6_K (converted to f16)",
                    path.display(),
                    list.join(", ")
                )
            }
        }
        Err(_) => format!("{}: {err}", path.display()),
    }
}

/// The (name, ggml type) of every tensor of a GGUF file, read from its header with bounded
/// reads.
fn tensor_types(path: &Path) -> std::result::Result<Vec<(String, u32)>, String> {
    Ok(tensor_infos(path)?
        .into_iter()
        .map(|t| (t.name, t.ggml_type))
        .collect())
}

/// Where a tensor's data lies in a GGUF file.
#[derive(Debug, Clone)]
struct TensorInfo {
    name: String,
    /// GGUF order: innermost dimension first.
    dims: Vec<u64>,
    ggml_type: u32,
    /// Absolute byte offset of the data in the file.
    offset: u64,
}

/// Every tensor's name, dimensions, type and absolute data offset, read from the header with
/// bounded reads.
fn tensor_infos(path: &Path) -> std::result::Result<Vec<TensorInfo>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = Reader {
        r: BufReader::new(file),
        left: len,
    };
    if r.bytes(4)? != b"GGUF" {
        return Err("bad magic".into());
    }
    let _version = r.u32()?;
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.u32()?;
        if key == "general.alignment" && ty == 4 {
            alignment = u64::from(r.u32()?);
        } else {
            r.skip_value(ty, 0)?;
        }
    }
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(format!("invalid alignment {alignment}"));
    }
    let mut out = Vec::new();
    for _ in 0..n_tensors {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > 8 {
            return Err("too many dimensions".into());
        }
        let dims = (0..n_dims)
            .map(|_| r.u64())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let ggml_type = r.u32()?;
        let offset = r.u64()?;
        out.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    let data_start = (len - r.left).div_ceil(alignment) * alignment;
    for t in &mut out {
        t.offset = t
            .offset
            .checked_add(data_start)
            .ok_or_else(|| format!("tensor {} has an invalid offset", t.name))?;
    }
    Ok(out)
}

/// ggml type id of `Q4_K`.
const GGML_Q4_K: u32 = 12;

/// Replaces the tensors that MLX decodes wrongly (`Q4_K`, see [`super::ggml_quants`]) with
/// the project's own reading of their blocks, as MLX affine triplets (4 bits, group 32, f32
/// scales and biases; lossless): `P.weight` becomes the packed `uint32` `[rows, cols / 8]`,
/// with `P.scales` and `P.biases` `[rows, cols / 32]` beside it.
fn redecode_q4_k(
    path: &Path,
    infos: &[TensorInfo],
    arrays: &mut HashMap<String, Array>,
) -> Result<()> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    for info in infos.iter().filter(|t| t.ggml_type == GGML_Q4_K) {
        let count: u64 = info.dims.iter().product();
        let bytes =
            count / super::ggml_quants::QK_K as u64 * super::ggml_quants::Q4_K_BLOCK_BYTES as u64;
        if info.offset.checked_add(bytes).is_none_or(|end| end > len) {
            return Err(Error::Gguf(format!(
                "{}: the data of tensor `{}` lies beyond the end of the file",
                path.display(),
                info.name
            )));
        }
        let Some(stem) = info.name.strip_suffix(".weight") else {
            return Err(Error::Gguf(format!(
                "{}: Q4_K tensor `{}` is not a `.weight`",
                path.display(),
                info.name
            )));
        };
        let cols = info.dims.first().copied().unwrap_or(0);
        let rows = count.checked_div(cols).unwrap_or(0);
        let (rows, cols) = (
            i32::try_from(rows)
                .map_err(|_| Error::Gguf(format!("`{}` is too large", info.name)))?,
            i32::try_from(cols)
                .map_err(|_| Error::Gguf(format!("`{}` is too large", info.name)))?,
        );
        let t = super::ggml_quants::read_q4_k_affine(path, info.offset, count as usize)?;
        arrays.insert(
            info.name.clone(),
            Array::from_slice(&t.packed, &[rows, cols / 8])?,
        );
        arrays.insert(
            format!("{stem}.scales"),
            Array::from_slice(&t.scales, &[rows, cols / 32])?,
        );
        arrays.insert(
            format!("{stem}.biases"),
            Array::from_slice(&t.biases, &[rows, cols / 32])?,
        );
    }
    Ok(())
}

/// ggml type id of `Q6_K`.
const GGML_Q6_K: u32 = 14;

/// Requantizes the `Q6_K` tensors (which MLX decodes into `float16`) as MLX affine 8-bit,
/// group-32 triplets, so that they stay compact and go through the quantized matmul. Not
/// lossless: a group of 32 spans two 16-weight `Q6_K` sub-blocks with their own scales, and
/// MLX's affine groups are 32 wide. The error of a weight is at most one 8-bit step of its
/// group's range, `(max - min) / 255` (MLX keeps the bias exact and may clip the far end of
/// the range); measured against `Q6_K`'s own step it is typically about a quarter
/// (models/tests/gguf_kquants.rs), more where neighbouring sub-blocks have very different
/// scales. Tensors that are not 2-D with a multiple of 32 columns stay `float16`.
fn requantize_q6_k(infos: &[TensorInfo], arrays: &mut HashMap<String, Array>) -> Result<()> {
    for name in infos
        .iter()
        .filter(|t| t.ggml_type == GGML_Q6_K)
        .map(|t| &t.name)
    {
        let Some(stem) = name.strip_suffix(".weight") else {
            continue;
        };
        let Some(dense) = arrays.get(name) else {
            continue;
        };
        let shape = dense.shape();
        if shape.len() != 2 || shape[1] % 32 != 0 {
            continue;
        }
        let (packed, scales, biases) = mlx_rs::quant::quantize(dense, 32, 8)?;
        arrays.insert(format!("{stem}.scales"), scales);
        arrays.insert(format!("{stem}.biases"), biases);
        arrays.insert(name.clone(), packed);
    }
    Ok(())
}

struct Reader<R> {
    r: R,
    left: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64) -> std::result::Result<Vec<u8>, String> {
        if n > self.left {
            return Err("truncated".into());
        }
        self.left -= n;
        let mut buf = vec![0u8; n as usize];
        self.r.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.u64()?;
        Ok(String::from_utf8_lossy(&self.bytes(n)?).into_owned())
    }
    fn skip_value(&mut self, ty: u32, depth: u32) -> std::result::Result<(), String> {
        let size = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                self.string()?;
                return Ok(());
            }
            9 if depth < 4 => {
                let elem = self.u32()?;
                let count = self.u64()?;
                if count > self.left {
                    return Err("array exceeds the file".into());
                }
                for _ in 0..count {
                    self.skip_value(elem, depth + 1)?;
                }
                return Ok(());
            }
            t => return Err(format!("unknown metadata type {t}")),
        };
        self.bytes(size)?;
        Ok(())
    }
}
