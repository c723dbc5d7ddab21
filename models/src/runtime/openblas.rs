//! OpenBLAS's kernel choice on x86-64 Linux, for processes that run MLX on the CPU.
//!
//! OpenBLAS (MLX's f32 BLAS on Linux, and the native kernels' prefill products) picks its
//! kernels from the CPU model when it loads. A CPU newer than the linked OpenBLAS (Debian 12's
//! 0.3.21 on VMs whose Xeon reports a generic model, for one) gets its SSE3 "Prescott"
//! kernels, 3–4× slower than the AVX-512 ones: Gemma 3 270M's 512-token prefill ran 236 tok/s
//! with them and 812 with `OPENBLAS_CORETYPE=SkylakeX` on the same machine (BENCHMARKS.md).

/// The variable OpenBLAS reads its core type from.
pub const CORE_TYPE_VAR: &str = "OPENBLAS_CORETYPE";

/// The core type this CPU's features allow (`SkylakeX` with AVX-512, `Haswell` with AVX2),
/// or `None` (other CPUs, other architectures).
///
/// ```
/// let core = mlx_models::runtime::openblas::core_type_for_cpu();
/// assert!(matches!(core, None | Some("SkylakeX") | Some("Haswell")));
/// ```
pub fn core_type_for_cpu() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some("SkylakeX");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some("Haswell");
        }
    }
    None
}

/// Sets the core type for this process, which means starting it again: the variable is read
/// when the library loads, before `main`. Unless the user set [`CORE_TYPE_VAR`], the process
/// re-executes itself once (same arguments) with the core type of [`core_type_for_cpu`]; it
/// returns (and the process runs as it is) on other systems, when the variable is set, when
/// the CPU needs nothing, or when the re-execution fails. Call it first thing in `main`.
///
/// ```no_run
/// mlx_models::runtime::openblas::ensure_core_type();
/// // ... then parse the flags, load and run a model
/// ```
pub fn ensure_core_type() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os(CORE_TYPE_VAR).is_some() {
            return;
        }
        let Some(core) = core_type_for_cpu() else {
            return;
        };
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        // `exec` only returns on failure: then run as we are.
        let _ = std::process::Command::new(exe)
            .args(args)
            .env(CORE_TYPE_VAR, core)
            .exec();
    }
}
