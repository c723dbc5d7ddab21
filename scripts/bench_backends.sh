#!/usr/bin/env bash
# The backend comparison of BENCHMARKS.md: this project's MLX engine against llama.cpp (the
# ggml baseline, built by `llama-cpp-2` from its crates.io source) on the same GGUF files,
# through `bench --backends mlx,ggml` (one process per engine and round, rounds interleaved,
# the read-bandwidth probe before and after).
#
#   scripts/bench_backends.sh OUT_DIR [MODEL.gguf ...]
#
# Default models: SmolLM2-135M Q4_1 and Gemma 3 270M Q4_K_M from test-data/, plus
# Qwen2.5-Coder-1.5B Q4_K_M (larger than most L3 caches) when its file has been fetched
# (`scripts/fetch_test_data.sh --large`). Writes OUT_DIR/<model>.md, .json and .svg.
#
# llama.cpp is compiled for this CPU's instruction sets (the GGML_AVX512* options follow
# /proc/cpuinfo; AMX stays off: GGML_NATIVE would turn it on, and the reference VM traps it),
# as a llama.cpp built on this machine would be; the crate's default is AVX2 only. A later plain `cargo build --release --features ggml-baseline` compiles it again
# with the defaults (the options are environment variables its build script watches).
#
# Environment: THREADS (default: all CPUs), REPEATS (rounds, default 3), PROMPT (512), GEN (128),
# MLX_FLAGS (extra flags for our engine's runs, e.g. "--kv-cache-dtype f16"; llama.cpp's f16
# cache is its default either way).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: scripts/bench_backends.sh OUT_DIR [MODEL.gguf ...]}"
shift
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=("$here/test-data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
          "$here/test-data/gemma3/gemma-3-270m-q4_k_m.gguf")
  large="$here/test-data/qwen25-coder/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
  [ -f "$large" ] && models+=("$large")
fi
mkdir -p "$out"

flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { [[ " $flags " == *" $1 "* ]]; }
if has avx512f; then export GGML_AVX512=ON; fi
if has avx512vbmi; then export GGML_AVX512_VBMI=ON; fi
if has avx512_vnni; then export GGML_AVX512_VNNI=ON; fi
if has avx512_bf16; then export GGML_AVX512_BF16=ON; fi
if has avx_vnni; then export GGML_AVX_VNNI=ON; fi
isa="$(env | grep '^GGML_' | sort | tr '\n' ' ')"
echo "llama.cpp ISA options: $isa" >&2
# llama-cpp-sys-2's build script watches only the GGML_* variables of its last run: when the
# set changes, build llama.cpp again.
stamp="$here/target/release/.ggml-isa"
if [ "$(cat "$stamp" 2>/dev/null)" != "$isa" ]; then
  (cd "$here" && cargo clean --release -p llama-cpp-sys-2 >&2)
fi

(cd "$here" && cargo build --release --features ggml-baseline --example bench >&2)
echo "$isa" > "$stamp"
bench="$here/target/release/examples/bench"
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
for model in "${models[@]}"; do
  name="$(basename "$model" .gguf)"
  common=(--model "$model" --backends mlx,ggml --repeats "${REPEATS:-3}"
          --prompt-tokens "${PROMPT:-512}" --gen-tokens "${GEN:-128}" "${threads[@]}")
  # shellcheck disable=SC2206  # MLX_FLAGS is a list of words
  common+=(${MLX_FLAGS:-})
  echo "== $name" >&2
  "$bench" "${common[@]}" --plot "$out/$name.svg" --json-file "$out/$name.json" | tee "$out/$name.md"
done
