#!/usr/bin/env bash
# Installs what is missing, builds, and runs `skillgraft demo`: converts the embedded stories260K
# base, makes every built-in task, fine-tunes one specialist per task, evaluates the base and
# every specialist on every task, and prints the matrix (results in out/demo/results.json).
# Extra arguments go to the demo (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=${SKILLGRAFT_DEMO_DIR:-out/demo}
build/skillgraft demo --out "$out" "$@"
