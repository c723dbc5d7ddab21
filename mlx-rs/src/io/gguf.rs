//! The GGUF format (llama.cpp's): [`load_gguf`] and [`save_gguf`].
//!
//! # Quantized tensors
//!
//! MLX keeps GGUF's `Q4_0`, `Q4_1` and `Q8_0` tensors quantized, in its own affine layout
//! (group size 32, 4 or 8 bits). A quantized tensor named `P.weight` (the name must end in
//! `.weight`) becomes three arrays:
//! - `P.weight`: the packed values, `uint32`, last dimension `cols * bits / 32`;
//! - `P.scales` and `P.biases`: `float16`, last dimension `cols / 32`;
//!
//! so that `dequantize(weight, scales, biases, group_size = 32, bits, "affine")` gives the
//! values (`Q4_0`: bias `-8 * scale`; `Q8_0`: bias `-128 * scale`). The shapes are in MLX's
//! row-major order (GGUF stores dimensions innermost first; MLX reverses them).
//! Other ggml block types are converted by MLX (to `float16`) when it supports them.
//!
//! # Metadata
//!
//! MLX keeps strings, string arrays, and numbers / numeric arrays (as [`Array`]s: a scalar for a
//! single value). Other kinds (arrays of arrays) are dropped.

use super::safetensors::{
    c_string, existing_file, path_to_cstring, string_from_c, writable_parent,
};
use crate::error::{check, init, Error, Result};
use crate::{Array, Device, Stream};
use mlx_sys as sys;
use std::collections::HashMap;
use std::ffi::c_char;
use std::io::{BufReader, Read};
use std::path::Path;

/// A metadata value of a GGUF file.
#[derive(Debug, Clone)]
pub enum GgufValue {
    /// A string.
    String(String),
    /// An array of strings.
    Strings(Vec<String>),
    /// A number (0-dimensional array) or an array of numbers (1-dimensional), with the
    /// dtype of the file (`uint32`, `float32`, `bool`, ...).
    Array(Array),
}

/// The content of a GGUF file: tensors and metadata.
///
/// ```
/// use mlx_rs::io::gguf::{load_gguf, save_gguf, Gguf, GgufValue};
/// use mlx_rs::Array;
/// let path = std::env::temp_dir().join(format!("mlx_rs_doc_{}.gguf", std::process::id()));
/// let mut g = Gguf::default();
/// g.arrays.insert("w".into(), Array::from_slice(&[1.0f32, 2.0], &[2])?);
/// g.metadata.insert("general.name".into(), GgufValue::String("tiny".into()));
/// save_gguf(&path, &g)?;
/// let back = load_gguf(&path)?;
/// assert_eq!(back.arrays["w"].to_vec::<f32>()?, vec![1.0, 2.0]);
/// assert!(matches!(&back.metadata["general.name"], GgufValue::String(s) if s == "tiny"));
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Gguf {
    /// Tensors by name (see the [module docs](self) for quantized tensors).
    pub arrays: HashMap<String, Array>,
    /// Metadata by key.
    pub metadata: HashMap<String, GgufValue>,
}

/// An owned `mlx_io_gguf`.
struct RawGguf(sys::mlx_io_gguf);

impl Drop for RawGguf {
    fn drop(&mut self) {
        if !self.0.ctx.is_null() {
            // SAFETY: owned handle.
            unsafe { sys::mlx_io_gguf_free(self.0) };
        }
    }
}

/// An owned `mlx_vector_string`.
struct VectorString(sys::mlx_vector_string);

impl VectorString {
    fn new() -> Self {
        // SAFETY: fresh, owned handle.
        VectorString(unsafe { sys::mlx_vector_string_new() })
    }

    #[track_caller]
    fn to_vec(&self) -> Result<Vec<String>> {
        // SAFETY: valid handle.
        let n = unsafe { sys::mlx_vector_string_size(self.0) };
        (0..n)
            .map(|i| {
                let mut ptr: *mut c_char = std::ptr::null_mut();
                // SAFETY: `i < n`; the string stays owned by the vector.
                check(unsafe { sys::mlx_vector_string_get(&mut ptr, self.0, i) })?;
                // SAFETY: a NUL-terminated string owned by the vector, copied here.
                Ok(unsafe { string_from_c(ptr) })
            })
            .collect()
    }
}

