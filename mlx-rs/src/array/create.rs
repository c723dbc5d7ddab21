//! Constructors: from Rust data, scalars, and the filled and ranged arrays.

use super::{Array, ArrayElement};
use crate::error::{init, Error, Result};
use crate::Dtype;
use mlx_sys as sys;

/// Checks a shape and returns its element count.
pub(crate) fn element_count(shape: &[i32]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| {
        if d < 0 {
            return Err(Error::Shape(format!(
                "negative dimension {d} in shape {shape:?}"
            )));
        }
        n.checked_mul(d as usize)
            .ok_or_else(|| Error::Shape(format!("shape {shape:?} has too many elements")))
    })
}

impl Array {
    /// An array holding a copy of `data`, laid out row-major in `shape`.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3])?;
    /// assert_eq!((a.shape(), a.dtype()), (vec![2, 3], Dtype::Int32));
    /// // The element count must match the shape:
    /// assert!(Array::from_slice(&[1.0f32; 5], &[2, 3]).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn from_slice<T: ArrayElement>(data: &[T], shape: &[i32]) -> Result<Array> {
        let count = element_count(shape)?;
        if count != data.len() {
            return Err(Error::Shape(format!(
                "{} elements given for shape {shape:?}, which holds {count}",
                data.len()
            )));
        }
        init();
        // SAFETY: `data` holds `count` elements of `T::DTYPE`'s layout; MLX copies them.
        let raw = unsafe {
            sys::mlx_array_new_data(
                data.as_ptr().cast(),
                shape.as_ptr(),
                shape.len() as i32,
                T::DTYPE.to_sys(),
            )
        };
        if raw.ctx.is_null() {
            return Err(Error::Shape(format!(
                "MLX could not create an array of shape {shape:?}"
            )));
        }
        // SAFETY: a fresh handle that we own.
        Ok(unsafe { Array::from_raw(raw) })
    }

    /// An array of `dtype` holding a copy of `bytes`: the elements in row-major order, each in
    /// little-endian byte order (as safetensors and GGUF store them).
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let bytes: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    /// let a = Array::from_bytes(&bytes, &[2], Dtype::Float32)?;
    /// assert_eq!(a.to_vec::<f32>()?, vec![1.5, -2.0]);
    /// // The byte count must match the shape and dtype:
    /// assert!(Array::from_bytes(&bytes[..7], &[2], Dtype::Float32).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn from_bytes(bytes: &[u8], shape: &[i32], dtype: Dtype) -> Result<Array> {
        let count = element_count(shape)?;
        let size = dtype.size_in_bytes();
        if count.checked_mul(size) != Some(bytes.len()) {
            return Err(Error::Shape(format!(
                "{} bytes given for shape {shape:?} of {dtype}, which holds {count} elements of \
                 {size} bytes",
                bytes.len()
            )));
        }
        if cfg!(target_endian = "big") && size > 1 {
            return Err(Error::Shape(
                "little-endian element bytes cannot be used on a big-endian host".into(),
            ));
        }
        // MLX reads the buffer through a pointer to the element type: give it one that is
        // aligned for any element type.
        let aligned: Vec<u64>;
        let data: *const u8 = if (bytes.as_ptr() as usize).is_multiple_of(8) {
            bytes.as_ptr()
        } else {
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
                let mut b = [0u8; 8];
                b[..chunk.len()].copy_from_slice(chunk);
                *word = u64::from_ne_bytes(b);
            }
            aligned = words;
            aligned.as_ptr().cast()
        };
        init();
        // SAFETY: `data` points to `count * size` readable bytes, aligned to 8, in `dtype`'s
        // layout; MLX copies them before returning.
        let raw = unsafe {
            sys::mlx_array_new_data(
                data.cast(),
                shape.as_ptr(),
                shape.len() as i32,
                dtype.to_sys(),
            )
        };
        if raw.ctx.is_null() {
            return Err(Error::Shape(format!(
                "MLX could not create an array of shape {shape:?}"
            )));
        }
        // SAFETY: a fresh handle that we own.
        Ok(unsafe { Array::from_raw(raw) })
    }

    /// A 0-dimensional array holding `value`, with `T`'s dtype.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let x = Array::scalar(half::bf16::from_f32(1.5));
    /// assert_eq!((x.ndim(), x.dtype()), (0, Dtype::Bfloat16));
    /// assert_eq!(x.item::<half::bf16>()?.to_f32(), 1.5);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    pub fn scalar<T: ArrayElement>(value: T) -> Array {
        Array::from_slice(std::slice::from_ref(&value), &[])
            .expect("a scalar always matches shape []")
    }

    /// An array of `shape` filled with zeros.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// assert_eq!(Array::zeros(&[2, 2], Dtype::Float32)?.to_vec::<f32>()?, vec![0.0; 4]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn zeros(shape: &[i32], dtype: Dtype) -> Result<Array> {
        element_count(shape)?;
        Array::try_op_stream(|res, s| unsafe {
            // SAFETY: `shape` outlives the call.
            sys::mlx_zeros(res, shape.as_ptr(), shape.len(), dtype.to_sys(), s)
        })
    }

    /// An array of `shape` filled with ones.
    #[track_caller]
    pub fn ones(shape: &[i32], dtype: Dtype) -> Result<Array> {
        element_count(shape)?;
        Array::try_op_stream(|res, s| unsafe {
            // SAFETY: `shape` outlives the call.
            sys::mlx_ones(res, shape.as_ptr(), shape.len(), dtype.to_sys(), s)
        })
    }

    /// An array of `shape` and `dtype` filled with `value` (converted to `dtype`).
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::full(&[3], 2.5f32, Dtype::Float16)?;
    /// assert_eq!(a.to_vec::<half::f16>()?, vec![half::f16::from_f32(2.5); 3]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn full<T: ArrayElement>(shape: &[i32], value: T, dtype: Dtype) -> Result<Array> {
        element_count(shape)?;
        let v = Array::scalar(value);
        Array::try_op_stream(|res, s| unsafe {
            // SAFETY: `shape` and `v` outlive the call.
            sys::mlx_full(
                res,
                shape.as_ptr(),
                shape.len(),
                v.as_raw(),
                dtype.to_sys(),
                s,
            )
        })
    }

    /// Values `start, start + step, ...` below `stop` (above it for a negative step).
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// assert_eq!(Array::arange(0.0, 1.0, 0.25, Dtype::Float32)?.to_vec::<f32>()?, vec![0.0, 0.25, 0.5, 0.75]);
    /// assert_eq!(Array::arange(5.0, 0.0, -2.0, Dtype::Int32)?.to_vec::<i32>()?, vec![5, 3, 1]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn arange(start: f64, stop: f64, step: f64, dtype: Dtype) -> Result<Array> {
        if step == 0.0 || !step.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "arange step must be finite and non-zero, got {step}"
            )));
        }
        // SAFETY: plain values.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_arange(res, start, stop, step, dtype.to_sys(), s)
        })
    }

    /// `num` evenly spaced values from `start` to `stop`, both included.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// assert_eq!(Array::linspace(0.0, 1.0, 5, Dtype::Float32)?.to_vec::<f32>()?, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn linspace(start: f64, stop: f64, num: i32, dtype: Dtype) -> Result<Array> {
        // SAFETY: plain values.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_linspace(res, start, stop, num, dtype.to_sys(), s)
        })
    }

    /// An `n × m` matrix with ones on diagonal `k` (0 = main, positive = above) and zeros elsewhere.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// assert_eq!(Array::eye(2, 3, 1, Dtype::Int32)?.to_vec::<i32>()?, vec![0, 1, 0, 0, 0, 1]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn eye(n: i32, m: i32, k: i32, dtype: Dtype) -> Result<Array> {
        element_count(&[n, m])?;
        // SAFETY: plain values.
        Array::try_op_stream(|res, s| unsafe { sys::mlx_eye(res, n, m, k, dtype.to_sys(), s) })
    }
}
