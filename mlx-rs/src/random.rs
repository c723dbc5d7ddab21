//! Random numbers: explicit keys, or MLX's global generator.
//!
//! Every sampler takes `key: Option<&Array>`. With `Some(key)` the result is a pure function of
//! the key (a `uint32` array of shape `[2]` made by [`key`] or [`split`]); with `None` MLX draws
//! from its global generator (seeded with [`seed`]) and advances it.
//!
//! ```
//! use mlx_rs::{random, Dtype};
//! let k = random::key(42)?;
//! let (k1, k2) = random::split(&k)?;
//! let a = random::uniform(0.0, 1.0, &[4], Dtype::Float32, Some(&k1))?.to_vec::<f32>()?;
//! let b = random::uniform(0.0, 1.0, &[4], Dtype::Float32, Some(&k1))?.to_vec::<f32>()?;
//! let c = random::uniform(0.0, 1.0, &[4], Dtype::Float32, Some(&k2))?.to_vec::<f32>()?;
//! assert_eq!(a, b);   // same key, same numbers
//! assert_ne!(a, c);   // another key, other numbers
//! assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
//! # Ok::<(), mlx_rs::Error>(())
//! ```

use crate::error::{check, init, Error, Result};
use crate::{Array, Dtype};
use mlx_sys as sys;

fn null_array() -> sys::mlx_array {
    sys::mlx_array {
        ctx: std::ptr::null_mut(),
    }
}

fn key_raw(key: Option<&Array>) -> Result<sys::mlx_array> {
    match key {
        None => Ok(null_array()),
        Some(k) => {
            check_key(k)?;
            Ok(k.as_raw())
        }
    }
}

fn check_key(k: &Array) -> Result<()> {
    if k.dtype() != Dtype::Uint32 {
        return Err(Error::DtypeMismatch {
            expected: Dtype::Uint32,
            found: k.dtype(),
        });
    }
    if k.shape() != [2] {
        return Err(Error::Shape(format!(
            "a random key has shape [2], got {:?}",
            k.shape()
        )));
    }
    Ok(())
}

fn check_shape(shape: &[i32]) -> Result<()> {
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        return Err(Error::Shape(format!(
            "negative dimension {d} in shape {shape:?}"
        )));
    }
    Ok(())
}

fn check_float(op: &str, dtype: Dtype) -> Result<()> {
    if !dtype.is_floating() {
        return Err(Error::InvalidArgument(format!(
            "{op}: dtype must be floating, got {dtype}"
        )));
    }
    Ok(())
}

/// A PRNG key (`uint32`, shape `[2]`) derived from `seed`.
///
/// ```
/// use mlx_rs::random;
/// assert_eq!(random::key(7)?.to_vec::<u32>()?, random::key(7)?.to_vec::<u32>()?);
/// assert_ne!(random::key(7)?.to_vec::<u32>()?, random::key(8)?.to_vec::<u32>()?);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn key(seed: u64) -> Result<Array> {
    // SAFETY: plain value; `res` is a fresh handle.
    Array::try_op(|res| unsafe { sys::mlx_random_key(res, seed) })
}

/// Seeds MLX's global generator (used by the samplers when `key` is `None`).
///
/// ```
/// use mlx_rs::{random, Dtype};
/// random::seed(3)?;
/// let a = random::normal(&[3], Dtype::Float32, 0.0, 1.0, None)?.to_vec::<f32>()?;
/// random::seed(3)?;
/// let b = random::normal(&[3], Dtype::Float32, 0.0, 1.0, None)?.to_vec::<f32>()?;
/// assert_eq!(a, b);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn seed(seed: u64) -> Result<()> {
    init();
    // SAFETY: plain value.
    check(unsafe { sys::mlx_random_seed(seed) })
}

