#!/usr/bin/env bash
# Installs what is missing, builds, and shows skillgraft on its embedded base: converts the
# llama2.c stories260K model into an HF directory and generates a story with it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=${SKILLGRAFT_DEMO_DIR:-out/demo}
mkdir -p "$out"
build/skillgraft convert --from llama2c data/models/stories260K.bin \
  --tokenizer data/models/tok512.bin --out "$out/stories260K"
build/skillgraft generate --model "$out/stories260K" --prompt "Once upon a time" \
  --max-tokens 200 --temperature 0.8 --top-p 0.9 --seed 42
