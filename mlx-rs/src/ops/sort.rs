//! Sorting and selection: `sort`, `argsort`, `partition`, `argpartition`, `topk`.
//!
//! Axes (negative counts from the end) and `kth` / `k` are checked in Rust; out-of-range
//! values give [`Error::InvalidArgument`]. Index results are `uint32`.

use super::reduce::normalize_axis;
use crate::error::{Error, Result};
use crate::Array;
use mlx_sys as sys;

impl Array {
    /// `axis` normalised, and `kth` (negative counts from the end) as an index along it.
    fn kth_along(&self, kth: i32, axis: i32, op: &str) -> Result<(i32, i32)> {
        let axis = normalize_axis(axis, self.ndim(), op)?;
        let n = self.shape()[axis as usize];
        let k = if kth < 0 { kth + n } else { kth };
        if !(0..n).contains(&k) {
            return Err(Error::InvalidArgument(format!(
                "{op}: kth = {kth} is out of range for axis {axis} of size {n}"
            )));
        }
        Ok((k, axis))
    }

    /// The values sorted in ascending order along `axis` (NaNs last).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[3.0f32, 1.0, 2.0, 0.0, 5.0, 4.0], &[2, 3])?;
    /// assert_eq!(a.sort(-1)?.to_vec::<f32>()?, vec![1.0, 2.0, 3.0, 0.0, 4.0, 5.0]);
    /// assert_eq!(a.sort(0)?.to_vec::<f32>()?, vec![0.0, 1.0, 2.0, 3.0, 5.0, 4.0]);
    /// assert!(a.sort(2).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn sort(&self, axis: i32) -> Result<Array> {
        let axis = normalize_axis(axis, self.ndim(), "sort")?;
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe { sys::mlx_sort_axis(res, self.as_raw(), axis, s) })
    }

    /// The indices (`uint32`) that sort the values along `axis` in ascending order.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[3.0f32, 1.0, 2.0], &[3])?;
    /// assert_eq!(a.argsort(0)?.to_vec::<u32>()?, vec![1, 2, 0]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn argsort(&self, axis: i32) -> Result<Array> {
        let axis = normalize_axis(axis, self.ndim(), "argsort")?;
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe { sys::mlx_argsort_axis(res, self.as_raw(), axis, s) })
    }

    /// A copy partitioned along `axis` around its `kth` element (negative counts from the
    /// end): position `kth` holds the value a full sort would put there, nothing before it is
    /// larger and nothing after it is smaller. The order within each side is unspecified.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[5.0f32, 1.0, 4.0, 2.0, 3.0], &[5])?;
    /// let p = a.partition(2, 0)?.to_vec::<f32>()?;
    /// assert_eq!(p[2], 3.0);
    /// assert!(p[..2].iter().all(|&v| v <= 3.0) && p[3..].iter().all(|&v| v >= 3.0));
    /// assert!(a.partition(5, 0).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn partition(&self, kth: i32, axis: i32) -> Result<Array> {
        let (kth, axis) = self.kth_along(kth, axis, "partition")?;
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_partition_axis(res, self.as_raw(), kth, axis, s)
        })
    }

    /// The indices (`uint32`) that partition the values along `axis` around the `kth` element;
    /// see [`Array::partition`]. The order within each side is unspecified.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[5.0f32, 1.0, 4.0, 2.0, 3.0], &[5])?;
    /// let idx = a.argpartition(-1, 0)?.to_vec::<u32>()?;
    /// assert_eq!(idx[4], 0); // the largest value, 5.0, is at index 0
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn argpartition(&self, kth: i32, axis: i32) -> Result<Array> {
        let (kth, axis) = self.kth_along(kth, axis, "argpartition")?;
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_argpartition_axis(res, self.as_raw(), kth, axis, s)
        })
    }

    /// The `k` largest values along `axis` (`1 <= k <= size of the axis`), which becomes of
    /// size `k`.
    ///
    /// **The values are not sorted**: MLX returns them in an unspecified order (sort the
    /// result if you need an order).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[5.0f32, 1.0, 4.0, 2.0, 3.0], &[5])?;
    /// let mut top = a.topk(2, 0)?.to_vec::<f32>()?;
    /// top.sort_by(f32::total_cmp);
    /// assert_eq!(top, vec![4.0, 5.0]);
    /// assert!(a.topk(6, 0).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn topk(&self, k: i32, axis: i32) -> Result<Array> {
        let axis = normalize_axis(axis, self.ndim(), "topk")?;
        let n = self.shape()[axis as usize];
        if !(1..=n).contains(&k) {
            return Err(Error::InvalidArgument(format!(
                "topk: k = {k} must be in 1..={n} (the size of axis {axis})"
            )));
        }
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe { sys::mlx_topk_axis(res, self.as_raw(), k, axis, s) })
    }
}
