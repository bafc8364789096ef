#!/usr/bin/env bash
# Deep-ensemble members for issue #31 (and the split-v2 retrain of issue #30): default
# members from scratch on the leak-free split, one torch thread each. SEEDS picks the
# members this process trains, one after another (default "0 1 2 3"); two processes
# with disjoint SEEDS use both cores. Resumable: a member resumes from its last.pt, a
# finished one (EPOCHS epochs or early stop) is skipped, and a member another process
# is training (its lock file names a live PID) is left alone.
# Rule and results: experiments/ensemble/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${SEEDS:-0 1 2 3}
EPOCHS=${EPOCHS:-30}
T=weights/data/chgnet-2dmd-tight
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
for s in $SEEDS; do
  out=experiments/ensemble/member-$s
  mkdir -p "$out"
  if [ -f "$out/done" ]; then continue; fi
  if [ -f "$out.lock" ] && kill -0 "$(cat "$out.lock")" 2>/dev/null; then continue; fi
  echo $$ > "$out.lock"
  definet train --threads 1 --quiet --data $T --split-file $T/split-v2.json \
    --exclude supercell=12x12 --out "$out" --config default --lr 1e-3 --batch-size 2 \
    --epochs "$EPOCHS" --ema-decay 0.99 --weight-decay 0 --early-stop 30 \
    --balance group --seed "$s" ${CHUNK:+--max-time $CHUNK} >> "$out.log" 2>&1 || true
  rm -f "$out.lock"
  # done only when the run ended on its own (epochs or early stopping), not on CHUNK
  # seconds of --max-time; a killed run prints no summary and resumes next time
  if grep -q '"stopped": "\(epochs\|early stopping\)"' "$out.log"; then touch "$out/done"; fi
done
