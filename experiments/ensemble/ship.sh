#!/usr/bin/env bash
# Join, calibrate, check and ship the four ensemble members (issue #31; rule in README.md).
# Every stage skips what it already wrote, so a rerun resumes. THREADS (default 2) torch
# threads for the evaluations; the residual checks run 2 one-thread workers.
#   bash experiments/ensemble/ship.sh             all stages
#   STAGE=calibrate|rule|residual|card|add         one stage only
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v definet >/dev/null || { echo "definet not on PATH: activate the venv" >&2; exit 1; }
T=weights/data/chgnet-2dmd-tight
S=$T/split-v2.json
RUN=experiments/ensemble/shipped
M=(experiments/ensemble/member-{0,1,2,3}/best.pt)
TH=${THREADS:-2}
want() { [ -z "${STAGE:-}" ] || [ "$STAGE" = "$1" ]; }
for m in "${M[@]}"; do
  [ -f "$(dirname "$m")/done" ] || { echo "$m has not finished training" >&2; exit 1; }
done
mkdir -p $RUN
if want calibrate && [ ! -f $RUN/calibration.json ]; then
  definet calibrate "${M[@]}" --data $T --split-file $S --holdout supercell=12x12 \
    --out $RUN --threads "$TH" --quiet > $RUN/calibration.md
  cp $S $RUN/split.json
fi
POLICY=$(python -c "import json; print(json.load(open('$RUN/calibration.json'))['policy'])")
if want rule; then
  [ -f $RUN/val_none.json ] || definet evaluate --model $RUN/best.pt --uncertainty-policy none \
    --data $T --split-file $S --subset val --threads "$TH" --quiet --json $RUN/val_none.json >/dev/null
  python experiments/ensemble/ship_rule.py $RUN/val_none.json experiments/ensemble/val_v10s1.json \
    experiments/runs/definet-2dmd-v10-seed1/split.json | tee $RUN/ship_rule.md || true
fi
# the card's residual study: 32 test structures (4 per group), as weights/build.sh does
if want residual && [ ! -f $RUN/residual.done ]; then
  OPENBLAS_NUM_THREADS=1 definet residual --threads 1 --workers 2 --model $RUN/best.pt \
    --data $T --split-file $S --subset test --per-group 4 -n 32 --fmax 0.05,0.01 \
    --calculator chgnet --resume --json $RUN/residual.json --quiet > $RUN/residual.md
  touch $RUN/residual.done
fi
# residual check on 32 validation structures (4 per group): the raw mean and the choice
# (nothing to compare when the choice is the raw mean itself)
if want residual && [ "$POLICY" != none ]; then
  # a policy that only withholds needs no run of its own (residual_check.py says why)
  PR=()
  for pol in none "$POLICY"; do
    if [ "$pol" != none ] && [[ "$pol" != *shrink* ]]; then break; fi
    OPENBLAS_NUM_THREADS=1 definet residual --threads 1 --workers 2 --model $RUN/best.pt \
      --uncertainty-policy "$pol" --data $T --split-file $S --subset val --per-group 4 -n 32 \
      --fmax 0.05,0.01 --calculator chgnet --resume --json "$RUN/residual_val_${pol//[:+]/_}.json" \
      --quiet > "$RUN/residual_val_${pol//[:+]/_}.md"
    [ "$pol" = none ] || PR=("$RUN/residual_val_${pol//[:+]/_}.json")
  done
  python experiments/ensemble/residual_check.py $RUN/best.pt $RUN/residual_val_none.json \
    "$POLICY" "${PR[@]}" | tee $RUN/residual_check.md || true
fi
NAME=definet-2dmd-ensemble
if grep -q "SHIP as definet-2dmd" $RUN/ship_rule.md 2>/dev/null; then NAME=definet-2dmd; fi
if want card; then
  python -m ase_definet.card $RUN --data $T --test $RUN/test.json --holdout $RUN/holdout.json \
    $([ -f $RUN/residual.json ] && echo --residual $RUN/residual.json) -o $RUN/card.json \
    --name $NAME --readme "$([ $NAME = definet-2dmd ] && echo weights/README.md || echo $RUN/CARD.md)" \
    >/dev/null
fi
if want add; then
  definet models --add $RUN/best.pt --name $NAME --card $RUN/card.json \
    $([ $NAME = definet-2dmd ] && echo --default) --out weights
  cp $RUN/split.json weights/$NAME.split.json
fi
