//! The project's own safetensors reader: the header is read with a bounded read, parsed with
//! serde and validated before any tensor data is read, and tensors are read with positioned
//! reads into arrays built from the checked bytes. MLX never receives a path to a safetensors
//! file here.
//!
//! # Checks
//!
//! - the header length (8 bytes, little-endian) is at most [`MAX_HEADER_BYTES`] and within the
//!   file; the header is a JSON object of tensors plus an optional `__metadata__` map of
//!   strings;
//! - each tensor has a known dtype, at most 8 dimensions, each at most `i32::MAX` (MLX's shape
//!   type: a dimension of 2^32 + 32 is refused, not read as 32), at most
//!   [`MAX_TENSOR_ELEMENTS`] elements, and a byte
//!   size — computed with overflow checks — equal to its `data_offsets` span;
//! - the spans lie within the data section, do not overlap, and leave no gap (the format
//!   requires the data to be fully indexed).
//!
//! ```
//! use mlx_models::load::safetensors_file::SafetensorsFile;
//! let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
//! let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
//! bytes.extend(header);
//! bytes.extend(1.0f32.to_le_bytes());
//! bytes.extend(2.0f32.to_le_bytes());
//! let file = SafetensorsFile::parse(&bytes[..], bytes.len() as u64)?;
//! assert_eq!(file.tensors[0].shape, vec![2]);
//! // A shape that does not match the data span is refused.
//! let bad = br#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
//! let mut bytes = (bad.len() as u64).to_le_bytes().to_vec();
//! bytes.extend(bad);
//! bytes.extend([0u8; 8]);
//! assert!(SafetensorsFile::parse(&bytes[..], bytes.len() as u64).is_err());
//! # Ok::<(), mlx_models::Error>(())
//! ```

