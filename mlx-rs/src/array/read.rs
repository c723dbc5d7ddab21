//! Reading values back: [`Array::item`] and [`Array::to_vec`].

use super::{Array, ArrayElement};
use crate::error::{check, Error, Result};
use crate::Dtype;
use mlx_sys as sys;

impl Array {
    /// The elements in row-major order, after evaluating the array.
    ///
    /// `T` must be the array's dtype (convert with [`Array::astype`] first); this never converts
    /// silently. Works for `f16`/`bf16` on every platform (mlx-c has no accessor for them on
    /// x86_64; the bits are read through a `uint16` view).
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype, Error};
    /// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// // Transposed arrays read in their logical order:
    /// assert_eq!(a.t()?.to_vec::<f32>()?, vec![1.0, 3.0, 2.0, 4.0]);
    /// assert!(matches!(a.to_vec::<i32>(), Err(Error::DtypeMismatch { .. })));
    /// let h = a.astype(Dtype::Bfloat16)?.to_vec::<half::bf16>()?;
    /// assert_eq!(h[3].to_f32(), 4.0);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn to_vec<T: ArrayElement>(&self) -> Result<Vec<T>> {
        let dtype = self.dtype();
        if dtype != T::DTYPE {
            return Err(Error::DtypeMismatch {
                expected: T::DTYPE,
                found: dtype,
            });
        }
        let n = self.size();
        let width = dtype.size_in_bytes();
        // Wait for this array alone, then read its buffer in place when it is row-major.
        // Anything evaluated *on* it (a contiguous copy, a bit-cast view) would be queued behind
        // the work already on its stream: after `async_eval` of a next decode step, reading the
        // current token that way would wait for the next step too.
        self.eval()?;
        let (ptr, row_contiguous) = self.host_data()?;
        // Kept alive until the bytes are copied out when a row-major copy is needed.
        let copy;
        let ptr = if row_contiguous {
            ptr
        } else {
            // SAFETY: `self` is a valid handle for the duration of the call.
            copy = Array::try_op_stream(|res, s| unsafe {
                sys::mlx_contiguous(res, self.as_raw(), false, s)
            })?;
            copy.eval()?;
            let (ptr, row_contiguous) = copy.host_data()?;
            if !row_contiguous {
                return Err(Error::InvalidArgument(
                    "MLX's contiguous copy is not row-major".into(),
                ));
            }
            ptr
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        if ptr.is_null() {
            return Err(Error::InvalidArgument(
                "MLX returned no data for an evaluated array".into(),
            ));
        }
        let ptr = ptr.cast::<u8>();
        if dtype == Dtype::Bool {
            // Never materialise a `bool` from a byte other than 0 or 1.
            // SAFETY: `n` bytes at `ptr`, see above.
            let bytes = unsafe { std::slice::from_raw_parts(ptr, n) };
            let bools: Vec<bool> = bytes.iter().map(|&b| b != 0).collect();
            // SAFETY: T::DTYPE == Bool means T is `bool` (the trait is sealed).
            return Ok(unsafe { std::mem::transmute::<Vec<bool>, Vec<T>>(bools) });
        }
        let mut out = Vec::<T>::with_capacity(n);
        // SAFETY: `T` is a plain numeric type of exactly `width` bytes (sealed trait); any bit
        // pattern is a valid value; the source holds `n * width` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr().cast::<u8>(), n * width);
            out.set_len(n);
        }
        Ok(out)
    }

    /// The host address of this array's first element, after evaluating it (`None` for an
    /// array without host data): e.g. to check that views share one buffer.
    ///
    /// ```
    /// use mlx_rs::{s, Array};
    /// let a = Array::from_slice(&[1u8, 2, 3, 4], &[4])?;
    /// let tail = a.slice(s![2..])?;
    /// assert_eq!(tail.host_address()?.unwrap(), a.host_address()?.unwrap() + 2);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    pub fn host_address(&self) -> Result<Option<usize>> {
        self.eval()?;
        let (ptr, _) = self.host_data()?;
        Ok((!ptr.is_null()).then_some(ptr as usize))
    }

    /// The data pointer of this evaluated array and whether its elements lie there in
    /// row-major order (queues nothing).
    pub(crate) fn host_data(&self) -> Result<(*const std::ffi::c_void, bool)> {
        let mut ptr = std::ptr::null();
        let mut row_contiguous = false;
        // SAFETY: valid handle and out-pointers; the callee only reads the array's metadata.
        check(unsafe {
            sys::array_host::mlxrs_array_host_data(&mut ptr, &mut row_contiguous, self.as_raw())
        })?;
        Ok((ptr, row_contiguous))
    }

    /// The single element of a one-element array (any shape), after evaluating it.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3])?;
    /// assert_eq!(a.sum(.., false)?.item::<f32>()?, 6.0);
    /// assert!(a.item::<f32>().is_err()); // three elements
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn item<T: ArrayElement>(&self) -> Result<T> {
        if self.size() != 1 {
            return Err(Error::Shape(format!(
                "item() needs exactly one element, the array has shape {:?}",
                self.shape()
            )));
        }
        Ok(self.to_vec::<T>()?[0])
    }
}
