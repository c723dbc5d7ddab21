#!/usr/bin/env bash
# Merges a target's working corpus (fuzz/corpus/<target>, grown by run.sh, not committed) into
# the committed minimal corpus fuzz/corpus-min/<target>: libFuzzer's -merge=1 keeps the inputs
# that add coverage. Prints the merge's coverage line.
#   bash scripts/fuzz/merge.sh <target>
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target=$1
cd "$root/fuzz"
bin="target/x86_64-unknown-linux-gnu/release/$target"
[ -x "$bin" ] || cargo +nightly fuzz build -O "$target" >/dev/null
mkdir -p "corpus-min/$target"
"$bin" -merge=1 -max_len=16384 -timeout=30 -rss_limit_mb=3072 "corpus-min/$target" "corpus/$target" \
  2>&1 | grep -E "MERGE-OUTER: [0-9]+ new files|cov:" | tail -2
echo "$target: $(ls "corpus-min/$target" | wc -l) inputs in fuzz/corpus-min/$target"
