//! A safe, idiomatic Rust API over Apple's MLX, through its official C API (mlx-c).
//!
//! # A tour
//!
//! Arrays are lazy: operations build a graph, and values are computed when you ask for them.
//!
//! ```
//! use mlx_rs::{Array, Dtype};
//! let x = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
//! let w = Array::eye(2, 2, 0, Dtype::Float32)?;
//! let y = (x.matmul(&w)? + 1.0f32).exp()?.sum(-1, false)?;   // nothing computed yet
//! let v = y.to_vec::<f32>()?;                                // evaluates
//! assert!((v[0] - (2f32.exp() + 3f32.exp())).abs() < 1e-4);
//! # Ok::<(), mlx_rs::Error>(())
//! ```
//!
//! Slicing reads like NumPy, and scalars take the array's dtype:
//!
//! ```
//! use mlx_rs::{s, with_device, Array, Device, Dtype};
//! let x = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
//! let y = (x.slice(s![.., 1..])?.matmul(&Array::ones(&[2, 1], Dtype::Float32)?)? * 0.5f32).exp()?;
//! let v: Vec<f32> = with_device(Device::cpu(), || y.to_vec::<f32>())??;
//! assert!((v[0] - 2.5f32.exp()).abs() < 1e-4 && (v[1] - 5.5f32.exp()).abs() < 1e-3);
//! let h = x.astype(Dtype::Bfloat16)?;
//! assert_eq!((&h * 0.5f32).dtype(), Dtype::Bfloat16);
//! # Ok::<(), mlx_rs::Error>(())
//! ```
//!
//! - [`Array`], [`Dtype`] and element types (`f32`, [`half::f16`], [`half::bf16`], integers,
//!   `bool`); creation (`from_slice`, `zeros`, `arange`, ...), reading (`item`, `to_vec`).
//! - Errors: every fallible call returns [`Result`]; MLX's exceptions come back as
//!   [`Error::Mlx`] with MLX's message and your call site. The process never exits on an MLX
//!   error. Operators (`+`, `*`, ...) panic with that message; their methods (`add`, ...) don't.
//! - Devices and streams: operations run on the current stream; change it for a scope with
//!   [`with_stream`] or [`with_device`].
#![warn(missing_docs)]

mod array;
pub mod compile;
mod device;
pub mod distributed;
mod dtype;
pub mod error;
pub mod fast;
pub mod io;
pub mod memory;
pub mod native;
pub mod ops;
pub mod quant;
pub mod random;
mod stream;
mod transforms;
mod vector;

pub use array::{Array, ArrayElement};
pub use device::{Device, DeviceType};
pub use dtype::Dtype;
pub use error::{Error, Result};
pub use stream::{with_device, with_stream, Stream};
pub use transforms::{async_eval, eval, synchronize};

pub use half;
pub use mlx_sys as sys;

/// The crate's README (its package page), compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
