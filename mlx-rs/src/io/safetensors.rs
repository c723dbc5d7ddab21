//! The safetensors format: [`load_safetensors`] and [`save_safetensors`].
//!
//! ```
//! use mlx_rs::io::safetensors::{load_safetensors, save_safetensors};
//! use mlx_rs::Array;
//! use std::collections::HashMap;
//! let path = std::env::temp_dir().join(format!("mlx_rs_doc_{}.safetensors", std::process::id()));
//! let w = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
//! save_safetensors(&path, [("w", &w)], [("format", "mlx")])?;
//! let (arrays, metadata) = load_safetensors(&path)?;
//! assert_eq!(arrays["w"].to_vec::<f32>()?, vec![1.0, 2.0, 3.0, 4.0]);
//! assert_eq!(metadata["format"], "mlx");
//! # std::fs::remove_file(&path).unwrap();
//! # Ok::<(), mlx_rs::Error>(())
//! ```

use crate::error::{check, init, Error, Result};
use crate::{Array, Device, Stream};
use mlx_sys as sys;
use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::path::Path;

/// `path` as a C string, or [`Error::Io`] when it cannot be one.
pub(crate) fn path_to_cstring(path: &Path) -> Result<CString> {
    let text = path.to_str().ok_or_else(|| Error::Io {
        path: path.to_path_buf(),
        message: "the path is not valid UTF-8".into(),
    })?;
    CString::new(text).map_err(|_| Error::Io {
        path: path.to_path_buf(),
        message: "the path contains a NUL byte".into(),
    })
}

/// Checks that `path` is an existing regular file and returns its length.
pub(crate) fn existing_file(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            message: "not a regular file".into(),
        });
    }
    Ok(meta.len())
}

/// Checks that the directory that will hold `path` exists.
pub(crate) fn writable_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(Error::Io {
            path: path.to_path_buf(),
            message: format!("the directory {} does not exist", dir.display()),
        }),
        _ => Ok(()),
    }
}

/// A C string from a key or value, or [`Error::InvalidArgument`] for an interior NUL.
pub(crate) fn c_string(text: &str, what: &str) -> Result<CString> {
    CString::new(text)
        .map_err(|_| Error::InvalidArgument(format!("{what} {text:?} contains a NUL byte")))
}

/// Copies a C string returned by mlx-c.
///
/// # Safety
/// `ptr` must be null or a valid NUL-terminated string.
pub(crate) unsafe fn string_from_c(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: see the function's contract.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// An owned `mlx_map_string_to_array`.
pub(crate) struct ArrayMap(pub(crate) sys::mlx_map_string_to_array);

impl ArrayMap {
    pub(crate) fn new() -> Self {
        init();
        // SAFETY: fresh, owned handle.
        ArrayMap(unsafe { sys::mlx_map_string_to_array_new() })
    }

    /// Copies the entries out.
    #[track_caller]
    pub(crate) fn to_hash_map(&self) -> Result<HashMap<String, Array>> {
        let mut out = HashMap::new();
        // SAFETY: valid map; the iterator is freed below and does not outlive the map.
        let it = unsafe { sys::mlx_map_string_to_array_iterator_new(self.0) };
        let result = loop {
            let mut key: *const c_char = std::ptr::null();
            let mut end = false;
            let value = Array::try_op(|out| {
                // SAFETY: valid iterator and out-pointers; status 2 means the end.
                match unsafe { sys::mlx_map_string_to_array_iterator_next(&mut key, out, it) } {
                    2 => {
                        end = true;
                        0
                    }
                    s => s,
                }
            });
            match value {
                Ok(_) if end => break Ok(out),
                Ok(v) => {
                    // SAFETY: `key` points to the map's key, valid while the map lives.
                    out.insert(unsafe { string_from_c(key) }, v);
                }
                Err(e) => break Err(e),
            }
        };
        // SAFETY: the iterator created above.
        unsafe { sys::mlx_map_string_to_array_iterator_free(it) };
        result
    }
}

impl Drop for ArrayMap {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::mlx_map_string_to_array_free(self.0) };
    }
}

/// An owned `mlx_map_string_to_string`.
struct StringMap(sys::mlx_map_string_to_string);

impl StringMap {
    fn new() -> Self {
        init();
        // SAFETY: fresh, owned handle.
        StringMap(unsafe { sys::mlx_map_string_to_string_new() })
    }

    #[track_caller]
    fn to_hash_map(&self) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        // SAFETY: valid map; the iterator is freed below.
        let it = unsafe { sys::mlx_map_string_to_string_iterator_new(self.0) };
        let result = loop {
            let mut key: *const c_char = std::ptr::null();
            let mut value: *const c_char = std::ptr::null();
            // SAFETY: valid iterator and out-pointers.
            let status =
                unsafe { sys::mlx_map_string_to_string_iterator_next(&mut key, &mut value, it) };
            match status {
                // SAFETY: both point into the map, valid while it lives.
                0 => unsafe {
                    out.insert(string_from_c(key), string_from_c(value));
                },
                2 => break Ok(out),
                s => break check(s).map(|_| out),
            }
        };
        // SAFETY: the iterator created above.
        unsafe { sys::mlx_map_string_to_string_iterator_free(it) };
        result
    }
}

impl Drop for StringMap {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::mlx_map_string_to_string_free(self.0) };
    }
}

