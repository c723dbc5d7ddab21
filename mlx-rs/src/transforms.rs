//! Evaluation: [`eval`], [`async_eval`] and [`synchronize`].

use crate::error::{check, Result};
use crate::vector::VectorArray;
use crate::{Array, Stream};
use mlx_sys as sys;

/// Evaluates all `arrays` together (one pass over their shared graph), blocking until done.
///
/// Evaluating several outputs at once is cheaper than evaluating them one by one when they
/// share intermediate results. Errors raised while computing come back as [`crate::Error::Mlx`].
///
/// ```
/// use mlx_rs::{eval, Array};
/// let x = Array::from_slice(&[1.0f32, 2.0], &[2])?;
/// let (a, b) = (&x * 2.0f32, &x + 1.0f32);
/// eval(&[&a, &b])?;
/// assert_eq!(a.to_vec::<f32>()?, vec![2.0, 4.0]);
/// assert_eq!(b.to_vec::<f32>()?, vec![2.0, 3.0]);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn eval(arrays: &[&Array]) -> Result<()> {
    let vec = VectorArray::from_arrays(arrays);
    // SAFETY: valid vector handle.
    check(unsafe { sys::mlx_eval(vec.as_raw()) })
}

/// Starts evaluating `arrays` in the background and returns at once.
///
/// Reading an array (or [`eval`], [`synchronize`]) later waits for the result. Useful to overlap
/// building the next step's graph with computing this one.
///
/// ```
/// use mlx_rs::{async_eval, synchronize, Array};
/// let y = Array::from_slice(&[3i32, 4], &[2])? * 10i32;
/// async_eval(&[&y])?;
/// synchronize()?;
/// assert_eq!(y.to_vec::<i32>()?, vec![30, 40]);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn async_eval(arrays: &[&Array]) -> Result<()> {
    let vec = VectorArray::from_arrays(arrays);
    // SAFETY: valid vector handle.
    check(unsafe { sys::mlx_async_eval(vec.as_raw()) })
}

/// Waits until all work queued on the current stream (see [`crate::with_stream`]) has finished.
///
/// ```
/// mlx_rs::synchronize()?;
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn synchronize() -> Result<()> {
    Stream::current()?.synchronize()
}
