//! The project's own GGUF reader: a bounded parser of the header (metadata and tensor table) and
//! checked reads of tensor data, in safe Rust. Every model file is untrusted input, so MLX never
//! receives a path to a GGUF file here, only arrays built from bytes this module validated.
//!
//! # What is checked before any tensor data is read
//!
//! - the magic and the version (2 or 3; version 1 used 32-bit counts and is refused);
//! - every count (metadata entries, tensors, array lengths, string lengths) against the bytes
//!   left in the file and against [`GgufLimits`], before anything of that size is allocated;
//! - metadata value types, nesting depth of arrays, duplicate keys and tensor names;
//! - `general.alignment` (a power of two, at most 2^20);
//! - each tensor: 1 to 4 dimensions, each in `1..=i32::MAX` (MLX's shape type), a known ggml
//!   type, a row length that is a whole number of that type's blocks, an element count (at
//!   most [`MAX_TENSOR_ELEMENTS`]) and a byte size computed with overflow-checked arithmetic, an offset aligned to the file's
//!   alignment, and data that lies inside the file;
//! - the tensors' data regions do not overlap.
//!
//! A file is opened read-only and only if it is a regular file (a FIFO would block, `/dev/zero`
//! never ends). The data of a tensor is read with positioned reads ([`GgufFile::read_tensor_data`]),
//! once, when the loader converts it; the file itself is never written.
//!
//! ```
//! use mlx_models::load::gguf_file::{GgufFile, GgufLimits};
//! // "GGUF", version 3, no tensors, one metadata entry: general.architecture = "llama".
//! let mut bytes = b"GGUF".to_vec();
//! bytes.extend(3u32.to_le_bytes());
//! bytes.extend(0u64.to_le_bytes()); // tensors
//! bytes.extend(1u64.to_le_bytes()); // metadata entries
//! let key = b"general.architecture";
//! bytes.extend((key.len() as u64).to_le_bytes());
//! bytes.extend(key);
//! bytes.extend(8u32.to_le_bytes()); // type: string
//! bytes.extend(5u64.to_le_bytes());
//! bytes.extend(b"llama");
//! let file = GgufFile::parse(&bytes[..], bytes.len() as u64, &GgufLimits::default())?;
//! assert_eq!(file.metadata_str("general.architecture")?, Some("llama"));
//! // The same header cut short is an error, not a panic.
//! assert!(GgufFile::parse(&bytes[..30], 30, &GgufLimits::default()).is_err());
//! # Ok::<(), mlx_models::Error>(())
//! ```

use super::files::OpenedFile;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read};
use std::path::Path;

/// Bounds on what a GGUF header may declare; anything above is an [`Error::Gguf`].
///
/// The defaults are far above real checkpoints (a 262,144-token vocabulary with its merges is
/// ~20 MB of header) and low enough that a hostile header cannot make the parser allocate much
/// more than the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufLimits {
    /// Bytes of header (metadata and tensor table) at most.
    pub max_header_bytes: u64,
    /// Bytes of one string at most.
    pub max_string_bytes: u64,
    /// Elements of one metadata array at most.
    pub max_array_len: u64,
    /// Metadata entries at most.
    pub max_metadata_entries: u64,
    /// Tensors at most.
    pub max_tensors: u64,
    /// Nesting depth of metadata arrays (an array of arrays is depth 2).
    pub max_array_depth: u32,
}

impl Default for GgufLimits {
    fn default() -> Self {
        GgufLimits {
            max_header_bytes: 512 << 20,
            max_string_bytes: 16 << 20,
            max_array_len: 1 << 24,
            max_metadata_entries: 1 << 16,
            max_tensors: 1 << 16,
            max_array_depth: 2,
        }
    }
}

