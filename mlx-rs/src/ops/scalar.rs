//! Scalars as operands: a scalar takes the array's dtype, so `bf16_array * 0.5` stays bf16.

use crate::error::Result;
use crate::{Array, Dtype};
use half::{bf16, f16};

/// A Rust scalar usable where an array operand is expected.
///
/// The rule (as in mlx-swift, unlike plain MLX promotion): the scalar is converted to the
/// array's dtype when that keeps its kind, a float scalar with a floating array, an integer
/// scalar with an integer or floating array. A float scalar with an integer or bool array stays
/// `float32`, so the result is promoted to a float rather than truncated.
///
/// ```
/// use mlx_rs::{Array, Dtype};
/// let x = Array::from_slice(&[1.0f32, 2.0], &[2])?.astype(Dtype::Bfloat16)?;
/// assert_eq!((&x * 0.5f32).dtype(), Dtype::Bfloat16);
/// let i = Array::from_slice(&[1i32, 2], &[2])?;
/// assert_eq!((&i * 2).dtype(), Dtype::Int32);
/// assert_eq!((&i * 0.5f32).to_vec::<f32>()?, vec![0.5, 1.0]);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
pub trait ScalarOperand: Copy {
    /// The scalar as a 0-d array suited to be combined with `like`.
    fn operand_for(self, like: &Array) -> Result<Array>;
}

fn cast_to(scalar: Array, like: &Array, keep_kind: bool) -> Result<Array> {
    let target = like.dtype();
    if keep_kind && scalar.dtype() != target {
        scalar.astype(target)
    } else {
        Ok(scalar)
    }
}

macro_rules! float_scalar {
    ($($t:ty),*) => {$(
        impl ScalarOperand for $t {
            fn operand_for(self, like: &Array) -> Result<Array> {
                cast_to(Array::scalar(self), like, like.dtype().is_floating())
            }
        }
    )*};
}
float_scalar!(f32, f64, f16, bf16);

macro_rules! int_scalar {
    ($($t:ty),*) => {$(
        impl ScalarOperand for $t {
            fn operand_for(self, like: &Array) -> Result<Array> {
                let d = like.dtype();
                cast_to(Array::scalar(self), like, d.is_floating() || d.is_integer())
            }
        }
    )*};
}
int_scalar!(i32, i64, u32, u8);

impl ScalarOperand for bool {
    fn operand_for(self, like: &Array) -> Result<Array> {
        cast_to(Array::scalar(self), like, like.dtype() == Dtype::Bool)
    }
}
