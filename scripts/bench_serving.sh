#!/usr/bin/env bash
# Serving benchmark: mlx-server against llama.cpp's llama-server on the same GGUF with the same
# thread count, side by side in one run (scripts/bench_server.py interleaves them round by round).
#
#   bash scripts/bench_serving.sh [OUT_PREFIX]     (default docs/bench/serving-<UTC date>)
#
#   MODEL         the GGUF (default test-data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
#   THREADS       llama-server threads (default 2; mlx-server uses every core: run on a 2-core machine
#                 or pin both with taskset)
#   SLOTS         parallel sequences of llama-server (default 16)
#   SLOT_CTX      context per llama-server slot (default 2048; -c is SLOTS * SLOT_CTX)
#   LLAMA_SERVER  llama-server binary (default /work/llamacpp-build/bin/llama-server,
#                 built by scripts/build_llama_server.sh)
#   OURS_ARGS     extra flags for mlx-server
#   OURS_B_ENV    when set (e.g. "MLX_RS_QMM_INT8_ACTIVATIONS=1"), a second mlx-server runs with
#                 this environment as a third column ("mlx-server [$OURS_B_ENV]")
#   BENCH_ARGS    extra flags for scripts/bench_server.py (e.g. "--rounds 5")
#
# Both servers stay up for the whole run; only one computes at a time. Check that the machine
# is quiet first (uptime, top): the table records the load average before and after.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
MODEL="${MODEL:-test-data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
THREADS="${THREADS:-2}"
SLOTS="${SLOTS:-16}"
SLOT_CTX="${SLOT_CTX:-2048}"
LLAMA_SERVER="${LLAMA_SERVER:-/work/llamacpp-build/bin/llama-server}"
out="${1:-docs/bench/serving-$(date -u +%F)}"

cargo build --release -p mlx-server >&2
ours_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ours_b_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
llama_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
logdir="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

ours_cmd=(target/release/mlx-server --model "$MODEL" --host 127.0.0.1 --port "$ours_port" ${OURS_ARGS:-})
llama_cmd=("$LLAMA_SERVER" -m "$MODEL" --host 127.0.0.1 --port "$llama_port" -t "$THREADS" -tb "$THREADS"
  -np "$SLOTS" -c $((SLOTS * SLOT_CTX)) -cb)
echo "ours:  ${ours_cmd[*]}" >&2
echo "llama: ${llama_cmd[*]}" >&2
"${ours_cmd[@]}" >"$logdir/ours.log" 2>&1 & pids+=($!)
"${llama_cmd[@]}" >"$logdir/llama.log" 2>&1 & pids+=($!)
ports=("$ours_port" "$llama_port")
extra=()
if [ -n "${OURS_B_ENV:-}" ]; then
  ours_b_cmd=("${ours_cmd[@]}")
  ours_b_cmd[6]="$ours_b_port"
  echo "ours B: env $OURS_B_ENV ${ours_b_cmd[*]}" >&2
  env $OURS_B_ENV "${ours_b_cmd[@]}" >"$logdir/ours_b.log" 2>&1 & pids+=($!)
  ports+=("$ours_b_port")
  extra=(--server "mlx-server [$OURS_B_ENV]=http://127.0.0.1:$ours_b_port" --ignore-eos "mlx-server [$OURS_B_ENV]"
    --note "mlx-server [$OURS_B_ENV]: the same binary and flags with $OURS_B_ENV in its environment")
fi
for port in "${ports[@]}"; do
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "server on $port did not start; logs in $logdir" >&2; tail -20 "$logdir"/*.log >&2; exit 1; }
done

llama_version="$("$LLAMA_SERVER" --version 2>&1 | head -1)"
dirty="$(git diff --name-only HEAD -- . ':!docs' ':!BENCHMARKS.md' | tr '\n' ' ')"
python3 scripts/bench_server.py \
  --server "mlx-server=http://127.0.0.1:$ours_port" --ignore-eos mlx-server \
  --server "llama-server=http://127.0.0.1:$llama_port" --ignore-eos llama-server \
  --note "mlx-server $(git rev-parse --short HEAD)${dirty:+ (built from a working tree with uncommitted changes in: $dirty)}: ${ours_cmd[*]}" \
  --note "llama-server ${llama_version}: ${llama_cmd[*]}" \
  --note "model $MODEL ($(stat -c %s "$MODEL") bytes, sha256 $(sha256sum "$MODEL" | cut -c1-16)…)" \
  "${extra[@]}" --out "$out" ${BENCH_ARGS:-}
