//! [`Axes`]: which axes a reduction or similar op works over.

use std::ops::RangeFull;

/// The axes an operation reduces over: all of them, or a list (negative counts from the end).
///
/// Converts from `..` (all axes), one `i32`, an array, slice or `Vec` of `i32`.
///
/// ```
/// use mlx_rs::Array;
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// assert_eq!(a.sum(.., false)?.item::<f32>()?, 21.0);
/// assert_eq!(a.sum(0, false)?.to_vec::<f32>()?, vec![5.0, 7.0, 9.0]);
/// assert_eq!(a.sum(-1, true)?.shape(), vec![2, 1]);
/// assert_eq!(a.sum([0, 1], false)?.item::<f32>()?, 21.0);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Axes {
    /// Every axis.
    All,
    /// The listed axes.
    These(Vec<i32>),
}

impl From<RangeFull> for Axes {
    fn from(_: RangeFull) -> Self {
        Axes::All
    }
}

impl From<i32> for Axes {
    fn from(axis: i32) -> Self {
        Axes::These(vec![axis])
    }
}

impl From<&[i32]> for Axes {
    fn from(axes: &[i32]) -> Self {
        Axes::These(axes.to_vec())
    }
}

impl<const N: usize> From<[i32; N]> for Axes {
    fn from(axes: [i32; N]) -> Self {
        Axes::These(axes.to_vec())
    }
}

impl<const N: usize> From<&[i32; N]> for Axes {
    fn from(axes: &[i32; N]) -> Self {
        Axes::These(axes.to_vec())
    }
}

impl From<Vec<i32>> for Axes {
    fn from(axes: Vec<i32>) -> Self {
        Axes::These(axes)
    }
}

impl Axes {
    /// The axes as a list for an array of `ndim` dimensions (`All` becomes `0..ndim`).
    pub fn resolve(&self, ndim: usize) -> Vec<i32> {
        match self {
            Axes::All => (0..ndim as i32).collect(),
            Axes::These(v) => v.clone(),
        }
    }
}