impl Drop for VectorString {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::mlx_vector_string_free(self.0) };
    }
}

/// Loads the tensors and metadata of a GGUF file (arrays are evaluated before returning).
///
/// The file's structure (header, metadata, tensor table and that every tensor's data lies inside
/// the file) is checked in Rust first, so a truncated or corrupt file is an error, not a crash.
///
/// Errors: [`Error::Io`] naming the path when it is missing or malformed; [`Error::Mlx`] when
/// MLX rejects it (e.g. a tensor type it does not support).
///
/// ```
/// use mlx_rs::{io::gguf::load_gguf, Error};
/// assert!(matches!(load_gguf("/no/such/model.gguf"), Err(Error::Io { .. })));
/// ```
#[track_caller]
pub fn load_gguf(path: impl AsRef<Path>) -> Result<Gguf> {
    let path = path.as_ref();
    let file_len = existing_file(path)?;
    let keys = validate(path, file_len).map_err(|message| Error::Io {
        path: path.to_path_buf(),
        message: format!("not a valid GGUF file: {message}"),
    })?;
    let cpath = path_to_cstring(path)?;
    let stream = Stream::default_for(Device::cpu())?;
    init();
    // SAFETY: fresh handle, owned by the wrapper.
    let mut raw = RawGguf(unsafe { sys::mlx_io_gguf_new() });
    // SAFETY: valid out-handle, path and stream.
    check(unsafe { sys::mlx_load_gguf(&mut raw.0, cpath.as_ptr(), stream.as_raw()) })?;

    let mut names = VectorString::new();
    // SAFETY: valid handles.
    check(unsafe { sys::mlx_io_gguf_get_keys(&mut names.0, raw.0) })?;
    let mut arrays = HashMap::new();
    for name in names.to_vec()? {
        let cname = c_string(&name, "tensor name")?;
        // SAFETY: valid handles; the key was listed by MLX.
        let array =
            Array::try_op(|out| unsafe { sys::mlx_io_gguf_get_array(out, raw.0, cname.as_ptr()) })?;
        arrays.insert(name, array);
    }

    let mut metadata = HashMap::new();
    for key in keys {
        let ckey = c_string(&key, "metadata key")?;
        let has = |f: unsafe extern "C" fn(*mut bool, sys::mlx_io_gguf, *const c_char) -> i32| {
            let mut flag = false;
            // SAFETY: valid handles; status 2 (absent key) leaves `flag` false.
            unsafe { f(&mut flag, raw.0, ckey.as_ptr()) };
            flag
        };
        let value = if has(sys::mlx_io_gguf_has_metadata_string) {
            // SAFETY: fresh string handle, freed below.
            let mut s = unsafe { sys::mlx_string_new() };
            // SAFETY: valid handles.
            let status =
                unsafe { sys::mlx_io_gguf_get_metadata_string(&mut s, raw.0, ckey.as_ptr()) };
            // SAFETY: `s` is valid; its data is copied before it is freed.
            let text = unsafe { string_from_c(sys::mlx_string_data(s)) };
            // SAFETY: owned handle.
            unsafe { sys::mlx_string_free(s) };
            check(status)?;
            GgufValue::String(text)
        } else if has(sys::mlx_io_gguf_has_metadata_vector_string) {
            let mut v = VectorString::new();
            // SAFETY: valid handles.
            check(unsafe {
                sys::mlx_io_gguf_get_metadata_vector_string(&mut v.0, raw.0, ckey.as_ptr())
            })?;
            GgufValue::Strings(v.to_vec()?)
        } else if has(sys::mlx_io_gguf_has_metadata_array) {
            // SAFETY: valid handles.
            GgufValue::Array(Array::try_op(|out| unsafe {
                sys::mlx_io_gguf_get_metadata_array(out, raw.0, ckey.as_ptr())
            })?)
        } else {
            continue;
        };
        metadata.insert(key, value);
    }

    let mut refs: Vec<&Array> = arrays.values().collect();
    refs.extend(metadata.values().filter_map(|v| match v {
        GgufValue::Array(a) => Some(a),
        _ => None,
    }));
    crate::transforms::eval(&refs)?;
    Ok(Gguf { arrays, metadata })
}

