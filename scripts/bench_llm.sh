#!/usr/bin/env bash
# Side-by-side LLM benchmark of this project's `bench` example against llama.cpp's llama-bench
# (and, optionally, mlx-lm), one after the other on the same machine, as BENCHMARKS.md reports.
#
#   scripts/bench_llm.sh MODEL.gguf [OUT.txt]
#
# Environment:
#   LLAMA_BENCH   path of llama-bench (built from the llama-cpp-python sdist, see BENCHMARKS.md);
#                 skipped when unset
#   HF_F32_DIR    an HF folder of the same weights in f32 (scripts/export_hf_from_gguf.py) for
#                 the f32 rows (ours and mlx-lm); skipped when unset
#   MLXLM_PATH    PYTHONPATH holding mlx==0.32.2, mlx-cpu==0.32.2, mlx-lm==0.32.2 for the
#                 mlx-lm row (needs HF_F32_DIR); skipped when unset
#   THREADS       threads for llama.cpp (default: nproc)
#   REPEATS       repeats per measurement (default 3)
#   CC            C compiler for the read-bandwidth probe (scripts/read_bandwidth.c; default cc);
#                 the probe runs between the sections, over 1 GiB and over a buffer the size of
#                 the model file, so that decode can be compared with the ceiling of the moment
#
# What is measured (prompt / generation lengths as llama-bench's tests):
#   pp512         prefill of 512 tokens from an empty cache
#   tg128         128 decoded tokens from an empty cache
#   tg128 @ d512  128 decoded tokens after a 512-token prompt
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="${1:?usage: scripts/bench_llm.sh MODEL.gguf [OUT.txt]}"
out="${2:-/dev/stdout}"
repeats="${REPEATS:-3}"
# shellcheck source=scripts/bench_common.sh
source "$here/scripts/bench_common.sh"
model_mb=$(( $(stat -c %s "$model") / 1048576 + 1 ))
probe() {
  echo "## read bandwidth ($1)"
  read_bandwidth 1024 5
  read_bandwidth "$model_mb" 20
}

{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m) $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
  echo "# model: $model"
  probe "before llama.cpp"
  if [[ -n "${LLAMA_BENCH:-}" ]]; then
    echo "## llama.cpp (llama-bench, $threads threads)"
    "$LLAMA_BENCH" -m "$model" -t "$threads" -p 512 -n 128 -d 0,512 -r "$repeats" 2>/dev/null | grep '^|'
  fi
  probe "before mlx-zoo"
  echo "## mlx-zoo bench, kept quantized (default): pp512 + tg128 @ d512"
  "$bench" --model "$model" --device cpu --prompt-tokens 512 --gen-tokens 128 --repeats "$repeats" | grep '^|'
  echo "## mlx-zoo bench, kept quantized (default): tg128 from an empty cache (1-token prompt)"
  "$bench" --model "$model" --device cpu --prompt-tokens 1 --gen-tokens 128 --repeats "$repeats" | grep '^|'
  probe "after mlx-zoo's quantized runs"
  echo "## mlx-zoo bench, dequantized to f32 at load"
  "$bench" --model "$model" --device cpu --quantized dequantize --prompt-tokens 512 --gen-tokens 128 --repeats "$repeats" | grep '^|'
  if [[ -n "${HF_F32_DIR:-}" ]]; then
    echo "## mlx-zoo bench, HF folder in f32"
    "$bench" --model "$HF_F32_DIR" --device cpu --prompt-tokens 512 --gen-tokens 128 --repeats "$repeats" | grep '^|'
    if [[ -n "${MLXLM_PATH:-}" ]]; then
      echo "## mlx-lm, HF folder in f32 (OpenBLAS preloaded)"
      LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 PYTHONPATH="$MLXLM_PATH" \
        python3 "$here/scripts/bench_mlx_lm.py" "$HF_F32_DIR" --prompt-tokens 512 --gen-tokens 128 --repeats "$repeats"
    fi
  fi
} > "$out"
