#!/usr/bin/env bash
# Recipe of the continued-label store: every converged label of ../chgnet-2dmd
# continued by the same oracle (CHGNet 0.3.0, FIRE, fixed cell) from where it
# stopped to fmax 0.001 eV/Å, at most 4,000 steps (experiments/runs/tighten_probe.md
# recommends it). Order: validation and the MoS2 12x12 holdout first (scoring
# against continued labels is possible early), then training structures (v10 can
# be trained and judged on validation as soon as they are in), then test. Every step
# is resumable: rerunning skips finished ids; a kill loses only the structures in
# flight.
# Usage: bash recipe.sh [WORKERS]
set -euo pipefail
cd "$(dirname "$0")"
W=${1:-2}
SPLIT=../../train/definet-2dmd-v9-data/split.json
tight() { definet tighten ../chgnet-2dmd --out . --workers "$W" --threads 1 --quiet "$@"; }
# the probe's MoS2/high 8x8 validation and training structures (done first, 216)
tight --where material=MoS2 --where density=high --where supercell=8x8 --split-file $SPLIT --subset val,train
tight --split-file $SPLIT --subset val
tight --where supercell=12x12
tight --split-file $SPLIT --subset train
tight --split-file $SPLIT --subset test
