//! Indexing: NumPy-style basic slicing ([`Array::slice`], [`s!`](crate::s)), gathers
//! ([`Array::take`], [`Array::take_along_axis`]) and functional updates
//! ([`Array::put_along_axis`], [`Array::slice_update`], [`Array::slice_update_at`]).

use super::shape::normalize_axis;
use crate::error::{Error, Result};
use crate::Array;
use mlx_sys as sys;
use std::ops::{Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};

/// One entry of a NumPy-style basic index, as used by [`Array::slice`].
///
/// Usually written through the [`s!`](crate::s) macro, which converts each entry with
/// `SliceIndex::from`:
///
/// | Rust             | NumPy      | meaning                                         |
/// |------------------|------------|-------------------------------------------------|
/// | `2`, `-1`        | `2`, `-1`  | one element; the axis is removed                |
/// | `1..3`           | `1:3`      | a range (negative bounds count from the end)    |
/// | `1..`, `..3`     | `1:`, `:3` | open ranges                                     |
/// | `..`             | `:`        | the whole axis                                  |
/// | `1..=3`          | `1:4`      | inclusive end (`..=-1` means through the end)   |
/// | `1..;2`, `..;-1` | `1::2`, `::-1` | a step, in [`s!`](crate::s) (or `.step(2)`) |
/// | `NewAxis`        | `None`     | a new axis of size 1                            |
/// | `Ellipsis`       | `...`      | as many `..` as needed (at most one)            |
///
/// Out-of-range range bounds are clamped as in NumPy; an out-of-range single index is an
/// [`Error::InvalidArgument`].
///
/// ```
/// use mlx_rs::ops::{SliceIndex, NewAxis};
/// use mlx_rs::{Array, Dtype};
/// let a = Array::arange(0.0, 6.0, 1.0, Dtype::Int32)?.reshape(&[2, 3])?;
/// let b = a.slice(&[SliceIndex::from(..), SliceIndex::from(1..).step(-1), NewAxis])?;
/// assert_eq!(b.shape(), vec![2, 2, 1]); // NumPy: a[:, 1::-1, None]
/// assert_eq!(b.to_vec::<i32>()?, vec![1, 0, 4, 3]);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceIndex {
    /// A single position; the axis is removed from the result.
    Index(i32),
    /// `start:stop:step` with NumPy's defaults for missing bounds (they depend on the sign of
    /// `step`, which must not be 0).
    Range {
        /// First position (`None`: the start, or the end for a negative step).
        start: Option<i32>,
        /// Position past the last (`None`: past the end, or before the start for a negative step).
        stop: Option<i32>,
        /// Distance between selected positions; negative walks backwards.
        step: i32,
    },
    /// A new axis of size 1 (NumPy's `None` / `np.newaxis`).
    NewAxis,
    /// Stands for as many full ranges as needed to index every axis (NumPy's `...`).
    Ellipsis,
}

pub use SliceIndex::{Ellipsis, NewAxis};

impl SliceIndex {
    /// The same range with step `step` (`SliceIndex::from(..).step(-1)` is NumPy's `::-1`).
    /// A single index, `NewAxis` or `Ellipsis` is returned unchanged (a step means nothing
    /// there).
    ///
    /// ```
    /// use mlx_rs::ops::SliceIndex;
    /// assert_eq!(
    ///     SliceIndex::from(1..).step(2),
    ///     SliceIndex::Range { start: Some(1), stop: None, step: 2 }
    /// );
    /// ```
    pub fn step(self, step: i32) -> SliceIndex {
        match self {
            SliceIndex::Range { start, stop, .. } => SliceIndex::Range { start, stop, step },
            other => other,
        }
    }

    fn range(start: Option<i32>, stop: Option<i32>) -> SliceIndex {
        SliceIndex::Range {
            start,
            stop,
            step: 1,
        }
    }
}

impl From<i32> for SliceIndex {
    fn from(i: i32) -> Self {
        SliceIndex::Index(i)
    }
}

impl From<Range<i32>> for SliceIndex {
    fn from(r: Range<i32>) -> Self {
        SliceIndex::range(Some(r.start), Some(r.end))
    }
}

