//! Rust element types that map to MLX dtypes.

use crate::Dtype;
use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
}

/// A Rust type whose values can be stored in an [`Array`](crate::Array) without conversion.
///
/// Implemented for `bool`, `u8`, `u16`, `u32`, `u64`, `i8`, `i16`, `i32`, `i64`, `f32`, `f64`,
/// [`half::f16`] and [`half::bf16`]. Sealed: the byte layout of each must be MLX's.
pub trait ArrayElement: Copy + sealed::Sealed + 'static {
    /// The MLX dtype of this type.
    const DTYPE: Dtype;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl ArrayElement for $t {
            const DTYPE: Dtype = Dtype::$d;
        }
    )*};
}

element! {
    bool => Bool, u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64,
    i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64,
    f16 => Float16, f32 => Float32, f64 => Float64, bf16 => Bfloat16,
}