/// Writes `gguf` to `path` (replacing it). MLX appends `.gguf` to a path that does not end with
/// it. MLX writes `float32`, `float16`, `bfloat16` and integer arrays (no quantized triples);
/// metadata arrays must be scalars or 1-dimensional.
///
/// ```
/// use mlx_rs::io::gguf::{load_gguf, save_gguf, Gguf, GgufValue};
/// use mlx_rs::Array;
/// let path = std::env::temp_dir().join(format!("mlx_rs_save_{}.gguf", std::process::id()));
/// let mut g = Gguf::default();
/// g.arrays.insert("x".into(), Array::from_slice(&[1i32, 2, 3], &[3])?);
/// g.metadata.insert("n".into(), GgufValue::Array(Array::scalar(5u32)));
/// g.metadata.insert("tags".into(), GgufValue::Strings(vec!["a".into(), "b".into()]));
/// save_gguf(&path, &g)?;
/// let back = load_gguf(&path)?;
/// assert_eq!(back.arrays["x"].to_vec::<i32>()?, vec![1, 2, 3]);
/// assert!(matches!(&back.metadata["n"], GgufValue::Array(a) if a.item::<u32>()? == 5));
/// assert!(matches!(&back.metadata["tags"], GgufValue::Strings(t) if t == &["a", "b"]));
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn save_gguf(path: impl AsRef<Path>, gguf: &Gguf) -> Result<()> {
    let path = path.as_ref();
    writable_parent(path)?;
    let cpath = path_to_cstring(path)?;
    init();
    // SAFETY: fresh handle, owned by the wrapper.
    let raw = RawGguf(unsafe { sys::mlx_io_gguf_new() });
    if raw.0.ctx.is_null() {
        return check(1);
    }
    for (name, array) in &gguf.arrays {
        let cname = c_string(name, "tensor name")?;
        // SAFETY: valid handles; the map copies the array.
        check(unsafe { sys::mlx_io_gguf_set_array(raw.0, cname.as_ptr(), array.as_raw()) })?;
    }
    for (key, value) in &gguf.metadata {
        let ckey = c_string(key, "metadata key")?;
        match value {
            GgufValue::String(s) => {
                let cs = c_string(s, "metadata string")?;
                // SAFETY: valid handle and strings (copied).
                check(unsafe {
                    sys::mlx_io_gguf_set_metadata_string(raw.0, ckey.as_ptr(), cs.as_ptr())
                })?;
            }
            GgufValue::Strings(list) => {
                let v = VectorString::new();
                for s in list {
                    let cs = c_string(s, "metadata string")?;
                    // SAFETY: valid vector and string (copied).
                    check(unsafe { sys::mlx_vector_string_append_value(v.0, cs.as_ptr()) })?;
                }
                // SAFETY: valid handles (copied).
                check(unsafe {
                    sys::mlx_io_gguf_set_metadata_vector_string(raw.0, ckey.as_ptr(), v.0)
                })?;
            }
            GgufValue::Array(a) => {
                if a.ndim() > 1 {
                    return Err(Error::Shape(format!(
                        "GGUF metadata {key:?} must be a scalar or 1-dimensional, got shape {:?}",
                        a.shape()
                    )));
                }
                // SAFETY: valid handles (copied).
                check(unsafe {
                    sys::mlx_io_gguf_set_metadata_array(raw.0, ckey.as_ptr(), a.as_raw())
                })?;
            }
        }
    }
    // SAFETY: valid path and handle.
    check(unsafe { sys::mlx_save_gguf(cpath.as_ptr(), raw.0) })
}

/// A bounds-checked sequential reader of the GGUF header.
struct Header<R> {
    r: R,
    pos: u64,
    len: u64,
}

type Check<T> = std::result::Result<T, String>;

