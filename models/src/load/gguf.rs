//! GGUF files (llama.cpp's format) for the architectures of the family registry
//! ([`crate::families::FAMILIES`]: `llama`, `qwen2`, `qwen3`, `gemma3`, `mistral3`): metadata to a
//! [`ModelConfig`] (the family reads its own keys), tensor names to Hugging Face names (with the
//! family's exceptions), and the Q/K row permutation of llama-architecture files undone, so every
//! family runs HF's (non-interleaved) RoPE.
//!
//! The file is read by the project's own bounded reader ([`super::gguf_file`]): the header is
//! validated, the config derived from it, and the declared tensors checked against the family's
//! shapes ([`super::plan`]) before any tensor data is read; MLX only ever sees arrays built from
//! checked bytes.
//!
//! # Tensor types
//!
//! Blocks are decoded by [`super::ggml_quants`]. `Q4_0`, `Q4_1` and `Q4_K` become MLX affine
//! 4-bit triplets `P.weight` (`uint32`), `P.scales`, `P.biases` with a group size of 32;
//! `Q8_0`, `Q5_0`, `Q5_1` and `Q5_K` become 8-bit triplets; all of these are lossless. Scales
//! and biases are `float16` where every one of a tensor's values is exact in `float16` (as for
//! `Q4_0`, `Q4_1`, `Q8_0`), else `float32`. `Q6_K` is decoded row by row and requantized to an
//! 8-bit, group-32 triplet with `float16` scales and biases (not lossless: a weight moves by at
//! most half an 8-bit step of its group's range, typically a fifth of `Q6_K`'s own step; see
//! [`ggml_quants::requantize_affine8`]). `Q2_K` and `Q3_K` are decoded row by row to `float16`
//! (or kept as stored, below).
//! No tensor is ever held as a whole in `f32` on the way. With
//! [`GgufReadOptions::keep_blocks`] (what [`super::load`] asks for on a CPU with the AVX-512
//! VNNI kernels), the block-quantized matrices (`Q4_0` … `Q8_0`, `Q2_K` … `Q6_K`) of the
//! layers' projections, of the head and of the token embedding skip all of this and stay in
//! the file's blocks, as `P.blocks` `[rows, blocks per row, block bytes]`. `F32`, `F16`, `BF16`, `I8`,
//! `I16` and `I32` are taken as stored. Other types (`IQ*`, `TQ*`, `MXFP4`, ...) are refused
//! before any data is read, with an [`Error::Gguf`] naming the type and a tensor.
//!
//! # The llama Q/K permutation
//!
//! llama.cpp's converter reorders the rows of `attn_q` / `attn_k` (weights and biases) of
//! llama-architecture models so that interleaved RoPE (pairs `(2i, 2i+1)`) computes what HF's
//! rotate-half RoPE (pairs `(i, i + d/2)`) computes on the original rows: within each head, the
//! rows viewed as `[2, d/2]` are stored as `[d/2, 2]`. [`unpermute_rows`] inverts it (for
//! quantized triplets, weight, scales and biases rows alike). `qwen2` / `qwen3` files are not
//! permuted.

use super::ggml_quants::{self, has_affine_form};
use super::gguf_file::{GgmlType, GgufFile, GgufTensorInfo, MetaValue};
use super::plan::DeclaredTensor;
use super::progress::{ProgressHook, ReadCounter};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::text::Tokenizer;
use crate::weights::Weights;
use mlx_rs::{Array, Dtype};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A GGUF file read into HF terms: the config, the weights under HF names (Q/K un-permuted),
/// and the file's header (metadata for the tokenizer, and the tensor table).
#[derive(Debug)]
pub struct GgufCheckpoint {
    /// The config derived from the metadata.
    pub config: ModelConfig,
    /// Tensors under Hugging Face names.
    pub weights: Weights,
    /// The header: metadata (tokenizer vocabulary, chat template, special ids) and tensors.
    pub gguf: GgufFile,
}

