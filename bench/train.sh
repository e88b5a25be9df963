#!/usr/bin/env bash
# Fine-tuning throughput of skillgraft (train::train through bench/bench_train) vs the Python
# PyTorch baseline (bench/train_py.py, same LibTorch 1.13 build through Debian's python3-torch),
# same machine, same command, same threads, same initial weights and batches; and the model FLOP
# rate against a float32 sgemm (2048^3, torch::mm) measured in the same command: MFU.
# Each figure is the median of 3 alternating runs, each the median of its repetitions.
#   stories260K (data/models/stories260K.bin): batch 16 x 128 tokens, 10 timed steps per repetition
#   a ~21M-parameter Llama configuration (the forward benchmark's): batch 8 x 128, 4 timed steps
# Training: full fine-tune, SGD momentum 0.9, constant lr 0.05, global clip 1.0, loss over every
# token after the first. FLOPs per token: 6 N + 12 L T C (PaLM convention; N = parameters in
# matmuls, i.e. all but the input embedding table, a tied table counted once as the head).
# Usage: bench/train.sh [--threads N] [--avx512]
#   --avx512 unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for this command only (AVX-512 sgemm);
#   by default the environment's settings are kept. The output says which was used.
#   SG_BUILD_DIR picks the build directory (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --avx512) unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; shift ;;
    *) echo "usage: bench/train.sh [--threads N] [--avx512]" >&2; exit 2 ;;
  esac
done
build=${SG_BUILD_DIR:-build}
[ -x "$build/bench/bench_train" ] || { echo "build first: scripts/setup.sh" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
config20m='{"model_type":"llama","vocab_size":4096,"hidden_size":512,"intermediate_size":1376,"num_hidden_layers":6,"num_attention_heads":8,"num_key_value_heads":8,"max_position_embeddings":1024,"tie_word_embeddings":true}'

echo "threads: $threads; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}"
rounds=3
sgemm=()
for _ in $(seq "$rounds"); do sgemm+=("$("$build/bench/bench_train" --sgemm 2048 --threads "$threads")"); done
peak=$(/usr/bin/python3 -c 'import json, statistics, sys; print(statistics.median(json.loads(l)["gflops"] for l in sys.argv[1:]))' "${sgemm[@]}")
echo "sgemm 2048 (torch::mm, float32): $peak GFLOP/s (median of $rounds)"
printf "%-14s %10s %12s %12s %7s %10s %10s %7s\n" model params "C++ tok/s" "Python tok/s" ratio "C++ GF/s" "sgemm GF/s" MFU
run() {  # label, timed steps, warmup steps, then the model and batch flags bench_train takes
  # Each implementation runs `rounds` times, alternating, so drift on a shared machine hits both;
  # each run reports its median repetition and the table shows the median run.
  local label=$1 steps=$2 warmup=$3; shift 3
  local data="$work/$label" ours=() theirs=()
  mkdir -p "$data"
  for _ in $(seq "$rounds"); do
    ours+=("$("$build/bench/bench_train" "$@" --steps "$steps" --warmup "$warmup" --threads "$threads" --dump "$data")")
    theirs+=("$(/usr/bin/python3 bench/train_py.py --data "$data" --steps "$steps" --warmup "$warmup" --threads "$threads")")
  done
  /usr/bin/python3 - "$label" "$peak" "${ours[@]}" "${theirs[@]}" <<'PY'
import json, statistics, sys
label, peak, runs = sys.argv[1], float(sys.argv[2]), [json.loads(line) for line in sys.argv[3:]]
half = len(runs) // 2
ours, theirs = runs[:half], runs[half:]
a = statistics.median(r["tokens_per_s"] for r in ours)
b = statistics.median(r["tokens_per_s"] for r in theirs)
gflops = a * ours[0]["flops_per_token"] / 1e9
print(f"{label:<14} {ours[0]['params']:>10} {a:12.1f} {b:12.1f} {a / b:6.2f}x {gflops:10.2f} {peak:10.2f} "
      f"{100 * gflops / peak:6.1f}%")
# Same weights, same batches: the warmup losses must agree (every run starts from the initial weights).
cl, pl = ours[0]["losses"], theirs[0]["losses"]
diff = max(abs(x - y) / abs(y) for x, y in zip(cl, pl))
print(f"  losses C++    {' '.join(f'{x:.7f}' for x in cl)}")
print(f"  losses Python {' '.join(f'{y:.7f}' for y in pl)}   max relative difference {diff:.1e}")
PY
}
run stories260K 10 3 --llama2c data/models/stories260K.bin --batch 16 --seq 128
run llama-21M 4 2 --config "$config20m" --batch 8 --seq 128
