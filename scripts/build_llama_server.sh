#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` for the serving benchmark (scripts/bench_server.py), from the
# same source as the other llama.cpp baselines in BENCHMARKS.md: the vendor/llama.cpp of the
# llama-cpp-python 0.3.36 sdist (llama.cpp 0c1e570, ggml 0.25.3), with the options of the existing
# build (Release, GGML_NATIVE=OFF with AVX-512 / VBMI / VNNI / BF16 on: GGML_NATIVE=ON would enable
# AMX, which the reference VM traps).
#
# Nothing is fetched at build or run time: no libcurl, no OpenSSL (no HTTPS model downloads), no
# prebuilt web UI from a remote bucket, no npm build of the UI (the server serves no UI).
#
#   LLAMA_SDIST   the sdist tarball (default /work/llamacpp-src/llama_cpp_python-0.3.36.tar.gz;
#                 fetched with `pip download` when missing, checked against its sha256)
#   LLAMA_SRC     the extracted source tree (default next to the tarball)
#   LLAMA_BUILD   the cmake build directory (default /work/llamacpp-build); the binary lands in
#                 $LLAMA_BUILD/bin/llama-server
#   JOBS          make jobs (default 2)
set -euo pipefail

sdist_version=0.3.36
sdist_sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_SDIST="${LLAMA_SDIST:-/work/llamacpp-src/llama_cpp_python-${sdist_version}.tar.gz}"
src_root="$(dirname "$LLAMA_SDIST")"
LLAMA_SRC="${LLAMA_SRC:-$src_root/llama_cpp_python-${sdist_version}/vendor/llama.cpp}"
LLAMA_BUILD="${LLAMA_BUILD:-/work/llamacpp-build}"
JOBS="${JOBS:-2}"

if [ ! -d "$LLAMA_SRC" ]; then
  if [ ! -f "$LLAMA_SDIST" ]; then
    mkdir -p "$src_root"
    python3 -m pip download --no-deps --no-binary :all: --dest "$src_root" \
      "llama-cpp-python==${sdist_version}"
  fi
  echo "${sdist_sha256}  $LLAMA_SDIST" | sha256sum -c -
  tar -xzf "$LLAMA_SDIST" -C "$src_root"
fi

set -x
nice -n 10 cmake -S "$LLAMA_SRC" -B "$LLAMA_BUILD" \
  -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
nice -n 10 cmake --build "$LLAMA_BUILD" --target llama-server -j "$JOBS"
"$LLAMA_BUILD/bin/llama-server" --version