/// Reads a GGUF checkpoint and its embedded tokenizer.
///
/// Errors: see [`read_gguf_checkpoint`]; tokenizer problems are [`Error::Tokenizer`].
pub fn load_gguf_checkpoint(path: &Path) -> Result<(ModelConfig, Weights, Tokenizer)> {
    let checkpoint = read_gguf_checkpoint(path)?;
    let tokenizer = Tokenizer::from_gguf(&checkpoint.gguf)?;
    Ok((checkpoint.config, checkpoint.weights, tokenizer))
}

/// Reads a GGUF file's config and weights (without building the tokenizer): [`open_gguf`],
/// then the declared tensors that the family knows are checked against its shapes (a
/// mis-shaped one is [`Error::ShapeMismatch`] before any data is read), then
/// [`read_gguf_weights`]. [`crate::load::load`] also requires the set of tensors to be
/// complete before reading.
///
/// Errors: [`Error::Io`] / [`Error::NotRegularFile`] for a file that cannot be opened;
/// [`Error::Gguf`] for a malformed file, a tensor type that cannot be loaded (named) or bad
/// metadata; [`Error::UnsupportedModel`] for an architecture other than
/// [`crate::families::supported_architectures`]; [`Error::ShapeMismatch`]; [`Error::Config`] /
/// [`Error::ConfigValue`] for inconsistent hyper-parameters.
///
/// ```
/// use mlx_models::{load::gguf::read_gguf_checkpoint, Error};
/// let err = read_gguf_checkpoint(std::path::Path::new("/no/such.gguf")).unwrap_err();
/// assert!(matches!(err, Error::Io { .. }));
/// ```
pub fn read_gguf_checkpoint(path: &Path) -> Result<GgufCheckpoint> {
    let (gguf, config) = open_gguf(path)?;
    let plan = crate::families::expected_tensors(&config)?;
    super::plan::check_declared(&plan, &declared_tensors(&gguf, &config)?, false)?;
    let weights = read_gguf_weights(&gguf, &config)?;
    Ok(GgufCheckpoint {
        config,
        weights,
        gguf,
    })
}

/// Reads and validates a GGUF file's header and derives the config, reading no tensor data.
///
/// Errors: as [`read_gguf_checkpoint`], and [`Error::Gguf`] when a tensor has a type that
/// cannot be loaded.
pub fn open_gguf(path: &Path) -> Result<(GgufFile, ModelConfig)> {
    let gguf = GgufFile::open(path)?;
    let config = config_from_gguf(path, &gguf)?;
    Ok((gguf, config))
}

/// The config of a parsed GGUF header (`path` names the file in errors): the architecture
/// must be supported, every tensor type loadable, and the metadata a valid config.
///
/// Errors: [`Error::UnsupportedModel`], [`Error::Gguf`], [`Error::Config`],
/// [`Error::ConfigValue`].
pub fn config_from_gguf(path: &Path, gguf: &GgufFile) -> Result<ModelConfig> {
    let arch = gguf
        .metadata_str("general.architecture")?
        .ok_or_else(|| Error::Gguf("metadata `general.architecture` is missing".into()))?
        .to_string();
    let family = crate::families::family_for_architecture(&arch)?;
    check_types(path, gguf)?;
    if gguf.tensor("rope_freqs.weight").is_some() && !family.gguf.reads_rope_freqs {
        return Err(Error::Gguf(
            "`rope_freqs` (Llama 3 RoPE scaling baked into a tensor) is not supported; \
             use the Hugging Face checkpoint"
                .into(),
        ));
    }
    gguf_config(gguf, &arch, family)
}

/// The GGUF conventions of the family reading `gguf`'s architecture (the common ones when the
/// architecture is unknown or missing: the caller reports that separately).
fn conventions(gguf: &GgufFile) -> crate::families::GgufConventions {
    gguf.metadata_str("general.architecture")
        .ok()
        .flatten()
        .and_then(|arch| crate::families::family_for_architecture(arch).ok())
        .map_or(crate::families::llama::FAMILY.gguf, |f| f.gguf)
}

