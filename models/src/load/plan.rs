//! Checking a checkpoint's declared tensors against what the family will take, before any
//! tensor data is read: a file that contradicts its configuration costs a header read, not
//! gigabytes of loading.
//!
//! A family lists its tensors as [`ExpectedTensor`]s (Hugging Face name and dense shape); the
//! loaders describe what a file declares as [`DeclaredTensor`]s (for an MLX quantized triplet,
//! the `.weight` with its logical `[out, in]` shape; `.scales` and `.biases` are checked against
//! it). [`check_declared`] compares them.
//!
//! ```
//! use mlx_models::load::plan::{check_declared, DeclaredTensor, ExpectedTensor};
//! let plan = [ExpectedTensor::required("w.weight", &[4, 8])];
//! let ok = [DeclaredTensor::dense("w.weight", &[4, 8])];
//! check_declared(&plan, &ok, true)?;
//! let wrong = [DeclaredTensor::dense("w.weight", &[4, 9])];
//! assert!(check_declared(&plan, &wrong, true).is_err());
//! # Ok::<(), mlx_models::Error>(())
//! ```

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// A tensor a family takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedTensor {
    /// Hugging Face name.
    pub name: String,
    /// Dense (logical) shape.
    pub shape: Vec<i32>,
    /// Whether the family fails without it.
    pub required: bool,
}

impl ExpectedTensor {
    /// A tensor the family needs.
    pub fn required(name: impl Into<String>, shape: &[i32]) -> ExpectedTensor {
        ExpectedTensor {
            name: name.into(),
            shape: shape.to_vec(),
            required: true,
        }
    }

    /// A tensor the family takes when present.
    pub fn optional(name: impl Into<String>, shape: &[i32]) -> ExpectedTensor {
        ExpectedTensor {
            name: name.into(),
            shape: shape.to_vec(),
            required: false,
        }
    }
}

/// What a file declares for one tensor, in Hugging Face terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTensor {
    /// Hugging Face name.
    pub name: String,
    /// Dense (logical) shape: for a quantized matrix, `[out, in]` as dequantized.
    pub shape: Vec<i32>,
}

