//! `Debug` (shape and dtype, no evaluation) and `Display` (values, evaluates).

use super::Array;
use mlx_sys as sys;
use std::ffi::CStr;
use std::fmt;

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("shape", &self.shape())
            .field("dtype", &self.dtype())
            .finish()
    }
}

/// MLX's own rendering of the values, e.g. `array([[1, 2], [3, 4]], dtype=int32)`; evaluates.
///
/// ```
/// use mlx_rs::Array;
/// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2])?;
/// assert_eq!(a.to_string(), "array([[1, 2],\n       [3, 4]], dtype=int32)");
/// # Ok::<(), mlx_rs::Error>(())
/// ```
impl fmt::Display for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::error::init();
        // SAFETY: a fresh string handle, freed below; the data pointer is read before freeing.
        unsafe {
            let mut s = sys::mlx_string_new();
            let status = sys::mlx_array_tostring(&mut s, self.as_raw());
            let text = if status == 0 && !sys::mlx_string_data(s).is_null() {
                CStr::from_ptr(sys::mlx_string_data(s))
                    .to_string_lossy()
                    .into_owned()
            } else {
                format!("<unprintable array of shape {:?}>", self.shape())
            };
            sys::mlx_string_free(s);
            f.write_str(&text)
        }
    }
}
