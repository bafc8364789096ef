#!/usr/bin/env bash
# Recipe of the cheap-label store (experiments/cheap-labels/README.md): CHGNet 0.3.0,
# FIRE, fixed cell, fmax 0.05 eV/Å, seed scheme v2, seed 101. Counts are totals per
# concentration, so each line only adds what is missing: rerunning resumes, and a kill
# loses only the structure in flight. Every material and concentration first, then more.
# Usage: bash recipe.sh [WORKERS]
set -euo pipefail
cd "$(dirname "$0")"
W=${1:-1}
gen() { definet generate --out store --density high --fmax 0.05 --seed-scheme v2 --seed 101 \
  --workers "$W" --threads 1 --quiet "$@"; }
ALL=MoS2,WSe2,hBN,GaSe,InSe,BP
gen --materials $ALL --count 2
for S in 6 10; do gen --materials MoS2,WSe2 --supercell $S --count 2; done
gen --materials $ALL --count 10
for S in 6 10; do gen --materials MoS2,WSe2 --supercell $S --count 10; done
gen --materials $ALL --count 40
gen --materials $ALL --count 100
gen --materials $ALL --count 200
