#!/usr/bin/env bash
# Train, evaluate and ship the default weights from the committed CHGNet data set.
# Resumable: rerunning continues the run in $RUN from its last.pt.
#   bash weights/build.sh            (MAX_TIME=seconds of training, N_RESIDUAL=structures)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-weights/train/definet-2dmd}
DATA=weights/data/chgnet-2dmd
T=${THREADS:-2}
definet train --threads "$T" --data "$DATA" --out "$RUN" --exclude supercell=12x12 \
  --config default --lr 1e-3 --batch-size 8 --epochs "${EPOCHS:-400}" --ema-decay 0.995 \
  --early-stop 30 --max-time "${MAX_TIME:-2400}" --quiet
ev() { definet evaluate --threads "$T" --model "$RUN/best.pt" --data "$DATA" --quiet "$@"; }
ev --split-file "$RUN/split.json" --subset test --json "$RUN/test.json"
ev --where supercell=12x12 --json "$RUN/holdout.json"
OPENBLAS_NUM_THREADS=1 definet residual --threads 1 --model "$RUN/best.pt" --data "$DATA" \
  --split-file "$RUN/split.json" --subset test -n "${N_RESIDUAL:-20}" --fmax 0.05,0.01 \
  --json "$RUN/residual.json" --quiet
python -m ase_definet.card "$RUN" --data "$DATA" --test "$RUN/test.json" \
  --holdout "$RUN/holdout.json" --residual "$RUN/residual.json" -o "$RUN/card.json"
definet models --add "$RUN/best.pt" --name definet-2dmd --card "$RUN/card.json" --default
cp "$RUN/split.json" weights/definet-2dmd.split.json
