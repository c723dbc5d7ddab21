//! The project's own CPU kernels (`kernels/`): a small C++ library compiled with the `cc` crate
//! against the same MLX headers and mlx-c sources, archived as `libmlxrs_kernels.a` and linked
//! before `libmlxc.a` and `libmlx`.
//!
//! One `cc::Build` per instruction-set flag set: the AVX2 and AVX-512 units include no MLX
//! header (inline MLX functions compiled with AVX-512 could otherwise be picked as weak symbols
//! on a CPU without it), and the driver picks one at run time. The glue and the driver form a
//! baseline build (`-std=c++20 -isystem <mlx>/include -I <mlx-c>`). Everything is built with
//! `-fvisibility=hidden`; only the C interfaces (`kernels/qmm.h`, `kernels/ops.h`,
//! `kernels/array_host.h`) are exported.

use crate::provision::Mlx;
use crate::BuildResult;
use std::path::Path;

pub fn build(manifest_dir: &Path, mlx: &Mlx, mlxc_src: &Path) -> BuildResult<()> {
    let dir = manifest_dir.join("kernels");
    println!("cargo:rerun-if-changed={}", dir.display());
    let arch = crate::env("CARGO_CFG_TARGET_ARCH")?;
    let shim = manifest_dir.join("vendor/compat/format_shim.h");

    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .opt_level(3)
            .flag_if_supported("-fvisibility=hidden")
            .flag_if_supported("-fvisibility-inlines-hidden")
            .include(&dir)
            .cargo_metadata(false);
        b
    };

    let mut objects = Vec::new();
    let mut compile = |b: cc::Build, name: &str| -> BuildResult<()> {
        let objs = b
            .try_compile_intermediates()
            .map_err(|e| format!("compiling the native kernels ({name}) failed: {e}"))?;
        objects.extend(objs);
        Ok(())
    };

    // Portable kernels: no instruction-set flags.
    let mut generic = base();
    generic
        .std("c++17")
        .file(dir.join("qmm_generic.cpp"))
        .file(dir.join("qmm_blocks_generic.cpp"));
    compile(generic, "generic")?;

    // Fused decoder-step kernels: portable code with `omp simd` hints (no OpenMP runtime);
    // on x86-64 their entry points carry gcc target_clones (AVX-512, AVX2, baseline).
    let mut ops = base();
    ops.std("c++17")
        .flag_if_supported("-fopenmp-simd")
        .file(dir.join("ops_cpu.cpp"));
    compile(ops, "ops")?;

    if arch == "x86_64" {
        let mut avx2 = base();
        avx2.std("c++17")
            .flag("-mavx2")
            .flag("-mfma")
            .flag("-mf16c")
            .file(dir.join("qmm_avx2.cpp"));
        compile(avx2, "avx2")?;

        let mut avx512 = base();
        avx512
            .std("c++17")
            .flag("-mavx512f")
            .flag("-mavx2")
            .flag("-mfma")
            .flag("-mf16c")
            // gcc 12: false positives from _mm512_reduce_add_ps.
            .flag_if_supported("-Wno-maybe-uninitialized")
            .flag_if_supported("-Wno-uninitialized")
            .file(dir.join("qmm_avx512.cpp"));
        compile(avx512, "avx512")?;

        let mut vnni = base();
        vnni.std("c++17");
        for flag in [
            "-mavx512f",
            "-mavx512bw",
            "-mavx512vl",
            "-mavx512vnni",
            "-mavx512vbmi",
            "-mavx2",
            "-mfma",
            "-mf16c",
        ] {
            vnni.flag(flag);
        }
        vnni.flag_if_supported("-Wno-maybe-uninitialized")
            .flag_if_supported("-Wno-uninitialized")
            .file(dir.join("qmm_avx512vnni.cpp"))
            .file(dir.join("qmm_blocks_avx512vnni.cpp"))
            .file(dir.join("qmm_blocks_gemm_avx512vnni.cpp"));
        compile(vnni, "avx512-vnni")?;
    }

    // MLX-facing glue and the driver: baseline flags, C++20 (MLX's headers need it).
    let mut glue = base();
    glue.std("c++20")
        .flag("-isystem")
        .flag(mlx.include_dir().to_string_lossy().as_ref())
        .flag("-isystem")
        .flag(mlxc_src.to_string_lossy().as_ref())
        .flag("-include")
        .flag(shim.to_string_lossy().as_ref())
        .file(dir.join("qmm_glue.cpp"))
        .file(dir.join("ops_glue.cpp"))
        .file(dir.join("layer_glue.cpp"))
        .file(dir.join("array_glue.cpp"))
        .file(dir.join("qmm_driver.cpp"));
    compile(glue, "glue")?;

    let mut archive = cc::Build::new();
    archive.cpp(true).cargo_metadata(false);
    for o in &objects {
        archive.object(o);
    }
    archive
        .try_compile("mlxrs_kernels")
        .map_err(|e| format!("archiving the native kernels failed: {e}"))?;
    let out_dir = crate::env("OUT_DIR")?;
    println!("cargo:rustc-link-search=native={out_dir}");
    println!("cargo:rustc-link-lib=static=mlxrs_kernels");
    Ok(())
}