/// The tensors a GGUF file declares, under the decoder's names (llama.cpp's names mapped to
/// Hugging Face's, then the family's renames, as the loader applies them) with their dense
/// shapes; tensors the family drops (Gemma 4's `rope_freqs`) are left out.
///
/// Errors: [`Error::UnsupportedModel`] when no family builds `config`.
pub fn declared_tensors(gguf: &GgufFile, config: &ModelConfig) -> Result<Vec<DeclaredTensor>> {
    let conventions = conventions(gguf);
    let mut declared = Vec::with_capacity(gguf.tensors.len());
    for t in &gguf.tensors {
        if let Some(name) = crate::families::rename(config, &hf_name(&t.name, &conventions))? {
            declared.push(DeclaredTensor::dense(name, &t.shape()));
        }
    }
    Ok(declared)
}

/// [`Error::Gguf`] naming the tensor types of `gguf` that cannot be loaded, with a count and an
/// example tensor each.
fn check_types(path: &Path, gguf: &GgufFile) -> Result<()> {
    let mut bad: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for t in &gguf.tensors {
        if t.ggml_type.block_layout().is_none() {
            bad.entry(t.ggml_type.name()).or_insert((0, &t.name)).0 += 1;
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = bad
        .iter()
        .map(|(ty, (n, first))| format!("{ty} ({n} tensors, e.g. `{first}`)"))
        .collect();
    Err(Error::Gguf(format!(
        "{}: tensor type {} cannot be loaded; supported: F32, F16, BF16, I8, I16, I32, Q4_0, \
         Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K (kept quantized), Q6_K (requantized to 8 bits), \
         Q2_K, Q3_K (kept as stored where the native kernels run, else decoded to f16)",
        path.display(),
        list.join(", ")
    )))
}

/// Reads every tensor's data, converts it (see the [module docs](self)) and names it as
/// Hugging Face does; for `llama` files, undoes the Q/K permutation.
///
/// Errors: [`Error::Io`] when the file shrank since its header was read; [`Error::Gguf`] for
/// a block with a non-finite scale or a quantized tensor that is not a `.weight`;
/// [`Error::Config`] when Q/K rows do not split into the config's heads.
pub fn read_gguf_weights(gguf: &GgufFile, config: &ModelConfig) -> Result<Weights> {
    read_gguf_weights_with_progress(gguf, config, None)
}

/// [`read_gguf_weights`], reporting [`ProgressEvent::ReadStart`], one
/// [`ProgressEvent::ReadProgress`] per tensor of the file (after it is decoded) and
/// [`ProgressEvent::ReadDone`] to `progress`, counting the tensors' stored bytes.
///
/// Errors: as [`read_gguf_weights`].
///
/// ```
/// use mlx_models::load::{gguf, ProgressEvent, ProgressHook};
/// use std::sync::{Arc, Mutex};
/// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/load/tiny_qwen2.gguf");
/// let tensors = Arc::new(Mutex::new(0));
/// let sink = Arc::clone(&tensors);
/// let hook = ProgressHook::new(move |e: &ProgressEvent| {
///     if let ProgressEvent::ReadProgress { done_tensors, .. } = e {
///         *sink.lock().unwrap() = *done_tensors;
///     }
/// });
/// let (file, config) = gguf::open_gguf(&path)?;
/// gguf::read_gguf_weights_with_progress(&file, &config, Some(&hook))?;
/// assert_eq!(*tensors.lock().unwrap(), file.tensors.len() as u64);
/// # Ok::<(), mlx_models::Error>(())
/// ```
///
/// [`ProgressEvent::ReadStart`]: super::ProgressEvent::ReadStart
/// [`ProgressEvent::ReadProgress`]: super::ProgressEvent::ReadProgress
/// [`ProgressEvent::ReadDone`]: super::ProgressEvent::ReadDone
pub fn read_gguf_weights_with_progress(
    gguf: &GgufFile,
    config: &ModelConfig,
    progress: Option<&ProgressHook>,
) -> Result<Weights> {
    read_gguf_weights_with_options(gguf, config, progress, GgufReadOptions::default())
}

/// How [`read_gguf_weights_with_options`] stores block-quantized matrices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GgufReadOptions {
    /// Keep the `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`, `Q2_K`, `Q3_K`, `Q4_K`, `Q5_K` and
    /// `Q6_K` matrices of
    /// the decoder layers' projections (`attn_q`, `attn_k`, `attn_v`, `attn_output`,
    /// `ffn_gate`, `ffn_up`, `ffn_down`) and of the output head as stored, under `P.blocks`
    /// (`uint8` `[rows, cols / values per block, block bytes]`: the last axis names the
    /// format, [`mlx_rs::quant::BlockFormat::from_block_bytes`]), for
    /// [`mlx_rs::quant::block_matmul`]: no conversion, and no more bytes than the file's.
    /// Only the native CPU kernels multiply them: [`super::load`] asks for this on a CPU
    /// they serve. `false` (the default): every tensor as the [module docs](self) say.
    pub keep_blocks: bool,
}

/// [`read_gguf_weights_with_progress`] with [`GgufReadOptions`].
///
/// Errors: as [`read_gguf_weights`]; a kept block whose f16 factor is not finite is an
/// [`Error::Gguf`] naming the tensor and the block.
pub fn read_gguf_weights_with_options(
    gguf: &GgufFile,
    config: &ModelConfig,
    progress: Option<&ProgressHook>,
    options: GgufReadOptions,
) -> Result<Weights> {
    let mut tensors = HashMap::with_capacity(gguf.tensors.len() * 2);
    read_gguf_weights_into(gguf, config, progress, options, &mut |_, arrays| {
        tensors.extend(arrays);
        Ok(())
    })?;
    Ok(Weights::from_map(tensors))
}

/// [`read_gguf_weights_with_options`] handing the arrays of each file tensor to `sink` as soon
/// as they are read and converted (under the Hugging Face names; a quantized matrix gives its
/// `weight`, `scales` and `biases` together), with the layer (`blk.N`) it belongs to, so that
/// a caller can keep a part and free the rest before the next ([`crate::parallel::ReadCut`]).
///
/// Errors: as [`read_gguf_weights_with_options`], and `sink`'s.
pub fn read_gguf_weights_into(
    gguf: &GgufFile,
    config: &ModelConfig,
    progress: Option<&ProgressHook>,
    options: GgufReadOptions,
    sink: &mut dyn FnMut(Option<usize>, Vec<(String, Array)>) -> Result<()>,
) -> Result<()> {
    let conventions = conventions(gguf);
    let heads = [
        (".self_attn.q_proj.", config.num_attention_heads as i32),
        (".self_attn.k_proj.", config.num_key_value_heads() as i32),
    ];
    let mut counter = ReadCounter::start(progress, gguf.tensors.iter().map(|t| t.n_bytes));
    for info in &gguf.tensors {
        let mut arrays = Vec::new();
        for (name, array) in tensor_arrays(gguf, info, options.keep_blocks)? {
            let name = hf_name(&name, &conventions);
            let array = match heads.iter().find(|(p, _)| name.contains(p)) {
                Some((_, n_head)) if conventions.permuted_qk => unpermute_rows(&array, *n_head)?,
                _ => array,
            };
            arrays.push((name, array));
        }
        sink(layer_of(&info.name), arrays)?;
        counter.tensor(info.n_bytes);
    }
    counter.done();
    Ok(())
}

/// Bits of the affine triplet a tensor becomes, if it becomes one.
fn stored_bits(info: &GgufTensorInfo) -> Option<i32> {
    match info.ggml_type {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => Some(4),
        t if has_affine_form(t) => Some(8),
        GgmlType::Q6K if requantizes_q6_k(info) => Some(8),
        _ => None,
    }
}

/// Whether a `Q6_K` tensor is requantized to 8 bits (a 2-D `.weight` with whole groups of 32).
fn requantizes_q6_k(info: &GgufTensorInfo) -> bool {
    info.ggml_type == GgmlType::Q6K
        && info.name.ends_with(".weight")
        && info.dims.len() == 2
        && info.row_len().is_multiple_of(32)
}

/// The block format a tensor keeps under [`GgufReadOptions::keep_blocks`], if it is one of
/// the matrices kept: a 2-D `Q4_0` / `Q4_1` / `Q5_0` / `Q5_1` / `Q8_0` / `Q2_K` / `Q3_K` /
/// `Q4_K` / `Q5_K` / `Q6_K` `.weight` of a layer projection, of the head or of the token
/// embedding (looked up by [`mlx_rs::quant::block_rows`], and the tied head), with whole
/// blocks per row.
fn kept_block_format(info: &GgufTensorInfo) -> Option<mlx_rs::quant::BlockFormat> {
    use mlx_rs::quant::BlockFormat;
    let format = match info.ggml_type {
        GgmlType::Q4_0 => BlockFormat::Q4_0,
        GgmlType::Q4_1 => BlockFormat::Q4_1,
        GgmlType::Q5_0 => BlockFormat::Q5_0,
        GgmlType::Q5_1 => BlockFormat::Q5_1,
        GgmlType::Q8_0 => BlockFormat::Q8_0,
        GgmlType::Q2K => BlockFormat::Q2K,
        GgmlType::Q3K => BlockFormat::Q3K,
        GgmlType::Q4K => BlockFormat::Q4K,
        GgmlType::Q5K => BlockFormat::Q5K,
        GgmlType::Q6K => BlockFormat::Q6K,
        _ => return None,
    };
    let stem = info.name.strip_suffix(".weight")?;
    let projection = stem == "output"
        || stem == "token_embd"
        || stem
            .strip_prefix("blk.")
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(layer, part)| {
                layer.parse::<u32>().is_ok()
                    && matches!(
                        part,
                        "attn_q"
                            | "attn_k"
                            | "attn_v"
                            | "attn_output"
                            | "ffn_gate"
                            | "ffn_up"
                            | "ffn_down"
                    )
            });
    let whole = info
        .row_len()
        .is_multiple_of(format.values_per_block() as u64);
    (projection && info.dims.len() == 2 && whole).then_some(format)
}

