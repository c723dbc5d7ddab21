//! Element-wise arithmetic and math, matrix products, and the `std::ops` operators.
//!
//! Operators (`+ - * / %`, unary `-`) accept arrays, references and [`ScalarOperand`]s on the
//! right. They panic with MLX's message when the operation is invalid (shapes that do not
//! broadcast); the methods of the same name ([`Array::add`], ...) return the error instead.

use super::{binary_ops, unary_ops, ScalarOperand};
use crate::error::Result;
use crate::{Array, Dtype};
use mlx_sys as sys;
use std::ops;

binary_ops! {
    /// `self + other`, broadcasting.
    add => mlx_add;
    /// `self - other`, broadcasting.
    subtract => mlx_subtract;
    /// `self * other`, broadcasting.
    multiply => mlx_multiply;
    /// `self / other`, broadcasting (true division: integers give floats).
    divide => mlx_divide;
    /// `floor(self / other)`.
    floor_divide => mlx_floor_divide;
    /// Remainder with the sign of the divisor (Python's `%`).
    remainder => mlx_remainder;
    /// `self ** other`.
    power => mlx_power;
    /// Element-wise maximum.
    maximum => mlx_maximum;
    /// Element-wise minimum.
    minimum => mlx_minimum;
    /// `log(exp(self) + exp(other))`, computed stably.
    logaddexp => mlx_logaddexp;
    /// Four-quadrant arctangent of `self / other`.
    arctan2 => mlx_arctan2;
    /// Matrix product with NumPy's rules (1-D operands, batch broadcasting).
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let b = Array::from_slice(&[5.0f32, 6.0], &[2, 1])?;
    /// assert_eq!(a.matmul(&b)?.to_vec::<f32>()?, vec![17.0, 39.0]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    matmul => mlx_matmul;
}

unary_ops! {
    /// `-self`.
    negative => mlx_negative;
    /// `|self|`.
    abs => mlx_abs;
    /// `sign(self)`: -1, 0 or 1.
    sign => mlx_sign;
    /// `e^self`.
    exp => mlx_exp;
    /// `e^self - 1`, accurate near 0.
    expm1 => mlx_expm1;
    /// Natural logarithm.
    log => mlx_log;
    /// `log(1 + self)`, accurate near 0.
    log1p => mlx_log1p;
    /// Base-2 logarithm.
    log2 => mlx_log2;
    /// Base-10 logarithm.
    log10 => mlx_log10;
    /// Square root.
    sqrt => mlx_sqrt;
    /// `1 / sqrt(self)`.
    rsqrt => mlx_rsqrt;
    /// `self * self`.
    square => mlx_square;
    /// `1 / self`.
    reciprocal => mlx_reciprocal;
    /// Sine.
    sin => mlx_sin;
    /// Cosine.
    cos => mlx_cos;
    /// Tangent.
    tan => mlx_tan;
    /// Arcsine.
    arcsin => mlx_arcsin;
    /// Arccosine.
    arccos => mlx_arccos;
    /// Arctangent.
    arctan => mlx_arctan;
    /// Hyperbolic sine.
    sinh => mlx_sinh;
    /// Hyperbolic cosine.
    cosh => mlx_cosh;
    /// Hyperbolic tangent.
    tanh => mlx_tanh;
    /// Logistic sigmoid `1 / (1 + e^-self)`.
    sigmoid => mlx_sigmoid;
    /// Gauss error function.
    erf => mlx_erf;
    /// Inverse of [`Array::erf`].
    erfinv => mlx_erfinv;
    /// Round down.
    floor => mlx_floor;
    /// Round up.
    ceil => mlx_ceil;
}

