//! Comparisons, logical ops, NaN/Inf tests, whole-array equality and [`where_`].
//!
//! Element-wise comparisons broadcast their operands and return `bool` arrays; operands whose
//! shapes do not broadcast give an [`Error::Mlx`](crate::Error::Mlx).

use super::{binary_ops, unary_ops};
use crate::error::Result;
use crate::Array;
use mlx_sys as sys;

binary_ops! {
    /// `self == other`, element-wise, broadcasting.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1, 2, 3], &[3])?;
    /// let b = Array::from_slice(&[1, 0, 3], &[3])?;
    /// assert_eq!(a.equal(&b)?.to_vec::<bool>()?, vec![true, false, true]);
    /// // Shapes [3] and [2] do not broadcast:
    /// assert!(a.equal(&Array::from_slice(&[1, 2], &[2])?).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    equal => mlx_equal;
    /// `self != other`, element-wise, broadcasting.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 2.0], &[2])?;
    /// let b = Array::from_slice(&[2.0f32], &[1])?;
    /// assert_eq!(a.not_equal(&b)?.to_vec::<bool>()?, vec![true, false]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    not_equal => mlx_not_equal;
    /// `self < other`, element-wise, broadcasting.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1, 2, 3], &[3])?;
    /// assert_eq!(a.less(&Array::scalar(2))?.to_vec::<bool>()?, vec![true, false, false]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    less => mlx_less;
    /// `self <= other`, element-wise, broadcasting.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1, 2, 3], &[3])?;
    /// assert_eq!(a.less_equal(&Array::scalar(2))?.to_vec::<bool>()?, vec![true, true, false]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    less_equal => mlx_less_equal;
    /// `self > other`, element-wise, broadcasting.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1, 2, 3], &[3])?;
    /// assert_eq!(a.greater(&Array::scalar(2))?.to_vec::<bool>()?, vec![false, false, true]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    greater => mlx_greater;
    /// `self >= other`, element-wise, broadcasting.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1, 2, 3], &[3])?;
    /// assert_eq!(a.greater_equal(&Array::scalar(2))?.to_vec::<bool>()?, vec![false, true, true]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    greater_equal => mlx_greater_equal;
    /// Element-wise logical AND (non-zero is true); the result is `bool`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[true, true, false, false], &[4])?;
    /// let b = Array::from_slice(&[true, false, true, false], &[4])?;
    /// assert_eq!(a.logical_and(&b)?.to_vec::<bool>()?, vec![true, false, false, false]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    logical_and => mlx_logical_and;
    /// Element-wise logical OR (non-zero is true); the result is `bool`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[true, true, false, false], &[4])?;
    /// let b = Array::from_slice(&[true, false, true, false], &[4])?;
    /// assert_eq!(a.logical_or(&b)?.to_vec::<bool>()?, vec![true, true, true, false]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    logical_or => mlx_logical_or;
}

unary_ops! {
    /// Element-wise logical NOT (non-zero is true); the result is `bool`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[0.0f32, 2.0], &[2])?;
    /// assert_eq!(a.logical_not()?.to_vec::<bool>()?, vec![true, false]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    logical_not => mlx_logical_not;
    /// Which elements are NaN.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, f32::NAN, f32::INFINITY], &[3])?;
    /// assert_eq!(a.isnan()?.to_vec::<bool>()?, vec![false, true, false]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    isnan => mlx_isnan;
    /// Which elements are `+inf` or `-inf`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, f32::NAN, f32::NEG_INFINITY], &[3])?;
    /// assert_eq!(a.isinf()?.to_vec::<bool>()?, vec![false, false, true]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    isinf => mlx_isinf;
    /// Which elements are neither NaN nor infinite.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, f32::NAN, f32::INFINITY], &[3])?;
    /// assert_eq!(a.isfinite()?.to_vec::<bool>()?, vec![true, false, false]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    isfinite => mlx_isfinite;
}

impl Array {
    /// Whether both arrays have the same shape and equal elements (dtypes may differ). With
    /// `equal_nan`, NaNs in the same places count as equal. Different shapes give `false`,
    /// not an error.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, f32::NAN], &[2])?;
    /// assert!(!a.array_equal(&a, false)?);
    /// assert!(a.array_equal(&a, true)?);
    /// assert!(!a.array_equal(&Array::from_slice(&[1.0f32, f32::NAN], &[1, 2])?, true)?);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn array_equal(&self, other: &Array, equal_nan: bool) -> Result<bool> {
        // SAFETY: valid handles.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_array_equal(res, self.as_raw(), other.as_raw(), equal_nan, s)
        })?
        .item::<bool>()
    }

    /// Whether `|self - other| <= atol + rtol * |other|` for every element, broadcasting
    /// (NumPy's `allclose`). NaNs are never close; infinities are close only to the same
    /// infinity. Shapes that do not broadcast give an error.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 100.0], &[2])?;
    /// let b = Array::from_slice(&[1.001f32, 100.05], &[2])?;
    /// assert!(a.allclose(&b, 1e-3, 1e-3)?);
    /// assert!(!a.allclose(&b, 1e-5, 1e-5)?);
    /// assert!(a.allclose(&Array::from_slice(&[1.0f32, 2.0, 3.0], &[3])?, 0.0, 0.0).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn allclose(&self, other: &Array, rtol: f64, atol: f64) -> Result<bool> {
        // SAFETY: valid handles.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_allclose(res, self.as_raw(), other.as_raw(), rtol, atol, false, s)
        })?
        .item::<bool>()
    }
}

/// Element-wise selection: `x` where `cond` is true (non-zero), else `y`; all three broadcast
/// together and `x`, `y` are promoted to a common dtype.
///
/// ```
/// use mlx_rs::{ops::where_, Array};
/// let c = Array::from_slice(&[true, false, true], &[3])?;
/// let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3])?;
/// let y = Array::scalar(0.0f32);
/// assert_eq!(where_(&c, &x, &y)?.to_vec::<f32>()?, vec![1.0, 0.0, 3.0]);
/// assert!(where_(&c, &x, &Array::from_slice(&[1.0f32, 2.0], &[2])?).is_err());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn where_(cond: &Array, x: &Array, y: &Array) -> Result<Array> {
    // SAFETY: valid handles.
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_where(res, cond.as_raw(), x.as_raw(), y.as_raw(), s)
    })
}
