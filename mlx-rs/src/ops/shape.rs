//! Shape manipulation: reshaping, transposing, adding and removing axes, broadcasting, joining
//! and splitting, padding, triangles.

use super::{Axes, ScalarOperand};
use crate::error::{Error, Result};
use crate::vector::VectorArray;
use crate::Array;
use mlx_sys as sys;
use std::ffi::CString;

/// `axis` resolved against `ndim` dimensions (negative counts from the end), or
/// [`Error::InvalidArgument`].
pub(crate) fn normalize_axis(axis: i32, ndim: usize) -> Result<usize> {
    let n = ndim as i64;
    let a = if axis < 0 {
        axis as i64 + n
    } else {
        axis as i64
    };
    if (0..n).contains(&a) {
        Ok(a as usize)
    } else {
        Err(Error::InvalidArgument(format!(
            "axis {axis} is out of range for an array of {ndim} dimensions"
        )))
    }
}

fn check_not_empty(arrays: &[&Array], what: &str) -> Result<()> {
    if arrays.is_empty() {
        Err(Error::InvalidArgument(format!(
            "{what} needs at least one array"
        )))
    } else {
        Ok(())
    }
}

/// Joins arrays along an existing axis (negative counts from the end). All dimensions but
/// `axis` must agree. Same as [`Array::concatenate`].
///
/// ```
/// use mlx_rs::{ops, Array};
/// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2])?;
/// let b = Array::from_slice(&[5i32, 6], &[1, 2])?;
/// let c = ops::concatenate(&[&a, &b], 0)?;
/// assert_eq!(c.shape(), vec![3, 2]);
/// assert_eq!(c.to_vec::<i32>()?, vec![1, 2, 3, 4, 5, 6]);
/// assert!(ops::concatenate(&[&a, &b], 1).is_err()); // 2 rows vs 1 row
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn concatenate(arrays: &[&Array], axis: i32) -> Result<Array> {
    check_not_empty(arrays, "concatenate")?;
    let v = VectorArray::from_arrays(arrays);
    // SAFETY: `v` is a valid vector for the duration of the call.
    Array::try_op_stream(|res, s| unsafe { sys::mlx_concatenate_axis(res, v.as_raw(), axis, s) })
}

/// Joins arrays of one shape along a new axis `axis` (in the result's dimensions).
///
/// ```
/// use mlx_rs::{ops, Array};
/// let a = Array::from_slice(&[1i32, 2], &[2])?;
/// let b = Array::from_slice(&[3i32, 4], &[2])?;
/// let c = ops::stack(&[&a, &b], 1)?;
/// assert_eq!(c.shape(), vec![2, 2]);
/// assert_eq!(c.to_vec::<i32>()?, vec![1, 3, 2, 4]);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn stack(arrays: &[&Array], axis: i32) -> Result<Array> {
    check_not_empty(arrays, "stack")?;
    let v = VectorArray::from_arrays(arrays);
    // SAFETY: `v` is a valid vector for the duration of the call.
    Array::try_op_stream(|res, s| unsafe { sys::mlx_stack_axis(res, v.as_raw(), axis, s) })
}