/// A ggml tensor type this reader knows the block layout of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
    /// 4-bit, blocks of 32 with an f16 scale (18 bytes).
    Q4_0,
    /// 4-bit, blocks of 32 with f16 scale and min (20 bytes).
    Q4_1,
    /// 5-bit, blocks of 32 with an f16 scale (22 bytes).
    Q5_0,
    /// 5-bit, blocks of 32 with f16 scale and min (24 bytes).
    Q5_1,
    /// 8-bit, blocks of 32 with an f16 scale (34 bytes).
    Q8_0,
    /// 2-bit K-quant, super-blocks of 256 (84 bytes).
    Q2K,
    /// 3-bit K-quant, super-blocks of 256 (110 bytes).
    Q3K,
    /// 4-bit K-quant, super-blocks of 256 (144 bytes).
    Q4K,
    /// 5-bit K-quant, super-blocks of 256 (176 bytes).
    Q5K,
    /// 6-bit K-quant, super-blocks of 256 (210 bytes).
    Q6K,
    /// 8-bit integers.
    I8,
    /// 16-bit integers.
    I16,
    /// 32-bit integers.
    I32,
    /// A type id this reader has a name for but no layout (`IQ*`, `TQ*`, `MXFP4`, `Q8_1`,
    /// `Q8_K`, `I64`, `F64`): refused at load with its name.
    Other(u32),
}

impl GgmlType {
    /// The type of a ggml type id; [`Error::Gguf`] for an id ggml does not define.
    pub fn from_id(id: u32) -> Result<GgmlType> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            24 => GgmlType::I8,
            25 => GgmlType::I16,
            26 => GgmlType::I32,
            30 => GgmlType::Bf16,
            9 | 15..=23 | 27..=29 | 34 | 35 | 39 => GgmlType::Other(id),
            _ => return Err(Error::Gguf(format!("unknown ggml tensor type id {id}"))),
        })
    }

    /// ggml's name of the type (`Q4_K`, `F16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Bf16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::Other(id) => match id {
                9 => "Q8_1",
                15 => "Q8_K",
                16 => "IQ2_XXS",
                17 => "IQ2_XS",
                18 => "IQ3_XXS",
                19 => "IQ1_S",
                20 => "IQ4_NL",
                21 => "IQ3_S",
                22 => "IQ2_S",
                23 => "IQ4_XS",
                27 => "I64",
                28 => "F64",
                29 => "IQ1_M",
                34 => "TQ1_0",
                35 => "TQ2_0",
                39 => "MXFP4",
                _ => "unknown",
            },
        }
    }

    /// `(elements per block, bytes per block)`; `None` for [`GgmlType::Other`].
    pub fn block_layout(self) -> Option<(u64, u64)> {
        Some(match self {
            GgmlType::F32 | GgmlType::I32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 | GgmlType::I16 => (1, 2),
            GgmlType::I8 => (1, 1),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2K => (256, 84),
            GgmlType::Q3K => (256, 110),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
            GgmlType::Other(_) => return None,
        })
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value. Integers of every width (and booleans in arrays) become `i64`; floats
/// become `f64`.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// A boolean.
    Bool(bool),
    /// An integer (any width; `u64` values above `i64::MAX` are refused).
    Int(i64),
    /// A float (`f32` or `f64`).
    Float(f64),
    /// A string (invalid UTF-8 is replaced, as `String::from_utf8_lossy` does).
    String(String),
    /// An array of strings.
    Strings(Vec<String>),
    /// An array of integers or booleans.
    Ints(Vec<i64>),
    /// An array of floats.
    Floats(Vec<f64>),
    /// An array of arrays.
    Arrays(Vec<MetaValue>),
}

impl MetaValue {
    /// A short name of the kind, for error messages.
    fn kind(&self) -> &'static str {
        match self {
            MetaValue::Bool(_) => "a boolean",
            MetaValue::Int(_) => "an integer",
            MetaValue::Float(_) => "a float",
            MetaValue::String(_) => "a string",
            MetaValue::Strings(_) => "an array of strings",
            MetaValue::Ints(_) => "an array of integers",
            MetaValue::Floats(_) => "an array of floats",
            MetaValue::Arrays(_) => "an array of arrays",
        }
    }
}

/// One entry of the tensor table, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// The tensor's name in the file (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in GGUF order (innermost first), each in `1..=i32::MAX`.
    pub dims: Vec<u64>,
    /// The element type.
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
    /// Elements.
    pub n_elements: u64,
}

impl GgufTensorInfo {
    /// The shape in MLX's (row-major) order: GGUF's dimensions reversed.
    pub fn shape(&self) -> Vec<i32> {
        // Every dimension was checked to fit in i32 when the table was read.
        self.dims.iter().rev().map(|&d| d as i32).collect()
    }

    /// Length of a row (the innermost dimension).
    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    /// Number of rows (all dimensions but the innermost).
    pub fn rows(&self) -> u64 {
        self.n_elements / self.dims[0]
    }
}