impl From<RangeFrom<i32>> for SliceIndex {
    fn from(r: RangeFrom<i32>) -> Self {
        SliceIndex::range(Some(r.start), None)
    }
}

impl From<RangeTo<i32>> for SliceIndex {
    fn from(r: RangeTo<i32>) -> Self {
        SliceIndex::range(None, Some(r.end))
    }
}

impl From<RangeFull> for SliceIndex {
    fn from(_: RangeFull) -> Self {
        SliceIndex::range(None, None)
    }
}

/// `a..=b` is `a..b+1`, and `a..=-1` runs through the end (meant for positive steps).
fn inclusive_stop(end: i32) -> Option<i32> {
    if end == -1 {
        None
    } else {
        end.checked_add(1)
    }
}

impl From<RangeInclusive<i32>> for SliceIndex {
    fn from(r: RangeInclusive<i32>) -> Self {
        SliceIndex::range(Some(*r.start()), inclusive_stop(*r.end()))
    }
}

impl From<RangeToInclusive<i32>> for SliceIndex {
    fn from(r: RangeToInclusive<i32>) -> Self {
        SliceIndex::range(None, inclusive_stop(r.end))
    }
}

/// Builds a `&[SliceIndex]` for [`Array::slice`] and [`Array::slice_update_at`], NumPy style.
///
/// Each comma-separated entry is anything `SliceIndex::from` accepts (`i32`, Rust ranges,
/// `NewAxis`, `Ellipsis`), optionally followed by `;step`.
///
/// ```
/// use mlx_rs::ops::{Ellipsis, NewAxis};
/// use mlx_rs::{s, Array, Dtype};
/// // NumPy: a = np.arange(24).reshape(2, 3, 4)
/// let a = Array::arange(0.0, 24.0, 1.0, Dtype::Int32)?.reshape(&[2, 3, 4])?;
/// let b = a.slice(s![.., 1..3, NewAxis, -1])?;          // a[:, 1:3, None, -1]
/// assert_eq!(b.shape(), vec![2, 2, 1]);
/// assert_eq!(b.to_vec::<i32>()?, vec![7, 11, 19, 23]);
/// let c = a.slice(s![Ellipsis, ..;-2])?;                // a[..., ::-2]
/// assert_eq!(c.shape(), vec![2, 3, 2]);
/// assert_eq!(c.slice(s![0, 0])?.to_vec::<i32>()?, vec![3, 1]);
/// assert!(a.slice(s![2]).is_err());                     // index out of range
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[macro_export]
macro_rules! s {
    (@acc [$($out:expr),*]) => {
        &[$($out),*]
    };
    (@acc [$($out:expr),*] $e:expr ; $step:expr $(, $($rest:tt)*)?) => {
        $crate::s!(@acc [$($out,)* {
            // `3..0;-1` is a backwards range, not an empty one.
            #[allow(clippy::reversed_empty_ranges)]
            let range = $e;
            $crate::ops::SliceIndex::from(range).step($step)
        }] $($($rest)*)?)
    };
    (@acc [$($out:expr),*] $e:expr $(, $($rest:tt)*)?) => {
        $crate::s!(@acc [$($out,)* $crate::ops::SliceIndex::from($e)] $($($rest)*)?)
    };
    ($($t:tt)*) => {
        $crate::s!(@acc [] $($t)*)
    };
}

/// A basic index resolved against a shape: what to pass to `mlx_slice`, and the shapes
/// before and after removing/adding axes.
struct Plan {
    start: Vec<i32>,
    stop: Vec<i32>,
    strides: Vec<i32>,
    /// Shape of the `mlx_slice` result (one entry per input axis).
    sliced_shape: Vec<i32>,
    /// NumPy's result shape (indexed axes removed, new axes added).
    out_shape: Vec<i32>,
}