impl Array {
    /// The same elements with a new shape. One dimension may be `-1`: it is inferred from
    /// the others. The element count must not change ([`Error::Shape`] otherwise).
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype, Error};
    /// let a = Array::arange(0.0, 6.0, 1.0, Dtype::Int32)?;
    /// assert_eq!(a.reshape(&[2, 3])?.shape(), vec![2, 3]);
    /// assert_eq!(a.reshape(&[-1, 2])?.shape(), vec![3, 2]);
    /// assert!(matches!(a.reshape(&[4, 2]), Err(Error::Shape(_))));
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn reshape(&self, shape: &[i32]) -> Result<Array> {
        let size = self.size() as i64;
        let mut inferred = None;
        let mut known: i64 = 1;
        for (i, &d) in shape.iter().enumerate() {
            if d == -1 {
                if inferred.replace(i).is_some() {
                    return Err(Error::Shape(format!(
                        "reshape to {shape:?}: only one dimension can be -1"
                    )));
                }
            } else if d < 0 {
                return Err(Error::Shape(format!(
                    "reshape to {shape:?}: negative dimension {d}"
                )));
            } else {
                known = known.saturating_mul(d as i64);
            }
        }
        let ok = match inferred {
            None => known == size,
            Some(_) => known != 0 && size % known == 0 && size / known <= i32::MAX as i64,
        };
        if !ok {
            return Err(Error::Shape(format!(
                "cannot reshape an array of shape {:?} ({size} elements) to {shape:?}",
                self.shape()
            )));
        }
        // SAFETY: valid handle; `shape` holds `shape.len()` ints.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_reshape(res, self.as_raw(), shape.as_ptr(), shape.len(), s)
        })
    }

    /// Merges axes `start_axis..=end_axis` into one (negative counts from the end);
    /// `flatten(0, -1)` gives a 1-D array.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::zeros(&[2, 3, 4], Dtype::Float32)?;
    /// assert_eq!(a.flatten(0, -1)?.shape(), vec![24]);
    /// assert_eq!(a.flatten(1, 2)?.shape(), vec![2, 12]);
    /// assert!(a.flatten(0, 3).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn flatten(&self, start_axis: i32, end_axis: i32) -> Result<Array> {
        if self.ndim() > 0 {
            let a = normalize_axis(start_axis, self.ndim())?;
            let b = normalize_axis(end_axis, self.ndim())?;
            if a > b {
                return Err(Error::InvalidArgument(format!(
                    "flatten: start axis {start_axis} comes after end axis {end_axis}"
                )));
            }
        }
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_flatten(res, self.as_raw(), start_axis, end_axis, s)
        })
    }

    /// Permutes the axes: axis `i` of the result is axis `axes[i]` of `self`.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::zeros(&[2, 3, 4], Dtype::Float32)?;
    /// assert_eq!(a.transpose(&[1, 2, 0])?.shape(), vec![3, 4, 2]);
    /// assert!(a.transpose(&[0, 1]).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn transpose(&self, axes: &[i32]) -> Result<Array> {
        // SAFETY: valid handle; `axes` holds `axes.len()` ints.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_transpose_axes(res, self.as_raw(), axes.as_ptr(), axes.len(), s)
        })
    }

    /// Reverses the order of the axes.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::zeros(&[2, 3, 4], Dtype::Float32)?;
    /// assert_eq!(a.transpose_all()?.shape(), vec![4, 3, 2]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn transpose_all(&self) -> Result<Array> {
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe { sys::mlx_transpose(res, self.as_raw(), s) })
    }

    /// The transpose (all axes reversed), as [`Array::transpose_all`].
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3])?;
    /// assert_eq!(a.t()?.to_vec::<i32>()?, vec![1, 4, 2, 5, 3, 6]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn t(&self) -> Result<Array> {
        self.transpose_all()
    }

    /// Exchanges two axes.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::zeros(&[2, 3, 4], Dtype::Float32)?;
    /// assert_eq!(a.swapaxes(0, -1)?.shape(), vec![4, 3, 2]);
    /// assert!(a.swapaxes(0, 3).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn swapaxes(&self, axis1: i32, axis2: i32) -> Result<Array> {
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_swapaxes(res, self.as_raw(), axis1, axis2, s)
        })
    }

    /// Moves axis `source` to position `destination`, keeping the others in order.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::zeros(&[2, 3, 4], Dtype::Float32)?;
    /// assert_eq!(a.moveaxis(0, -1)?.shape(), vec![3, 4, 2]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn moveaxis(&self, source: i32, destination: i32) -> Result<Array> {
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_moveaxis(res, self.as_raw(), source, destination, s)
        })
    }

    /// Inserts axes of size 1 at positions `axes` of the result (negative counts from the
    /// end of the result).
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::zeros(&[2, 3], Dtype::Float32)?;
    /// assert_eq!(a.expand_dims(&[0])?.shape(), vec![1, 2, 3]);
    /// assert_eq!(a.expand_dims(&[0, -1])?.shape(), vec![1, 2, 3, 1]);
    /// assert!(a.expand_dims(&[4]).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn expand_dims(&self, axes: &[i32]) -> Result<Array> {
        let out_ndim = self.ndim() + axes.len();
        let mut seen = vec![false; out_ndim];
        for &a in axes {
            let i = normalize_axis(a, out_ndim)?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(Error::InvalidArgument(format!(
                    "expand_dims: axis {a} is repeated in {axes:?}"
                )));
            }
        }
        // SAFETY: valid handle; `axes` holds `axes.len()` ints.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_expand_dims_axes(res, self.as_raw(), axes.as_ptr(), axes.len(), s)
        })
    }

    /// Removes axes of size 1: the listed ones, or every one with `..`. Squeezing an axis
    /// whose size is not 1 is an [`Error::Shape`].
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype, Error};
    /// let a = Array::zeros(&[1, 3, 1], Dtype::Float32)?;
    /// assert_eq!(a.squeeze(..)?.shape(), vec![3]);
    /// assert_eq!(a.squeeze(-1)?.shape(), vec![1, 3]);
    /// assert!(matches!(a.squeeze(1), Err(Error::Shape(_))));
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn squeeze(&self, axes: impl Into<Axes>) -> Result<Array> {
        let shape = self.shape();
        let axes: Vec<i32> = match axes.into() {
            Axes::All => (0..shape.len() as i32)
                .filter(|&i| shape[i as usize] == 1)
                .collect(),
            Axes::These(v) => {
                for &a in &v {
                    let i = normalize_axis(a, shape.len())?;
                    if shape[i] != 1 {
                        return Err(Error::Shape(format!(
                            "cannot squeeze axis {a} of size {} (shape {shape:?})",
                            shape[i]
                        )));
                    }
                }
                v
            }
        };
        // SAFETY: valid handle; `axes` holds `axes.len()` ints.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_squeeze_axes(res, self.as_raw(), axes.as_ptr(), axes.len(), s)
        })
    }

    /// The array broadcast to `shape` (NumPy's rules; no data is copied).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 2], &[2])?;
    /// assert_eq!(a.broadcast_to(&[2, 2])?.to_vec::<i32>()?, vec![1, 2, 1, 2]);
    /// assert!(a.broadcast_to(&[3]).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[i32]) -> Result<Array> {
        // SAFETY: valid handle; `shape` holds `shape.len()` ints.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_broadcast_to(res, self.as_raw(), shape.as_ptr(), shape.len(), s)
        })
    }

    /// `self` followed by `others` along `axis`; see [`concatenate`](crate::ops::concatenate).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 2], &[2])?;
    /// let b = Array::from_slice(&[3i32], &[1])?;
    /// assert_eq!(a.concatenate(&[&b], 0)?.to_vec::<i32>()?, vec![1, 2, 3]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn concatenate(&self, others: &[&Array], axis: i32) -> Result<Array> {
        let mut all = Vec::with_capacity(others.len() + 1);
        all.push(self);
        all.extend_from_slice(others);
        concatenate(&all, axis)
    }

    /// Splits into `sections` equal parts along `axis`; the axis size must divide evenly.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::arange(0.0, 6.0, 1.0, Dtype::Int32)?;
    /// let parts = a.split(3, 0)?;
    /// assert_eq!(parts.len(), 3);
    /// assert_eq!(parts[1].to_vec::<i32>()?, vec![2, 3]);
    /// assert!(a.split(4, 0).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn split(&self, sections: i32, axis: i32) -> Result<Vec<Array>> {
        let n = self.dim(axis)?;
        if sections <= 0 || n % sections != 0 {
            return Err(Error::InvalidArgument(format!(
                "split: an axis of size {n} cannot be split into {sections} equal sections"
            )));
        }
        // SAFETY: valid handle; the out-parameter is a valid vector.
        VectorArray::try_op_stream(|res, s| unsafe {
            sys::mlx_split(res, self.as_raw(), sections, axis, s)
        })
    }

    /// Splits along `axis` before each of `indices` (NumPy's `split` with a list: `[2, 5]`
    /// gives `[..2]`, `[2..5]`, `[5..]`; indices past the end give empty parts).
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::arange(0.0, 6.0, 1.0, Dtype::Int32)?;
    /// let parts = a.split_at(&[2, 5], 0)?;
    /// assert_eq!(parts[0].to_vec::<i32>()?, vec![0, 1]);
    /// assert_eq!(parts[1].to_vec::<i32>()?, vec![2, 3, 4]);
    /// assert_eq!(parts[2].to_vec::<i32>()?, vec![5]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn split_at(&self, indices: &[i32], axis: i32) -> Result<Vec<Array>> {
        self.dim(axis)?;
        // SAFETY: valid handle; `indices` holds `indices.len()` ints.
        VectorArray::try_op_stream(|res, s| unsafe {
            sys::mlx_split_sections(res, self.as_raw(), indices.as_ptr(), indices.len(), axis, s)
        })
    }

    /// Pads with a constant: `widths[i] = (before, after)` elements on axis `i`. A single
    /// pair applies to every axis. The value takes the array's dtype (see [`ScalarOperand`]).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 2], &[1, 2])?;
    /// let p = a.pad(&[(0, 1), (1, 0)], 9)?;
    /// assert_eq!(p.shape(), vec![2, 3]);
    /// assert_eq!(p.to_vec::<i32>()?, vec![9, 1, 2, 9, 9, 9]);
    /// assert!(a.pad(&[(0, 1), (1, 0), (1, 1)], 0).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn pad<T: ScalarOperand>(&self, widths: &[(i32, i32)], value: T) -> Result<Array> {
        let ndim = self.ndim();
        let widths: Vec<(i32, i32)> = match widths.len() {
            1 => vec![widths[0]; ndim],
            n if n == ndim => widths.to_vec(),
            n => {
                return Err(Error::InvalidArgument(format!(
                    "pad: {n} (before, after) pairs given for an array of {ndim} dimensions"
                )))
            }
        };
        if let Some(w) = widths.iter().find(|w| w.0 < 0 || w.1 < 0) {
            return Err(Error::InvalidArgument(format!("pad: negative width {w:?}")));
        }
        let axes: Vec<i32> = (0..ndim as i32).collect();
        let low: Vec<i32> = widths.iter().map(|w| w.0).collect();
        let high: Vec<i32> = widths.iter().map(|w| w.1).collect();
        let value = value.operand_for(self)?;
        let mode = CString::new("constant").expect("no NUL in a literal");
        // SAFETY: valid handles; each slice pointer comes with its length; `mode` is a
        // NUL-terminated string that outlives the call.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_pad(
                res,
                self.as_raw(),
                axes.as_ptr(),
                axes.len(),
                low.as_ptr(),
                low.len(),
                high.as_ptr(),
                high.len(),
                value.as_raw(),
                mode.as_ptr(),
                s,
            )
        })
    }

    /// The lower triangle of the last two axes: elements above diagonal `k` become zero
    /// (`k > 0` keeps diagonals above the main one). Needs at least 2 dimensions.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2])?;
    /// assert_eq!(a.tril(0)?.to_vec::<i32>()?, vec![1, 0, 3, 4]);
    /// assert!(Array::from_slice(&[1i32], &[1])?.tril(0).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn tril(&self, k: i32) -> Result<Array> {
        self.check_matrix("tril")?;
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe { sys::mlx_tril(res, self.as_raw(), k, s) })
    }

    /// The upper triangle of the last two axes: elements below diagonal `k` become zero.
    /// Needs at least 2 dimensions.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2])?;
    /// assert_eq!(a.triu(0)?.to_vec::<i32>()?, vec![1, 2, 0, 4]);
    /// assert_eq!(a.triu(1)?.to_vec::<i32>()?, vec![0, 2, 0, 0]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn triu(&self, k: i32) -> Result<Array> {
        self.check_matrix("triu")?;
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe { sys::mlx_triu(res, self.as_raw(), k, s) })
    }

    fn check_matrix(&self, what: &str) -> Result<()> {
        if self.ndim() < 2 {
            Err(Error::Shape(format!(
                "{what} needs at least 2 dimensions, got shape {:?}",
                self.shape()
            )))
        } else {
            Ok(())
        }
    }

    /// The same values in row-major contiguous memory (a copy only if needed).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2])?.t()?.contiguous()?;
    /// assert_eq!(a.to_vec::<i32>()?, vec![1, 3, 2, 4]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn contiguous(&self) -> Result<Array> {
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe { sys::mlx_contiguous(res, self.as_raw(), false, s) })
    }
}