/// A parsed and validated GGUF header: metadata and tensor table.
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// The format version (2 or 3).
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, MetaValue>,
    /// The tensors, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// `general.alignment` (32 when absent).
    pub alignment: u64,
    /// Where the data section starts.
    pub data_offset: u64,
    /// The length of the file.
    pub file_len: u64,
    /// The file, when the header was read with [`GgufFile::open`].
    source: Option<OpenedFile>,
}

/// The most elements one tensor may have: `i32::MAX`. MLX shapes are 32-bit, and several of
/// its kernels (and its own GGUF loader, which wrote past a buffer for 2^32 weights) compute
/// element offsets in 32 bits. The largest tensors of released models (a 128k-vocabulary
/// embedding of width 16384) stay below it.
pub const MAX_TENSOR_ELEMENTS: u64 = i32::MAX as u64;

/// ggml's maximum number of dimensions.
const MAX_DIMS: u32 = 4;

impl GgufFile {
    /// Opens `path` read-only (a regular file only) and parses its header with the default
    /// [`GgufLimits`].
    ///
    /// Errors: [`Error::Io`] when it cannot be opened, [`Error::NotRegularFile`], and
    /// [`Error::Gguf`] for anything malformed (see the [module docs](self)).
    pub fn open(path: &Path) -> Result<GgufFile> {
        GgufFile::open_with(path, &GgufLimits::default())
    }

    /// [`GgufFile::open`] with explicit limits.
    pub fn open_with(path: &Path, limits: &GgufLimits) -> Result<GgufFile> {
        let file = OpenedFile::open(path)?;
        let len = file.byte_len()?;
        let mut parsed = GgufFile::parse(
            BufReader::with_capacity(1 << 16, file.reader()),
            len,
            limits,
        )
        .map_err(|e| match e {
            Error::Gguf(m) => Error::Gguf(format!("{}: {m}", path.display())),
            other => other,
        })?;
        parsed.source = Some(file);
        Ok(parsed)
    }

    /// Parses a header from `reader`, which yields the file from its first byte; `file_len` is
    /// the whole file's length (tensor data must lie within it).
    ///
    /// Errors: [`Error::Gguf`] naming what is wrong.
    pub fn parse(reader: impl Read, file_len: u64, limits: &GgufLimits) -> Result<GgufFile> {
        let mut r = Bounded {
            r: reader,
            left: file_len.min(limits.max_header_bytes),
            read: 0,
            limits,
        };
        if r.bytes(4)? != b"GGUF" {
            return Err(Error::Gguf("not a GGUF file (bad magic)".into()));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(Error::Gguf(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        if n_tensors > limits.max_tensors || n_tensors > r.left / 24 {
            return Err(Error::Gguf(format!(
                "the header declares {n_tensors} tensors, more than the file can describe \
                 (limit {})",
                limits.max_tensors
            )));
        }
        if n_kv > limits.max_metadata_entries || n_kv > r.left / 12 {
            return Err(Error::Gguf(format!(
                "the header declares {n_kv} metadata entries, more than the file can hold \
                 (limit {})",
                limits.max_metadata_entries
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty, 0).map_err(|e| context(e, &key))?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(Error::Gguf(format!("metadata key `{key}` appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(MetaValue::Int(a)) if *a > 0 && *a <= 1 << 20 && (*a as u64).is_power_of_two() => {
                *a as u64
            }
            Some(other) => {
                return Err(Error::Gguf(format!(
                    "`general.alignment` must be a power of two up to 2^20, got {other:?}"
                )))
            }
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = HashSet::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let info = r.tensor_info()?;
            if !names.insert(info.0.clone()) {
                return Err(Error::Gguf(format!("tensor `{}` appears twice", info.0)));
            }
            tensors.push(info);
        }
        let data_offset = r.read.div_ceil(alignment) * alignment;
        let tensors = tensors
            .into_iter()
            .map(|(name, dims, ty, rel)| {
                place_tensor(name, dims, ty, rel, alignment, data_offset, file_len)
            })
            .collect::<Result<Vec<_>>>()?;
        check_no_overlap(&tensors)?;
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            file_len,
            source: None,
        })
    }

    /// The file this header was read from ([`GgufFile::open`]).
    pub fn path(&self) -> Option<&Path> {
        self.source.as_ref().map(OpenedFile::path)
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// A string value; [`Error::Gguf`] when the key holds something else.
    pub fn metadata_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong_kind(key, v, "a string")),
        }
    }

    /// An array of strings; [`Error::Gguf`] when the key holds something else.
    pub fn metadata_strings(&self, key: &str) -> Result<Option<&[String]>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Strings(s)) => Ok(Some(s)),
            Some(v) => Err(wrong_kind(key, v, "an array of strings")),
        }
    }

