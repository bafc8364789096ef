#!/usr/bin/env bash
# A/B of training recipes: weights/build.sh's training run once per arm, side by side,
# one thread each, same data, parent weights, split and wall time; then every arm is
# scored per group on the validation split (never the test split: this picks the
# recipe of the shipped weights) and the reports are printed side by side.
#   bash experiments/probes/train_ab.sh NAME[:VAR=VALUE[;VAR=VALUE...]] ...
# Each arm runs build.sh with its VAR=VALUE settings (BALANCE, EXCLUDE, LR, ...) on top
# of the shared environment (INIT, SPLIT, MAX_TIME, LR, PREFIX for the run folders).
#   loss balance (experiments/runs/balance_ab.md):
#     INIT=weights/definet-2dmd.pt SPLIT=weights/definet-2dmd.split.json MAX_TIME=900 \
#       LR=1e-3 PREFIX=experiments/runs/definet-2dmd-v4 \
#       bash experiments/probes/train_ab.sh none:BALANCE=none group:BALANCE=group
# Resumable: rerunning continues every arm from its last.pt (for MAX_TIME more seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { sed -n 2,12p "$0"; exit 2; }
PREFIX=${PREFIX:-runs/ab}
DATA=${DATA:-weights/data/chgnet-2dmd}
names=()
for arm in "$@"; do
  name=${arm%%:*}; settings=${arm#"$name"}; settings=${settings#:}
  names+=("$name")
  IFS=';' read -ra vars <<< "$settings"
  env "${vars[@]}" RUN="$PREFIX-$name" THREADS=1 TRAIN_ONLY=1 DATA="$DATA" bash weights/build.sh &
done
wait
reports=()
for name in "${names[@]}"; do
  definet evaluate --threads 2 --model "$PREFIX-$name/best.pt" --data "$DATA" --quiet \
    --split-file "$PREFIX-$name/split.json" --subset val --json "$PREFIX-$name/val.json" > /dev/null
  reports+=("$name=$PREFIX-$name/val.json")
done
python benchmarks/compare_reports.py "${reports[@]}"
