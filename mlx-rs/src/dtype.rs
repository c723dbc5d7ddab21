//! Element types of MLX arrays.

use mlx_sys as sys;
use std::fmt;

/// The element type of an [`Array`](crate::Array): every dtype MLX has.
///
/// # Example
/// ```
/// use mlx_rs::Dtype;
/// assert_eq!(Dtype::Bfloat16.size_in_bytes(), 2);
/// assert!(Dtype::Float16.is_floating());
/// assert!(!Dtype::Int32.is_floating());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `bool`
    Bool,
    /// `u8`
    Uint8,
    /// `u16`
    Uint16,
    /// `u32`
    Uint32,
    /// `u64`
    Uint64,
    /// `i8`
    Int8,
    /// `i16`
    Int16,
    /// `i32`
    Int32,
    /// `i64`
    Int64,
    /// IEEE half precision, [`half::f16`]
    Float16,
    /// `f32`
    Float32,
    /// `f64` (CPU only in MLX)
    Float64,
    /// brain float, [`half::bf16`]
    Bfloat16,
    /// complex of two `f32`
    Complex64,
}

impl Dtype {
    /// All dtypes, in MLX's order.
    pub const ALL: [Dtype; 14] = [
        Dtype::Bool,
        Dtype::Uint8,
        Dtype::Uint16,
        Dtype::Uint32,
        Dtype::Uint64,
        Dtype::Int8,
        Dtype::Int16,
        Dtype::Int32,
        Dtype::Int64,
        Dtype::Float16,
        Dtype::Float32,
        Dtype::Float64,
        Dtype::Bfloat16,
        Dtype::Complex64,
    ];

    /// The mlx-c constant of this dtype.
    pub fn to_sys(self) -> sys::mlx_dtype {
        match self {
            Dtype::Bool => sys::MLX_BOOL,
            Dtype::Uint8 => sys::MLX_UINT8,
            Dtype::Uint16 => sys::MLX_UINT16,
            Dtype::Uint32 => sys::MLX_UINT32,
            Dtype::Uint64 => sys::MLX_UINT64,
            Dtype::Int8 => sys::MLX_INT8,
            Dtype::Int16 => sys::MLX_INT16,
            Dtype::Int32 => sys::MLX_INT32,
            Dtype::Int64 => sys::MLX_INT64,
            Dtype::Float16 => sys::MLX_FLOAT16,
            Dtype::Float32 => sys::MLX_FLOAT32,
            Dtype::Float64 => sys::MLX_FLOAT64,
            Dtype::Bfloat16 => sys::MLX_BFLOAT16,
            Dtype::Complex64 => sys::MLX_COMPLEX64,
        }
    }

    /// The dtype of an mlx-c constant, or `None` for a value this crate does not know.
    pub fn from_sys(value: sys::mlx_dtype) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.to_sys() == value)
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            Dtype::Bool | Dtype::Uint8 | Dtype::Int8 => 1,
            Dtype::Uint16 | Dtype::Int16 | Dtype::Float16 | Dtype::Bfloat16 => 2,
            Dtype::Uint32 | Dtype::Int32 | Dtype::Float32 => 4,
            Dtype::Uint64 | Dtype::Int64 | Dtype::Float64 | Dtype::Complex64 => 8,
        }
    }

    /// True for the real floating-point dtypes (f16, bf16, f32, f64).
    pub fn is_floating(self) -> bool {
        matches!(
            self,
            Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32 | Dtype::Float64
        )
    }

    /// True for signed and unsigned integers (not bool).
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            Dtype::Uint8
                | Dtype::Uint16
                | Dtype::Uint32
                | Dtype::Uint64
                | Dtype::Int8
                | Dtype::Int16
                | Dtype::Int32
                | Dtype::Int64
        )
    }

    /// MLX's name of the dtype (`float32`, `bfloat16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::Uint8 => "uint8",
            Dtype::Uint16 => "uint16",
            Dtype::Uint32 => "uint32",
            Dtype::Uint64 => "uint64",
            Dtype::Int8 => "int8",
            Dtype::Int16 => "int16",
            Dtype::Int32 => "int32",
            Dtype::Int64 => "int64",
            Dtype::Float16 => "float16",
            Dtype::Float32 => "float32",
            Dtype::Float64 => "float64",
            Dtype::Bfloat16 => "bfloat16",
            Dtype::Complex64 => "complex64",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_round_trip_and_sizes_agree_with_mlx() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_sys(d.to_sys()), Some(d));
            // SAFETY: mlx_dtype_size is a pure function of the constant.
            let size = unsafe { sys::mlx_dtype_size(d.to_sys()) };
            assert_eq!(size, d.size_in_bytes(), "{d}");
        }
        assert_eq!(Dtype::from_sys(9999), None);
    }
}