/// Loads every tensor and the metadata (`__metadata__`, string to string) of a safetensors file.
///
/// The arrays are read (evaluated) before returning, so a file whose data is missing or
/// unreadable fails here rather than at first use. Supported dtypes are MLX's: `BOOL`, `U8`..`U64`,
/// `I8`..`I64`, `F16`, `BF16`, `F32`, `F64`, `C64`.
///
/// Errors: [`Error::Io`] naming the path when it is not a readable file; [`Error::Mlx`] when
/// MLX rejects the content (bad header, unknown dtype, truncated data).
///
/// ```
/// use mlx_rs::{io::safetensors::load_safetensors, Error};
/// assert!(matches!(load_safetensors("/no/such/file.safetensors"), Err(Error::Io { .. })));
/// ```
#[track_caller]
pub fn load_safetensors(
    path: impl AsRef<Path>,
) -> Result<(HashMap<String, Array>, HashMap<String, String>)> {
    let path = path.as_ref();
    let file_len = existing_file(path)?;
    check_header(path, file_len)?;
    let cpath = path_to_cstring(path)?;
    // MLX loads on a CPU stream (its `Load` primitive reads the file on the CPU).
    let stream = Stream::default_for(Device::cpu())?;
    let mut arrays = ArrayMap::new();
    let mut metadata = StringMap::new();
    // SAFETY: valid out-handles (owned by the wrappers) and a NUL-terminated path.
    check(unsafe {
        sys::mlx_load_safetensors(
            &mut arrays.0,
            &mut metadata.0,
            cpath.as_ptr(),
            stream.as_raw(),
        )
    })?;
    let arrays = arrays.to_hash_map()?;
    let metadata = metadata.to_hash_map()?;
    let data_len = file_len - 8 - header_len(path)?;
    let total: u64 = arrays.values().map(|a| a.nbytes() as u64).sum();
    if total > data_len {
        return Err(Error::Io {
            path: path.to_path_buf(),
            message: format!(
                "the header describes {total} bytes of tensor data but the file holds {data_len}"
            ),
        });
    }
    let refs: Vec<&Array> = arrays.values().collect();
    crate::transforms::eval(&refs)?;
    Ok((arrays, metadata))
}

fn read_prefix(path: &Path, n: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let io_err = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut buf = Vec::with_capacity(n);
    std::fs::File::open(path)
        .map_err(io_err)?
        .take(n as u64)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    Ok(buf)
}

/// The header length from the first 8 bytes.
fn header_len(path: &Path) -> Result<u64> {
    let head = read_prefix(path, 8)?;
    let bytes: [u8; 8] = head.as_slice().try_into().map_err(|_| Error::Io {
        path: path.to_path_buf(),
        message: "file too short for a safetensors header".into(),
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Checks the header length against the file length before MLX reads it.
fn check_header(path: &Path, file_len: u64) -> Result<()> {
    let n = header_len(path)?;
    if n.checked_add(8).is_none_or(|end| end > file_len) {
        return Err(Error::Io {
            path: path.to_path_buf(),
            message: format!(
                "the header claims {n} bytes but the file holds {file_len} bytes in all"
            ),
        });
    }
    Ok(())
}

/// Writes `arrays` and string `metadata` to a safetensors file at `path` (replacing it).
///
/// The arrays are evaluated first. Note that MLX appends `.safetensors` to a path that does not
/// end with it.
///
/// ```
/// use mlx_rs::{io::safetensors::{load_safetensors, save_safetensors}, Array};
/// use std::collections::HashMap;
/// let path = std::env::temp_dir().join(format!("mlx_rs_save_{}.safetensors", std::process::id()));
/// let mut arrays = HashMap::new();
/// arrays.insert("ids".to_string(), Array::from_slice(&[7i32, 8], &[2])?);
/// save_safetensors(&path, &arrays, &HashMap::<String, String>::new())?;
/// assert_eq!(load_safetensors(&path)?.0["ids"].to_vec::<i32>()?, vec![7, 8]);
/// // A missing directory is an I/O error:
/// assert!(save_safetensors("/no/such/dir/x.safetensors", &arrays, [("k", "v")]).is_err());
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn save_safetensors<'a, K, MK, MV>(
    path: impl AsRef<Path>,
    arrays: impl IntoIterator<Item = (K, &'a Array)>,
    metadata: impl IntoIterator<Item = (MK, MV)>,
) -> Result<()>
where
    K: AsRef<str>,
    MK: AsRef<str>,
    MV: AsRef<str>,
{
    let path = path.as_ref();
    writable_parent(path)?;
    let cpath = path_to_cstring(path)?;
    let map = ArrayMap::new();
    for (name, array) in arrays {
        let key = c_string(name.as_ref(), "tensor name")?;
        // SAFETY: valid map, NUL-terminated key, valid array (the map copies both).
        check(unsafe { sys::mlx_map_string_to_array_insert(map.0, key.as_ptr(), array.as_raw()) })?;
    }
    let meta = StringMap::new();
    for (k, v) in metadata {
        let key = c_string(k.as_ref(), "metadata key")?;
        let value = c_string(v.as_ref(), "metadata value")?;
        // SAFETY: valid map and NUL-terminated strings (copied by the map).
        check(unsafe {
            sys::mlx_map_string_to_string_insert(meta.0, key.as_ptr(), value.as_ptr())
        })?;
    }
    // SAFETY: valid maps and path.
    check(unsafe { sys::mlx_save_safetensors(cpath.as_ptr(), map.0, meta.0) })
}
