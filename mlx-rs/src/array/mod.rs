//! The [`Array`] type: an owned handle to a lazily evaluated MLX array.

mod create;
mod element;
mod fmt;
mod read;

pub use element::ArrayElement;

use crate::error::{check, init, Result};
use crate::{Dtype, Stream};
use mlx_sys as sys;
use std::ffi::c_int;

/// An n-dimensional MLX array.
///
/// An `Array` is a node of MLX's lazy compute graph: operations build new nodes and nothing is
/// computed until the array is evaluated ([`Array::eval`], [`crate::eval`], or implicitly by
/// [`Array::item`] and [`Array::to_vec`]).
///
/// - **Ownership**: `Drop` releases the handle. `Clone` is cheap: the clone refers to the same
///   graph node and the same data (MLX arrays are immutable; "in place" updates such as
///   [`Array::slice_update`] return new arrays that may share buffers).
/// - **Threads**: `Array` is `Send`: it may be moved to another thread and used there. It is not
///   `Sync`: MLX's evaluation mutates the node (it attaches data and detaches the graph), and MLX
///   does not guard two threads evaluating the same node at once. To share an array between
///   threads, evaluate it first and give each thread its own clone.
///
/// # Example
/// ```
/// use mlx_rs::Array;
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
/// let b = (&a * 2.0f32) + 1.0f32;
/// assert_eq!(b.to_vec::<f32>()?, vec![3.0, 5.0, 7.0, 9.0]);
/// assert_eq!(b.shape(), vec![2, 2]);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
pub struct Array {
    raw: sys::mlx_array,
}

// SAFETY: an mlx_array handle is a heap pointer to an `mlx::core::array` (a shared pointer to a
// graph node); moving it to another thread is sound. It is not `Sync` (see the type's docs).
unsafe impl Send for Array {}

impl Drop for Array {
    fn drop(&mut self) {
        // SAFETY: `raw` is a handle this value owns; it is not used afterwards.
        unsafe { sys::mlx_array_free(self.raw) };
    }
}

impl Clone for Array {
    fn clone(&self) -> Self {
        init();
        // SAFETY: `mlx_array_set` makes the new handle refer to the same node (a shared_ptr
        // copy); it cannot fail for a valid source handle.
        unsafe {
            let mut raw = sys::mlx_array_new();
            sys::mlx_array_set(&mut raw, self.raw);
            Array { raw }
        }
    }
}

impl Array {
    /// Wraps a handle returned by mlx-c; the `Array` takes ownership of it.
    ///
    /// # Safety
    /// `raw` must be a valid, non-empty `mlx_array` that nothing else frees.
    pub unsafe fn from_raw(raw: sys::mlx_array) -> Array {
        Array { raw }
    }

    /// The underlying mlx-c handle, still owned by `self`.
    pub fn as_raw(&self) -> sys::mlx_array {
        self.raw
    }

    /// Runs an mlx-c call that writes one array into its out-parameter, checks its status and
    /// wraps the result. Every operation of this crate goes through here or [`Array::try_op_stream`].
    #[track_caller]
    pub(crate) fn try_op(f: impl FnOnce(*mut sys::mlx_array) -> c_int) -> Result<Array> {
        init();
        // SAFETY: a fresh empty handle; `Array` frees it on every path.
        let raw = unsafe { sys::mlx_array_new() };
        let mut out = Array { raw };
        let status = f(&mut out.raw);
        check(status)?;
        Ok(out)
    }

    /// [`Array::try_op`] with the current default stream (see [`crate::with_stream`]).
    #[track_caller]
    pub(crate) fn try_op_stream(
        f: impl FnOnce(*mut sys::mlx_array, sys::mlx_stream) -> c_int,
    ) -> Result<Array> {
        let stream = Stream::current()?;
        Array::try_op(|out| f(out, stream.as_raw()))
    }

    /// The size of each dimension.
    pub fn shape(&self) -> Vec<i32> {
        let n = self.ndim();
        if n == 0 {
            return Vec::new();
        }
        // SAFETY: mlx-c returns a pointer to `ndim` ints owned by the array.
        unsafe { std::slice::from_raw_parts(sys::mlx_array_shape(self.raw), n).to_vec() }
    }

    /// The size of dimension `axis` (negative counts from the end).
    #[track_caller]
    pub fn dim(&self, axis: i32) -> Result<i32> {
        let shape = self.shape();
        let n = shape.len() as i32;
        let i = if axis < 0 { axis + n } else { axis };
        if !(0..n).contains(&i) {
            return Err(crate::Error::InvalidArgument(format!(
                "axis {axis} is out of range for an array of {n} dimensions"
            )));
        }
        Ok(shape[i as usize])
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { sys::mlx_array_ndim(self.raw) }
    }

    /// Number of elements.
    pub fn size(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { sys::mlx_array_size(self.raw) }
    }

    /// Bytes of the array's elements (`size * dtype size`).
    pub fn nbytes(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { sys::mlx_array_nbytes(self.raw) }
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        // SAFETY: valid handle.
        let raw = unsafe { sys::mlx_array_dtype(self.raw) };
        Dtype::from_sys(raw).expect("MLX returned a dtype unknown to this crate")
    }

    /// Computes the array (and the part of the graph it depends on).
    #[track_caller]
    pub fn eval(&self) -> Result<()> {
        init();
        // SAFETY: valid handle.
        check(unsafe { sys::mlx_array_eval(self.raw) })
    }

    /// Whether the array's value is computed: a constant, or an array whose evaluation has
    /// finished. Never blocks and queues nothing; an array handed to [`crate::async_eval`]
    /// becomes available when its stream gets to it.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 2.0], &[2])?;
    /// assert!(a.is_available());
    /// let b = a.sum(.., false)?; // lazy
    /// assert!(!b.is_available());
    /// b.eval()?;
    /// assert!(b.is_available());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    pub fn is_available(&self) -> bool {
        init();
        // SAFETY: valid handle; reads the array's status only.
        unsafe { sys::array_host::mlxrs_array_is_available(self.raw) }
    }
}
