#!/usr/bin/env bash
# Re-baseline of the shipped model on the leak-free split (issue #29 item 5).
# It describes v10s1, the default until the ensemble replaced it (experiments/ensemble/):
# to rerun it, restore v10s1's weights/ first (`git checkout 8b2a9f8 -- weights/`).
# One torch thread; about 3 minutes on the 2-core build machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
O=experiments/honest-numbers
T=weights/data/chgnet-2dmd-tight          # the shipped model's labels (fmax 0.001)
L=weights/data/chgnet-2dmd                # the same structures at fmax 0.01
V2=$T/split-v2.json
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
ev() { definet evaluate --threads 1 --quiet "$@"; }
ev --data $T --split-file $V2 --subset test --json $O/test_v2_shipped.json > $O/test_v2_shipped.txt
ev --data $T --where supercell=12x12 --json $O/holdout_12x12_shipped.json > $O/holdout_12x12_shipped.txt
ev --data $L --split-file $V2 --subset test --where density=low --json $O/test_v2_low_loose.json \
  > $O/test_v2_low_loose.txt
python -m ase_definet.label_drift $T $L --json $O/label_drift.json > $O/label_drift.md
python $O/exposure.py $T $V2 experiments/runs/definet-2dmd-v10-seed1/split.json --json $O/exposure.json > $O/exposure.md
python $O/by_exposure.py $O/test_v2_shipped.json experiments/runs/definet-2dmd-v10-seed1/split.json \
  --json $O/by_exposure.json > $O/by_exposure.md
# residual steps (CHGNet + BFGS) on the first 4 test structures of each group (~1 h on one
# core); resumes from its JSON; also prices start="lower" from the recorded start energies
definet residual --threads 1 --workers 1 --data $T --split-file $V2 --subset test --per-group 4 \
  -n 32 --fmax 0.05,0.01 --calculator chgnet --json $O/residual_v2_shipped.json --resume --quiet \
  > $O/residual_v2_shipped.txt
# the shipped card rescored on these reports (the model file is not touched)
CARD=$(mktemp)
python -c "import json; print(json.dumps(json.load(open('weights/registry.json'))['models']['definet-2dmd']['card']))" \
  > "$CARD"
python -m ase_definet.card --from-card "$CARD" --test $O/test_v2_shipped.json \
  --holdout $O/holdout_12x12_shipped.json --residual $O/residual_v2_shipped.json --loose-test $O/test_v2_low_loose.json --split $V2 \
  --note "$(cat $O/note.txt)" -o $O/card_v2.json --readme $O/card_v2_preview.md > /dev/null
