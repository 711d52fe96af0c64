#!/bin/bash
# The full softmax and the sampled softmax (1,024 negatives) side by side on
# one log for SECONDS seconds, both stopped with SIGTERM (they save their
# progress), then steps and seconds per step from each run's state.json.
# Usage: scripts/bench_scale_side_by_side.sh LOG.parquet OUT_DIR SECONDS
set -euo pipefail
log=$1 out=$2 seconds=$3
sasrec=$(dirname "$0")/../target/release/sasrec
mkdir -p "$out"
pids=()
for loss in full sampled-softmax; do
  extra=()
  [ "$loss" = full ] || extra=(--negatives 1024)
  "$sasrec" train --ratings "$log" --epochs 1 --device cpu --out "$out/$loss" --force \
    --loss "$loss" "${extra[@]}" > "$out/$loss.log" 2>&1 &
  pids+=($!)
done
sleep "$seconds"
kill -TERM "${pids[@]}" 2>/dev/null || true
wait || true
for loss in full sampled-softmax; do
  python3 -c "
import json, sys
p = json.load(open(sys.argv[2]))['progress']
if p['batch'] == 0:
    sys.exit(f'{sys.argv[1]}: no step of an unfinished epoch recorded (the log is too small for SECONDS)')
print(f\"{sys.argv[1]}: {p['batch']} steps in {p['epoch_seconds']:.1f} s, {p['epoch_seconds'] / p['batch']:.3f} s/step\")
" "$loss" "$out/$loss/state.json"
done
