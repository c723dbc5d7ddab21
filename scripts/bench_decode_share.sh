#!/usr/bin/env bash
# Decode throughput as a share of the machine's read bandwidth, measured in interleaved rounds
# so that every figure has a ceiling from the same minute (on a shared VM both drift):
# each round runs the read-bandwidth probe (1 GiB), llama.cpp's tg128 (when LLAMA_BENCH is
# set), this project's tg128 (`bench --prompt-tokens 1 --gen-tokens 128`) and the probe again.
# The probe runs on 4 KiB pages (the shares' ceiling) and, once per round, on transparent huge
# pages (2 MiB; `refused` where the kernel has them off), for comparison.
#
#   scripts/bench_decode_share.sh MODEL.gguf BYTES_PER_TOKEN_MB [ROUNDS] [LLAMA_BYTES_MB]
#
# BYTES_PER_TOKEN_MB: the weights one decode step reads in this project's format (see
# BENCHMARKS.md for how it is counted); LLAMA_BYTES_MB the same for llama.cpp's (default: the
# same). Prints one line per round and the median shares.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="${1:?usage: scripts/bench_decode_share.sh MODEL.gguf BYTES_PER_TOKEN_MB [ROUNDS] [LLAMA_BYTES_MB]}"
bytes="${2:?bytes per token (MB)}"
rounds="${3:-4}"
llama_bytes="${4:-$bytes}"
# shellcheck source=scripts/bench_common.sh
source "$here/scripts/bench_common.sh"
probe() { read_bandwidth 1024 5 | awk '{print $3}'; }
probe_huge() { read_bandwidth 1024 5 huge | awk '/2 MiB pages/ {print $3} /refused/ {print "refused"}'; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "# model: $model; bytes per token: $bytes MB (llama.cpp: $llama_bytes MB)"
echo "| round | read GB/s before | llama.cpp tg128 | share | mlx-zoo tg128 | share | read GB/s after | read GB/s, 2 MiB pages |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
ours_shares=(); llama_shares=()
for r in $(seq 1 "$rounds"); do
  before=$(probe)
  llama="–"; llama_share="–"
  if [[ -n "${LLAMA_BENCH:-}" ]]; then
    llama=$("$LLAMA_BENCH" -m "$model" -t "$threads" -p 0 -n 128 -r 3 2>/dev/null |
      awk -F'|' '/tg128/ {split($8, a, " "); print a[1]}')
  fi
  ours=$("$bench" --model "$model" --device cpu --prompt-tokens 1 --gen-tokens 128 --repeats 3 2>/dev/null |
    awk -F'|' '/^\| mean/ {gsub(/ /, "", $6); print $6}')
  after=$(probe)
  huge=$(probe_huge)
  ceiling=$(awk -v a="$before" -v b="$after" 'BEGIN {print (a + b) / 2}')
  share() { awk -v t="$1" -v m="$2" -v c="$ceiling" 'BEGIN {printf "%.0f", 100 * t * m / 1000 / c}'; }
  ours_share=$(share "$ours" "$bytes"); ours_shares+=("$ours_share")
  if [[ "$llama" != "–" ]]; then
    llama_share=$(share "$llama" "$llama_bytes"); llama_shares+=("$llama_share"); llama_share+="%"
  fi
  echo "| $r | $before | $llama | $llama_share | $ours | ${ours_share}% | $after | $huge |"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
echo "median share of the read bandwidth: mlx-zoo $(median "${ours_shares[@]}")%${llama_shares:+, llama.cpp $(median "${llama_shares[@]}")%}"
