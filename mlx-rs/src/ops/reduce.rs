//! Reductions (`sum`, `mean`, `max`, ...), arg-reductions, cumulative sums and `logsumexp`.
//!
//! Axes are checked in Rust before MLX sees them: an axis outside `-ndim..ndim`, or the same
//! axis given twice (say `0` and `-2` of a 2-D array), is an [`Error::InvalidArgument`].

use super::Axes;
use crate::error::{Error, Result};
use crate::Array;
use mlx_sys as sys;
use std::ffi::c_int;

/// `axis` as an index in `0..ndim`, or an error naming the op.
pub(crate) fn normalize_axis(axis: i32, ndim: usize, op: &str) -> Result<i32> {
    let n = ndim as i32;
    let i = if axis < 0 { axis + n } else { axis };
    if (0..n).contains(&i) {
        Ok(i)
    } else {
        Err(Error::InvalidArgument(format!(
            "{op}: axis {axis} is out of range for an array of {ndim} dimensions"
        )))
    }
}

/// Every axis of `axes` normalised to `0..ndim`; rejects out-of-range and repeated axes.
pub(crate) fn normalize_axes(axes: &[i32], ndim: usize, op: &str) -> Result<Vec<i32>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let i = normalize_axis(a, ndim, op)?;
        if out.contains(&i) {
            return Err(Error::InvalidArgument(format!(
                "{op}: axis {a} is repeated in {axes:?}"
            )));
        }
        out.push(i);
    }
    Ok(out)
}

type AllFn =
    unsafe extern "C" fn(*mut sys::mlx_array, sys::mlx_array, bool, sys::mlx_stream) -> c_int;
type AxesFn = unsafe extern "C" fn(
    *mut sys::mlx_array,
    sys::mlx_array,
    *const c_int,
    usize,
    bool,
    sys::mlx_stream,
) -> c_int;

impl Array {
    /// Shared body of the plain reductions: validates `axes`, then calls the all-axes or the
    /// `_axes` variant.
    #[track_caller]
    fn reduce_with(
        &self,
        axes: Axes,
        keepdims: bool,
        op: &str,
        all: AllFn,
        some: AxesFn,
    ) -> Result<Array> {
        match axes {
            Axes::All => {
                // SAFETY: valid handle; `all` is an mlx-c reduction with this signature.
                Array::try_op_stream(|res, s| unsafe { all(res, self.as_raw(), keepdims, s) })
            }
            Axes::These(list) => {
                let list = normalize_axes(&list, self.ndim(), op)?;
                // SAFETY: valid handle; `list` outlives the call and holds `list.len()` ints.
                Array::try_op_stream(|res, s| unsafe {
                    some(res, self.as_raw(), list.as_ptr(), list.len(), keepdims, s)
                })
            }
        }
    }

    /// Sum over `axes` (`..` for all); `keepdims` keeps reduced axes with size 1.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(a.sum(.., false)?.item::<f32>()?, 21.0);
    /// assert_eq!(a.sum(1, false)?.to_vec::<f32>()?, vec![6.0, 15.0]);
    /// assert_eq!(a.sum(0, true)?.shape(), vec![1, 3]);
    /// assert!(a.sum(2, false).is_err()); // no axis 2
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn sum(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        self.reduce_with(
            axes.into(),
            keepdims,
            "sum",
            sys::mlx_sum,
            sys::mlx_sum_axes,
        )
    }