/// Splits a key into two new, independent keys.
///
/// ```
/// use mlx_rs::{random, Array};
/// let (a, b) = random::split(&random::key(0)?)?;
/// assert_eq!(a.shape(), vec![2]);
/// assert_ne!(a.to_vec::<u32>()?, b.to_vec::<u32>()?);
/// // Not a key:
/// assert!(random::split(&Array::from_slice(&[1.0f32, 2.0], &[2])?).is_err());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn split(key: &Array) -> Result<(Array, Array)> {
    check_key(key)?;
    let stream = crate::Stream::current()?;
    init();
    // SAFETY: two fresh handles; mlx-c writes the two keys into them.
    let (status, r0, r1) = unsafe {
        let (mut r0, mut r1) = (sys::mlx_array_new(), sys::mlx_array_new());
        let status = sys::mlx_random_split(&mut r0, &mut r1, key.as_raw(), stream.as_raw());
        (status, r0, r1)
    };
    // SAFETY: the handles are ours; the `Array`s free them on every path.
    let (first, second) = unsafe { (Array::from_raw(r0), Array::from_raw(r1)) };
    check(status)?;
    Ok((first, second))
}

/// Splits a key into `num` new keys.
///
/// ```
/// use mlx_rs::random;
/// let keys = random::split_n(&random::key(1)?, 3)?;
/// assert_eq!(keys.len(), 3);
/// assert_ne!(keys[0].to_vec::<u32>()?, keys[2].to_vec::<u32>()?);
/// assert!(random::split_n(&keys[0], 0).is_err());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn split_n(key: &Array, num: i32) -> Result<Vec<Array>> {
    check_key(key)?;
    if num < 1 {
        return Err(Error::InvalidArgument(format!(
            "split_n: num must be at least 1, got {num}"
        )));
    }
    // SAFETY: valid handle.
    let all = Array::try_op_stream(|res, s| unsafe {
        sys::mlx_random_split_num(res, key.as_raw(), num, s)
    })?;
    (0..num)
        .map(|i| {
            let index = Array::scalar(i);
            // SAFETY: valid handles; `i` is within the first axis of length `num`.
            Array::try_op_stream(|res, s| unsafe {
                sys::mlx_take_axis(res, all.as_raw(), index.as_raw(), 0, s)
            })
        })
        .collect()
}

/// Samples of the normal distribution with mean `loc` and standard deviation `scale`.
///
/// ```
/// use mlx_rs::{random, Dtype};
/// let k = random::key(5)?;
/// let x = random::normal(&[2, 3], Dtype::Float32, 10.0, 0.0, Some(&k))?;
/// assert_eq!(x.to_vec::<f32>()?, vec![10.0; 6]); // zero spread
/// assert!(random::normal(&[2], Dtype::Int32, 0.0, 1.0, None).is_err());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn normal(
    shape: &[i32],
    dtype: Dtype,
    loc: f32,
    scale: f32,
    key: Option<&Array>,
) -> Result<Array> {
    check_shape(shape)?;
    check_float("normal", dtype)?;
    let key = key_raw(key)?;
    // SAFETY: `shape` outlives the call; valid or null key.
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_random_normal(
            res,
            shape.as_ptr(),
            shape.len(),
            dtype.to_sys(),
            loc,
            scale,
            key,
            s,
        )
    })
}

/// Samples of the uniform distribution on `[low, high)`.
///
/// ```
/// use mlx_rs::{random, Dtype};
/// let x = random::uniform(-2.0, -1.0, &[100], Dtype::Float32, Some(&random::key(0)?))?;
/// assert!(x.to_vec::<f32>()?.iter().all(|v| (-2.0..-1.0).contains(v)));
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn uniform(
    low: f32,
    high: f32,
    shape: &[i32],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    check_shape(shape)?;
    check_float("uniform", dtype)?;
    sample_in_range(sys::mlx_random_uniform, low, high, shape, dtype, key)
}

/// Random integers in `[low, high)`, of integer `dtype`.
///
/// ```
/// use mlx_rs::{random, Dtype};
/// let x = random::randint(3, 6, &[50], Dtype::Int32, Some(&random::key(9)?))?.to_vec::<i32>()?;
/// assert!(x.iter().all(|v| (3..6).contains(v)));
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn randint(
    low: i32,
    high: i32,
    shape: &[i32],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    check_shape(shape)?;
    if !dtype.is_integer() {
        return Err(Error::InvalidArgument(format!(
            "randint: dtype must be an integer type, got {dtype}"
        )));
    }
    sample_in_range(sys::mlx_random_randint, low, high, shape, dtype, key)
}

