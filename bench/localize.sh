#!/usr/bin/env bash
# Localization cost (issue 4 targets: a graft optimisation step costs at most 1.3x a fine-tuning
# step on the same batch; localization holds at most three model-sized buffers), through
# bench/bench_localize, same command, same threads, same batch:
#   time    one graft step (skills::GraftOptimizer::step: top-k mask, graft write, forward +
#           backward, dL/dgamma, normalized score step) vs one fine-tuning step (train::train,
#           1 step: forward + backward + clip + SGD momentum 0.9), 128 examples of the built-in
#           task opposite (tok512), fraction 0.01; median of 7 alternating steps after 2 warm-up,
#           3 runs, the table shows the median run's figures.
#   memory  peak RSS increase over the RSS before (VmHWM reset via /proc/self/clear_refs, after a
#           first run of the same phase has paged in the code), in model float32 sizes, 3 steps:
#           backward (forward + backward only: .grad + activations), finetune (+ momentum),
#           localize (skills::localize, graft); "held" is what GraftOptimizer allocates itself.
#   Models: stories260K (data/models/stories260K.bin) and a ~21M-parameter Llama (the forward and
#   train benchmarks' configuration, random N(0, 0.02) init); "fine-tuned" = base + N(0, 1e-3).
# Usage: bench/localize.sh [--threads N] [--avx512]   (default 2 threads)
#   --avx512 unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for this command only; by default the
#   environment's settings are kept. The output says which were used. SG_BUILD_DIR picks the
#   build directory (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --avx512) unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; shift ;;
    *) echo "usage: bench/localize.sh [--threads N] [--avx512]" >&2; exit 2 ;;
  esac
done
build=${SG_BUILD_DIR:-build}
bin="$build/bench/bench_localize"
[ -x "$bin" ] || { echo "build first: scripts/setup.sh" >&2; exit 1; }
config20m='{"model_type":"llama","vocab_size":4096,"hidden_size":512,"intermediate_size":1376,"num_hidden_layers":6,"num_attention_heads":8,"num_key_value_heads":8,"max_position_embeddings":1024,"tie_word_embeddings":true}'

echo "threads: $threads; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}; $(uptime | sed 's/.*load/load/')"
printf "%-12s %9s %12s %10s %7s | %9s %9s %9s %6s  (model sizes)\n" model params "finetune s" "graft s" ratio backward finetune localize held
run() {  # label, then the model flags bench_localize takes
  local label=$1; shift
  local times=() memory=()
  for _ in 1 2 3; do times+=("$("$bin" "$@" --threads "$threads" --measure time)"); done
  for phase in backward finetune localize; do
    memory+=("$("$bin" "$@" --threads "$threads" --measure memory --phase "$phase")")
  done
  /usr/bin/python3 - "$label" "${times[@]}" "${memory[@]}" <<'PY'
import json, sys
label, runs = sys.argv[1], [json.loads(line) for line in sys.argv[2:]]
times, memory = runs[:3], {r["phase"]: r for r in runs[3:]}
t = sorted(times, key=lambda r: r["ratio"])[1]
print(f"{label:<12} {t['params']:>9} {t['finetune_s']:12.4f} {t['graft_s']:10.4f} {t['ratio']:6.2f}x | "
      f"{memory['backward']['peak_increase_models']:9.2f} {memory['finetune']['peak_increase_models']:9.2f} "
      f"{memory['localize']['peak_increase_models']:9.2f} {t['held_models']:6.2f}")
ratios = " ".join(f"{r['ratio']:.3f}" for r in times)
print(f"  ratios of the 3 runs: {ratios}; model {memory['localize']['model_mb']:.2f} MB, "
      f"batch {t['batch']} x {t['tokens']} tokens; localize - backward = "
      f"{memory['localize']['peak_increase_models'] - memory['backward']['peak_increase_models']:.2f} model sizes")
PY
}
run stories260K --llama2c data/models/stories260K.bin
run llama-21M --config "$config20m"
