#!/usr/bin/env bash
# Runs the arms of experiments/residual-state/README.md one after another and
# scores each on the hBN validation and test structures. Usage, from the repo root:
#   bash experiments/residual-state/run_arms.sh a b c
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=experiments/residual-state
DATA=weights/data/chgnet-2dmd-tight
SPLIT=/tmp/v9split.json
for ARM in "$@"; do
  case $ARM in
    a) CFG='{"hidden": 64, "residual": true}'; EMA=0.99 ;;
    b) CFG='{"hidden": 64, "residual": true, "zero_mean": true}'; EMA=0.99 ;;
    c) CFG='{"hidden": 64, "residual": true, "zero_mean": true}'; EMA=0.999 ;;
    *) echo "unknown arm $ARM" >&2; exit 2 ;;
  esac
  echo "arm $ARM start $(date -u +%FT%TZ)"
  definet train --threads 1 --data $DATA --out $OUT/$ARM --config "$CFG" \
    --exclude supercell=12x12 --exclude material=MoS2 --exclude material=WSe2 \
    --exclude material=GaSe --exclude material=InSe --exclude material=BP \
    --split-file $SPLIT \
    --lr 1e-3 --batch-size 2 --ema-decay $EMA --epochs 40 --early-stop 1000 --quiet
  for S in val test; do
    definet evaluate --threads 1 --model $OUT/$ARM/best.pt --data $DATA \
      --where material=hBN --split-file $SPLIT --subset $S --json $OUT/$ARM/$S.json --quiet
  done
  echo "arm $ARM done $(date -u +%FT%TZ)"
done