/// Booleans that are `true` with probability `p` (an array broadcast to `shape`).
///
/// ```
/// use mlx_rs::{random, Array};
/// let p = Array::from_slice(&[0.0f32, 1.0], &[2])?;
/// let x = random::bernoulli(&p, &[3, 2], Some(&random::key(2)?))?;
/// assert_eq!(x.to_vec::<bool>()?, vec![false, true, false, true, false, true]);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn bernoulli(p: &Array, shape: &[i32], key: Option<&Array>) -> Result<Array> {
    check_shape(shape)?;
    let key = key_raw(key)?;
    // SAFETY: valid handles; `shape` outlives the call.
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_random_bernoulli(res, p.as_raw(), shape.as_ptr(), shape.len(), key, s)
    })
}

fn check_axis(op: &str, logits: &Array, axis: i32) -> Result<()> {
    let n = logits.ndim() as i32;
    if axis < -n || axis >= n {
        return Err(Error::InvalidArgument(format!(
            "{op}: axis {axis} is out of range for logits of shape {:?}",
            logits.shape()
        )));
    }
    Ok(())
}

/// Samples class indices (`uint32`) from the categorical distribution `softmax(logits)` along
/// `axis`; the result has `logits`' shape without `axis`.
///
/// ```
/// use mlx_rs::{random, Array};
/// // Class 1 has all the mass in row 0, class 0 in row 1.
/// let logits = Array::from_slice(&[-1e9f32, 0.0, 0.0, -1e9], &[2, 2])?;
/// let c = random::categorical(&logits, -1, Some(&random::key(4)?))?;
/// assert_eq!(c.to_vec::<u32>()?, vec![1, 0]);
/// assert!(random::categorical(&logits, 2, None).is_err());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn categorical(logits: &Array, axis: i32, key: Option<&Array>) -> Result<Array> {
    check_axis("categorical", logits, axis)?;
    let key = key_raw(key)?;
    // SAFETY: valid handles.
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_random_categorical(res, logits.as_raw(), axis, key, s)
    })
}

/// [`categorical`] drawing `num_samples` independent samples per distribution: the result has
/// `logits`' shape without `axis`, with `num_samples` appended.
///
/// ```
/// use mlx_rs::{random, Array};
/// let logits = Array::from_slice(&[0.0f32, -1e9, -1e9], &[3])?;
/// let c = random::categorical_n(&logits, 0, 5, Some(&random::key(4)?))?;
/// assert_eq!(c.to_vec::<u32>()?, vec![0; 5]);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn categorical_n(
    logits: &Array,
    axis: i32,
    num_samples: i32,
    key: Option<&Array>,
) -> Result<Array> {
    check_axis("categorical_n", logits, axis)?;
    if num_samples < 1 {
        return Err(Error::InvalidArgument(format!(
            "categorical_n: num_samples must be at least 1, got {num_samples}"
        )));
    }
    let key = key_raw(key)?;
    // SAFETY: valid handles.
    Array::try_op_stream(|res, s| unsafe {
        sys::mlx_random_categorical_num_samples(res, logits.as_raw(), axis, num_samples, key, s)
    })
}

/// The signature shared by mlx-c's `mlx_random_uniform` and `mlx_random_randint`.
type RangeSampler = unsafe extern "C" fn(
    *mut sys::mlx_array,
    sys::mlx_array,
    sys::mlx_array,
    *const std::ffi::c_int,
    usize,
    sys::mlx_dtype,
    sys::mlx_array,
    sys::mlx_stream,
) -> std::ffi::c_int;

/// Draws `shape` values in `[low, high)` of `dtype` with one of the range samplers.
#[track_caller]
fn sample_in_range<T: crate::ArrayElement>(
    sampler: RangeSampler,
    low: T,
    high: T,
    shape: &[i32],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    let key = key_raw(key)?;
    let (lo, hi) = (Array::scalar(low), Array::scalar(high));
    // SAFETY: valid handles; `shape` outlives the call; `sampler` is an mlx-c function of
    // this signature.
    Array::try_op_stream(|res, s| unsafe {
        sampler(
            res,
            lo.as_raw(),
            hi.as_raw(),
            shape.as_ptr(),
            shape.len(),
            dtype.to_sys(),
            key,
            s,
        )
    })
}
