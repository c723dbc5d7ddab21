//! Inference over several processes (ranks) through MLX's distributed layer
//! ([`mlx_rs::distributed`]): tensor parallelism and pipeline parallelism for every family the
//! [decoder](crate::nn::decoder) builds.
//!
//! - **Tensor parallel** ([`Parallel::Tensor`], [`tensor`]): each rank holds a share of every
//!   layer's attention heads and MLP columns. `q`, `k`, `v`, `gate` and `up` are split by
//!   rows (output features), `o_proj` and `down_proj` by columns (input features), and one
//!   all-reduce (`all_sum`) after each of those two completes the layer (a mixture of experts
//!   splits every expert alike and adds one all-reduce of its output), so every rank keeps
//!   the whole residual stream. Norms are replicated.
//! - **Pipeline parallel** ([`Parallel::Pipeline`], [`pipeline`]): each rank holds a
//!   contiguous range of layers; rank `r` receives the hidden states from rank `r − 1`, runs
//!   its layers and sends them on; the last rank's hidden states reach every rank through an
//!   all-reduce. The native CPU layer primitive keeps running each layer of a stage.
//! - In both modes the embedding and the LM head are split by vocabulary rows ([`vocab`]):
//!   every rank computes the logits of its rows and an all-gather joins them, so every rank
//!   has the whole logits and samples the same tokens.
//!
//! Every rank runs the same program on the same tokens (the workspace's `mlx-launch` starts
//! them); each loads only its share of the weights ([`crate::load::LoadOptions::parallel`]).
//!
//! ```
//! use mlx_models::parallel::balanced_range;
//! // 9 heads over 4 ranks: 2, 2, 2, 3.
//! let parts: Vec<_> = (0..4).map(|r| balanced_range(9, 4, r)).collect();
//! assert_eq!(parts, vec![0..2, 2..4, 4..6, 6..9]);
//! ```

pub mod pipeline;
mod read;
pub mod tensor;
pub mod vocab;
mod watchdog;

pub use read::{PreCut, ReadCut};
pub use watchdog::{
    set_step_timeout, step_timeout, StepGuard, DEFAULT_STEP_TIMEOUT, EXIT_STATUS,
    PER_TOKEN_ALLOWANCE,
};

use crate::error::{Error, Result};
use crate::weights::Weights;
use mlx_rs::distributed::{Backend, Group};
use mlx_rs::Array;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// How a model is spread over the ranks of a [`Group`].
#[derive(Debug, Clone)]
pub enum Parallel {
    /// Every layer split across the ranks ([`tensor`]).
    Tensor(Arc<Group>),
    /// Contiguous layer ranges, one per rank ([`pipeline`]).
    Pipeline(Arc<Group>),
}

impl Parallel {
    /// The group the model runs over.
    pub fn group(&self) -> &Arc<Group> {
        match self {
            Parallel::Tensor(g) | Parallel::Pipeline(g) => g,
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> i32 {
        self.group().rank()
    }

    /// The number of ranks.
    pub fn size(&self) -> i32 {
        self.group().size()
    }
}

impl fmt::Display for Parallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self {
            Parallel::Tensor(_) => "tensor parallel",
            Parallel::Pipeline(_) => "pipeline",
        };
        write!(f, "{mode}, rank {} of {}", self.rank(), self.size())
    }
}

/// Which parallel mode a program asked for (from its flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// [`Parallel::Tensor`].
    Tensor,
    /// [`Parallel::Pipeline`].
    Pipeline,
}

/// How long [`join`] waits for every rank to connect by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Joins the group a launcher (`mlx-launch`, `mlx.launch`, `mpirun`) set up in this process's
/// environment and returns `mode` over it; `Ok(None)` when the group has one rank (run
/// alone). Waits at most `timeout` for the other ranks ([`Group::init_with_timeout`]).
///
/// Errors: [`crate::Error::Mlx`] (no launch environment for `backend`, a bad hostfile, a peer
/// that refused) and [`mlx_rs::Error::Distributed`] (a peer that never connected).
pub fn join(mode: Mode, backend: Backend, timeout: Duration) -> Result<Option<Parallel>> {
    let group = Arc::new(Group::init_with_timeout(backend, timeout)?);
    if group.size() == 1 {
        return Ok(None);
    }
    Ok(Some(match mode {
        Mode::Tensor => Parallel::Tensor(group),
        Mode::Pipeline => Parallel::Pipeline(group),
    }))
}

/// Rank 0's `text` on every rank of `group` (the others pass anything, usually `None`): how
/// an interactive program shares its input with the group. `None` from rank 0 (end of input)
/// is `None` everywhere. Every rank must call it at the same point; it waits for rank 0 as
/// long as that takes (no step bound: a person may be typing).
pub fn broadcast_text(group: &Group, text: Option<&str>) -> Result<Option<String>> {
    let root = group.rank() == 0;
    let own = if root { text } else { None };
    // 0: no text; n + 1: n bytes.
    let header = own.map_or(0, |t| t.len() as i32 + 1);
    let total = group
        .all_sum(&Array::from_slice(&[header], &[1])?)?
        .to_vec::<i32>()?[0];
    let Some(len) = (total as usize).checked_sub(1) else {
        return Ok(None);
    };
    if len == 0 {
        return Ok(Some(String::new()));
    }
    let bytes = match own {
        Some(t) => t.as_bytes().to_vec(),
        None => vec![0u8; len],
    };
    let summed = group
        .all_sum(&Array::from_slice(&bytes, &[len as i32])?)?
        .to_vec::<u8>()?;
    Ok(Some(String::from_utf8_lossy(&summed).into_owned()))
}

/// Part `part` of `0..total` cut into `parts` contiguous ranges whose lengths differ by at
/// most one (the later ones longer).
pub fn balanced_range(total: i32, parts: i32, part: i32) -> Range<i32> {
    let at = |p: i32| (p as i64 * total as i64 / parts as i64) as i32;
    at(part)..at(part + 1)
}

/// The tensors of module `path`: its matrix in whichever form (dense `weight`, affine
/// `weight`/`scales`/`biases`, GGUF `blocks`) and its `bias`.
fn parts(weights: &Weights, path: &str) -> Vec<String> {
    ["weight", "scales", "biases", "blocks", "bias"]
        .iter()
        .map(|s| format!("{path}.{s}"))
        .filter(|n| weights.contains(n))
        .collect()
}

/// Replaces every tensor of `path` by its entries `index` along `axis` (rows, 0: output
/// features; 1: an expert stack's rows), copied (the whole tensor is freed), then zero entries
/// up to `pad_to`.
fn keep_along(
    weights: &mut Weights,
    path: &str,
    axis: i32,
    index: &[i32],
    pad_to: Option<i32>,
) -> Result<()> {
    let names = parts(weights, path);
    if names.is_empty() {
        return Err(Error::MissingTensor(format!("{path}.weight")));
    }
    let kept = index.len() as i32;
    let index = Array::from_slice(index, &[kept])?;
    for name in names {
        let mut part = weights.take(&name)?.take(&index, axis)?;
        if let Some(total) = pad_to.filter(|&t| t > kept) {
            let mut shape = part.shape();
            shape[axis as usize] = total - kept;
            let zeros = Array::zeros(&shape, part.dtype())?;
            part = mlx_rs::ops::concatenate(&[&part, &zeros], axis)?;
        }
        part.eval()?;
        weights.insert(name, part);
    }
    Ok(())
}
