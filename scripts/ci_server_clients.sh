#!/usr/bin/env bash
# CI step for mlx-server with real clients: builds the release server, installs the official
# `openai` and `ollama` Python packages (and jsonschema) into a venv from
# scripts/requirements-server-tests.txt with --require-hashes, and runs
# scripts/test_server_clients.py against the SmolLM2 GGUF of test-data (fetched by
# scripts/fetch_test_data.sh). Needs python3 with venv (Debian: python3-venv) and curl.
# Arguments go to test_server_clients.py (e.g. --only openai,sse).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== mlx-server with real clients (openai, ollama, curl -N)"
cargo build --release -p mlx-server
venv=target/server-tests-venv
if [ ! -x "$venv/bin/python" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes \
  -r scripts/requirements-server-tests.txt
"$venv/bin/python" scripts/test_server_clients.py "$@"
