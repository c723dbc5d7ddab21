//! Activation functions: `softmax`, `relu`, `silu`, `gelu`, `gelu_approx`.
//!
//! The element-wise ones are composed from other ops with [`ScalarOperand`] constants, so a
//! floating input keeps its dtype (`bf16` in, `bf16` out).

use super::reduce::normalize_axes;
use super::{Axes, ScalarOperand};
use crate::error::Result;
use crate::Array;
use mlx_sys as sys;

impl Array {
    /// `exp(self) / sum(exp(self))` over `axes` (`..` for all). With `precise`, half-precision
    /// inputs are accumulated in `float32`; the output keeps the input dtype either way.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[0.0f32, 2f32.ln(), 1.0, 1.0], &[2, 2])?;
    /// let p = a.softmax(-1, false)?.to_vec::<f32>()?;
    /// let want = [1.0 / 3.0, 2.0 / 3.0, 0.5, 0.5];
    /// assert!(p.iter().zip(want).all(|(p, w)| (p - w).abs() < 1e-6));
    /// assert!(a.softmax(2, false).is_err()); // no axis 2
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn softmax(&self, axes: impl Into<Axes>, precise: bool) -> Result<Array> {
        match axes.into() {
            Axes::All => {
                // SAFETY: valid handle.
                Array::try_op_stream(|res, s| unsafe {
                    sys::mlx_softmax(res, self.as_raw(), precise, s)
                })
            }
            Axes::These(list) => {
                let list = normalize_axes(&list, self.ndim(), "softmax")?;
                // SAFETY: valid handle; `list` outlives the call.
                Array::try_op_stream(|res, s| unsafe {
                    sys::mlx_softmax_axes(res, self.as_raw(), list.as_ptr(), list.len(), precise, s)
                })
            }
        }
    }

    /// `max(self, 0)`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[-1.5f32, 0.0, 2.0], &[3])?;
    /// assert_eq!(a.relu()?.to_vec::<f32>()?, vec![0.0, 0.0, 2.0]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn relu(&self) -> Result<Array> {
        self.maximum(&0i32.operand_for(self)?)
    }

    /// SiLU (swish): `self * sigmoid(self)`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[0.0f32, 1.0], &[2])?;
    /// let v = a.silu()?.to_vec::<f32>()?;
    /// assert_eq!(v[0], 0.0);
    /// assert!((v[1] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn silu(&self) -> Result<Array> {
        self.multiply(&self.sigmoid()?)
    }

    /// Exact GELU: `0.5 * x * (1 + erf(x / sqrt(2)))`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[0.0f32, 1.0, -1.0], &[3])?;
    /// let v = a.gelu()?.to_vec::<f32>()?;
    /// // Φ(1) = 0.8413447
    /// assert!(v[0] == 0.0 && (v[1] - 0.8413447).abs() < 1e-6 && (v[2] + 0.1586553).abs() < 1e-6);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn gelu(&self) -> Result<Array> {
        let scaled = self.multiply(&std::f32::consts::FRAC_1_SQRT_2.operand_for(self)?)?;
        let one_plus = scaled.erf()?.add(&1.0f32.operand_for(self)?)?;
        self.multiply(&0.5f32.operand_for(self)?)?
            .multiply(&one_plus)
    }

    /// GELU's tanh approximation:
    /// `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))`.
    ///
    /// ```
    /// use mlx_rs::Array;
    /// let a = Array::from_slice(&[0.0f32, 1.0], &[2])?;
    /// let v = a.gelu_approx()?.to_vec::<f32>()?;
    /// let want = 0.5 * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * 1.044715).tanh());
    /// assert!(v[0] == 0.0 && (v[1] - want).abs() < 1e-6);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn gelu_approx(&self) -> Result<Array> {
        let c = (2.0f32 / std::f32::consts::PI).sqrt();
        let cube = self.square()?.multiply(self)?;
        let inner = self.add(&cube.multiply(&0.044715f32.operand_for(self)?)?)?;
        let t = inner.multiply(&c.operand_for(self)?)?.tanh()?;
        let one_plus = t.add(&1.0f32.operand_for(self)?)?;
        self.multiply(&0.5f32.operand_for(self)?)?
            .multiply(&one_plus)
    }
}