/// Checks that every block's f16 factors (`Q4_1`, `Q5_1`, `Q4_K`, `Q5_K`: the first two;
/// `Q4_0`, `Q5_0`, `Q8_0`: d; `Q2_K`: d and dmin; `Q3_K`, `Q6_K`: d) are finite, as the affine conversion does
/// ([`ggml_quants`]).
fn check_block_factors(format: mlx_rs::quant::BlockFormat, bytes: &[u8]) -> Result<()> {
    use mlx_rs::quant::BlockFormat;
    let offsets: &[usize] = match format {
        BlockFormat::Q4_1 | BlockFormat::Q5_1 | BlockFormat::Q4K | BlockFormat::Q5K => &[0, 2],
        BlockFormat::Q4_0 | BlockFormat::Q5_0 | BlockFormat::Q8_0 => &[0],
        BlockFormat::Q2K => &[80, 82],
        BlockFormat::Q3K => &[108],
        BlockFormat::Q6K => &[208],
    };
    if !bytes.len().is_multiple_of(format.block_bytes()) {
        return Err(Error::Gguf(format!(
            "{} bytes are not whole {format} blocks",
            bytes.len()
        )));
    }
    for (i, block) in bytes.chunks_exact(format.block_bytes()).enumerate() {
        for &o in offsets {
            ggml_quants::scale_f16(block, o).map_err(|e| match e {
                Error::Gguf(m) => Error::Gguf(format!("{format} block {i}: {m}")),
                other => other,
            })?;
        }
    }
    Ok(())
}

