//! The memory budget of a load: the bytes the weights will take once loaded (from the declared
//! tensor sizes, before any data is read) plus the KV cache of the context, against the memory
//! the machine has available. Over it, loading stops with [`Error::MemoryBudget`] naming both
//! figures, instead of the process being killed half-way through (or the machine swapping).
//!
//! ```
//! use mlx_models::load::budget::{check_budget, MemoryBudget};
//! use mlx_models::Error;
//! assert!(check_budget(1 << 20, MemoryBudget::Bytes(2 << 20)).is_ok());
//! let err = check_budget(3 << 20, MemoryBudget::Bytes(2 << 20)).unwrap_err();
//! assert!(matches!(err, Error::MemoryBudget { needed: 3145728, available: 2097152 }));
//! assert!(check_budget(u64::MAX, MemoryBudget::Unlimited).is_ok());
//! ```

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use mlx_rs::Dtype;

/// The memory a load may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryBudget {
    /// What the system reports as available (`MemAvailable` of `/proc/meminfo` on Linux; on
    /// other systems, where this crate does not read it, no check is made).
    #[default]
    Available,
    /// At most this many bytes.
    Bytes(u64),
    /// No check (the override for callers who know better, e.g. with swap or a model file
    /// on a fast disk).
    Unlimited,
}

/// The context the budget counts the KV cache of when the caller names none: the config's
/// context length, capped at this many tokens (the cache grows with use; a longer
/// conversation needs more).
pub const DEFAULT_BUDGET_CONTEXT: usize = 8192;

/// Bytes of memory available now: `MemAvailable` on Linux; `None` elsewhere or when it cannot
/// be read.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Bytes of the KV cache of `context` tokens for one sequence: keys and values of every
/// layer, `num_key_value_heads * head_dim` wide, in `dtype`.
///
/// ```
/// use mlx_models::{config::ModelConfig, load::budget::kv_cache_bytes};
/// let c = ModelConfig::from_json(r#"{"model_type":"llama","hidden_size":576,
///     "num_hidden_layers":30,"intermediate_size":1536,"num_attention_heads":9,
///     "num_key_value_heads":3,"vocab_size":49152}"#)?;
/// // 30 layers x 2 x 3 heads x 64 x 4 bytes = 46,080 bytes per token.
/// assert_eq!(kv_cache_bytes(&c, 100, mlx_rs::Dtype::Float32), 4_608_000);
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn kv_cache_bytes(config: &ModelConfig, context: usize, dtype: Dtype) -> u64 {
    [
        config.num_hidden_layers,
        2,
        config.num_key_value_heads(),
        config.head_dim(),
        context,
        dtype.size_in_bytes(),
    ]
    .iter()
    .fold(1u64, |acc, &v| acc.saturating_mul(v as u64))
}

/// The context the budget counts: `requested`, else the config's context length capped at
/// [`DEFAULT_BUDGET_CONTEXT`].
pub fn budget_context(config: &ModelConfig, requested: Option<usize>) -> usize {
    requested.unwrap_or_else(|| {
        config
            .context_length()
            .unwrap_or(DEFAULT_BUDGET_CONTEXT)
            .min(DEFAULT_BUDGET_CONTEXT)
    })
}

/// [`Error::MemoryBudget`] when `needed` exceeds `budget`.
pub fn check_budget(needed: u64, budget: MemoryBudget) -> Result<()> {
    let available = match budget {
        MemoryBudget::Unlimited => return Ok(()),
        MemoryBudget::Bytes(b) => b,
        MemoryBudget::Available => match available_memory() {
            Some(b) => b,
            None => return Ok(()),
        },
    };
    if needed > available {
        return Err(Error::MemoryBudget { needed, available });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let m = available_memory().expect("MemAvailable in /proc/meminfo");
            // Any machine that runs these tests has more than 64 MiB and less than 64 TiB free.
            assert!(m > 64 << 20 && m < 64 << 40, "{m}");
            assert!(matches!(
                check_budget(u64::MAX, MemoryBudget::Available),
                Err(Error::MemoryBudget {
                    needed: u64::MAX,
                    ..
                })
            ));
        }
    }
}