use super::files::OpenedFile;
use super::gguf_file::MAX_TENSOR_ELEMENTS;
use crate::error::{Error, Result};
use mlx_rs::{Array, Dtype};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The largest header accepted (the reference implementation's limit too).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Dimensions of one tensor at most.
const MAX_DIMS: usize = 8;

/// A tensor's entry in a safetensors header, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsTensor {
    /// Its name.
    pub name: String,
    /// Its dtype (`F32`, `BF16`, `U32`, ...).
    pub dtype: Dtype,
    /// Its shape, each dimension in `0..=i32::MAX`.
    pub shape: Vec<i32>,
    /// Absolute offset of its data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

/// A parsed and validated safetensors header.
#[derive(Debug, Clone)]
pub struct SafetensorsFile {
    /// The tensors, in data order.
    pub tensors: Vec<SafetensorsTensor>,
    /// The `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
    /// The file, when the header was read with [`SafetensorsFile::open`].
    source: Option<OpenedFile>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The dtype of a safetensors dtype name; `None` for names MLX has no dtype for.
fn dtype_of(name: &str) -> Option<Dtype> {
    Some(match name {
        "BOOL" => Dtype::Bool,
        "U8" => Dtype::Uint8,
        "U16" => Dtype::Uint16,
        "U32" => Dtype::Uint32,
        "U64" => Dtype::Uint64,
        "I8" => Dtype::Int8,
        "I16" => Dtype::Int16,
        "I32" => Dtype::Int32,
        "I64" => Dtype::Int64,
        "F16" => Dtype::Float16,
        "BF16" => Dtype::Bfloat16,
        "F32" => Dtype::Float32,
        "F64" => Dtype::Float64,
        _ => return None,
    })
}

impl SafetensorsFile {
    /// Opens `path` read-only (a regular file only) and reads and validates its header.
    ///
    /// Errors: [`Error::Io`], [`Error::NotRegularFile`], [`Error::Safetensors`] naming the
    /// file and what is wrong.
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let file = OpenedFile::open(path)?;
        let len = file.byte_len()?;
        let mut parsed = SafetensorsFile::parse(file.reader(), len).map_err(|e| match e {
            Error::Safetensors(m) => Error::Safetensors(format!("{}: {m}", path.display())),
            other => other,
        })?;
        parsed.source = Some(file);
        Ok(parsed)
    }

    /// Parses the header from `reader` (the file from its first byte); `file_len` is the
    /// whole file's length.
    ///
    /// Errors: [`Error::Safetensors`].
    pub fn parse(mut reader: impl Read, file_len: u64) -> Result<SafetensorsFile> {
        let bad = |m: String| Error::Safetensors(m);
        let mut n = [0u8; 8];
        if file_len < 8 {
            return Err(bad(format!("a {file_len}-byte file has no header")));
        }
        reader
            .read_exact(&mut n)
            .map_err(|e| bad(format!("reading the header length: {e}")))?;
        let header_len = u64::from_le_bytes(n);
        if header_len > MAX_HEADER_BYTES || header_len > file_len - 8 {
            return Err(bad(format!(
                "a header of {header_len} bytes exceeds the file ({file_len} bytes) or the \
                 {MAX_HEADER_BYTES}-byte limit"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        reader
            .read_exact(&mut header)
            .map_err(|e| bad(format!("reading the header: {e}")))?;
        let data_start = 8 + header_len;
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("the header is not a JSON object: {e}")))?;
        let mut metadata = BTreeMap::new();
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, value) in raw {
            if name == "__metadata__" {
                metadata = serde_json::from_value(value)
                    .map_err(|e| bad(format!("`__metadata__` is not a map of strings: {e}")))?;
                continue;
            }
            let entry: RawEntry =
                serde_json::from_value(value).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            tensors.push(check_entry(name, entry, data_start, file_len)?);
        }
        tensors.sort_by_key(|t| t.offset);
        let mut end = data_start;
        for t in &tensors {
            if t.offset < end {
                return Err(bad(format!(
                    "the data of tensor `{}` overlaps the tensor before it",
                    t.name
                )));
            }
            if t.offset > end {
                return Err(bad(format!(
                    "a gap of {} bytes before tensor `{}` (the data must be fully indexed)",
                    t.offset - end,
                    t.name
                )));
            }
            end = t.offset + t.n_bytes;
        }
        if end != file_len {
            return Err(bad(format!(
                "the tensors' data ends at byte {end} but the file has {file_len} bytes"
            )));
        }
        Ok(SafetensorsFile {
            tensors,
            metadata,
            source: None,
        })
    }

    /// The file this header was read from ([`SafetensorsFile::open`]).
    pub fn path(&self) -> Option<&Path> {
        self.source.as_ref().map(OpenedFile::path)
    }

    /// Reads `tensor`'s data and builds its array (positioned reads on the read-only handle the
    /// header was read through).
    ///
    /// Errors: [`Error::InvalidArgument`] when the header was not read from a file;
    /// [`Error::Io`] when the file has shrunk since; [`Error::Mlx`] from the array constructor.
    pub fn read_array(&self, tensor: &SafetensorsTensor) -> Result<Array> {
        let file = self.source.as_ref().ok_or_else(|| {
            Error::InvalidArgument("this safetensors header was not read from a file".into())
        })?;
        let bytes = file.read_range(tensor.offset, tensor.n_bytes)?;
        Ok(Array::from_bytes(&bytes, &tensor.shape, tensor.dtype)?)
    }
}

/// Validates one header entry and places it in the file.
fn check_entry(
    name: String,
    entry: RawEntry,
    data_start: u64,
    file_len: u64,
) -> Result<SafetensorsTensor> {
    let bad = |m: String| Error::Safetensors(format!("tensor `{name}`: {m}"));
    let dtype = dtype_of(&entry.dtype).ok_or_else(|| bad(format!("dtype `{}`", entry.dtype)))?;
    if entry.shape.len() > MAX_DIMS {
        return Err(bad(format!(
            "{} dimensions (at most {MAX_DIMS})",
            entry.shape.len()
        )));
    }
    let mut shape = Vec::with_capacity(entry.shape.len());
    for &d in &entry.shape {
        shape.push(i32::try_from(d).map_err(|_| {
            bad(format!(
                "a dimension of {d} exceeds MLX's limit of {}",
                i32::MAX
            ))
        })?);
    }
    let n_elements = entry
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
        .ok_or_else(|| {
            bad(format!(
                "shape {:?} has more than the {MAX_TENSOR_ELEMENTS} elements an MLX array may index",
                entry.shape
            ))
        })?;
    let n_bytes = n_elements * dtype.size_in_bytes() as u64;
    let (begin, end) = entry.data_offsets;
    if end < begin || end - begin != n_bytes {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] do not hold the {n_bytes} bytes of shape {:?} {}",
            entry.shape, entry.dtype
        )));
    }
    let offset = data_start
        .checked_add(begin)
        .filter(|o| o.checked_add(n_bytes).is_some_and(|e| e <= file_len))
        .ok_or_else(|| bad("its data lies beyond the end of the file".into()))?;
    Ok(SafetensorsTensor {
        name,
        dtype,
        shape,
        offset,
        n_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend(header.as_bytes());
        b.resize(b.len() + data, 0);
        b
    }

    fn parse(b: &[u8]) -> Result<SafetensorsFile> {
        SafetensorsFile::parse(b, b.len() as u64)
    }

    fn err(header: &str, data: usize) -> String {
        parse(&file(header, data)).unwrap_err().to_string()
    }

    #[test]
    fn valid_header_with_metadata() {
        let f = parse(&file(
            r#"{"__metadata__":{"format":"mlx"},"b":{"dtype":"BF16","shape":[2,3],"data_offsets":[8,20]},"a":{"dtype":"U32","shape":[2],"data_offsets":[0,8]}}"#,
            20,
        ))
        .unwrap();
        assert_eq!(f.metadata["format"], "mlx");
        let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            (f.tensors[1].dtype, f.tensors[1].n_bytes),
            (Dtype::Bfloat16, 12)
        );
    }

    #[test]
    fn hostile_headers() {
        // 2^32 + 32 must not be read as 32.
        let e = err(
            r#"{"a":{"dtype":"U8","shape":[4294967328],"data_offsets":[0,4294967328]}}"#,
            0,
        );
        assert!(e.contains("dimension of 4294967328"), "{e}");
        let e = err(
            r#"{"a":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,0]}}"#,
            0,
        );
        assert!(e.contains("exceeds MLX") || e.contains("overflows"), "{e}");
        let e = err(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        );
        assert!(e.contains("overlaps"), "{e}");
        let e = err(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        );
        assert!(e.contains("gap"), "{e}");
        let e = err(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            4,
        );
        assert!(e.contains("beyond"), "{e}");
        let e = err(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            9,
        );
        assert!(e.contains("ends at byte"), "{e}");
        let e = err(
            r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        );
        assert!(e.contains("dtype"), "{e}");
        let e = err(r#"[1,2]"#, 0);
        assert!(e.contains("JSON"), "{e}");
        let mut huge = (u64::MAX).to_le_bytes().to_vec();
        huge.extend(b"{}");
        assert!(parse(&huge).unwrap_err().to_string().contains("header of"));
        assert!(parse(&[1, 2, 3]).is_err());
    }
}