impl Array {
    /// `beta * c + alpha * (a @ b)` with `self` as `c`, in one fused op.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let c = Array::from_slice(&[1.0f32, 1.0], &[1, 2])?;
    /// let a = Array::from_slice(&[1.0f32, 2.0], &[1, 2])?;
    /// let b = Array::from_slice(&[1.0f32, 0.0, 0.0, 1.0], &[2, 2])?;
    /// assert_eq!(c.addmm(&a, &b, 2.0, 3.0)?.to_vec::<f32>()?, vec![5.0, 7.0]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn addmm(&self, a: &Array, b: &Array, alpha: f32, beta: f32) -> Result<Array> {
        // SAFETY: valid handles.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_addmm(res, self.as_raw(), a.as_raw(), b.as_raw(), alpha, beta, s)
        })
    }

    /// Round to `decimals` decimal places (half to even).
    #[track_caller]
    pub fn round(&self, decimals: i32) -> Result<Array> {
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe { sys::mlx_round(res, self.as_raw(), decimals, s) })
    }

    /// Limit values to `[min, max]`; either bound may be `None`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[-2.0f32, 0.5, 3.0], &[3])?;
    /// assert_eq!(a.clip(Some(-1.0f32), Some(1.0f32))?.to_vec::<f32>()?, vec![-1.0, 0.5, 1.0]);
    /// assert_eq!(a.clip(None::<f32>, Some(0.0f32))?.to_vec::<f32>()?, vec![-2.0, 0.0, 0.0]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn clip<T: ScalarOperand>(&self, min: Option<T>, max: Option<T>) -> Result<Array> {
        let lo = min.map(|v| v.operand_for(self)).transpose()?;
        let hi = max.map(|v| v.operand_for(self)).transpose()?;
        let null = sys::mlx_array {
            ctx: std::ptr::null_mut(),
        };
        // SAFETY: valid handles or the null handle mlx-c documents as "none".
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_clip(
                res,
                self.as_raw(),
                lo.as_ref().map_or(null, Array::as_raw),
                hi.as_ref().map_or(null, Array::as_raw),
                s,
            )
        })
    }

    /// The array converted to `dtype` (values converted, as C casts do).
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::from_slice(&[1.7f32, -2.2], &[2])?;
    /// assert_eq!(a.astype(Dtype::Int32)?.to_vec::<i32>()?, vec![1, -2]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn astype(&self, dtype: Dtype) -> Result<Array> {
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_astype(res, self.as_raw(), dtype.to_sys(), s)
        })
    }

    /// The same bytes seen as another dtype (the last axis scales with the size ratio).
    ///
    /// ```
    /// use mlx_rs::{Array, Dtype};
    /// let a = Array::from_slice(&[1.0f32], &[1])?;
    /// assert_eq!(a.view(Dtype::Uint32)?.to_vec::<u32>()?, vec![0x3f80_0000]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn view(&self, dtype: Dtype) -> Result<Array> {
        // SAFETY: valid handle.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_view(res, self.as_raw(), dtype.to_sys(), s)
        })
    }
}

/// Implements a `std::ops` binary operator for every combination of owned and borrowed arrays
/// and for scalars on the right.
macro_rules! operator {
    ($trait:ident, $method:ident, $op:ident) => {
        impl ops::$trait<&Array> for &Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: &Array) -> Array {
                self.$op(rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl ops::$trait<Array> for &Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: Array) -> Array {
                self.$op(&rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl ops::$trait<&Array> for Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: &Array) -> Array {
                (&self).$op(rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl ops::$trait<Array> for Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: Array) -> Array {
                (&self).$op(&rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl<T: ScalarOperand> ops::$trait<T> for &Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: T) -> Array {
                rhs.operand_for(self)
                    .and_then(|r| self.$op(&r))
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl<T: ScalarOperand> ops::$trait<T> for Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: T) -> Array {
                ops::$trait::$method(&self, rhs)
            }
        }
    };
}

operator!(Add, add, add);
operator!(Sub, sub, subtract);
operator!(Mul, mul, multiply);
operator!(Div, div, divide);
operator!(Rem, rem, remainder);

impl ops::Neg for &Array {
    type Output = Array;
    #[track_caller]
    fn neg(self) -> Array {
        self.negative().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl ops::Neg for Array {
    type Output = Array;
    #[track_caller]
    fn neg(self) -> Array {
        -&self
    }
}