/// Python's `slice.indices(n)` plus the length: canonical `(start, stop, step, len)` with
/// `stop == -1` meaning "before position 0" for negative steps.
fn resolve_range(start: Option<i32>, stop: Option<i32>, step: i32, n: i32) -> (i64, i64, i64) {
    let (n, step) = (n as i64, step as i64);
    let clamp = |v: i32, lo: i64, hi: i64| {
        let v = v as i64;
        let v = if v < 0 { v + n } else { v };
        v.clamp(lo, hi)
    };
    if step > 0 {
        let s = start.map_or(0, |v| clamp(v, 0, n));
        let e = stop.map_or(n, |v| clamp(v, 0, n));
        let len = if e > s { (e - s + step - 1) / step } else { 0 };
        (s, e, len)
    } else {
        let s = start.map_or(n - 1, |v| clamp(v, -1, n - 1));
        let e = stop.map_or(-1, |v| clamp(v, -1, n - 1));
        let len = if s > e { (s - e - step - 1) / -step } else { 0 };
        (s, e, len)
    }
}

fn plan(shape: &[i32], indices: &[SliceIndex]) -> Result<Plan> {
    let ndim = shape.len();
    let ellipses = indices.iter().filter(|i| **i == Ellipsis).count();
    if ellipses > 1 {
        return Err(Error::InvalidArgument(
            "an index can only have a single ellipsis".into(),
        ));
    }
    let consuming = indices
        .iter()
        .filter(|i| matches!(i, SliceIndex::Index(_) | SliceIndex::Range { .. }))
        .count();
    if consuming > ndim {
        return Err(Error::InvalidArgument(format!(
            "too many indices: {consuming} given for an array of {ndim} dimensions"
        )));
    }
    let fill = ndim - consuming;
    let mut expanded: Vec<SliceIndex> = Vec::with_capacity(indices.len() + fill);
    for &i in indices {
        if i == Ellipsis {
            expanded.extend(std::iter::repeat_n(SliceIndex::from(..), fill));
        } else {
            expanded.push(i);
        }
    }
    if ellipses == 0 {
        expanded.extend(std::iter::repeat_n(SliceIndex::from(..), fill));
    }

    let mut p = Plan {
        start: Vec::with_capacity(ndim),
        stop: Vec::with_capacity(ndim),
        strides: Vec::with_capacity(ndim),
        sliced_shape: Vec::with_capacity(ndim),
        out_shape: Vec::new(),
    };
    let mut axis = 0;
    for idx in expanded {
        match idx {
            SliceIndex::NewAxis => p.out_shape.push(1),
            SliceIndex::Ellipsis => unreachable!("ellipsis was expanded above"),
            SliceIndex::Index(i) => {
                let n = shape[axis];
                let j = if i < 0 { i as i64 + n as i64 } else { i as i64 };
                if !(0..n as i64).contains(&j) {
                    return Err(Error::InvalidArgument(format!(
                        "index {i} is out of range for axis {axis} of size {n}"
                    )));
                }
                p.start.push(j as i32);
                p.stop.push(j as i32 + 1);
                p.strides.push(1);
                p.sliced_shape.push(1);
                axis += 1;
            }
            SliceIndex::Range { start, stop, step } => {
                if step == 0 {
                    return Err(Error::InvalidArgument(format!(
                        "slice step cannot be zero (axis {axis})"
                    )));
                }
                let n = shape[axis];
                let (s, e, len) = resolve_range(start, stop, step, n);
                if len == 0 {
                    p.start.push(0);
                    p.stop.push(0);
                    p.strides.push(1);
                } else {
                    p.start.push(s as i32);
                    // MLX reads a negative stop as counting from the end; "before position 0"
                    // must therefore be passed as -(n + 1).
                    p.stop.push(if e < 0 {
                        -(n as i64 + 1) as i32
                    } else {
                        e as i32
                    });
                    p.strides.push(step);
                }
                p.sliced_shape.push(len as i32);
                p.out_shape.push(len as i32);
                axis += 1;
            }
        }
    }
    Ok(p)
}