/// The arrays one tensor becomes, under GGUF names (`P.weight`, the triplet `P.weight`,
/// `P.scales`, `P.biases`, or `P.blocks` when `keep_blocks` keeps it as stored).
fn tensor_arrays(
    gguf: &GgufFile,
    info: &GgufTensorInfo,
    keep_blocks: bool,
) -> Result<Vec<(String, Array)>> {
    let named = |e: Error| match e {
        Error::Gguf(m) => Error::Gguf(format!("tensor `{}`: {m}", info.name)),
        other => other,
    };
    let shape = info.shape();
    let bytes = gguf.read_tensor_data(info)?;
    let ty = info.ggml_type;
    if let Some(format) = kept_block_format(info).filter(|_| keep_blocks) {
        check_block_factors(format, &bytes).map_err(named)?;
        let blocks = info.row_len() as usize / format.values_per_block();
        let stem = &info.name[..info.name.len() - ".weight".len()];
        return Ok(vec![(
            format!("{stem}.blocks"),
            Array::from_bytes(
                &bytes,
                &[shape[0], blocks as i32, format.block_bytes() as i32],
                Dtype::Uint8,
            )?,
        )]);
    }
    let dense_dtype = match ty {
        GgmlType::F32 => Some(Dtype::Float32),
        GgmlType::F16 => Some(Dtype::Float16),
        GgmlType::Bf16 => Some(Dtype::Bfloat16),
        GgmlType::I8 => Some(Dtype::Int8),
        GgmlType::I16 => Some(Dtype::Int16),
        GgmlType::I32 => Some(Dtype::Int32),
        _ => None,
    };
    if let Some(dtype) = dense_dtype {
        return Ok(vec![(
            info.name.clone(),
            Array::from_bytes(&bytes, &shape, dtype)?,
        )]);
    }
    if has_affine_form(ty) {
        let stem = info.name.strip_suffix(".weight").ok_or_else(|| {
            Error::Gguf(format!(
                "{ty} tensor `{}` is not a `.weight` matrix",
                info.name
            ))
        })?;
        let t = ggml_quants::to_affine(ty, &bytes).map_err(named)?;
        drop(bytes);
        return triplet(stem, &shape, &t);
    }
    // Row by row: a whole-tensor f32 copy of a 151936 x 1536 head would be 0.9 GB.
    let row_len = info.row_len() as usize;
    if requantizes_q6_k(info) {
        let stem = &info.name[..info.name.len() - ".weight".len()];
        let t = ggml_quants::requantize_affine8(ty, &bytes, row_len).map_err(named)?;
        drop(bytes);
        return triplet(stem, &shape, &t);
    }
    let dense = ggml_quants::dequantize_to_f16(ty, &bytes, row_len).map_err(named)?;
    drop(bytes);
    Ok(vec![(
        info.name.clone(),
        Array::from_slice(&dense, &shape)?,
    )])
}