    /// A number (integer, float or boolean) as `f64`; [`Error::Gguf`] for other kinds.
    pub fn metadata_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Int(i)) => Ok(Some(*i as f64)),
            Some(MetaValue::Float(f)) => Ok(Some(*f)),
            Some(MetaValue::Bool(b)) => Ok(Some(f64::from(u8::from(*b)))),
            Some(v) => Err(wrong_kind(key, v, "a number")),
        }
    }

    /// An integer or boolean scalar as `i64`; [`Error::Gguf`] for other kinds.
    pub fn metadata_int(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Int(i)) => Ok(Some(*i)),
            Some(MetaValue::Bool(b)) => Ok(Some(i64::from(*b))),
            Some(v) => Err(wrong_kind(key, v, "an integer")),
        }
    }

    /// An array of integers (or booleans); [`Error::Gguf`] for other kinds.
    pub fn metadata_ints(&self, key: &str) -> Result<Option<&[i64]>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Ints(v)) => Ok(Some(v)),
            Some(v) => Err(wrong_kind(key, v, "an array of integers")),
        }
    }

    /// An array of floats (`f32` or `f64` in the file); [`Error::Gguf`] for other kinds.
    ///
    /// ```
    /// # use mlx_models::load::gguf_file::{GgufFile, GgufLimits};
    /// // GGUF v3 header: no tensors, one key `s` holding an array (type 9) of 2 f32 (type 6).
    /// let mut b = b"GGUF".to_vec();
    /// b.extend(3u32.to_le_bytes());
    /// b.extend(0u64.to_le_bytes());
    /// b.extend(1u64.to_le_bytes());
    /// b.extend(1u64.to_le_bytes());
    /// b.push(b's');
    /// b.extend(9u32.to_le_bytes());
    /// b.extend(6u32.to_le_bytes());
    /// b.extend(2u64.to_le_bytes());
    /// b.extend(0.5f32.to_le_bytes());
    /// b.extend((-2.0f32).to_le_bytes());
    /// let f = GgufFile::parse(&b[..], b.len() as u64, &GgufLimits::default()).unwrap();
    /// assert_eq!(f.metadata_floats("s").unwrap(), Some(&[0.5, -2.0][..]));
    /// assert_eq!(f.metadata_floats("absent").unwrap(), None);
    /// ```
    pub fn metadata_floats(&self, key: &str) -> Result<Option<&[f64]>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Floats(v)) => Ok(Some(v)),
            Some(v) => Err(wrong_kind(key, v, "an array of floats")),
        }
    }

    /// A tensor's entry by name.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Reads the data of `tensor` (from the file given to [`GgufFile::open`]): exactly
    /// `tensor.n_bytes` bytes at `tensor.offset`, with positioned reads on the read-only
    /// handle the header was read through.
    ///
    /// Errors: [`Error::InvalidArgument`] when the header was not read from a file;
    /// [`Error::Io`] when the file is shorter than it was when the header was read.
    pub fn read_tensor_data(&self, tensor: &GgufTensorInfo) -> Result<Vec<u8>> {
        let file = self.source.as_ref().ok_or_else(|| {
            Error::InvalidArgument("this GGUF header was not read from a file".into())
        })?;
        file.read_range(tensor.offset, tensor.n_bytes)
    }
}

fn wrong_kind(key: &str, value: &MetaValue, expected: &str) -> Error {
    Error::Gguf(format!(
        "metadata `{key}` is {}, expected {expected}",
        value.kind()
    ))
}

fn context(err: Error, key: &str) -> Error {
    match err {
        Error::Gguf(m) => Error::Gguf(format!("metadata `{key}`: {m}")),
        other => other,
    }
}

