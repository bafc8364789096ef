#!/usr/bin/env bash
# Recipe of the data set behind the shipped weights (CHGNet 0.3.0 oracle).
# Every step is resumable: rerunning skips finished ids; a kill loses only the
# structures in flight. Increments are interleaved so a partial set covers all
# materials and concentrations; high density (the weaker groups) is grown to 50 per
# material, then to 100, before low density goes from 100 to 300 per material.
# Usage: bash recipe.sh [WORKERS]
set -euo pipefail
cd "$(dirname "$0")"
W=${1:-2}
# legacy: the seed streams this store was planned with (docs/splits.md)
gen() { definet generate --out . --seed-scheme legacy --workers "$W" --threads 1 --quiet "$@"; }
gen --density low  --materials MoS2,WSe2 --count 30  --seed 2
gen --density high --materials MoS2,WSe2,hBN,GaSe,InSe,BP --count 2 --seed 1
gen --density high --materials MoS2 --supercell 12 --count 1 --seed 3
gen --density low  --materials MoS2,WSe2 --count 100 --seed 2
gen --density high --materials MoS2,WSe2,hBN,GaSe,InSe,BP --count 4 --seed 1
gen --density high --materials MoS2 --supercell 12 --count 4 --seed 3
gen --density high --materials MoS2,WSe2,hBN,GaSe,InSe,BP --count 10 --seed 1
# high density first (the weaker groups; 852 structures when v4 was trained), then low;
# complete at 1,220 structures (v5)
gen --density high --materials MoS2,WSe2,hBN,GaSe,InSe,BP --count 20 --seed 1
gen --density low  --materials MoS2,WSe2 --count 300 --seed 2
# beyond the issue's counts (v5 trained on the 1,220 above): high density to 200 per material
gen --density high --materials MoS2,WSe2,hBN,GaSe,InSe,BP --count 40 --seed 1
# after v7 (trained on the 1,820 above; experiments/runs/noise_ab.md: the gap between
# training and validation scores at high density points to more data): 300 per material
gen --density high --materials MoS2,WSe2,hBN,GaSe,InSe,BP --count 60 --seed 1
