#!/usr/bin/env bash
# Deep-ensemble members for issue #31 (and the split-v2 retrain of issue #30): K default
# members from scratch on the leak-free split, one torch thread each, one after another.
# Resumable: a member resumes from its last.pt; a finished member (EPOCHS epochs or early
# stop) is skipped. Rule and results: experiments/ensemble/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
K=${K:-4}
EPOCHS=${EPOCHS:-30}
T=weights/data/chgnet-2dmd-tight
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
for s in $(seq 0 $((K - 1))); do
  out=experiments/ensemble/member-$s
  if [ -f "$out/done" ]; then continue; fi
  definet train --threads 1 --quiet --data $T --split-file $T/split-v2.json \
    --exclude supercell=12x12 --out "$out" --config default --lr 1e-3 --batch-size 2 \
    --epochs "$EPOCHS" --ema-decay 0.99 --weight-decay 0 --early-stop 30 \
    --balance group --seed "$s" ${CHUNK:+--max-time $CHUNK} > "$out.log" 2>&1
  # done only when the run ended on its own (epochs or early stopping), not on CHUNK
  # seconds of --max-time; a killed run prints no summary and resumes next time
  if grep -q '"stopped": "\(epochs\|early stopping\)"' "$out.log"; then touch "$out/done"; fi
done
