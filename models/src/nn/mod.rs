//! Small layers built from loaded weights (no random initialisation on this path).
//!
//! Each layer takes its tensors from [`Weights`] by Hugging Face name
//! (`<path>.weight`, `<path>.bias`, and for MLX-quantized modules `<path>.scales` /
//! `<path>.biases`), checks their shapes, casts floating tensors to the compute dtype, and
//! runs its forward pass with MLX's fused kernels where MLX has one.

pub mod attention;
pub(crate) mod colocate;
pub mod decoder;
pub mod embedding;
pub mod fused;
pub mod linear;
pub mod mlp;
pub mod moe;
pub mod native;
pub mod norm;
pub mod per_layer;
pub mod rope;
pub mod spec;

pub use attention::Attention;
pub use decoder::{Decoder, DecoderLayer};
pub use embedding::Embedding;
pub use fused::FusedLinear;
pub use linear::{BlockMatrix, Linear};
pub use mlp::Mlp;
pub use native::{NATIVE_ATTENTION_FEATURES, NATIVE_FEATURES};
pub use norm::RmsNorm;
pub use rope::Rope;
pub use spec::{AttentionSpec, BlockSpec, ModelSpec};

use crate::error::{Error, Result};
use crate::load::BuildOptions;
use crate::weights::Weights;
use mlx_rs::Array;

/// Takes the float tensor `name` with shape `shape` and casts it to the compute dtype.
pub(crate) fn take_float(
    weights: &mut Weights,
    name: &str,
    shape: &[i32],
    options: &BuildOptions,
) -> Result<Array> {
    let array = weights.take_shaped(name, shape)?;
    if !array.dtype().is_floating() {
        return Err(Error::Config(format!(
            "tensor `{name}` has dtype {}, expected a floating-point dtype",
            array.dtype()
        )));
    }
    Ok(if array.dtype() == options.dtype {
        array
    } else {
        array.astype(options.dtype)?
    })
}
