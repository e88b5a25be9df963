#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (labels: unit, reference, slow).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