impl<R: Read> Header<R> {
    fn bytes(&mut self, n: u64) -> Check<Vec<u8>> {
        if n > self.len - self.pos {
            return Err(format!(
                "needs {n} bytes at offset {} but the file has {} bytes",
                self.pos, self.len
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.r.read_exact(&mut buf).map_err(|e| e.to_string())?;
        self.pos += n;
        Ok(buf)
    }
    fn u32(&mut self) -> Check<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Check<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Check<String> {
        let n = self.u64()?;
        String::from_utf8(self.bytes(n)?).map_err(|_| "a string is not UTF-8".to_string())
    }
    /// Reads (and skips) one value of metadata type `ty`; returns it if it is a `u32`.
    fn value(&mut self, ty: u32, depth: u32) -> Check<Option<u64>> {
        let fixed = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            _ => 0,
        };
        match ty {
            4 => return Ok(Some(self.u32()? as u64)),
            8 => {
                self.string()?;
            }
            9 if depth < 4 => {
                let elem = self.u32()?;
                let count = self.u64()?;
                let elem_size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(format!("unknown metadata type {t}")),
                };
                if count.saturating_mul(elem_size) > self.len - self.pos {
                    return Err(format!("an array of {count} values exceeds the file"));
                }
                if elem == 8 || elem == 9 {
                    for _ in 0..count {
                        self.value(elem, depth + 1)?;
                    }
                } else {
                    self.bytes(count * elem_size)?;
                }
            }
            _ if fixed > 0 => {
                self.bytes(fixed)?;
            }
            t => return Err(format!("unknown metadata type {t}")),
        }
        Ok(None)
    }
}

/// (elements per block, bytes per block) of a ggml tensor type.
fn block_layout(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        30 => (1, 2),     // BF16
        _ => return None,
    })
}

/// Checks the structure of a GGUF file; returns its metadata keys.
fn validate(path: &Path, len: u64) -> Check<Vec<String>> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut h = Header {
        r: BufReader::new(file),
        pos: 0,
        len,
    };
    if h.bytes(4)? != b"GGUF" {
        return Err("bad magic (expected \"GGUF\")".into());
    }
    let version = h.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported version {version}"));
    }
    let n_tensors = h.u64()?;
    let n_kv = h.u64()?;
    let mut keys = Vec::new();
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = h.string()?;
        let ty = h.u32()?;
        if let Some(v) = h.value(ty, 0)? {
            if key == "general.alignment" {
                alignment = v;
            }
        }
        keys.push(key);
    }
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(format!("invalid alignment {alignment}"));
    }
    let mut extents = Vec::new();
    for _ in 0..n_tensors {
        let name = h.string()?;
        let n_dims = h.u32()?;
        if n_dims > 8 {
            return Err(format!("tensor {name:?} has {n_dims} dimensions"));
        }
        let mut count = 1u64;
        let mut inner = 1u64;
        for d in 0..n_dims {
            let dim = h.u64()?;
            if d == 0 {
                inner = dim;
            }
            count = count
                .checked_mul(dim)
                .ok_or_else(|| format!("tensor {name:?} is too large"))?;
        }
        let ty = h.u32()?;
        let offset = h.u64()?;
        let (block, bytes) =
            block_layout(ty).ok_or_else(|| format!("tensor {name:?} has unknown type {ty}"))?;
        if !inner.is_multiple_of(block) {
            return Err(format!(
                "tensor {name:?}: inner dimension {inner} is not a multiple of {block}"
            ));
        }
        let size = (count / block)
            .checked_mul(bytes)
            .ok_or_else(|| format!("tensor {name:?} is too large"))?;
        extents.push((name, offset, size));
    }
    let data_start = h.pos.div_ceil(alignment) * alignment;
    for (name, offset, size) in extents {
        let end = data_start
            .checked_add(offset)
            .and_then(|s| s.checked_add(size));
        if end.is_none_or(|end| end > len) {
            return Err(format!(
                "the data of tensor {name:?} ({size} bytes at offset {offset}) lies beyond the end of the file ({len} bytes)"
            ));
        }
    }
    Ok(keys)
}
