#!/usr/bin/env bash
# Forward throughput of skillgraft vs the Python PyTorch baseline (bench/forward_py.py, same
# LibTorch 1.13 build through Debian's python3-torch), same machine, same command, same threads.
# Each figure is the median of 3 alternating runs, each the median of its repetitions.
#   stories260K: prefill 8 x 256 tokens, and batch-1 decode of 256 tokens with the KV cache
#   a ~21M-parameter Llama configuration: prefill 8 x 256 tokens
# Usage: bench/forward.sh [--threads N] [--avx512]
#   --avx512 unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for this command only (AVX-512 sgemm);
#   by default the environment's settings are kept. The output says which was used.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --avx512) unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; shift ;;
    *) echo "usage: bench/forward.sh [--threads N] [--avx512]" >&2; exit 2 ;;
  esac
done
[ -x build/bench/bench_forward ] || { echo "build first: scripts/setup.sh" >&2; exit 1; }
model=$(mktemp -d)
trap 'rm -rf "$model"' EXIT
build/skillgraft convert --quiet --from llama2c data/models/stories260K.bin \
  --tokenizer data/models/tok512.bin --out "$model/stories260K"
config20m='{"model_type":"llama","vocab_size":4096,"hidden_size":512,"intermediate_size":1376,"num_hidden_layers":6,"num_attention_heads":8,"num_key_value_heads":8,"max_position_embeddings":1024,"tie_word_embeddings":true}'

echo "threads: $threads; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}"
printf "%-34s %14s %14s %8s\n" "workload" "skillgraft t/s" "python t/s" "ratio"
rounds=3
run() {  # label, then the flags both implementations take
  # Each implementation runs `rounds` times, alternating, so drift on a shared machine hits both;
  # each run reports its median repetition and the table shows the median run.
  local label=$1; shift
  local ours=() theirs=()
  for _ in $(seq "$rounds"); do
    ours+=("$(build/bench/bench_forward "$@" --threads "$threads")")
    theirs+=("$(/usr/bin/python3 bench/forward_py.py "$@" --threads "$threads")")
  done
  /usr/bin/python3 - "$label" "${ours[@]}" "${theirs[@]}" <<'PY'
import json, statistics, sys
label, runs = sys.argv[1], [json.loads(line)["tokens_per_s"] for line in sys.argv[2:]]
half = len(runs) // 2
a, b = statistics.median(runs[:half]), statistics.median(runs[half:])
print(f"{label:<34} {a:14.1f} {b:14.1f} {a / b:7.2f}x")
PY
}
run "stories260K prefill 8x256" --model "$model/stories260K" --mode prefill --batch 8 --seq 256 --iters 5
run "stories260K decode batch 1 (256)" --model "$model/stories260K" --mode decode --tokens 256 --iters 5
run "llama 21M prefill 8x256" --config "$config20m" --mode prefill --batch 8 --seq 256 --iters 3