/// Checks a tensor entry against the file and computes its absolute offset and sizes.
fn place_tensor(
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    relative: u64,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<GgufTensorInfo> {
    let bad = |what: String| Error::Gguf(format!("tensor `{name}`: {what}"));
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("its element count overflows".into()))?;
    if n_elements > MAX_TENSOR_ELEMENTS {
        return Err(bad(format!(
            "{n_elements} elements exceed the {MAX_TENSOR_ELEMENTS} an MLX array may index"
        )));
    }
    // Types without a layout here cannot be sized; they are refused at load by name. Their
    // region is taken as empty so that the table can still be listed.
    let (block, type_size) = ggml_type.block_layout().unwrap_or((1, 0));
    if !dims[0].is_multiple_of(block) {
        return Err(bad(format!(
            "rows of {} elements are not whole {}-element {ggml_type} blocks",
            dims[0], block
        )));
    }
    let n_bytes = (n_elements / block)
        .checked_mul(type_size)
        .ok_or_else(|| bad("its byte size overflows".into()))?;
    if !relative.is_multiple_of(alignment) {
        return Err(bad(format!(
            "its data offset {relative} is not a multiple of the alignment {alignment}"
        )));
    }
    let offset = data_offset
        .checked_add(relative)
        .ok_or_else(|| bad("its data offset overflows".into()))?;
    let end = offset
        .checked_add(n_bytes)
        .ok_or_else(|| bad("its data end overflows".into()))?;
    if end > file_len {
        return Err(bad(format!(
            "its {n_bytes} bytes of data at offset {offset} lie beyond the end of the \
             {file_len}-byte file"
        )));
    }
    Ok(GgufTensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes,
        n_elements,
    })
}

/// [`Error::Gguf`] when two tensors' data regions overlap.
fn check_no_overlap(tensors: &[GgufTensorInfo]) -> Result<()> {
    let mut regions: Vec<&GgufTensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    regions.sort_by_key(|t| t.offset);
    for pair in regions.windows(2) {
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(Error::Gguf(format!(
                "the data of tensors `{}` and `{}` overlap",
                pair[0].name, pair[1].name
            )));
        }
    }
    Ok(())
}

/// A reader that refuses to read past `left` bytes and counts what it read.
struct Bounded<'l, R> {
    r: R,
    left: u64,
    read: u64,
    limits: &'l GgufLimits,
}

