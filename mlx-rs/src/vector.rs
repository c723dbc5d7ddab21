//! [`VectorArray`]: the crate's one owner of an `mlx_vector_array` (a list of arrays passed to
//! or returned by mlx-c).

use crate::error::{init, Result};
use crate::Array;
use mlx_sys as sys;

/// An owned `mlx_vector_array` (a C++ `std::vector<array>`), freed on drop.
pub(crate) struct VectorArray {
    raw: sys::mlx_vector_array,
}

impl Drop for VectorArray {
    fn drop(&mut self) {
        // SAFETY: `raw` is owned by `self` and not used afterwards; freeing a null handle is a
        // no-op in mlx-c.
        unsafe { sys::mlx_vector_array_free(self.raw) };
    }
}

impl VectorArray {
    /// An empty vector, ready to be used as an out-parameter.
    pub(crate) fn new() -> VectorArray {
        init();
        // SAFETY: allocates a new empty vector that `VectorArray` frees.
        let raw = unsafe { sys::mlx_vector_array_new() };
        VectorArray { raw }
    }

    /// A vector holding (shared references to) `arrays`.
    pub(crate) fn from_arrays(arrays: &[&Array]) -> VectorArray {
        init();
        let raws: Vec<sys::mlx_array> = arrays.iter().map(|a| a.as_raw()).collect();
        // SAFETY: `raws` holds `raws.len()` valid handles for the duration of the call; mlx-c
        // copies each array (a shared-pointer copy) into the new vector.
        let raw = unsafe { sys::mlx_vector_array_new_data(raws.as_ptr(), raws.len()) };
        VectorArray { raw }
    }

    /// The handle, still owned by `self`.
    pub(crate) fn as_raw(&self) -> sys::mlx_vector_array {
        self.raw
    }

    /// A pointer to the handle, for mlx-c functions that write a vector into an out-parameter.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut sys::mlx_vector_array {
        &mut self.raw
    }

    /// Number of arrays held.
    pub(crate) fn len(&self) -> usize {
        if self.raw.ctx.is_null() {
            return 0;
        }
        // SAFETY: a valid, non-null handle.
        unsafe { sys::mlx_vector_array_size(self.raw) }
    }

    /// The arrays held, as owned [`Array`]s.
    #[track_caller]
    pub(crate) fn into_arrays(self) -> Result<Vec<Array>> {
        (0..self.len())
            .map(|i| {
                // SAFETY: `i < len`; the vector is valid while `self` lives.
                Array::try_op(|res| unsafe { sys::mlx_vector_array_get(res, self.raw, i) })
            })
            .collect()
    }

    /// Runs an mlx-c call that writes a vector of arrays into its out-parameter, with the
    /// current stream, and returns the arrays.
    #[track_caller]
    pub(crate) fn try_op_stream(
        f: impl FnOnce(*mut sys::mlx_vector_array, sys::mlx_stream) -> std::ffi::c_int,
    ) -> Result<Vec<Array>> {
        let stream = crate::Stream::current()?;
        let mut out = VectorArray::new();
        crate::error::check(f(out.as_mut_ptr(), stream.as_raw()))?;
        out.into_arrays()
    }
}
