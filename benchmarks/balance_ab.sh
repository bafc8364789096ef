#!/usr/bin/env bash
# A/B of the training loss balance (`definet train --balance none|group`): two runs
# of weights/build.sh's training side by side, one thread each, same data, parent
# weights, split and wall time; then both are scored per group on the validation
# split (never the test split: this picks the recipe of the shipped weights).
#   INIT=weights/definet-2dmd.pt SPLIT=weights/definet-2dmd.split.json MAX_TIME=900 \
#     PREFIX=weights/train/definet-2dmd-v4 bash benchmarks/balance_ab.sh
# Resumable: rerunning continues both runs from their last.pt.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-runs/balance-ab}
DATA=${DATA:-weights/data/chgnet-2dmd}
for b in none group; do
  RUN="$PREFIX-$b" BALANCE=$b THREADS=1 TRAIN_ONLY=1 DATA="$DATA" bash weights/build.sh &
done
wait
for b in none group; do
  definet evaluate --threads 2 --model "$PREFIX-$b/best.pt" --data "$DATA" --quiet \
    --split-file "$PREFIX-$b/split.json" --subset val --json "$PREFIX-$b/val.json" > /dev/null
done
python benchmarks/compare_reports.py "none=$PREFIX-none/val.json" "group=$PREFIX-group/val.json"