impl<R: Read> Bounded<'_, R> {
    fn take(&mut self, n: u64) -> Result<()> {
        if n > self.left {
            return Err(Error::Gguf(format!(
                "truncated header: {n} more bytes needed at byte {}, {} left",
                self.read, self.left
            )));
        }
        self.left -= n;
        self.read += n;
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        self.take(buf.len() as u64)?;
        self.r
            .read_exact(buf)
            .map_err(|e| Error::Gguf(format!("reading the header: {e}")))
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        // `take` first: nothing is allocated for a length the file cannot hold.
        self.take(n)?;
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| Error::Gguf(format!("reading the header: {e}")))?;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        if n > self.limits.max_string_bytes {
            return Err(Error::Gguf(format!(
                "a string of {n} bytes exceeds the {}-byte limit",
                self.limits.max_string_bytes
            )));
        }
        let b = self.bytes(n)?;
        Ok(match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// A scalar of a numeric type id as an i64 / f64 / bool value.
    fn scalar(&mut self, ty: u32) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::Int(i64::from(self.array::<1>()?[0])),
            1 => MetaValue::Int(i64::from(i8::from_le_bytes(self.array()?))),
            2 => MetaValue::Int(i64::from(u16::from_le_bytes(self.array()?))),
            3 => MetaValue::Int(i64::from(i16::from_le_bytes(self.array()?))),
            4 => MetaValue::Int(i64::from(u32::from_le_bytes(self.array()?))),
            5 => MetaValue::Int(i64::from(i32::from_le_bytes(self.array()?))),
            6 => MetaValue::Float(f64::from(f32::from_le_bytes(self.array()?))),
            7 => match self.array::<1>()?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(Error::Gguf(format!("boolean byte {b} is neither 0 nor 1"))),
            },
            10 => {
                let v = u64::from_le_bytes(self.array()?);
                MetaValue::Int(
                    i64::try_from(v).map_err(|_| {
                        Error::Gguf(format!("the unsigned value {v} is out of range"))
                    })?,
                )
            }
            11 => MetaValue::Int(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array()?)),
            t => return Err(Error::Gguf(format!("unknown metadata value type {t}"))),
        })
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<MetaValue> {
        match ty {
            8 => Ok(MetaValue::String(self.string()?)),
            9 => self.array_value(depth + 1),
            t => self.scalar(t),
        }
    }

    fn array_value(&mut self, depth: u32) -> Result<MetaValue> {
        if depth > self.limits.max_array_depth {
            return Err(Error::Gguf(format!(
                "arrays nested deeper than {}",
                self.limits.max_array_depth
            )));
        }
        let elem = self.u32()?;
        let count = self.u64()?;
        let min_size: u64 = match elem {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            t => return Err(Error::Gguf(format!("unknown array element type {t}"))),
        };
        if count > self.limits.max_array_len || count > self.left / min_size {
            return Err(Error::Gguf(format!(
                "an array of {count} elements exceeds the file or the {}-element limit",
                self.limits.max_array_len
            )));
        }
        let n = count as usize;
        Ok(match elem {
            8 => MetaValue::Strings((0..n).map(|_| self.string()).collect::<Result<_>>()?),
            9 => MetaValue::Arrays(
                (0..n)
                    .map(|_| self.array_value(depth + 1))
                    .collect::<Result<_>>()?,
            ),
            6 | 12 => MetaValue::Floats(
                (0..n)
                    .map(|_| match self.scalar(elem)? {
                        MetaValue::Float(f) => Ok(f),
                        _ => unreachable!("float element types give floats"),
                    })
                    .collect::<Result<_>>()?,
            ),
            _ => MetaValue::Ints(
                (0..n)
                    .map(|_| match self.scalar(elem)? {
                        MetaValue::Int(i) => Ok(i),
                        MetaValue::Bool(b) => Ok(i64::from(b)),
                        _ => unreachable!("integer element types give integers"),
                    })
                    .collect::<Result<_>>()?,
            ),
        })
    }

    /// (name, dims, type, relative offset) of one tensor-table entry.
    fn tensor_info(&mut self) -> Result<(String, Vec<u64>, GgmlType, u64)> {
        let name = self.string()?;
        let n_dims = self.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::Gguf(format!(
                "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = self.u64()?;
            if d == 0 || d > i32::MAX as u64 {
                return Err(Error::Gguf(format!(
                    "tensor `{name}` has a dimension of {d} (1 to {} allowed)",
                    i32::MAX
                )));
            }
            dims.push(d);
        }
        let ggml_type = GgmlType::from_id(self.u32()?).map_err(|e| context_tensor(e, &name))?;
        let offset = self.u64()?;
        Ok((name, dims, ggml_type, offset))
    }
}

