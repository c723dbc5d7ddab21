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

impl MemoryBudget {
    /// The budget a command line asks for: no check when `check` is off, else `mib` MiB when
    /// given, else what is available.
    ///
    /// ```
    /// use mlx_models::load::MemoryBudget;
    /// assert_eq!(MemoryBudget::from_flags(true, Some(3)), MemoryBudget::Bytes(3 << 20));
    /// assert_eq!(MemoryBudget::from_flags(true, None), MemoryBudget::Available);
    /// assert_eq!(MemoryBudget::from_flags(false, Some(3)), MemoryBudget::Unlimited);
    /// ```
    pub fn from_flags(check: bool, mib: Option<u64>) -> MemoryBudget {
        match (check, mib) {
            (false, _) => MemoryBudget::Unlimited,
            (true, Some(mib)) => MemoryBudget::Bytes(mib.saturating_mul(1 << 20)),
            (true, None) => MemoryBudget::Available,
        }
    }
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

/// Bytes of the KV cache of `context` tokens for one sequence: keys and values of every layer
/// that stores them, `kv_heads * head_dim` wide (per layer, as the family's spec says), in
/// `dtype`. A sliding layer holds at most its window plus one prefill chunk
/// ([`SLIDING_SLACK`]); a layer that reuses another's keys and values holds none. When the
/// config does not describe a model, the uniform estimate `layers * 2 * kv_heads * head_dim`.
///
/// ```
/// use mlx_models::{config::ModelConfig, load::budget::kv_cache_bytes};
/// let c = ModelConfig::from_json(r#"{"model_type":"llama","hidden_size":576,
///     "num_hidden_layers":30,"intermediate_size":1536,"num_attention_heads":9,
///     "num_key_value_heads":3,"vocab_size":49152}"#)?;
/// // 30 layers x 2 x 3 heads x 64 x 4 bytes = 46,080 bytes per token.
/// assert_eq!(kv_cache_bytes(&c, 100, mlx_rs::Dtype::Float32), 4_608_000);
/// // Gemma 3 with a window of 4: five sliding layers hold 4 + 512 positions at most.
/// let g = ModelConfig::from_json(r#"{"model_type":"gemma3_text","hidden_size":64,
///     "intermediate_size":128,"num_hidden_layers":6,"num_attention_heads":4,
///     "num_key_value_heads":1,"head_dim":32,"vocab_size":256,"sliding_window":4}"#)?;
/// let per_position = 2 * 32 * 4; // keys and values of one head of 32, float32
/// assert_eq!(kv_cache_bytes(&g, 10_000, mlx_rs::Dtype::Float32),
///            (5 * 516 + 10_000) * per_position);
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn kv_cache_bytes(config: &ModelConfig, context: usize, dtype: Dtype) -> u64 {
    let product = |v: &[usize]| v.iter().fold(1u64, |acc, &x| acc.saturating_mul(x as u64));
    let Ok(spec) = crate::families::model_spec(config) else {
        return product(&[
            config.num_hidden_layers,
            2,
            config.num_key_value_heads(),
            config.head_dim(),
            context,
            dtype.size_in_bytes(),
        ]);
    };
    spec.layers
        .iter()
        .map(|layer| {
            let a = &layer.attention;
            if matches!(a.kv, crate::nn::spec::KvSource::Shared { .. }) {
                return 0;
            }
            let positions = match a.window {
                Some(w) => context.min(w.max(0) as usize + SLIDING_SLACK),
                None => context,
            };
            product(&[
                2,
                a.kv_heads.max(0) as usize,
                a.head_dim.max(0) as usize,
                positions,
                dtype.size_in_bytes(),
            ])
        })
        .fold(0u64, u64::saturating_add)
}

/// Positions a sliding layer's rotating cache may hold beyond its window: a prefill chunk's
/// worth (see [`crate::runtime::cache`]).
pub const SLIDING_SLACK: usize = 512;

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
