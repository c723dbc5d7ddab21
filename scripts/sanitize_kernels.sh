#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of the project's native CPU kernels
# (mlx-sys/kernels), asked for by the project's issue on native CPU kernels. Compiles the
# MLX-free kernel units with the same instruction-set flags as mlx-sys/build/kernels.rs (each
# unit separately, then linked with OpenBLAS for the sgemm path) together with the standalone
# harness mlx-sys/kernels/tests/sanitize.cpp, and runs it: every ISA the CPU has, 1 and 2
# threads, every supported bits/group/dtype, awkward shapes, exact-size buffers, results checked
# against a double reference. Exits non-zero on a sanitizer report or a wrong result.
#   scripts/sanitize_kernels.sh [test-name-substring]
# Needs g++ with libasan/libubsan and OpenBLAS (Debian: libopenblas0-pthread).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kernels="$root/mlx-sys/kernels"

# One line per unit: source (relative to mlx-sys/kernels) and its flags (as in kernels.rs).
units=(
  "qmm_generic.cpp -std=c++17"
  "qmm_avx2.cpp -std=c++17 -mavx2 -mfma -mf16c"
  "qmm_avx512.cpp -std=c++17 -mavx512f -mavx2 -mfma -mf16c"
  "qmm_avx512vnni.cpp -std=c++17 -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512vbmi -mavx2 -mfma -mf16c"
  "qmm_blocks_generic.cpp -std=c++17"
  "qmm_blocks_avx512vnni.cpp -std=c++17 -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512vbmi -mavx2 -mfma -mf16c"
  "qmm_blocks_gemm_avx512vnni.cpp -std=c++17 -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512vbmi -mavx2 -mfma -mf16c"
  "qmm_driver.cpp -std=c++20"
  # Under ASan (__SANITIZE_ADDRESS__) ops_cpu.cpp drops its target_clones: portable code only.
  "ops_cpu.cpp -std=c++17 -fopenmp-simd"
  "tests/sanitize.cpp -std=c++17"
)

CXX="${CXX:-g++}"
openblas="${OPENBLAS:-/lib/x86_64-linux-gnu/libopenblas.so.0}"
common=(-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
        -Wall -Wno-maybe-uninitialized -I "$kernels")

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

objs=()
for unit in "${units[@]}"; do
  read -r src flags <<<"$unit"
  obj="$tmp/$(basename "${src%.cpp}").o"
  # shellcheck disable=SC2086 # $flags is a list of flags
  "$CXX" "${common[@]}" $flags -c "$kernels/$src" -o "$obj"
  objs+=("$obj")
done
"$CXX" -fsanitize=address,undefined "${objs[@]}" -o "$tmp/sanitize" \
  -Wl,--no-as-needed "$openblas" -ldl -pthread

ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
  "$tmp/sanitize" "$@"