fn context_tensor(err: Error, name: &str) -> Error {
    match err {
        Error::Gguf(m) => Error::Gguf(format!("tensor `{name}`: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal header writer for the unit tests (the hostile corpus comes from
    /// scripts/fixtures/hostile_files.py).
    struct W(Vec<u8>);

    impl W {
        fn new(n_tensors: u64, n_kv: u64) -> W {
            let mut b = b"GGUF".to_vec();
            b.extend(3u32.to_le_bytes());
            b.extend(n_tensors.to_le_bytes());
            b.extend(n_kv.to_le_bytes());
            W(b)
        }
        fn str(&mut self, s: &str) -> &mut W {
            self.0.extend((s.len() as u64).to_le_bytes());
            self.0.extend(s.as_bytes());
            self
        }
        fn u32(&mut self, v: u32) -> &mut W {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut W {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut W {
            self.str(name).u32(dims.len() as u32);
            for &d in dims {
                self.u64(d);
            }
            self.u32(ty).u64(offset)
        }
        fn pad_to_data(&mut self, data: &[u8]) -> Vec<u8> {
            let mut b = self.0.clone();
            b.resize(b.len().div_ceil(32) * 32, 0);
            b.extend(data);
            b
        }
    }

    fn parse(bytes: &[u8]) -> Result<GgufFile> {
        GgufFile::parse(bytes, bytes.len() as u64, &GgufLimits::default())
    }

    #[test]
    fn reads_metadata_kinds_and_a_tensor() {
        let mut w = W::new(1, 4);
        w.str("a.u8").u32(0);
        w.0.push(200);
        w.str("a.f32").u32(6).u32(1.5f32.to_bits());
        w.str("a.ints").u32(9).u32(5).u64(3);
        for v in [-1i32, 0, 7] {
            w.0.extend(v.to_le_bytes());
        }
        w.str("a.strs").u32(9).u32(8).u64(2).str("x").str("yz");
        w.tensor("t", &[4, 2], 0, 0);
        let bytes = w.pad_to_data(&[0u8; 32]);
        let f = parse(&bytes).unwrap();
        assert_eq!(f.metadata_int("a.u8").unwrap(), Some(200));
        assert_eq!(f.metadata_f64("a.f32").unwrap(), Some(1.5));
        assert_eq!(f.metadata_ints("a.ints").unwrap(), Some(&[-1i64, 0, 7][..]));
        assert_eq!(
            f.metadata_strings("a.strs").unwrap().unwrap(),
            &["x".to_string(), "yz".to_string()]
        );
        let t = &f.tensors[0];
        assert_eq!((t.shape(), t.n_bytes, t.n_elements), (vec![2, 4], 32, 8));
        assert_eq!(t.offset % 32, 0);
        assert!(matches!(f.metadata_str("a.u8"), Err(Error::Gguf(_))));
    }

    #[test]
    fn refuses_what_the_file_cannot_hold() {
        // A string longer than the file.
        let mut w = W::new(0, 1);
        w.str("k").u32(8).u64(1 << 40);
        assert!(matches!(parse(&w.0), Err(Error::Gguf(m)) if m.contains("string")));
        // An array of 2^60 strings.
        let mut w = W::new(0, 1);
        w.str("k").u32(9).u32(8).u64(1 << 60);
        assert!(matches!(parse(&w.0), Err(Error::Gguf(m)) if m.contains("array")));
        // 2^40 tensors.
        let w = W::new(1 << 40, 0);
        assert!(matches!(parse(&w.0), Err(Error::Gguf(m)) if m.contains("tensors")));
        // Arrays nested too deep.
        let mut w = W::new(0, 1);
        w.str("k").u32(9);
        for _ in 0..4 {
            w.u32(9).u64(1);
        }
        w.u32(0).u64(0);
        assert!(matches!(parse(&w.0), Err(Error::Gguf(m)) if m.contains("nested")));
    }

    #[test]
    fn refuses_bad_tensor_entries() {
        let cases: [(&[u64], u32, u64, &str); 6] = [
            (&[1 << 31], 0, 0, "dimension"),
            (&[0], 0, 0, "dimension"),
            (&[16], 2, 0, "blocks"),
            (&[32], 0, 0, "beyond the end"),
            (&[4], 0, 4, "alignment"),
            (&[4], 77, 0, "unknown ggml tensor type"),
        ];
        for (dims, ty, offset, what) in cases {
            let mut w = W::new(1, 0);
            w.tensor("t", dims, ty, offset);
            let bytes = w.pad_to_data(&[0u8; 64]);
            match parse(&bytes) {
                Err(Error::Gguf(m)) => assert!(m.contains(what), "{dims:?}: {m}"),
                other => panic!("{dims:?} {ty}: {other:?}"),
            }
        }
        let mut w = W::new(1, 0);
        w.tensor("t", &[1, 1, 1, 1, 1], 0, 0);
        assert!(parse(&w.pad_to_data(&[0u8; 32])).is_err());
    }

    #[test]
    fn refuses_overlaps_and_duplicates() {
        let mut w = W::new(2, 0);
        w.tensor("a", &[8], 0, 0).tensor("b", &[8], 0, 0);
        let err = parse(&w.pad_to_data(&[0u8; 64])).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
        let mut w = W::new(2, 0);
        w.tensor("a", &[8], 0, 0).tensor("a", &[8], 0, 32);
        let err = parse(&w.pad_to_data(&[0u8; 64])).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        let mut w = W::new(0, 2);
        w.str("k").u32(4).u32(1).str("k").u32(4).u32(2);
        assert!(parse(&w.0).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn every_prefix_of_a_valid_file_is_an_error_not_a_panic() {
        let mut w = W::new(1, 1);
        w.str("general.architecture").u32(8).str("llama");
        w.tensor("t", &[32, 2], 8, 0);
        let bytes = w.pad_to_data(&[0u8; 68]);
        assert!(parse(&bytes).is_ok());
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
    }
}