impl Array {
    /// NumPy basic indexing: `a.slice(s![.., 1..3, NewAxis, -1])` is `a[:, 1:3, None, -1]`.
    ///
    /// Integer entries remove their axis; ranges (with steps, negative ones included) keep it;
    /// `NewAxis` adds one; `Ellipsis` stands for the axes not named; missing trailing entries
    /// mean `..`. Errors ([`Error::InvalidArgument`]): an integer out of range, more entries
    /// than axes, a zero step, two ellipses. See [`SliceIndex`] and [`s!`](crate::s).
    ///
    /// ```
    /// use mlx_rs::{s, Array, Dtype};
    /// let a = Array::arange(0.0, 10.0, 1.0, Dtype::Int32)?;
    /// assert_eq!(a.slice(s![..;-3])?.to_vec::<i32>()?, vec![9, 6, 3, 0]);   // a[::-3]
    /// assert_eq!(a.slice(s![-3..])?.to_vec::<i32>()?, vec![7, 8, 9]);       // a[-3:]
    /// assert_eq!(a.slice(s![5..100])?.to_vec::<i32>()?, vec![5, 6, 7, 8, 9]); // clamped
    /// assert_eq!(a.slice(s![-1])?.item::<i32>()?, 9);                        // a[-1], 0-d
    /// assert!(a.slice(s![10]).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn slice(&self, indices: &[SliceIndex]) -> Result<Array> {
        let p = plan(&self.shape(), indices)?;
        let sliced = if p.start.is_empty() {
            self.clone()
        } else {
            // SAFETY: valid handle; each vector holds `ndim` ints.
            Array::try_op_stream(|res, s| unsafe {
                sys::mlx_slice(
                    res,
                    self.as_raw(),
                    p.start.as_ptr(),
                    p.start.len(),
                    p.stop.as_ptr(),
                    p.stop.len(),
                    p.strides.as_ptr(),
                    p.strides.len(),
                    s,
                )
            })?
        };
        if p.sliced_shape == p.out_shape {
            Ok(sliced)
        } else {
            sliced.reshape(&p.out_shape)
        }
    }

    /// A copy of `self` with the strided box `start..stop` (step `strides`, one entry per
    /// axis, NumPy slice semantics) replaced by `update`, which must broadcast to the box's
    /// shape.
    ///
    /// MLX arrays are immutable, so this returns a new array; but when the old array is not
    /// referenced elsewhere at evaluation time, MLX reuses its buffer and writes only the
    /// box. That is how a KV cache grows in place: `cache = cache.slice_update(&kv, ...)?`,
    /// letting the old `cache` handle drop.
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let cache = Array::zeros(&[2, 4], Dtype::Int32)?;
    /// let kv = Array::from_slice(&[7i32, 8], &[2, 1])?;
    /// let cache = cache.slice_update(&kv, &[0, 1], &[2, 2], &[1, 1])?;
    /// assert_eq!(cache.to_vec::<i32>()?, vec![0, 7, 0, 0, 0, 8, 0, 0]);
    /// assert!(cache.slice_update(&kv, &[0], &[2], &[1]).is_err()); // one entry per axis
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn slice_update(
        &self,
        update: &Array,
        start: &[i32],
        stop: &[i32],
        strides: &[i32],
    ) -> Result<Array> {
        let ndim = self.ndim();
        if start.len() != ndim || stop.len() != ndim || strides.len() != ndim {
            return Err(Error::InvalidArgument(format!(
                "slice_update: start, stop and strides need {ndim} entries each, got {}, {} and {}",
                start.len(),
                stop.len(),
                strides.len()
            )));
        }
        if strides.contains(&0) {
            return Err(Error::InvalidArgument(
                "slice_update: a stride cannot be zero".into(),
            ));
        }
        // SAFETY: valid handles; each slice holds `ndim` ints.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_slice_update(
                res,
                self.as_raw(),
                update.as_raw(),
                start.as_ptr(),
                start.len(),
                stop.as_ptr(),
                stop.len(),
                strides.as_ptr(),
                strides.len(),
                s,
            )
        })
    }

    /// A copy of `self` with `self[indices]` replaced by `update` (NumPy's
    /// `a[indices] = update`); `update` must broadcast to the shape `self.slice(indices)`
    /// would have. Same buffer reuse as [`Array::slice_update`].
    ///
    /// ```
    /// use mlx_rs::{s, Array, Dtype};
    /// let a = Array::zeros(&[2, 3], Dtype::Int32)?;
    /// let b = a.slice_update_at(&Array::from_slice(&[1i32, 2], &[2])?, s![.., -1])?;
    /// assert_eq!(b.to_vec::<i32>()?, vec![0, 0, 1, 0, 0, 2]);
    /// let c = a.slice_update_at(&Array::scalar(5i32), s![1, ..;-2])?;
    /// assert_eq!(c.to_vec::<i32>()?, vec![0, 0, 0, 5, 0, 5]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn slice_update_at(&self, update: &Array, indices: &[SliceIndex]) -> Result<Array> {
        let p = plan(&self.shape(), indices)?;
        let update = update
            .broadcast_to(&p.out_shape)?
            .reshape(&p.sliced_shape)?;
        if p.start.is_empty() {
            // A 0-d array: the update replaces the single element.
            return update.astype(self.dtype());
        }
        self.slice_update(&update, &p.start, &p.stop, &p.strides)
    }

    /// Elements at `indices` along `axis` (NumPy's `take`): the axis is replaced by the
    /// indices' shape. Negative indices count from the end. MLX does not check that indices
    /// are in range: out-of-range values give unspecified results.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3])?;
    /// let idx = Array::from_slice(&[2i32, 0], &[2])?;
    /// assert_eq!(a.take(&idx, 1)?.to_vec::<i32>()?, vec![3, 1, 6, 4]);
    /// assert!(a.take(&idx, 2).is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn take(&self, indices: &Array, axis: i32) -> Result<Array> {
        normalize_axis(axis, self.ndim())?;
        // SAFETY: valid handles.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_take_axis(res, self.as_raw(), indices.as_raw(), axis, s)
        })
    }

    /// NumPy's `take_along_axis`: `indices` has `self`'s number of dimensions (other axes
    /// broadcast) and picks, along `axis`, one element per position. Range as in
    /// [`Array::take`].
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[10i32, 30, 20, 5, 4, 6], &[2, 3])?;
    /// let idx = Array::from_slice(&[1i32, 2], &[2, 1])?;
    /// assert_eq!(a.take_along_axis(&idx, 1)?.to_vec::<i32>()?, vec![30, 6]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn take_along_axis(&self, indices: &Array, axis: i32) -> Result<Array> {
        normalize_axis(axis, self.ndim())?;
        // SAFETY: valid handles.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_take_along_axis(res, self.as_raw(), indices.as_raw(), axis, s)
        })
    }

    /// NumPy's `put_along_axis`, functionally: a copy of `self` where the positions
    /// [`Array::take_along_axis`] would read are set to `values` (broadcast to the indices'
    /// shape).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3])?;
    /// let idx = Array::from_slice(&[0i32, 2], &[2, 1])?;
    /// let b = a.put_along_axis(&idx, &Array::scalar(0i32), 1)?;
    /// assert_eq!(b.to_vec::<i32>()?, vec![0, 2, 3, 4, 5, 0]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn put_along_axis(&self, indices: &Array, values: &Array, axis: i32) -> Result<Array> {
        normalize_axis(axis, self.ndim())?;
        // SAFETY: valid handles.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_put_along_axis(
                res,
                self.as_raw(),
                indices.as_raw(),
                values.as_raw(),
                axis,
                s,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_matches_python_slice_indices() {
        // Values from Python: slice(start, stop, step).indices(5) and len(range(...)).
        assert_eq!(resolve_range(None, None, 1, 5), (0, 5, 5));
        assert_eq!(resolve_range(None, None, -1, 5), (4, -1, 5));
        assert_eq!(resolve_range(Some(-10), Some(10), 2, 5), (0, 5, 3));
        assert_eq!(resolve_range(Some(10), Some(-10), -2, 5), (4, -1, 3));
        assert_eq!(resolve_range(Some(3), Some(1), 1, 5), (3, 1, 0));
        assert_eq!(resolve_range(Some(-1), Some(-3), -1, 5), (4, 2, 2));
        assert_eq!(resolve_range(None, None, -1, 0), (-1, -1, 0));
    }

    #[test]
    fn inclusive_ranges() {
        assert_eq!(SliceIndex::from(1..=3), SliceIndex::from(1..4));
        assert_eq!(SliceIndex::from(..=-1), SliceIndex::from(..));
        assert_eq!(
            SliceIndex::from(i32::MAX..=i32::MAX),
            SliceIndex::from(i32::MAX..)
        );
    }
}
