#!/usr/bin/env bash
# Merge throughput and memory (issue 5 targets: throughput at least 50% of the memcpy bandwidth
# measured in the same command; peak memory under 2x one input's largest tensor plus the output
# buffers), through bench/bench_merge:
#   a synthetic float32 base and 4 fine-tuned checkpoints of 1 GB each (8 tensors of 32M floats;
#   --small: 64 MB each) written to a temp directory under /tmp (removed at the end), merged by
#   linear, task_arithmetic, dare_linear and ties (density 0.2 for the last two) into a checkpoint,
#   alternating, 3 runs each (median shown),
#   after measuring memcpy in the same process. Throughput = (base + inputs read + output written) / merge seconds, with and without
#   the final fsync of the output (disk-bound); inputs are read from the page cache (just written);
#   the output goes to disk through O_DIRECT where the file system takes it (SG_NO_DIRECT_IO=1 in
#   this command's environment: through the page cache instead).
#   Peak RSS: VmHWM, reset before each merge, over the RSS before it; "budget" = 2 x one input's
#   largest tensor (the target's bound without the output buffers). "extra passes": full reads of
#   a tensor's inputs besides the merge's own (ties' top-k search), summed over the tensors.
#   --cold: the base and inputs are dropped from the page cache before each merge (read from disk).
# Usage: bench/merge.sh [--small] [--cold] [--threads N]   (default: all cores). SG_BUILD_DIR picks the build
# directory (default build/). Needs ~6.5 GB free under /tmp at full size.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
threads=0
while [ $# -gt 0 ]; do
  case "$1" in
    --small) args+=(--small); shift ;;
    --cold) args+=(--cold); shift ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "usage: bench/merge.sh [--small] [--cold] [--threads N]" >&2; exit 2 ;;
  esac
done
build=${SG_BUILD_DIR:-build}
bin="$build/bench/bench_merge"
[ -x "$bin" ] || { echo "build first: scripts/setup.sh" >&2; exit 1; }
echo "$(nproc) cores; $(uptime | sed 's/.*load/load/')"
# The bench removes its own temp directory; this one catches an interrupted run.
root=$(mktemp -d /tmp/sg-bench-merge-run-XXXXXX)
trap 'rm -rf "$root"' EXIT
out=$("$bin" "${args[@]}" --threads "$threads" --dir "$root" --methods linear,task_arithmetic,dare_linear,ties)
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in sys.argv[1].splitlines() if line.strip()]
r0 = rows[0]
print(f"inputs: {r0['inputs']} x {r0['model_mb']:.0f} MB + base ({r0['tensors']} tensors, largest {r0['largest_tensor_mb']:.0f} MB); "
      f"{r0['threads']} threads; memcpy {r0['memcpy_gbs']:.2f} GB/s ({r0['memcpy_one_thread_gbs']:.2f} GB/s on one thread); "
      f"writing the inputs took {r0['write_inputs_seconds']:.1f} s; inputs read from "
      f"{'disk (dropped from the page cache before each merge)' if r0['cold'] else 'the page cache'}")
print(f"{'method':<16} {'seconds':>8} {'fsync s':>8} {'moved MB':>9} {'GB/s':>6} {'/memcpy':>8} {'GB/s*':>6} {'/memcpy*':>9} | "
      f"{'peak+ MB':>9} {'/budget':>8} {'extra passes':>13}")
for r in rows:
    print(f"{r['method']:<16} {r['seconds']:8.2f} {r['fsync_seconds']:8.2f} {r['moved_mb']:9.0f} {r['throughput_gbs']:6.2f} "
          f"{r['ratio']:8.2f} {r['throughput_no_fsync_gbs']:6.2f} {r['ratio_no_fsync']:9.2f} | "
          f"{r['peak_increase_mb']:9.1f} {r['peak_increase_mb'] / r['budget_mb']:8.3f} {r['extra_passes']:13d}")
for r in rows:
    print(f"  {r['method']}: runs {r['runs_seconds']} s (the table shows the median run); "
          f"against the better memcpy figure {r['ratio_best_memcpy']:.2f}")
print(f"* without the final fsync of the output; budget = 2 x largest input tensor = {r0['budget_mb']:.0f} MB; "
      f"peak RSS {rows[-1]['peak_mb']:.0f} MB in all (LibTorch included)")
PY