impl DeclaredTensor {
    /// A tensor whose stored shape is its logical shape.
    pub fn dense(name: impl Into<String>, shape: &[i32]) -> DeclaredTensor {
        DeclaredTensor {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }
}

/// Compares `declared` with `plan`: every declared tensor the plan names must have the plan's
/// shape ([`Error::ShapeMismatch`]). With `complete`, every required tensor must be declared
/// ([`Error::MissingTensor`]) and every declared one must be in the plan
/// ([`Error::UnexpectedTensors`]).
pub fn check_declared(
    plan: &[ExpectedTensor],
    declared: &[DeclaredTensor],
    complete: bool,
) -> Result<()> {
    let by_name: BTreeMap<&str, &ExpectedTensor> =
        plan.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut unexpected = Vec::new();
    for d in declared {
        match by_name.get(d.name.as_str()) {
            Some(e) if e.shape != d.shape => {
                return Err(Error::ShapeMismatch {
                    name: d.name.clone(),
                    expected: e.shape.clone(),
                    found: d.shape.clone(),
                })
            }
            Some(_) => {}
            None => unexpected.push(d.name.clone()),
        }
    }
    if complete {
        let present: std::collections::HashSet<&str> =
            declared.iter().map(|d| d.name.as_str()).collect();
        if let Some(missing) = plan
            .iter()
            .find(|e| e.required && !present.contains(e.name.as_str()))
        {
            return Err(Error::MissingTensor(missing.name.clone()));
        }
        if !unexpected.is_empty() {
            unexpected.sort();
            return Err(Error::UnexpectedTensors(unexpected));
        }
    }
    Ok(())
}

/// The parameters `declared` holds: the sum of their logical shapes' element counts (a
/// quantized matrix counts its dequantized elements, not its packed words or scales).
///
/// ```
/// use mlx_models::load::plan::{parameter_count, DeclaredTensor};
/// let declared = [DeclaredTensor::dense("a", &[3, 4]), DeclaredTensor::dense("b", &[5])];
/// assert_eq!(parameter_count(&declared), 17);
/// ```
pub fn parameter_count(declared: &[DeclaredTensor]) -> u64 {
    declared
        .iter()
        .map(|t| t.shape.iter().map(|&d| d.max(0) as u64).product::<u64>())
        .sum()
}

/// The logical shapes of MLX quantized triplets among `stored` (name → stored shape):
/// `P.weight` `[out, in * bits / 32]` with `P.scales` / `P.biases` `[out, in / group]` becomes
/// `P.weight` `[out, in]`, with `(group, bits)` from `params(P)`; other tensors keep their
/// shapes.
///
/// Errors: [`Error::MissingTensor`] for a triplet without `.weight` or `.biases`;
/// [`Error::ShapeMismatch`] when the parts disagree; [`Error::Config`] when `params` gives
/// nothing for a module that has `.scales`.
pub fn logical_shapes(
    stored: &BTreeMap<String, Vec<i32>>,
    params: impl Fn(&str) -> Option<(i32, i32)>,
) -> Result<Vec<DeclaredTensor>> {
    let mut out = Vec::with_capacity(stored.len());
    for (name, shape) in stored {
        if let Some(module) = name
            .strip_suffix(".scales")
            .or_else(|| name.strip_suffix(".biases"))
        {
            if !stored.contains_key(&format!("{module}.scales")) {
                return Err(Error::MissingTensor(format!("{module}.scales")));
            }
            continue;
        }
        let Some(module) = name.strip_suffix(".weight") else {
            out.push(DeclaredTensor::dense(name.clone(), shape));
            continue;
        };
        let Some(scales) = stored.get(&format!("{module}.scales")) else {
            out.push(DeclaredTensor::dense(name.clone(), shape));
            continue;
        };
        let biases = stored
            .get(&format!("{module}.biases"))
            .ok_or_else(|| Error::MissingTensor(format!("{module}.biases")))?;
        let (group, bits) = params(module).ok_or_else(|| {
            Error::Config(format!(
                "`{module}.scales` is present but the config's quantization does not cover \
                 `{module}`"
            ))
        })?;
        let (Some((&packed, outer)), Some((&groups, _))) =
            (shape.split_last(), scales.split_last())
        else {
            return Err(Error::ShapeMismatch {
                name: name.clone(),
                expected: scales.clone(),
                found: shape.clone(),
            });
        };
        let cols = i64::from(groups) * i64::from(group);
        let want_packed = cols * i64::from(bits) / 32;
        let mut want_scales = outer.to_vec();
        want_scales.push(groups);
        if i64::from(packed) != want_packed || biases != scales || *scales != want_scales {
            return Err(Error::ShapeMismatch {
                name: format!("{module}.scales"),
                expected: want_scales,
                found: scales.clone(),
            });
        }
        let cols = i32::try_from(cols).map_err(|_| Error::ShapeMismatch {
            name: name.clone(),
            expected: vec![i32::MAX],
            found: shape.clone(),
        })?;
        let mut logical = outer.to_vec();
        logical.push(cols);
        out.push(DeclaredTensor::dense(name.clone(), &logical));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triplets_become_logical_shapes() {
        let stored: BTreeMap<String, Vec<i32>> = [
            ("a.weight".to_string(), vec![4, 8]), // 64 columns at 4 bits
            ("a.scales".to_string(), vec![4, 2]),
            ("a.biases".to_string(), vec![4, 2]),
            ("n.weight".to_string(), vec![64]),
        ]
        .into();
        let got = logical_shapes(&stored, |_| Some((32, 4))).unwrap();
        assert_eq!(
            got,
            vec![
                DeclaredTensor::dense("a.weight", &[4, 64]),
                DeclaredTensor::dense("n.weight", &[64])
            ]
        );
        // 8 bits: the same packed width is 32 columns, which 2 groups of 32 contradict.
        assert!(matches!(
            logical_shapes(&stored, |_| Some((32, 8))),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut no_biases = stored.clone();
        no_biases.remove("a.biases");
        assert!(matches!(
            logical_shapes(&no_biases, |_| Some((32, 4))),
            Err(Error::MissingTensor(n)) if n == "a.biases"
        ));
    }

    #[test]
    fn missing_and_unexpected() {
        let plan = [
            ExpectedTensor::required("a", &[2]),
            ExpectedTensor::optional("b", &[2]),
        ];
        assert!(check_declared(&plan, &[DeclaredTensor::dense("a", &[2])], true).is_ok());
        assert!(matches!(
            check_declared(&plan, &[DeclaredTensor::dense("b", &[2])], true),
            Err(Error::MissingTensor(n)) if n == "a"
        ));
        let extra = [
            DeclaredTensor::dense("a", &[2]),
            DeclaredTensor::dense("zz", &[1]),
        ];
        assert!(matches!(
            check_declared(&plan, &extra, true),
            Err(Error::UnexpectedTensors(n)) if n == ["zz"]
        ));
        assert!(check_declared(&plan, &extra, false).is_ok());
    }
}
