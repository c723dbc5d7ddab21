//! [`Weights`]: the named tensors of a checkpoint, consumed by name as the layers are built, so
//! that missing, unexpected and mis-shaped tensors are all reported by name.

use crate::error::{Error, Result};
use mlx_rs::Array;
use std::collections::HashMap;

/// Named tensors of a checkpoint.
///
/// Layers take their tensors with [`Weights::take`] (or the shape-checking
/// [`Weights::take_shaped`]); when the model is built, [`Weights::finish`] reports any tensor
/// nobody took.
///
/// ```
/// use mlx_models::weights::Weights;
/// use mlx_rs::{Array, Dtype};
/// let mut w = Weights::from_map([("a.weight".to_string(), Array::zeros(&[2, 3], Dtype::Float32)?)].into());
/// assert!(w.take_shaped("a.weight", &[2, 4]).is_err());
/// assert_eq!(w.take_shaped("a.weight", &[2, 3])?.shape(), vec![2, 3]);
/// assert!(w.take("a.weight").is_err()); // already taken
/// w.finish()?;
/// # Ok::<(), mlx_models::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Weights {
    tensors: HashMap<String, Array>,
    /// The parts already cut to this rank's share while reading
    /// ([`crate::parallel::ReadCut`]).
    pre_cut: crate::parallel::PreCut,
}

impl Weights {
    /// Weights from a name → array map.
    pub fn from_map(tensors: HashMap<String, Array>) -> Weights {
        Weights {
            tensors,
            pre_cut: Default::default(),
        }
    }

    /// The parts of a tensor-parallel rank's checkpoint already cut to its share while
    /// reading (empty otherwise).
    pub fn pre_cut(&self) -> &crate::parallel::PreCut {
        &self.pre_cut
    }

    /// Records which parts were cut while reading (renaming keeps the record).
    pub fn set_pre_cut(&mut self, pre_cut: crate::parallel::PreCut) {
        self.pre_cut = pre_cut;
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, array: Array) {
        self.tensors.insert(name.into(), array);
    }

    /// Whether a tensor is present (and not yet taken).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Borrows a tensor without taking it.
    pub fn get(&self, name: &str) -> Option<&Array> {
        self.tensors.get(name)
    }

    /// Number of tensors not yet taken.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when every tensor has been taken.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Names not yet taken, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.keys().cloned().collect();
        names.sort();
        names
    }

    /// Takes a tensor; [`Error::MissingTensor`] if absent.
    pub fn take(&mut self, name: &str) -> Result<Array> {
        self.tensors
            .remove(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    /// Takes a tensor if present.
    pub fn take_optional(&mut self, name: &str) -> Option<Array> {
        self.tensors.remove(name)
    }

    /// Takes a tensor if it has `shape`; otherwise [`Error::ShapeMismatch`] names it (and the
    /// tensor stays).
    pub fn take_shaped(&mut self, name: &str, shape: &[i32]) -> Result<Array> {
        let found = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))?
            .shape();
        if found != shape {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                found,
            });
        }
        self.take(name)
    }

    /// Removes every tensor whose name matches `pred` (e.g. `rotary_emb.inv_freq`).
    pub fn drop_where(&mut self, pred: impl Fn(&str) -> bool) {
        self.tensors.retain(|k, _| !pred(k));
    }

    /// Converts every floating-point tensor to `dtype` (integer and packed tensors are kept).
    pub fn convert_floats(&mut self, dtype: mlx_rs::Dtype) -> Result<()> {
        self.convert_floats_except(dtype, |_, _| false)
    }

    /// [`Weights::convert_floats`], leaving the tensors for which `keep(name, array)` holds.
    pub fn convert_floats_except(
        &mut self,
        dtype: mlx_rs::Dtype,
        keep: impl Fn(&str, &Array) -> bool,
    ) -> Result<()> {
        for (name, array) in self.tensors.iter_mut() {
            if array.dtype().is_floating() && array.dtype() != dtype && !keep(name, array) {
                *array = array.astype(dtype)?;
            }
        }
        Ok(())
    }

    /// Succeeds when every tensor was taken; otherwise [`Error::UnexpectedTensors`].
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            Ok(())
        } else {
            let mut names: Vec<String> = self.tensors.into_keys().collect();
            names.sort();
            Err(Error::UnexpectedTensors(names))
        }
    }

    /// The underlying map.
    pub fn into_map(self) -> HashMap<String, Array> {
        self.tensors
    }
}
