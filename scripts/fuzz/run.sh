#!/usr/bin/env bash
# Runs one fuzz target until it has used the given CPU seconds (not wall seconds: the machine
# has 2 cores shared with builds), niced, growing fuzz/corpus/<target> from fuzz/seeds/<target>.
#   bash scripts/fuzz/run.sh <target> <cpu-seconds> [max_len]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); builds with
# AddressSanitizer. The log (libFuzzer's figures) goes to fuzz/logs/<target>.log.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target=$1 cpu=$2 max_len=${3:-16384}
cd "$root/fuzz"
mkdir -p "corpus/$target" logs
cargo +nightly fuzz build -O "$target" >/dev/null
bin="target/x86_64-unknown-linux-gnu/release/$target"
nice -n 19 "$bin" -max_len="$max_len" -timeout=10 -rss_limit_mb=3072 -print_final_stats=1 \
  -artifact_prefix="artifacts/$target-" "corpus/$target" "seeds/$target" \
  >"logs/$target.log" 2>&1 &
pid=$!
mkdir -p artifacts
while kill -0 "$pid" 2>/dev/null; do
  ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
  if [ "$((ticks / $(getconf CLK_TCK)))" -ge "$cpu" ]; then
    kill -INT "$pid"  # libFuzzer prints its final stats on SIGINT
    break
  fi
  sleep 5
done
wait "$pid" || true
echo "$target: $(grep -E 'stat::number_of_executed_units|cov:' "logs/$target.log" | tail -2 | tr '\n' ' ')"