/// `P.weight` / `P.scales` / `P.biases` of an affine conversion; scales and biases in `float16`
/// when all of them are exact there, else `float32`.
fn triplet(stem: &str, shape: &[i32], t: &ggml_quants::Affine) -> Result<Vec<(String, Array)>> {
    let (cols, outer) = shape
        .split_last()
        .expect("tensors have at least one dimension");
    let mut packed_shape = outer.to_vec();
    packed_shape.push(cols * t.bits as i32 / 32);
    let mut group_shape = outer.to_vec();
    group_shape.push(cols / 32);
    let exact_in_f16 = |v: &[f32]| v.iter().all(|&x| half::f16::from_f32(x).to_f32() == x);
    let as_f16 = exact_in_f16(&t.scales) && exact_in_f16(&t.biases);
    let params = |v: &[f32]| -> Result<Array> {
        if as_f16 {
            let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
            Ok(Array::from_slice(&h, &group_shape)?)
        } else {
            Ok(Array::from_slice(v, &group_shape)?)
        }
    };
    Ok(vec![
        (
            format!("{stem}.weight"),
            Array::from_slice(&t.packed, &packed_shape)?,
        ),
        (format!("{stem}.scales"), params(&t.scales)?),
        (format!("{stem}.biases"), params(&t.biases)?),
    ])
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

/// The Hugging Face name of a GGUF tensor under a family's conventions (names it does not
/// know are kept as they are, so that the family reports them as unexpected).
///
/// ```
/// use mlx_models::families::{gemma3, llama};
/// use mlx_models::load::gguf::hf_name;
/// let llama = llama::FAMILY.gguf;
/// assert_eq!(hf_name("blk.3.attn_q.scales", &llama), "model.layers.3.self_attn.q_proj.scales");
/// assert_eq!(hf_name("token_embd.weight", &llama), "model.embed_tokens.weight");
/// assert_eq!(hf_name("output.weight", &llama), "lm_head.weight");
/// // `ffn_norm` is the norm before the MLP: Llama's `post_attention_layernorm`, Gemma 3's
/// // `pre_feedforward_layernorm`.
/// assert_eq!(hf_name("blk.0.ffn_norm.weight", &llama), "model.layers.0.post_attention_layernorm.weight");
/// let gemma = gemma3::FAMILY.gguf;
/// assert_eq!(hf_name("blk.0.ffn_norm.weight", &gemma), "model.layers.0.pre_feedforward_layernorm.weight");
/// ```
pub fn hf_name(name: &str, conventions: &crate::families::GgufConventions) -> String {
    let (stem, suffix) = match name.rsplit_once('.') {
        Some((stem, s @ ("weight" | "bias" | "scales" | "biases" | "blocks"))) => (stem, s),
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
    let family_module = conventions
        .tensor_names
        .iter()
        .find(|(gguf, _)| *gguf == part)
        .map(|(_, hf)| *hf);
    let module = match (family_module, part) {
        (Some(module), _) => module,
        (None, part) => match part {
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
        },
    };
    format!("model.layers.{layer}.{module}.{suffix}")
}

fn meta_number(gguf: &GgufFile, key: &str) -> Result<Option<f64>> {
    gguf.metadata_f64(key)
}

/// Builds the HF-style config of a GGUF file from its metadata and tensor table.
fn gguf_config(
    gguf: &GgufFile,
    arch: &str,
    family: &crate::families::Family,
) -> Result<ModelConfig> {
    let int = |v: f64, key: &str| -> Result<usize> {
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= i32::MAX as f64 {
            Ok(v as usize)
        } else {
            Err(Error::Gguf(format!(
                "metadata `{key}` = {v} is not a count"
            )))
        }
    };
    let float = |v: f64, key: &str| -> Result<f64> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(Error::ConfigValue {
                field: key.to_string(),
                value: v.to_string(),
                expected: "a finite, positive number",
            })
        }
    };
    let hf_names: HashMap<String, &GgufTensorInfo> = gguf
        .tensors
        .iter()
        .map(|t| (hf_name(&t.name, &family.gguf), t))
        .collect();
    let key = |k: &str| format!("{arch}.{k}");
    let mut c = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        c.insert(k.to_string(), v);
    };
    put("model_type", arch.into());
    // `feed_forward_length` and `head_count_kv` may be per-layer arrays (Gemma 4): the first
    // layer's value stands here, the family's metadata reader takes the rest.
    let number_or_first = |k: &str| -> Result<Option<f64>> {
        match gguf.get(k) {
            Some(MetaValue::Ints(v)) => Ok(v.first().map(|&x| x as f64)),
            _ => meta_number(gguf, k),
        }
    };
    for (field, k) in [
        ("num_hidden_layers", "block_count"),
        ("hidden_size", "embedding_length"),
        ("intermediate_size", "feed_forward_length"),
        ("num_attention_heads", "attention.head_count"),
    ] {
        let k = key(k);
        let v = number_or_first(&k)?
            .ok_or_else(|| Error::Gguf(format!("metadata `{k}` is missing")))?;
        put(field, int(v, &k)?.into());
    }
    for (field, k) in [
        ("num_key_value_heads", "attention.head_count_kv"),
        ("head_dim", "attention.key_length"),
        ("max_position_embeddings", "context_length"),
    ] {
        let k = key(k);
        if let Some(v) = number_or_first(&k)? {
            put(field, int(v, &k)?.into());
        }
    }
    let k = key("attention.layer_norm_rms_epsilon");
    if let Some(eps) = meta_number(gguf, &k)? {
        put("rms_norm_eps", float(eps, &k)?.into());
    }
    let k = key("rope.freq_base");
    if let Some(theta) = meta_number(gguf, &k)? {
        put("rope_theta", float(theta, &k)?.into());
    }
    let scaling = match gguf.metadata_str(&key("rope.scaling.type")) {
        Ok(Some(t)) if t != "none" => Some(t.to_string()),
        _ => None,
    };
    if let Some(rope_type) = scaling {
        let mut r = serde_json::Map::new();
        r.insert("rope_type".into(), rope_type.into());
        let k = key("rope.scaling.factor");
        if let Some(f) = meta_number(gguf, &k)? {
            r.insert("factor".into(), float(f, &k)?.into());
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
    let vocab = match gguf.metadata_strings("tokenizer.ggml.tokens")? {
        Some(tokens) => tokens.len(),
        None => match hf_names.get("model.embed_tokens.weight") {
            Some(e) => e.shape().first().copied().unwrap_or(0) as usize,
            None => return Err(Error::MissingTensor("token_embd.weight".into())),
        },
    };
    put("vocab_size", vocab.into());
    put(
        "tie_word_embeddings",
        (!hf_names.contains_key("lm_head.weight")).into(),
    );
    if arch == "llama" {
        put(
            "attention_bias",
            hf_names
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
    if let Some(q) = quantization_entry(gguf, &family.gguf) {
        put("quantization", q);
    }
    (family.gguf.metadata)(gguf, arch, &mut c)?;
    let text = serde_json::Value::Object(c).to_string();
    let mut config = ModelConfig::from_json(&text)?;
    config.source_format = crate::config::SourceFormat::Gguf;
    Ok(config)
}

/// The `quantization` config entry (MLX's format) describing the triplets the tensors become:
/// group size 32; bits from the tensor types; the most common bits as the default, others as
/// per-module overrides.
fn quantization_entry(
    gguf: &GgufFile,
    conventions: &crate::families::GgufConventions,
) -> Option<serde_json::Value> {
    let mut bits_of: BTreeMap<String, i32> = BTreeMap::new();
    for info in &gguf.tensors {
        if let (Some(bits), Some(stem)) = (stored_bits(info), info.name.strip_suffix(".weight")) {
            let module = hf_name(&format!("{stem}.weight"), conventions);
            let module = module
                .strip_suffix(".weight")
                .unwrap_or(&module)
                .to_string();
            bits_of.insert(module, bits);
        }
    }
    if bits_of.is_empty() {
        return None;
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
    Some(serde_json::Value::Object(q))
}

/// The layer index of a GGUF tensor named `blk.N.…`.
///
/// ```
/// use mlx_models::load::gguf::layer_of;
/// assert_eq!(layer_of("blk.3.attn_q.weight"), Some(3));
/// assert_eq!(layer_of("token_embd.weight"), None);
/// ```
pub fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Bytes the tensors of `gguf` take once loaded with `dtype` as the compute dtype (quantized
/// triplets kept when `keep_quantized`), plus the largest tensor's transient decoding buffer:
/// the weights' share of the memory budget ([`super::budget`]). Counts every K-quant matrix as
/// its affine conversion; [`loaded_bytes_kept`] counts the ones kept as stored.
pub fn loaded_bytes(gguf: &GgufFile, dtype: Dtype, keep_quantized: bool) -> u64 {
    loaded_bytes_kept(gguf, dtype, keep_quantized, GgufReadOptions::default())
}

/// [`loaded_bytes`] when the tensors are read with `read`: a matrix that
/// [`GgufReadOptions::keep_blocks`] keeps as stored takes the file's bytes (and as much
/// transiently, the read buffer), not its affine conversion's.
///
/// ```no_run
/// use mlx_models::load::gguf::{loaded_bytes, loaded_bytes_kept, open_gguf, GgufReadOptions};
/// let (file, _) = open_gguf(std::path::Path::new("model-Q4_K_M.gguf"))?;
/// let kept = GgufReadOptions { keep_blocks: true };
/// let dtype = mlx_rs::Dtype::Float32;
/// assert!(loaded_bytes_kept(&file, dtype, true, kept) <= loaded_bytes(&file, dtype, true));
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn loaded_bytes_kept(
    gguf: &GgufFile,
    dtype: Dtype,
    keep_quantized: bool,
    read: GgufReadOptions,
) -> u64 {
    let size = dtype.size_in_bytes() as u64;
    let mut total = 0u64;
    let mut transient = 0u64;
    for t in &gguf.tensors {
        let n = t.n_elements;
        if read.keep_blocks && kept_block_format(t).is_some() {
            total = total.saturating_add(t.n_bytes);
            transient = transient.max(t.n_bytes);
            continue;
        }
        total = total.saturating_add(match stored_bits(t) {
            // packed codes + f32 scales and biases per group of 32, at most
            Some(bits) if keep_quantized => n * bits as u64 / 8 + n / 32 * 8,
            _ => n.saturating_mul(size),
        });
        transient = transient.max(t.n_bytes.saturating_add(n.saturating_mul(4)));
    }
    total.saturating_add(transient)
}