    /// Arithmetic mean over `axes`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(a.mean(.., false)?.item::<f32>()?, 3.5);
    /// assert_eq!(a.mean(0, false)?.to_vec::<f32>()?, vec![2.5, 3.5, 4.5]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn mean(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        self.reduce_with(
            axes.into(),
            keepdims,
            "mean",
            sys::mlx_mean,
            sys::mlx_mean_axes,
        )
    }

    /// Maximum over `axes`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 7, 3, 4, 5, 6], &[2, 3])?;
    /// assert_eq!(a.max(.., false)?.item::<i32>()?, 7);
    /// assert_eq!(a.max(-1, false)?.to_vec::<i32>()?, vec![7, 6]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn max(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        self.reduce_with(
            axes.into(),
            keepdims,
            "max",
            sys::mlx_max,
            sys::mlx_max_axes,
        )
    }

    /// Minimum over `axes`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 7, 3, 4, 0, 6], &[2, 3])?;
    /// assert_eq!(a.min(.., false)?.item::<i32>()?, 0);
    /// assert_eq!(a.min(0, false)?.to_vec::<i32>()?, vec![1, 0, 3]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn min(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        self.reduce_with(
            axes.into(),
            keepdims,
            "min",
            sys::mlx_min,
            sys::mlx_min_axes,
        )
    }

    /// Product over `axes`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(a.prod(.., false)?.item::<f32>()?, 24.0);
    /// assert_eq!(a.prod(1, false)?.to_vec::<f32>()?, vec![2.0, 12.0]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn prod(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        self.reduce_with(
            axes.into(),
            keepdims,
            "prod",
            sys::mlx_prod,
            sys::mlx_prod_axes,
        )
    }

    /// Logical AND over `axes` (non-zero is true); the result is `bool`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[true, true, false, true], &[2, 2])?;
    /// assert!(!a.all(.., false)?.item::<bool>()?);
    /// assert_eq!(a.all(1, false)?.to_vec::<bool>()?, vec![true, false]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn all(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        self.reduce_with(
            axes.into(),
            keepdims,
            "all",
            sys::mlx_all,
            sys::mlx_all_axes,
        )
    }

    /// Logical OR over `axes` (non-zero is true); the result is `bool`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[0.0f32, 0.0, 0.0, 2.0], &[2, 2])?;
    /// assert!(a.any(.., false)?.item::<bool>()?);
    /// assert_eq!(a.any(1, false)?.to_vec::<bool>()?, vec![false, true]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn any(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        self.reduce_with(
            axes.into(),
            keepdims,
            "any",
            sys::mlx_any,
            sys::mlx_any_axes,
        )
    }

    /// Variance over `axes`, dividing by `N - ddof` (`ddof = 0`: population variance,
    /// `ddof = 1`: the unbiased sample variance).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[4])?;
    /// assert_eq!(a.var(.., false, 0)?.item::<f32>()?, 1.25);
    /// assert!((a.var(0, false, 1)?.item::<f32>()? - 5.0 / 3.0).abs() < 1e-6);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn var(&self, axes: impl Into<Axes>, keepdims: bool, ddof: i32) -> Result<Array> {
        match axes.into() {
            // SAFETY: valid handle.
            Axes::All => Array::try_op_stream(|res, s| unsafe {
                sys::mlx_var(res, self.as_raw(), keepdims, ddof, s)
            }),
            Axes::These(list) => {
                let list = normalize_axes(&list, self.ndim(), "var")?;
                // SAFETY: valid handle; `list` outlives the call.
                Array::try_op_stream(|res, s| unsafe {
                    sys::mlx_var_axes(
                        res,
                        self.as_raw(),
                        list.as_ptr(),
                        list.len(),
                        keepdims,
                        ddof,
                        s,
                    )
                })
            }
        }
    }

    /// `log(sum(exp(self)))` over `axes`, computed stably.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[0.0f32, 0.0, 1000.0, 1000.0], &[2, 2])?;
    /// let v = a.logsumexp(1, false)?.to_vec::<f32>()?;
    /// assert!((v[0] - 2f32.ln()).abs() < 1e-6 && (v[1] - (1000.0 + 2f32.ln())).abs() < 1e-3);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn logsumexp(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        self.reduce_with(
            axes.into(),
            keepdims,
            "logsumexp",
            sys::mlx_logsumexp,
            sys::mlx_logsumexp_axes,
        )
    }

    /// Shared body of `argmax` / `argmin`.
    #[track_caller]
    fn arg_reduce(
        &self,
        axis: Option<i32>,
        keepdims: bool,
        op: &str,
        flat: AllFn,
        along: unsafe extern "C" fn(
            *mut sys::mlx_array,
            sys::mlx_array,
            c_int,
            bool,
            sys::mlx_stream,
        ) -> c_int,
    ) -> Result<Array> {
        if self.size() == 0 {
            return Err(Error::InvalidArgument(format!(
                "{op}: the array of shape {:?} is empty",
                self.shape()
            )));
        }
        match axis {
            // SAFETY: valid handle; `flat` is an mlx-c arg-reduction with this signature.
            None => Array::try_op_stream(|res, s| unsafe { flat(res, self.as_raw(), keepdims, s) }),
            Some(a) => {
                let a = normalize_axis(a, self.ndim(), op)?;
                // SAFETY: valid handle; `along` is an mlx-c arg-reduction with this signature.
                Array::try_op_stream(|res, s| unsafe { along(res, self.as_raw(), a, keepdims, s) })
            }
        }
    }

    /// Index of the largest element along `axis` (`None`: of the flattened array), as
    /// `uint32`. Ties give the first index; NaN is passed over unless it comes first (MLX's
    /// scan). Along the last axis of a float32 array on a CPU stream this is one native
    /// primitive (vectorised; MLX's CPU kernel is a scalar loop: 12 against 63 µs over a 49k-entry
    /// vocabulary), with the same result ([`crate::native::set_native_ops`] opts out).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 9.0, 3.0, 8.0, 2.0, 8.0], &[2, 3])?;
    /// assert_eq!(a.argmax(1, false)?.to_vec::<u32>()?, vec![1, 0]);
    /// assert_eq!(a.argmax(None, false)?.item::<u32>()?, 1);
    /// assert_eq!(a.argmax(0, true)?.shape(), vec![1, 3]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn argmax(&self, axis: impl Into<Option<i32>>, keepdims: bool) -> Result<Array> {
        let axis = axis.into();
        let last = (self.ndim() as i32).checked_sub(1).filter(|&l| l >= 0);
        if self.size() > 0
            && last.is_some()
            && axis.map(|a| normalize_axis(a, self.ndim(), "argmax").ok()) == Some(last)
        {
            if let Some(y) = crate::native::argmax_last(self)? {
                return if keepdims {
                    Ok(y.expand_dims(&[-1])?)
                } else {
                    Ok(y)
                };
            }
        }
        self.arg_reduce(
            axis,
            keepdims,
            "argmax",
            sys::mlx_argmax,
            sys::mlx_argmax_axis,
        )
    }

    /// Index of the smallest element along `axis` (`None`: of the flattened array), as
    /// `uint32`. Ties give the first index.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 9.0, 3.0, 8.0, 0.0, 8.0], &[2, 3])?;
    /// assert_eq!(a.argmin(-1, false)?.to_vec::<u32>()?, vec![0, 1]);
    /// assert_eq!(a.argmin(None, false)?.item::<u32>()?, 4);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn argmin(&self, axis: impl Into<Option<i32>>, keepdims: bool) -> Result<Array> {
        self.arg_reduce(
            axis.into(),
            keepdims,
            "argmin",
            sys::mlx_argmin,
            sys::mlx_argmin_axis,
        )
    }

    /// Cumulative sum along `axis` (`None`: of the flattened array). `reverse` sums from the
    /// end; `inclusive = false` shifts by one (each output excludes its own element).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2])?;
    /// assert_eq!(a.cumsum(1, false, true)?.to_vec::<i32>()?, vec![1, 3, 3, 7]);
    /// assert_eq!(a.cumsum(None, false, true)?.to_vec::<i32>()?, vec![1, 3, 6, 10]);
    /// assert_eq!(a.cumsum(0, true, true)?.to_vec::<i32>()?, vec![4, 6, 3, 4]);
    /// assert_eq!(a.cumsum(1, false, false)?.to_vec::<i32>()?, vec![0, 1, 0, 3]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn cumsum(
        &self,
        axis: impl Into<Option<i32>>,
        reverse: bool,
        inclusive: bool,
    ) -> Result<Array> {
        // No dtype override: MLX's default for the input type.
        let dtype = sys::mlx_optional_dtype {
            value: crate::Dtype::Float32.to_sys(),
            has_value: false,
        };
        match axis.into() {
            // SAFETY: valid handle.
            None => Array::try_op_stream(|res, s| unsafe {
                sys::mlx_cumsum(res, self.as_raw(), reverse, inclusive, dtype, s)
            }),
            Some(a) => {
                let a = normalize_axis(a, self.ndim(), "cumsum")?;
                // SAFETY: valid handle.
                Array::try_op_stream(|res, s| unsafe {
                    sys::mlx_cumsum_axis(res, self.as_raw(), a, reverse, inclusive, dtype, s)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_normalised_and_checked() {
        assert_eq!(normalize_axes(&[-1, 0], 3, "t").unwrap(), vec![2, 0]);
        assert!(matches!(
            normalize_axes(&[3], 3, "t"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            normalize_axes(&[-4], 3, "t"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            normalize_axes(&[1, -2], 3, "t"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(normalize_axis(0, 0, "t").is_err());
    }
}
