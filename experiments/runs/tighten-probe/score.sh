#!/usr/bin/env bash
# Score the tighten probe (experiments/runs/tighten_probe.md), one thread each, two at a time.
set -euo pipefail
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
P=experiments/runs/tighten-probe S=$P/split.json
O=weights/data/chgnet-2dmd T=weights/data/chgnet-2dmd-tight
ev() { definet evaluate --threads 1 --quiet --model "$1" --data "$2" --split-file $S --subset val --json "$3"; }
ev $P/orig/last.pt $O $P/orig_vs_orig.json &
ev $P/tight/last.pt $T $P/tight_vs_tight.json &
wait
ev $P/orig/last.pt $T $P/orig_vs_tight.json &
ev $P/tight/last.pt $O $P/tight_vs_orig.json &
wait
ev weights/definet-2dmd.pt $O $P/v8_vs_orig.json &
ev weights/definet-2dmd.pt $T $P/v8_vs_tight.json &
wait
python benchmarks/compare_reports.py v8=$P/v8_vs_orig.json orig=$P/orig_vs_orig.json tight=$P/tight_vs_orig.json > $P/vs_protocol_labels.md
python benchmarks/compare_reports.py v8=$P/v8_vs_tight.json orig=$P/orig_vs_tight.json tight=$P/tight_vs_tight.json > $P/vs_continued_labels.md
cat $P/vs_protocol_labels.md $P/vs_continued_labels.md
